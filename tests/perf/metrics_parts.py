"""What the process collectors add to a /metrics render at 1,000 probes, in-process.

`python -m tests.perf.metrics_parts` builds the daemon's exposition (the metrics sink with
1,000 `mlflow_read` probes) and prints the median render time without and with the
`process_*` / `python_*` part, and the bytes each adds. The HTTP figure (a real GET of
/metrics against a daemon with 1,000 probes) is `python -m tests.perf.bench --only scale`.
"""

from __future__ import annotations

import statistics
import time

from monitor.config import DEFAULT_BUCKETS
from monitor.scenario.registry import SCENARIOS
from monitor.sinks.exposition import Exposition
from monitor.sinks.metrics import MetricsSink, ProbeSeries
from monitor.sinks.process import declare_process_metrics

PROBES = 1000
ROUNDS = 200


def _timed(render: object, rounds: int = ROUNDS) -> tuple[float, int]:
    assert callable(render)
    times, size = [], 0
    for _ in range(rounds):
        started = time.perf_counter()
        size = len(render())
        times.append(time.perf_counter() - started)
    return statistics.median(times) * 1000, size


def main() -> None:
    exposition = Exposition()
    sink = MetricsSink(exposition, DEFAULT_BUCKETS)
    steps = SCENARIOS["mlflow_read"].steps
    for i in range(PROBES):
        sink.register(ProbeSeries(f"t{i % 10}", f"p{i}", steps, 10.0, "mlflow_read"))
    without_ms, without_bytes = _timed(exposition.render)
    declare_process_metrics(exposition)
    with_ms, with_bytes = _timed(exposition.render)
    part = Exposition()
    declare_process_metrics(part)
    alone_ms, alone_bytes = _timed(part.render)
    print(f"| render at {PROBES} probes | median ms | bytes |")
    print("|---|---:|---:|")
    print(f"| without process metrics | {without_ms:.3f} | {without_bytes} |")
    print(f"| with process metrics | {with_ms:.3f} | {with_bytes} |")
    print(f"| the process part alone | {alone_ms:.3f} | {alone_bytes} |")


if __name__ == "__main__":
    main()
