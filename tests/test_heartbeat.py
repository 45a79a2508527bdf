"""Issue 18, "who watches the watcher": the push heartbeat for dead-man's-switch services.

A real local HTTP receiver (as healthchecks.io's ping URL) counts the pushes:
- a real daemon process pushes every interval while it is healthy; a hung process
  (SIGSTOP) pushes nothing, and pushes again once it runs (SIGCONT);
- with the real scheduler and liveness logic in process, a wedged scheduler (its jobs no
  longer run while the event loop still does) withholds the push: counted and logged;
- a timeout above the interval is a config error naming the field.
"""

from __future__ import annotations

import asyncio
import signal
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest
import structlog.testing
import yaml
from prometheus_client import CollectorRegistry

from monitor.cli import main as cli_main
from monitor.config import HeartbeatConfig
from monitor.events import Event, Heartbeat
from monitor.heartbeat import HeartbeatPusher
from monitor.scheduler import ProbeScheduler
from monitor.sinks.history import HistorySink
from monitor.web.endpoints import EndpointLogic
from tests.servers import DaemonProcess
from tests.standin.asgard import serve_in_thread

pytestmark = pytest.mark.timeout(90)


class Receiver:
    """A dead-man's-switch endpoint: records when each ping arrived (GET or POST)."""

    def __init__(self) -> None:
        self.pings: list[tuple[float, str, str]] = []
        pings = self.pings

        class Handler(BaseHTTPRequestHandler):
            def _ping(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                if length:
                    self.rfile.read(length)
                pings.append((time.monotonic(), self.command, self.path))
                self.send_response(200)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"OK")

            do_GET = do_POST = _ping

            def log_message(self, format: str, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/ping/0f1e2d3c-secret"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def count(self) -> int:
        return len(self.pings)

    def reference(self) -> int:
        return sum(1 for _, _, path in self.pings if path == REFERENCE_PATH)

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver()
    yield r
    r.stop()


def wait_for(check: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


INTERVAL = 0.3
REFERENCE_PATH = "/reference-clock"


def _daemon_pushes(receiver: Receiver) -> int:
    return receiver.count() - receiver.reference()


def _reference_clock(receiver: Receiver, stop: threading.Event) -> None:
    """Push to the receiver every INTERVAL, as a healthy daemon would, until `stop`."""
    while not stop.wait(INTERVAL):
        httpx.get(f"http://127.0.0.1:{receiver.server.server_address[1]}{REFERENCE_PATH}", timeout=5)


@pytest.mark.integration
def test_a_daemon_pushes_while_it_runs_and_stops_when_it_hangs(tmp_path: Path, receiver: Receiver) -> None:
    asgard, asgard_url = serve_in_thread()
    config = tmp_path / "c.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "targets": [{"name": "asgard", "kind": "asgard", "url": asgard_url}],
                "probes": [{"name": "api", "target": "asgard", "scenario": "asgard", "interval": "1s"}],
                "heartbeat": {"url": receiver.url, "interval": f"{INTERVAL}s", "timeout": "0.2s", "method": "POST"},
            }
        )
    )
    daemon = DaemonProcess(config, tmp_path).start()
    try:
        wait_for(lambda: receiver.count() >= 4, 30, "four pushes from a healthy daemon")
        assert {(m, p) for _, m, p in receiver.pings} == {("POST", "/ping/0f1e2d3c-secret")}
        metrics = httpx.get(f"{daemon.url}/metrics", timeout=5).text
        assert 'synthetic_monitor_heartbeat_pushes_total{result="sent"}' in metrics
        assert daemon.proc is not None
        daemon.proc.send_signal(signal.SIGSTOP)  # a hung process: nothing on it runs
        try:
            # Absence is shown over a window the test controls: a reference clock in this
            # process pushes to the same receiver every interval; while it pushes twelve
            # times (two for a push already in flight to land, ten to watch), the hung
            # daemon must push nothing.
            ticks = threading.Event()
            reference = threading.Thread(target=_reference_clock, args=(receiver, ticks), daemon=True)
            reference.start()
            wait_for(lambda: receiver.reference() >= 2, 30, "two reference ticks")
            stopped_at = _daemon_pushes(receiver)
            wait_for(lambda: receiver.reference() >= 12, 60, "ten more reference ticks")
            ticks.set()
            reference.join(timeout=5)
            assert _daemon_pushes(receiver) == stopped_at
        finally:
            daemon.proc.send_signal(signal.SIGCONT)
        wait_for(lambda: _daemon_pushes(receiver) >= stopped_at + 2, 30, "pushes again once the daemon runs")
        assert "0f1e2d3c-secret" not in daemon.log_text()  # the push URL's secret path is never logged
    finally:
        daemon.stop()
        asgard.shutdown()


