"""The daemon's quorum before a page: fresh votes, the gate between engine and receivers, real peers."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import socket
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from monitor.alerting.alerts import PROBE_FAILING, Alert
from monitor.alerting.peers import PeerAnswer, PeerClient, PeerMetrics, peer_urls
from monitor.alerting.quorum import DECIDE_SLICE, PROBE_FAILING_ONE_LOCATION, QuorumGate, Votes, tally, vote_of
from monitor.config import PeersConfig
from monitor.probes.mlflow.alerts import WORKER_FAILURE
from monitor.web.verdicts import COLUMNS

PEER = "http://127.0.0.1:1"


def verdicts(
    location: str | None,
    ok: bool | None,
    *,
    age: float = 0.5,
    healthy: bool = True,
    probe: str = "mlflow_read",
    target: str = "mlflow",
    reasons: tuple[str, ...] = ("connection_refused",),
    component: str = "server",
) -> dict[str, Any]:
    """A peer's /api/v1/verdicts document with one probe (interval 2 s, timeout 1 s)."""
    probes: dict[str, Any] = {}
    if ok is not None:
        failed = (reasons[0], list(reasons), component) if not ok else (None, [], None)
        probes[probe] = [target, ok, 1000.0 - age, 2.0, 1.0, *failed]
    return {"location": location, "healthy": healthy, "now": 1000.0, "columns": list(COLUMNS), "probes": probes}


def answers(*docs: dict[str, Any] | None) -> list[PeerAnswer]:
    return [
        PeerAnswer(f"http://p{i}", doc, None if doc is not None else "timeout", "" if doc else "ReadTimeout")
        for i, doc in enumerate(docs)
    ]


def test_quorum_counts_locations_not_replicas() -> None:
    same_place = tally(
        "in-cluster",
        answers(verdicts("in-cluster", False), verdicts("ingress", True)),
        PROBE_FAILING,
        "mlflow",
        "mlflow_read",
        since=5.0,
    )
    assert same_place.failing == {"in-cluster"} and not same_place.quorum(2)
    two = tally("in-cluster", answers(verdicts("ingress", False)), PROBE_FAILING, "mlflow", "mlflow_read", 5.0)
    assert two.failing == {"in-cluster", "ingress"} and two.quorum(2)
    # A quorum of 3 with only 2 locations reporting: all that report must fail, and do.
    assert tally("a", answers(verdicts("b", False)), PROBE_FAILING, "mlflow", "mlflow_read", 5.0).quorum(3)
    assert not tally("a", answers(verdicts("b", True)), PROBE_FAILING, "mlflow", "mlflow_read", 5.0).quorum(3)


def test_only_fresh_verdicts_of_healthy_peers_are_votes() -> None:
    def vote(doc: dict[str, Any], alertname: str = PROBE_FAILING, since: float = 5.0) -> str:
        return vote_of(doc, alertname, "mlflow", "mlflow_read", since)[1]

    assert vote(verdicts("b", True, age=1.0)) == "passing"
    assert vote(verdicts("b", False, age=4.9)) == "failing"
    # Older than two intervals plus the timeout (2 x 2 s + 1 s): a wedged peer's old "ok".
    assert vote(verdicts("b", True, age=5.1)).startswith("stale")
    assert vote(verdicts("b", False, age=5.1)).startswith("stale")
    # A peer that says it is unhealthy (scheduler stale, alert engine down) has no vote.
    assert vote(verdicts("b", True, healthy=False)) == "peer unhealthy"
    # The peer's own connection pool failed: no evidence about the target.
    assert vote(verdicts("b", False, component="monitor")) == "monitor fault"
    # A pass from before our failure began is no vote yet: its next run decides.
    assert vote(verdicts("b", True, age=3.0), since=2.0) == "waiting"
    # Worker failure needs a peer that sees worker failures, not just any failure.
    assert vote(verdicts("b", False), WORKER_FAILURE) == "passing"  # reports, sees no worker failure
    assert vote(verdicts("b", False, reasons=("worker_failure",)), WORKER_FAILURE) == "failing"
    assert vote(verdicts("b", None)) == "no result"


