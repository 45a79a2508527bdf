"""Prometheus exposition of probe results and of the monitor's own health.

Every series of a configured probe is created at registration with a zero value, so
dashboards, `rate()` and `absent()` work from the first scrape; a probe removed by a
reload has its series deleted. The registry is the one piece of shared mutable state.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Iterable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, disable_created_metrics, generate_latest

from monitor import __version__
from monitor.results import ProbeResult
from monitor.sinks.probe_series import ProbeSeriesStore
from monitor.sinks.target_info import VERSION_FACT, TargetInfo

ASGARD_DEPENDENCIES = ("mlflow", "feast")
ASGARD_INVENTORY = ("registered_models", "active_experiments", "feature_views")


@dataclass(frozen=True, slots=True)
class ProbeSeries:
    """What a probe's series are keyed by: enough to create and delete them."""

    target: str
    probe: str
    steps: tuple[str, ...]
    timeout_seconds: float
    asgard: bool = False


class MetricsSink:
    """The monitor's metrics: the per-probe series in a `ProbeSeriesStore` (cheap to
    scrape at any probe count), the rest as ordinary prometheus-client metrics."""

    name = "metrics"

    def __init__(self, registry: CollectorRegistry, buckets: Iterable[float]) -> None:
        # The *_created series double the exposition for no use in Prometheus queries.
        disable_created_metrics()
        self.registry = registry
        # Both halves are also registered in `registry`, which therefore shows every
        # series (tests and `generate_latest(registry)` see what a scrape sees).
        self._core = core = CollectorRegistry(auto_describe=True)
        self.series = ProbeSeriesStore(buckets)
        self.dependency_up = Gauge(
            "synthetic_asgard_dependency_up", "Asgard's own view of its dependencies (1 up, 0 down).",
            ["target", "dependency"], registry=core,
        )
        self.mlflow_dependency_up = Gauge(
            "synthetic_mlflow_dependency_up",
            "MLflow's backend/artifact store as the latest run that reached it saw it (1 up, 0 down); absent when unknown.",
            ["target", "dependency"], registry=core,
        )
        # (target, dependency) -> the probe whose run set the value: when that probe stops
        # reaching the store (or is removed) the series goes, instead of showing an old value.
        self._dependency_source: dict[tuple[str, str], str] = {}
        self.inventory = Gauge(
            "synthetic_asgard_inventory", "Counts Asgard reports.", ["target", "kind"], registry=core
        )
        self.target_info = TargetInfo(core)
        self.build_info = Gauge("synthetic_monitor_build_info", "Always 1; the version label says which build.", ["version"], registry=core)
        self.heartbeat = Gauge(
            "synthetic_monitor_heartbeat_timestamp_seconds", "Unix time the scheduler loop last proved alive.", registry=core
        )
        self.config_reload = Gauge(
            "synthetic_monitor_config_last_reload_successful", "1 if the last config (re)load succeeded.", registry=core
        )
        self.alerts_firing = Gauge(
            "synthetic_monitor_alerts_firing", "Alerts the daemon's own engine holds firing.", ["alertname", "target", "probe"],
            registry=core,
        )
        self.notifications = Counter(
            "synthetic_monitor_notifications", "Alert notifications sent, by receiver and result.", ["receiver", "result"],
            registry=core,
        )
        self.sink_errors = Counter(
            "synthetic_monitor_sink_errors", "Results (or alerting work) a sink failed to handle, by sink.", ["sink"],
            registry=core,
        )
        registry.register(core)
        registry.register(self.series)
        self.build_info.labels(__version__).set(1)
        self.config_reload.set(1)
        self.heartbeat.set(time.time())
        self._probes: dict[str, ProbeSeries] = {}

    def render(self) -> bytes:
        """The /metrics body: what `generate_latest(self.registry)` gives, at a fraction of the cost."""
        return generate_latest(self._core) + self.series.render()

    def register(self, series: ProbeSeries) -> None:
        """Create every series of a probe with zero values."""
        if self._probes.get(series.probe) == series:
            return
        if series.probe in self._probes:
            self.unregister(series.probe)
        self._probes[series.probe] = series
        self.series.add(series.target, series.probe, series.steps, series.timeout_seconds)

    def unregister(self, probe: str) -> None:
        """Delete a removed probe's series so dashboards do not show a ghost."""
        series = self._probes.pop(probe, None)
        if series is None:
            return
        self.series.remove(probe)
        t = series.target
        if not any(s.target == t for s in self._probes.values()):
            self.target_info.forget(t)
        for key, source in list(self._dependency_source.items()):
            if source == probe:
                del self._dependency_source[key]
                _remove(self.mlflow_dependency_up, *key)
        if series.asgard and not any(s.target == t and s.asgard for s in self._probes.values()):
            for dependency in ASGARD_DEPENDENCIES:
                _remove(self.dependency_up, t, dependency)
            for kind in ASGARD_INVENTORY:
                _remove(self.inventory, t, kind)

    @property
    def probes(self) -> dict[str, ProbeSeries]:
        return dict(self._probes)

    def handle(self, result: ProbeResult) -> None:
        t = result.target
        self.series.record_run(
            result.probe,
            result.ok,
            result.duration_seconds,
            result.started_at + result.duration_seconds,
            [
                (s.name, s.duration_seconds, s.reason.value if s.reason else None, s.phases.values() if s.phases else None)
                for s in result.steps
                if not s.skipped
            ],
        )
        if VERSION_FACT in result.facts and result.probe in self._probes:  # not for a probe a reload removed
            self.target_info.observe(t, result.facts[VERSION_FACT])
        self._mlflow_dependencies(result)
        series = self._probes.get(result.probe)
        if series is not None and series.asgard:
            self._asgard_facts(t, result)

    def _asgard_facts(self, target: str, result: ProbeResult) -> None:
        """What this run learnt from Asgard's status; what it did not learn (Asgard
        unreachable, a field missing) is absent, never the last value seen: a stale 1
        would say "mlflow up" through a whole outage."""
        reported = result.facts.get("dependencies") or {}
        for dependency in ASGARD_DEPENDENCIES:
            up = reported.get(dependency)
            if isinstance(up, bool):
                self.dependency_up.labels(target, dependency).set(1 if up else 0)
            else:
                _remove(self.dependency_up, target, dependency)
        counts = result.facts.get("inventory") or {}
        for kind in ASGARD_INVENTORY:
            value = counts.get(kind)
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                self.inventory.labels(target, kind).set(value)
            else:
                _remove(self.inventory, target, kind)

    def _mlflow_dependencies(self, result: ProbeResult) -> None:
        """Set what this run proved about MLflow's stores; drop what only this probe had
        proved before and this run could not tell (MLflow unreachable: no evidence either way)."""
        evidence = result.facts.get("dependency_up")
        evidence = evidence if isinstance(evidence, dict) else {}
        t = result.target
        for dependency, up in evidence.items():
            self.mlflow_dependency_up.labels(t, str(dependency)).set(1 if up else 0)
            self._dependency_source[(t, str(dependency))] = result.probe
        for key, source in list(self._dependency_source.items()):
            if source == result.probe and key[0] == t and key[1] not in evidence:
                del self._dependency_source[key]
                _remove(self.mlflow_dependency_up, *key)

    def job_event(self, probe: str, event: str) -> None:
        self.series.job_event(probe, event)

    def observe_lag(self, probe: str, seconds: float) -> None:
        self.series.observe_lag(probe, seconds)

    def beat(self) -> None:
        self.heartbeat.set(time.time())


def _remove(metric: Counter | Gauge | Histogram, *labels: str) -> None:
    try:
        metric.remove(*labels)
    except KeyError:
        pass
