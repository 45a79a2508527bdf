"""Consumers of ProbeResults and monitor events.

Each sink has `handle(result)` and may have `handle_event(event)` (monitor/events.py);
none makes HTTP calls to targets, none feeds another sink, and each owns its metrics.
"""

from __future__ import annotations

from typing import Protocol

from monitor.events import Event
from monitor.results import ProbeResult


class Sink(Protocol):
    # The `sink` label of synthetic_monitor_sink_errors_total.
    name: str

    def handle(self, result: ProbeResult) -> None: ...


class EventSink(Sink, Protocol):
    def handle_event(self, event: Event) -> None: ...
