"""Prometheus exposition of probe results and of the monitor's own health.

Every series of a configured probe is created at registration with a zero value, so
dashboards, `rate()` and `absent()` work from the first scrape; a probe removed by a
reload has its series deleted. The registry is the one piece of shared mutable state.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass, field

from prometheus_client import CollectorRegistry, Gauge

from monitor import __version__
from monitor.events import ConfigLoaded, Event, Heartbeat, JobEvent, ScheduleLag
from monitor.promtypes import disable_created_metrics
from monitor.results import ProbeResult
from monitor.scenario.base import MetricFamilies
from monitor.scenario.registry import SCENARIOS
from monitor.sinks.exposition import Exposition
from monitor.sinks.probe_series import ProbeSeriesStore
from monitor.sinks.target_diagnosis import TargetDiagnosisGauge
from monitor.sinks.target_info import TargetInfo
from monitor.sinks.target_tls import TargetCertificates


@dataclass(frozen=True, slots=True)
class ProbeSeries:
    """What a probe's series are keyed by: enough to create and delete them."""

    target: str
    probe: str
    steps: tuple[str, ...]
    timeout_seconds: float
    scenario: str = ""  # its scenario's extra metric families (if any) are fed by its runs
    # When its text is rendered (probe_series.EAGER_INTERVAL); a change keeps the series.
    interval_seconds: float = field(default=0.0, compare=False)


class MetricsSink:
    """The monitor's metrics: the per-probe series in a `ProbeSeriesStore` (cheap to
    scrape at any probe count), the scenarios' extra families, and the monitor's own
    health as ordinary prometheus-client metrics. Other sinks own theirs."""

    name = "metrics"

    def __init__(self, registry: CollectorRegistry | Exposition, buckets: Iterable[float]) -> None:
        # The *_created series double the exposition for no use in Prometheus queries.
        disable_created_metrics()
        self.exposition = registry if isinstance(registry, Exposition) else Exposition(registry)
        # Every part is also registered in `registry`, which therefore shows every
        # series (tests and `generate_latest(registry)` see what a scrape sees).
        self.registry = self.exposition.registry
        core = self.exposition.part()
        self.series = ProbeSeriesStore(buckets)
        # Each scenario's extra families, made now so they exist from the first scrape.
        self._families: dict[type[MetricFamilies], MetricFamilies] = {}
        for scenario in SCENARIOS.values():
            kind = scenario.metric_families
            if kind is not None and kind not in self._families:
                self._families[kind] = kind(core)
        self.target_info = TargetInfo(core)
        self.target_diagnosis = TargetDiagnosisGauge(core)
        self.certificates = TargetCertificates(core)
        self.build_info = Gauge(
            "synthetic_monitor_build_info", "Always 1; the version label says which build.", ["version"], registry=core
        )
        self.heartbeat = Gauge(
            "synthetic_monitor_heartbeat_timestamp_seconds",
            "Unix time the scheduler loop last proved alive.",
            registry=core,
        )
        self.config_reload = Gauge(
            "synthetic_monitor_config_last_reload_successful", "1 if the last config (re)load succeeded.", registry=core
        )
        self.exposition.add_chunks(self.series, self.series.chunks)
        self.build_info.labels(__version__).set(1)
        self.config_reload.set(1)
        self.heartbeat.set(time.time())
        self._probes: dict[str, ProbeSeries] = {}

    def render(self) -> bytes:
        """The /metrics body: what `generate_latest(self.registry)` gives, at a fraction of the cost."""
        return self.exposition.render()

    def register(self, series: ProbeSeries) -> None:
        """Create every series of a probe with zero values."""
        known = self._probes.get(series.probe)
        if known == series:
            if known is not None and known.interval_seconds != series.interval_seconds:
                self._probes[series.probe] = series
                self.series.set_interval(series.probe, series.interval_seconds)
            return
        if series.probe in self._probes:
            self.unregister(series.probe)
        self._probes[series.probe] = series
        self.series.add(series.target, series.probe, series.steps, series.timeout_seconds, series.interval_seconds)

    def unregister(self, probe: str) -> None:
        """Delete a removed probe's series so dashboards do not show a ghost."""
        series = self._probes.pop(probe, None)
        if series is None:
            return
        self.series.remove(probe)
        t = series.target
        if not any(s.target == t for s in self._probes.values()):
            self.target_info.forget(t)
            self.target_diagnosis.forget(t)
            self.certificates.forget(t)
        family = self._family(series.scenario)
        if family is not None:
            last = not any(s.target == t and self._family(s.scenario) is family for s in self._probes.values())
            family.forget(t, probe, last_of_target=last)

    def _family(self, scenario: str) -> MetricFamilies | None:
        known = SCENARIOS.get(scenario)
        kind = known.metric_families if known is not None else None
        return self._families.get(kind) if kind is not None else None

    @property
    def probes(self) -> dict[str, ProbeSeries]:
        return dict(self._probes)

    def handle(self, result: ProbeResult) -> None:
        self.series.record_run(
            result.probe,
            result.ok,
            result.duration_seconds,
            result.started_at + result.duration_seconds,
            [
                (
                    s.name,
                    s.duration_seconds,
                    s.reason.value if s.reason else None,
                    s.phases.values() if s.phases else None,
                )
                for s in result.steps
                if not s.skipped
            ],
        )
        series = self._probes.get(result.probe)
        if series is None:
            return  # a probe a reload removed: its series are gone on purpose
        if result.facts.target_version is not None:
            facts = result.facts
            self.target_info.observe(
                result.target, facts.target_version, facts.target_store_type, facts.target_multipart_uploads
            )
        self.target_diagnosis.observe(
            result.target, result.target_diagnosis.component if result.target_diagnosis else None
        )
        self.certificates.observe(result.target, result.certificate)
        family = self._family(series.scenario)
        if family is not None:
            family.observe(result)

    def handle_event(self, event: Event) -> None:
        if isinstance(event, JobEvent):
            self.series.job_event(event.probe, event.event)
        elif isinstance(event, ScheduleLag):
            self.series.observe_lag(event.probe, event.seconds)
        elif isinstance(event, Heartbeat):
            self.heartbeat.set(event.at)
        elif isinstance(event, ConfigLoaded):
            self.config_reload.set(1 if event.ok else 0)
