"""Benchmark: the alert sink's cost on the event loop when every probe fails at once.

    .venv/bin/python -m tests.perf.alert_burst                 # 1,000 probes, 3 rounds
    .venv/bin/python -m tests.perf.alert_burst --probes 2000 --rounds 5

Feeds failing results of N probes (threshold 1: the first round fires N alerts) to a real
`AlertSink`, with and without a state file and with a real webhook receiver on 127.0.0.1,
timing every synchronous `handle()` (what the probe path pays), then stops the sink
(flushing notifications and the state file). Prints ONE markdown table. What it showed
before the fixes of issue 12: the state file rewritten synchronously after every result
and the firing gauge recounted from every state on every fire made it O(states) per result.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry

from monitor.alerting.sink import AlertSink
from monitor.config import AlertingConfig
from monitor.logsetup import configure_logging
from monitor.results import ProbeResult, Reason, StepResult
from tests.standin.webhook import serve_in_thread


def _failing(probe: str) -> ProbeResult:
    step = StepResult("health", False, 0.01, reason=Reason.UNREACHABLE, error="connection refused")
    return ProbeResult(probe, "mlflow", "mlflow_read", time.time(), 0.01, (step,), 10.0)


async def _one(probes: int, rounds: int, state_file: Path | None, hook_url: str | None) -> dict[str, Any]:
    config: dict[str, Any] = {"failure_threshold": 1, "startup_grace": 0}
    if state_file is not None:
        config["state_file"] = str(state_file)
    if hook_url is not None:
        config["receivers"] = [{"kind": "webhook", "url": hook_url}]
    sink = AlertSink(AlertingConfig.model_validate(config), CollectorRegistry())
    names = [f"p{i:05d}" for i in range(probes)]
    await sink.start([(n, "mlflow") for n in names])
    durations: list[float] = []
    started = time.perf_counter()
    for _ in range(rounds):
        for name in names:
            t = time.perf_counter()
            sink.handle(_failing(name))
            durations.append(time.perf_counter() - t)
        await asyncio.sleep(0)  # let the writer and the receivers' workers run between rounds
    total = time.perf_counter() - started
    await sink.stop(flush_timeout=30)
    durations.sort()
    return {
        "total": total,
        "p50_ms": statistics.median(durations) * 1000,
        "p99_ms": durations[int(len(durations) * 0.99) - 1] * 1000,
        "max_ms": durations[-1] * 1000,
        "writes": getattr(sink, "state_writes", "n/a"),  # n/a: code before the coalesced writer
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--probes", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument(
        "--smoke", action="store_true", help="20 probes, 1 round: does it still run? (figures meaningless)"
    )
    args = parser.parse_args(argv)
    if args.smoke:
        args.probes, args.rounds = 20, 1
    configure_logging("error", "json", stream=open(os.devnull, "w"))
    hook = serve_in_thread()
    rows = []
    try:
        with tempfile.TemporaryDirectory() as tmp:
            for label, state, url in (
                ("no state file, no receiver", None, None),
                ("state file", Path(tmp) / "a.json", None),
                ("state file + webhook", Path(tmp) / "b.json", f"{hook.url}/hook"),
            ):
                rows.append((label, asyncio.run(_one(args.probes, args.rounds, state, url))))
        requests = len(hook.snapshot())
    finally:
        hook.stop()
    results = args.probes * args.rounds
    print(
        f"{args.probes} probes failing together, {args.rounds} rounds ({results} results, {args.probes} alerts fire)\n"
    )
    print("| setup | total s | handle p50 ms | handle p99 ms | handle max ms | state writes |")
    print("|---|---|---|---|---|---|")
    for label, r in rows:
        print(
            f"| {label} | {r['total']:.3f} | {r['p50_ms']:.3f} | {r['p99_ms']:.3f} | {r['max_ms']:.1f} | {r['writes']} |"
        )
    print(f"\nwebhook requests for {args.probes} alerts: {requests}")


if __name__ == "__main__":
    main()
