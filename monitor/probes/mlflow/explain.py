"""MLflow's error hints: which store (backend or artifact) or the server a failed step blames."""

from __future__ import annotations

import dataclasses
import json
import re

from monitor.http.client import HttpResponse
from monitor.probes.mlflow.api import learnt
from monitor.results import Diagnosis, Reason, StepResult
from monitor.scenario.base import (
    ScenarioRun,
)


def error_hint(response: HttpResponse) -> str | None:
    """MLflow 3's host check answers a plain-text 403: say how to let the probe in."""
    if response.status_code == 403 and b"Invalid Host header" in response.body:
        return (
            " (MLflow 3 rejects Host names it does not know: start the server with "
            "--allowed-hosts including this target's host, or probe it by localhost or IP)"
        )
    return None


def classify_error(response: HttpResponse) -> Reason | None:
    """MLflow's own JSON error (`{"error_code": ..., "message": ...}`) on a 502/503/504 (its 503
    TEMPORARILY_UNAVAILABLE when its database is down) proves its worker was alive and
    answering: an `http_error` unless a scenario knows better, never `worker_failure`."""
    if response.status_code in (502, 503, 504) and _error_code(response.body):
        return Reason.HTTP_ERROR
    return None


def _error_code(body: bytes) -> str | None:
    if not body.lstrip().startswith(b"{"):
        return None
    try:
        data = json.loads(body)
    except (ValueError, UnicodeDecodeError, RecursionError):
        return None
    code = data.get("error_code") if isinstance(data, dict) else None
    return code if isinstance(code, str) and code else None


def diagnose_step(step: StepResult) -> tuple[str, str] | None:
    """MLflow's own diagnosis rule: its host check's 403 is the monitor's configuration."""
    if step.status_code == 403 and "Invalid Host header" in (step.error or ""):
        return "config", "the server rejects the Host the monitor uses (MLflow --allowed-hosts)"
    return None


# Which steps prove which dependency works (MLflow's /health answers without the database).
DB_STEPS = frozenset(
    {
        "experiments_search",
        "registered_models_search",
        "runs_search",
        "experiment_get_or_create",
        "runs_create",
        "runs_log_metric",
        "runs_log_parameter",
        "runs_update",
        "runs_get",
        "runs_delete",
        "trace_export",
        "trace_get",
        "trace_delete",
    }
)


RUN_STEPS = ("runs_create", "runs_log_metric", "runs_log_parameter", "runs_update", "runs_get")


WRITE_STEPS = frozenset({"runs_create", "runs_log_metric", "runs_log_parameter", "runs_update"})


ARTIFACT_STEPS = frozenset({"artifact_put", "artifact_get", "artifact_abort", "artifact_delete"})

# `Diagnosis.evidence` tags for the one-culprit rule (monitor/probes/mlflow/culprit.py).
TIMING = "timing"  # inferred from what timed out after what answered, not seen failing
SUDDEN_DEATH = "sudden_death"  # a worker dropped a request it had held only briefly
# A worker timeout (gunicorn's --timeout, at least a few seconds in any sane setup) kills a
# worker stuck on a request only after this long. A connection dropped sooner was a worker
# killed or crashed for another reason (measured: SIGKILLed workers drop requests 0.1-0.2 s in).
WATCHDOG_SECONDS = 2.0


def sudden_drop(step: StepResult) -> bool:
    """The connection closed without an answer, too soon for any worker timeout."""
    return (
        step.reason is Reason.WORKER_FAILURE
        and step.status_code is None
        and not step.skipped
        and step.duration_seconds < WATCHDOG_SECONDS
    )


# MLflow's SQLAlchemy store answers 503 TEMPORARILY_UNAVAILABLE for an OperationalError
# and quotes it: "(psycopg.OperationalError) connection failed: ...".
_DB_ERROR = re.compile(
    r"OperationalError|psycopg|sqlalchemy|sqlite3?\.|pymysql|mysql|database|could not connect to server"
    r"|connection (?:failed|refused)|server closed the connection",
    re.I,
)


