"""The series every Prometheus exporter has: `process_*` (resident memory, CPU, open fds,
start time), `python_gc_*` and `python_info`, from prometheus-client's own collectors.

They live in a part of their own, rendered live at each scrape (they must be current, so
they are not cached like the per-probe series): reading /proc/self costs well under a
millisecond, next to a /metrics body of 1,000 probes (tests/perf/metrics_parts.py).
"""

from __future__ import annotations

from prometheus_client import GCCollector, PlatformCollector, ProcessCollector

from monitor.sinks.exposition import Exposition


def declare_process_metrics(exposition: Exposition) -> None:
    """Add the process, garbage-collector and platform collectors to the /metrics body."""
    part = exposition.part()
    ProcessCollector(registry=part)  # nothing on a platform without /proc: the collector yields none
    GCCollector(registry=part)
    PlatformCollector(registry=part)
