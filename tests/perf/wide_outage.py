"""Benchmark: a wide outage, 1,000 probes at 10 s all failing at once, alerting on.

    .venv/bin/python -m tests.perf.wide_outage              # about 3 minutes
    .venv/bin/python -m tests.perf.wide_outage --out wide.json
    .venv/bin/python -m tests.perf.wide_outage --fleet 3      # 3 daemons, peers on

Everything on 127.0.0.1. The daemon (`python -m monitor run`, a real subprocess) runs
1,000 `mlflow_read` probes at 10 s (timeout 5 s, 10 probes per target) against one
address where, in turn,

1. nothing listens (connection refused: every run fails at once), then
2. a server accepts and reads but never answers (every run hangs until its 5 s deadline).

Alerting is on, WITH the state file (`alerting.state_file`), startup_grace 0, and two
receivers of our own that count what they get: an Alertmanager one (`/api/v2/alerts`) and
a webhook. Reported per phase: runs done vs expected, missed/skipped runs (goal 0), the
p99 schedule lag from the daemon's own histogram (goal <= 50 ms), notifications per
receiver (requests, alerts; goal a few batched requests, not one per alert), and the RSS
peak (VmHWM) of the whole run, which sizes the Kubernetes memory limit. Every process
started here is stopped by its pid; every wait is bounded.

Fleet mode (`--fleet N`): N daemons in N locations, each with the others as `peers`, all
running the same 1,000 probes against the same failing address and pushing to the same
counting receivers; every critical alert passes the quorum gate (one verdict request per
peer per tick). Reported per daemon (the table shows the worst) plus the bytes per second
each daemon received from each peer (synthetic_monitor_peer_response_bytes_total) and
notifications per firing alert.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import socket
import sys
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from tests.perf.bench import (
    LOCAL,
    Daemon,
    Proc,
    bucket_quantile,
    f,
    free_port,
    http_get,
    lag_buckets,
    log,
    machine,
    mlflow_target,
    stop_all,
    total,
    versions,
    wait_until,
)

PROBES = 1000
PER_TARGET = 10
INTERVAL = 10.0
TIMEOUT = 5.0
GOAL_LAG_P99_MS = 50.0
READY_TIMEOUT = 90.0
GOAL_REQUESTS_PER_PHASE = 10  # "a few batched requests per receiver", not one per alert


class Receivers:
    """Two counting receivers on one loopback port: /api/v2/alerts (Alertmanager) and /hook."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.requests: list[tuple[float, str, int]] = []  # (monotonic, receiver, alerts in the body)
        receivers = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server's naming
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length)
                try:
                    document = json.loads(body)
                    alerts = len(document) if isinstance(document, list) else len(document.get("alerts", []))
                except ValueError:
                    alerts = -1
                kind = "alertmanager" if self.path.startswith("/api/v2/alerts") else "webhook"
                with receivers.lock:
                    receivers.requests.append((time.monotonic(), kind, alerts))
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer((LOCAL, 0), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, name="receivers", daemon=True)
        self.thread.start()

    def between(self, start: float, end: float) -> dict[str, dict[str, int]]:
        out = {kind: {"requests": 0, "alerts": 0, "max_alerts_per_request": 0} for kind in ("alertmanager", "webhook")}
        with self.lock:
            for at, kind, alerts in self.requests:
                if start <= at < end:
                    out[kind]["requests"] += 1
                    out[kind]["alerts"] += max(alerts, 0)
                    out[kind]["max_alerts_per_request"] = max(out[kind]["max_alerts_per_request"], alerts)
        return out

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def closed_port() -> int:
    """A loopback port nothing listens on (connection refused) until the hang server takes it."""
    with socket.socket() as sock:
        sock.bind((LOCAL, 0))
        return int(sock.getsockname()[1])


async def _serve_hang(port: int) -> None:
    """Accept, read, never answer: the hung-target phase (its own process)."""
    connections: set[asyncio.StreamWriter] = set()

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        connections.add(writer)
        try:
            while await reader.read(65536):
                pass
        except (ConnectionError, OSError):
            pass
        finally:
            connections.discard(writer)
            writer.close()

    server = await asyncio.start_server(handle, LOCAL, port, backlog=4096)
    print(json.dumps({"port": port}), flush=True)
    async with server:
        await server.serve_forever()


def rss_peak_mb(pid: int) -> tuple[float, float]:
    """(VmRSS, VmHWM) in MiB."""
    values = {}
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            key, _, rest = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                values[key] = int(rest.split()[0]) / 1024
    return values.get("VmRSS", float("nan")), values.get("VmHWM", float("nan"))


