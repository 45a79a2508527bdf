"""Benchmark: a flood of wrong basic-auth passwords must leave the probes on schedule.

    .venv/bin/python -m tests.perf.auth_flood                    # about 1 minute
    .venv/bin/python -m tests.perf.auth_flood --daemon-repo /work/wt/perf-base   # the code before
    .venv/bin/python -m tests.perf.auth_flood --smoke            # does it still run?

Everything on 127.0.0.1. The daemon (`python -m monitor run --web.config.file ...`, a real
subprocess; basic auth with a bcrypt cost-10 hash, no TLS so the figure is bcrypt's) runs
40 `mlflow_read` probes every second against the bench's raw asyncio target. Two windows
of the same length: quiet, then a flood of `--clients` loopback threads each sending
requests with a new wrong password every time (the cache cannot help: the worst case),
bounded by `--seconds` and `--max-requests`. Reported per window: the p50/p99 schedule
lag from the daemon's own histogram (synthetic_monitor_schedule_lag_seconds), missed and
skipped runs, the daemon's CPU share, and during the flood the answers (401 checked,
429 refused because the bcrypt queue was full) and their rate.
"""

from __future__ import annotations

import argparse
import base64
import http.client
import itertools
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import bcrypt
import yaml

from tests.perf import bench
from tests.perf.bench import LOCAL, Proc, Target, bucket_quantile, free_port, lag_buckets, log, stop_all, total

USER, PASSWORD = "prometheus", "right-password"


def _header(user: str, password: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}


def get(port: int, path: str, headers: dict[str, str] | None = None, timeout: float = 30) -> tuple[int, bytes]:
    conn = http.client.HTTPConnection(LOCAL, port, timeout=timeout)
    try:
        conn.request("GET", path, headers=headers or {})
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


class Flood:
    """`clients` threads, each a keep-alive connection, a new wrong password per request."""

    def __init__(self, port: int, clients: int, seconds: float, max_requests: int) -> None:
        self.port, self.clients, self.seconds, self.max_requests = port, clients, seconds, max_requests
        self.statuses: dict[int | str, int] = {}
        self._lock = threading.Lock()
        self._counter = itertools.count()

    def run(self) -> float:
        end = time.monotonic() + self.seconds
        threads = [threading.Thread(target=self._client, args=(end,), daemon=True) for _ in range(self.clients)]
        started = time.monotonic()
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(self.seconds + 60)
        return time.monotonic() - started

    def _client(self, end: float) -> None:
        conn: http.client.HTTPConnection | None = None
        while time.monotonic() < end:
            n = next(self._counter)
            if n >= self.max_requests:
                break
            if conn is None:
                conn = http.client.HTTPConnection(LOCAL, self.port, timeout=30)
            try:
                conn.request("GET", "/metrics", headers=_header(USER, f"guess-{n}"))
                response = conn.getresponse()
                response.read()
                status: int | str = response.status
                if response.getheader("Connection", "").lower() == "close":
                    conn.close()
                    conn = None
            except (OSError, http.client.HTTPException) as exc:
                status = type(exc).__name__
                conn.close()
                conn = None
            with self._lock:
                self.statuses[status] = self.statuses.get(status, 0) + 1
        if conn is not None:
            conn.close()


