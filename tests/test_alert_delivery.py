"""Alert delivery a person can live with, and that holds up in a wide outage.

- a resolved notice a receiver did not take is kept (in the state file too) and retried
  until it goes through, across a restart, or until the state ages out;
- 1,000 alerts firing together reach each receiver in a few requests;
- the state file is written off the event loop, coalesced, and is never half written;
- sink failures are counted per sink.

Receivers are real HTTP servers on 127.0.0.1 (the recorder of test_notifiers).
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from prometheus_client import CollectorRegistry

from monitor.alerting.alerts import PROBE_FAILING
from monitor.alerting.engine import AlertEngine
from monitor.alerting.sink import AlertSink
from monitor.alerting.state import load_state
from monitor.config import AlertingConfig, load_config
from monitor.daemon import Daemon
from tests.faultproxy import FaultProxy
from tests.servers import DaemonProcess, MlflowServer
from tests.standin.webhook import serve_in_thread
from tests.test_notifiers import (
    alerting,
    counted,
    failing_result,
    metrics,
    passing_result,
    receiver,
    recorder,
)

REPO = Path(__file__).resolve().parents[1]


async def until(check: Callable[[], bool], what: str, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.01)


# -- a resolve is never lost ----------------------------------------------------------------


async def test_a_failed_resolve_is_kept_across_a_restart_and_delivered_when_the_receiver_recovers(
    tmp_path: Path,
) -> None:
    state = tmp_path / "alerts.json"
    clock = [time.time()]
    probes = [("mlflow_read", "mlflow")]
    async with recorder() as hook:
        config = alerting(
            [receiver("webhook", hook.url, name="hook")],
            state_file=str(state),
            retry_attempts=2,
            resend_interval="30s",
        )
        sink, registry = metrics()
        alerts = AlertSink(config, sink, clock=lambda: clock[0])
        alerts.tick_seconds = 0.02
        await alerts.start(probes)
        alerts.handle(failing_result())
        (fired,) = await hook.wait_for(1)
        hook.statuses[:] = [500] * 1000  # the receiver breaks before the resolve
        alerts.handle(passing_result())
        await until(lambda: counted(registry, "hook", "failure") == 1, "the resolve to fail")
        assert alerts.firing() == []
        assert [a.status for a in alerts.undelivered()["hook"]] == ["resolved"]
        clock[0] += 30  # retried every resend_interval while the receiver stays down
        await until(lambda: counted(registry, "hook", "failure") == 2, "the retry to fail")
        await alerts.stop()
        saved = json.loads(state.read_text())
        (kept,) = saved["undelivered"]
        assert kept["receiver"] == "hook" and kept["labels"]["alertname"] == PROBE_FAILING
        tried = len(hook.requests)
        assert tried == 1 + 2 * 2  # the fire, then two rounds of two attempts

        hook.statuses.clear()  # the receiver recovers while the daemon restarts
        clock[0] += 5
        sink2, registry2 = metrics()
        alerts2 = AlertSink(config, sink2, clock=lambda: clock[0])
        alerts2.tick_seconds = 0.02
        await alerts2.start(probes)
        delivered = (await hook.wait_for(tried + 1))[-1].json()
        assert delivered["status"] == "resolved"
        (notice,) = delivered["alerts"]
        assert notice["labels"]["probe"] == "mlflow_read" and notice["labels"]["alertname"] == PROBE_FAILING
        assert notice["startsAt"] == fired.json()["alerts"][0]["startsAt"]  # the same alert
        await until(lambda: counted(registry2, "hook", "success") == 1, "the success to be counted")
        assert alerts2.undelivered() == {}
        await alerts2.stop()
    assert json.loads(state.read_text())["undelivered"] == []


def _config(**kw: Any) -> AlertingConfig:
    base: dict[str, Any] = {
        "failure_threshold": 1,
        "success_threshold": 1,
        "startup_grace": 0,
        "resend_interval": 60,
        "state_max_age": "10m",
        "receivers": [{"kind": "webhook", "url": "http://127.0.0.1:9/hook", "name": "hook"}],
    }
    base.update(kw)
    return AlertingConfig.model_validate(base)


def test_an_undelivered_resolve_is_retried_then_ages_out() -> None:
    now = 1_700_000_000.0
    engine = AlertEngine(_config(), now=now, probes=[("mlflow_read", "mlflow")])
    engine.observe(failing_result(), now)
    (resolved,) = engine.observe(passing_result(), now + 1)
    engine.delivery_failed("hook", [resolved], now + 2)
    assert engine.due_retries(now + 3) == ([], [])  # not before resend_interval
    (retry,), expired = engine.due_retries(now + 62)
    assert expired == [] and retry.receivers == ("hook",) and retry.resolved
    engine.delivery_failed("hook", [retry], now + 63)
    retries, expired = engine.due_retries(now + 1 + 600 + 1)  # older than state_max_age
    assert retries == [] and [(r, a.name) for r, a in expired] == [("hook", PROBE_FAILING)]
    assert engine.undelivered() == {}


def test_an_undelivered_resolve_is_dropped_when_the_alert_fires_again() -> None:
    now = 1_700_000_000.0
    engine = AlertEngine(_config(), now=now, probes=[("mlflow_read", "mlflow")])
    engine.observe(failing_result(), now)
    (resolved,) = engine.observe(passing_result(), now + 1)
    engine.delivery_failed("hook", [resolved], now + 2)
    assert list(engine.undelivered()) == ["hook"]
    (fired,) = engine.observe(failing_result(), now + 3)
    assert not fired.resolved
    # An old resolve sent after the new firing notice would close the new alert.
    assert engine.undelivered() == {} and engine.due_retries(now + 100) == ([], [])


WEBHOOK_AND_AM = [
    {"kind": "webhook", "url": "http://127.0.0.1:9/hook", "name": "hook", "repeat_interval": "1h"},
    {"kind": "alertmanager", "url": "http://127.0.0.1:9/am", "name": "am"},
]


def test_resends_go_to_alertmanager_and_repeats_to_webhooks_even_after_a_restart() -> None:
    now = 1_700_000_000.0
    probes = [("mlflow_read", "mlflow")]
    engine = AlertEngine(_config(receivers=WEBHOOK_AND_AM), now=now, probes=probes)
    (fired,) = engine.observe(failing_result(), now)
    assert fired.receivers is None  # a new alert: every receiver
    (resend,) = engine.due_resends(now + 60)
    assert resend.receivers == ("am",)
    saved = json.loads(json.dumps(engine.snapshot(now + 70)))
    restarted = AlertEngine(_config(receivers=WEBHOOK_AND_AM), now=now + 80, probes=probes)
    assert restarted.restore(saved, now + 80) == []
    (again,) = restarted.due_resends(now + 80)
    assert again.receivers == ("am",), "a restart must not repeat the alert to a webhook early"
    assert [a.receivers for a in restarted.due_resends(now + 3600)] == [("am", "hook")]


def test_a_lost_firing_notice_to_a_webhook_is_retried_at_the_next_resend_interval() -> None:
    now = 1_700_000_000.0
    engine = AlertEngine(_config(receivers=WEBHOOK_AND_AM), now=now, probes=[("mlflow_read", "mlflow")])
    (fired,) = engine.observe(failing_result(), now)
    engine.delivery_failed("hook", [fired], now + 5)
    assert engine.undelivered() == {}  # only resolves are kept: a firing one is re-sent
    assert [a.receivers for a in engine.due_resends(now + 30)] == []
    assert [a.receivers for a in engine.due_resends(now + 65)] == [("am", "hook")]


# -- a wide outage ------------------------------------------------------------------------------


async def test_a_wide_outage_reaches_each_receiver_in_a_few_requests() -> None:
    sink, registry = metrics()
    probes = [(f"p{i:04d}", "mlflow") for i in range(1000)]
    async with recorder() as hook, recorder() as am:
        alerts = AlertSink(
            alerting([receiver("webhook", hook.url), receiver("alertmanager", am.url)], batch_wait="200ms"), sink
        )
        await alerts.start(probes)
        for burst in range(4):  # results come in as the probes' runs end, not all at once
            for probe, target in probes[burst * 250 : (burst + 1) * 250]:
                alerts.handle(failing_result(probe, target))
            await asyncio.sleep(0.05)
        assert len(alerts.firing()) == 1000
        assert (
            registry.get_sample_value(
                "synthetic_monitor_alerts_firing", {"alertname": PROBE_FAILING, "target": "mlflow", "probe": "p0999"}
            )
            == 1
        )
        await alerts.stop(flush_timeout=20)
    to_hook = [a["labels"]["probe"] for r in hook.requests for a in r.json()["alerts"]]
    to_am = [a["labels"]["probe"] for r in am.requests for a in r.json()]
    assert sorted(to_hook) == sorted(to_am) == [p for p, _ in probes]
    assert 1 <= len(hook.requests) <= 4, f"webhook got {len(hook.requests)} requests for 1000 alerts"
    assert 1 <= len(am.requests) <= 4, f"alertmanager got {len(am.requests)} requests for 1000 alerts"
    assert counted(registry, "webhook", "success") == len(hook.requests)
    assert counted(registry, "alertmanager", "dropped") == 0


# -- the state file: off the loop, coalesced, crash-consistent ----------------------------------


@pytest.mark.slow
async def test_a_burst_of_failing_results_writes_the_state_file_a_few_times(tmp_path: Path) -> None:
    state = tmp_path / "alerts.json"
    sink, _ = metrics()
    probes = [(f"p{i:04d}", "mlflow") for i in range(1000)]
    alerts = AlertSink(alerting([], state_file=str(state), failure_threshold=3), sink)
    await alerts.start(probes)
    await alerts.flush_state()
    before = state.read_bytes()
    writes = alerts.state_writes
    for probe, target in probes:  # one synchronous burst: no file I/O on the probe path
        alerts.handle(failing_result(probe, target))
    assert state.read_bytes() == before and alerts.state_writes == writes
    started = time.monotonic()
    for _ in range(2):  # two more failing runs each, arriving over more than a second
        for chunk in range(10):
            for probe, target in probes[chunk * 100 : (chunk + 1) * 100]:
                alerts.handle(failing_result(probe, target))
            await asyncio.sleep(0.07)
    await alerts.flush_state()
    elapsed = time.monotonic() - started
    written = alerts.state_writes - writes
    # 3,000 state changes; at most one write per state_write_interval (+ the first and the flush).
    assert 1 <= written <= 2 + elapsed / alerts.state_write_interval, (written, elapsed)
    saved = load_state(state)
    assert saved is not None
    firing = {s["probe"] for s in saved["states"] if s["alertname"] == PROBE_FAILING and s["starts_at"]}
    assert firing == {p for p, _ in probes}
    assert all(s["bad"] == 3 for s in saved["states"] if s["alertname"] == PROBE_FAILING)
    await alerts.stop()
    assert not list(tmp_path.glob(".*.tmp"))


WRITER = """
import asyncio, sys
from pathlib import Path
from monitor.alerting.state import StateWriter

