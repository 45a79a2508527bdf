"""The alert state machine: probe results and job events in, notifications out.

Pure on purpose (no I/O, no clock of its own, no asyncio): every decision about when
an alert fires, resolves or is re-sent is made here and can be unit-tested by feeding
results and times. The sink does the I/O around it (state file, notifiers, metrics).

One state per (alertname, target, probe[, dependency]):
- a *matching* run (bad) counts up; after `failure_threshold` of them in a row the
  alert fires, unless the start-up grace is still running (counting goes on, and the
  first matching run after the grace fires it);
- a *non-matching* run (good) resets the count of a pending alert, and counts toward
  `success_threshold` for a firing one, which then resolves;
- a *neutral* run changes nothing: a result whose `root_cause` names an upstream
  (a service failing because another target it depends on is down itself) neither raises
  nor resolves its alerts, so the page goes to the cause only and a firing alert does not flap.
The generic alerts are judged here; a target kind's own alerts (`TargetKind.alerts`) are
judged by the rules its plug-in declares.
Notifications happen only on threshold crossings, so flapping produces none until it
settles into a streak.
"""

from __future__ import annotations

import dataclasses
import math
import re
from collections.abc import Callable, Generator, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar

from monitor.alerting.alerts import (
    LATENCY_HIGH,
    MONITOR_STALLED,
    PROBE_FAILING,
    PROBE_TIMEOUT,
    Alert,
    severity,
)
from monitor.alerting.state import SNAPSHOT_SLICE, drain
from monitor.config import AlertingConfig
from monitor.diagnosis import runbook_anchor
from monitor.results import ProbeResult, Reason, StepResult
from monitor.scenario.contract import AlertInput, KindAlert, Verdict
from monitor.scenario.registry import KIND_ALERTS, alerts_of

STATE_FORMAT = 1
ERROR_TEXT_LIMIT = 300
# Alertmanager keeps a firing alert until endsAt; this many missed re-sends expire it.
ENDS_AT_RESENDS = 4
_USERINFO = re.compile(r"(?<=//)[^/\s@]+@")


@dataclass(frozen=True, slots=True, order=True)
class AlertKey:
    alertname: str
    target: str
    probe: str
    dependency: str = ""


_T = TypeVar("_T")


def _fields(key: AlertKey) -> tuple[str, str, str, str]:
    return key.alertname, key.target, key.probe, key.dependency


def _in_key_order(items: Iterable[tuple[AlertKey, _T]]) -> list[tuple[AlertKey, _T]]:
    """Sorted by key through plain tuples: the dataclass's own `<` is a Python call per
    comparison, 18 ms to sort 3,000 firing alerts on the loop (the state file's snapshot)."""
    return sorted(items, key=lambda item: _fields(item[0]))


@dataclass(slots=True)
class _State:
    bad: int = 0
    good: int = 0
    starts_at: float | None = None  # set while firing
    labels: dict[str, str] = field(default_factory=dict)
    annotations: dict[str, str] = field(default_factory=dict)
    last_sent: float | None = None  # the last Alertmanager (re-)send
    # Webhook receiver name -> when it was last told this alert fires (fire or repeat).
    notified: dict[str, float] = field(default_factory=dict)

    @property
    def firing(self) -> bool:
        return self.starts_at is not None


@dataclass(frozen=True, slots=True)
class _Row:
    """A state as the state file holds it, with what it was made from. Labels and
    annotations are replaced, never changed in place, so identity tells them apart."""

    bad: int
    good: int
    starts_at: float | None
    labels: dict[str, str]
    annotations: dict[str, str]
    notified: dict[str, float]
    data: dict[str, Any]

    @classmethod
    def of(cls, key: AlertKey, state: _State) -> _Row:
        notified = dict(state.notified)  # serialised in a thread: a copy
        data = {
            "alertname": key.alertname,
            "target": key.target,
            "probe": key.probe,
            "dependency": key.dependency,
            "bad": state.bad,
            "good": state.good,
            "starts_at": state.starts_at,
            "labels": state.labels,
            "annotations": state.annotations,
            "notified": notified,
        }
        return cls(state.bad, state.good, state.starts_at, state.labels, state.annotations, notified, data)

    def matches(self, state: _State) -> bool:
        return (
            self.bad == state.bad
            and self.good == state.good
            and self.starts_at == state.starts_at
            and self.labels is state.labels
            and self.annotations is state.annotations
            and self.notified == state.notified
        )