def window(port: int, proc: Proc, seconds: float, flood: Flood | None) -> dict[str, Any]:
    auth = _header(USER, PASSWORD)
    before = get(port, "/metrics", auth)[1].decode()
    cpu0, t0 = proc.cpu(), time.monotonic()
    if flood is None:
        time.sleep(seconds)
    else:
        flood.run()
    cpu1, t1 = proc.cpu(), time.monotonic()
    status, body = get(port, "/metrics", auth, timeout=60)
    assert status == 200, f"/metrics with the right password answered {status} after the window"
    after = body.decode()
    b0, b1 = lag_buckets(before), lag_buckets(after)
    lag = {le: b1[le] - b0.get(le, 0.0) for le in b1}
    out: dict[str, Any] = {
        "seconds": t1 - t0,
        "runs": total(after, "synthetic_probe_runs_total") - total(before, "synthetic_probe_runs_total"),
        "lag_p50_ms": bucket_quantile(0.5, lag) * 1000,
        "lag_p99_ms": bucket_quantile(0.99, lag) * 1000,
        "missed": total(after, "synthetic_monitor_job_events_total", event="missed")
        - total(before, "synthetic_monitor_job_events_total", event="missed"),
        "skipped": total(after, "synthetic_monitor_job_events_total", event="skipped")
        - total(before, "synthetic_monitor_job_events_total", event="skipped"),
        "cpu_share": (cpu1 - cpu0) / (t1 - t0),
    }
    if flood is not None:
        out["statuses"] = dict(sorted(flood.statuses.items(), key=str))
        out["requests_per_s"] = sum(flood.statuses.values()) / (t1 - t0)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.perf.auth_flood", description=__doc__.split("\n\n")[0])
    parser.add_argument("--probes", type=int, default=40)
    parser.add_argument("--seconds", type=float, default=20.0, help="length of each window (default 20)")
    parser.add_argument("--clients", type=int, default=32, help="flooding threads (default 32)")
    parser.add_argument("--max-requests", type=int, default=50_000, help="flood requests at most (default 50000)")
    parser.add_argument("--daemon-repo", help="run the daemon from this checkout (before/after pairs)")
    parser.add_argument("--smoke", action="store_true", help="10 probes, 2 s windows: does it still run?")
    args = parser.parse_args(argv)
    if args.smoke:
        args.probes, args.seconds, args.clients, args.max_requests = 10, 2.0, 4, 2000
    if args.daemon_repo:
        bench.DAEMON_REPO = Path(args.daemon_repo).resolve()
    workdir = Path(tempfile.mkdtemp(prefix="synthetic-auth-flood-"))
    try:
        target = Target(workdir, {"fast": 0.0})
        web = workdir / "web-config.yml"
        hashed = bcrypt.hashpw(PASSWORD.encode(), bcrypt.gensalt(rounds=10)).decode()
        web.write_text(yaml.safe_dump({"basic_auth_users": {USER: hashed}}))
        config = workdir / "daemon.yaml"
        per_target = 10
        config.write_text(
            yaml.safe_dump(
                {
                    "log": {"level": "warning", "format": "json"},
                    "targets": [
                        {"name": f"t{i}", "kind": "mlflow", "url": target.url("fast")}
                        for i in range(-(-args.probes // per_target))
                    ],
                    "probes": [
                        {
                            "name": f"p{i}",
                            "target": f"t{i // per_target}",
                            "scenario": "mlflow_read",
                            "interval": 1.0,
                            "timeout": 0.8,
                        }
                        for i in range(args.probes)
                    ],
                }
            )
        )
        port = free_port()
        argv_daemon = [sys.executable, "-m", "monitor", "run", "--config", str(config)]
        argv_daemon += ["--listen", f"{LOCAL}:{port}", "--web.config.file", str(web)]
        proc = Proc("daemon", argv_daemon, workdir, cwd=bench.DAEMON_REPO, pythonpath=bench.DAEMON_REPO)
        auth = _header(USER, PASSWORD)
        bench.wait_until(lambda: get(port, "/readyz", auth, 5)[0] == 200, 60, "daemon /readyz", proc)
        time.sleep(min(3.0, args.seconds))  # past the first, spread runs
        log(f"quiet window: {args.seconds:g} s")
        quiet = window(port, proc, args.seconds, None)
        log(f"flood window: {args.seconds:g} s, {args.clients} clients, a new wrong password per request")
        flooded = window(port, proc, args.seconds, Flood(port, args.clients, args.seconds, args.max_requests))
    finally:
        stop_all()
        import shutil

        shutil.rmtree(workdir, ignore_errors=True)
    command = "python -m tests.perf.auth_flood" + (" --smoke" if args.smoke else "")
    if args.daemon_repo:
        command += f" --daemon-repo {args.daemon_repo}"
    print(f"`{command}`: {args.probes} probes of mlflow_read every 1 s, {bench.machine()}\n")
    print(
        "| window | runs | lag p50 ms | lag p99 ms | missed | skipped | daemon CPU (cores) | flood answers | flood req/s |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for name, w in (("quiet", quiet), ("flood", flooded)):
        answers = ", ".join(f"{k}: {v}" for k, v in w.get("statuses", {}).items()) or "-"
        rate = f"{w['requests_per_s']:.0f}" if "requests_per_s" in w else "-"
        print(
            f"| {name} ({w['seconds']:.0f} s) | {w['runs']:.0f} | {w['lag_p50_ms']:.1f} | {w['lag_p99_ms']:.1f} | "
            f"{w['missed']:.0f} | {w['skipped']:.0f} | {w['cpu_share']:.2f} | {answers} | {rate} |"
        )
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    finally:
        stop_all()