def test_a_silent_peer_is_unknown_and_named() -> None:
    votes = tally(
        "in-cluster",
        answers(None, verdicts("ingress", None), verdicts("eu", True, target="other")),
        PROBE_FAILING,
        "mlflow",
        "mlflow_read",
        5.0,
    )
    assert votes.failing == {"in-cluster"} and votes.passing == frozenset()
    assert len(votes.unknown) == 3 and "http://p0 (timeout: ReadTimeout)" in votes.unknown
    assert votes.quorum(2)  # fewer locations report than the quorum: all of them (here: us) decide
    assert "no vote from 3 peer(s)" in votes.describe(2)


def _alert(
    name: str = PROBE_FAILING,
    resolved: bool = False,
    receivers: tuple[str, ...] | None = None,
    starts_at: float | None = None,
) -> Alert:
    labels = {
        "alertname": name,
        "target": "mlflow",
        "probe": "mlflow_read",
        "severity": "critical",
        "location": "ingress",
    }
    annotations = {
        "summary": "s",
        "description": "Probe failed 2 runs in a row.",
        "runbook_url": f"https://runbooks.example.internal/synthetic-monitor#{name.lower()}",
    }
    start = starts_at if starts_at is not None else time.time() - 1.0
    return Alert(
        labels,
        annotations,
        start,
        ends_at=start + 300 if not resolved else start + 60,
        resolved=resolved,
        receivers=receivers,
    )


class Peers:
    """What the gate's fetch returns; the test flips it between ticks and counts the polls."""

    def __init__(self, *docs: dict[str, Any] | None) -> None:
        self.answers = answers(*docs)
        self.calls: list[list[str]] = []

    def set(self, *docs: dict[str, Any] | None) -> None:
        self.answers = answers(*docs)

    async def __call__(self, urls: list[str]) -> list[PeerAnswer]:
        self.calls.append(urls)
        return list(self.answers)


def make_gate(peers: Peers, **config: Any) -> tuple[QuorumGate, list[list[Alert]]]:
    gate = QuorumGate(PeersConfig(urls=[PEER], **config), "ingress", fetch=peers)
    gate.tick_seconds = 0.02
    return gate, []


async def until(check: Callable[[], Any], what: str, timeout: float = 5.0) -> Any:
    deadline = asyncio.get_running_loop().time() + timeout
    while not (value := check()):
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.01)
    return value


def flat(sent: list[list[Alert]]) -> list[Alert]:
    return [a for batch in sent for a in batch]


async def test_the_gate_pages_critical_on_quorum_and_warns_below_it() -> None:
    peers = Peers(verdicts("in-cluster", True))
    gate, sent = make_gate(peers)
    other = Alert({"alertname": "SyntheticProbeTimeout", "target": "mlflow", "probe": "mlflow_read"}, {}, 1000.0)
    assert gate.filter([_alert(), other], sent.append) == [other]  # only the page waits
    [[warning]] = await until(lambda: sent, "the warning")
    assert warning.name == PROBE_FAILING_ONE_LOCATION and warning.labels["severity"] == "warning"
    assert warning.labels["location"] == "ingress" and warning.receivers is None
    assert "fails from location ingress only" in warning.annotations["summary"]
    assert "passing from: in-cluster" in warning.annotations["description"]
    assert warning.annotations["runbook_url"].endswith("#syntheticprobefailingfromonelocation")

    # The other location starts failing: at the next tick the warning closes, the page opens.
    peers.set(verdicts("in-cluster", False))
    await until(lambda: len(sent) == 2, "the switch")
    closed, page = sent[1]
    assert closed.name == PROBE_FAILING_ONE_LOCATION and closed.resolved and closed.receivers is None
    assert page.name == PROBE_FAILING and page.labels["severity"] == "critical" and not page.resolved
    assert page.starts_at > warning.starts_at  # the page starts at the quorum, so Alertmanager waits group_wait
    assert "Failing from location(s): in-cluster, ingress" in page.annotations["description"]

    # The other location recovers first: the page stays a page (no resolve plus a new warning).
    peers.set(verdicts("in-cluster", True, age=0.1))
    polls = len(peers.calls)
    await until(lambda: len(peers.calls) >= polls + 3, "three more ticks")
    assert len(sent) == 2

    [resolved] = gate.filter([_alert(resolved=True)], sent.append)
    assert resolved.name == PROBE_FAILING and resolved.resolved and resolved.starts_at == page.starts_at
    # the page as sent (its labels and description), not the incoming alert's own
    assert resolved.labels == page.labels and resolved.annotations == page.annotations
    await gate.close()


