"""Real servers for tests: an `mlflow server` (sqlite, loopback) and helpers to run ours.

Every process is started in its own session and stopped by its process group, so a
test never leaves an orphan behind and never signals a process it did not start.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import IO

import httpx

REPO = Path(__file__).resolve().parent.parent
VENV_BIN = Path(sys.executable).parent


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_http(url: str, timeout: float = 60.0, proc: subprocess.Popen[bytes] | None = None) -> None:
    deadline = time.monotonic() + timeout
    last: object = None
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"process exited with {proc.returncode} before {url} answered")
        try:
            if httpx.get(url, timeout=1.0).status_code < 500:
                return
        except httpx.HTTPError as exc:
            last = exc
        time.sleep(0.2)
    raise TimeoutError(f"{url} did not answer within {timeout}s (last error: {last})")


def mlflow_executable() -> str:
    candidate = VENV_BIN / "mlflow"
    return str(candidate) if candidate.exists() else "mlflow"


class MlflowServer:
    """`mlflow server` with a sqlite store in `workdir`, on a loopback port."""

    def __init__(self, workdir: Path, port: int | None = None, gunicorn_opts: str | None = None) -> None:
        self.workdir = workdir
        self.port = port or free_port()
        self.gunicorn_opts = gunicorn_opts
        self.proc: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def db_path(self) -> Path:
        return self.workdir / "mlflow.db"

    @property
    def log_path(self) -> Path:
        return self.workdir / "mlflow.log"

    def start(self, timeout: float = 90.0) -> MlflowServer:
        self.workdir.mkdir(parents=True, exist_ok=True)
        command = [
            mlflow_executable(),
            "server",
            "--backend-store-uri",
            f"sqlite:///{self.db_path}",
            "--artifacts-destination",
            str(self.workdir / "artifacts"),
            "--host",
            "127.0.0.1",
            "--port",
            str(self.port),
            "--workers",
            "1",
        ]
        if self.gunicorn_opts:
            command += ["--gunicorn-opts", self.gunicorn_opts]
        env = dict(os.environ, MLFLOW_SERVER_ENABLE_JOB_EXECUTION="false", PYTHONUNBUFFERED="1")
        self._log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(
            command, cwd=self.workdir, stdout=self._log, stderr=subprocess.STDOUT, env=env, start_new_session=True
        )
        wait_http(f"{self.url}/health", timeout=timeout, proc=self.proc)
        return self

    def _signal(self, sig: int) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, sig)

    def pause(self) -> None:
        """SIGSTOP the whole group: connections are accepted by the kernel, never answered."""
        self._signal(signal.SIGSTOP)

    def resume(self) -> None:
        self._signal(signal.SIGCONT)

    def stop(self) -> None:
        if self.proc is None:
            return
        self._signal(signal.SIGCONT)
        self._signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self._signal(signal.SIGKILL)
            self.proc.wait(timeout=5)
        self.proc = None
        if self._log:
            self._log.close()
            self._log = None

    def kill(self) -> None:
        """SIGKILL the group: the port is closed at once (connection refused)."""
        if self.proc is None:
            return
        self._signal(signal.SIGCONT)
        self._signal(signal.SIGKILL)
        self.proc.wait(timeout=10)
        self.proc = None
        # `mlflow server` is only the parent: its uvicorn/gunicorn worker holds the sockets
        # and may outlive it for a moment. Return once the port refuses, i.e. the group is gone.
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.5).close()
            except OSError:
                break
            time.sleep(0.05)
        if self._log:
            self._log.close()
            self._log = None


class DaemonProcess:
    """`synthetic-monitor run` as a subprocess, with its JSON log captured to a file."""

    def __init__(
        self,
        config_path: Path,
        workdir: Path,
        env: dict[str, str] | None = None,
        args: tuple[str, ...] = ("--web.enable-lifecycle",),
    ) -> None:
        self.config_path = config_path
        self.args = args
        self.port = free_port()
        self.workdir = workdir
        self.env = env or {}
        self.proc: subprocess.Popen[bytes] | None = None
        self.log_path = workdir / f"daemon-{self.port}.log"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> DaemonProcess:
        for attempt in range(3):
            self._spawn()
            try:
                self.wait_ready()
                return self
            except RuntimeError:
                # Our free port was taken between free_port() and the daemon's bind (seen: by
                # an outgoing connection's ephemeral port while 300 probes connect): another port.
                assert self.proc is not None
                if attempt == 2 or self.proc.poll() != 2 or "listen_failed" not in self.log_text():
                    raise
                self._log.close()
                self.port = free_port()
        return self

    def _spawn(self) -> None:
        env = dict(os.environ, PYTHONUNBUFFERED="1", **self.env)
        self._log = open(self.log_path, "ab")  # closed in stop()
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "monitor",
                "run",
                "--config",
                str(self.config_path),
                "--listen",
                f"127.0.0.1:{self.port}",
                *self.args,
            ],
            cwd=REPO,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,
        )

    def wait_ready(self) -> None:
        wait_http(f"{self.url}/healthz", timeout=30, proc=self.proc)

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 15) -> int:
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            code = self.proc.wait(timeout=timeout)
        finally:
            if self.proc.poll() is None:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
            self._log.close()
        return code


@dataclass
class Proc:
    """A helper process (Prometheus, Alertmanager, ...) in its own group, with its log."""

    name: str
    proc: subprocess.Popen[bytes]
    log: IO[bytes]
    log_path: Path

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=5)
        self.log.close()

    def tail(self, chars: int = 1500) -> str:
        return f"--- {self.name} log ---\n" + self.log_path.read_text(errors="replace")[-chars:]


def start_proc(name: str, command: list[str], workdir: Path, ready_url: str, timeout: float = 30) -> Proc:
    """Start `command` and wait until `ready_url` answers; on failure stop it and show its log."""
    log_path = workdir / f"{name}.log"
    log = open(log_path, "ab")
    proc = subprocess.Popen(command, cwd=workdir, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    child = Proc(name, proc, log, log_path)
    try:
        wait_http(ready_url, timeout=timeout, proc=proc)
    except Exception as exc:
        child.stop()
        raise RuntimeError(f"{name} did not start: {exc}\n{child.tail()}") from exc
    return child
