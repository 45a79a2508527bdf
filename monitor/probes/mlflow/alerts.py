"""The alerts the MLflow kind adds, declared here (the engine judges them, rules.yml has the same names).

MLflowWorkerFailure is judged on every run whatever its kind: its Prometheus rule matches
`reason="worker_failure"` of any target, and both paths keep one meaning.
"""

from __future__ import annotations

from collections.abc import Iterator

from monitor.results import Dependency, Reason
from monitor.scenario.contract import AlertInput, AlertVerdict, KindAlert, Verdict

WORKER_FAILURE = "MLflowWorkerFailure"
DEPENDENCY_UNAVAILABLE = "MLflowDependencyUnavailable"


def _worker_failure(given: AlertInput) -> Iterator[AlertVerdict]:
    result = given.result
    t, p = result.target, result.probe
    worker = next((s for s in result.steps if s.reason is Reason.WORKER_FAILURE), None)

    def describe(count: int) -> str:
        return (
            f"Probe {p} against target {t} got a closed/reset connection or HTTP 502/503/504 in {count} run(s)"
            f" in a row: server workers are being killed (e.g. gunicorn worker timeout) or the upstream is"
            f" down. Last: " + given.step_text(worker) + given.diagnosis
        )

    yield "", Verdict.BAD if worker else Verdict.GOOD, describe


def _stores(given: AlertInput) -> Iterator[AlertVerdict]:
    """MLflow's backend/artifact store, from the run's evidence: a store the run saw failing
    is bad, one it saw working is good, one it did not reach is neutral."""
    result = given.result
    t, p = result.target, result.probe
    evidence = result.facts.dependency_states()
    step = next((s for s in result.steps if s.reason is Reason.DEPENDENCY_UNAVAILABLE), None)
    for dependency in sorted(set(evidence) | given.known):
        state = evidence.get(dependency)
        verdict = (
            Verdict.BAD if state is Dependency.DOWN else Verdict.GOOD if state is Dependency.UP else Verdict.NEUTRAL
        )

        def describe(count: int, dependency: str = dependency) -> str:
            return (
                f"MLflow target {t} (probe {p}): its {dependency} failed in {count} run(s) in a row. "
                + given.step_text(step)
                + given.diagnosis
            )

        yield str(dependency), verdict, describe


ALERTS = (
    KindAlert(
        WORKER_FAILURE,
        "critical",
        _worker_failure,
        lambda t, p, _d: f"Server workers failing behind {t} (probe {p})",
        every_kind=True,
    ),
    # No run works without MLflow's database, while a failing artifact store breaks artifact logging only.
    KindAlert(
        DEPENDENCY_UNAVAILABLE,
        "critical",
        _stores,
        lambda t, p, d: f"MLflow's {d} is unavailable ({t}, probe {p})",
        dependency_severity={"backend_store": "critical", "artifact_store": "warning"},
    ),
)
