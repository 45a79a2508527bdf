"""The probe series store against prometheus-client itself.

The store keeps the per-probe series as plain numbers and pre-rendered text so a scrape
at 1,000 probes costs milliseconds. Two things must hold, for any sequence of runs:
its numbers are the ones prometheus-client's own Counter/Gauge/Histogram would hold
(fed the same observations), and its text is byte for byte `generate_latest`'s.
"""

from __future__ import annotations

import http.client
import random
import socket
import threading
from typing import Any

import pytest
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from monitor.alerting.sink import AlertSink
from monitor.config import AlertingConfig
from monitor.events import JobEvent, ScheduleLag
from monitor.probes.asgard.scenario import AsgardFacts
from monitor.results import PHASES, PhaseTimings, ProbeResult, Reason, StepResult
from monitor.sinks.errors import SinkErrors
from monitor.sinks.exposition import Exposition
from monitor.sinks.metrics import MetricsSink, ProbeSeries
from monitor.sinks.probe_series import FAMILIES, JOB, LAG_BUCKETS
from monitor.web import server
from monitor.web.server import IOV_BATCH, Endpoints, MonitorHTTPServer

BUCKETS = (0.005, 0.01, 0.1, 1.0, 10.0)
STEPS = ("health", "search")


class Reference:
    """The same series as ordinary prometheus-client metrics, fed the same way."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        tp = ["target", "probe"]
        (runs, success, duration, step_duration, failures, consecutive, last_success, timeout, jobs, lag, phase) = (
            FAMILIES
        )
        self.runs = Counter(runs[0], runs[2], [*tp, "result"], registry=r)
        self.success = Gauge(success[0], success[2], tp, registry=r)
        self.duration = Histogram(duration[0], duration[2], tp, buckets=BUCKETS, registry=r)
        self.step_duration = Histogram(step_duration[0], step_duration[2], [*tp, "step"], buckets=BUCKETS, registry=r)
        self.failures = Counter(failures[0], failures[2], [*tp, "step", "reason"], registry=r)
        self.consecutive = Gauge(consecutive[0], consecutive[2], tp, registry=r)
        self.last_success = Gauge(last_success[0], last_success[2], tp, registry=r)
        self.timeout = Gauge(timeout[0], timeout[2], tp, registry=r)
        self.jobs = Counter(jobs[0], jobs[2], ["probe", "event"], registry=r)
        self.lag = Histogram(lag[0], lag[2], ["probe"], buckets=LAG_BUCKETS, registry=r)
        self.phase = Gauge(phase[0], phase[2], [*tp, "step", "phase"], registry=r)

    def register(self, t: str, p: str, timeout: float) -> None:
        for result in ("success", "failure"):
            self.runs.labels(t, p, result)
        for gauge in (self.success, self.consecutive, self.last_success):
            gauge.labels(t, p).set(0)
        self.duration.labels(t, p)
        self.timeout.labels(t, p).set(timeout)
        for step in STEPS:
            self.step_duration.labels(t, p, step)
            for name in PHASES:
                self.phase.labels(t, p, step, name).set(0)
            for reason in Reason:
                self.failures.labels(t, p, step, reason.value)
        for event in ("error", "missed", "skipped"):
            self.jobs.labels(p, event)
        self.lag.labels(p)

    def run(self, result: ProbeResult) -> None:
        t, p = result.target, result.probe
        self.runs.labels(t, p, "success" if result.ok else "failure").inc()
        self.success.labels(t, p).set(1 if result.ok else 0)
        self.duration.labels(t, p).observe(result.duration_seconds)
        if result.ok:
            self.consecutive.labels(t, p).set(0)
            self.last_success.labels(t, p).set(result.started_at + result.duration_seconds)
        else:
            self.consecutive.labels(t, p).inc()
        for step in result.steps:
            if not step.skipped:
                self.step_duration.labels(t, p, step.name).observe(step.duration_seconds)
                for name, value in zip(PHASES, step.phases.values() if step.phases else (0.0,) * 4):
                    self.phase.labels(t, p, step.name, name).set(value)
                if step.reason is not None:
                    self.failures.labels(t, p, step.name, step.reason.value).inc()


def random_result(rng: random.Random, target: str, probe: str) -> ProbeResult:
    steps = []
    for name in STEPS:
        # Exactly on a bucket bound, between bounds, and beyond the last one.
        seconds = rng.choice([0.005, 0.1, 10.0, rng.random() / 10, rng.random() * 30])
        # Phases: none (no request), zeros (a reused connection's connect), odd floats.
        phases = rng.choice(
            [
                None,
                PhaseTimings(),
                PhaseTimings(0.0, 0.0, seconds * 0.9, seconds * 0.1),
                PhaseTimings(rng.random() / 1000, 1e-7, rng.random(), 123456.789),
            ]
        )
        if rng.random() < 0.25:
            steps.append(
                StepResult(
                    name, ok=False, duration_seconds=seconds, reason=rng.choice(list(Reason)), error="x", phases=phases
                )
            )
            break
        steps.append(StepResult(name, ok=True, duration_seconds=seconds, skipped=rng.random() < 0.1, phases=phases))
    return ProbeResult(
        probe=probe,
        target=target,
        scenario="s",
        started_at=1_790_000_000 + rng.random() * 1e6,
        duration_seconds=sum(s.duration_seconds for s in steps),
        steps=tuple(steps),
        timeout_seconds=5.0,
    )


def probe_families(text: str) -> dict[str, list[tuple[str, tuple[tuple[str, str], ...], float]]]:
    names = {f[0] for f in FAMILIES}
    return {
        family.name: sorted((s.name, tuple(sorted(s.labels.items())), s.value) for s in family.samples)
        for family in text_string_to_metric_families(text)
        if family.name in names
    }


@pytest.mark.parametrize("seed", range(5))
def test_series_match_prometheus_client_metrics_fed_the_same_runs(seed: int) -> None:
    rng = random.Random(seed)
    registry = CollectorRegistry(auto_describe=True)
    sink = MetricsSink(registry, BUCKETS)
    reference = Reference()
    # Label values a scrape must escape: quotes, backslashes, newlines, non-ASCII.
    names = [("t0", "p0"), ('t"1', "p\\1"), ("t\n2", "prøbe 2")]
    for t, p in names:
        sink.register(ProbeSeries(t, p, STEPS, 7.5))
        reference.register(t, p, 7.5)
    for _ in range(200):
        t, p = rng.choice(names)
        result = random_result(rng, t, p)
        sink.handle(result)
        reference.run(result)
        if rng.random() < 0.2:
            event = rng.choice(["error", "missed", "skipped"])
            sink.handle_event(JobEvent(p, event))
            reference.jobs.labels(p, event).inc()
        lag = rng.choice([0.0, 0.001, rng.random(), 20.0])
        sink.handle_event(ScheduleLag(p, lag))
        reference.lag.labels(p).observe(lag)
    rendered = sink.render()
    assert rendered == generate_latest(registry)  # the fast text is the library's text
    # ... and byte for byte what prometheus-client's own metrics, fed the same, expose.
    assert sink.series.render() == generate_latest(reference.registry)
    assert probe_families(rendered.decode()) == probe_families(generate_latest(reference.registry).decode())


def test_render_is_byte_identical_to_generate_latest_with_other_series_and_reloads() -> None:
    """The daemon's /metrics: the metrics sink, a scenario's extra families and other sinks' own metrics."""
    registry = CollectorRegistry(auto_describe=True)
    exposition = Exposition(registry)
    sink = MetricsSink(exposition, BUCKETS)
    errors = SinkErrors(exposition)
    alerts = AlertSink(AlertingConfig(), exposition, errors=errors)
    for i in range(4):
        sink.register(ProbeSeries(f"t{i % 2}", f"p{i}", STEPS, 5.0, "asgard" if i == 3 else "mlflow_read"))
    rng = random.Random(1)
    for i in range(40):
        sink.handle(random_result(rng, f"t{i % 2}", f"p{i % 4}"))
    sink.unregister("p1")
    sink.register(ProbeSeries("t1", "p1", ("other",), 9.0))  # back, with other steps: at the end, zeroed
    alerts.alerts_firing.labels("SyntheticProbeFailing", "t0", "p0").set(1)
    alerts.notifications.labels("am", "success").inc()
    errors.failed("history")
    sink.handle(
        ProbeResult(
            probe="p3",
            target="t1",
            scenario="asgard",
            started_at=0.0,
            duration_seconds=0.1,
            steps=(),
            timeout_seconds=5.0,
            facts=AsgardFacts(dependencies={"mlflow": True}),
        )
    )
    rendered = sink.render()
    assert rendered == generate_latest(registry)
    text = rendered.decode()
    assert 'synthetic_asgard_dependency_up{dependency="mlflow",target="t1"} 1.0' in text
    assert 'synthetic_monitor_alerts_firing{alertname="SyntheticProbeFailing",probe="p0",target="t0"} 1.0' in text
    assert 'synthetic_monitor_sink_errors_total{sink="history"} 1.0' in text
    assert 'synthetic_probe_timeout_seconds{probe="p1",target="t1"} 9.0' in text
    assert 'step="health",target="t1"' not in text.split("p1")[-1]


