"""Issue 18, safe reloads and bounded authentication, against a real daemon over real TLS.

- an empty, half-written or invalid `--web.config.file` on reload (SIGHUP, or the file
  changing under a running daemon) keeps the last good settings: the port still speaks
  TLS and still asks for basic auth, synthetic_monitor_web_config_reload_failures_total
  counts it and an error names the problem (before: plain HTTP without auth, logged at info);
- a good change still applies (a new password works after SIGHUP);
- bcrypt runs one at a time, failures are cached under an HMAC for a short time, and a
  queue of checks beyond a small bound is answered 429 at once.
"""

from __future__ import annotations

import base64
import json
import shutil
import signal
import ssl
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import bcrypt
import httpx
import pytest
import yaml

from monitor.web import webconfig
from monitor.web.webconfig import BasicAuth, Verdict
from tests.faultproxy import make_self_signed
from tests.helpers import read_port_file
from tests.servers import REPO, DaemonProcess
from tests.standin.asgard import serve_in_thread

pytestmark = pytest.mark.timeout(120)

EXAMPLE = REPO / "deploy" / "web-config.example.yml"
PASSWORD = "change-me"  # the shipped example's hash is of this password


def _wait(check: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    last: Exception | None = None
    while time.monotonic() < deadline:
        try:
            if check():
                return
        except (httpx.HTTPError, OSError, ValueError) as exc:
            last = exc
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what} (last error: {last!r})")


class TLSDaemon:
    def __init__(self, tmp_path: Path) -> None:
        self.folder = tmp_path / "web"
        self.folder.mkdir()
        cert, key = make_self_signed(tmp_path / "gen", "daemon")
        shutil.copy(cert, self.folder / "tls.crt")
        shutil.copy(key, self.folder / "tls.key")
        self.web_config = self.folder / "web-config.yml"
        self.good = EXAMPLE.read_text()
        self.web_config.write_text(self.good)
        self.asgard, asgard_url = serve_in_thread()
        config = tmp_path / "c.yaml"
        config.write_text(
            yaml.safe_dump(
                {
                    "targets": [{"name": "asgard", "kind": "asgard", "url": asgard_url}],
                    "probes": [{"name": "api", "target": "asgard", "scenario": "asgard", "interval": "1s"}],
                }
            )
        )
        self.daemon = DaemonProcess(config, tmp_path, args=("--web.config.file", str(self.web_config)))
        self.daemon.wait_ready = self._wait_ready  # type: ignore[method-assign]
        self.verify = ssl.create_default_context(cafile=str(self.folder / "tls.crt"))
        self.daemon.start()

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.daemon.port}"

    def _wait_ready(self, timeout: float = 30.0) -> None:
        assert self.daemon.proc is not None
        self.daemon.port = read_port_file(self.daemon.port_file, timeout=timeout, proc=self.daemon.proc)

        def up() -> bool:
            assert self.daemon.proc is not None
            if self.daemon.proc.poll() is not None:
                raise RuntimeError(f"daemon exited with {self.daemon.proc.returncode}")
            return self.get("/healthz").status_code == 200

        _wait(up, 30, "the daemon over TLS")

    def get(self, path: str, auth: tuple[str, str] | None = ("prometheus", PASSWORD)) -> httpx.Response:
        return httpx.get(f"{self.url}{path}", verify=self.verify, auth=auth, timeout=5)

    def failures(self) -> float:
        for line in self.get("/metrics").text.splitlines():
            if line.startswith("synthetic_monitor_web_config_reload_failures_total "):
                return float(line.split()[1])
        raise ValueError("synthetic_monitor_web_config_reload_failures_total is not exported")

    def plain_http_answers(self) -> bool:
        """Does the port answer a plain-HTTP request (what the bug turned it into)?"""
        try:
            response = httpx.get(f"http://127.0.0.1:{self.daemon.port}/healthz", timeout=3)
        except httpx.HTTPError:
            return False
        return response.status_code < 400

    def sighup(self) -> None:
        assert self.daemon.proc is not None
        self.daemon.proc.send_signal(signal.SIGHUP)

    def reload_errors(self) -> list[dict[str, Any]]:
        out = []
        for line in self.daemon.log_text().splitlines():
            try:
                record = json.loads(line)
            except ValueError:
                continue
            if record.get("event") == "web_config_reload_failed":
                out.append(record)
        return out

    def assert_still_protected(self) -> None:
        assert self.get("/healthz", auth=None).status_code == 401  # auth is still asked for
        assert self.get("/healthz").status_code == 200  # over TLS, with the old password
        assert not self.plain_http_answers()

    def stop(self) -> None:
        self.daemon.stop()
        self.asgard.shutdown()


@pytest.fixture
def tls_daemon(tmp_path: Path) -> Iterator[TLSDaemon]:
    daemon = TLSDaemon(tmp_path)
    try:
        yield daemon
    finally:
        daemon.stop()


