"""The immutable record of one probe run: what every sink consumes.

Scenarios produce these; metrics, alerting, status and logging read them. Nothing in a
result refers back to the scenario or the HTTP client, so a sink can keep it for as long
as it likes.
"""

from __future__ import annotations

import dataclasses
import enum
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, NamedTuple

from monitor.certificates import PeerCertificate


class Reason(str, enum.Enum):
    """Why a step failed: a fixed set, used as a metric label value, never free text."""

    TIMEOUT = "timeout"
    UNREACHABLE = "unreachable"
    TLS_ERROR = "tls_error"
    WORKER_FAILURE = "worker_failure"
    HTTP_ERROR = "http_error"
    INVALID_RESPONSE = "invalid_response"
    VALIDATION_FAILED = "validation_failed"
    DEPENDENCY_UNAVAILABLE = "dependency_unavailable"
    ASSERTION_FAILED = "assertion_failed"  # a config-defined assertion was false (its name in the error)
    INTERNAL_ERROR = "internal_error"

    def __str__(self) -> str:
        return self.value


PHASES = ("connect", "tls", "first_byte", "body")


class PhaseTimings(NamedTuple):
    """Where a step's HTTP time went, split as blackbox_exporter does (seconds).

    connect and tls are 0 on a reused keep-alive connection; first_byte runs from the
    request written to the first response byte (the server's think time), body from there
    to the last body byte. "Slow to connect" (network, a full accept queue) and "slow to
    answer" (the database behind) are different diagnoses. A step with several requests
    carries their sum, so the phases add up to (nearly) the step's duration. A named tuple,
    not a frozen dataclass: one is made per request, and this is the cheap immutable kind.
    """

    connect: float = 0.0
    tls: float = 0.0
    first_byte: float = 0.0
    body: float = 0.0

    def __add__(self, other: tuple[Any, ...]) -> PhaseTimings:
        """Phase by phase (a tuple's + would concatenate)."""
        return PhaseTimings(self[0] + other[0], self[1] + other[1], self[2] + other[2], self[3] + other[3])

    def values(self) -> tuple[float, float, float, float]:
        """In the order of PHASES."""
        return self.connect, self.tls, self.first_byte, self.body

    def as_dict(self) -> dict[str, float]:
        return {name: round(value, 6) for name, value in zip(PHASES, self)}


class Dependency(str, enum.Enum):
    """A dependency of the target as one run saw it (the one dependency API of `Facts`)."""

    UP = "up"
    DOWN = "down"
    UNKNOWN = "unknown"  # named, but this run could not tell
    EXPLAINED = "explained"  # down, and another probe's alert already covers the outage

    def __str__(self) -> str:
        return self.value


@dataclass(frozen=True, slots=True)
class Diagnosis:
    """The broken part and one line on why we think so: what on-call needs to pick a runbook."""

    component: str
    summary: str
    # How a kind concluded it, for its one-culprit rule (not shown): "" seen directly, or a
    # tag of the kind's own, e.g. "inferred from what timed out after what answered".
    evidence: str = ""

    def as_dict(self) -> dict[str, str]:
        return {"component": self.component, "summary": self.summary}


class Blame(NamedTuple):
    """A component's record in the current incident of a target (since it was last healthy),
    kept by monitor/culprit.py for the kinds' one-culprit rules."""

    first_at: float  # start of the first run that blamed it
    last_at: float  # start of the latest run that blamed it
    summary: str  # that run's diagnosis summary
    probe: str  # that run's probe
    evidence: frozenset[str] = frozenset()  # every `Diagnosis.evidence` it was blamed on in the incident


@dataclass(frozen=True, slots=True)
class StepResult:
    """One step of a scenario. `reason` and `error` are None when it passed."""

    name: str
    ok: bool
    duration_seconds: float
    reason: Reason | None = None
    error: str | None = None
    status_code: int | None = None
    method: str | None = None
    path: str | None = None
    skipped: bool = False
    phases: PhaseTimings | None = None  # None: the step sent no request
    # The part to blame when the step itself knows (the monitor's own pool, a scenario hint).
    component: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "ok": self.ok,
            "reason": self.reason.value if self.reason else None,
            "error": self.error,
            "duration_seconds": round(self.duration_seconds, 6),
            "status_code": self.status_code,
            "method": self.method,
            "path": self.path,
            "skipped": self.skipped,
            "phases": self.phases.as_dict() if self.phases is not None else None,
            "component": self.component,
        }


