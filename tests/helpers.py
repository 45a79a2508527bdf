"""What many tests need, written once: ports, waiting on a condition, scraping /metrics,
config files, and the one process class every server fixture is built on.

Waiting: `wait_for(check)` polls until `check()` is truthy and returns that value, with a
generous ceiling (a loaded 2-core CI machine is slow, never wrong); a test asserts on
events it observed, never on what "should" have happened after a fixed sleep.

Processes: `ServerProcess` runs a command in its own session (so a test signals only the
group it started and leaves no orphan), its output in a log file, waits until it is
healthy (an HTTP URL answers, a port opens, or a port file appears), and can be paused,
resumed, killed or stopped. On a failed test, the conftest hook appends the tail of every
log of the processes that test started.
"""

from __future__ import annotations

import contextlib
import fcntl
import itertools
import json
import os
import random
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, TypeVar

import httpx
import yaml
from prometheus_client.parser import text_string_to_metric_families

REPO = Path(__file__).resolve().parent.parent
VENV_BIN = Path(sys.executable).parent
T = TypeVar("T")

# Generous by design: these are ceilings for a shared 2-core machine, not expectations.
DEFAULT_TIMEOUT = 60.0


# --------------------------------------------------------------------------- ports


# Ports handed out by free_port: below the kernel's ephemeral range (32768-60999), so no
# outgoing connection and no bind(0) ever lands on one, and claimed in a registry every
# test process on this machine shares, so two processes never get the same port.
PORT_RANGE = range(20000, 32768)
PORT_CLAIMS = Path(tempfile.gettempdir()) / f"synthetic-monitor-test-ports-{os.getuid()}.json"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _bindable(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def free_port() -> int:
    """A port nothing listens on, kept from every other test process while this one lives:
    for servers that cannot bind port 0 and report it (mlflow, Prometheus, Alertmanager,
    PostgreSQL, moto), which bind seconds later. Ours bind port 0 instead (ServerProcess).

    bind(0)-and-close is not enough: mlflow takes ~5 s to bind, and in that window another
    test process's bind(0) could be handed the same port; its server then answered our
    readiness check and stood in for ours (a SIGSTOP that stopped nothing)."""
    with open(PORT_CLAIMS, "a+") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        handle.seek(0)
        try:
            claims = {int(port): int(pid) for port, pid in json.loads(handle.read() or "{}").items()}
        except (ValueError, AttributeError):
            claims = {}  # a torn file from a killed run: start again
        claims = {port: pid for port, pid in claims.items() if _alive(pid)}
        rng = random.Random()
        for _ in range(1000):
            port = rng.choice(PORT_RANGE)
            if port not in claims and _bindable(port):
                break
        else:
            raise RuntimeError(f"no free port left in {PORT_RANGE} ({len(claims)} claimed in {PORT_CLAIMS})")
        claims[port] = os.getpid()
        handle.seek(0)
        handle.truncate()
        handle.write(json.dumps(claims))
        handle.flush()
    return port


def closed_port() -> int:
    """A loopback port nothing listens on (connection refused), for "unreachable" cases."""
    return free_port()


# --------------------------------------------------------------------------- waiting


def listener_inodes(port: int) -> set[str]:
    """The socket inodes listening on TCP `port` (any local address, IPv4 or IPv6)."""
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(OSError), open(table) as handle:
            for line in itertools.islice(handle, 1, None):
                fields = line.split()
                if fields[3] == "0A" and int(fields[1].rsplit(":", 1)[1], 16) == port:
                    inodes.add(fields[9])
    return inodes


def group_holds_listener(pgid: int, port: int) -> bool | None:
    """Whether a process of group `pgid` holds the socket listening on `port`; None when
    nothing listens there."""
    wanted = {f"socket:[{inode}]" for inode in listener_inodes(port)}
    if not wanted:
        return None
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/stat") as handle:
                stat = handle.read()
            if int(stat.rsplit(")", 1)[1].split()[2]) != pgid:  # after the command: state, ppid, pgrp
                continue
            if any(os.readlink(fd.path) in wanted for fd in os.scandir(f"/proc/{entry.name}/fd")):
                return True
        except OSError:  # gone meanwhile, or not ours to read
            continue
    return False


def wait_for(
    check: Callable[[], T],
    *,
    timeout: float = DEFAULT_TIMEOUT,
    interval: float = 0.1,
    what: str = "the condition",
    context: Callable[[], str] | None = None,
    ignore: tuple[type[BaseException], ...] = (httpx.HTTPError, OSError),
) -> T:
    """Poll `check` until it returns something truthy and return that; an exception in
    `ignore` counts as "not yet". On timeout: AssertionError naming `what`, the last value
    or error, and `context()` (for example a log tail)."""
    deadline = time.monotonic() + timeout
    last: object = None
    while True:
        try:
            value = check()
            if value:
                return value
            last = value
        except ignore as exc:
            last = f"{type(exc).__name__}: {exc}"
        if time.monotonic() > deadline:
            extra = f"\n{context()}" if context is not None else ""
            raise AssertionError(f"timed out after {timeout:g}s waiting for {what} (last: {last!r}){extra}")
        time.sleep(interval)


def wait_http(url: str, timeout: float = DEFAULT_TIMEOUT, proc: subprocess.Popen[bytes] | None = None) -> None:
    """Until `url` answers with a status below 500; fails at once if `proc` exits."""

    def answered() -> bool:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"process exited with {proc.returncode} before {url} answered")
        return httpx.get(url, timeout=2.0).status_code < 500

    try:
        wait_for(answered, timeout=timeout, interval=0.2, what=f"{url} to answer")
    except AssertionError as exc:
        raise TimeoutError(str(exc)) from None