def scrape(daemon: Daemon) -> str:
    return daemon.metrics()


def phase_figures(before: str, after: str, seconds: float) -> dict[str, Any]:
    b0, b1 = lag_buckets(before), lag_buckets(after)
    window = {le: b1[le] - b0.get(le, 0.0) for le in b1}
    runs = total(after, "synthetic_probe_runs_total") - total(before, "synthetic_probe_runs_total")
    failed = total(after, "synthetic_probe_runs_total", result="failure") - total(
        before, "synthetic_probe_runs_total", result="failure"
    )

    def delta(name: str, **labels: str) -> float:
        return total(after, name, **labels) - total(before, name, **labels)

    return {
        "seconds": seconds,
        "runs": runs,
        "failed_runs": failed,
        "expected_runs": PROBES * seconds / INTERVAL,
        "missed": delta("synthetic_monitor_job_events_total", event="missed"),
        "skipped": delta("synthetic_monitor_job_events_total", event="skipped"),
        "errors": delta("synthetic_monitor_job_events_total", event="error"),
        "lag_runs": window.get(float("inf"), 0.0),
        "lag_p50_ms": bucket_quantile(0.5, window) * 1000,
        "lag_p99_ms": bucket_quantile(0.99, window) * 1000,
        "lag_over_50ms": window.get(float("inf"), 0.0) - window.get(0.05, 0.0),
        "notifications": {
            result: delta("synthetic_monitor_notifications_total", result=result) for result in ("success", "failure")
        },
        "alerts_firing": total(after, "synthetic_monitor_alerts_firing"),
        "sink_errors": delta("synthetic_monitor_sink_errors_total"),
    }


def peer_bytes(before: str, after: str, seconds: float) -> dict[str, float]:
    """Bytes per second received from each peer in the window (one daemon's view)."""
    out: dict[str, float] = {}
    for line in after.splitlines():
        if line.startswith("synthetic_monitor_peer_response_bytes_total{"):
            labels = line[line.index("{") : line.rindex("}") + 1]
            peer = labels.split('peer="', 1)[1].split('"', 1)[0]
            out[peer] = (
                total(after, "synthetic_monitor_peer_response_bytes_total", peer=peer)
                - total(before, "synthetic_monitor_peer_response_bytes_total", peer=peer)
            ) / max(seconds, 1e-9)
    return out


