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
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from types import TracebackType
from typing import TYPE_CHECKING, Any, NoReturn, Protocol

from pydantic import BaseModel, ConfigDict

from monitor.certificates import PeerCertificate
from monitor.http.client import ErrorClassifier, ErrorHint, HttpResponse, TargetClient, check_status
from monitor.results import (
    NO_FACTS,
    Blame,
    Diagnosis,
    Facts,
    PhaseTimings,
    ProbeResult,
    Reason,
    StepFailure,
    StepResult,
)
from monitor.scenario.contract import GENERIC_COMPONENTS, Component, KindAlert

if TYPE_CHECKING:
    from prometheus_client import CollectorRegistry

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
class DefaultProbe:
    """The probe a scenario gives a target of its kind when the config lists no probes:
    named `<target>_<suffix>`. `standalone_options` apply only to the built-in
    configuration used when there is no config file at all."""

    suffix: str
    interval: str
    timeout: str
    standalone_options: Mapping[str, Any] | None = None


@dataclass(frozen=True, slots=True)
class StandaloneTarget:
    """The target of this kind the no-file configuration probes: `name` at the URL in
    environment variable `url_env`, else `url` (the usual port-forward address).
    `only_when_set`: probed only when `url_env` is set (a service many users do not run)."""

    name: str
    url_env: str
    url: str
    only_when_set: bool = False


@dataclass(frozen=True, slots=True)
class TargetKind:
    """A kind of target (`kind:` in the config): what the rest of the monitor may know of it.

    Everything specific to one kind of service is declared here by its plug-in: its
    diagnosis components (beyond the generic ones), the dependencies it reports, the alerts
    it adds, and its HTTP error hooks. No kind inherits another's defaults.
    """

    name: str
    description: str = ""
    # Credentials Kubernetes injects as env vars: (username, password, token) variable names.
    credential_env: tuple[str, str, str] | None = None
    standalone: StandaloneTarget | None = None
    # Advice for an unexpected HTTP answer of this kind of server (see http.describe_http_error).
    error_hint: ErrorHint | None = None
    # The reason of an unexpected HTTP status this kind of server is known to answer itself
    # (e.g. its own JSON error on a 503 proves its worker alive); None: the generic rule.
    classify_error: ErrorClassifier | None = None
    # The diagnosis component that answers for this kind when nothing more specific is known:
    # the generic `server` unless the kind declares its own among `components`.
    server_component: str = "server"
    # The kind's own diagnosis components (name, runbook line), beyond GENERIC_COMPONENTS.
    components: tuple[Component, ...] = ()
    # The names of the dependencies its targets report (Facts.dependency_states).
    dependencies: tuple[str, ...] = ()
    # The alerts it adds to the generic ones, with their severities.
    alerts: tuple[KindAlert, ...] = ()
    # The kind's own diagnosis rule for a failed step, tried before the generic rules
    # (monitor/diagnosis.py): (component, what) or None.
    diagnose: Callable[[StepResult], tuple[str, str] | None] | None = None
    # The kind's rule for one culprit per target over the latest runs of all its probes
    # (monitor/culprit.py: CulpritRule): (results oldest first, the incident's blames) -> Diagnosis.
    culprit: Callable[[Sequence[ProbeResult], Mapping[str, Blame]], Diagnosis | None] | None = None

    def __post_init__(self) -> None:
        names = [c.name for c in (*GENERIC_COMPONENTS, *self.components)]
        if len(set(names)) != len(names):
            raise ValueError(f"kind {self.name}: a component is declared twice: {names}")
        if self.server_component not in names:
            raise ValueError(f"kind {self.name}: server component {self.server_component!r} is not declared")

    def component_runbooks(self) -> dict[str, str]:
        """Every component a target of this kind can be blamed on -> its runbook line."""
        return {c.name: c.runbook for c in (*GENERIC_COMPONENTS, *self.components)}


class MetricFamilies:
    """Extra metric families a scenario exports (beyond the per-probe series), fed from its
    runs' facts. One instance per metrics sink and class, made at the sink's start, so the
    families exist (HELP/TYPE) from the first scrape. Subclasses own their gauges."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry

    def observe(self, result: ProbeResult) -> None:
        """Set what this run learnt (a run of a probe still configured)."""

    def forget(self, target: str, probe: str, *, last_of_target: bool) -> None:
        """A probe of this scenario was removed; `last_of_target`: no probe exporting these
        families is left on `target`, so its series go."""


class TargetView(Protocol):
    """What a plug-in may read of a configured target (config imports the plug-ins, not the reverse)."""

    @property
    def name(self) -> str: ...
    @property
    def kind(self) -> str: ...
    @property
    def url(self) -> str: ...


class ProbeView(Protocol):
    """What a plug-in may read of a configured probe."""

    @property
    def name(self) -> str: ...
    @property
    def target(self) -> str: ...
    @property
    def scenario(self) -> str: ...
    @property
    def options(self) -> Any: ...


class ConfigView(Protocol):
    """The configuration as a plug-in's cross-check sees it: its targets and probes."""

    @property
    def targets(self) -> Sequence[TargetView]: ...
    @property
    def probes(self) -> Sequence[ProbeView]: ...


