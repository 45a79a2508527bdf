"""Soak: thousands of failing probe runs through the real daemon, watching for leaks.

    python -m tests.perf.soak --runs 10000

Runs the real `Daemon` in this process (scheduler, scenarios, one httpx client per target,
every sink: metrics, history, log, alerting with a receiver that keeps failing) with
probes at a short interval against a mix of faults, all failing:

- a refused port (nothing listens),
- our fault proxy (tests/faultproxy.py, a subprocess) closing the connection with no response,
- the proxy answering 503,
- the proxy answering 200 with malformed JSON (fails at the second step, after /health passed).

It measures, after a warm-up and at the end (between runs, after a gc): RSS, open file
descriptors, sockets, established TCP connections, asyncio tasks, threads and the httpx
pools' connections, and prints a table with the growth. `--json` prints the figures as JSON
(tests/test_scale.py runs a short soak that way). Everything listens on 127.0.0.1.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

from tests.helpers import free_port

REPO = Path(__file__).resolve().parents[2]
FAULTS = {
    "refused": None,
    "close": {"kind": "close", "path": "/close/"},
    "http_503": {"kind": "status", "status": 503, "path": "/f503/"},
    "malformed_json": {"kind": "malformed_json", "path": "/badjson/"},
}
HOOK_FAULT = {"kind": "status", "status": 503, "path": "/hook"}


# --------------------------------------------------------------------------- measurements


def rss_bytes() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


def fd_targets() -> list[str]:
    out = []
    for fd in os.listdir("/proc/self/fd"):
        try:
            out.append(os.readlink(f"/proc/self/fd/{fd}"))
        except OSError:
            pass  # the fd of the listdir itself, gone already
    return out


def established_tcp(inodes: set[str]) -> int:
    count = 0
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            if len(fields) > 9 and fields[3] == "01" and fields[9] in inodes:
                count += 1
    return count


def pool_connections(daemon: Any) -> int:
    """Connections held by the daemon's httpx pools (private httpcore attributes; -1 if they moved)."""
    try:
        return sum(len(client._client._transport._pool.connections) for _, client in daemon.runner.clients.values())
    except AttributeError:
        return -1


def measure(daemon: Any) -> dict[str, float]:
    gc.collect()
    targets = fd_targets()
    sockets = {t[len("socket:[") : -1] for t in targets if t.startswith("socket:[")}
    return {
        "rss_mb": rss_bytes() / 2**20,
        "fds": len(targets),
        "sockets": len(sockets),
        "tcp_established": established_tcp(sockets),
        "asyncio_tasks": len(asyncio.all_tasks()),
        # Tasks other than the probe runs in flight at this instant: what a leak would grow.
        "background_tasks": len(asyncio.all_tasks() - set(getattr(daemon.runner, "_inflight", ()))),
        "threads": threading.active_count(),
        "pool_connections": pool_connections(daemon),
    }


async def quiescent_measure(daemon: Any) -> dict[str, float]:
    """Measure between runs: pause the scheduler, let in-flight runs end, measure, resume.

    Point samples taken mid-run count the sockets and tasks of whatever runs happen to be in
    flight; between runs only what outlives a run is left, which is what a leak would grow.
    (Reaches into the APScheduler instance: a measuring tool, not daemon code.)
    """
    scheduler = daemon.scheduler._scheduler
    scheduler.pause()
    try:
        deadline = time.monotonic() + 5
        while daemon.runner.inflight and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        await asyncio.sleep(0.05)  # closing transports finish their callbacks
        return measure(daemon)
    finally:
        scheduler.resume()


class CountingSink:
    """One more sink on the daemon: counts runs and their reasons (observes, changes nothing)."""

    def __init__(self) -> None:
        self.runs = 0
        self.ok = 0
        self.reasons: Counter[str] = Counter()
        self.changed = asyncio.Event()

    def handle(self, result: Any) -> None:
        self.runs += 1
        if result.ok:
            self.ok += 1
        else:
            step = result.failed_step
            self.reasons[f"{result.target}: {step.name} {result.reason.value}"] += 1


