"""The generic diagnosis rules (monitor/diagnosis.py): what a failed step means when
neither the step, the scenario nor the target's kind knows better.

The server component is a made-up name on purpose: these rules know no scenario and no
kind, so whatever a kind calls its server is what they blame.
"""

from __future__ import annotations

import pytest

from monitor.diagnosis import diagnose
from monitor.results import Diagnosis, ProbeResult, Reason, StepResult

SERVER = "some_server"


def failed(reason: Reason | None, error: str = "failed", status: int | None = None) -> ProbeResult:
    steps = (
        StepResult("first", True, 0.01),
        StepResult("second", False, 0.5, reason=reason, error=error, status_code=status),
    )
    return ProbeResult("probe", "target", "scenario", 0.0, 1.0, steps, 5.0)


@pytest.mark.parametrize(
    ("reason", "status", "component", "words"),
    [
        (Reason.VALIDATION_FAILED, 200, SERVER, "other data than was written"),
        (Reason.INVALID_RESPONSE, 200, SERVER, "not what the API returns"),
        (Reason.DEPENDENCY_UNAVAILABLE, 200, SERVER, "dependencies unavailable"),
        (Reason.HTTP_ERROR, 405, "config", "HTTP 405: wrong URL"),
        (Reason.HTTP_ERROR, 404, "config", "HTTP 404: wrong URL"),
        (Reason.HTTP_ERROR, 418, SERVER, "unexpected answer HTTP 418 from the service"),
        (Reason.HTTP_ERROR, None, SERVER, "unexpected answer from the service"),
    ],
)
def test_generic_branches_name_the_part_and_say_why(
    reason: Reason, status: int | None, component: str, words: str
) -> None:
    diagnosis = diagnose(failed(reason, status=status), SERVER)
    assert diagnosis is not None
    assert diagnosis.component == component
    assert words in diagnosis.summary
    # Every summary ends with where it happened: the step and its reason.
    assert diagnosis.summary.endswith(f"(step second, {reason.value})")


def test_a_405_that_is_not_an_http_error_is_not_blamed_on_the_config() -> None:
    """405 means "wrong URL" only for a plain HTTP error: the same status on a step that
    failed validation is the service's doing."""
    diagnosis = diagnose(failed(Reason.VALIDATION_FAILED, status=405), SERVER)
    assert diagnosis is not None and diagnosis.component == SERVER


def test_a_step_without_a_reason_gets_the_fallback() -> None:
    diagnosis = diagnose(failed(None), SERVER)
    assert diagnosis == Diagnosis(SERVER, "unexpected answer from the service (step second, failed)")


def test_the_kind_rule_comes_before_the_generic_ones_and_none_falls_through() -> None:
    result = failed(Reason.VALIDATION_FAILED)
    own = diagnose(result, SERVER, kind_rule=lambda step: ("config", "the kind knows better"))
    assert own == Diagnosis("config", "the kind knows better (step second, validation_failed)")
    generic = diagnose(result, SERVER, kind_rule=lambda step: None)
    assert generic is not None and generic.component == SERVER and "other data" in generic.summary


def test_a_passing_run_has_no_diagnosis() -> None:
    assert diagnose(ProbeResult("p", "t", "s", 0.0, 1.0, (StepResult("a", True, 0.1),), 5.0), SERVER) is None
