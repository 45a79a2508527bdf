"""What the process collectors add to a /metrics render at 1,000 probes, in-process.

`python -m tests.perf.metrics_parts` builds the daemon's exposition (the metrics sink with
1,000 `mlflow_read` probes) and prints the median render time without and with the
`process_*` / `python_*` part, and the bytes each adds.

`--http DIR [DIR ...]` also times real GETs of /metrics (median of 20 on one keep-alive
connection) from a daemon run out of each checkout DIR with 1,000 idle probes (interval
1h, against a refused port): the scrape alone, without the probe load of
`python -m tests.perf.bench --only scale`, so a before/after pair shows what a change to
the exposition costs even on a busy machine.
"""

from __future__ import annotations

import argparse
import http.client
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

from monitor.config import DEFAULT_BUCKETS
from monitor.scenario.registry import SCENARIOS
from monitor.sinks.exposition import Exposition
from monitor.sinks.metrics import MetricsSink, ProbeSeries
from monitor.sinks.process import declare_process_metrics
from tests.helpers import free_port

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


def http_median(checkout: Path, scrapes: int = 20) -> tuple[float, float, int]:
    """(median ms, max ms, bytes) of GET /metrics from a daemon of `checkout` with idle probes."""
    refused, port = free_port(), free_port()
    with tempfile.TemporaryDirectory() as tmp:
        config = Path(tmp) / "config.yaml"
        targets = [{"name": f"t{i}", "kind": "mlflow", "url": f"http://127.0.0.1:{refused}"} for i in range(100)]
        probes = [
            {"name": f"p{i}", "target": f"t{i % 100}", "scenario": "mlflow_read", "interval": "1h", "timeout": "5s"}
            for i in range(PROBES)
        ]
        config.write_text(yaml.safe_dump({"log": {"level": "error"}, "targets": targets, "probes": probes}))
        env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "ASGARD_", "SYNTHETIC_"))}
        proc = subprocess.Popen(
            [sys.executable, "-m", "monitor", "run", "--config", str(config), "--listen", f"127.0.0.1:{port}"],
            cwd=checkout,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
            deadline = time.monotonic() + 120
            while True:  # ready: every probe ran once (refused: fast)
                try:
                    conn.request("GET", "/readyz")
                    response = conn.getresponse()
                    response.read()
                    if response.status == 200:
                        break
                except OSError:
                    conn.close()
                if time.monotonic() > deadline:
                    raise TimeoutError("daemon not ready")
                time.sleep(0.5)
            times, size = [], 0
            for _ in range(scrapes):
                started = time.perf_counter()
                conn.request("GET", "/metrics")
                size = len(conn.getresponse().read())
                times.append(time.perf_counter() - started)
                time.sleep(0.5)
            conn.close()
        finally:
            proc.terminate()
            proc.wait(timeout=30)
    return statistics.median(times) * 1000, max(times) * 1000, size


if __name__ == "__main__":
    parser = argparse.ArgumentParser(prog="python -m tests.perf.metrics_parts")
    parser.add_argument("--http", nargs="+", metavar="DIR", help="also GET /metrics from a daemon run out of DIR")
    parser.add_argument("--smoke", action="store_true", help="50 probes: does it still run? (figures meaningless)")
    args = parser.parse_args()
    if args.smoke:
        PROBES = 50
    main()
    if args.http:
        print()
        print(f"| GET /metrics, {PROBES} idle probes | median ms | max ms | bytes |")
        print("|---|---:|---:|---:|")
        for checkout in args.http:
            median, worst, size = http_median(Path(checkout).resolve())
            print(f"| {checkout} | {median:.1f} | {worst:.1f} | {size} |")