# --------------------------------------------------------------------------- the soak


def start_proxy() -> tuple[subprocess.Popen[str], str]:
    faults = [f for f in FAULTS.values() if f] + [HOOK_FAULT]
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "tests.faultproxy",
            "--upstream",
            "http://127.0.0.1:9",
            "--port",
            "0",
            "--fault",
            json.dumps(faults),
        ],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        start_new_session=True,
    )
    assert proc.stdout is not None
    line = proc.stdout.readline()
    if "listening on" not in line:
        proc.kill()
        raise RuntimeError(f"fault proxy did not start: {line!r}")
    return proc, line.rsplit(" ", 1)[1].strip()


def build_config(proxy_url: str, refused_url: str, per_fault: int, interval: float) -> dict[str, Any]:
    targets, probes = [], []
    for fault, spec in FAULTS.items():
        url = refused_url if spec is None else f"{proxy_url}{spec['path'].rstrip('/')}"
        targets.append({"name": fault, "kind": "mlflow", "url": url})
        for i in range(per_fault):
            probes.append(
                {
                    "name": f"{fault}_{i}",
                    "target": fault,
                    "scenario": "mlflow_read",
                    "interval": interval,
                    "timeout": interval * 0.8,
                }
            )
    return {
        "log": {"level": "info", "format": "json"},
        "targets": targets,
        "probes": probes,
        "alerting": {
            "startup_grace": 0,
            "failure_threshold": 2,
            "retry_backoff": "100ms",
            "retry_attempts": 2,
            "resend_interval": "2s",
            "receivers": [{"kind": "webhook", "url": f"{proxy_url}/hook"}],
        },
    }


