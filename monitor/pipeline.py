"""The one road a result takes: enrichers, then every sink. `run` and `check` share it.

    scenario -> ProbeResult -> enrichers (redaction, cross-check) -> sinks

Enrichers return a new (immutable) result; sinks only consume. Monitor events
(monitor/events.py) take the same fan-out to the sinks that have `handle_event`. A
failing sink is counted and logged, never fatal, and never stops the other sinks.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, Protocol

import structlog

from monitor.diagnosis import is_monitor_fault
from monitor.events import Event, JobEvent
from monitor.results import ProbeResult
from monitor.scenario.registry import SCENARIOS
from monitor.sinks import Sink
from monitor.sinks.errors import SinkErrors

if TYPE_CHECKING:
    from monitor.config import Config


class Enricher(Protocol):
    def enrich(self, result: ProbeResult) -> ProbeResult: ...


class Redact:
    """Scrub the config's secrets from free texts and facts: a server may quote them back."""

    def __init__(self, scrub: Callable[[str], str]) -> None:
        self.scrub = scrub

    def enrich(self, result: ProbeResult) -> ProbeResult:
        return result.redacted(self.scrub)


class CrossCheck:
    """Let a scenario that declares `correlate` read the other probes' latest results
    (a service's "my upstream is unavailable" against the direct probe of that upstream). It keeps its own
    store of the latest enriched result per probe: no sink's state feeds it."""

    def __init__(self, config: Config, clock: Callable[[], float] = time.time) -> None:
        self.config = config
        self._clock = clock
        self._latest: dict[str, ProbeResult] = {}

    def enrich(self, result: ProbeResult) -> ProbeResult:
        scenario = SCENARIOS.get(result.scenario)
        if scenario is not None and scenario.correlate is not None:
            result = scenario.correlate(result, self.config, self._latest, self._clock())
        self._latest[result.probe] = result
        return result

    def forget(self, probe: str) -> None:
        self._latest.pop(probe, None)


class Pipeline:
    def __init__(
        self,
        enrichers: Sequence[Enricher],
        sinks: Sequence[Sink],
        errors: SinkErrors | None = None,
        logger: Any = None,
    ) -> None:
        self.enrichers = list(enrichers)
        self.sinks = list(sinks)
        self.errors = errors
        self.log = logger if logger is not None else structlog.get_logger("monitor.pipeline")
        if errors is not None:
            for sink in self.sinks:
                errors.zero(sink.name)

    def handle(self, result: ProbeResult) -> ProbeResult:
        """Enrich `result` and hand it to every sink; returns the enriched result.

        A run the monitor itself spoiled (no connection of its own in time) says nothing
        about the target: it goes only to the sinks that show it (`takes_monitor_faults`:
        /status, the log) and counts as the probe's job event `error`, not as a failure."""
        for enricher in self.enrichers:
            result = enricher.enrich(result)
        sinks = self.sinks
        if is_monitor_fault(result):
            failed = result.failed_step
            self.handle_event(JobEvent(result.probe, "error", failed.error if failed else None))
            sinks = [s for s in sinks if getattr(s, "takes_monitor_faults", False)]
        for sink in sinks:
            try:
                sink.handle(result)
            except Exception:
                self._failed(sink, probe=result.probe)
        return result

    def handle_event(self, event: Event) -> None:
        for sink in self.sinks:
            handle_event = getattr(sink, "handle_event", None)
            if handle_event is None:
                continue
            try:
                handle_event(event)
            except Exception:
                self._failed(sink, event=type(event).__name__)

    def forget(self, probe: str) -> None:
        """A probe a reload removed: enrichers and sinks drop what they kept of it."""
        for part in [*self.enrichers, *self.sinks]:
            forget = getattr(part, "forget", None)
            if forget is not None:
                forget(probe)

    def _failed(self, sink: Sink, **context: Any) -> None:
        name = getattr(sink, "name", type(sink).__name__)  # a sink added by a test may lack one
        if self.errors is not None:
            self.errors.failed(name)
        self.log.exception("sink_failed", sink=name, **context)
