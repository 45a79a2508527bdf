"""Real servers for tests: an `mlflow server` (sqlite, loopback) and helpers to run ours.

Every process is a tests.helpers.ServerProcess: started in its own session and stopped by
its process group, so a test never leaves an orphan behind and never signals a process it
did not start. Our own daemon binds port 0 and reports the port (`--port-file`).
"""

from __future__ import annotations

import signal
import sys
from pathlib import Path

from tests.helpers import REPO, VENV_BIN, ServerProcess, free_port, read_port_file, wait_for, wait_http

__all__ = [
    "REPO",
    "VENV_BIN",
    "DaemonProcess",
    "MlflowServer",
    "Proc",
    "StandinProcess",
    "free_port",
    "mlflow_executable",
    "start_proc",
    "wait_http",
]


def mlflow_executable() -> str:
    candidate = VENV_BIN / "mlflow"
    return str(candidate) if candidate.exists() else "mlflow"


class MlflowServer(ServerProcess):
    """`mlflow server` with a sqlite store in `workdir`, on a loopback port (mlflow cannot
    report a port it chose, so this one is picked free just before the start)."""

    ready_timeout = 90.0

    def __init__(self, workdir: Path, port: int | None = None, gunicorn_opts: str | None = None) -> None:
        port = port or free_port()
        command = [
            mlflow_executable(),
            "server",
            "--backend-store-uri",
            f"sqlite:///{workdir / 'mlflow.db'}",
            "--artifacts-destination",
            str(workdir / "artifacts"),
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--workers",
            "1",
        ]
        if gunicorn_opts:
            command += ["--gunicorn-opts", gunicorn_opts]
        super().__init__(
            "mlflow",
            command,
            workdir,
            env={"MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"},
            ready_url=f"http://127.0.0.1:{port}/health",
            port=port,
        )
        self.gunicorn_opts = gunicorn_opts
        self.log_path = workdir / "mlflow.log"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def db_path(self) -> Path:
        return self.workdir / "mlflow.db"

    def start(self, timeout: float | None = None) -> MlflowServer:
        super().start(timeout)
        return self


class DaemonProcess(ServerProcess):
    """`synthetic-monitor run` as a subprocess on `--listen 127.0.0.1:0`: it binds a port of
    its own and writes it to a port file, so no port is raced for. JSON log in a file."""

    ready_timeout = 30.0

    def __init__(
        self,
        config_path: Path,
        workdir: Path,
        env: dict[str, str] | None = None,
        args: tuple[str, ...] = ("--web.enable-lifecycle",),
        *,
        port: int | None = None,
    ) -> None:
        """`port`: only for daemons that must know each other's address before they start
        (peers); every other daemon binds port 0."""
        super().__init__("daemon", [], workdir, env=env, cwd=REPO, port=port)
        self.config_path = config_path
        self.args = args
        self.port_file = self.log_path.with_suffix(".port")
        self.command = [
            sys.executable,
            "-m",
            "monitor",
            "run",
            "--config",
            str(config_path),
            "--listen",
            f"127.0.0.1:{port or 0}",
            "--port-file",
            str(self.port_file),
            *args,
        ]

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def spawn(self) -> None:
        self.port_file.unlink(missing_ok=True)
        super().spawn()

    def wait_ready(self, timeout: float = 30.0) -> None:
        self.port = read_port_file(self.port_file, timeout=timeout, proc=self.proc)
        wait_http(f"{self.url}/healthz", timeout=timeout, proc=self.proc)

    def start(self, timeout: float | None = None) -> DaemonProcess:
        super().start(timeout)
        return self

    def stop(self, sig: int = signal.SIGTERM, timeout: float | None = None) -> int:
        assert self.proc is not None, "the daemon was not started"
        code = super().stop(sig, timeout)
        assert code is not None, f"the daemon did not stop on signal {sig} within the timeout\n{self.tail()}"
        return code


class StandinProcess(ServerProcess):
    """The Asgard stand-in as its own process: first on port 0 (it prints the URL it bound),
    then on that same port when started again, so it can die and come back."""

    ready_prefix = "asgard stand-in listening on "

    def __init__(self, workdir: Path, *args: str) -> None:
        super().__init__("standin", [], workdir, cwd=REPO)
        self.args = args
        self.log_path = workdir / f"standin-{id(self)}.log"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def spawn(self) -> None:
        self.command = [sys.executable, "-m", "tests.standin.asgard", "--port", str(self.port or 0), *self.args]
        self.log_path.write_bytes(b"")
        super().spawn()

    def wait_ready(self, timeout: float) -> None:
        def announced() -> str:
            if self.proc is not None and self.proc.poll() is not None:
                raise RuntimeError(f"the stand-in exited with {self.proc.returncode}")
            lines = [line for line in self.log_text().splitlines() if line.startswith(self.ready_prefix)]
            return lines[-1][len(self.ready_prefix) :].strip() if lines else ""

        url = wait_for(announced, timeout=timeout, interval=0.05, what="the stand-in's ready line")
        self.port = int(url.rsplit(":", 1)[1])

    def start(self, timeout: float | None = None) -> StandinProcess:
        super().start(timeout or 20)
        return self


class Proc(ServerProcess):
    """A helper process (Prometheus, Alertmanager, ...) in its own group, with its log."""

    def __init__(self, name: str, command: list[str], workdir: Path, ready_url: str) -> None:
        super().__init__(name, command, workdir, ready_url=ready_url)
        self.log_path = workdir / f"{name}.log"


def start_proc(name: str, command: list[str], workdir: Path, ready_url: str, timeout: float = 30) -> Proc:
    """Start `command` and wait until `ready_url` answers; on failure stop it and show its log."""
    child = Proc(name, command, workdir, ready_url)
    child.start(timeout)
    return child
