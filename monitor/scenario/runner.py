"""Run one scenario once and freeze what happened into a ProbeResult.

This is the only place that catches everything: whatever a scenario does, the caller
gets a result (a bug becomes `internal_error` with its traceback kept for the log).
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
import traceback
from collections.abc import Callable
from typing import Any

from monitor.diagnosis import diagnose
from monitor.http.client import TargetClient
from monitor.results import ProbeResult, Reason, StepResult
from monitor.scenario.base import Scenario, ScenarioAborted, ScenarioRun, TargetKind
from monitor.scenario.registry import KINDS

# Past the deadline and the cleanup reserve, this much more for code between steps before
# the outer bound cancels the run (steps bound themselves; this only catches a hang).
OUTER_GRACE_SECONDS = 1.0


async def run_probe(
    scenario: Scenario,
    client: TargetClient,
    options: Any,
    *,
    probe: str,
    target: str,
    timeout: float,
    step_timeout: float | None = None,
    member: str = "",
    clock: Callable[[], float] = time.monotonic,
) -> ProbeResult:
    started_at = time.time()
    start = clock()
    run = ScenarioRun(
        client=client,
        deadline=start + timeout,
        step_timeout=min(step_timeout or timeout, timeout),
        probe_name=probe,
        target_name=target,
        member=member,
        clock=clock,
        facts=scenario.facts_model(),
    )
    # Steps bound themselves; this outer bound only catches code between steps that hangs.
    # It covers every cleanup step's budget, so it never cancels the cleanup it promises.
    outer = timeout + scenario.cleanup_reserve(options, run.step_timeout) + OUTER_GRACE_SECONDS
    try:
        async with asyncio.timeout(outer):
            await scenario.run(run, options)
    except ScenarioAborted:
        pass
    except TimeoutError:
        # Blame the step that was running when the bound fired; `scenario` only for a hang between steps.
        name = run.cancelled_step or "scenario"
        where = f"in step {name}" if run.cancelled_step else "outside any step"
        run.steps.append(
            StepResult(
                name,
                ok=False,
                duration_seconds=clock() - start,
                reason=Reason.TIMEOUT,
                error=f"the run overran its deadline and cleanup budget ({outer:g}s) {where}",
            )
        )
    except Exception as exc:  # a bug in the scenario: counted, never fatal
        run.traceback = traceback.format_exc()
        run.steps.append(
            StepResult(
                "scenario",
                ok=False,
                duration_seconds=clock() - start,
                reason=Reason.INTERNAL_ERROR,
                error=f"{type(exc).__name__}: {exc}",
            )
        )
    if scenario.explain is not None:
        try:
            scenario.explain(run)
        except Exception:  # a bug in a hint must not lose the run: keep the unexplained result
            run.traceback = (run.traceback or "") + traceback.format_exc()
    result = ProbeResult(
        probe=probe,
        target=target,
        scenario=scenario.name,
        started_at=started_at,
        duration_seconds=clock() - start,
        steps=tuple(run.steps),
        timeout_seconds=timeout,
        facts=run.facts,
        root_cause=run.root_cause,
        notes=tuple(run.notes),
        traceback=run.traceback,
        certificate=run.certificate,
    )
    kind = KINDS.get(scenario.target_kind) or TargetKind(scenario.target_kind)
    diagnosis = diagnose(result, kind.server_component, run.diagnosis, kind.diagnose, kind.component_runbooks())
    return dataclasses.replace(result, diagnosis=diagnosis) if diagnosis else result