async def test_a_resolve_after_alertmanager_only_resends_reaches_every_receiver() -> None:
    """Issue 18: the gate copied the receivers of the last notice (a re-send to Alertmanager
    alone), so the webhook never got the resolve."""
    peers = Peers(verdicts("in-cluster", True))
    gate, sent = make_gate(peers)
    first = _alert()
    gate.filter([first], sent.append)
    await until(lambda: sent, "the warning")
    resend = gate.filter([_alert(receivers=("am",), starts_at=first.starts_at)], sent.append)
    assert [(a.name, a.receivers) for a in resend] == [(PROBE_FAILING_ONE_LOCATION, ("am",))]
    [resolved] = gate.filter([_alert(resolved=True, starts_at=first.starts_at)], sent.append)
    assert resolved.name == PROBE_FAILING_ONE_LOCATION and resolved.resolved and resolved.receivers is None
    await gate.close()


async def test_every_critical_alert_from_a_probe_is_gated() -> None:
    peers = Peers(verdicts("in-cluster", True))
    gate, sent = make_gate(peers)
    assert gate.filter([_alert(WORKER_FAILURE)], sent.append) == []
    [[warning]] = await until(lambda: sent, "the worker-failure verdict")
    assert warning.name == WORKER_FAILURE and warning.labels["severity"] == "warning"
    assert "from location ingress only" in warning.annotations["summary"]
    await gate.close()


async def test_one_poll_per_tick_for_a_thousand_alerts() -> None:
    peers = Peers(verdicts("in-cluster", False), verdicts("eu", False))
    gate, sent = make_gate(peers)
    alerts = [Alert({**_alert().labels, "probe": f"p{i}"}, {}, time.time() - 1, time.time() + 300) for i in range(1000)]
    gate.filter(alerts, sent.append)
    await until(lambda: len(flat(sent)) == 1000, "a verdict for every alert")
    assert len(peers.calls) == 1  # one request per peer for all of them, not one per alert
    await gate.close()


async def test_a_stale_pass_waits_for_the_peers_next_run_and_never_warns() -> None:
    """Issue 26: the sidecar's pass from before the outage made a warning."""
    peers = Peers(verdicts("sidecar", True, age=1.5))
    gate, sent = make_gate(peers)
    gate.filter([_alert(starts_at=time.time() - 0.5)], sent.append)
    await until(lambda: len(peers.calls) >= 3, "a few ticks")
    assert sent == []  # the pass predates our failure: no vote yet, nothing sent
    peers.set(verdicts("sidecar", False, age=0.1))
    [[page]] = await until(lambda: sent, "the page")
    assert page.name == PROBE_FAILING
    await gate.close()


async def test_a_resolve_before_the_verdict_sends_nothing() -> None:
    peers = Peers(verdicts("sidecar", True, age=1.5))
    gate, sent = make_gate(peers)
    alert = _alert(starts_at=time.time() - 0.5)
    gate.filter([alert], sent.append)
    assert gate.filter([_alert(resolved=True, starts_at=alert.starts_at)], sent.append) == []
    # Nothing is held any more, so nothing is left to decide: later ticks send nothing.
    assert gate.held() == {}
    polls = len(peers.calls)
    other = _alert(starts_at=time.time())
    other = dataclasses.replace(other, labels={**other.labels, "probe": "other"})
    gate.filter([other], sent.append)  # a second incident keeps the gate ticking
    await until(lambda: len(peers.calls) >= polls + 3, "three more ticks")
    assert not [a for batch in sent for a in batch if a.labels.get("probe") != "other"]
    await gate.close()