def explain(run: ScenarioRun) -> None:
    """MLflow's error hints: name the backend store or the artifact store when the evidence does.

    - a 503 TEMPORARILY_UNAVAILABLE quoting a database error is the backend store down;
    - an artifact step failing with a 5xx or a timeout after the run steps of the same run
      passed is the artifact store (MLflow and its database just answered);
    - a write step timing out after an earlier database-backed step of the same run passed
      stays a `timeout`, blamed on the backend store: the server and its database answered
      moments before and the write is the first request that needs a row/table lock or a
      free database connection, so a lock or a saturated pool is the likely cause, not
      the workers (a dead worker closes the connection: `worker_failure`).
    Each run also records which dependency it saw working or failing (`dependency_up`).
    """
    steps = run.steps
    up: dict[str, bool] = {}
    timed_out = {s.name for s in steps if s.reason is Reason.TIMEOUT}
    for index, step in enumerate(steps):
        if step.ok and not step.skipped:
            if step.name in DB_STEPS:
                up.setdefault("backend_store", True)
            if step.name in ("artifact_put", "artifact_get"):
                up.setdefault("artifact_store", True)
            continue
        if step.ok or step.skipped:
            continue  # a step starved by a spent deadline sent nothing: no evidence either way
        pool = _pool_trouble(step)
        if pool is not None:
            steps[index] = _blame(step, "backend_store")
            up["backend_store"] = False
            run.diagnosis = Diagnosis("backend_store", f"{pool} at {step.name}")
        elif _is_backend_store_error(step):
            steps[index] = _blame(step, "backend_store")
            up["backend_store"] = False
        elif step.name in ARTIFACT_STEPS and _is_artifact_store_error(step, steps):
            steps[index] = _blame(step, "artifact_store")
            up["artifact_store"] = False
        elif step.name in DB_STEPS and step.status_code == 500 and "HTML page" in (step.error or ""):
            # Not MLflow's JSON error but Flask's generic page: the worker died mid-request.
            # Measured on gunicorn + PostgreSQL: a WORKER TIMEOUT aborts a worker waiting on
            # the database, psycopg turns the abort into a cancelled query, and the dying
            # worker answers this page instead of dropping the connection.
            steps[index] = dataclasses.replace(step, reason=Reason.WORKER_FAILURE, component="mlflow_server")
            run.diagnosis = Diagnosis(
                "mlflow_server",
                f"an MLflow worker died handling {step.name} (Flask's HTML 500, not MLflow's JSON error):"
                " look for WORKER TIMEOUT in MLflow's log",
            )
    failed = next((s for s in steps if not s.ok), None)
    if failed is not None and sudden_drop(failed) and run.diagnosis is None:
        run.diagnosis = Diagnosis(
            "mlflow_server",
            f"an MLflow worker died mid-request: {failed.name} lost its connection after"
            f" {failed.duration_seconds:.2g}s, too soon for a worker timeout (killed, crashed or restarted:"
            " look for signals, OOM kills and restarts)",
            SUDDEN_DEATH,
        )
    elif failed is not None and failed.reason is Reason.DEPENDENCY_UNAVAILABLE and failed.component:
        learnt(run, dependency=failed.component)
        if failed.component == "artifact_store":
            slow = failed.name in timed_out
            run.diagnosis = Diagnosis(
                "artifact_store",
                f"the artifact store is {'slow or stalled' if slow else 'failing'}: {failed.name} "
                f"{'timed out' if slow else f'got HTTP {failed.status_code}'} while the run steps passed",
            )
        elif run.diagnosis is None or run.diagnosis.component != "backend_store":
            run.diagnosis = Diagnosis(
                "backend_store", f"MLflow reports its backend store (database) unavailable at {failed.name}"
            )
    elif failed is not None and failed.reason is Reason.TIMEOUT and failed.name in WRITE_STEPS:
        earlier = [s.name for s in steps[: steps.index(failed)] if s.ok and s.name in DB_STEPS]
        if earlier:
            run.diagnosis = Diagnosis(
                "backend_store",
                f"database lock or saturation: {failed.name} timed out while {earlier[-1]} of the same run"
                " had just answered",
                TIMING,
            )
    elif failed is not None and failed.skipped:
        run.diagnosis = _starved(steps, failed)
    if up:
        learnt(run, dependency_up=up)
    # A run the server may have made that we could not delete: runs/create ended on our side
    # without an answer (the server may still finish it), or runs/delete failed.
    if any(
        (s.name == "runs_create" and s.reason in (Reason.TIMEOUT, Reason.WORKER_FAILURE)) or s.name == "runs_delete"
        for s in steps
        if not s.ok
    ):
        learnt(run, cleanup_pending=True)
    # Likewise an artifact: a PUT stuck in a stalled S3 may be stored after our DELETE ran.
    put = next((s for s in steps if s.name == "artifact_put"), None)
    delete = next((s for s in steps if s.name == "artifact_delete"), None)
    if (
        delete is not None
        and delete.path
        and (not delete.ok or (put is not None and not put.ok and not put.skipped and put.status_code is None))
    ):
        learnt(run, cleanup_pending=True, leftover_artifacts=(delete.path,))


