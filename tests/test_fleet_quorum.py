"""The daemon's quorum before a page: votes, the gate between engine and receivers, real peers."""

from __future__ import annotations

import asyncio
import json
import socket
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import pytest

from monitor.alerting.alerts import PROBE_FAILING, Alert
from monitor.alerting.quorum import PROBE_FAILING_ONE_LOCATION, QuorumGate, Votes, ask_peers, peer_urls, tally
from monitor.config import PeersConfig


def status(location: str | None, ok: bool | None, probe: str = "mlflow_read", target: str = "mlflow") -> dict[str, Any]:
    last = None if ok is None else {"name": probe, "target": target, "ok": ok}
    return {"location": location, "probes": [{"name": probe, "last": last}]}


def test_quorum_counts_locations_not_replicas() -> None:
    same_place = tally(
        "in-cluster", [("p1", status("in-cluster", False)), ("p2", status("ingress", True))], "mlflow", "mlflow_read"
    )
    assert same_place.failing == {"in-cluster"} and not same_place.quorum(2)
    two = tally("in-cluster", [("p1", status("ingress", False))], "mlflow", "mlflow_read")
    assert two.failing == {"in-cluster", "ingress"} and two.quorum(2)
    # A quorum of 3 with only 2 locations reporting: all that report must fail, and do.
    assert tally("a", [("p1", status("b", False))], "mlflow", "mlflow_read").quorum(3)
    assert not tally("a", [("p1", status("b", True))], "mlflow", "mlflow_read").quorum(3)


def test_a_silent_peer_is_unknown_never_a_vote() -> None:
    votes = tally(
        "in-cluster",
        [
            ("http://p1", None),
            ("http://p2", status("ingress", None)),
            ("http://p3", status("eu", True, target="other")),
        ],
        "mlflow",
        "mlflow_read",
    )
    assert votes.failing == {"in-cluster"} and votes.passing == frozenset()
    assert votes.unknown == ("http://p1", "http://p2", "http://p3")
    # Fewer locations report than the quorum: all of them (here: us) decide.
    assert votes.quorum(2)
    assert "no answer from 3 peer(s)" in votes.describe(2)


def _alert(resolved: bool = False) -> Alert:
    labels = {
        "alertname": PROBE_FAILING,
        "target": "mlflow",
        "probe": "mlflow_read",
        "severity": "critical",
        "location": "ingress",
    }
    annotations = {
        "summary": "s",
        "description": "Probe failed 2 runs in a row.",
        "runbook_url": "https://runbooks.example.internal/synthetic-monitor#syntheticprobefailing",
    }
    return Alert(labels, annotations, starts_at=1000.0, ends_at=1240.0 if not resolved else 1300.0, resolved=resolved)


class Peers:
    """What the gate's fetch returns; the test flips it between calls."""

    def __init__(self) -> None:
        self.answers: list[tuple[str, Any]] = []

    async def __call__(self, urls: list[str], timeout: float) -> list[tuple[str, Any]]:
        return list(self.answers)


async def _settle(gate: QuorumGate) -> None:
    while gate._tasks:
        await asyncio.wait(set(gate._tasks))


async def test_the_gate_pages_critical_on_quorum_and_warns_below_it() -> None:
    peers = Peers()
    gate = QuorumGate(PeersConfig(urls=["http://127.0.0.1:1"]), "ingress", fetch=peers)
    sent: list[list[Alert]] = []
    other = Alert({"alertname": "SyntheticProbeTimeout", "target": "mlflow", "probe": "mlflow_read"}, {}, 1000.0)

    peers.answers = [("http://127.0.0.1:1", status("in-cluster", True))]
    assert gate.filter([_alert(), other], sent.append) == [other]  # only the page waits
    await _settle(gate)
    [[warning]] = sent
    assert warning.name == PROBE_FAILING_ONE_LOCATION and warning.labels["severity"] == "warning"
    assert warning.labels["location"] == "ingress"
    assert "fails from location ingress only" in warning.annotations["summary"]
    assert "passing from: in-cluster" in warning.annotations["description"]
    assert warning.annotations["runbook_url"].endswith("#syntheticprobefailingfromonelocation")

    # A re-send after the other location started failing: the warning closes, the page opens.
    peers.answers = [("http://127.0.0.1:1", status("in-cluster", False))]
    gate.filter([_alert()], sent.append)
    await _settle(gate)
    closed, page = sent[1]
    assert closed.name == PROBE_FAILING_ONE_LOCATION and closed.resolved
    assert page.name == PROBE_FAILING and page.labels["severity"] == "critical" and not page.resolved
    assert page.starts_at > warning.starts_at  # the page starts at the quorum, so Alertmanager waits group_wait
    assert "Failing from location(s): in-cluster, ingress" in page.annotations["description"]

    # The resolve goes out at once, for the variant the receivers hold: the page as sent
    # (its description and start), not the incoming alert's own.
    [resolved] = gate.filter([_alert(resolved=True)], sent.append)
    assert resolved.name == PROBE_FAILING and resolved.resolved
    assert resolved.labels == page.labels and resolved.starts_at == page.starts_at
    assert resolved.annotations == page.annotations != _alert().annotations
    await gate.close()