def measure(workdir: Path, phase_seconds: float, state_file_on: bool = True, fleet: int = 1) -> dict[str, Any]:
    receivers = Receivers()
    port = closed_port()
    targets = [mlflow_target(f"t{i}", f"http://{LOCAL}:{port}") for i in range(PROBES // PER_TARGET)]
    probes = [
        {
            "name": f"p{i}",
            "target": f"t{i // PER_TARGET}",
            "scenario": "mlflow_read",
            "interval": f"{INTERVAL:g}s",
            "timeout": f"{TIMEOUT:g}s",
        }
        for i in range(PROBES)
    ]

    def alerting(index: int) -> dict[str, Any]:
        return {
            "failure_threshold": 2,
            "success_threshold": 2,
            "startup_grace": "0s",
            **({"state_file": str(workdir / f"alert-state-{index}.json")} if state_file_on else {}),
            "receivers": [
                {"kind": "alertmanager", "name": "am", "url": f"http://{LOCAL}:{receivers.port}"},
                {"kind": "webhook", "name": "hook", "url": f"http://{LOCAL}:{receivers.port}/hook"},
            ],
        }

    out: dict[str, Any] = {
        "probes": PROBES,
        "interval_s": INTERVAL,
        "timeout_s": TIMEOUT,
        "phases": {},
        "state_file": state_file_on,
        "fleet": fleet,
    }
    hang: Proc | None = None
    started = time.monotonic()
    ports = [free_port() for _ in range(fleet)]
    daemons: list[Daemon] = []
    for i in range(fleet):
        extra: dict[str, Any] = {"alerting": alerting(i)}
        if fleet > 1:
            extra["location"] = f"loc{i}"
            extra["peers"] = {"urls": [f"http://{LOCAL}:{p}" for j, p in enumerate(ports) if j != i], "timeout": "1s"}
        name = "daemon-wide-outage" if fleet == 1 else f"daemon-wide-outage-{i}"
        daemons.append(Daemon(workdir, name, probes, targets, extra=extra, port=ports[i]))
    daemon = daemons[0]
    state_file = workdir / "alert-state-0.json"
    rss_samples: list[float] = []
    stop_sampling = threading.Event()

    def sample_rss() -> None:
        while not stop_sampling.wait(1.0):
            try:
                rss_samples.append(max(rss_peak_mb(d.proc.pid)[0] for d in daemons))
            except OSError:
                return

    sampler = threading.Thread(target=sample_rss, name="rss", daemon=True)
    sampler.start()
    try:
        try:  # every probe has run once; a daemon drowning in the outage may not get there
            for each in daemons:
                wait_until(each.ready, READY_TIMEOUT, "/readyz", each.proc, interval=0.5)
            out["ready_s"] = time.monotonic() - started
        except TimeoutError:
            out["ready_s"] = None
            log(f"/readyz not 200 within {READY_TIMEOUT:.0f} s: measuring anyway")
        # Past the first (spread) runs and one whole interval, so each phase sees steady state.
        time.sleep(max(0.0, INTERVAL + 1.0 - (time.monotonic() - started)))
        for name in ("refused", "hanging"):
            if name == "hanging":
                argv = [sys.executable, "-m", "tests.perf.wide_outage", "--_hang", str(port)]
                hang = Proc("hang", argv, workdir, stdout_pipe=True)
                assert hang.proc.stdout is not None
                if not hang.proc.stdout.readline():
                    raise RuntimeError(f"hang server did not start; see {hang.log_path}")
                # One interval for the switch: runs started while refusing end, hanging ones begin.
                time.sleep(INTERVAL)
            log(f"phase {name}: {phase_seconds:.0f} s")
            befores, t0 = [scrape(d) for d in daemons], time.monotonic()
            time.sleep(phase_seconds)
            afters, t1 = [scrape(d) for d in daemons], time.monotonic()
            each = [phase_figures(b, a, t1 - t0) for b, a in zip(befores, afters, strict=True)]
            figures = dict(max(each, key=lambda p: p["lag_p99_ms"]))  # the worst daemon (a copy: `each` goes in too)
            figures["receivers"] = receivers.between(t0, t1)
            if fleet > 1:
                figures["daemons"] = each
                figures["peer_bytes_per_s"] = [peer_bytes(b, a, t1 - t0) for b, a in zip(befores, afters, strict=True)]
                firing = sum(p["alerts_firing"] for p in each)
                figures["alerts_per_firing_alert"] = {
                    kind: rx["alerts"] / firing if firing else float("nan") for kind, rx in figures["receivers"].items()
                }
            out["phases"][name] = figures
        out["since_start_receivers"] = receivers.between(0.0, time.monotonic())
        finals = [scrape(d) for d in daemons]
        out["missed_total"] = sum(total(x, "synthetic_monitor_job_events_total", event="missed") for x in finals)
        out["skipped_total"] = sum(total(x, "synthetic_monitor_job_events_total", event="skipped") for x in finals)
        out["alerts_firing_end"] = sum(total(x, "synthetic_monitor_alerts_firing") for x in finals)
        out["peer_errors_total"] = sum(total(x, "synthetic_monitor_peer_errors_total") for x in finals)
        peaks = [rss_peak_mb(d.proc.pid) for d in daemons]
        out["rss_end_mb"] = max(p[0] for p in peaks)
        out["rss_peak_mb"] = max(p[1] for p in peaks)  # VmHWM: the high-water mark of the whole run
        out["rss_sampled_max_mb"] = max(rss_samples) if rss_samples else float("nan")
        out["cpu_s"] = sum(d.proc.cpu() for d in daemons)
        out["state_file_bytes"] = state_file.stat().st_size if state_file.exists() else 0
        out["elapsed_s"] = time.monotonic() - started
        # Health while everything fails: the loop is alive.
        out["healthz"] = http_get(daemon.port, "/healthz", 10)[0]
    finally:
        stop_sampling.set()
        for each in daemons:
            each.proc.stop()
        if hang is not None:
            hang.stop()
        receivers.close()
    return out


def render(data: dict[str, Any]) -> str:
    m = data["measure"]
    lines = [
        f"Wide outage, {data['date']} UTC, {data['machine']}; python {data['versions'].get('python')}; "
        f"command `{data['command']}`",
        "",
        "| phase | runs / expected | missed + skipped (goal 0) | lag p50 / p99 ms (goal p99 <= 50) | runs lagging > 50 ms "
        "| Alertmanager requests (alerts) | webhook requests (alerts) |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, p in m["phases"].items():
        am, hook = p["receivers"]["alertmanager"], p["receivers"]["webhook"]
        lines.append(
            f"| {name} ({p['seconds']:.0f} s) | {p['runs']:.0f} / {p['expected_runs']:.0f} "
            f"| {p['missed'] + p['skipped']:.0f} | {f(p['lag_p50_ms'], 1)} / {f(p['lag_p99_ms'], 1)} "
            f"| {p['lag_over_50ms']:.0f} | {am['requests']} ({am['alerts']}) | {hook['requests']} ({hook['alerts']}) |"
        )
    if m.get("fleet", 1) > 1:
        lines += ["", f"Fleet of {m['fleet']} daemons (peers on; the table shows the daemon with the worst p99 lag):"]
        for name, p in m["phases"].items():
            rates = [f"{rate / 1024:.1f}" for per_daemon in p["peer_bytes_per_s"] for rate in per_daemon.values()]
            per_alert = ", ".join(f"{k} {v:.2f}" for k, v in p["alerts_per_firing_alert"].items())
            lags = " / ".join(f(d["lag_p99_ms"], 1) for d in p["daemons"])
            lines.append(
                f"- {name}: p99 lag per daemon {lags} ms; missed+skipped per daemon "
                f"{' / '.join(str(int(d['missed'] + d['skipped'])) for d in p['daemons'])}; peer KiB/s per"
                f" (daemon, peer) pair {', '.join(rates)}; alerts received per firing alert: {per_alert}"
            )
        lines.append(f"Peer query errors in the whole run: {m['peer_errors_total']:.0f}.")
    total_rx = m["since_start_receivers"]
    lines += [
        "",
        f"/readyz after {f(m['ready_s'], 1)} s. "
        f"RSS peak (VmHWM) {f(m['rss_peak_mb'], 1)} MiB, at the end {f(m['rss_end_mb'], 1)} MiB; "
        f"alerts firing at the end {m['alerts_firing_end']:.0f}; whole run: Alertmanager "
        f"{total_rx['alertmanager']['requests']} requests ({total_rx['alertmanager']['alerts']} alerts), webhook "
        f"{total_rx['webhook']['requests']} requests ({total_rx['webhook']['alerts']} alerts); missed {m['missed_total']:.0f}, "
        f"skipped {m['skipped_total']:.0f}; state file {m['state_file_bytes']} bytes; daemon CPU {f(m['cpu_s'], 1)} s "
        f"over {f(m['elapsed_s'], 0)} s.",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.perf.wide_outage", description=__doc__.split("\n\n")[0])
    parser.add_argument("--phase-seconds", type=float, default=60.0, help="length of each phase (default 60)")
    parser.add_argument("--out", help="also write the figures as JSON to this file")
    parser.add_argument("--keep", action="store_true", help="keep the work directory (logs, configs)")
    parser.add_argument(
        "--no-state-file",
        action="store_true",
        help="diagnostic: alerting on but without alerting.state_file, to see what the file costs",
    )
    parser.add_argument("--fleet", type=int, default=1, help="daemons in the fleet, peers of each other (default 1)")
    parser.add_argument(
        "--smoke", action="store_true", help="20 probes at 2 s, 2 s phases: does it still run? (figures meaningless)"
    )
    parser.add_argument("--_hang", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.smoke:
        global PROBES, INTERVAL, TIMEOUT
        PROBES, INTERVAL, TIMEOUT = 20, 2.0, 1.0
        args.phase_seconds = 2.0
    if args._hang:
        asyncio.run(_serve_hang(args._hang))
        return 0
    command = "python -m tests.perf.wide_outage" + (" --smoke" if args.smoke else "")
    if args.phase_seconds != 60.0 and not args.smoke:
        command += f" --phase-seconds {args.phase_seconds:g}"
    if args.no_state_file:
        command += " --no-state-file"
    if args.fleet != 1:
        command += f" --fleet {args.fleet}"
    data: dict[str, Any] = {
        "date": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M"),
        "machine": machine(),
        "versions": versions(),
        "command": command,
    }
    workdir = Path(tempfile.mkdtemp(prefix="synthetic-wide-outage-"))
    try:
        data["measure"] = measure(workdir, args.phase_seconds, state_file_on=not args.no_state_file, fleet=args.fleet)
    finally:
        stop_all()
        if not args.keep:
            import shutil

            shutil.rmtree(workdir, ignore_errors=True)
        else:
            log(f"work directory kept: {workdir}")
    print(render(data))
    if args.out:
        Path(args.out).write_text(json.dumps(data, indent=2, default=str) + "\n")
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    finally:
        stop_all()