# SQLAlchemy's pool timeout, which MLflow answers as HTTP 400 BAD_REQUEST (measured):
# "QueuePool limit of size 1 overflow 0 reached, connection timed out, timeout 1.00".
_POOL_TIMEOUT = re.compile(r"QueuePool limit|connection timed out, timeout", re.I)
# PostgreSQL refusing a new session: a role's or database's CONNECTION LIMIT, or max_connections.
_TOO_MANY = re.compile(r"too many connections|too many clients|remaining connection slots are reserved", re.I)


def _pool_trouble(step: StepResult) -> str | None:
    """The summary of a database connection shortage MLflow answered for, or None."""
    error = step.error or ""
    if step.status_code is None:
        return None
    if _POOL_TIMEOUT.search(error):
        return (
            "MLflow's database connection pool is exhausted (SQLAlchemy QueuePool timeout, answered as"
            f" HTTP {step.status_code}): connections are held by slow queries or locks, or the pool is too small"
        )
    if _TOO_MANY.search(error):
        return (
            "PostgreSQL refuses MLflow's new connections (too many connections: the role's or database's"
            " CONNECTION LIMIT or max_connections is reached)"
        )
    return None


def _starved(steps: list[StepResult], failed: StepResult) -> Diagnosis:
    """A step that got no time: the run's deadline went to the slowest earlier step, whose route
    says which part was slow (the starved step's own route is no evidence)."""
    earlier = [s for s in steps[: steps.index(failed)] if s.ok and not s.skipped]
    slowest = max(earlier, key=lambda s: s.duration_seconds, default=None)
    if slowest is None:
        return Diagnosis("mlflow_server", f"the deadline was spent before {failed.name} started")
    component = (
        "backend_store"
        if slowest.name in DB_STEPS
        else "artifact_store"
        if slowest.name in ("artifact_put", "artifact_get")
        else "mlflow_server"
    )
    return Diagnosis(
        component,
        f"slow, not down: {slowest.name} took {slowest.duration_seconds:.3g}s and spent the run's deadline,"
        f" so {failed.name} got no time (skipped, not blamed)",
        TIMING,
    )


def _is_backend_store_error(step: StepResult) -> bool:
    error = step.error or ""
    return step.status_code == 503 and "TEMPORARILY_UNAVAILABLE" in error and bool(_DB_ERROR.search(error))


def _is_artifact_store_error(step: StepResult, steps: list[StepResult]) -> bool:
    server_error = step.status_code is not None and step.status_code >= 500
    timed_out = step.reason is Reason.TIMEOUT
    ran = {s.name: s.ok for s in steps if s.name in RUN_STEPS}
    return (server_error or timed_out) and bool(ran) and all(ran.values())


def _blame(step: StepResult, component: str) -> StepResult:
    return dataclasses.replace(step, reason=Reason.DEPENDENCY_UNAVAILABLE, component=component)