async def test_the_variant_sent_survives_a_restart() -> None:
    peers = Peers(verdicts("in-cluster", True))
    gate, sent = make_gate(peers)
    first = _alert()
    gate.filter([first], sent.append)
    await until(lambda: sent, "the warning")
    saved = json.loads(json.dumps(gate.snapshot()))
    await gate.close()

    restarted, later = make_gate(Peers(verdicts("in-cluster", True)))
    restarted.restore(saved)
    # The engine restores its alert and re-sends it to Alertmanager: under the warning's name.
    [resent] = restarted.filter([_alert(receivers=("am",), starts_at=first.starts_at)], later.append)
    assert resent.name == PROBE_FAILING_ONE_LOCATION and resent.starts_at == sent[0][0].starts_at
    [resolved] = restarted.filter([_alert(resolved=True, starts_at=first.starts_at)], later.append)
    assert resolved.name == PROBE_FAILING_ONE_LOCATION and resolved.resolved
    await restarted.close()
    with pytest.raises(ValueError):
        restarted.restore({"not": "a list"})


@pytest.fixture
def peer_servers() -> Iterator[dict[str, str]]:
    """A peer that answers, one that answers 401, one that never answers, and a closed port."""
    document = json.dumps(verdicts("in-cluster", False)).encode()

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body, code = (document, 200) if self.server.server_address[1] == answering else (b"no\n", 401)
            self.send_response(code)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    answering = server.server_address[1]
    refusing = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    for s in (server, refusing):
        threading.Thread(target=s.serve_forever, daemon=True).start()
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(8)
    closed = socket.socket()
    closed.bind(("127.0.0.1", 0))
    closed_port = closed.getsockname()[1]
    closed.close()
    try:
        yield {
            "answers": f"http://127.0.0.1:{answering}",
            "unauthorized": f"http://127.0.0.1:{refusing.server_address[1]}",
            "silent": f"http://127.0.0.1:{silent.getsockname()[1]}",
            "closed": f"http://127.0.0.1:{closed_port}",
        }
    finally:
        for s in (server, refusing):
            s.shutdown()
            s.server_close()
        silent.close()


async def test_real_peers_over_loopback_with_a_short_timeout(peer_servers: dict[str, str]) -> None:
    registry = CollectorRegistry()
    client = PeerClient(PeersConfig(urls=list(peer_servers.values()), timeout=0.5), PeerMetrics(registry))
    loop = asyncio.get_running_loop()
    started = loop.time()
    got = {a.url: a for a in await client.ask(list(peer_servers.values()))}
    elapsed = loop.time() - started
    await client.aclose()
    assert got[peer_servers["answers"]].doc is not None
    assert got[peer_servers["unauthorized"]].error == "unauthorized"
    assert got[peer_servers["silent"]].error == "timeout" and got[peer_servers["closed"]].error == "connection"
    assert elapsed < 5.0  # bounded by the timeout, not by the silent peer
    for name, reason in (("unauthorized", "unauthorized"), ("silent", "timeout"), ("closed", "connection")):
        value = registry.get_sample_value(
            "synthetic_monitor_peer_errors_total", {"peer": peer_servers[name], "reason": reason}
        )
        assert value == 1.0, (name, value)
    votes = tally("ingress", got.values(), PROBE_FAILING, "mlflow", "mlflow_read", 5.0)
    assert votes.failing == {"ingress", "in-cluster"} and len(votes.unknown) == 3
    assert isinstance(votes, Votes)


async def test_a_headless_service_name_resolves_to_its_addresses() -> None:
    urls = await peer_urls(PeersConfig(service="localhost:9356", urls=["http://10.0.0.9:9356"]))
    assert urls[0] == "http://10.0.0.9:9356"
    assert "http://127.0.0.1:9356" in urls[1:]
    assert await peer_urls(PeersConfig(service="no-such-host.invalid:9356")) == []