async def main() -> None:
    count = [0]
    def snapshot() -> dict:
        count[0] += 1
        return {"format": 1, "n": count[0], "states": [{"i": i, "pad": "x" * 300} for i in range(3000)]}
    writer = StateWriter(Path(sys.argv[1]), snapshot, min_interval=0)
    print("ready", flush=True)
    while True:
        writer.mark()
        await asyncio.sleep(0)

asyncio.run(main())
"""


@pytest.mark.integration
def test_a_killed_writer_leaves_a_whole_state_file(tmp_path: Path) -> None:
    """SIGKILL at random points of a write loop: the file is always the old or the new one."""
    state = tmp_path / "alerts.json"
    seen: list[int] = []
    for delay in (0.05, 0.13, 0.21, 0.29, 0.37):
        proc = subprocess.Popen(
            [sys.executable, "-c", WRITER, str(state)],
            cwd=REPO,
            stdout=subprocess.PIPE,
            env={**os.environ, "PYTHONPATH": str(REPO)},
        )
        try:
            assert proc.stdout is not None and proc.stdout.readline().strip() == b"ready"
            time.sleep(delay)
        finally:
            proc.send_signal(signal.SIGKILL)
            proc.wait(timeout=10)
        saved = load_state(state)  # raises StateFileError on a torn file
        if saved is not None:
            assert len(saved["states"]) == 3000
            seen.append(saved["n"])
    assert seen, "the writer never completed a write"


# -- sink errors --------------------------------------------------------------------------------


def test_sink_failures_are_counted_per_sink_from_zero(monkeypatch: pytest.MonkeyPatch) -> None:
    daemon = Daemon(load_config(None))
    registry: CollectorRegistry = daemon.registry

    def errors(sink: str) -> float | None:
        return registry.get_sample_value("synthetic_monitor_sink_errors_total", {"sink": sink})

    assert {s: errors(s) for s in ("metrics", "history", "log", "alerting")} == dict.fromkeys(
        ("metrics", "history", "log", "alerting"), 0.0
    )

    def broken(result: Any) -> None:
        raise RuntimeError("disk full")

    monkeypatch.setattr(daemon.history, "handle", broken)
    daemon.dispatch(passing_result())
    daemon.dispatch(passing_result())
    assert errors("history") == 2 and errors("metrics") == 0 and errors("log") == 0
    # The alert sink catches its own failures (it must never break a run): counted too.
    daemon.alerts.handle(None)  # type: ignore[arg-type]
    assert errors("alerting") == 1
    assert b'synthetic_monitor_sink_errors_total{sink="history"} 2.0' in daemon.metrics.render()


async def test_a_lone_alert_is_not_held_back_by_the_batch_window() -> None:
    sink, _ = metrics()
    async with recorder() as hook:
        alerts = AlertSink(alerting([receiver("webhook", hook.url)], batch_wait="30s"), sink)
        await alerts.start([("mlflow_read", "mlflow")])
        alerts.handle(failing_result())
        (fired,) = await hook.wait_for(1, timeout=10)  # well before the 30 s window ends
        assert fired.json()["status"] == "firing"
        await alerts.stop(flush_timeout=0.1)


def test_a_daemon_restart_keeps_a_failed_resolve_and_delivers_it(mlflow_server: MlflowServer, tmp_path: Path) -> None:
    """The whole path with real processes: `synthetic-monitor run`, the real MLflow behind a
    switchable proxy, a webhook receiver that fails and recovers, SIGTERM and a new daemon."""
    state = tmp_path / "alerts.json"
    hook = serve_in_thread()
    proxy = FaultProxy(mlflow_server.url).start()
    daemons: list[DaemonProcess] = []
    config = tmp_path / "monitor.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "log": {"format": "json", "level": "info"},
                "targets": [{"name": "mlflow", "kind": "mlflow", "url": proxy.url}],
                "probes": [
                    {
                        "name": "mlflow_read",
                        "target": "mlflow",
                        "scenario": "mlflow_read",
                        "interval": "1s",
                        "timeout": "800ms",
                    }
                ],
                "alerting": {
                    "failure_threshold": 1,
                    "success_threshold": 1,
                    "startup_grace": "0s",
                    "resend_interval": "2s",
                    "retry_attempts": 1,
                    "state_file": str(state),
                    "receivers": [{"kind": "webhook", "url": f"{hook.url}/hook", "name": "hook"}],
                },
            }
        )
    )

    def notices(status: str) -> list[dict[str, Any]]:
        return [
            a
            for e in hook.snapshot()
            for a in e["body"]["alerts"]
            if a["status"] == status and a["labels"]["alertname"] == PROBE_FAILING
        ]

    def kept() -> list[tuple[str, str]]:
        """(receiver, probe) of the probe alert's resolves the state file holds as undelivered.
        That alert's own: a refused run resolves MLflowWorkerFailure alone, before MLflow is back."""
        if not state.exists():
            return []
        undelivered = json.loads(state.read_text())["undelivered"]
        return [(k["receiver"], k["labels"]["probe"]) for k in undelivered if k["labels"]["alertname"] == PROBE_FAILING]

    def wait(check: Callable[[], Any], what: str, timeout: float = 30.0) -> Any:
        deadline = time.monotonic() + timeout
        while not (value := check()):
            assert time.monotonic() < deadline, f"timed out waiting for {what}\n" + "\n".join(
                d.log_text()[-3000:] for d in daemons
            )
            time.sleep(0.05)
        return value

    try:
        first = DaemonProcess(config, tmp_path)
        daemons.append(first)
        first.start()
        proxy.refuse()  # MLflow unreachable: the alert fires
        (fired,) = wait(lambda: notices("firing"), "the firing notice")
        hook.fail_next = 10**6  # the receiver breaks ...
        proxy.accept()  # ... just as MLflow comes back: the resolve cannot be delivered
        wait(kept, "the probe alert's resolve to be kept in the state file")
        assert first.stop() == 0
        assert kept() == [("hook", "mlflow_read")], state.read_text()[-2000:] + "\n" + first.log_text()[-6000:]
        assert notices("resolved") == []

        hook.fail_next = 0  # the receiver recovers while the daemon restarts
        second = DaemonProcess(config, tmp_path)
        daemons.append(second)
        second.start()
        (resolved,) = wait(lambda: notices("resolved"), "the kept resolve after the restart")
        assert resolved["labels"] == fired["labels"] and resolved["startsAt"] == fired["startsAt"]
        assert not resolved["endsAt"].startswith("0001-")
        wait(lambda: json.loads(state.read_text())["undelivered"] == [], "the state file to settle")
        metrics_text = httpx.get(f"{second.url}/metrics", timeout=5).text
        assert 'synthetic_monitor_notifications_total{receiver="hook",result="success"} 0.0' not in metrics_text
        assert second.stop() == 0
    finally:
        for daemon in daemons:
            if daemon.proc is not None and daemon.proc.poll() is None:
                daemon.stop()
        proxy.stop()
        hook.stop()