# The scenario's view of the other results when its own result is enriched (cross-check):
# the config, the latest enriched result of every probe, and the time now.
Correlate = Callable[[ProbeResult, ConfigView, Mapping[str, ProbeResult], float], ProbeResult]


@dataclass(frozen=True, slots=True)
class Scenario:
    """A registered scenario: what it probes, its steps (for zeroed series) and its code.

    Everything the monitor needs to know about a scenario is declared here, so no other
    module names one: its target kind, options, default probe, start-up hook (janitor),
    the extra metric families it exports and how a result of it correlates with others.
    """

    name: str
    target_kind: str
    steps: tuple[str, ...]
    options_model: type[ScenarioOptions]
    run: Callable[[ScenarioRun, Any], Awaitable[None]]
    description: str = ""
    optional_steps: Callable[[Any], tuple[str, ...]] | None = None
    # Steps opened with `run.step(name, cleanup=True)`: each may run past the deadline.
    cleanup_steps: tuple[str, ...] = ()
    # Start-up hook: delete what a killed daemon left behind (client, options, probe name,
    # minimum age in seconds, fleet member or '') -> descriptions of what it deleted.
    janitor: Callable[[TargetClient, Any, str, float, str], Awaitable[list[str]]] | None = None
    # What a target of this kind gets when the config lists no probes (None: nothing).
    default_probe: DefaultProbe | None = None
    # The extra metric families its facts feed (e.g. a service's dependency and inventory gauges).
    metric_families: type[MetricFamilies] | None = None
    # Enrich a result with what other probes saw (a cross-check against the probes of an upstream).
    correlate: Correlate | None = None
    # Its typed facts: a run starts with `facts_model()` and the scenario replaces it.
    facts_model: type[Facts] = Facts
    # The scenario's error hints, run after its steps: may re-classify a failed step it
    # understands better (a store behind the server vs the server), add facts and set
    # `run.diagnosis`. Generic rules in monitor/diagnosis.py cover the rest.
    explain: Callable[[ScenarioRun], None] | None = None
    # Delete what a run reported it may have left behind (`Facts.leftovers()`), once the
    # target answers again: client, paths -> what it deleted.
    sweep: Callable[[TargetClient, list[str]], Awaitable[list[str]]] | None = None
    # Steps written in the probe's options (a config-defined check): options -> (steps,
    # cleanup steps), used instead of `steps` and `cleanup_steps`.
    configured_steps: Callable[[Any], tuple[tuple[str, ...], tuple[str, ...]]] | None = None
    # It creates things on the target (runs, models): `read_only` and `--read-only` skip it.
    writes: bool = False

    def steps_for(self, options: Any) -> tuple[str, ...]:
        """The steps a probe with these options can report (for its zeroed series)."""
        if self.configured_steps is not None:
            return self.configured_steps(options)[0]
        if self.optional_steps is None:
            return self.steps
        skipped = set(self.optional_steps(options))
        return tuple(step for step in self.steps if step not in skipped)

    def cleanup_reserve(self, options: Any, step_timeout: float) -> float:
        """How long this probe's cleanup may run after its deadline (one budget per cleanup step)."""
        active = set(self.steps_for(options))
        cleanup = self.configured_steps(options)[1] if self.configured_steps is not None else self.cleanup_steps
        count = sum(1 for step in cleanup if step in active)
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
    target_name: str = ""
    member: str = ""  # the fleet replica running it ('' alone): tags what it writes
    clock: Callable[[], float] = time.monotonic
    steps: list[StepResult] = field(default_factory=list)
    facts: Facts = NO_FACTS
    notes: list[str] = field(default_factory=list)
    root_cause: str | None = None
    traceback: str | None = None
    # The step that was in progress when the run was cancelled (the runner's outer bound).
    cancelled_step: str | None = None
    diagnosis: Diagnosis | None = None  # a scenario's hint; monitor/diagnosis.py decides
    certificate: PeerCertificate | None = None  # the last one a response's connection presented

    def step(self, name: str, *, cleanup: bool = False) -> Step:
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

    async def __aenter__(self) -> Step:
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
                StepResult(
                    ok=False,
                    reason=exc.reason,
                    error=exc.message,
                    status_code=exc.status_code,
                    component=exc.component,
                    skipped=exc.starved,
                    **common,
                )
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
        max_body_bytes: int | None = None,
        client: TargetClient | None = None,
    ) -> HttpResponse:
        """One request with what is left of the deadline; an unexpected status fails the step.
        `client`: another origin the target handed out (a presigned storage URL), else the target's.

        A step whose first request finds the deadline already spent got no time at all: it
        ends skipped (the run still timed out), so its route takes no blame for the earlier
        steps that used the time up."""
        first = self._attempt is None
        self._attempt = (method, path)
        left = self.run.time_left(cleanup=self.cleanup)
        if left <= 0 and first:
            raise StepFailure(
                Reason.TIMEOUT,
                f"skipped: deadline spent by earlier steps before {method} {path} was sent",
                starved=True,
            )
        response = await (client or self.run.client).request(
            method,
            path,
            timeout=left,
            json_body=json_body,
            params=params,
            content=content,
            headers=headers,
            max_body_bytes=max_body_bytes,
        )
        self._last = response
        if response.certificate is not None:
            self.run.certificate = response.certificate
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
