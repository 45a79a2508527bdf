"""The one shape every scenario has, and the step bookkeeping they share.

A scenario is `async def run(run: ScenarioRun, options) -> None`: it opens steps with
`async with run.step(name) as step:`, makes requests through the step (which hands each
request what is left of the deadline), and raises StepFailure for a bad answer. The
step records its own duration and outcome; the runner turns the steps into a
ProbeResult. Scenarios never touch metrics, alerts or logs.
"""

from __future__ import annotations

import time
import traceback
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, Awaitable, Callable, NoReturn

from pydantic import BaseModel, ConfigDict

from monitor.http import HttpResponse, TargetClient, check_status
from monitor.results import Diagnosis, PhaseTimings, Reason, StepFailure, StepResult

# Cleanup steps (deleting the probe's run) get at least this long each (capped by the step
# timeout) even when the deadline is spent, so a timed-out run does not leave litter behind.
# A run can therefore last its deadline plus one budget per cleanup step: the runner's
# outer bound and the config's deadline rule (config.py) both count that reserve.
CLEANUP_BUDGET_SECONDS = 5.0


def cleanup_budget(step_timeout: float) -> float:
    """What one cleanup step gets once the deadline is spent."""
    return min(CLEANUP_BUDGET_SECONDS, step_timeout)


class ScenarioOptions(BaseModel):
    """Base of every scenario's `options:` block: unknown keys are a config error."""

    model_config = ConfigDict(extra="forbid", frozen=True)


@dataclass(frozen=True, slots=True)
class Scenario:
    """A registered scenario: what it probes, its steps (for zeroed series) and its code."""

    name: str
    target_kind: str
    steps: tuple[str, ...]
    options_model: type[ScenarioOptions]
    run: Callable[["ScenarioRun", Any], Awaitable[None]]
    description: str = ""
    optional_steps: Callable[[Any], tuple[str, ...]] | None = None
    # Steps opened with `run.step(name, cleanup=True)`: each may run past the deadline.
    cleanup_steps: tuple[str, ...] = ()
    # Start-up hook: delete what a killed daemon left behind (client, options, probe name,
    # minimum age in seconds, fleet member or '') -> descriptions of what it deleted.
    janitor: Callable[[TargetClient, Any, str, float, str], Awaitable[list[str]]] | None = None
    # The scenario's error hints, run after its steps: may re-classify a failed step it
    # understands better (MLflow's backend store vs its server), add facts and set
    # `run.diagnosis`. Generic rules in monitor/diagnosis.py cover the rest.
    explain: Callable[["ScenarioRun"], None] | None = None

    def steps_for(self, options: Any) -> tuple[str, ...]:
        """The steps a probe with these options can report (for its zeroed series)."""
        if self.optional_steps is None:
            return self.steps
        skipped = set(self.optional_steps(options))
        return tuple(step for step in self.steps if step not in skipped)

    def cleanup_reserve(self, options: Any, step_timeout: float) -> float:
        """How long this probe's cleanup may run after its deadline (one budget per cleanup step)."""
        active = set(self.steps_for(options))
        count = sum(1 for step in self.cleanup_steps if step in active)
        return count * cleanup_budget(step_timeout)


class ScenarioAborted(Exception):
    """A step failed; the scenario stops here (cleanup in `finally` still runs)."""


@dataclass(slots=True)
class ScenarioRun:
    """The mutable scratchpad of one run; frozen into a ProbeResult by the runner."""

    client: TargetClient
    deadline: float
    step_timeout: float
    probe_name: str = ""
    member: str = ""  # the fleet replica running it ('' alone): tags what it writes
    clock: Callable[[], float] = time.monotonic
    steps: list[StepResult] = field(default_factory=list)
    facts: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    root_cause: str | None = None
    traceback: str | None = None
    # The step that was in progress when the run was cancelled (the runner's outer bound).
    cancelled_step: str | None = None
    diagnosis: Diagnosis | None = None  # a scenario's hint; monitor/diagnosis.py decides

    def step(self, name: str, *, cleanup: bool = False) -> "Step":
        return Step(self, name, cleanup=cleanup)

    def time_left(self, *, cleanup: bool = False) -> float:
        left = self.deadline - self.clock()
        if cleanup:
            left = max(left, cleanup_budget(self.step_timeout))
        return min(left, self.step_timeout)


class Step:
    """Async context manager around one named step: times it and records the outcome."""

    def __init__(self, run: ScenarioRun, name: str, *, cleanup: bool = False) -> None:
        self.run = run
        self.name = name
        self.cleanup = cleanup
        self._started = 0.0
        self._skipped: str | None = None
        self._last: HttpResponse | None = None
        self._attempt: tuple[str, str] | None = None
        self._phases: PhaseTimings | None = None  # summed over the step's requests

    async def __aenter__(self) -> "Step":
        self._started = self.run.clock()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> bool:
        duration = self.run.clock() - self._started
        last = self._last
        common: dict[str, Any] = {
            "name": self.name,
            "duration_seconds": duration,
            "method": self._attempt[0] if self._attempt else None,
            "path": self._attempt[1] if self._attempt else None,
        }
        if isinstance(exc, StepFailure) and exc.phases is not None:
            self._add_phases(exc.phases)
        common["phases"] = self._phases
        if exc is None:
            self.run.steps.append(
                StepResult(
                    ok=True,
                    status_code=last.status_code if last else None,
                    skipped=self._skipped is not None,
                    error=self._skipped,
                    **common,
                )
            )
            return False
        if isinstance(exc, StepFailure):
            self.run.steps.append(
                StepResult(ok=False, reason=exc.reason, error=exc.message, status_code=exc.status_code,
                           component=exc.component, **common)
            )
        elif isinstance(exc, Exception):
            self.run.traceback = "".join(traceback.format_exception(exc_type, exc, tb))
            self.run.steps.append(
                StepResult(ok=False, reason=Reason.INTERNAL_ERROR, error=f"{type(exc).__name__}: {exc}", **common)
            )
        else:
            if self.run.cancelled_step is None:
                self.run.cancelled_step = self.name  # the runner names it if its outer bound fired
            return False  # CancelledError, KeyboardInterrupt: not ours to swallow
        if self.cleanup:
            return True  # a failed cleanup is recorded; there is nothing left to abort
        raise ScenarioAborted(self.name) from None

    async def request(
        self,
        method: str,
        path: str,
        *,
        expect: frozenset[int] | set[int] = frozenset({200}),
        json_body: Any = None,
        params: dict[str, Any] | None = None,
        content: bytes | None = None,
        headers: dict[str, str] | None = None,
    ) -> HttpResponse:
        """One request with what is left of the deadline; an unexpected status fails the step."""
        self._attempt = (method, path)
        response = await self.run.client.request(
            method,
            path,
            timeout=self.run.time_left(cleanup=self.cleanup),
            json_body=json_body,
            params=params,
            content=content,
            headers=headers,
        )
        self._last = response
        if response.phases is not None:
            self._add_phases(response.phases)
        check_status(response, expect)
        return response

    def _add_phases(self, phases: PhaseTimings) -> None:
        self._phases = phases if self._phases is None else self._phases + phases

    def fail(self, reason: Reason, message: str) -> NoReturn:
        raise StepFailure(reason, message, self._last.status_code if self._last else None)

    def skip(self, why: str) -> None:
        """Mark the step as skipped (counted as passing): there was nothing to check."""
        self._skipped = f"skipped: {why}"
