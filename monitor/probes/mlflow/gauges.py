"""MLflow's extra families: synthetic_mlflow_dependency_up (its stores as the latest run that
reached them saw them), synthetic_mlflow_trace_visible_seconds (OTLP ingest to readable) and
synthetic_mlflow_artifact_throughput_bytes (bytes per second through the artifact proxy)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Gauge, Histogram

from monitor.results import Dependency, ProbeResult
from monitor.scenario.base import (
    MetricFamilies,
)

# Trace visibility: the monitor's default latency range (5 ms .. 60 s).
SECONDS_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
# Throughput: 64 KiB/s (a stalling S3) .. 1 GiB/s (loopback), doubling every step.
THROUGHPUT_BUCKETS = tuple(float(2**k) for k in range(16, 31))


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
        self.trace_visible = Histogram(
            "synthetic_mlflow_trace_visible_seconds",
            "Seconds from the probe trace's OTLP export to its first successful read through the trace API.",
            ["target", "probe"],
            buckets=SECONDS_BUCKETS,
            registry=registry,
        )
        self.throughput = Histogram(
            "synthetic_mlflow_artifact_throughput_bytes",
            "Bytes per second of the probe's artifact transfers through MLflow's artifact proxy.",
            ["target", "probe", "direction"],
            buckets=THROUGHPUT_BUCKETS,
            registry=registry,
        )
        self._histograms: dict[str, set[tuple[str, ...]]] = {}  # probe -> its label sets

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
        visible = getattr(result.facts, "trace_visible_seconds", None)
        if isinstance(visible, float):
            self.trace_visible.labels(t, result.probe).observe(visible)
            self._histograms.setdefault(result.probe, set()).add((t, result.probe))
        for direction, rate in getattr(result.facts, "artifact_throughput", None) or ():
            self.throughput.labels(t, result.probe, direction).observe(rate)
            self._histograms.setdefault(result.probe, set()).add((t, result.probe, direction))

    def forget(self, target: str, probe: str, *, last_of_target: bool) -> None:
        for key, source in list(self._source.items()):
            if source == probe:
                self._drop(key)
        for labels in self._histograms.pop(probe, set()):
            family = self.trace_visible if len(labels) == 2 else self.throughput
            try:
                family.remove(*labels)
            except KeyError:
                pass

    def _drop(self, key: tuple[str, str]) -> None:
        del self._source[key]
        try:
            self.dependency_up.remove(*key)
        except KeyError:
            pass
