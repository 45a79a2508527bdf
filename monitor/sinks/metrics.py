"""Prometheus exposition of probe results and of the monitor's own health.

Every series of a configured probe is created at registration with a zero value, so
dashboards, `rate()` and `absent()` work from the first scrape; a probe removed by a
reload has its series deleted. The registry is the one piece of shared mutable state.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Iterable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, disable_created_metrics

from monitor import __version__
from monitor.results import ProbeResult, Reason

RESULTS = ("success", "failure")
JOB_EVENTS = ("error", "missed", "skipped")
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
    def __init__(self, registry: CollectorRegistry, buckets: Iterable[float]) -> None:
        # The *_created series double the exposition for no use in Prometheus queries.
        disable_created_metrics()
        self.registry = registry
        b = tuple(buckets)
        self.runs = Counter("synthetic_probe_runs", "Probe runs by result.", ["target", "probe", "result"], registry=registry)
        self.success = Gauge("synthetic_probe_success", "1 if the last run passed, else 0.", ["target", "probe"], registry=registry)
        self.duration = Histogram(
            "synthetic_probe_duration_seconds", "Duration of a whole probe run.", ["target", "probe"], buckets=b, registry=registry
        )
        self.step_duration = Histogram(
            "synthetic_probe_step_duration_seconds", "Duration of one scenario step, pass or fail.",
            ["target", "probe", "step"], buckets=b, registry=registry,
        )
        self.step_failures = Counter(
            "synthetic_probe_step_failures", "Failed steps by reason.", ["target", "probe", "step", "reason"], registry=registry
        )
        self.consecutive_failures = Gauge(
            "synthetic_probe_consecutive_failures", "Failed runs in a row.", ["target", "probe"], registry=registry
        )
        self.last_success = Gauge(
            "synthetic_probe_last_success_timestamp_seconds", "Unix time of the last passing run.", ["target", "probe"],
            registry=registry,
        )
        self.timeout = Gauge(
            "synthetic_probe_timeout_seconds", "The probe's configured deadline.", ["target", "probe"], registry=registry
        )
        self.dependency_up = Gauge(
            "synthetic_asgard_dependency_up", "Asgard's own view of its dependencies (1 up, 0 down).",
            ["target", "dependency"], registry=registry,
        )
        self.inventory = Gauge(
            "synthetic_asgard_inventory", "Counts Asgard reports.", ["target", "kind"], registry=registry
        )
        self.build_info = Gauge("synthetic_monitor_build_info", "Always 1; the version label says which build.", ["version"], registry=registry)
        self.heartbeat = Gauge(
            "synthetic_monitor_heartbeat_timestamp_seconds", "Unix time the scheduler loop last proved alive.", registry=registry
        )
        self.job_events = Counter(
            "synthetic_monitor_job_events", "Scheduler trouble: a job errored, missed its time, or was skipped.",
            ["probe", "event"], registry=registry,
        )
        self.schedule_lag = Histogram(
            "synthetic_monitor_schedule_lag_seconds", "How late a run started against its schedule.", ["probe"],
            buckets=(0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0), registry=registry,
        )
        self.config_reload = Gauge(
            "synthetic_monitor_config_last_reload_successful", "1 if the last config (re)load succeeded.", registry=registry
        )
        self.alerts_firing = Gauge(
            "synthetic_monitor_alerts_firing", "Alerts the daemon's own engine holds firing.", ["alertname", "target", "probe"],
            registry=registry,
        )
        self.notifications = Counter(
            "synthetic_monitor_notifications", "Alert notifications sent, by receiver and result.", ["receiver", "result"],
            registry=registry,
        )
        self.build_info.labels(__version__).set(1)
        self.config_reload.set(1)
        self.heartbeat.set(time.time())
        self._probes: dict[str, ProbeSeries] = {}
        # The labelled children a run touches, looked up once per probe rather than on
        # every run (`labels()` validates and hashes the label values each time).
        self._children: dict[tuple[str, str], _ProbeChildren] = {}

    def register(self, series: ProbeSeries) -> None:
        """Create every series of a probe with zero values."""
        if self._probes.get(series.probe) == series:
            return
        if series.probe in self._probes:
            self.unregister(series.probe)
        self._probes[series.probe] = series
        t, p = series.target, series.probe
        for result in RESULTS:
            self.runs.labels(t, p, result)
        self.success.labels(t, p).set(0)
        self.duration.labels(t, p)
        self.consecutive_failures.labels(t, p).set(0)
        self.last_success.labels(t, p).set(0)
        self.timeout.labels(t, p).set(series.timeout_seconds)
        for step in series.steps:
            self.step_duration.labels(t, p, step)
            for reason in Reason:
                self.step_failures.labels(t, p, step, reason.value)
        for event in JOB_EVENTS:
            self.job_events.labels(p, event)
        self.schedule_lag.labels(p)

    def unregister(self, probe: str) -> None:
        """Delete a removed probe's series so dashboards do not show a ghost."""
        series = self._probes.pop(probe, None)
        if series is None:
            return
        self._children = {k: v for k, v in self._children.items() if k[1] != probe}
        t, p = series.target, series.probe
        for result in RESULTS:
            _remove(self.runs, t, p, result)
        for metric in (self.success, self.duration, self.consecutive_failures, self.last_success, self.timeout):
            _remove(metric, t, p)
        for step in series.steps:
            _remove(self.step_duration, t, p, step)
            for reason in Reason:
                _remove(self.step_failures, t, p, step, reason.value)
        for event in JOB_EVENTS:
            _remove(self.job_events, p, event)
        _remove(self.schedule_lag, p)
        if series.asgard and not any(s.target == t and s.asgard for s in self._probes.values()):
            for dependency in ASGARD_DEPENDENCIES:
                _remove(self.dependency_up, t, dependency)
            for kind in ASGARD_INVENTORY:
                _remove(self.inventory, t, kind)

    @property
    def probes(self) -> dict[str, ProbeSeries]:
        return dict(self._probes)

    def _probe_children(self, t: str, p: str) -> "_ProbeChildren":
        children = self._children.get((t, p))
        if children is None:
            children = self._children[(t, p)] = _ProbeChildren(
                self.runs.labels(t, p, "success"),
                self.runs.labels(t, p, "failure"),
                self.success.labels(t, p),
                self.duration.labels(t, p),
                self.consecutive_failures.labels(t, p),
                self.last_success.labels(t, p),
                {},
            )
        return children

    def handle(self, result: ProbeResult) -> None:
        t, p = result.target, result.probe
        ok = result.ok
        c = self._probe_children(t, p)
        (c.runs_success if ok else c.runs_failure).inc()
        c.success.set(1 if ok else 0)
        c.duration.observe(result.duration_seconds)
        if ok:
            c.consecutive_failures.set(0)
            c.last_success.set(result.started_at + result.duration_seconds)
        else:
            c.consecutive_failures.inc()
        step_duration = c.step_duration
        for step in result.steps:
            if step.skipped:
                continue
            child = step_duration.get(step.name)
            if child is None:
                child = step_duration[step.name] = self.step_duration.labels(t, p, step.name)
            child.observe(step.duration_seconds)
            if step.reason is not None:
                self.step_failures.labels(t, p, step.name, step.reason.value).inc()
        for dependency, up in (result.facts.get("dependencies") or {}).items():
            self.dependency_up.labels(t, dependency).set(1 if up else 0)
        for kind, value in (result.facts.get("inventory") or {}).items():
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                self.inventory.labels(t, kind).set(value)

    def job_event(self, probe: str, event: str) -> None:
        self.job_events.labels(probe, event).inc()

    def observe_lag(self, probe: str, seconds: float) -> None:
        self.schedule_lag.labels(probe).observe(max(0.0, seconds))

    def beat(self) -> None:
        self.heartbeat.set(time.time())


@dataclass(slots=True)
class _ProbeChildren:
    runs_success: Any
    runs_failure: Any
    success: Any
    duration: Any
    consecutive_failures: Any
    last_success: Any
    step_duration: dict[str, Any]


def _remove(metric: Counter | Gauge | Histogram, *labels: str) -> None:
    try:
        metric.remove(*labels)
    except KeyError:
        pass