HALF_WRITTEN = "tls_server_config:\n  cert_file: tls.crt\n  key_file: tls.key\n"  # cut before basic_auth_users


@pytest.mark.parametrize(
    "content, problem",
    [
        ("", "empty"),
        ("tls_server_config:\n", "cannot turn TLS off"),
        (HALF_WRITTEN, "cannot remove every user"),
        ("tls_server_config: [\n", "not valid YAML"),
    ],
    ids=["empty", "tls-cut", "auth-cut", "invalid-yaml"],
)
@pytest.mark.integration
def test_a_bad_web_config_on_sighup_keeps_tls_and_auth(tls_daemon: TLSDaemon, content: str, problem: str) -> None:
    assert tls_daemon.failures() == 0
    tls_daemon.assert_still_protected()
    tls_daemon.web_config.write_text(content)
    tls_daemon.sighup()
    # The file changed, so the next connection also re-reads it: one failure is counted
    # whichever sees it first (the signal or the connection), then it is not re-counted.
    _wait(lambda: tls_daemon.failures() >= 1, 20, "the reload failure to be counted")
    tls_daemon.assert_still_protected()
    errors = tls_daemon.reload_errors()
    assert errors and problem in errors[0]["error"] and errors[0]["level"] == "error", errors
    assert str(tls_daemon.web_config) in errors[0]["error"]
    # The good file back, then a new password: it applies on the next SIGHUP.
    new_hash = bcrypt.hashpw(b"rotated", bcrypt.gensalt(rounds=4)).decode()
    tls_daemon.web_config.write_text(
        tls_daemon.good.replace(tls_daemon.good.split("prometheus: ")[1].strip(), new_hash)
    )
    tls_daemon.sighup()
    _wait(lambda: tls_daemon.get("/healthz", auth=("prometheus", "rotated")).status_code == 200, 20, "the new password")
    assert tls_daemon.get("/healthz").status_code == 401


@pytest.mark.integration
def test_an_empty_web_config_without_sighup_is_refused_on_the_next_connection(tls_daemon: TLSDaemon) -> None:
    tls_daemon.web_config.write_text("")
    tls_daemon.assert_still_protected()
    assert tls_daemon.failures() == 1
    assert tls_daemon.reload_errors()


# --------------------------------------------------------------------------- bounded bcrypt


def _basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


USERS = {"prometheus": bcrypt.hashpw(PASSWORD.encode(), bcrypt.gensalt(rounds=6))}


def test_a_repeated_wrong_password_costs_one_bcrypt_until_the_cache_expires() -> None:
    now = [1000.0]
    auth = BasicAuth(USERS, clock=lambda: now[0])
    for _ in range(20):
        assert auth.verdict(_basic("prometheus", "wrong")) == Verdict.DENIED
        assert auth.verdict(_basic("nobody", "wrong")) == Verdict.DENIED
    assert auth.bcrypt_runs == 2
    now[0] += webconfig.FAILURE_TTL_SECONDS + 1
    assert auth.verdict(_basic("prometheus", "wrong")) == Verdict.DENIED
    assert auth.bcrypt_runs == 3
    for _ in range(5):
        assert auth.verdict(_basic("prometheus", PASSWORD)) == Verdict.OK
    assert auth.bcrypt_runs == 4
    # No password is kept in the clear: the cache keys are HMAC digests.
    assert all(PASSWORD.encode() not in key and b"wrong" not in key for key in [*auth._good, *auth._bad])


def test_bcrypt_runs_one_at_a_time_and_a_long_queue_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    auth = BasicAuth(USERS)
    running = 0
    most = 0
    gate = threading.Event()
    lock = threading.Lock()
    real = bcrypt.checkpw

    def slow_checkpw(password: bytes, hashed: bytes) -> bool:
        nonlocal running, most
        with lock:
            running += 1
            most = max(most, running)
        gate.wait(10)
        with lock:
            running -= 1
        return real(password, hashed)

    monkeypatch.setattr(webconfig.bcrypt, "checkpw", slow_checkpw)
    verdicts: list[str] = []
    threads = [
        threading.Thread(target=lambda i=i: verdicts.append(auth.verdict(_basic("prometheus", f"guess-{i}"))))
        for i in range(webconfig.MAX_BCRYPT_WAITERS)
    ]
    for thread in threads:
        thread.start()
    _wait(lambda: auth._waiting == webconfig.MAX_BCRYPT_WAITERS, 10, "the queue to fill")
    # One more distinct guess while the queue is full: refused at once, no thread held.
    assert auth.verdict(_basic("prometheus", "one-too-many")) == Verdict.BUSY
    gate.set()
    for thread in threads:
        thread.join(10)
    assert most == 1 and sorted(verdicts) == [Verdict.DENIED] * webconfig.MAX_BCRYPT_WAITERS
