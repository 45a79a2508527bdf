"""synthetic_mlflow_dependency_up: MLflow's stores as the latest run that reached them saw them."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Gauge

from monitor.results import Dependency, ProbeResult
from monitor.scenario.base import (
    MetricFamilies,
)


class MlflowStoreGauges(MetricFamilies):
    """synthetic_mlflow_dependency_up{target, dependency}: MLflow's backend/artifact store as
    the latest run that reached it saw it. Each series remembers the probe whose run set it:
    when that probe stops reaching the store (or is removed) the series goes, instead of
    showing an old value."""

    def __init__(self, registry: CollectorRegistry) -> None:
        super().__init__(registry)
        self.dependency_up = Gauge(
            "synthetic_mlflow_dependency_up",
            "MLflow's backend/artifact store as the latest run that reached it saw it (1 up, 0 down); absent when unknown.",
            ["target", "dependency"],
            registry=registry,
        )
        self._source: dict[tuple[str, str], str] = {}  # (target, dependency) -> probe

    def observe(self, result: ProbeResult) -> None:
        """Set what this run proved; drop what only this probe had proved before and this run
        could not tell (MLflow unreachable: no evidence either way)."""
        states = result.facts.dependency_states()
        evidence = {d: s is Dependency.UP for d, s in states.items() if s in (Dependency.UP, Dependency.DOWN)}
        t = result.target
        for dependency, up in evidence.items():
            self.dependency_up.labels(t, str(dependency)).set(1 if up else 0)
            self._source[(t, str(dependency))] = result.probe
        for key, source in list(self._source.items()):
            if source == result.probe and key[0] == t and key[1] not in evidence:
                self._drop(key)

    def forget(self, target: str, probe: str, *, last_of_target: bool) -> None:
        for key, source in list(self._source.items()):
            if source == probe:
                self._drop(key)

    def _drop(self, key: tuple[str, str]) -> None:
        del self._source[key]
        try:
            self.dependency_up.remove(*key)
        except KeyError:
            pass
