"""Quorum before a page: ask the peers what they see before a critical SyntheticProbeFailing.

A daemon alone cannot tell "the service is down" from "my own path to it is down". With
`peers` configured, a firing SyntheticProbeFailing is held back just long enough to ask
every peer's /status (short timeout, in a task: never on the probe path) for its latest
result of the same probe. At least `min_locations` failing locations (or all of them
when fewer report) page critical; fewer become the warning
SyntheticProbeFailingFromOneLocation, the alert name the Prometheus rules use for the
same case. A peer that does not answer, or has no result yet, is unknown: never a vote.

The verdict is asked again on every re-send, so an alert moves from warning to critical
(the warning is resolved, the critical fires) when a second location starts failing.
"""

from __future__ import annotations

import asyncio
import dataclasses
import socket
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import Any

import httpx
import structlog

from monitor.alerting.alerts import PROBE_FAILING, Alert
from monitor.config import PeersConfig

PROBE_FAILING_ONE_LOCATION = "SyntheticProbeFailingFromOneLocation"
UNNAMED = "(no location)"

Submit = Callable[[list[Alert]], None]


@dataclass(frozen=True)
class Votes:
    """What the locations said about one probe; `unknown` holds peers that gave no vote."""

    failing: frozenset[str]
    passing: frozenset[str]
    unknown: tuple[str, ...] = ()

    def quorum(self, min_locations: int) -> bool:
        reporting = len(self.failing | self.passing)
        return len(self.failing) >= min(min_locations, max(reporting, 1))

    def describe(self, min_locations: int) -> str:
        text = f"Failing from location(s): {', '.join(sorted(self.failing)) or 'none'}"
        passing = sorted(self.passing - self.failing)
        if passing:
            text += f"; passing from: {', '.join(passing)}"
        if self.unknown:
            text += f"; no answer from {len(self.unknown)} peer(s): {', '.join(self.unknown)}"
        return text + f" (quorum: {min_locations} location(s), or all that report)."


def vote_of(status: Any, target: str, probe: str) -> tuple[str, bool] | None:
    """(location, failing) from a peer's /status document, or None when it cannot tell."""
    if not isinstance(status, dict):
        return None
    location = status.get("location") or UNNAMED
    for entry in status.get("probes") or []:
        if not isinstance(entry, dict) or entry.get("name") != probe:
            continue
        last = entry.get("last")
        if not isinstance(last, dict) or last.get("target") != target or not isinstance(last.get("ok"), bool):
            return None
        return str(location), not last["ok"]
    return None  # the peer does not run this probe (another shard) or has not run it yet


def tally(own_location: str | None, answers: Iterable[tuple[str, Any]], target: str, probe: str) -> Votes:
    """Our own location is failing (that is why we ask); each answer adds a vote or an unknown."""
    failing = {own_location or UNNAMED}
    passing: set[str] = set()
    unknown: list[str] = []
    for peer, status in answers:
        vote = vote_of(status, target, probe)
        if vote is None:
            unknown.append(peer)
        elif vote[1]:
            failing.add(vote[0])
        else:
            passing.add(vote[0])
    return Votes(frozenset(failing), frozenset(passing), tuple(unknown))


async def peer_urls(peers: PeersConfig) -> list[str]:
    """The configured URLs plus every address of the headless Service (its pods)."""
    urls = list(peers.urls)
    if peers.service:
        host, _, port = peers.service.rpartition(":")
        try:
            infos = await asyncio.get_running_loop().getaddrinfo(host, int(port), type=socket.SOCK_STREAM)
        except OSError:
            infos = []
        for address in sorted({str(info[4][0]) for info in infos}):
            shown = f"[{address}]" if ":" in address else address
            urls.append(f"{peers.scheme}://{shown}:{port}")
    return urls


async def ask_peers(client: httpx.AsyncClient, urls: list[str], timeout: float) -> list[tuple[str, Any]]:
    """Every peer's /status, None for a peer that did not answer in time with JSON."""

    async def one(url: str) -> tuple[str, Any]:
        try:
            response = await client.get(f"{url}/status", timeout=timeout)
            return url, response.json() if response.status_code == 200 else None
        except (httpx.HTTPError, ValueError):
            return url, None

    return list(await asyncio.gather(*(one(u) for u in urls)))


