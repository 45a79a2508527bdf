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


def _dist_mode() -> str:
    """The `--dist` mode `./tests/run.sh` gives pytest-xdist for its parallel part."""
    words = (REPO / "tests" / "run.sh").read_text().split()
    return words[words.index("--dist") + 1]


def test_the_parallel_run_keeps_each_module_on_one_worker(tmp_path: Path) -> None:
    """A module's fixtures start once only if all its tests run on one worker. With pytest
    9.2, `--dist loadgroup` silently stopped grouping (pytest-xdist issue 1386: the group
    rides on a node id pytest no longer lets it change), and `test_config.py`'s module
    fixture, 60 CLI processes, ran on all four workers."""
    # The suite's own collection hook, so whatever grouping it sets up is what is tried here.
    (tmp_path / "conftest.py").write_text("from tests.conftest import pytest_collection_modifyitems  # noqa: F401\n")
    log = tmp_path / "ran.txt"
    for name in ("test_one", "test_two"):
        (tmp_path / f"{name}.py").write_text(
            "import os, pytest\n"
            "def note(what):\n"
            f"    with open({str(log)!r}, 'a') as f:\n"
            f"        f.write(what + ' {name} ' + os.environ['PYTEST_XDIST_WORKER'] + '\\n')\n"
            "@pytest.fixture(scope='module')\n"
            "def started():\n"
            "    note('setup')\n"
            "@pytest.mark.parametrize('i', range(8))\n"
            "def test_it(started, i):\n"
            "    note('test')\n"
        )
    run = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-q",
            "-p",
            "no:cacheprovider",
            "-n",
            "2",
            "--dist",
            _dist_mode(),
            str(tmp_path),
        ],
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode == 0, run.stdout + run.stderr
    rows = [line.split() for line in log.read_text().splitlines()]
    assert sum(what == "test" for what, _, _ in rows) == 16
    for module in ("test_one", "test_two"):
        workers = {worker for what, name, worker in rows if name == module}
        setups = sum(what == "setup" and name == module for what, name, _ in rows)
        assert (len(workers), setups) == (1, 1), (
            f"{module}: on workers {sorted(workers)}, module fixture started {setups} times"
        )


def test_every_module_handed_out_first_exists() -> None:
    """A renamed long module would silently lose its place at the front of the run."""
    from tests.conftest import LONG_MODULES

    missing = [name for name in LONG_MODULES if not (REPO / name).is_file()]
    assert not missing, f"LONG_MODULES names modules that do not exist: {missing}"
    assert len(set(LONG_MODULES)) == len(LONG_MODULES)