@dataclass(slots=True)
class _Undelivered:
    """A resolved notice one receiver has not taken yet: retried until it does or ages out."""

    alert: Alert
    next_try: float


Describe = Callable[[int], str]


class AlertEngine:
    """Decides fire / resolve / re-send; `version` changes whenever the state does (but for
    the streak of an alert already firing: `churn`)."""

    def __init__(
        self,
        config: AlertingConfig,
        *,
        now: float,
        probes: Iterable[tuple[str, str]] | None = None,
    ) -> None:
        self.config = config
        self.started_at = now
        self._probes: dict[str, str] | None = dict(probes) if probes is not None else None
        self._states: dict[AlertKey, _State] = {}
        # (target, probe) -> dependencies with a state: a result looks up its own, O(1),
        # instead of scanning every state (a wide outage has thousands).
        self._dependencies: dict[tuple[str, str, str], set[str]] = {}
        # fingerprint -> receiver -> the resolved notice that receiver still has to get.
        self._undelivered: dict[str, dict[str, _Undelivered]] = {}
        # The state file's row of each state as last snapshot, reused while the state is
        # unchanged: the writer encodes a row object once (monitor/alerting/state.py), so
        # a write re-encodes what changed since the last, not 3,000 firing alerts.
        self._rows: dict[AlertKey, _Row] = {}
        self.version = 0
        # Changes a restart can do without for a while: the streak counts and description of
        # an alert already firing (every run of a failing probe). The state file takes them
        # at most every CHURN_WRITE_INTERVAL, the rest (transitions, notices) at once.
        self.churn = 0

    # -- inputs ----------------------------------------------------------------------

    def observe(self, result: ProbeResult, now: float) -> list[Alert]:
        """Feed one probe run; returns the notifications it causes (usually none)."""
        if not self._configured(result.probe, result.target):
            return []  # a late result of a probe removed by a reload
        out: list[Alert] = []
        for key, verdict, describe in self._verdicts(result):
            alert = self._step(key, verdict, describe, now)
            if alert is not None:
                out.append(alert)
        return out

    def job_event(self, probe: str, event: str, now: float) -> list[Alert]:
        """Scheduler trouble (error|missed|skipped) counts as a bad run for the stall state."""
        if self._probes is not None and probe not in self._probes:
            return []
        target = (self._probes or {}).get(probe, "")
        key = AlertKey(MONITOR_STALLED, target, probe)

        def describe(count: int) -> str:
            return (
                f"The scheduler reported {count} job event(s) in a row for probe {probe} without a completed run"
                f" in between, the last one '{event}' (runs crashing, running late, or overlapping and being skipped)."
            )

        alert = self._step(key, Verdict.BAD, describe, now)
        return [alert] if alert is not None else []

    def reconfigure(self, config: AlertingConfig, probes: Iterable[tuple[str, str]] | None, now: float) -> list[Alert]:
        """New thresholds and labels; alerts of probes no longer configured are resolved."""
        self.config = config
        self._probes = dict(probes) if probes is not None else None
        out: list[Alert] = []
        for key in sorted(self._states, key=_fields):
            if not self._configured(key.probe, key.target, stall=key.alertname == MONITOR_STALLED):
                state = self._states.pop(key)
                self._unindex(key)
                self.version += 1
                if state.firing:
                    out.append(self._resolved(state, now))
        names = {r.label for r in config.receivers}
        for fingerprint, lanes in list(self._undelivered.items()):
            for receiver in set(lanes) - names:
                del lanes[receiver]
                self.version += 1
            if not lanes:
                del self._undelivered[fingerprint]
        return out

    def resolve_all(self, now: float) -> list[Alert]:
        """Resolve everything (alerting switched off): nothing may stay firing at a receiver."""
        out = [self._resolved(s, now) for _, s in _in_key_order(self._states.items()) if s.firing]
        if self._states:
            self.version += 1
        self._states.clear()
        self._dependencies.clear()
        return out

    # -- outputs ---------------------------------------------------------------------

    def firing(self) -> list[Alert]:
        firing = [(key, s) for key, s in self._states.items() if s.firing]
        return [self._firing_alert(s, s.last_sent) for _, s in _in_key_order(firing)]

    def due_resends(self, now: float) -> list[Alert]:
        """Firing alerts due again: every resend_interval for Alertmanager receivers (to keep
        endsAt ahead), every receiver's repeat_interval for webhooks (a person reads those)."""
        pushers = tuple(r.label for r in self.config.receivers if r.kind == "alertmanager")
        hooks = [(r.label, r.repeat_interval) for r in self.config.receivers if r.kind == "webhook"]
        due: list[tuple[AlertKey, _State, list[str]]] = []
        for key, state in self._states.items():  # sorted only what is due: a tick of 3,000 states sorted them all
            if not state.firing:
                continue
            receivers: list[str] = []
            if state.last_sent is None or now - state.last_sent >= self.config.resend_interval:
                state.last_sent = now
                receivers.extend(pushers)
            for name, repeat in hooks:
                last = state.notified.get(name)
                if last is None or now - last >= repeat:
                    state.notified[name] = now
                    receivers.append(name)
                    self.version += 1  # persisted: a restart must not repeat it early
            if receivers:
                due.append((key, state, receivers))
        due.sort(key=lambda item: _fields(item[0]))
        return [
            dataclasses.replace(self._firing_alert(state, state.last_sent), receivers=tuple(receivers))
            for _, state, receivers in due
        ]

    def resend_all(self, now: float) -> list[Alert]:
        """Every firing alert to every Alertmanager receiver now; webhooks only get what
        they have not seen (a new receiver), not a repeat."""
        for state in self._states.values():
            if state.firing:
                state.last_sent = None
        return self.due_resends(now)

    # -- delivery outcomes (the dispatcher reports them through the sink) ---------------

    def delivery_failed(self, receiver: str, alerts: Iterable[Alert], now: float) -> None:
        """A receiver did not take these after all retries (or they were dropped).

        A resolved notice is kept and retried every resend_interval until it is taken or
        ages out (state_ttl): a consumer must never see an alert firing for ever. A lost
        firing notice to a webhook is retried at the next resend_interval instead of the
        next repeat_interval (Alertmanager gets a re-send anyway).
        """
        if receiver not in {r.label for r in self.config.receivers}:
            return  # a retired receiver (reload): nobody to retry to
        for alert in alerts:
            state = self._states.get(_key_of(alert))
            if alert.resolved:
                if state is not None and state.firing:
                    continue  # fired again since: the new firing notice supersedes it
                lanes = self._undelivered.setdefault(alert.fingerprint, {})
                plain = dataclasses.replace(alert, receivers=None)
                lanes[receiver] = _Undelivered(plain, now + self.config.resend_interval)
                self.version += 1
            elif (
                state is not None and state.firing and state.starts_at == alert.starts_at and receiver in state.notified
            ):
                repeat = next((r.repeat_interval for r in self.config.receivers if r.label == receiver), 0.0)
                state.notified[receiver] = now - repeat + self.config.resend_interval
                self.version += 1

    def delivered(self, receiver: str, alerts: Iterable[Alert]) -> None:
        """A receiver took these: a resolved notice it owed is settled."""
        if not self._undelivered:
            return
        for alert in alerts:
            if not alert.resolved:
                continue
            lanes = self._undelivered.get(alert.fingerprint)
            entry = lanes.get(receiver) if lanes else None
            if lanes is None or entry is None or entry.alert.ends_at != alert.ends_at:
                continue
            del lanes[receiver]
            if not lanes:
                del self._undelivered[alert.fingerprint]
            self.version += 1

    def due_retries(self, now: float) -> tuple[list[Alert], list[tuple[str, Alert]]]:
        """Undelivered resolved notices to try again now (each addressed to the receivers
        that still owe it), and those given up because they aged out (receiver, alert)."""
        retry: list[Alert] = []
        expired: list[tuple[str, Alert]] = []
        for fingerprint, lanes in list(self._undelivered.items()):
            due: list[str] = []
            for receiver, entry in list(lanes.items()):
                if now - (entry.alert.ends_at or now) > self.config.state_ttl:
                    del lanes[receiver]
                    expired.append((receiver, entry.alert))
                    self.version += 1
                elif entry.next_try <= now:
                    entry.next_try = now + self.config.resend_interval
                    due.append(receiver)
            if due:
                retry.append(dataclasses.replace(next(iter(lanes.values())).alert, receivers=tuple(sorted(due))))
            if not lanes:
                del self._undelivered[fingerprint]
        return retry, expired

    def undelivered(self) -> dict[str, list[Alert]]:
        """Receiver -> resolved notices it still owes (for tests and /status-like views)."""
        out: dict[str, list[Alert]] = {}
        for lanes in self._undelivered.values():
            for receiver, entry in lanes.items():
                out.setdefault(receiver, []).append(entry.alert)
        return out

    @property
    def grace_until(self) -> float:
        return self.started_at + self.config.startup_grace

    # -- persistence (the sink does the file I/O) --------------------------------------

    def snapshot(self, now: float) -> dict[str, Any]:
        """The state file's content. Rows are shared with the previous snapshot where the
        state did not change: never mutate them."""
        return drain(self.snapshot_steps(now))

    def snapshot_steps(self, now: float) -> Generator[None, None, dict[str, Any]]:
        """`snapshot` in slices: pauses (a bare yield) every SNAPSHOT_SLICE states, so the
        writer can give the loop back. In a fleet's wide outage one pass over 3,000 firing
        states held the loop 15-40 ms, 130 ms at worst. A state that changes between slices
        is taken as it is then; the change bumped the version, so the next write has it."""
        rows: dict[AlertKey, _Row] = {}
        for index, (key, state) in enumerate(_in_key_order(self._states.items())):
            if index and index % SNAPSHOT_SLICE == 0:
                yield
            row = self._rows.get(key)
            if row is None or not row.matches(state):
                row = _Row.of(key, state)
            rows[key] = row
        self._rows = rows
        return {
            "format": STATE_FORMAT,
            "saved_at": now,
            "states": [row.data for row in rows.values()],
            "undelivered": [
                {
                    "receiver": receiver,
                    "labels": entry.alert.labels,
                    "annotations": entry.alert.annotations,
                    "starts_at": entry.alert.starts_at,
                    "ends_at": entry.alert.ends_at,
                }
                for _, lanes in sorted(self._undelivered.items())
                for receiver, entry in sorted(lanes.items())
            ],
        }

    def restore(self, data: Mapping[str, Any], now: float) -> list[Alert]:
        """Load a snapshot; returns resolved notices for what must not stay firing.

        Firing alerts of configured probes come back firing with their original labels
        and startsAt and are due for a re-send at once (the same alert, not a new one).
        A snapshot older than `state_ttl` is not trusted, and a probe that is gone
        cannot resolve by itself: both get a resolved notice so nothing stays stuck.
        """
        if not isinstance(data, Mapping) or data.get("format") != STATE_FORMAT:
            raise ValueError("not an alert state file of a known format")
        saved_at = float(data["saved_at"])
        stale = not math.isfinite(saved_at) or now - saved_at > self.config.state_ttl
        out: list[Alert] = []
        states: dict[AlertKey, _State] = {}
        for item in data.get("states") or []:
            key = AlertKey(
                str(item["alertname"]), str(item["target"]), str(item["probe"]), str(item.get("dependency") or "")
            )
            starts_at = item.get("starts_at")
            state = _State(
                bad=int(item.get("bad") or 0),
                good=int(item.get("good") or 0),
                starts_at=float(starts_at) if starts_at is not None else None,
                labels={str(k): str(v) for k, v in (item.get("labels") or {}).items()},
                annotations={str(k): str(v) for k, v in (item.get("annotations") or {}).items()},
                notified={str(k): float(v) for k, v in (item.get("notified") or {}).items()},
            )
            if state.firing and not state.labels:
                raise ValueError(f"firing alert {key.alertname} without labels")
            configured = self._configured(key.probe, key.target, stall=key.alertname == MONITOR_STALLED)
            if stale or not configured:
                if state.firing:
                    out.append(self._resolved(state, now))
                continue
            states[key] = state
        undelivered: dict[str, dict[str, _Undelivered]] = {}
        names = {r.label for r in self.config.receivers}
        for item in data.get("undelivered") or []:
            ends_at = float(item["ends_at"])
            if (
                str(item["receiver"]) not in names
                or not math.isfinite(ends_at)
                or now - ends_at > self.config.state_ttl
            ):
                continue  # aged out or the receiver is gone: nothing left to retry
            alert = Alert(
                labels={str(k): str(v) for k, v in (item.get("labels") or {}).items()},
                annotations={str(k): str(v) for k, v in (item.get("annotations") or {}).items()},
                starts_at=float(item["starts_at"]),
                ends_at=ends_at,
                generator_url=self.config.generator_url or "",
                resolved=True,
            )
            if not alert.labels.get("alertname"):
                raise ValueError("undelivered resolved notice without labels")
            undelivered.setdefault(alert.fingerprint, {})[str(item["receiver"])] = _Undelivered(alert, now)
        # Every item parsed: only now is the engine's state replaced (all or nothing).
        self._states = states
        self._dependencies = {}
        for key in states:
            self._index(key)
        self._undelivered = undelivered
        self.version += 1
        return out

    # -- the state machine -------------------------------------------------------------

    def _step(self, key: AlertKey, verdict: Verdict, describe: Describe | None, now: float) -> Alert | None:
        if verdict is Verdict.NEUTRAL:
            return None
        state = self._states.get(key)
        if verdict is Verdict.GOOD:
            if state is None:
                return None
            if not state.firing:
                self.version += 1
                del self._states[key]  # a pending streak is broken
                self._unindex(key)
                return None
            state.bad = 0
            state.good += 1
            if state.good < self.config.success_threshold:
                self.churn += 1
                return None
            self.version += 1
            del self._states[key]
            self._unindex(key)
            return self._resolved(state, now)
        if state is None:
            state = self._states[key] = _State()
            self._index(key)
        state.bad += 1
        state.good = 0
        if describe is not None:
            state.annotations = self._annotations(key, describe(state.bad))
        if state.firing:
            self.churn += 1
            return None  # already notified; the re-send carries the newest description
        self.version += 1
        if state.bad < self.config.failure_threshold or now < self.grace_until:
            return None
        state.starts_at = now
        state.labels = self._labels(key)
        state.last_sent = now
        state.notified = {r.label: now for r in self.config.receivers if r.kind == "webhook"}
        alert = self._firing_alert(state, now)
        self._undelivered.pop(alert.fingerprint, None)  # the new firing notice supersedes it
        return alert

    def _verdicts(self, result: ProbeResult) -> Iterator[tuple[AlertKey, Verdict, Describe | None]]:
        t, p = result.target, result.probe
        failed = result.failed_step
        caused_elsewhere = result.root_cause is not None

        diagnosis = _diagnosis_text(result, self.config.runbook_url)

        def failing(count: int) -> str:
            return (
                f"Probe {p} against target {t} failed {count} run(s) in a row. Last failure: "
                + _step_text(failed)
                + diagnosis
            )

        yield (
            AlertKey(PROBE_FAILING, t, p),
            Verdict.NEUTRAL if caused_elsewhere else (Verdict.GOOD if result.ok else Verdict.BAD),
            failing,
        )

        timed_out = _first_with(result, Reason.TIMEOUT)

        def timeout(count: int) -> str:
            return (
                f"Probe {p} against target {t} hit its deadline ({result.timeout_seconds:g}s) in {count} run(s)"
                f" in a row. Last: " + _step_text(timed_out) + diagnosis
            )

        yield AlertKey(PROBE_TIMEOUT, t, p), Verdict.BAD if timed_out else Verdict.GOOD, timeout

        threshold = self.config.latency_threshold
        slow = result.duration_seconds > threshold
        slowest = max((s for s in result.steps if not s.skipped), key=lambda s: s.duration_seconds, default=None)

        def latency(count: int) -> str:
            text = (
                f"Probe {p} against target {t} took {result.duration_seconds:.2f}s (threshold {threshold:g}s)"
                f" in {count} run(s) in a row."
            )
            if slowest is not None:
                text += f" Slowest step: {slowest.name} ({slowest.duration_seconds:.2f}s)."
            return text

        yield AlertKey(LATENCY_HIGH, t, p), Verdict.BAD if slow else Verdict.GOOD, latency

        for declared in alerts_of(result.scenario):
            yield from self._kind_verdicts(declared, result, diagnosis)

        # Any completed run proves the probe's job is scheduled and running.
        yield AlertKey(MONITOR_STALLED, t, p), Verdict.GOOD, None

    def _kind_verdicts(
        self, declared: KindAlert, result: ProbeResult, diagnosis: str
    ) -> Iterator[tuple[AlertKey, Verdict, Describe | None]]:
        """A kind's own alert, judged by the rule its plug-in declares."""
        t, p = result.target, result.probe
        known = frozenset(self._dependencies.get((declared.name, t, p), ()))
        for dependency, verdict, describe in declared.verdicts(AlertInput(result, known, diagnosis, _step_text)):
            yield AlertKey(declared.name, t, p, dependency), verdict, describe

    def _index(self, key: AlertKey) -> None:
        """Dependency alerts by (alertname, target, probe): a result looks up its own, O(1)."""
        if key.dependency:
            self._dependencies.setdefault((key.alertname, key.target, key.probe), set()).add(key.dependency)

    def _unindex(self, key: AlertKey) -> None:
        if key.dependency:
            index = (key.alertname, key.target, key.probe)
            known = self._dependencies.get(index)
            if known is not None:
                known.discard(key.dependency)
                if not known:
                    del self._dependencies[index]

    # -- alert values ------------------------------------------------------------------

    def _configured(self, probe: str, target: str, stall: bool = False) -> bool:
        if self._probes is None:
            return True
        if probe not in self._probes:
            return False
        # A stall alert of a job event may carry an empty target (probe unknown then).
        return self._probes[probe] == target or (stall and target == "")

    def _labels(self, key: AlertKey) -> dict[str, str]:
        labels = dict(self.config.labels)
        labels.update(
            alertname=key.alertname,
            target=key.target,
            probe=key.probe,
            severity=_severity(key),
        )
        if key.dependency:
            labels["dependency"] = key.dependency
        return labels

    def _annotations(self, key: AlertKey, description: str) -> dict[str, str]:
        annotations = {"summary": _summary(key), "description": description}
        if self.config.runbook_url:
            annotations["runbook_url"] = f"{self.config.runbook_url}#{key.alertname.lower()}"
        return annotations

    def _firing_alert(self, state: _State, sent_at: float | None) -> Alert:
        assert state.starts_at is not None
        ends_at = None if sent_at is None else sent_at + ENDS_AT_RESENDS * self.config.resend_interval
        return Alert(
            labels=dict(state.labels),
            annotations=dict(state.annotations),
            starts_at=state.starts_at,
            ends_at=ends_at,
            generator_url=self.config.generator_url or "",
        )

    def _resolved(self, state: _State, now: float) -> Alert:
        assert state.starts_at is not None
        return Alert(
            labels=dict(state.labels),
            annotations=dict(state.annotations),
            starts_at=state.starts_at,
            ends_at=max(now, state.starts_at),
            generator_url=self.config.generator_url or "",
            resolved=True,
        )


