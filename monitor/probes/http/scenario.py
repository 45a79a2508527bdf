"""Run a check written in the config: per step the request, then the status, the assertions, the extraction.

That order makes a changed answer shape read as the named assertion that saw it, not as
an extraction that found nothing. A false assertion is `assertion_failed` with the
assertion's name (never its expression); a body that is not JSON where one is needed, too
large or too deep for the bounds, or an extraction that selects nothing is
`invalid_response`. Cleanup steps run after a failed step, like the write path's cleanup.
"""

from __future__ import annotations

import dataclasses
import json
import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

from prometheus_client import CollectorRegistry, Counter

from monitor.http.client import HttpResponse
from monitor.probes.http.expressions import MAX_TEXT_CHARS, Bindings, check_json_bounds, extracted_too_large
from monitor.probes.http.options import VAR, FileValue, HttpCheckOptions, StepSpec
from monitor.results import Diagnosis, Facts, ProbeResult, Reason, StepFailure
from monitor.scenario.base import MetricFamilies, Scenario, ScenarioAborted, ScenarioRun, Step


@dataclass(frozen=True)
class CheckFacts(Facts):
    """The failed assertion of the run (step, assertion name), for the counter and the diagnosis."""

    failed_assertion: tuple[str, str] | None = None


class AssertionFailures(MetricFamilies):
    """synthetic_probe_assertion_failures_total{target,probe,step,assertion}."""

    def __init__(self, registry: CollectorRegistry) -> None:
        super().__init__(registry)
        self.failures = Counter(
            "synthetic_probe_assertion_failures_total",
            "Config-defined CEL assertions that were false, by step and assertion name.",
            ["target", "probe", "step", "assertion"],
            registry=registry,
        )
        self._seen: dict[tuple[str, str], set[tuple[str, str]]] = {}

    def observe(self, result: ProbeResult) -> None:
        failed = getattr(result.facts, "failed_assertion", None)
        if failed is not None:
            step, assertion = failed
            self.failures.labels(result.target, result.probe, step, assertion).inc()
            self._seen.setdefault((result.target, result.probe), set()).add((step, assertion))

    def forget(self, target: str, probe: str, *, last_of_target: bool) -> None:
        for step, assertion in self._seen.pop((target, probe), set()):
            try:
                self.failures.remove(target, probe, step, assertion)
            except KeyError:
                pass


async def run_check(run: ScenarioRun, options: HttpCheckOptions) -> None:
    variables: dict[str, Any] = {}
    failed = False
    for spec in options.steps:
        if failed and not spec.cleanup:
            continue
        try:
            async with run.step(spec.name, cleanup=spec.cleanup) as step:
                missing = sorted(spec.vars_needed() - variables.keys())
                if missing:  # only a cleanup step after a failure can get here (config checks the order)
                    step.skip(f"var {', '.join(missing)} was not extracted (an earlier step failed)")
                    continue
                await _one_step(run, step, spec, variables)
        except ScenarioAborted:
            failed = True


async def _one_step(run: ScenarioRun, step: Step, spec: StepSpec, variables: dict[str, Any]) -> None:
    request = spec.request
    path = VAR.sub(lambda m: quote(str(variables[m.group(1)]), safe=""), request.path)
    params = {k: _fill(v, variables) for k, v in request.query.items()} or None
    headers: dict[str, str] = {}
    for name, value in request.headers.items():
        text = value.value() if isinstance(value, FileValue) else _fill(value, variables)
        if any(c in text for c in "\r\n\0"):
            step.fail(Reason.INVALID_RESPONSE, f"header {name}: an extracted value holds a line break")
        headers[name] = text
    json_body = _fill_json(request.json_body, variables) if request.json_body is not None else None
    content = request.body.encode() if request.body is not None else None
    started = time.perf_counter()
    response = await step.request(
        request.method,
        path,
        expect=spec.expect.statuses(),
        json_body=json_body,
        params=params,
        content=content,
        headers=headers or None,
    )
    duration_ms = (time.perf_counter() - started) * 1000.0
    body = _parsed_body(step, spec, response)
    if spec.assertions:
        context = {
            "status": response.status_code,
            "headers": _lower_headers(response),
            "body": body,
            "text": _text(response.body),
            "duration_ms": duration_ms,
            "vars": dict(variables),
        }
        bindings = Bindings(context, frozenset().union(*(a.compiled.names for a in spec.assertions)))
        for assertion in spec.assertions:
            passed, why = assertion.compiled.evaluate(bindings)
            if not passed:
                run.facts = dataclasses.replace(_facts(run), failed_assertion=(spec.name, assertion.name))
                detail = f" ({why})" if why else ""
                raise StepFailure(
                    Reason.ASSERTION_FAILED,
                    f"{request.method} {path}: assertion {assertion.name} is false{detail}",
                    response.status_code,
                )
    for var, extraction in spec.extractions.items():
        found, value = extraction.first(body)
        if not found:
            step.fail(
                Reason.INVALID_RESPONSE, f"{request.method} {path}: extract {var}: {extraction.source} selected nothing"
            )
        if extracted_too_large(value):
            step.fail(
                Reason.INVALID_RESPONSE, f"{request.method} {path}: extract {var}: the selected value is too large"
            )
        variables[var] = value