def wait_port(port: int, timeout: float = DEFAULT_TIMEOUT, proc: subprocess.Popen[bytes] | None = None) -> None:
    """Until something accepts connections on 127.0.0.1:`port`."""

    def open_() -> bool:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"process exited with {proc.returncode} before port {port} opened")
        socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
        return True

    try:
        wait_for(open_, timeout=timeout, what=f"port {port} to open")
    except AssertionError as exc:
        raise TimeoutError(str(exc)) from None


def read_port_file(path: Path, timeout: float = DEFAULT_TIMEOUT, proc: subprocess.Popen[bytes] | None = None) -> int:
    """The port a server wrote to `path` after binding port 0 (written atomically: whole or absent)."""

    def port() -> int:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"process exited with {proc.returncode} before writing {path}")
        return int(path.read_text()) if path.exists() else 0

    try:
        return wait_for(port, timeout=timeout, interval=0.05, what=f"the port file {path}")
    except AssertionError as exc:
        raise TimeoutError(str(exc)) from None


# --------------------------------------------------------------------------- metrics


@dataclass(frozen=True)
class Samples:
    """One scrape of a /metrics page: look up sample values by name and labels."""

    families: Mapping[str, Any]

    @classmethod
    def parse(cls, text: str) -> Samples:
        return cls({family.name: family for family in text_string_to_metric_families(text)})

    def all(self, name: str, **labels: str) -> list[tuple[dict[str, str], float]]:
        """Every sample called `name` whose labels include `labels`."""
        return [
            (dict(s.labels), float(s.value))
            for family in self.families.values()
            for s in family.samples
            if s.name == name and all(s.labels.get(k) == v for k, v in labels.items())
        ]

    def value(self, name: str, **labels: str) -> float | None:
        """The first matching sample's value, or None when there is none."""
        found = self.all(name, **labels)
        return found[0][1] if found else None

    def sum(self, name: str, **labels: str) -> float:
        return sum(value for _, value in self.all(name, **labels))


def scrape(url: str, **client: Any) -> Samples:
    """GET `url` (a base URL gets /metrics appended) and parse the exposition."""
    target = url if url.rstrip("/").endswith("/metrics") else f"{url.rstrip('/')}/metrics"
    response = httpx.get(target, timeout=client.pop("timeout", 10.0), **client)
    response.raise_for_status()
    return Samples.parse(response.text)


# --------------------------------------------------------------------------- config files


def target(name: str, kind: str, url: str, **extra: Any) -> dict[str, Any]:
    return {"name": name, "kind": kind, "url": url, **extra}


def probe(name: str, target: str, scenario: str, interval: str = "1s", **extra: Any) -> dict[str, Any]:
    return {"name": name, "target": target, "scenario": scenario, "interval": interval, **extra}


def config(
    targets: Iterable[Mapping[str, Any]],
    probes: Iterable[Mapping[str, Any]] = (),
    *,
    log: Mapping[str, str] | None = None,
    **sections: Any,
) -> dict[str, Any]:
    """A config document: JSON logs by default (tests read them), `probes` only when given
    (without, every target gets its kind's default probes), any other section as is."""
    document: dict[str, Any] = {"log": dict(log or {"format": "json", "level": "info"})}
    document["targets"] = [dict(t) for t in targets]
    probe_list = [dict(p) for p in probes]
    if probe_list:
        document["probes"] = probe_list
    document.update(sections)
    return document


