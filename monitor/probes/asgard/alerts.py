"""The alert the Asgard kind adds: a dependency its status endpoint reports down."""

from __future__ import annotations

from collections.abc import Iterator

from monitor.results import Dependency, Reason
from monitor.scenario.contract import AlertInput, AlertVerdict, KindAlert, Verdict

DEPENDENCY_UNAVAILABLE = "AsgardDependencyUnavailable"


def _dependencies(given: AlertInput) -> Iterator[AlertVerdict]:
    """Bad while Asgard reports a dependency down; neutral while the cross-check explains it
    (the upstream probe's own alert covers the outage) or the run could not tell."""
    result = given.result
    t, p = result.target, result.probe
    states = result.facts.dependency_states()
    down = [d for d, s in states.items() if s in (Dependency.DOWN, Dependency.EXPLAINED)]
    if not down and Reason.DEPENDENCY_UNAVAILABLE in result.reasons:
        down = ["unknown"]
    step = next((s for s in result.steps if s.reason is Reason.DEPENDENCY_UNAVAILABLE), None)
    for dependency in sorted(set(down) | given.known):
        state = states.get(dependency)
        if state is Dependency.EXPLAINED:
            verdict = Verdict.NEUTRAL
        elif dependency in down:
            verdict = Verdict.BAD
        elif state is Dependency.UP or result.ok:
            verdict = Verdict.GOOD
        else:
            verdict = Verdict.NEUTRAL  # this run could not tell (status step never answered)

        def describe(count: int, dependency: str = dependency) -> str:
            return (
                f"The Asgard status endpoint of target {t} (probe {p}) reported its dependency {dependency}"
                f" unavailable in {count} run(s) in a row. " + given.step_text(step)
            )

        yield dependency, verdict, describe


ALERTS = (
    KindAlert(
        DEPENDENCY_UNAVAILABLE,
        "warning",
        _dependencies,
        lambda t, _p, d: f"Asgard reports {d} unavailable ({t})",
        confirming_reason="dependency_unavailable",
    ),
)
