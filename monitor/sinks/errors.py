"""`synthetic_monitor_sink_errors_total{sink}`: results, events or alerting work a sink failed
to handle. Broken alerting or a broken sink must be visible, so the pipeline and the
alert sink's own background work both count here."""

from __future__ import annotations

import contextlib

from prometheus_client import CollectorRegistry, Counter

from monitor.sinks.exposition import Exposition, declare_in


class SinkErrors:
    def __init__(self, registry: CollectorRegistry | Exposition) -> None:
        self.counter = Counter(
            "synthetic_monitor_sink_errors",
            "Results (or alerting work) a sink failed to handle, by sink.",
            ["sink"],
            registry=declare_in(registry),
        )

    def zero(self, sink: str) -> None:
        """The series exists from start: increase() sees the first error."""
        self.counter.labels(sink)

    def failed(self, sink: str) -> None:
        with contextlib.suppress(Exception):  # counting must never add a failure of its own
            self.counter.labels(sink).inc()