async def soak(runs: int, warmup: int, per_fault: int, interval: float, progress: bool) -> dict[str, Any]:
    from monitor.config import Config
    from monitor.daemon import Daemon
    from monitor.logsetup import configure_logging

    proxy, proxy_url = start_proxy()
    try:
        config = Config.model_validate(build_config(proxy_url, f"http://127.0.0.1:{free_port()}", per_fault, interval))
        devnull = open(os.devnull, "w")
        configure_logging(config.log.level, config.log.format, config.secret_values(), stream=devnull)
        daemon = Daemon(config, listen="127.0.0.1:0")
        counter = CountingSink()
        daemon.sinks.append(counter)
        task = asyncio.create_task(daemon.run())
        started = time.monotonic()
        limit = started + max(60.0, runs / (len(config.probes) / interval) * 4)  # bounded in time too
        samples: list[tuple[int, dict[str, float]]] = []
        baseline: dict[str, float] | None = None
        next_sample = warmup
        step = max(1, (runs - warmup) // 10)
        while counter.runs < runs:
            if time.monotonic() > limit:
                raise TimeoutError(f"only {counter.runs} of {runs} runs within {limit - started:.0f}s")
            if task.done():
                raise RuntimeError(f"the daemon stopped: {task.result()!r}")
            if counter.runs >= next_sample:
                figures = await quiescent_measure(daemon)
                samples.append((counter.runs, figures))
                if baseline is None:
                    baseline = figures
                    warm_at = time.monotonic()
                    warm_runs = counter.runs
                if progress:
                    print(
                        f"  {counter.runs:>6} runs  rss {figures['rss_mb']:.1f} MB  fds {figures['fds']:.0f}  "
                        f"tasks {figures['asyncio_tasks']:.0f}",
                        file=sys.stderr,
                        flush=True,
                    )
                next_sample += step
            await asyncio.sleep(0.05)
        final = await quiescent_measure(daemon)
        end_runs = counter.runs
        elapsed = time.monotonic() - started
        rate = (end_runs - warm_runs) / max(1e-9, time.monotonic() - warm_at)
        samples.append((end_runs, final))
        events = {
            (s.labels["probe"], s.labels["event"]): s.value
            for metric in daemon.registry.collect()
            if metric.name == "synthetic_monitor_job_events"
            for s in metric.samples
            if s.name.endswith("_total")
        }
        # Let the runs the resumed scheduler just submitted start before stopping: a stop landing
        # in that very loop iteration cancels them (see tests/test_scale.py, the stop race).
        await asyncio.sleep(0.5)
        daemon.request_stop()
        code = await asyncio.wait_for(task, 30)
        devnull.close()
    finally:
        proxy.send_signal(signal.SIGTERM)
        try:
            proxy.wait(10)
        except subprocess.TimeoutExpired:
            proxy.kill()
            proxy.wait(5)
    assert baseline is not None
    return {
        "runs": end_runs,
        "warmup_runs": warm_runs,
        "ok_runs": counter.ok,
        "probes": len(config.probes),
        "interval_seconds": interval,
        "elapsed_seconds": round(elapsed, 1),
        "runs_per_second": round(rate, 1),
        "exit_code": code,
        "reasons": dict(counter.reasons.most_common()),
        "job_events": {
            event: sum(v for (_, e), v in events.items() if e == event) for event in ("error", "missed", "skipped")
        },
        "after_warmup": baseline,
        "end": final,
        "growth": {k: round(final[k] - baseline[k], 2) for k in final},
        "samples": [{"runs": n, **f} for n, f in samples],
    }


def table(report: dict[str, Any]) -> str:
    rows = [
        ("RSS (MB)", "rss_mb", "{:.1f}"),
        ("open file descriptors", "fds", "{:.0f}"),
        ("sockets", "sockets", "{:.0f}"),
        ("established TCP connections", "tcp_established", "{:.0f}"),
        ("asyncio tasks (all)", "asyncio_tasks", "{:.0f}"),
        ("asyncio tasks besides in-flight runs", "background_tasks", "{:.0f}"),
        ("threads", "threads", "{:.0f}"),
        ("httpx pool connections", "pool_connections", "{:.0f}"),
    ]
    lines = [
        f"| measure | after warm-up ({report['warmup_runs']} runs) | end ({report['runs']} runs) | growth "
        f"| highest sample after warm-up |",
        "|---|---|---|---|---|",
    ]
    for label, key, fmt in rows:
        a, b, g = report["after_warmup"][key], report["end"][key], report["growth"][key]
        peak = max(sample[key] for sample in report["samples"])
        lines.append(
            f"| {label} | {fmt.format(a)} | {fmt.format(b)} | {'+' if g >= 0 else ''}{fmt.format(g)} "
            f"| {fmt.format(peak)} |"
        )
    lines.append("")
    lines.append(
        f"{report['runs']} runs ({report['ok_runs']} passed) by {report['probes']} probes every "
        f"{report['interval_seconds']}s in {report['elapsed_seconds']}s "
        f"({report['runs_per_second']} runs/s after warm-up); scheduler events: {report['job_events']}"
    )
    lines.append("failures: " + ", ".join(f"{k} x{v}" for k, v in report["reasons"].items()))
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.perf.soak", description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=10000, help="failing runs in total (default 10000)")
    parser.add_argument("--warmup", type=int, default=None, help="runs before the baseline (default runs/10, >= 100)")
    parser.add_argument("--per-fault", type=int, default=20, help="probes per fault kind (default 20)")
    parser.add_argument(
        "--interval",
        type=float,
        default=0.5,
        help="probe interval in seconds (default 0.5; the deadline is 80 %% of it)",
    )
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    parser.add_argument(
        "--smoke", action="store_true", help="200 runs of 2 probes per fault: does it still run? (figures meaningless)"
    )
    args = parser.parse_args(argv)
    if args.smoke:
        args.runs, args.per_fault, args.warmup = 200, 2, 40
    if args.runs < 10:
        parser.error("--runs must be at least 10")
    warmup = args.warmup if args.warmup is not None else max(100, args.runs // 10)
    warmup = min(warmup, args.runs // 2)
    report = asyncio.run(soak(args.runs, warmup, args.per_fault, args.interval, progress=not args.json))
    print(json.dumps(report, indent=2) if args.json else table(report))
    return 0 if report["exit_code"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
