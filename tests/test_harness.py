"""The test harness's own promises: a port from free_port is nobody else's, and a server is
ready only when it is the one answering on its port.

Both were learnt from a CI run where a paused MLflow "stayed healthy" for 29 s: another
test process's server held the port, answered the readiness check and every probe.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from tests import helpers
from tests.helpers import REPO, ServerProcess, free_port

# Each test starts a process (a second claimer, a dead pid, a server).
pytestmark = pytest.mark.integration


class _Ok(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        self.send_response(200)
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def claims(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A registry of its own, so the test never touches the suite's claims."""
    path = tmp_path / "ports.json"
    monkeypatch.setattr(helpers, "PORT_CLAIMS", path)
    return path


@pytest.fixture
def stranger() -> Iterator[int]:
    """An HTTP server in this process on a free port: someone else's server."""
    server = ThreadingHTTPServer(("127.0.0.1", free_port()), _Ok)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server.server_address[1]
    finally:
        server.shutdown()
        server.server_close()


def test_ports_are_below_the_ephemeral_range_and_never_handed_out_twice(claims: Path) -> None:
    ours = [free_port() for _ in range(100)]
    child = subprocess.run(
        [
            sys.executable,
            "-c",
            "import json, sys; from pathlib import Path; from tests import helpers; "
            f"helpers.PORT_CLAIMS = Path({str(claims)!r}); "
            "print(json.dumps([helpers.free_port() for _ in range(100)]))",
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=True,
    )
    theirs = json.loads(child.stdout)
    assert all(port in helpers.PORT_RANGE for port in ours + theirs)
    assert len(set(ours)) == 100 and len(set(theirs)) == 100
    assert not set(ours) & set(theirs)


def test_a_dead_processs_claims_are_handed_out_again(claims: Path) -> None:
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    dead_pid = int(dead.stdout)
    every_port = {str(port): dead_pid for port in helpers.PORT_RANGE}
    claims.write_text(json.dumps(every_port))
    port = free_port()  # before the dead process's claims are dropped, nothing would be left
    assert json.loads(claims.read_text()) == {str(port): os.getpid()}


def test_a_server_whose_port_a_stranger_answers_is_not_ready(stranger: int, tmp_path: Path) -> None:
    impostor = ServerProcess(
        "sleeper",
        [sys.executable, "-c", "import time; time.sleep(60)"],
        tmp_path,
        ready_url=f"http://127.0.0.1:{stranger}/",
        port=stranger,
    )
    with pytest.raises(RuntimeError, match=f"port {stranger} is served by a process outside this sleeper's group"):
        impostor.start(timeout=20)
    assert not impostor.running  # a failed start stops what it spawned


def test_a_server_answering_on_its_own_port_is_ready(tmp_path: Path) -> None:
    port = free_port()
    server = ServerProcess(
        "http",
        [sys.executable, "-m", "http.server", "--bind", "127.0.0.1", str(port)],
        tmp_path,
        ready_url=f"http://127.0.0.1:{port}/",
        port=port,
    )
    server.start(timeout=30)
    try:
        assert helpers.group_holds_listener(server.proc.pid, port) is True  # type: ignore[union-attr]
    finally:
        server.stop()