def test_a_step_outside_the_declared_ones_gets_series_on_first_use() -> None:
    registry = CollectorRegistry(auto_describe=True)
    sink = MetricsSink(registry, BUCKETS)
    sink.register(ProbeSeries("t", "p", ("health",), 5.0))
    failure = StepResult("scenario", ok=False, duration_seconds=6.0, reason=Reason.TIMEOUT, error="overran")
    sink.handle(
        ProbeResult(
            probe="p",
            target="t",
            scenario="s",
            started_at=0.0,
            duration_seconds=6.0,
            steps=(failure,),
            timeout_seconds=5.0,
        )
    )
    assert (
        registry.get_sample_value(
            "synthetic_probe_step_failures_total",
            {"target": "t", "probe": "p", "step": "scenario", "reason": "timeout"},
        )
        == 1.0
    )
    assert (
        registry.get_sample_value(
            "synthetic_probe_step_duration_seconds_count", {"target": "t", "probe": "p", "step": "scenario"}
        )
        == 1.0
    )
    assert sink.render() == generate_latest(registry)


def test_removed_probe_has_no_series_and_late_results_do_not_bring_them_back() -> None:
    registry = CollectorRegistry(auto_describe=True)
    sink = MetricsSink(registry, BUCKETS)
    sink.register(ProbeSeries("t", "gone", STEPS, 5.0))
    sink.unregister("gone")
    sink.handle(random_result(random.Random(0), "t", "gone"))  # a run that was in flight during the reload
    sink.handle_event(JobEvent("gone", "missed"))
    sink.handle_event(ScheduleLag("gone", 0.1))
    assert 'probe="gone"' not in sink.render().decode()