def _parsed_body(step: Step, spec: StepSpec, response: HttpResponse) -> Any:
    """The JSON body, or None when no assertion names `body` and nothing is extracted (then
    `body` is null for a non-JSON answer); where it is needed a non-JSON or oversized answer fails."""
    needed = spec.needs_body()
    try:
        body = json.loads(response.body) if response.body else None
    except RecursionError:
        if needed:
            step.fail(Reason.INVALID_RESPONSE, f"{response.method} {response.path}: JSON nested too deeply to parse")
        return None
    except (ValueError, UnicodeDecodeError):
        if needed:
            response.json()  # raises the client's own invalid_response text (HTML, malformed JSON)
        return None
    problem = check_json_bounds(body)
    if problem is not None:
        if needed:
            step.fail(Reason.INVALID_RESPONSE, f"{response.method} {response.path}: {problem}")
        return None
    return body


def _text(body: bytes) -> str:
    """The body as text, bounded; NUL becomes U+FFFD (the CEL runtime's strings end at a NUL)."""
    return body[: MAX_TEXT_CHARS * 4].decode("utf-8", errors="replace")[:MAX_TEXT_CHARS].replace("\x00", "\ufffd")


def _lower_headers(response: HttpResponse) -> dict[str, str]:
    out: dict[str, str] = {}
    for name, value in response.headers.multi_items():
        key = name.lower()
        out[key] = f"{out[key]}, {value}" if key in out else value
    return out


def _fill(text: str, variables: dict[str, Any]) -> str:
    return VAR.sub(lambda m: _as_text(variables[m.group(1)]), text)


def _fill_json(value: Any, variables: dict[str, Any]) -> Any:
    """`${var}` in the string leaves; a leaf that is exactly one `${var}` takes the var's own JSON type."""
    if isinstance(value, str):
        whole = VAR.fullmatch(value)
        return variables[whole.group(1)] if whole else _fill(value, variables)
    if isinstance(value, dict):
        return {k: _fill_json(v, variables) for k, v in value.items()}
    if isinstance(value, list):
        return [_fill_json(v, variables) for v in value]
    return value


def _as_text(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value, separators=(",", ":"))


def _facts(run: ScenarioRun) -> CheckFacts:
    return run.facts if isinstance(run.facts, CheckFacts) else CheckFacts(target_version=run.facts.target_version)


def explain(run: ScenarioRun) -> None:
    """The target itself is to blame (its generic `server`), named with the step and the assertion."""
    failed = next((s for s in run.steps if not s.ok), None)
    if failed is None or failed.reason is not Reason.ASSERTION_FAILED:
        return
    facts = run.facts if isinstance(run.facts, CheckFacts) else None
    assertion = facts.failed_assertion[1] if facts and facts.failed_assertion else "?"
    run.diagnosis = Diagnosis(
        "server",
        f"target {run.target_name} answered, but assertion {assertion} of step {failed.name} is false"
        " (its answer changed: content, shape or speed)",
    )


def configured_steps(options: HttpCheckOptions) -> tuple[tuple[str, ...], tuple[str, ...]]:
    return tuple(s.name for s in options.steps), tuple(s.name for s in options.steps if s.cleanup)


CHECK = Scenario(
    name="http",
    target_kind="http",
    steps=(),
    options_model=HttpCheckOptions,
    run=run_check,
    description="a check written in the config: HTTP steps, CEL assertions, JSONPath extraction",
    configured_steps=configured_steps,
    metric_families=AssertionFailures,
    facts_model=CheckFacts,
    explain=explain,
)
