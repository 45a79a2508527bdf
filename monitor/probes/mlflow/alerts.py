"""The alerts the MLflow kind adds, declared here (the engine judges them, rules.yml has the same names).

MLflowWorkerFailure is judged on every run whatever its kind: its Prometheus rule matches
`reason="worker_failure"` of any target, and both paths keep one meaning.
"""

from __future__ import annotations

from collections.abc import Iterator

from monitor.results import Dependency, Reason
from monitor.scenario.contract import AlertInput, AlertVerdict, KindAlert, QuorumRule, Verdict

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

    # A worker failure the target's culprit puts elsewhere (workers killed while held by a
    # stalled store or a locked table) pages as that part, not as MLflowWorkerFailure.
    culprit, own = result.target_diagnosis, result.diagnosis
    held = worker is not None and culprit is not None and own is not None and culprit.component != own.component
    yield "", Verdict.NEUTRAL if held else Verdict.BAD if worker else Verdict.GOOD, describe


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


WORKER_RULE = QuorumRule(
    # Workers killed while the target's one culprit is a store (held by a stalled S3 or a
    # locked table until gunicorn's timeout) page as that store, not as worker failures.
    # Over the same 5 minutes as the failures: the culprit's series goes when the target
    # recovers, and the failures it explained must not page then.
    failing=(
        'increase(synthetic_probe_step_failures_total{reason="worker_failure"}[5m]) > 0'
        " unless on (job, instance, target)"
        ' max_over_time(synthetic_target_diagnosis{component=~"backend_store|artifact_store"}[5m])'
    ),
    # Every location exports the worker_failure series from start-up (at 0): who reports.
    reporting='synthetic_probe_step_failures_total{reason="worker_failure"}',
    summary="Server workers failing behind {{ $labels.target }} (probe {{ $labels.probe }})",
    description=(
        "Probe {{ $labels.probe }} against target {{ $labels.target }} got a closed/reset connection or"
        " HTTP 502/503/504 in the last 5 minutes from {{ $value }} location(s), {quorum}:"
        " server workers are being killed (e.g. gunicorn worker timeout) or the upstream is down."
    ),
    warning_summary=(
        "Server workers failing behind {{ $labels.target }} (probe {{ $labels.probe }})"
        " from location {{ $labels.location }} only"
    ),
    warning_description=(
        "Probe {{ $labels.probe }} against target {{ $labels.target }} got a closed/reset connection or"
        " HTTP 502/503/504 in the last 5 minutes from location {{ $labels.location }}. {below}"
    ),
    runbook="mlflowworkerfailure",
    maintenance_range="5m",
)

BACKEND_RULE = QuorumRule(
    failing=(
        '(synthetic_mlflow_dependency_up{dependency="backend_store"} == 0)'
        " + on (job, instance, target) group_right (dependency) (synthetic_probe_consecutive_failures > 0)"
    ),
    reporting="synthetic_probe_consecutive_failures",
    summary="MLflow's {{ $labels.dependency }} is unavailable ({{ $labels.target }}, probe {{ $labels.probe }})",
    description=(
        "Probe {{ $labels.probe }} against MLflow target {{ $labels.target }} fails and MLflow reports"
        " its backend store (the tracking database) failing, from {{ $value }} location(s),"
        " {quorum}. Diagnosis component backend_store: check the database, not the MLflow workers."
    ),
    warning_summary=(
        "MLflow's {{ $labels.dependency }} is unavailable ({{ $labels.target }}, probe {{ $labels.probe }})"
        " from location {{ $labels.location }} only"
    ),
    warning_description=(
        "Probe {{ $labels.probe }} against MLflow target {{ $labels.target }} fails and MLflow reports"
        " its backend store failing, seen from location {{ $labels.location }}. {below}"
    ),
    runbook="mlflowdependencyunavailable",
    extra=", dependency",
    for_="30s",
    # The static dependency label keeps it apart from the artifact store's warning rule.
    warning_labels={"dependency": "backend_store"},
)

ALERTS = (
    KindAlert(
        WORKER_FAILURE,
        "critical",
        _worker_failure,
        lambda t, p, _d: f"Server workers failing behind {t} (probe {p})",
        every_kind=True,
        confirming_reason="worker_failure",
        quorum_rule=WORKER_RULE,
    ),
    # No run works without MLflow's database, while a failing artifact store breaks artifact logging only.
    KindAlert(
        DEPENDENCY_UNAVAILABLE,
        "critical",
        _stores,
        lambda t, p, d: f"MLflow's {d} is unavailable ({t}, probe {p})",
        dependency_severity={"backend_store": "critical", "artifact_store": "warning"},
        confirming_reason="dependency_unavailable",
        quorum_rule=BACKEND_RULE,
    ),
)