def write_config(path: Path, document: Mapping[str, Any]) -> Path:
    """Write a config document as YAML and return its path."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(dict(document), sort_keys=False), encoding="utf-8")
    return path


# --------------------------------------------------------------------------- processes

# Every process started in this session, in order: the conftest hook shows the logs of
# those a failed test started.
STARTED: list[ServerProcess] = []
_serial = itertools.count(1)


class ForeignPort(RuntimeError):
    """A server's port answers, but from a process outside its group (another test's server)."""


class ServerProcess:
    """A command in its own process group, its output in `log_path`, healthy once `ready()`
    holds. Subclasses set the command and readiness; tests use start/stop/pause/resume/kill."""

    ready_timeout = DEFAULT_TIMEOUT
    stop_timeout = 15.0

    def __init__(
        self,
        name: str,
        command: list[str],
        workdir: Path,
        *,
        env: Mapping[str, str] | None = None,
        cwd: Path | None = None,
        ready_url: str | None = None,
        port: int | None = None,
    ) -> None:
        self.name = name
        self.command = command
        self.workdir = workdir
        self.env = dict(env or {})
        self.cwd = cwd or workdir
        self.ready_url = ready_url
        self.port = port
        self.proc: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None
        self.log_path = workdir / f"{name}-{next(_serial)}.log"

    # -- start ------------------------------------------------------------------------

    def spawn(self) -> None:
        """Start the command (no waiting)."""
        self.workdir.mkdir(parents=True, exist_ok=True)
        self._log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(
            self.command,
            cwd=self.cwd,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            env=dict(os.environ, PYTHONUNBUFFERED="1", **self.env),
            start_new_session=True,
        )
        STARTED.append(self)

    def wait_ready(self, timeout: float) -> None:
        """Until the process is healthy: by default `ready_url` answers, else `port` opens;
        and, for a known port, the one answering is this process group, not a stranger."""
        if self.ready_url is not None:
            wait_http(self.ready_url, timeout=timeout, proc=self.proc)
        elif self.port is not None:
            wait_port(self.port, timeout=timeout, proc=self.proc)
        if self.port is not None and self.proc is not None:
            self.check_owns_port()

    def check_owns_port(self) -> None:
        """Fail if another process answers on our port: this server will not bind it, and a
        test that pauses or kills "it" would act on nothing."""
        assert self.proc is not None and self.port is not None
        if group_holds_listener(self.proc.pid, self.port) is False:
            raise ForeignPort(f"port {self.port} is served by a process outside this {self.name}'s group")

    def start(self, timeout: float | None = None) -> Any:
        """Spawn and wait until healthy; on failure stop it and raise with its log tail."""
        self.spawn()
        try:
            self.wait_ready(timeout or self.ready_timeout)
        except Exception as exc:
            text = self.tail()
            self.kill(port_closes=not isinstance(exc, ForeignPort))  # a stranger's port stays open
            raise RuntimeError(f"{self.name} did not start: {exc}\n{text}") from exc
        return self

    # -- signals ----------------------------------------------------------------------

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def send_signal(self, sig: int) -> None:
        """Signal the whole group (a server's workers too), if it still runs."""
        if self.running:
            assert self.proc is not None
            os.killpg(self.proc.pid, sig)

    def pause(self) -> None:
        """SIGSTOP the group: the kernel still accepts connections, nobody answers."""
        self.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        self.send_signal(signal.SIGCONT)

    def stop(self, sig: int = signal.SIGTERM, timeout: float | None = None) -> int | None:
        """Signal, wait (SIGKILL after `timeout`), close the log; the exit code."""
        if self.proc is None:
            return None
        proc = self.proc
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGCONT)
                os.killpg(proc.pid, sig)
        try:
            code: int | None = proc.wait(timeout=timeout or self.stop_timeout)
        except subprocess.TimeoutExpired:
            code = None
        finally:
            with contextlib.suppress(ProcessLookupError):
                if proc.poll() is None or code is None:
                    os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)
            self._close_log()
            self.proc = None
        return code

    def kill(self, port_closes: bool = True) -> None:
        """SIGKILL the group and wait: the port refuses connections from here on (for a
        server whose workers hold the socket, once the whole group is gone; not waited for
        with `port_closes=False`, when the port was never this group's)."""
        if self.proc is None:
            return
        proc = self.proc
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGCONT)
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)
        self.proc = None
        self._close_log()
        if self.port is not None and port_closes:

            def refused() -> bool:
                try:
                    socket.create_connection(("127.0.0.1", self.port or 0), timeout=0.5).close()
                except OSError:
                    return True
                return False

            wait_for(refused, timeout=10, interval=0.05, what=f"port {self.port} to close", ignore=())

    def _close_log(self) -> None:
        if self._log is not None:
            self._log.close()
            self._log = None

    # -- logs -------------------------------------------------------------------------

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def tail(self, chars: int = 2500) -> str:
        return f"--- {self.name} log ({self.log_path}) ---\n" + self.log_text()[-chars:]
