"""Receivers against real local HTTP servers (and a real Alertmanager when installed).

The servers are asyncio.start_server with a minimal HTTP/1.1 parser: enough to record
what the notifiers send and to answer with chosen status codes, after a delay, or
never (a hung receiver).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import dataclasses
import json
import re
import shutil
import signal
import subprocess
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client import CollectorRegistry

from monitor.alerting.alerts import Alert, rfc3339
from monitor.alerting.dispatcher import Dispatcher
from monitor.alerting.notifiers import AlertmanagerNotifier, WebhookNotifier
from monitor.alerting.sink import AlertSink
from monitor.config import AlertingConfig, ReceiverConfig
from monitor.results import ProbeResult, Reason, StepResult
from tests.servers import free_port

RFC3339 = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?(Z|[+-]\d\d:\d\d)$")


@dataclass
class Request:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


@dataclass
class Recorder:
    """A real HTTP server that records requests; `statuses` are answered in order (then 200)."""

    statuses: list[int] = field(default_factory=list)
    delay: float = 0.0
    hang: bool = False
    port: int = 0
    requests: list[Request] = field(default_factory=list)
    _server: asyncio.AbstractServer | None = None
    _arrived: asyncio.Condition | None = None
    _stopping: asyncio.Event | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def start(self) -> Recorder:
        self._arrived = asyncio.Condition()
        self._stopping = asyncio.Event()
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", self.port)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def stop(self) -> None:
        if self._stopping is not None:
            self._stopping.set()  # releases hung handlers
            await asyncio.sleep(0)
        if self._server is not None:
            self._server.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), 2)

    async def wait_for(self, count: int, timeout: float = 10.0) -> list[Request]:
        assert self._arrived is not None
        async with self._arrived:
            await asyncio.wait_for(self._arrived.wait_for(lambda: len(self.requests) >= count), timeout)
        return self.requests

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                line = await reader.readline()
                if not line:
                    return
                method, path, _ = line.decode().split(" ", 2)
                headers: dict[str, str] = {}
                while (raw := await reader.readline()) not in (b"\r\n", b"\n", b""):
                    name, _, value = raw.decode().partition(":")
                    headers[name.strip().lower()] = value.strip()
                body = await reader.readexactly(int(headers.get("content-length", "0")))
                if self.hang:
                    assert self._stopping is not None
                    await self._stopping.wait()
                    return
                assert self._arrived is not None
                async with self._arrived:
                    self.requests.append(Request(method, path, headers, body))
                    self._arrived.notify_all()
                status = self.statuses.pop(0) if self.statuses else 200
                if self.delay:
                    await asyncio.sleep(self.delay)
                text = b"{}" if status < 300 else b'{"error": "boom"}'
                writer.write(
                    f"HTTP/1.1 {status} X\r\nContent-Type: application/json\r\nContent-Length: {len(text)}\r\n\r\n".encode()
                    + text
                )
                await writer.drain()
        except (ConnectionError, asyncio.IncompleteReadError, asyncio.CancelledError):
            pass
        finally:
            writer.close()


@contextlib.asynccontextmanager
async def recorder(**kw: Any) -> AsyncIterator[Recorder]:
    server = await Recorder(**kw).start()
    try:
        yield server
    finally:
        await server.stop()


def metrics() -> tuple[CollectorRegistry, CollectorRegistry]:
    """Where an AlertSink declares its metrics, and the registry to read them from (the same one)."""
    registry = CollectorRegistry()
    return registry, registry


def notifications(registry: CollectorRegistry) -> Any:
    """synthetic_monitor_notifications_total as the alert sink, its owner, declares it."""
    return AlertSink(alerting([]), registry).notifications


def counted(registry: CollectorRegistry, receiver: str, result: str) -> float | None:
    return registry.get_sample_value("synthetic_monitor_notifications_total", {"receiver": receiver, "result": result})


def receiver(kind: str, url: str, **kw: Any) -> ReceiverConfig:
    return ReceiverConfig.model_validate({"kind": kind, "url": url, **kw})


def alert(name: str = "SyntheticProbeFailing", resolved: bool = False, probe: str = "mlflow_read") -> Alert:
    now = time.time()
    return Alert(
        labels={"alertname": name, "target": "mlflow", "probe": probe, "severity": "critical", "cluster": "test"},
        annotations={"summary": f"{probe} keeps failing", "description": "step health, reason unreachable"},
        starts_at=now - 30,
        ends_at=now if resolved else now + 240,
        generator_url="http://127.0.0.1:9356/status",
        resolved=resolved,
    )


def failing_result(probe: str = "mlflow_read", target: str = "mlflow") -> ProbeResult:
    step = StepResult("health", False, 0.01, reason=Reason.UNREACHABLE, error="connection refused")
    return ProbeResult(probe, target, "mlflow_read", time.time(), 0.01, (step,), 10.0)


def passing_result(probe: str = "mlflow_read", target: str = "mlflow") -> ProbeResult:
    return ProbeResult(probe, target, "mlflow_read", time.time(), 0.01, (StepResult("health", True, 0.01),), 10.0)


def alerting(receivers: list[ReceiverConfig], **kw: Any) -> AlertingConfig:
    base: dict[str, Any] = {
        "failure_threshold": 1,
        "success_threshold": 1,
        "startup_grace": 0,
        "retry_backoff": 0.05,
        "retry_backoff_max": 0.2,
        "receivers": [r.model_dump() for r in receivers],
        "batch_wait": 0,  # tests of batching set it
    }
    base.update(kw)
    return AlertingConfig.model_validate(base)


# -- payload shapes ---------------------------------------------------------------------------


async def test_alertmanager_payload_is_the_v2_list() -> None:
    async with recorder() as server:
        notifier = AlertmanagerNotifier(
            receiver("alertmanager", server.url, headers={"X-Scope-OrgID": "mlops"}, auth={"token": "t0ken"})
        )
        try:
            await notifier.send([alert(), alert("SyntheticProbeTimeout", resolved=True)])
        finally:
            await notifier.aclose()
        (request,) = server.requests
    assert (request.method, request.path) == ("POST", "/api/v2/alerts")
    assert request.headers["content-type"] == "application/json"
    assert request.headers["authorization"] == "Bearer t0ken"
    assert request.headers["x-scope-orgid"] == "mlops"
    body = request.json()
    assert isinstance(body, list) and len(body) == 2
    for item in body:
        assert set(item) == {"labels", "annotations", "startsAt", "endsAt", "generatorURL"}
        assert RFC3339.match(item["startsAt"]) and RFC3339.match(item["endsAt"])
        assert item["generatorURL"] == "http://127.0.0.1:9356/status"
    assert body[0]["labels"] == {
        "alertname": "SyntheticProbeFailing",
        "target": "mlflow",
        "probe": "mlflow_read",
        "severity": "critical",
        "cluster": "test",
    }
    assert body[0]["endsAt"] > body[0]["startsAt"]
    assert body[1]["labels"]["alertname"] == "SyntheticProbeTimeout"


async def test_webhook_payload_is_the_alertmanager_webhook_json() -> None:
    async with recorder() as server:
        notifier = WebhookNotifier(
            receiver("webhook", server.url + "/hook", name="hooks", auth={"username": "u", "password": "p"})
        )
        try:
            await notifier.send([alert(), alert(probe="mlflow_write"), alert("SyntheticProbeTimeout", resolved=True)])
        finally:
            await notifier.aclose()
        firing, resolved = server.requests
    assert firing.path == "/hook"
    assert firing.headers["authorization"] == "Basic " + base64.b64encode(b"u:p").decode()
    body = firing.json()
    assert set(body) >= {
        "version",
        "groupKey",
        "status",
        "receiver",
        "groupLabels",
        "commonLabels",
        "commonAnnotations",
        "externalURL",
        "alerts",
    }
    assert body["version"] == "4" and body["status"] == "firing" and body["receiver"] == "hooks"
    assert body["commonLabels"] == {
        "alertname": "SyntheticProbeFailing",
        "cluster": "test",
        "severity": "critical",
        "target": "mlflow",
    }
    assert body["groupLabels"] == {"alertname": "SyntheticProbeFailing", "target": "mlflow"}
    assert body["groupKey"] == '{}:{alertname="SyntheticProbeFailing", target="mlflow"}'
    assert body["commonAnnotations"] == {"description": "step health, reason unreachable"}
    assert len(body["alerts"]) == 2
    for item in body["alerts"]:
        assert set(item) == {"status", "labels", "annotations", "startsAt", "endsAt", "generatorURL", "fingerprint"}
        assert item["status"] == "firing" and RFC3339.match(item["startsAt"]) and RFC3339.match(item["endsAt"])
        assert re.match(r"^[0-9a-f]{16}$", item["fingerprint"])
    assert body["alerts"][0]["fingerprint"] != body["alerts"][1]["fingerprint"]
    done = resolved.json()
    assert done["status"] == "resolved" and done["alerts"][0]["status"] == "resolved"
    assert done["alerts"][0]["endsAt"] != "0001-01-01T00:00:00Z"


# -- retries, queue bound, counters, flush -------------------------------------------------------


async def test_retry_on_500_then_success_is_counted() -> None:
    sink, registry = metrics()
    counter = notifications(registry)
    async with recorder(statuses=[500, 503]) as server:
        dispatcher = Dispatcher(
            [receiver("webhook", server.url, name="hook")],
            lambda r, res: counter.labels(r, res).inc(),
            backoff=0.05,
            backoff_max=0.2,
            attempts=5,
        )
        dispatcher.start()
        dispatcher.submit([alert()])
        assert await dispatcher.flush(5)
        await dispatcher.close()
        assert len(server.requests) == 3
        assert [r.json()["alerts"][0]["labels"]["alertname"] for r in server.requests] == ["SyntheticProbeFailing"] * 3
    assert counted(registry, "hook", "retry") == 2
    assert counted(registry, "hook", "success") == 1
    assert counted(registry, "hook", "failure") is None


async def test_gives_up_after_max_attempts_and_counts_failure() -> None:
    sink, registry = metrics()
    counter = notifications(registry)
    async with recorder(statuses=[500] * 10) as server:
        dispatcher = Dispatcher(
            [receiver("alertmanager", server.url)],
            lambda r, res: counter.labels(r, res).inc(),
            backoff=0.01,
            backoff_max=0.02,
            attempts=3,
        )
        dispatcher.start()
        dispatcher.submit([alert()])
        dispatcher.submit([alert("SyntheticProbeTimeout", resolved=True)])
        assert await dispatcher.flush(5)
        first = len(server.requests)
        dispatcher.submit([alert("MLflowWorkerFailure")])  # queued after the first gave up
        assert await dispatcher.flush(5)
        await dispatcher.close()
        # Queued together, the first two went as one request: 3 attempts; then 3 for the third.
        assert (first, len(server.requests)) == (3, 6)
        assert [len(r.json()) for r in server.requests] == [2, 2, 2, 1, 1, 1]
    assert counted(registry, "alertmanager", "failure") == 2
    assert counted(registry, "alertmanager", "retry") == 4


async def test_retry_on_connection_refused_until_the_receiver_comes_up() -> None:
    sink, registry = metrics()
    counter = notifications(registry)
    port = free_port()
    dispatcher = Dispatcher(
        [receiver("alertmanager", f"http://127.0.0.1:{port}", name="late")],
        lambda r, res: counter.labels(r, res).inc(),
        backoff=0.1,
        backoff_max=0.4,
        attempts=10,
    )
    dispatcher.start()
    dispatcher.submit([alert()])
    for _ in range(200):  # until refused at least once (a generous ceiling: 10 s)
        if (counted(registry, "late", "retry") or 0) >= 1:
            break
        await asyncio.sleep(0.05)
    assert (counted(registry, "late", "retry") or 0) >= 1
    async with recorder(port=port) as server:
        assert await dispatcher.flush(5)
        await dispatcher.close()
        assert len(server.requests) == 1
        assert server.requests[0].json()[0]["labels"]["alertname"] == "SyntheticProbeFailing"
    assert counted(registry, "late", "success") == 1


async def test_hung_receiver_never_blocks_handle_and_the_queue_drops_the_oldest() -> None:
    sink, registry = metrics()
    probes = [(f"p{i}", "mlflow") for i in range(10)]
    async with recorder(hang=True) as hung, recorder() as healthy:
        config = alerting(
            [receiver("webhook", hung.url, name="hung", timeout="30s"), receiver("webhook", healthy.url, name="ok")],
            queue_size=3,
        )
        alerts = AlertSink(config, sink)
        await alerts.start(probes)
        await asyncio.sleep(0)
        slowest = 0.0
        for i, (probe, target) in enumerate(probes):  # each run fires one alert: one batch per receiver
            started = time.perf_counter()
            alerts.handle(failing_result(probe, target))
            slowest = max(slowest, time.perf_counter() - started)
            # The healthy receiver gets each one at once: not held back by the hung one.
            await healthy.wait_for(i + 1, timeout=5)
        # Never held by the hung receiver (its timeout is 30 s): how fast handle() is, is a
        # figure of the alert burst benchmark (tests/perf/alert_burst.py), not a bound here.
        assert slowest < 10, f"handle() took {slowest:.3f}s: held by the hung receiver"
        # The hung receiver holds batch 1 in flight and 3 queued; 6 older ones were dropped.
        assert counted(registry, "hung", "dropped") == 6
        assert len(alerts.firing()) == 10
        names = sorted(r.json()["alerts"][0]["labels"]["probe"] for r in healthy.requests)
        assert names == sorted(p for p, _ in probes)
        assert counted(registry, "ok", "dropped") == 0
        started = time.perf_counter()
        await alerts.stop(flush_timeout=0.3)
        assert time.perf_counter() - started < 15  # not the hung receiver's 30 s
    # At shutdown the batch stuck in flight and the 3 still queued are dropped too.
    assert counted(registry, "hung", "dropped") == 10
    assert counted(registry, "hung", "success") == 0
    assert counted(registry, "ok", "success") == 10


async def test_notification_series_exist_from_start() -> None:
    sink, registry = metrics()
    alerts = AlertSink(alerting([receiver("alertmanager", "http://127.0.0.1:9")]), sink)
    await alerts.start([("mlflow_read", "mlflow")])
    for result in ("success", "failure", "retry", "dropped"):
        assert counted(registry, "alertmanager", result) == 0
    await alerts.stop(0.1)


async def test_stop_flushes_pending_notifications() -> None:
    sink, registry = metrics()
    probes = [(f"p{i}", "mlflow") for i in range(3)]
    async with recorder(delay=0.2) as server:
        alerts = AlertSink(alerting([receiver("webhook", server.url, name="slow")]), sink)
        await alerts.start(probes)
        for probe, target in probes:
            alerts.handle(failing_result(probe, target))
        assert len(server.requests) == 0
        await alerts.stop(flush_timeout=5)
        # Queued while the worker had not sent yet: one request carrying all three.
        assert [len(r.json()["alerts"]) for r in server.requests] == [3]
    assert counted(registry, "slow", "success") == 1
    assert counted(registry, "slow", "dropped") == 0


async def test_webhook_gets_fire_repeat_and_resolve_while_alertmanager_gets_the_resends() -> None:
    """A person reads a webhook: no message per resend_interval, only fire, repeat_interval, resolve."""
    sink, registry = metrics()
    clock = [time.time()]
    async with recorder() as hook, recorder() as am:
        alerts = AlertSink(
            alerting(
                [receiver("webhook", hook.url, repeat_interval="1h"), receiver("alertmanager", am.url)],
                resend_interval="10s",
                success_threshold=2,
                labels={"namespace": "mlops"},
            ),
            sink,
            clock=lambda: clock[0],
        )
        alerts.tick_seconds = 0.02
        await alerts.start([("mlflow_read", "mlflow")])
        alerts.handle(failing_result())
        (fired,) = await hook.wait_for(1)
        await am.wait_for(1)
        assert fired.json()["status"] == "firing"
        assert fired.json()["commonLabels"]["namespace"] == "mlops"
        for resends in range(1, 6):  # five resend intervals: Alertmanager's endsAt kept fresh
            clock[0] += 10
            await am.wait_for(1 + resends)
        ends = [r.json()[0]["endsAt"] for r in am.requests]
        assert ends == sorted(ends) and len(set(ends)) == 6
        # Whatever the ticks so far submitted to the webhook has been delivered (an event,
        # not a sleep): only then does its count say what the engine decided.
        assert await alerts._dispatcher.flush(10)
        assert len(hook.requests) == 1, "the webhook got the Alertmanager re-sends"
        clock[0] += 3600 - 50  # repeat_interval after the fire
        (_, repeat) = await hook.wait_for(2)
        assert repeat.json()["status"] == "firing"
        assert repeat.json()["alerts"][0]["startsAt"] == fired.json()["alerts"][0]["startsAt"]
        pushed = len(am.requests)
        alerts.handle(passing_result())
        alerts.handle(passing_result())
        requests = await hook.wait_for(3)
        assert requests[2].json()["status"] == "resolved"
        resolved = (await am.wait_for(pushed + 1))[-1].json()[0]
        assert resolved["endsAt"] == rfc3339(clock[0])  # closed now, not left to expire
        assert await alerts._dispatcher.flush(10)
        assert len(hook.requests) == 3
        await alerts.stop()
    assert counted(registry, "webhook", "success") == 3


# -- a real Alertmanager ---------------------------------------------------------------------------


def alertmanager_binary() -> str:
    for name in ("alertmanager", "prometheus-alertmanager"):
        path = shutil.which(name)
        if path:
            return path
    pytest.skip("alertmanager binary not installed (Debian package prometheus-alertmanager)")


@pytest.mark.integration
async def test_real_alertmanager_accepts_the_push_and_delivers_to_a_webhook(tmp_path: Path) -> None:
    binary = alertmanager_binary()
    async with recorder() as hook:
        port = free_port()
        (tmp_path / "am.yml").write_text(
            "route:\n"
            "  receiver: hook\n"
            "  group_by: [alertname, target, probe]\n"
            "  group_wait: 0s\n  group_interval: 1s\n  repeat_interval: 1h\n"
            "receivers:\n"
            "  - name: hook\n"
            f"    webhook_configs: [{{url: '{hook.url}/am', send_resolved: true}}]\n"
        )
        proc = subprocess.Popen(
            [
                binary,
                f"--config.file={tmp_path / 'am.yml'}",
                f"--storage.path={tmp_path / 'data'}",
                f"--web.listen-address=127.0.0.1:{port}",
                "--cluster.listen-address=",
                "--log.level=warn",
            ],
            stdout=subprocess.DEVNULL,
            stderr=open(tmp_path / "am.log", "wb"),
            start_new_session=True,
        )
        am_url = f"http://127.0.0.1:{port}"
        notifier = AlertmanagerNotifier(receiver("alertmanager", am_url))
        try:
            async with httpx.AsyncClient(trust_env=False) as client:
                deadline = time.monotonic() + 20
                while True:
                    assert proc.poll() is None, (tmp_path / "am.log").read_text()
                    with contextlib.suppress(httpx.HTTPError):
                        if (await client.get(f"{am_url}/-/ready", timeout=1)).status_code == 200:
                            break
                    assert time.monotonic() < deadline, "alertmanager did not become ready"
                    await asyncio.sleep(0.1)
                firing = alert("MLflowWorkerFailure")
                await notifier.send([firing])
                listed = (await client.get(f"{am_url}/api/v2/alerts", timeout=5)).json()
                ours = [a for a in listed if a["labels"].get("alertname") == "MLflowWorkerFailure"]
                assert len(ours) == 1 and ours[0]["labels"] == firing.labels
                assert ours[0]["annotations"] == firing.annotations
                assert ours[0]["status"]["state"] == "active"
                (delivered,) = await hook.wait_for(1, timeout=15)
                payload = delivered.json()
                assert payload["status"] == "firing"
                assert payload["alerts"][0]["labels"] == firing.labels
                assert payload["alerts"][0]["generatorURL"] == firing.generator_url
                # Our own webhook notifier sends what Alertmanager sends: same keys.
                ours_payload = WebhookNotifier(receiver("webhook", hook.url)).payload([firing])
                assert set(ours_payload) == set(payload)
                assert set(ours_payload["alerts"][0]) == set(payload["alerts"][0])
                # A resolved notice closes it in Alertmanager and reaches the webhook.
                await notifier.send([dataclasses.replace(firing, ends_at=time.time(), resolved=True)])
                requests = await hook.wait_for(2, timeout=15)
                assert requests[1].json()["status"] == "resolved"
        finally:
            await notifier.aclose()
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=5)