class QuorumGate:
    """Sits between the alert engine and the receivers; only SyntheticProbeFailing waits."""

    def __init__(
        self,
        peers: PeersConfig,
        location: str | None,
        *,
        logger: Any = None,
        fetch: Callable[[list[str], float], Awaitable[list[tuple[str, Any]]]] | None = None,
    ) -> None:
        self.peers = peers
        self.location = location
        self._log = logger if logger is not None else structlog.get_logger("monitor.alerting.quorum")
        self._client: httpx.AsyncClient | None = None
        self._fetch = fetch
        self._sent: dict[tuple[str, str], Alert] = {}  # what receivers last got per (target, probe)
        self._generation: dict[tuple[str, str], int] = {}
        self._tasks: set[asyncio.Task[None]] = set()

    def reconfigure(self, peers: PeersConfig, location: str | None) -> None:
        self.peers, self.location = peers, location

    def verdict(self, target: str, probe: str) -> str:
        """The quorum state of a firing SyntheticProbeFailing, for the status page."""
        sent = self._sent.get((target, probe))
        if sent is None:
            return "asking peers"
        return "quorum reached" if sent.name == PROBE_FAILING else "below quorum (warning)"

    def filter(self, alerts: list[Alert], submit: Submit) -> list[Alert]:
        """What may go out now; SyntheticProbeFailing goes out later, through `submit`."""
        now: list[Alert] = []
        for alert in alerts:
            if alert.name != PROBE_FAILING:
                now.append(alert)
                continue
            key = (alert.labels.get("target", ""), alert.labels.get("probe", ""))
            generation = self._generation[key] = self._generation.get(key, 0) + 1
            if alert.resolved:
                # Resolve whichever variant the receivers have; no need to ask anyone.
                previous = self._sent.pop(key, None)
                now.append(_variant_of(alert, previous) if previous is not None else alert)
                continue
            try:
                loop = asyncio.get_running_loop()
            except RuntimeError:  # no loop to ask from: never lose the page
                now.append(alert)
                continue
            task = loop.create_task(self._decide(alert, key, generation, submit))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        return now

    async def _decide(self, alert: Alert, key: tuple[str, str], generation: int, submit: Submit) -> None:
        try:
            urls = await peer_urls(self.peers)
            answers = await (self._fetch or self._ask)(urls, self.peers.timeout)
            votes = tally(self.location, answers, *key)
        except Exception:  # never lose the alert: unknown peers, our verdict alone
            self._log.exception("quorum_failed", target=key[0], probe=key[1])
            votes = Votes(frozenset({self.location or UNNAMED}), frozenset())
        if self._generation.get(key) != generation:
            return  # resolved (or superseded) while we asked
        critical = votes.quorum(self.peers.min_locations)
        out = (
            _critical(alert, votes, self.peers.min_locations)
            if critical
            else _warning(alert, votes, self.peers.min_locations)
        )
        batch: list[Alert] = []
        previous = self._sent.get(key)
        if previous is not None and previous.name == out.name:
            out = dataclasses.replace(out, starts_at=previous.starts_at)
        elif previous is not None:
            batch.append(_resolve(previous))
            # The page starts when the quorum is reached, not at this location's first
            # failure: Alertmanager then waits group_wait for the other locations' copies
            # instead of flushing an "old" alert at once, alone.
            out = dataclasses.replace(out, starts_at=max(time.time(), out.starts_at))
        self._sent[key] = out
        batch.append(out)
        if previous is None or previous.name != out.name:
            self._log.warning(
                "quorum_verdict",
                target=key[0],
                probe=key[1],
                alertname=out.name,
                failing=sorted(votes.failing),
                passing=sorted(votes.passing),
                unknown=list(votes.unknown),
            )
        submit(batch)

    async def _ask(self, urls: list[str], timeout: float) -> list[tuple[str, Any]]:
        if self._client is None:
            self._client = httpx.AsyncClient(follow_redirects=False)
        return await ask_peers(self._client, urls, timeout)

    async def close(self) -> None:
        if self._tasks:
            await asyncio.wait(set(self._tasks), timeout=self.peers.timeout + 1.0)
        if self._client is not None:
            await self._client.aclose()
            self._client = None


def _critical(alert: Alert, votes: Votes, min_locations: int) -> Alert:
    annotations = dict(alert.annotations)
    annotations["description"] = f"{annotations.get('description', '')} {votes.describe(min_locations)}".strip()
    return dataclasses.replace(alert, annotations=annotations)


def _warning(alert: Alert, votes: Votes, min_locations: int) -> Alert:
    labels = {**alert.labels, "alertname": PROBE_FAILING_ONE_LOCATION, "severity": "warning"}
    annotations = dict(alert.annotations)
    where = ", ".join(sorted(votes.failing))
    annotations["summary"] = f"Probe {labels.get('probe')} on {labels.get('target')} fails from location {where} only"
    annotations["description"] = (
        f"{annotations.get('description', '')} Below the quorum, so no page: likely this location's own path,"
        f" not the service. {votes.describe(min_locations)}"
    ).strip()
    if "runbook_url" in annotations:
        annotations["runbook_url"] = (
            annotations["runbook_url"].rsplit("#", 1)[0] + "#" + PROBE_FAILING_ONE_LOCATION.lower()
        )
    return dataclasses.replace(alert, labels=labels, annotations=annotations)


def _variant_of(resolved: Alert, sent: Alert) -> Alert:
    """The resolve notice for the variant the receivers actually hold."""
    return dataclasses.replace(sent, resolved=True, ends_at=resolved.ends_at)


def _resolve(previous: Alert) -> Alert:
    """Close the other variant when the verdict changes (warning -> critical or back)."""
    return dataclasses.replace(previous, resolved=True, ends_at=max(time.time(), previous.starts_at))