async def test_a_wedged_scheduler_withholds_the_push(receiver: Receiver) -> None:
    """The real scheduler and the real liveness check; the loop keeps running, the
    scheduler's jobs do not (paused): the heartbeat goes stale and the pushes stop."""
    endpoints: EndpointLogic

    def emit(event: Event) -> None:
        if isinstance(event, Heartbeat):
            endpoints.beat()

    scheduler = ProbeScheduler(emit, heartbeat_interval=0.1)
    endpoints = EndpointLogic(HistorySink(), list, lambda: None, lambda: scheduler.running, 0.6)  # type: ignore[arg-type,return-value]
    registry = CollectorRegistry()
    pusher = HeartbeatPusher(registry, endpoints.healthy)
    scheduler.start()
    pusher.start(HeartbeatConfig(url=receiver.url, interval=0.1, timeout=0.1))

    def pushes(result: str) -> float:
        value = registry.get_sample_value("synthetic_monitor_heartbeat_pushes_total", {"result": result})
        assert value is not None
        return value

    async def until(check: Callable[[], bool], timeout: float, what: str) -> None:
        deadline = time.monotonic() + timeout
        while not check():
            assert time.monotonic() < deadline, f"timed out waiting for {what}"
            await asyncio.sleep(0.05)

    try:
        with structlog.testing.capture_logs() as logs:
            await until(lambda: receiver.count() >= 3, 20, "pushes while healthy")
            assert pushes("withheld") == 0
            scheduler.pause()  # wedged: no job runs, the scheduler heartbeat ages
            await until(lambda: pushes("withheld") >= 2, 20, "pushes withheld")
            count = receiver.count()
            await until(lambda: pushes("withheld") >= 6, 20, "more intervals withheld")
            assert receiver.count() == count
        withheld = [r for r in logs if r["event"] == "heartbeat_withheld"]
        assert len(withheld) == 1 and "stale" in withheld[0]["reason"], withheld  # once, not per interval
    finally:
        await pusher.stop()
        scheduler.shutdown()


def test_a_heartbeat_timeout_above_its_interval_is_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = tmp_path / "c.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "targets": [{"name": "a", "kind": "asgard", "url": "http://127.0.0.1:9"}],
                "probes": [{"name": "api", "target": "a", "scenario": "asgard"}],
                "heartbeat": {"url": "https://hc-ping.com/x", "interval": "5s", "timeout": "10s"},
            }
        )
    )
    assert cli_main(["config", "validate", str(config)]) == 2
    assert "heartbeat.timeout" in capsys.readouterr().err


def test_config_show_keeps_the_push_urls_secret_path_out() -> None:
    """`config show` says "secrets redacted"; a push URL's path is the check's secret
    (healthchecks.io, Dead Man's Snitch), as the heartbeat's log lines already knew."""
    from monitor.config import Config

    config = Config.model_validate(
        {
            "targets": [{"name": "m", "kind": "mlflow", "url": "http://127.0.0.1:5000"}],
            "probes": [{"name": "p", "target": "m", "scenario": "mlflow_read"}],
            "heartbeat": {"url": "https://user:pw@hc-ping.com:8443/0f3a-secret-uuid?x=1"},
        }
    )
    shown = config.redacted()["heartbeat"]
    assert shown["url"] == "https://hc-ping.com:8443/..."
    assert "secret" not in str(config.redacted()) and "pw" not in shown["url"]
