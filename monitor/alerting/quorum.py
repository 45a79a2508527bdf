"""Quorum before a page: every critical alert derived from a probe waits for the peers' votes.

A daemon alone cannot tell "the service is down" from "my own path to it is down". With
`peers` configured, the critical alerts the engine derives from a probe
(SyntheticProbeFailing, and every alert a kind declares that is critical for this
run, each confirmed by the reason the kind names) are held back until the
peers' verdicts decide: at least `min_locations` failing locations (or all of them when
fewer report) page critical; fewer send the warning variant that names the one location
(SyntheticProbeFailingFromOneLocation for SyntheticProbeFailing, the same name with
`severity: warning` for the others), as the Prometheus rules do.

How the peers are asked: once per tick (`TICK_SECONDS`), one request per peer for all
alerts together (alerting/peers.py), and only while the gate holds an alert. Votes are
fresh only (`vote_of`): a peer verdict older than two of its intervals plus its timeout,
from a peer that reports itself unhealthy, or a monitor fault is unknown, never a vote;
a passing verdict from a run that started before our failure is no vote yet (the gate
waits for the peer's next run, at most those two intervals).

What the receivers hold is the gate's to remember: the variant sent per alert (persisted
in the state file through `snapshot`/`restore`). A re-send carries that variant, a switch
resolves it and fires the other one to every receiver (warning to critical only: a page
stays a page until this location's alert resolves), and the engine's resolve is turned
into the resolve of that variant for every receiver the engine addresses, so a webhook
gets exactly one firing and one resolved notice per variant, whatever happened between.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import time
from collections.abc import Awaitable, Callable, Generator, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import structlog

from monitor.alerting.alerts import PROBE_FAILING, Alert
from monitor.alerting.peers import PeerAnswer, PeerClient, PeerMetrics, peer_urls
from monitor.alerting.state import SNAPSHOT_SLICE, drain
from monitor.config import PeersConfig
from monitor.scenario.registry import KINDS

PROBE_FAILING_ONE_LOCATION = "SyntheticProbeFailingFromOneLocation"
UNNAMED = "(no location)"
TICK_SECONDS = 1.0
STATE_KEY = "quorum"

# Which failure of a peer's run confirms which alert (None: any failed run does): the
# generic SyntheticProbeFailing and every alert the kinds declare.
CONFIRMING_REASON: dict[str, str | None] = {
    PROBE_FAILING: None,
    **{alert.name: alert.confirming_reason for kind in KINDS.values() for alert in kind.alerts},
}

Submit = Callable[[list[Alert]], None]
Key = tuple[str, str, str, str]  # alertname (the engine's), target, probe, dependency
Fetch = Callable[[list[str]], Awaitable[list[PeerAnswer]]]


def gated(alert: Alert) -> bool:
    """A critical alert the engine derived from a probe: it needs the quorum."""
    return alert.labels.get("severity") == "critical" and alert.name in CONFIRMING_REASON


def key_of(alert: Alert) -> Key:
    labels = alert.labels
    return (alert.name, labels.get("target", ""), labels.get("probe", ""), labels.get("dependency", ""))


@dataclass(frozen=True)
class Votes:
    """What the locations said about one alert; `unknown` holds "peer (why)" for non-votes,
    `waiting` peers whose passing verdict predates our failure (their next run decides)."""

    failing: frozenset[str]
    passing: frozenset[str]
    unknown: tuple[str, ...] = ()
    waiting: tuple[str, ...] = ()

    def quorum(self, min_locations: int) -> bool:
        reporting = len(self.failing | self.passing)
        return len(self.failing) >= min(min_locations, max(reporting, 1))

    def describe(self, min_locations: int) -> str:
        text = f"Failing from location(s): {', '.join(sorted(self.failing)) or 'none'}"
        passing = sorted(self.passing - self.failing)
        if passing:
            text += f"; passing from: {', '.join(passing)}"
        if self.unknown:
            text += f"; no vote from {len(self.unknown)} peer(s): {', '.join(self.unknown)}"
        return text + f" (quorum: {min_locations} location(s), or all that report)."


def vote_of(doc: Any, alertname: str, target: str, probe: str, since: float) -> tuple[str, str]:
    """(location, "failing" | "passing" | "waiting" | why it is no vote) from one verdict document.

    `since` is how many seconds ago our own alert started; a verdict's age is measured
    against the peer's own clock (`now` in its document), so clock skew does not matter.
    """
    if not isinstance(doc, Mapping):
        return UNNAMED, "no answer"
    location = str(doc.get("location") or UNNAMED)
    if doc.get("healthy") is not True:
        return location, "peer unhealthy"
    verdict = _verdict(doc, probe)
    if verdict is None or verdict.get("target") != target or not isinstance(verdict.get("ok"), bool):
        return location, "no result"  # another shard's probe, or not run yet
    try:
        age = float(doc["now"]) - float(verdict["started_at"])
        fresh_for = 2 * float(verdict["interval"]) + float(verdict["timeout"])
    except (KeyError, TypeError, ValueError):
        return location, "bad verdict"
    if age > fresh_for:
        return location, f"stale ({age:.0f}s old)"
    if not verdict["ok"] and verdict.get("component") == "monitor":
        return location, "monitor fault"
    reason = CONFIRMING_REASON.get(alertname)
    if not verdict["ok"] and (reason is None or reason in (verdict.get("reasons") or ())):
        return location, "failing"
    # Passing, or failing otherwise (a killed server is "reset" from one location and
    # "refused" from the next): a location that does not see it, as in the rules. Only
    # from a run that started after our alert did: an older pass says nothing about it.
    return location, "passing" if age < since else "waiting"


def _verdict(doc: Mapping[str, Any], probe: str) -> dict[str, Any] | None:
    """One probe's row as a mapping, by the document's `columns`."""
    columns, rows = doc.get("columns"), doc.get("probes")
    if not isinstance(columns, list) or not isinstance(rows, Mapping):
        return None
    values = rows.get(probe)
    if not isinstance(values, list) or len(values) != len(columns):
        return None
    return dict(zip((str(c) for c in columns), values, strict=True))


def tally(
    own_location: str | None, answers: Iterable[PeerAnswer], alertname: str, target: str, probe: str, since: float
) -> Votes:
    """Our own location is failing (that is why we ask); each answer adds a vote or a non-vote."""
    failing = {own_location or UNNAMED}
    passing: set[str] = set()
    unknown: list[str] = []
    waiting: list[str] = []
    for answer in answers:
        if answer.doc is None:
            unknown.append(f"{answer.url} ({answer.error}: {answer.detail})")
            continue
        location, vote = vote_of(answer.doc, alertname, target, probe, since)
        if vote == "failing":
            failing.add(location)
        elif vote == "passing":
            passing.add(location)
        elif vote == "waiting":
            waiting.append(location)
        else:
            unknown.append(f"{location} ({vote})")
    return Votes(frozenset(failing), frozenset(passing), tuple(unknown), tuple(waiting))


@dataclass
class _Incident:
    alert: Alert  # the engine's latest firing notice (its own name and labels)
    sent: Alert | None = None  # the variant every receiver was given; None while undecided


# Held alerts decided between two returns to the event loop. 3,000 at once held it for
# 40-130 ms in the fleet's wide outage (tests/perf/wide_outage.py --fleet 3): probe runs
# due meanwhile started late.
DECIDE_SLICE = 200


class QuorumGate:
    """Sits between the alert engine and the receivers; gated alerts wait for the votes."""

    def __init__(
        self,
        peers: PeersConfig,
        location: str | None,
        *,
        logger: Any = None,
        fetch: Fetch | None = None,
        metrics: PeerMetrics | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.peers = peers
        self.location = location
        self.tick_seconds = TICK_SECONDS
        self.version = 0  # bumped on every change of what receivers hold (the state file)
        self.polls = 0
        self._log = logger if logger is not None else structlog.get_logger("monitor.alerting.quorum")
        self._client = PeerClient(peers, metrics, self._log)
        self._fetch = fetch
        self._clock = clock
        self._incidents: dict[Key, _Incident] = {}
        self._rows: dict[Key, tuple[float, Alert, dict[str, Any]]] = {}  # snapshot(): reused rows
        self._submit: Submit | None = None
        self._task: asyncio.Task[None] | None = None
        self._wake: asyncio.Event | None = None
        self._last_poll = float("-inf")

    def reconfigure(self, peers: PeersConfig, location: str | None) -> None:
        self._client.reconfigure(peers)
        self.peers, self.location = peers, location

    def verdict(self, target: str, probe: str) -> str:
        """The quorum state of the probe's gated alerts, in words, for the status page."""
        sent = [i.sent for (_, t, p, _), i in self._incidents.items() if (t, p) == (target, probe)]
        if not sent:
            return "no alert held"
        if any(alert is None for alert in sent):
            return "asking peers"
        if any(alert is not None and alert.labels.get("severity") == "critical" for alert in sent):
            return "quorum reached"
        return "below quorum (warning)"

    def held(self) -> dict[Key, str | None]:
        """Key -> the alert name receivers hold (None: still undecided); for tests and status."""
        return {k: (i.sent.name if i.sent is not None else None) for k, i in self._incidents.items()}

    # -- the engine side (synchronous, on the loop) -----------------------------------

    def filter(self, alerts: list[Alert], submit: Submit) -> list[Alert]:
        """What may go out now; decided alerts go out later, through `submit`."""
        self._submit = submit
        now: list[Alert] = []
        for alert in alerts:
            if not gated(alert):
                now.append(alert)
                continue
            key = key_of(alert)
            incident = self._incidents.get(key)
            if alert.resolved:
                if incident is None:
                    now.append(alert)  # no record of what was sent: resolve as the engine says
                    continue
                del self._incidents[key]
                self.version += 1
                if incident.sent is not None:  # never decided: nothing went out, nothing to resolve
                    now.append(
                        dataclasses.replace(
                            incident.sent, resolved=True, ends_at=alert.ends_at, receivers=alert.receivers
                        )
                    )
                continue
            if incident is not None and incident.sent is not None and alert.starts_at != incident.alert.starts_at:
                if alert.receivers is None:  # a new incident whose resolve we never saw: close the old one
                    now.append(_resolve(incident.sent, self._clock()))
                    incident = None
            if incident is None:
                self._incidents[key] = _Incident(dataclasses.replace(alert, receivers=None))
                self.version += 1
                self._poke()
                continue
            incident.alert = dataclasses.replace(alert, receivers=None)
            if incident.sent is not None:
                # A re-send (or a repeat) of what receivers hold, addressed as the engine says.
                now.append(dataclasses.replace(incident.sent, ends_at=alert.ends_at, receivers=alert.receivers))
        return now

    # -- persistence (the sink writes it with the engine's state) ---------------------

    def snapshot(self) -> list[dict[str, Any]]:
        """The state file's rows; an unchanged incident gives the very row object of the
        previous snapshot (the writer encodes it once, see `encode_state`): never mutate."""
        return drain(self.snapshot_steps())

    def snapshot_steps(self) -> Generator[None, None, list[dict[str, Any]]]:
        """`snapshot` in slices of SNAPSHOT_SLICE incidents (see AlertEngine.snapshot_steps)."""
        rows: dict[Key, tuple[float, Alert, dict[str, Any]]] = {}
        for index, (key, incident) in enumerate(sorted(self._incidents.items())):
            if index and index % SNAPSHOT_SLICE == 0:
                yield
            sent = incident.sent
            if sent is None:
                continue
            row = self._rows.get(key)
            if row is None or row[0] != incident.alert.starts_at or row[1] is not sent:
                data = {
                    "key": list(key),
                    "engine_starts_at": incident.alert.starts_at,
                    "labels": sent.labels,
                    "annotations": sent.annotations,
                    "starts_at": sent.starts_at,
                    "ends_at": sent.ends_at,
                }
                row = (incident.alert.starts_at, sent, data)
            rows[key] = row
        self._rows = rows
        return [row[2] for row in rows.values()]

    def restore(self, items: Any) -> None:
        """Load what receivers held before a restart; all or nothing."""
        if items is None:
            return
        if not isinstance(items, list):
            raise ValueError("quorum state is not a list")
        restored: dict[Key, _Incident] = {}
        for item in items:
            key = tuple(str(part) for part in item["key"])
            if len(key) != 4:
                raise ValueError(f"quorum key {key!r} is not (alertname, target, probe, dependency)")
            sent = Alert(
                labels={str(k): str(v) for k, v in dict(item["labels"]).items()},
                annotations={str(k): str(v) for k, v in dict(item["annotations"]).items()},
                starts_at=float(item["starts_at"]),
                ends_at=None if item.get("ends_at") is None else float(item["ends_at"]),
            )
            engine = dataclasses.replace(sent, starts_at=float(item["engine_starts_at"]))
            restored[(key[0], key[1], key[2], key[3])] = _Incident(engine, sent)
        self._incidents = restored
        self.version += 1
        if restored:
            self._poke()

    # -- the tick: one poll of every peer, then every held alert decided ---------------

    def _poke(self) -> None:
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return  # no loop yet (restore before start): the first filter call starts it
        if self._wake is None:
            self._wake = asyncio.Event()
        self._wake.set()
        if self._task is None or self._task.done():
            self._task = loop.create_task(self._run(), name="quorum-tick")

    async def _run(self) -> None:
        assert self._wake is not None
        while self._incidents:
            wait = self._last_poll + self.tick_seconds - time.monotonic()
            if wait > 0:
                await asyncio.sleep(wait)  # at most one poll per tick, however many alerts arrive
            self._wake.clear()
            self._last_poll = time.monotonic()
            try:
                await self.evaluate()
            except Exception:  # keep deciding; an alert is never lost to a bug here
                self._log.exception("quorum_failed")
            if self._incidents and not any(i.sent is None for i in self._incidents.values()):
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), self.tick_seconds)

    async def evaluate(self) -> None:
        """Ask every peer once and decide every held alert with those answers."""
        if not self._incidents or self._submit is None:
            return  # nothing held, or nowhere to send a decision yet (restored before the first alert)
        urls = await peer_urls(self.peers)
        answers = await (self._fetch or self._client.ask)(urls)
        self.polls += 1
        now = self._clock()
        batch: list[Alert] = []
        held = list(self._incidents.items())
        for done, (key, incident) in enumerate(held, 1):
            if self._incidents.get(key) is incident:
                batch.extend(self._decide(key, incident, answers, now))
            if done % DECIDE_SLICE == 0 and done < len(held):
                # A wide outage holds thousands: let due probe runs start. What was decided
                # goes out first, so a resolve arriving meanwhile follows what it resolves.
                if batch and self._submit is not None:
                    self._submit(batch)
                batch = []
                await asyncio.sleep(0)
        if batch and self._submit is not None:
            self._submit(batch)

    def _decide(self, key: Key, incident: _Incident, answers: list[PeerAnswer], now: float) -> list[Alert]:
        alert = incident.alert
        votes = tally(self.location, answers, key[0], key[1], key[2], now - alert.starts_at)
        if votes.waiting:
            return []  # a peer's next run decides: at most two of its intervals away
        critical = votes.quorum(self.peers.min_locations)
        out = (
            _critical(alert, votes, self.peers.min_locations)
            if critical
            else _warning(alert, votes, self.peers.min_locations)
        )
        previous = incident.sent
        if previous is not None and _variant(previous) == _variant(out):
            return []
        if previous is not None and previous.labels.get("severity") == "critical":
            # Never back from a page to a warning within one incident: when the service
            # recovers, one location always sees it first, and a critical -> warning
            # switch would be a resolve plus a new warning for the same outage.
            return []
        batch: list[Alert] = []
        if previous is not None:
            batch.append(_resolve(previous, now))
            # The page starts when the quorum is reached, not at this location's first
            # failure: Alertmanager then waits group_wait for the other locations' copies.
            out = dataclasses.replace(out, starts_at=max(now, out.starts_at))
        incident.sent = out
        self.version += 1
        self._log.warning(
            "quorum_verdict",
            alertname=out.name,
            severity=out.labels.get("severity"),
            target=key[1],
            probe=key[2],
            failing=sorted(votes.failing),
            passing=sorted(votes.passing),
            unknown=list(votes.unknown),
        )
        batch.append(out)
        return batch

    async def close(self) -> None:
        """Stop the tick; a pending decision is dropped (the engine re-sends after a restart)."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        await self._client.aclose()


def _variant(alert: Alert) -> tuple[str, str]:
    return alert.name, alert.labels.get("severity", "")


def _critical(alert: Alert, votes: Votes, min_locations: int) -> Alert:
    annotations = dict(alert.annotations)
    annotations["description"] = f"{annotations.get('description', '')} {votes.describe(min_locations)}".strip()
    return dataclasses.replace(alert, annotations=annotations, receivers=None)


def _warning(alert: Alert, votes: Votes, min_locations: int) -> Alert:
    name = PROBE_FAILING_ONE_LOCATION if alert.name == PROBE_FAILING else alert.name
    labels = {**alert.labels, "alertname": name, "severity": "warning"}
    annotations = dict(alert.annotations)
    where = ", ".join(sorted(votes.failing))
    if alert.name == PROBE_FAILING:
        annotations["summary"] = (
            f"Probe {labels.get('probe')} on {labels.get('target')} fails from location {where} only"
        )
    else:
        annotations["summary"] = f"{annotations.get('summary') or name} (from location {where} only)"
    annotations["description"] = (
        f"{annotations.get('description', '')} Below the quorum, so no page: likely this location's own path,"
        f" not the service. {votes.describe(min_locations)}"
    ).strip()
    if "runbook_url" in annotations:
        annotations["runbook_url"] = annotations["runbook_url"].rsplit("#", 1)[0] + "#" + name.lower()
    return dataclasses.replace(alert, labels=labels, annotations=annotations, receivers=None)


def _resolve(previous: Alert, now: float) -> Alert:
    """Close the variant receivers hold when the verdict changes (to every receiver)."""
    return dataclasses.replace(previous, resolved=True, ends_at=max(now, previous.starts_at), receivers=None)
