"""Consumers of ProbeResults. Each sink has `handle(result)`; none makes HTTP calls to targets."""

from __future__ import annotations

from typing import Protocol

from monitor.results import ProbeResult


class Sink(Protocol):
    # The `sink` label of synthetic_monitor_sink_errors_total.
    name: str

    def handle(self, result: ProbeResult) -> None: ...