def _key_of(alert: Alert) -> AlertKey:
    labels = alert.labels
    return AlertKey(
        labels.get("alertname", ""), labels.get("target", ""), labels.get("probe", ""), labels.get("dependency", "")
    )


def _summary(key: AlertKey) -> str:
    t, p = key.target, key.probe
    declared = KIND_ALERTS.get(key.alertname)
    if declared is not None:
        return declared.summary(t, p, key.dependency)
    return {
        PROBE_FAILING: f"Synthetic probe {p} on {t} keeps failing",
        PROBE_TIMEOUT: f"Probe {p} on {t} times out",
        LATENCY_HIGH: f"Probe {p} on {t} is slow",
        MONITOR_STALLED: f"Synthetic monitor: jobs of probe {p} are not running normally",
    }[key.alertname]


def _severity(key: AlertKey) -> str:
    declared = KIND_ALERTS.get(key.alertname)
    return declared.severity_of(key.dependency) if declared is not None else severity(key.alertname)


def _diagnosis_text(result: ProbeResult, runbook_url: str | None = None) -> str:
    """' Diagnosis: <component>: <summary> (runbook <url>#anchor).' for a description, or ''."""
    d = result.diagnosis
    if d is None:
        return ""
    text = f" Diagnosis: {d.component}: {short_error(d.summary)} (runbook {runbook_url or ''}#{runbook_anchor(d.component)})."
    c = result.target_diagnosis
    if c is not None and c != d:
        text += f" Target culprit: {c.component}: {short_error(c.summary)} (runbook {runbook_url or ''}#{runbook_anchor(c.component)})."
    return text


def _first_with(result: ProbeResult, reason: Reason) -> StepResult | None:
    return next((s for s in result.steps if s.reason is reason), None)


def _step_text(step: StepResult | None) -> str:
    if step is None:
        return "no failing step recorded."
    reason = step.reason.value if step.reason else "failed"
    return f"step {step.name}, reason {reason}: {short_error(step.error)}"


def short_error(text: str | None) -> str:
    """One line, bounded, no URL userinfo: error texts go to receivers outside the pod."""
    if not text:
        return "(no error text)"
    line = " ".join(_USERINFO.sub("***@", text).split())
    return line if len(line) <= ERROR_TEXT_LIMIT else line[: ERROR_TEXT_LIMIT - 3] + "..."
