"""Benchmark: the daemon side by side with blackbox_exporter, on loopback, in one go.

    .venv/bin/python -m tests.perf.bench            # full run (about 14 minutes on 2 cores)
    .venv/bin/python -m tests.perf.bench --quick    # CI-sized smoke (about 4 minutes)
    .venv/bin/python -m tests.perf.bench --out bench.json

Prints ONE markdown table (machine, versions and date included). Everything runs on
127.0.0.1: a raw asyncio HTTP target of our own (its own process), the daemon as a real
subprocess (`python -m monitor run`), and `prometheus-blackbox-exporter`. Every process
started here is started in its own session and stopped by its pid; every request loop is
bounded in count and time.

What is measured (see the row notes in the table):
1. Fidelity: the target delays GET /health by 0/10/100/1000 ms and measures the delay it
   really applied (monotonic, server side, from the request parsed to the response written).
   The daemon runs the `mlflow_read` scenario against it (its `health` step is a GET /health;
   the two API steps answer at once): error = the `health` step's duration from the daemon's
   own JSON log minus the server-side delay of the same request (paired in order: one probe
   per daemon, runs never overlap). The first run (it opens the connection) is dropped.
   blackbox_exporter: `probe_duration_seconds` of module http_2xx minus the server-side delay;
   blackbox has no keep-alive, so every probe includes its TCP connect (and its own set-up).
2. CPU: utime+stime of each whole process over a window of many probes, divided by the
   HTTP requests done in the window (daemon: the sum of
   synthetic_probe_step_duration_seconds_count; each step is one GET/POST with its metrics,
   result and log line; blackbox: probes answered). The ratio daemon / blackbox comes from
   the `cpu` part: both loaded at the SAME request rate (blackbox paced at the rate the
   daemon achieved), in alternating pairs, median with min-max (the `load` part drives
   blackbox flat out, so its CPU per probe there is not comparable).
3. RSS (VmRSS) after start, after 10k and 100k HTTP probes (daemon: steps, i.e. requests).
4. Scale: N probes of `mlflow_read` at 10 s (10 probes per target) against a fast target.
5. /metrics at 1,000 probes: median of 20 GETs, and the size.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import http.client
import json
import math
import os
import platform
import re
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

from tests.helpers import free_port  # one port registry with the test suite (the smokes run in it)

REPO = Path(__file__).resolve().parents[2]
DAEMON_REPO = REPO  # --daemon-repo: run the daemon from another checkout (before/after figures)
CLK_TCK = os.sysconf("SC_CLK_TCK")
DELAYS_MS = (0, 10, 100, 1000)
BLACKBOX = "prometheus-blackbox-exporter"
LOCAL = "127.0.0.1"
OPEN_TIMEOUT = 60.0  # seconds a started process may take to answer

# Goals from issue 7.
GOAL_FIDELITY_MEDIAN_MS = 1.0
GOAL_FIDELITY_P99_MS = 3.0
GOAL_CPU_MS = 0.6
GOAL_CPU_RATIO = 0.35  # issue 24: at most 0.35 of blackbox_exporter's CPU at the same rate
GOAL_RSS_IDLE_MB = 45.0
GOAL_RSS_100K_MB = 50.0
GOAL_LAG_P99_MS = 50.0
GOAL_METRICS_MS = 50.0


# --------------------------------------------------------------------------------------
# The target: a raw asyncio HTTP/1.1 server (its own process), keep-alive, fixed bodies.
# --------------------------------------------------------------------------------------

_RESPONSES = {
    ("GET", "/health"): (b"text/plain; charset=utf-8", b"OK"),
    ("POST", "/api/2.0/mlflow/experiments/search"): (b"application/json", b'{"experiments": []}'),
    ("GET", "/api/2.0/mlflow/registered-models/search"): (b"application/json", b"{}"),
}


class _TargetProtocol(asyncio.Protocol):
    def __init__(self, delay: float, record: list[float]) -> None:
        self.delay = delay
        self.record = record
        self.buffer = bytearray()
        self.transport: asyncio.Transport | None = None
        self.busy = False
        self.close_after = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        sock = transport.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        self._process()

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None

    def _process(self) -> None:
        while not self.busy and self.transport is not None:
            end = self.buffer.find(b"\r\n\r\n")
            if end < 0:
                return
            head = bytes(self.buffer[:end]).decode("latin-1").split("\r\n")
            method, target = head[0].split(" ")[:2]
            length = 0
            close = False
            for line in head[1:]:
                name, _, value = line.partition(":")
                name = name.strip().lower()
                if name == "content-length":
                    length = int(value.strip())
                elif name == "connection" and value.strip().lower() == "close":
                    close = True
            if len(self.buffer) < end + 4 + length:
                return
            del self.buffer[: end + 4 + length]
            self.close_after = close
            self._handle(method, target.split("?", 1)[0])

    def _handle(self, method: str, path: str) -> None:
        started = time.monotonic()
        if path == "/__delays":
            body = json.dumps(self.record).encode()
            self.record.clear()
            self._write(200, b"application/json", body)
        elif path == "/health" and self.delay > 0:
            self.busy = True
            asyncio.get_running_loop().call_later(self.delay, self._delayed, started)
        elif (method, path) in _RESPONSES:
            content_type, body = _RESPONSES[(method, path)]
            if path == "/health":
                self.record.append(time.monotonic() - started)
            self._write(200, content_type, body)
        else:
            self._write(404, b"text/plain", b"not found")

    def _delayed(self, started: float) -> None:
        self.busy = False
        self.record.append(time.monotonic() - started)
        self._write(200, *_RESPONSES[("GET", "/health")])
        self._process()

    def _write(self, status: int, content_type: bytes, body: bytes) -> None:
        if self.transport is None:
            return
        reason = b"OK" if status == 200 else b"Not Found"
        self.transport.write(
            b"HTTP/1.1 %d %s\r\nContent-Type: %s\r\nContent-Length: %d\r\n%s\r\n%s"
            % (status, reason, content_type, len(body), b"Connection: close\r\n" if self.close_after else b"", body)
        )
        if self.close_after:
            self.transport.close()
            self.transport = None


async def _serve_target(names: list[str]) -> None:
    """One listening port per name; a name is `<label>=<delay seconds>`."""
    loop = asyncio.get_running_loop()
    ports: dict[str, int] = {}
    servers = []
    for spec in names:
        label, _, delay = spec.partition("=")
        record: list[float] = []
        server = await loop.create_server(
            lambda d=float(delay), r=record: _TargetProtocol(d, r), LOCAL, 0, backlog=1024, reuse_address=True
        )
        servers.append(server)
        ports[label] = server.sockets[0].getsockname()[1]
    print(json.dumps(ports), flush=True)
    stop = asyncio.Event()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    # Bounded: a target never outlives a bench run by more than an hour.
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), timeout=3600)


# --------------------------------------------------------------------------------------
# A small raw keep-alive HTTP client (cheap, so the bench itself costs little CPU).
# --------------------------------------------------------------------------------------


class RawClient:
    def __init__(self, port: int) -> None:
        self.port = port
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def get(self, path: str, timeout: float = 30.0) -> tuple[int, bytes]:
        async with asyncio.timeout(timeout):
            for attempt in (1, 2):
                if self.writer is None:
                    self.reader, self.writer = await asyncio.open_connection(LOCAL, self.port, limit=1 << 20)
                    sock = self.writer.get_extra_info("socket")
                    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                assert self.reader is not None
                try:
                    self.writer.write(f"GET {path} HTTP/1.1\r\nHost: {LOCAL}:{self.port}\r\n\r\n".encode())
                    head = await self.reader.readuntil(b"\r\n\r\n")
                except (ConnectionError, asyncio.IncompleteReadError):
                    await self.close()
                    if attempt == 2:
                        raise
                    continue
                lines = head.decode("latin-1").split("\r\n")
                status = int(lines[0].split(" ")[1])
                headers = {}
                for line in lines[1:]:
                    name, _, value = line.partition(":")
                    headers[name.strip().lower()] = value.strip()
                if "content-length" in headers:
                    body = await self.reader.readexactly(int(headers["content-length"]))
                elif headers.get("transfer-encoding", "").lower() == "chunked":
                    chunks = []
                    while True:
                        size = int((await self.reader.readuntil(b"\r\n")).split(b";")[0], 16)
                        if size == 0:
                            await self.reader.readuntil(b"\r\n")
                            break
                        chunks.append(await self.reader.readexactly(size))
                        await self.reader.readexactly(2)
                    body = b"".join(chunks)
                else:
                    body = await self.reader.read()
                    await self.close()
                if headers.get("connection", "").lower() == "close":
                    await self.close()
                return status, body
        raise AssertionError("unreachable")

    async def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            with contextlib.suppress(Exception):
                await self.writer.wait_closed()
        self.reader = self.writer = None


def timed_get(port: int, path: str, conn: http.client.HTTPConnection | None = None) -> bytes:
    """A blocking GET for timing a scrape: C-level reads, so the figure is the daemon's and
    the transfer's, not this script's event loop (a new connection unless one is given)."""
    own = conn is None
    conn = conn or http.client.HTTPConnection(LOCAL, port, timeout=60)
    try:
        conn.request("GET", path)
        response = conn.getresponse()
        body = response.read()
        assert response.status == 200, response.status
        return body
    finally:
        if own:
            conn.close()


def http_get(port: int, path: str, timeout: float = 30.0) -> tuple[int, bytes]:
    async def once() -> tuple[int, bytes]:
        client = RawClient(port)
        try:
            return await client.get(path, timeout)
        finally:
            await client.close()

    return asyncio.run(once())


# --------------------------------------------------------------------------------------
# Processes: started in their own session, stopped by pid.
# --------------------------------------------------------------------------------------


def proc_cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def proc_rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


class Proc:
    def __init__(
        self,
        name: str,
        argv: list[str],
        workdir: Path,
        *,
        stdout_pipe: bool = False,
        cwd: Path = REPO,
        pythonpath: Path | None = None,
    ) -> None:
        self.name = name
        self.log_path = workdir / f"{name}.log"
        self._log = open(self.log_path, "wb")
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        if pythonpath is not None:
            env["PYTHONPATH"] = str(pythonpath)
        self.proc = subprocess.Popen(
            argv,
            cwd=cwd,
            env=env,
            start_new_session=True,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE if stdout_pipe else self._log,
            stderr=self._log if stdout_pipe else subprocess.STDOUT,
        )
        self.started = time.monotonic()
        _STARTED.append(self)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def cpu(self) -> float:
        return proc_cpu_seconds(self.pid)

    def rss(self) -> float:
        return proc_rss_mb(self.pid)

    def alive(self) -> bool:
        return self.proc.poll() is None

    def stop(self, timeout: float = 15.0) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        if self.proc.stdout is not None:
            self.proc.stdout.close()
        self._log.close()
        if self in _STARTED:
            _STARTED.remove(self)


_STARTED: list[Proc] = []


def stop_all() -> None:
    for proc in list(_STARTED):
        with contextlib.suppress(Exception):
            proc.stop(timeout=10)


def wait_until(check: Any, timeout: float, what: str, proc: Proc | None = None, interval: float = 0.1) -> Any:
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        if proc is not None and not proc.alive():
            raise RuntimeError(f"{proc.name} exited with {proc.proc.returncode}; see {proc.log_path}")
        try:
            value = check()
            if value:
                return value
        except (OSError, asyncio.IncompleteReadError, ValueError) as exc:
            last = exc
        time.sleep(interval)
    raise TimeoutError(f"{what} not within {timeout}s (last: {last!r})")


class Target:
    """The raw asyncio target in its own process, with one port per label."""

    def __init__(self, workdir: Path, specs: dict[str, float]) -> None:
        argv = [sys.executable, "-m", "tests.perf.bench", "--_target", *[f"{k}={v}" for k, v in specs.items()]]
        self.proc = Proc("target", argv, workdir, stdout_pipe=True)
        assert self.proc.proc.stdout is not None
        line = self.proc.proc.stdout.readline()
        if not line:
            raise RuntimeError(f"target did not start; see {self.proc.log_path}")
        self.ports: dict[str, int] = json.loads(line)

    def url(self, label: str) -> str:
        return f"http://{LOCAL}:{self.ports[label]}"

    def delays(self, label: str) -> list[float]:
        status, body = http_get(self.ports[label], "/__delays")
        assert status == 200
        return json.loads(body)


class Daemon:
    """`python -m monitor run` with a generated config, its JSON log in a file."""

    def __init__(
        self,
        workdir: Path,
        name: str,
        probes: list[dict[str, Any]],
        targets: list[dict[str, Any]],
        extra: dict[str, Any] | None = None,
        port: int | None = None,
    ) -> None:
        import yaml

        self.port = port or free_port()  # given: peers must know each other's address first
        config = {
            "log": {"level": "info", "format": "json"},
            "targets": targets,
            "probes": probes,
            **(extra or {}),
        }
        path = workdir / f"{name}.yaml"
        path.write_text(yaml.safe_dump(config, sort_keys=False))
        argv = [sys.executable, "-m", "monitor", "run", "--config", str(path), "--listen", f"{LOCAL}:{self.port}"]
        self.proc = Proc(name, argv, workdir, cwd=DAEMON_REPO, pythonpath=DAEMON_REPO)
        wait_until(lambda: http_get(self.port, "/healthz", 5)[0] == 200, OPEN_TIMEOUT, f"{name} /healthz", self.proc)

    def ready(self) -> bool:
        return http_get(self.port, "/readyz", 10)[0] == 200

    def metrics(self) -> str:
        status, body = http_get(self.port, "/metrics", 60)
        assert status == 200, status
        return body.decode()

    def log_lines(self) -> Iterable[dict[str, Any]]:
        with open(self.proc.log_path, "rb") as f:
            for line in f:
                if line.startswith(b"{"):
                    with contextlib.suppress(ValueError):
                        yield json.loads(line)


class Blackbox:
    def __init__(self, workdir: Path, name: str) -> None:
        self.port = free_port()
        config = workdir / "blackbox.yml"
        config.write_text(
            "modules:\n  http_2xx:\n    prober: http\n    timeout: 5s\n    http:\n      preferred_ip_protocol: ip4\n"
        )
        argv = [BLACKBOX, f"--config.file={config}", f"--web.listen-address={LOCAL}:{self.port}"]
        self.proc = Proc(name, argv, workdir)
        wait_until(
            lambda: http_get(self.port, "/-/healthy", 5)[0] == 200, OPEN_TIMEOUT, f"{name} /-/healthy", self.proc
        )

    def probe_path(self, target_url: str) -> str:
        return f"/probe?module=http_2xx&target={target_url}/health"


# --------------------------------------------------------------------------------------
# Metric text helpers.
# --------------------------------------------------------------------------------------

_SAMPLE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)")
_LABEL = re.compile(r'(\w+)="((?:[^"\\]|\\.)*)"')


def samples(text: str, name: str) -> list[tuple[dict[str, str], float]]:
    found = []
    prefix = name
    for line in text.splitlines():
        if not line.startswith(prefix):
            continue
        m = _SAMPLE.match(line)
        if m and m.group(1) == name:
            found.append((dict(_LABEL.findall(m.group(2) or "")), float(m.group(3))))
    return found


def total(text: str, name: str, **labels: str) -> float:
    return sum(v for got, v in samples(text, name) if all(got.get(k) == x for k, x in labels.items()))


def lag_buckets(text: str) -> dict[float, float]:
    buckets: dict[float, float] = {}
    for labels, value in samples(text, "synthetic_monitor_schedule_lag_seconds_bucket"):
        le = float(labels["le"])
        buckets[le] = buckets.get(le, 0.0) + value
    return buckets


def bucket_quantile(q: float, buckets: dict[float, float]) -> float:
    """Like PromQL histogram_quantile over cumulative buckets (linear within a bucket)."""
    bounds = sorted(buckets)
    count = buckets[bounds[-1]] if bounds else 0
    if count <= 0:
        return float("nan")
    rank = q * count
    previous_bound, previous_count = 0.0, 0.0
    for bound in bounds:
        if buckets[bound] >= rank:
            if math.isinf(bound):
                return previous_bound  # beyond the last finite bucket: a lower bound
            inside = buckets[bound] - previous_count
            return previous_bound + (bound - previous_bound) * ((rank - previous_count) / inside if inside else 1.0)
        previous_bound, previous_count = bound, buckets[bound]
    return float("nan")


def quantile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    index = q * (len(ordered) - 1)
    low = math.floor(index)
    high = math.ceil(index)
    return ordered[low] + (ordered[high] - ordered[low]) * (index - low)


# --------------------------------------------------------------------------------------
# The measurements.
# --------------------------------------------------------------------------------------


@dataclass
class Plan:
    quick: bool
    fidelity_samples: int = 150
    fidelity_samples_1s: int = 100
    load_probes: int = 100_000
    warm_probes: int = 10_000  # the CPU window runs from here to load_probes
    load_time_cap: float = 330.0  # seconds the daemon load may take at most (keeps a full run under ~14 min)
    scale_sizes: tuple[int, ...] = (10, 100, 1000)
    scale_window: float = 20.0
    bb_concurrency: int = 4
    cpu_probes: int = 100  # x 3 steps every second: the rate both sides are loaded at
    cpu_pairs: int = 5
    cpu_window: float = 30.0
    cpu_warm: float = 5.0
    scale_interval: float = 10.0
    smoke: bool = False
    notes: list[str] = field(default_factory=list)

    @classmethod
    def make(cls, quick: bool, smoke: bool = False) -> Plan:
        if smoke:  # does every part still start and finish? Tiny sizes, figures meaningless.
            return cls(
                quick=True,
                smoke=True,
                fidelity_samples=2,
                fidelity_samples_1s=1,
                load_probes=600,
                warm_probes=300,
                load_time_cap=20.0,
                scale_sizes=(10,),
                scale_window=1.0,
                scale_interval=2.0,
                cpu_probes=10,
                cpu_pairs=1,
                cpu_window=1.5,
                cpu_warm=0.5,
            )
        if quick:
            return cls(
                quick=True,
                fidelity_samples=25,
                fidelity_samples_1s=8,
                load_probes=10_000,
                warm_probes=2_000,
                load_time_cap=150.0,
                scale_window=10.0,
                cpu_pairs=3,
                cpu_window=15.0,
                cpu_warm=3.0,
            )
        return cls(quick=False)


def run_timeout(interval: float) -> float:
    """The daemon's own default deadline (80 % of the interval): inside the run-budget rule
    (deadline plus cleanup at most 90 % of the interval) with room for rounding."""
    return round(interval * 0.8, 3)


def mlflow_target(name: str, url: str) -> dict[str, Any]:
    return {"name": name, "kind": "mlflow", "url": url}


def fidelity_daemon(workdir: Path, target: Target, delay_ms: int, samples_wanted: int) -> dict[str, Any]:
    """One daemon, one probe of `mlflow_read`, the delay on /health; error per request."""
    delay = delay_ms / 1000
    interval = round(delay + max(0.1, 0.2 * delay), 3)
    label = f"d{delay_ms}"
    target.delays(label)  # reset
    daemon = Daemon(
        workdir,
        f"daemon-fidelity-{delay_ms}ms",
        probes=[
            {
                "name": "fidelity",
                "target": "t",
                "scenario": "mlflow_read",
                "interval": interval,
                "timeout": run_timeout(interval),
            }
        ],
        targets=[mlflow_target("t", target.url(label))],
    )
    try:
        wanted = samples_wanted + 1  # the first run opens the connection: dropped
        deadline = time.monotonic() + wanted * interval * 1.5 + 30
        while time.monotonic() < deadline:
            runs = sum(1 for line in daemon.log_lines() if line.get("event") == "probe_run")
            if runs >= wanted:
                break
            time.sleep(0.5)
    finally:
        daemon.proc.stop()
    server = target.delays(label)
    measured = []
    for line in daemon.log_lines():
        if line.get("event") in ("probe_run", "probe_internal_error"):
            health = next((s for s in line.get("steps", []) if s.get("name") == "health"), None)
            measured.append(((health or {}).get("ms"), bool(health and health.get("ok"))))
    pairs = list(zip(measured, server))
    errors = [ms - true * 1000 for (ms, ok), true in pairs[1:] if ok and ms is not None]
    return {
        "delay_ms": delay_ms,
        "samples": len(errors),
        "paired": f"{len(measured)} runs / {len(server)} server-side",
        "median_ms": statistics.median(errors) if errors else float("nan"),
        "p99_ms": quantile(errors, 0.99),
        "max_ms": max(errors) if errors else float("nan"),
        "true_delay_median_ms": statistics.median(server) * 1000 if server else float("nan"),
    }


async def blackbox_fidelity(bb: Blackbox, target: Target, delay_ms: int, samples_wanted: int) -> dict[str, Any]:
    label = f"b{delay_ms}"
    await asyncio.to_thread(target.delays, label)
    client = RawClient(bb.port)
    durations = []
    phases: list[float] = []
    failures = 0
    try:
        for _ in range(samples_wanted):
            status, body = await client.get(bb.probe_path(target.url(label)), timeout=30)
            text = body.decode()
            if status != 200 or total(text, "probe_success") != 1:
                failures += 1
                durations.append(float("nan"))
                phases.append(float("nan"))
                continue
            durations.append(total(text, "probe_duration_seconds"))
            # For the note: blackbox's own request-only phases (processing + transfer).
            phases.append(
                total(text, "probe_http_duration_seconds", phase="processing")
                + total(text, "probe_http_duration_seconds", phase="transfer")
            )
    finally:
        await client.close()
    server = await asyncio.to_thread(target.delays, label)
    errors = [(d - s) * 1000 for d, s in zip(durations, server) if not math.isnan(d)]
    request_only = [(p - s) * 1000 for p, s in zip(phases, server) if not math.isnan(p)]
    return {
        "delay_ms": delay_ms,
        "samples": len(errors),
        "failures": failures,
        "median_ms": statistics.median(errors) if errors else float("nan"),
        "p99_ms": quantile(errors, 0.99),
        "max_ms": max(errors) if errors else float("nan"),
        "request_only_median_ms": statistics.median(request_only) if request_only else float("nan"),
        "request_only_p99_ms": quantile(request_only, 0.99),
    }


def measure_fidelity(workdir: Path, target: Target, plan: Plan) -> dict[str, Any]:
    """Daemons one delay at a time (the 1 s one alongside), blackbox alongside them."""
    bb = Blackbox(workdir, "blackbox-fidelity")
    results: dict[str, Any] = {"daemon": {}, "blackbox": {}}
    try:

        async def blackbox_all() -> None:
            short = [d for d in DELAYS_MS if d < 1000]

            async def sequence() -> None:
                for d in short:
                    results["blackbox"][d] = await blackbox_fidelity(bb, target, d, plan.fidelity_samples)

            long_task = asyncio.create_task(blackbox_fidelity(bb, target, 1000, plan.fidelity_samples_1s))
            await sequence()
            results["blackbox"][1000] = await long_task

        import threading

        bb_thread = threading.Thread(target=lambda: asyncio.run(blackbox_all()), name="blackbox-fidelity")
        bb_thread.start()
        long_result: dict[str, Any] = {}
        long_thread = threading.Thread(
            target=lambda: long_result.update(fidelity_daemon(workdir, target, 1000, plan.fidelity_samples_1s)),
            name="daemon-fidelity-1000",
        )
        long_thread.start()
        for d in DELAYS_MS:
            if d < 1000:
                results["daemon"][d] = fidelity_daemon(workdir, target, d, plan.fidelity_samples)
        long_thread.join()
        bb_thread.join()
        results["daemon"][1000] = long_result
    finally:
        bb.proc.stop()
    return results


def measure_daemon_idle(workdir: Path, target: Target) -> float:
    """RSS of a daemon with a usual configuration (3 probes, 30 s), once every probe ran."""
    daemon = Daemon(
        workdir,
        "daemon-idle",
        probes=[{"name": f"read{i}", "target": "t", "scenario": "mlflow_read", "interval": "30s"} for i in range(3)],
        targets=[mlflow_target("t", target.url("fast_daemon"))],
    )
    try:
        wait_until(daemon.ready, OPEN_TIMEOUT, "daemon-idle /readyz", daemon.proc)
        time.sleep(3.0)
        return daemon.proc.rss()
    finally:
        daemon.proc.stop()


def load_marks(plan: Plan) -> list[int]:
    marks = {plan.warm_probes, 10_000, plan.load_probes} | set(range(20_000, plan.load_probes, 20_000))
    return sorted(m for m in marks if m <= plan.load_probes)


def measure_daemon_load(workdir: Path, target: Target, plan: Plan) -> dict[str, Any]:
    """CPU per step and RSS over `load_probes` HTTP steps."""
    probes_n, per_target, interval = 100, 10, 1.0
    targets = [mlflow_target(f"t{i}", target.url("fast_daemon")) for i in range(probes_n // per_target)]
    probes = [
        {
            "name": f"p{i}",
            "target": f"t{i // per_target}",
            "scenario": "mlflow_read",
            "interval": interval,
            "timeout": run_timeout(interval),
        }
        for i in range(probes_n)
    ]
    daemon = Daemon(workdir, "daemon-load", probes, targets)
    out: dict[str, Any] = {"probes": probes_n, "interval_s": interval, "trajectory": []}
    try:
        wait_until(daemon.ready, OPEN_TIMEOUT, "daemon-load /readyz", daemon.proc)
        time.sleep(1.0)
        out["rss_idle_mb"] = measure_daemon_idle.result  # type: ignore[attr-defined]
        out["rss_ready_mb"] = daemon.proc.rss()
        steps_at_idle = total(daemon.metrics(), "synthetic_probe_step_duration_seconds_count")
        out["steps_at_idle"] = steps_at_idle
        marks = load_marks(plan)
        window_start: tuple[float, float, float] | None = None
        started = time.monotonic()
        # Bounded in time: the run stops at the cap even if the count is not reached, and
        # the table then says how many steps it got to.
        deadline = started + plan.load_time_cap
        for mark in marks:
            while True:
                steps = total(daemon.metrics(), "synthetic_probe_step_duration_seconds_count")
                if steps >= mark or time.monotonic() >= deadline:
                    break
                time.sleep(min(2.0, max(0.2, (mark - steps) / 2000)))
            cpu, rss, now = daemon.proc.cpu(), daemon.proc.rss(), time.monotonic()
            if steps < mark:
                out["time_capped_at"] = steps
                out["trajectory"].append({"steps": steps, "rss_mb": rss, "cpu_s": cpu, "t": now - started})
                break
            out["trajectory"].append({"steps": steps, "rss_mb": rss, "cpu_s": cpu, "t": now - started})
            if mark == plan.warm_probes:
                window_start = (steps, cpu, now)
            if mark == 10_000:
                out["rss_10k_mb"] = rss
        last = out["trajectory"][-1]
        out["rss_last_mb"] = last["rss_mb"]
        out["steps_last"] = last["steps"]
        if window_start is not None and last["steps"] > window_start[0]:
            steps0, cpu0, t0 = window_start
            out["cpu_window_steps"] = last["steps"] - steps0
            out["cpu_ms_per_step"] = (last["cpu_s"] - cpu0) * 1000 / (last["steps"] - steps0)
            out["steps_per_s"] = (last["steps"] - steps0) / (last["t"] - (t0 - started))
        text = daemon.metrics()
        out["runs"] = total(text, "synthetic_probe_runs_total")
        out["failed_runs"] = total(text, "synthetic_probe_runs_total", result="failure")
        out["job_events"] = {
            e: total(text, "synthetic_monitor_job_events_total", event=e) for e in ("missed", "skipped", "error")
        }
    finally:
        daemon.proc.stop()
    return out


async def _drive_blackbox(bb: Blackbox, url: str, count: int, concurrency: int) -> tuple[int, int]:
    path = bb.probe_path(url)
    remaining = count
    failures = 0

    async def worker() -> None:
        nonlocal remaining, failures
        client = RawClient(bb.port)
        try:
            while remaining > 0:
                remaining -= 1
                status, body = await client.get(path, timeout=30)
                if status != 200 or b"\nprobe_success 1" not in body:
                    failures += 1
        finally:
            await client.close()

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return count, failures


def measure_blackbox_load(workdir: Path, target: Target, plan: Plan) -> dict[str, Any]:
    bb = Blackbox(workdir, "blackbox-load")
    url = target.url("fast_blackbox")
    out: dict[str, Any] = {"concurrency": plan.bb_concurrency, "trajectory": []}
    try:
        time.sleep(1.0)
        out["rss_idle_mb"] = bb.proc.rss()
        done = 0
        failures = 0
        marks = load_marks(plan)
        window_start = None
        started = time.monotonic()
        for mark in marks:
            n, f = asyncio.run(_drive_blackbox(bb, url, mark - done, plan.bb_concurrency))
            done += n
            failures += f
            cpu, rss, now = bb.proc.cpu(), bb.proc.rss(), time.monotonic()
            out["trajectory"].append({"probes": done, "rss_mb": rss, "cpu_s": cpu, "t": now - started})
            if mark == plan.warm_probes:
                window_start = (done, cpu, now)
            if mark == 10_000:
                out["rss_10k_mb"] = rss
        last = out["trajectory"][-1]
        out["rss_last_mb"] = last["rss_mb"]
        out["probes_last"] = last["probes"]
        out["failures"] = failures
        if window_start is not None and last["probes"] > window_start[0]:
            out["cpu_window_probes"] = last["probes"] - window_start[0]
            out["cpu_ms_per_probe"] = (last["cpu_s"] - window_start[1]) * 1000 / (last["probes"] - window_start[0])
            out["probes_per_s"] = out["cpu_window_probes"] / (last["t"] - (window_start[2] - started))
    finally:
        bb.proc.stop()
    return out


async def _drive_blackbox_paced(
    bb: Blackbox, url: str, rate: float, seconds: float, concurrency: int = 8
) -> tuple[int, int]:
    """Probes at `rate` per second for `seconds`: slot k is sent at t0 + k/rate (never earlier),
    so blackbox does the same amount of work per second as the daemon it is compared with."""
    path = bb.probe_path(url)
    loop = asyncio.get_running_loop()
    t0 = loop.time()
    end = t0 + seconds
    next_slot = 0
    done = failures = 0

    async def worker() -> None:
        nonlocal next_slot, done, failures
        client = RawClient(bb.port)
        try:
            while True:
                at = t0 + next_slot / rate
                next_slot += 1
                if at >= end:
                    return
                if at > loop.time():
                    await asyncio.sleep(at - loop.time())
                status, body = await client.get(path, timeout=30)
                done += 1
                if status != 200 or b"\nprobe_success 1" not in body:
                    failures += 1
        finally:
            await client.close()

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return done, failures


def measure_cpu_pairs(workdir: Path, target: Target, plan: Plan) -> dict[str, Any]:
    """CPU per HTTP request of the daemon and of blackbox_exporter at the SAME request rate.

    The daemon's rate is fixed by its schedule (`cpu_probes` probes of mlflow_read, 3 steps
    each, every second); blackbox is then driven at the rate the daemon really achieved in
    the same pair. Pairs alternate (daemon window, blackbox window) so a noisy neighbour on
    the shared machine hits both sides alike; the ratio is reported as the median over the
    pairs with its min and max.
    """
    probes_n, per_target, interval = plan.cpu_probes, 10, 1.0
    targets = [mlflow_target(f"t{i}", target.url("fast_daemon")) for i in range(math.ceil(probes_n / per_target))]
    probes = [
        {
            "name": f"p{i}",
            "target": f"t{i // per_target}",
            "scenario": "mlflow_read",
            "interval": interval,
            "timeout": run_timeout(interval),
        }
        for i in range(probes_n)
    ]
    bb = Blackbox(workdir, "blackbox-cpu")
    url = target.url("fast_blackbox")
    out: dict[str, Any] = {"probes": probes_n, "window_s": plan.cpu_window, "pairs": []}
    try:
        asyncio.run(_drive_blackbox_paced(bb, url, 200.0, 2.0))  # warm: connections, GC, page cache
        for i in range(plan.cpu_pairs):
            daemon = Daemon(workdir, f"daemon-cpu-{i}", probes, targets)
            try:
                wait_until(daemon.ready, OPEN_TIMEOUT, f"daemon-cpu-{i} /readyz", daemon.proc)
                time.sleep(plan.cpu_warm)
                steps0 = total(daemon.metrics(), "synthetic_probe_step_duration_seconds_count")
                cpu0, t0 = daemon.proc.cpu(), time.monotonic()
                time.sleep(plan.cpu_window)
                steps1 = total(daemon.metrics(), "synthetic_probe_step_duration_seconds_count")
                cpu1, t1 = daemon.proc.cpu(), time.monotonic()
                failed = total(daemon.metrics(), "synthetic_probe_runs_total", result="failure")
            finally:
                daemon.proc.stop()
            rate = (steps1 - steps0) / (t1 - t0)
            d_ms = (cpu1 - cpu0) * 1000 / max(steps1 - steps0, 1)
            bcpu0, bt0 = bb.proc.cpu(), time.monotonic()
            n, fails = asyncio.run(_drive_blackbox_paced(bb, url, rate, plan.cpu_window))
            bcpu1, bt1 = bb.proc.cpu(), time.monotonic()
            b_ms = (bcpu1 - bcpu0) * 1000 / max(n, 1)
            pair = {
                "daemon_rate": rate,
                "daemon_cpu_ms": d_ms,
                "daemon_failed_runs": failed,
                "blackbox_rate": n / (bt1 - bt0),
                "blackbox_cpu_ms": b_ms,
                "blackbox_failures": fails,
                "ratio": d_ms / b_ms if b_ms else float("nan"),
            }
            log(
                f"cpu pair {i + 1}/{plan.cpu_pairs}: daemon {d_ms:.3f} ms at {rate:.0f}/s, "
                f"blackbox {b_ms:.3f} ms at {pair['blackbox_rate']:.0f}/s, ratio {pair['ratio']:.2f}"
            )
            out["pairs"].append(pair)
    finally:
        bb.proc.stop()
    ratios = [p["ratio"] for p in out["pairs"] if not math.isnan(p["ratio"])]
    if ratios:
        out["ratio_median"] = statistics.median(ratios)
        out["ratio_min"], out["ratio_max"] = min(ratios), max(ratios)
        out["daemon_cpu_ms_median"] = statistics.median(p["daemon_cpu_ms"] for p in out["pairs"])
        out["blackbox_cpu_ms_median"] = statistics.median(p["blackbox_cpu_ms"] for p in out["pairs"])
        out["rate_median"] = statistics.median(p["daemon_rate"] for p in out["pairs"])
    return out


def measure_scale(workdir: Path, target: Target, plan: Plan, size: int, alerting: bool = True) -> dict[str, Any]:
    interval, per_target = plan.scale_interval, 10
    targets = [mlflow_target(f"t{i}", target.url("fast_daemon")) for i in range(math.ceil(size / per_target))]
    probes = [
        {
            "name": f"p{i}",
            "target": f"t{i // per_target}",
            "scenario": "mlflow_read",
            "interval": interval,
            "timeout": interval / 2,
        }
        for i in range(size)
    ]
    started = time.monotonic()
    name = f"daemon-scale-{size}" + ("" if alerting else "-noalert")
    daemon = Daemon(workdir, name, probes, targets, extra=None if alerting else {"alerting": {"enabled": False}})
    out: dict[str, Any] = {
        "probes": size,
        "targets": len(targets),
        "alerting": alerting,
        "interval_s": interval,
        "start_s": time.monotonic() - started,
    }
    try:
        wait_until(daemon.ready, OPEN_TIMEOUT, f"{name} /readyz", daemon.proc, interval=0.5)
        out["ready_s"] = time.monotonic() - started
        # Past the first (spread) runs and one full interval, then a window of whole intervals.
        time.sleep(max(0.0, interval + 1.0 - (time.monotonic() - started)))
        # These two scrapes come after >= 10 s without one: every probe's series changed
        # since the last render, and the connection is new, as for a Prometheus scraping
        # every 15-30 s (the daemon closes idle connections after 10 s).
        cold = []
        t = time.perf_counter()
        body = timed_get(daemon.port, "/metrics")
        cold.append(time.perf_counter() - t)
        before = body.decode()
        cpu0, t0 = daemon.proc.cpu(), time.monotonic()
        time.sleep(plan.scale_window)
        cpu1, t1 = daemon.proc.cpu(), time.monotonic()
        t = time.perf_counter()
        body = timed_get(daemon.port, "/metrics")
        cold.append(time.perf_counter() - t)
        after = body.decode()
        out["rss_mb"] = daemon.proc.rss()
        out["cpu_share"] = (cpu1 - cpu0) / (t1 - t0)
        b0, b1 = lag_buckets(before), lag_buckets(after)
        window = {le: b1[le] - b0.get(le, 0.0) for le in b1}
        out["lag_runs"] = window.get(float("inf"), 0.0)
        out["lag_p50_ms"] = bucket_quantile(0.5, window) * 1000
        out["lag_p99_ms"] = bucket_quantile(0.99, window) * 1000
        out["lag_over_50ms"] = window.get(float("inf"), 0.0) - window.get(0.05, 0.0)
        runs0, runs1 = total(before, "synthetic_probe_runs_total"), total(after, "synthetic_probe_runs_total")
        out["runs_in_window"] = runs1 - runs0
        out["expected_runs"] = size * (t1 - t0) / interval
        out["failed_runs"] = total(after, "synthetic_probe_runs_total", result="failure")
        out["missed"] = total(after, "synthetic_monitor_job_events_total", event="missed")
        out["skipped"] = total(after, "synthetic_monitor_job_events_total", event="skipped")
        out["errors"] = total(after, "synthetic_monitor_job_events_total", event="error")
        if size >= 1000:
            times, sizes = [], []
            conn = http.client.HTTPConnection(LOCAL, daemon.port, timeout=60)
            try:
                for _ in range(20):  # one keep-alive connection, a scrape every 0.5 s
                    t = time.perf_counter()
                    body = timed_get(daemon.port, "/metrics", conn)
                    times.append(time.perf_counter() - t)
                    sizes.append(len(body))
                    time.sleep(0.5)
            finally:
                conn.close()
            out["metrics_cold_ms"] = [c * 1000 for c in cold]
            out["metrics_median_ms"] = statistics.median(times) * 1000
            out["metrics_max_ms"] = max(times) * 1000
            out["metrics_bytes"] = statistics.median(sizes)
            out["metrics_series"] = sum(1 for line in after.splitlines() if line and not line.startswith("#"))
    finally:
        daemon.proc.stop()
    return out


# --------------------------------------------------------------------------------------
# Report.
# --------------------------------------------------------------------------------------


def render_check() -> str:
    """Does the daemon's /metrics body equal generate_latest's bytes? (50 probes, random runs)"""
    import random

    from prometheus_client import CollectorRegistry, generate_latest

    sys.path.insert(0, str(DAEMON_REPO))
    try:
        from monitor.results import ProbeResult, Reason, StepResult
        from monitor.sinks import metrics as metrics_module
    finally:
        sys.path.pop(0)
    if not hasattr(metrics_module.MetricsSink, "render"):
        return "n/a (this daemon renders with generate_latest)"
    registry = CollectorRegistry(auto_describe=True)
    sink = metrics_module.MetricsSink(registry, (0.005, 0.01, 0.1, 1.0, 10.0))
    rng = random.Random(7)
    for i in range(50):
        t, p = f"t{i % 5}", f"p{i}"
        sink.register(metrics_module.ProbeSeries(t, p, ("a", "b"), 5.0))
        for _ in range(rng.randrange(5)):
            ok = rng.random() < 0.7
            step = StepResult(
                "a",
                ok=ok,
                duration_seconds=rng.random() * 3,
                reason=None if ok else rng.choice(list(Reason)),
                error=None if ok else "x",
            )
            sink.handle(
                ProbeResult(
                    probe=p,
                    target=t,
                    scenario="s",
                    started_at=time.time(),
                    duration_seconds=step.duration_seconds,
                    steps=(step,),
                    timeout_seconds=5.0,
                )
            )
            if hasattr(sink, "handle_event"):
                from monitor.events import ScheduleLag

                sink.handle_event(ScheduleLag(p, rng.random() / 10))
            else:  # a daemon from before the typed events
                sink.observe_lag(p, rng.random() / 10)
    firing = getattr(sink, "alerts_firing", None)  # before the alert sink owned its metrics
    if firing is not None:
        firing.labels("A", 't"x', "p\\n").set(1)
    same = sink.render() == generate_latest(registry)
    return "identical bytes" if same else "**DIFFERENT**"


def versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for dist in ("httpx", "prometheus-client", "APScheduler", "structlog"):
        with contextlib.suppress(metadata.PackageNotFoundError):
            out[dist] = metadata.version(dist)
    try:
        line = subprocess.run([BLACKBOX, "--version"], capture_output=True, text=True, timeout=10)
        text = (line.stdout or line.stderr).splitlines()[0]
        m = re.search(r"version (\S+)", text)
        out["blackbox_exporter"] = m.group(1) if m else text
    except (OSError, IndexError, subprocess.TimeoutExpired):
        out["blackbox_exporter"] = "not installed"
    try:
        import uvloop  # noqa: F401

        out["uvloop"] = metadata.version("uvloop") + " (installed)"
    except ImportError:
        pass
    return out


def machine() -> str:
    model = "unknown CPU"
    with contextlib.suppress(OSError):
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    return f"{model}, {os.cpu_count()} cores, {platform.system()} {platform.release()}"


def f(value: Any, digits: int = 2, unit: str = "") -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    if isinstance(value, float):
        return f"{value:.{digits}f}{unit}"
    return f"{value}{unit}"


def verdict(ok: bool | None) -> str:
    return "n/a" if ok is None else ("yes" if ok else "**no**")


def render(data: dict[str, Any]) -> str:
    rows: list[tuple[str, str, str, str, str, str]] = []
    add = rows.append
    v = data["versions"]
    add(("", "date (UTC)", data["date"], "", "", ""))
    add(("", "machine", data["machine"], "", "", ""))
    add(
        (
            "",
            "versions",
            ", ".join(f"{k} {x}" for k, x in v.items() if k != "blackbox_exporter"),
            f"blackbox_exporter {v.get('blackbox_exporter')}",
            "",
            "",
        )
    )
    add(
        (
            "",
            "command",
            f"`{data['command']}`",
            f"mode: {'smoke' if data.get('smoke') else 'quick' if data['quick'] else 'full'}, {data['elapsed_s']:.0f} s",
            "",
            "",
        )
    )
    fid = data.get("fidelity")
    if fid:
        for d in DELAYS_MS:
            dm, bm = fid["daemon"].get(d, {}), fid["blackbox"].get(d, {})
            ok = None
            if dm and bm:
                ok = (
                    dm["median_ms"] <= GOAL_FIDELITY_MEDIAN_MS
                    and dm["p99_ms"] <= GOAL_FIDELITY_P99_MS
                    and abs(dm["median_ms"]) <= abs(bm["median_ms"])
                    and dm["p99_ms"] <= bm["p99_ms"]
                )
            add(
                (
                    "1",
                    f"fidelity at {d} ms: error median / p99 (max), ms",
                    f"{f(dm.get('median_ms'), 3)} / {f(dm.get('p99_ms'), 3)} ({f(dm.get('max_ms'), 2)}), n={dm.get('samples')}",
                    f"{f(bm.get('median_ms'), 3)} / {f(bm.get('p99_ms'), 3)} ({f(bm.get('max_ms'), 2)}), n={bm.get('samples')}"
                    f"; request phases only: {f(bm.get('request_only_median_ms'), 3)} / {f(bm.get('request_only_p99_ms'), 3)}",
                    f"<= {GOAL_FIDELITY_MEDIAN_MS:g} / <= {GOAL_FIDELITY_P99_MS:g}, no worse than blackbox",
                    verdict(ok),
                )
            )
    dl, bl = data.get("daemon_load"), data.get("blackbox_load")
    if dl and bl:
        add(
            (
                "2",
                "CPU per HTTP step / probe (whole process), ms",
                f"{f(dl.get('cpu_ms_per_step'), 3)} over {f(dl.get('cpu_window_steps'), 0)} steps "
                f"({f(dl.get('steps_per_s'), 0)} steps/s; {dl['probes']} probes of mlflow_read every {dl['interval_s']} s)",
                f"{f(bl.get('cpu_ms_per_probe'), 3)} over {f(bl.get('cpu_window_probes'), 0)} probes "
                f"({f(bl.get('probes_per_s'), 0)}/s, {bl['concurrency']} concurrent scrapes)",
                f"<= {GOAL_CPU_MS:g}",
                verdict(dl.get("cpu_ms_per_step", math.inf) <= GOAL_CPU_MS),
            )
        )
        add(
            (
                "3",
                "RSS idle after start, MB",
                f"{f(dl.get('rss_idle_mb'), 1)} (3 probes at 30 s, after their first run; "
                f"{f(dl.get('rss_ready_mb'), 1)} with the {dl['probes']} load probes)",
                f(bl.get("rss_idle_mb"), 1),
                f"<= {GOAL_RSS_IDLE_MB:g}",
                verdict(dl.get("rss_idle_mb", math.inf) <= GOAL_RSS_IDLE_MB),
            )
        )
        add(("3", "RSS after 10k HTTP probes, MB", f(dl.get("rss_10k_mb"), 1), f(bl.get("rss_10k_mb"), 1), "", ""))
        last_label = f"{dl.get('steps_last', 0) / 1000:.0f}k / {bl.get('probes_last', 0) / 1000:.0f}k"
        if "time_capped_at" in dl:
            last_label += f" (daemon stopped by the {data['plan']['load_time_cap']:.0f} s cap)"
        traj_d = " → ".join(f"{t['rss_mb']:.1f}" for t in dl["trajectory"])
        traj_b = " → ".join(f"{t['rss_mb']:.1f}" for t in bl["trajectory"])
        add(
            (
                "3",
                f"RSS after {last_label} HTTP probes, MB (trajectory every 10-20k)",
                f"{f(dl.get('rss_last_mb'), 1)} ({traj_d})",
                f"{f(bl.get('rss_last_mb'), 1)} ({traj_b})",
                f"<= {GOAL_RSS_100K_MB:g}, flat after warm-up" if not data["quick"] else "(100k skipped in --quick)",
                verdict(dl.get("rss_last_mb", math.inf) <= GOAL_RSS_100K_MB) if not data["quick"] else "n/a",
            )
        )
    cpu = data.get("cpu")
    if cpu and "ratio_median" in cpu:
        ratio = cpu["ratio_median"]
        data["cpu_ratio"] = ratio
        add(
            (
                "2",
                f"CPU ratio daemon / blackbox at the same request rate: median (min-max) of {len(cpu['pairs'])} "
                f"alternating pairs of {cpu['window_s']:.0f} s windows",
                f"{f(ratio, 2)} ({f(cpu['ratio_min'], 2)}-{f(cpu['ratio_max'], 2)}); daemon "
                f"{f(cpu['daemon_cpu_ms_median'], 3)} ms/request at {f(cpu['rate_median'], 0)}/s "
                f"({cpu['probes']} probes of mlflow_read every 1 s)",
                f"{f(cpu['blackbox_cpu_ms_median'], 3)} ms/probe at the daemon's rate of the same pair",
                f"<= {GOAL_CPU_RATIO:g}",
                verdict(ratio <= GOAL_CPU_RATIO),
            )
        )
    for s in data.get("scale", []):
        missed = s.get("missed", 0) + s.get("skipped", 0)
        ok = missed == 0 and s.get("lag_p99_ms", math.inf) <= GOAL_LAG_P99_MS
        diagnostic = not s.get("alerting", True)
        add(
            (
                "4",
                f"scale: {s['probes']} probes at {s.get('interval_s', 10):g} s ({s['targets']} targets)"
                + (", alert engine disabled (diagnostic)" if diagnostic else ""),
                f"missed+skipped {missed:.0f}, lag p50 {f(s.get('lag_p50_ms'), 1)} / p99 {f(s.get('lag_p99_ms'), 1)} ms "
                f"(>50 ms: {f(s.get('lag_over_50ms'), 0)} of {f(s.get('lag_runs'), 0)}), CPU {f(s.get('cpu_share', 0) * 100, 1)} % "
                f"of a core, RSS {f(s.get('rss_mb'), 1)} MB, runs {f(s.get('runs_in_window'), 0)}/{f(s.get('expected_runs'), 0)}"
                f" in {data['plan']['scale_window']:.0f} s, failed {f(s.get('failed_runs'), 0)}",
                "n/a (scraped by Prometheus per target)",
                f"0 missed, p99 <= {GOAL_LAG_P99_MS:g} ms" if s["probes"] == 1000 else "",
                verdict(ok) if s["probes"] == 1000 else "",
            )
        )
        if "metrics_median_ms" in s:
            add(
                (
                    "5",
                    f"/metrics at {s['probes']} probes: GET incl. transfer, median of 20 on one keep-alive "
                    "connection (max); on a new connection after 10+ s without a scrape; size"
                    + (", alert engine disabled" if diagnostic else ""),
                    f"{f(s['metrics_median_ms'], 1)} ms (max {f(s['metrics_max_ms'], 1)}); "
                    f"{' / '.join(f(c, 1) for c in s['metrics_cold_ms'])} ms; {s['metrics_bytes'] / 1e6:.2f} MB, "
                    f"{s['metrics_series']} samples",
                    "n/a",
                    f"<= {GOAL_METRICS_MS:g} ms",
                    verdict(s["metrics_median_ms"] <= GOAL_METRICS_MS and max(s["metrics_cold_ms"]) <= GOAL_METRICS_MS),
                )
            )
    if "render_check" in data:
        add(
            (
                "5",
                "/metrics renderer vs prometheus_client generate_latest",
                data["render_check"],
                "",
                "same bytes",
                verdict(data["render_check"] == "identical bytes")
                if data["render_check"].startswith(("identical", "**"))
                else "n/a",
            )
        )
    add(("6", "time to alert", "see README alerting section", "", "", ""))
    header = "| # | measure | synthetic-monitor daemon | blackbox_exporter | goal | met |\n|---|---|---|---|---|---|\n"
    return header + "\n".join("| " + " | ".join(c.replace("|", "/") for c in row) + " |" for row in rows)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.perf.bench", description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="CI-sized smoke: fewer samples, 10k probes, short windows")
    parser.add_argument(
        "--smoke",
        action="store_true",
        help="a few seconds per part, tiny sizes: does it still run? (figures meaningless)",
    )
    parser.add_argument("--out", help="also write the figures as JSON to this file")
    parser.add_argument(
        "--only", action="append", choices=("fidelity", "cpu", "load", "scale"), help="run only these parts"
    )
    parser.add_argument("--keep", action="store_true", help="keep the work directory (logs, configs)")
    parser.add_argument(
        "--daemon-repo",
        help="run the daemon from this checkout instead (e.g. a `git worktree` of "
        "an older commit), for before/after figures",
    )
    parser.add_argument(
        "--no-diagnostic",
        action="store_true",
        help="skip the extra 1,000-probe scale run with the alert engine disabled",
    )
    parser.add_argument("--_target", nargs="+", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args._target:
        asyncio.run(_serve_target(args._target))
        return 0
    if not shutil_which(BLACKBOX):
        print(f"bench: {BLACKBOX} is not installed (Debian package prometheus-blackbox-exporter)", file=sys.stderr)
        return 2
    global DAEMON_REPO
    if args.daemon_repo:
        DAEMON_REPO = Path(args.daemon_repo).resolve()
    plan = Plan.make(args.quick, args.smoke)
    parts = set(args.only or ("fidelity", "cpu", "load", "scale"))
    started = time.monotonic()
    command = "python -m tests.perf.bench" + (" --quick" if args.quick else "") + (" --smoke" if args.smoke else "")
    command += "".join(f" --only {part}" for part in args.only or ())
    if args.daemon_repo:
        command += f" --daemon-repo {args.daemon_repo}"

    data: dict[str, Any] = {
        "date": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M"),
        "machine": machine(),
        "versions": versions(),
        "quick": args.quick or args.smoke,
        "smoke": args.smoke,
        "command": command,
        "plan": {
            "cpu_pairs": plan.cpu_pairs,
            "cpu_window": plan.cpu_window,
            "load_probes": plan.load_probes,
            "scale_window": plan.scale_window,
            "load_time_cap": plan.load_time_cap,
            "fidelity_samples": plan.fidelity_samples,
            "fidelity_samples_1s": plan.fidelity_samples_1s,
        },
    }
    workdir = Path(tempfile.mkdtemp(prefix="synthetic-bench-"))
    specs = {f"d{d}": d / 1000 for d in DELAYS_MS} | {f"b{d}": d / 1000 for d in DELAYS_MS}
    specs |= {"fast_daemon": 0.0, "fast_blackbox": 0.0}
    try:
        target = Target(workdir, specs)
        if "fidelity" in parts:
            log("fidelity: 0/10/100/1000 ms, daemon and blackbox_exporter")
            data["fidelity"] = measure_fidelity(workdir, target, plan)
        if "cpu" in parts:
            log(f"cpu: {plan.cpu_pairs} pairs of daemon and blackbox_exporter at the same request rate")
            data["cpu"] = measure_cpu_pairs(workdir, target, plan)
        if "load" in parts:
            log("idle: daemon with 3 probes at 30 s")
            measure_daemon_idle.result = measure_daemon_idle(workdir, target)  # type: ignore[attr-defined]
            log(f"load: daemon, {plan.load_probes} HTTP steps")
            data["daemon_load"] = measure_daemon_load(workdir, target, plan)
            log(f"load: blackbox_exporter, {plan.load_probes} probes")
            data["blackbox_load"] = measure_blackbox_load(workdir, target, plan)
        if "scale" in parts:
            data["render_check"] = render_check()
            data["scale"] = []
            for size in plan.scale_sizes:
                log(f"scale: {size} probes at {plan.scale_interval:g} s")
                data["scale"].append(measure_scale(workdir, target, plan, size))
            if not args.no_diagnostic and not plan.smoke:
                size = max(plan.scale_sizes)
                log(f"scale: {size} probes at 10 s, alerting disabled (diagnostic)")
                data["scale"].append(measure_scale(workdir, target, plan, size, alerting=False))
    finally:
        stop_all()
        if not args.keep:
            import shutil

            shutil.rmtree(workdir, ignore_errors=True)
        else:
            log(f"work directory kept: {workdir}")
    data["elapsed_s"] = time.monotonic() - started
    table = render(data)
    print(table)
    if args.out:
        Path(args.out).write_text(json.dumps(data, indent=2, default=_json_default) + "\n")
    return 0


def _json_default(value: Any) -> Any:
    if isinstance(value, float) and math.isnan(value):
        return None
    return str(value)


def shutil_which(name: str) -> str | None:
    import shutil

    return shutil.which(name)


def log(message: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


if __name__ == "__main__":
    try:
        sys.exit(main())
    finally:
        stop_all()