async def test_the_resolve_of_a_warning_closes_the_warning_not_a_page() -> None:
    peers = Peers()
    gate = QuorumGate(PeersConfig(urls=["http://127.0.0.1:1"]), "ingress", fetch=peers)
    sent: list[list[Alert]] = []
    peers.answers = [("http://127.0.0.1:1", status("in-cluster", True))]
    gate.filter([_alert()], sent.append)
    await _settle(gate)
    [[warning]] = sent
    [resolved] = gate.filter([_alert(resolved=True)], sent.append)
    assert resolved.name == PROBE_FAILING_ONE_LOCATION and resolved.resolved
    assert resolved.labels == warning.labels and resolved.labels["severity"] == "warning"
    await gate.close()


async def test_a_resolve_while_peers_are_asked_wins() -> None:
    started = asyncio.Event()
    release = asyncio.Event()

    async def slow(urls: list[str], timeout: float) -> list[tuple[str, Any]]:
        started.set()
        await release.wait()
        return []

    gate = QuorumGate(PeersConfig(urls=["http://127.0.0.1:1"]), "ingress", fetch=slow)
    sent: list[list[Alert]] = []
    gate.filter([_alert()], sent.append)
    await started.wait()
    assert gate.filter([_alert(resolved=True)], sent.append)[0].resolved
    release.set()
    await _settle(gate)
    assert sent == []  # the stale verdict is dropped, nothing fires after the resolve
    await gate.close()


@pytest.fixture
def peer_servers() -> Iterator[dict[str, str]]:
    """A peer that answers, one that accepts and never answers, and a closed port."""
    document = json.dumps(status("in-cluster", False)).encode()

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(document)))
            self.end_headers()
            self.wfile.write(document)

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(8)
    closed = socket.socket()
    closed.bind(("127.0.0.1", 0))
    closed_port = closed.getsockname()[1]
    closed.close()
    try:
        yield {
            "answers": f"http://127.0.0.1:{server.server_address[1]}",
            "silent": f"http://127.0.0.1:{silent.getsockname()[1]}",
            "closed": f"http://127.0.0.1:{closed_port}",
        }
    finally:
        server.shutdown()
        server.server_close()
        silent.close()


async def test_real_peers_over_loopback_with_a_short_timeout(peer_servers: dict[str, str]) -> None:
    urls = [peer_servers["answers"], peer_servers["silent"], peer_servers["closed"]]
    loop = asyncio.get_running_loop()
    async with httpx.AsyncClient() as client:
        started = loop.time()
        answers = dict(await ask_peers(client, urls, timeout=0.5))
        elapsed = loop.time() - started
    assert answers[peer_servers["answers"]]["location"] == "in-cluster"
    assert answers[peer_servers["silent"]] is None and answers[peer_servers["closed"]] is None
    assert elapsed < 5.0  # bounded by the timeout, not by the silent peer
    votes = tally("ingress", answers.items(), "mlflow", "mlflow_read")
    assert votes == Votes(
        frozenset({"ingress", "in-cluster"}), frozenset(), (peer_servers["silent"], peer_servers["closed"])
    )


async def test_a_headless_service_name_resolves_to_its_addresses() -> None:
    urls = await peer_urls(PeersConfig(service="localhost:9356", urls=["http://10.0.0.9:9356"]))
    assert urls[0] == "http://10.0.0.9:9356"
    assert "http://127.0.0.1:9356" in urls[1:]
    assert await peer_urls(PeersConfig(service="no-such-host.invalid:9356")) == []