@dataclass(frozen=True)
class Facts:
    """Measured values of a run that are not pass/fail. Each scenario has its own frozen
    subclass (probes/: dependency flags, inventory counts, ...); `None` is "not learnt"
    and is left out of /status, the log and reports. What the rest of the monitor may
    ask of any scenario's facts is this base: the target's version (synthetic_target_info)
    and its dependencies as the run saw them (the kinds' dependency alerts and gauges)."""

    target_version: str | None = None
    # Server capabilities a target reports (synthetic_target_info's store_type, multipart_uploads).
    target_store_type: str | None = None
    target_multipart_uploads: bool | None = None

    def as_dict(self) -> dict[str, Any]:
        """The JSON shape (/status, the log, `check --format json`): what was learnt."""
        out: dict[str, Any] = {}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if value is not None:
                out[f.name] = list(value) if isinstance(value, tuple) else value
        return out

    def __bool__(self) -> bool:
        return any(getattr(self, f.name) is not None for f in dataclasses.fields(self))

    def redacted(self, scrub: Callable[[str], str]) -> Facts:
        """A copy with every string in it (dict keys included) passed through `scrub`."""
        changes: dict[str, Any] = {}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if value is not None:
                clean = _scrub_value(value, scrub)
                clean = tuple(clean) if isinstance(value, tuple) else clean
                if clean != value:
                    changes[f.name] = clean
        return dataclasses.replace(self, **changes) if changes else self

    def dependency_states(self) -> Mapping[str, Dependency]:
        """The target's dependencies as this run saw them, by name; empty when the scenario
        gathers no such evidence. A dependency left out is not known to this run."""
        return {}

    def sweep_pending(self) -> bool:
        """The run may have left something behind that the scenario's janitor should sweep."""
        return False

    def leftovers(self) -> list[str]:
        """What the run knows it may have left (for the scenario's `sweep` hook)."""
        return []


NO_FACTS = Facts()


@dataclass(frozen=True, slots=True)
class ProbeResult:
    """One run of one probe.

    `facts` carries measured values that are not pass/fail, typed by the scenario
    (dependency flags, inventory counts); `root_cause` names an upstream whose failure explains
    this one (another target that a service depends on and that is down itself), so alerting
    can page on the cause only.
    """

    probe: str
    target: str
    scenario: str
    started_at: float
    duration_seconds: float
    steps: tuple[StepResult, ...]
    timeout_seconds: float
    facts: Facts = NO_FACTS
    root_cause: str | None = None
    notes: tuple[str, ...] = ()
    traceback: str | None = None
    diagnosis: Diagnosis | None = None
    # One culprit per incident: the target-level diagnosis over the latest runs of every
    # probe of this target when this result was enriched (monitor/culprit.py); None: healthy.
    target_diagnosis: Diagnosis | None = None
    certificate: PeerCertificate | None = None  # the last one the target presented in this run (https)

    @property
    def ok(self) -> bool:
        return all(step.ok for step in self.steps)

    @property
    def failed_step(self) -> StepResult | None:
        """The first failed step: the one whose reason describes the run."""
        return next((step for step in self.steps if not step.ok), None)

    @property
    def reason(self) -> Reason | None:
        step = self.failed_step
        return step.reason if step else None

    @property
    def reasons(self) -> frozenset[Reason]:
        return frozenset(s.reason for s in self.steps if s.reason is not None)

    def redacted(self, scrub: Callable[[str], str]) -> ProbeResult:
        """A copy whose free texts and facts have secrets scrubbed: a server may quote
        credentials back, and facts (a URI a service reports) are server-provided
        values that reach /status, logs and alerts like any error text."""
        steps = tuple(
            dataclasses.replace(s, error=clean) if s.error and (clean := scrub(s.error)) != s.error else s
            for s in self.steps
        )
        notes = tuple(scrub(n) for n in self.notes)
        traceback = scrub(self.traceback) if self.traceback else None
        facts = self.facts.redacted(scrub)
        if steps == self.steps and notes == self.notes and traceback == self.traceback and facts == self.facts:
            return self
        return dataclasses.replace(self, steps=steps, notes=notes, traceback=traceback, facts=facts)

    def as_dict(self) -> dict[str, Any]:
        failed = self.failed_step
        return {
            "name": self.probe,
            "target": self.target,
            "scenario": self.scenario,
            "ok": self.ok,
            "started_at": self.started_at,
            "duration_seconds": round(self.duration_seconds, 6),
            "timeout_seconds": self.timeout_seconds,
            "reason": failed.reason.value if failed and failed.reason else None,
            "error": failed.error if failed else None,
            "root_cause": self.root_cause,
            "diagnosis": self.diagnosis.as_dict() if self.diagnosis else None,
            "target_diagnosis": self.target_diagnosis.as_dict() if self.target_diagnosis else None,
            "facts": self.facts.as_dict(),
            "notes": list(self.notes),
            "steps": [step.as_dict() for step in self.steps],
            "tls_certificate": self.certificate.as_dict() if self.certificate else None,
        }


def _scrub_value(value: Any, scrub: Callable[[str], str]) -> Any:
    """`value` with every string in it (keys included) passed through `scrub`."""
    if isinstance(value, str):
        return scrub(value)
    if isinstance(value, dict):
        return {(scrub(k) if isinstance(k, str) else k): _scrub_value(v, scrub) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_scrub_value(v, scrub) for v in value]
    return value


class StepFailure(Exception):
    """Raised inside a step to end it with a classified reason and a human message."""

    def __init__(
        self,
        reason: Reason,
        message: str,
        status_code: int | None = None,
        phases: PhaseTimings | None = None,
        component: str | None = None,
        starved: bool = False,
    ) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message
        self.status_code = status_code
        self.phases = phases  # how far the failed request got (a timeout: waiting for which phase)
        self.component = component
        # The step got no time at all (the run's deadline was spent by earlier steps): it is
        # recorded skipped, still a timeout of the run, and no evidence against its route.
        self.starved = starved