def test_the_verdict_document_round_trips_and_reuses_rows() -> None:
    from monitor.diagnosis import Diagnosis
    from monitor.results import ProbeResult, Reason, StepResult
    from monitor.web.verdicts import VerdictDocument

    now = [1000.0]
    document = VerdictDocument(clock=lambda: now[0])
    refused = StepResult("health", False, 0.001, Reason.UNREACHABLE, "refused")
    failing = ProbeResult(
        "mlflow_read",
        "mlflow",
        "mlflow_read",
        998.0,
        0.001,
        (refused,),
        1.0,
        diagnosis=Diagnosis("mlflow_server", "down"),
    )
    body = document.render("in-cluster", True, [("mlflow_read", failing, 2.0)])
    doc = json.loads(body)
    assert vote_of(doc, PROBE_FAILING, "mlflow", "mlflow_read", since=5.0) == ("in-cluster", "failing")
    now[0] = 1004.0  # 6 s old: more than two intervals (4 s) plus the timeout (1 s)
    later = json.loads(document.render("in-cluster", True, [("mlflow_read", failing, 2.0)]))
    assert vote_of(later, PROBE_FAILING, "mlflow", "mlflow_read", since=5.0)[1].startswith("stale")
    assert later["probes"] == doc["probes"]  # the row is encoded once per result
    assert len(body) < 250


async def test_a_thousand_held_alerts_are_decided_in_slices_that_let_the_loop_run() -> None:
    """A wide outage holds thousands of alerts: one pass over 3,000 held the event loop for
    40-130 ms, and probe runs due meanwhile started late. Each slice's decisions go out
    before the loop runs anything else, so a resolve never overtakes what it resolves."""
    ran_at: list[int] = []  # how many decisions had gone out when a probe run due meanwhile ran

    class PeersAndADueRun(Peers):
        async def __call__(self, urls: list[str]) -> list[PeerAnswer]:
            asyncio.get_running_loop().call_soon(lambda: ran_at.append(len(flat(sent))))
            return await super().__call__(urls)

    peers = PeersAndADueRun(verdicts("in-cluster", False))
    gate, sent = make_gate(peers)
    alerts = [Alert({**_alert().labels, "probe": f"p{i}"}, {}, time.time() - 1, time.time() + 300) for i in range(1000)]
    gate.filter(alerts, sent.append)
    await until(lambda: len(flat(sent)) == 1000, "a verdict for every alert")
    assert ran_at == [DECIDE_SLICE]  # after the first slice went out, not after the whole pass
    assert len(peers.calls) == 1 and len(sent) == 1000 // DECIDE_SLICE
    await gate.close()


async def test_the_gates_state_rows_are_reused_while_an_incident_is_unchanged() -> None:
    """The state writer encodes a row object once (monitor/alerting/state.py): in a wide
    outage the gate's 1,000 rows were rebuilt, so re-encoded, on every write."""
    peers = Peers(verdicts("in-cluster", False))
    gate, sent = make_gate(peers)
    try:
        alerts = [_alert(starts_at=1000.0 + i) for i in range(3)]
        alerts = [
            Alert({**a.labels, "probe": f"p{i}"}, a.annotations, a.starts_at, a.ends_at) for i, a in enumerate(alerts)
        ]
        gate.filter(alerts, sent.append)
        await until(lambda: len(flat(sent)) == 3, "a verdict for every alert")
        first, second = gate.snapshot(), gate.snapshot()
        assert len(first) == 3 and all(a is b for a, b in zip(first, second, strict=True))
        # p1's engine notice changes (a new incident start): its row is new, the others are the same objects
        again = alerts[1]
        gate.filter([Alert(again.labels, again.annotations, 2000.0, again.ends_at)], sent.append)
        await until(lambda: len(gate.snapshot()) == 3 and gate.snapshot()[1] is not second[1], "p1 decided again")
        third = gate.snapshot()
        assert [a is b for a, b in zip(second, third, strict=True)] == [True, False, True]
        assert third[1]["engine_starts_at"] == 2000.0
    finally:
        await gate.close()