def test_large_counts_use_the_libraries_number_format() -> None:
    registry = CollectorRegistry(auto_describe=True)
    sink = MetricsSink(registry, BUCKETS)
    sink.register(ProbeSeries("t", "p", STEPS, 5.0))
    for _ in range(3):
        sink.handle_event(JobEvent("p", "missed"))
    sink.series._probes["p"].jobs["missed"] = 1_234_567  # as after a long, troubled life
    sink.series._probes["p"].render(FAMILIES.index(JOB))
    assert b'synthetic_monitor_job_events_total{event="missed",probe="p"} 1.234567e+06' in sink.render()
    assert sink.render() == generate_latest(registry)


def _read_all(sock: socket.socket, size: int, into: list[bytes]) -> None:
    got = 0
    while got < size:
        chunk = sock.recv(65536)
        if not chunk:
            break
        into.append(chunk)
        got += len(chunk)


@pytest.mark.parametrize("batch", [1, 3, IOV_BATCH])
def test_pieces_arrive_whole_and_in_order_through_partial_gather_writes(batch: int, monkeypatch: Any) -> None:
    """A 20 MB /metrics is written in pieces, never joined: every byte must still arrive,
    in order, when the kernel takes only part of a gather write (a small send buffer)."""
    monkeypatch.setattr(server, "IOV_BATCH", batch)
    rng = random.Random(batch)
    pieces = [bytes([i % 251]) * rng.randrange(0, 70_000) for i in range(200)]
    expected = b"".join(pieces)
    left, right = socket.socketpair()
    left.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
    received: list[bytes] = []
    reader = threading.Thread(target=_read_all, args=(right, len(expected), received))
    reader.start()
    try:
        server.send_pieces(left, pieces)
        reader.join(timeout=30)
    finally:
        left.close()
        right.close()
    assert b"".join(received) == expected


def test_pieces_without_gather_writes_are_sent_joined_in_batches(monkeypatch: Any) -> None:
    """TLS sockets have no sendmsg: the pieces go out joined per ~JOIN_BYTES, same bytes."""
    monkeypatch.setattr(server, "JOIN_BYTES", 1000)
    sent: list[bytes] = []

    class NoGather:
        def sendall(self, data: bytes) -> None:
            sent.append(data)

    pieces = [b"a" * 300, b"", b"b" * 900, b"c" * 10, b"d" * 2500]
    server.send_pieces(NoGather(), pieces)  # type: ignore[arg-type]
    assert b"".join(sent) == b"".join(pieces)
    assert [len(s) for s in sent] == [1200, 2510]  # batches of >= JOIN_BYTES, not one join


def test_a_scrape_over_http_is_the_rendered_exposition() -> None:
    """The body the server writes from the pieces is byte for byte `Exposition.render()`."""
    exposition = Exposition()
    sink = MetricsSink(exposition, BUCKETS)
    for i in range(50):
        sink.register(ProbeSeries("t", f"p{i}", STEPS, 5.0, "mlflow_read"))
    endpoints = Endpoints(
        metrics=exposition.chunks,
        healthy=lambda: (True, "ok"),
        ready=lambda: (True, "ok"),
        status=dict,
        reload=lambda: (True, "ok"),
    )
    httpd = MonitorHTTPServer(("127.0.0.1", 0), endpoints)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        conn = http.client.HTTPConnection("127.0.0.1", httpd.server_address[1], timeout=10)
        for _ in range(2):  # twice on one keep-alive connection: the framing holds
            conn.request("GET", "/metrics")
            response = conn.getresponse()
            body = response.read()
            assert response.status == 200
            assert int(response.headers["Content-Length"]) == len(body)
            assert body == exposition.render()
        conn.close()
    finally:
        httpd.shutdown()
        httpd.server_close()
