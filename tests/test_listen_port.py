"""`run --listen 127.0.0.1:0 --port-file FILE`: the daemon binds a free port itself and
says which (a `listening` log line, and FILE written atomically after the bind), so no
test or wrapper races for a port."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from tests import helpers
from tests.servers import REPO, DaemonProcess

pytestmark = pytest.mark.integration  # daemon subprocesses


def _config(tmp_path: Path) -> Path:
    url = f"http://127.0.0.1:{helpers.closed_port()}"
    return helpers.write_config(
        tmp_path / "config.yaml",
        helpers.config(
            [helpers.target("mlflow", "mlflow", url)], [helpers.probe("read", "mlflow", "mlflow_read", "5s")]
        ),
    )


def test_port_zero_is_reported_in_the_log_and_the_port_file(tmp_path: Path) -> None:
    daemon = DaemonProcess(_config(tmp_path), tmp_path).start()
    try:
        port = int(daemon.port_file.read_text())
        assert daemon.port_file.read_text() == f"{port}\n" and port > 0
        listening = [
            json.loads(line)
            for line in daemon.log_text().splitlines()
            if line.startswith("{") and '"listening"' in line
        ]
        assert [(e["address"], e["port"]) for e in listening] == [(f"127.0.0.1:{port}", port)]
        assert httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=10).status_code == 200
        assert not list(tmp_path.glob(".*.tmp"))  # written through a temp file, renamed over
    finally:
        assert daemon.stop() == 0


def test_a_port_file_that_cannot_be_written_is_exit_2(tmp_path: Path) -> None:
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "monitor",
            "run",
            "--config",
            str(_config(tmp_path)),
            "--listen",
            "127.0.0.1:0",
            "--port-file",
            str(tmp_path / "no-such-dir" / "port"),
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2, done.stdout + done.stderr
    events = [json.loads(line) for line in (done.stdout + done.stderr).splitlines() if line.startswith("{")]
    [failed] = [e for e in events if e["event"] == "port_file_failed"]
    assert failed["path"] == str(tmp_path / "no-such-dir" / "port") and "No such file" in failed["error"]
