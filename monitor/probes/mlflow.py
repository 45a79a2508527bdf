"""MLflow tracking server scenarios: the read path and the write path with read-back.

The write path behaves like a careful user: one long-lived probe experiment, a run
tagged as synthetic, a metric and a param written and read back (data integrity, not
just HTTP 200), optionally a byte round-trip through the artifact proxy, and the run
deleted again even when a step in between failed.
"""

from __future__ import annotations

import dataclasses
import random
import re
import secrets
import time
from dataclasses import dataclass
from typing import Any, cast
from urllib.parse import quote

from prometheus_client import CollectorRegistry, Gauge
from pydantic import Field

from monitor.http import HttpResponse, TargetClient, check_status
from monitor.probes.base import (
    DefaultProbe,
    MetricFamilies,
    Scenario,
    ScenarioOptions,
    ScenarioRun,
    StandaloneTarget,
    Step,
    TargetKind,
)
from monitor.results import Diagnosis, Facts, ProbeResult, Reason, StepResult

API = "/api/2.0/mlflow"
ARTIFACTS_API = "/api/2.0/mlflow-artifacts/artifacts"
SYNTHETIC_TAG = "synthetic_monitor.synthetic"
PROBE_TAG = "synthetic_monitor.probe"
MEMBER_TAG = "synthetic_monitor.member"  # which fleet replica wrote the run
METRIC_KEY = "synthetic_probe_value"
PARAM_KEY = "synthetic_probe_token"
# What /version may answer: "3.17.2", "2.9.0rc1", "3.1.0.dev0+g1234abc".
VERSION_PATTERN = re.compile(r"[0-9A-Za-z][0-9A-Za-z.+_-]{0,63}")


@dataclass(frozen=True)
class MlflowFacts(Facts):
    """What a run of an MLflow scenario learnt (None: not learnt), besides the server version."""

    dependency: str | None = None  # the store the failed step blames (backend_store, artifact_store)
    dependency_up: dict[str, bool] | None = None  # the stores this run's own steps saw working or failing
    cleanup_pending: bool | None = None  # the run may have left a run or an artifact behind
    leftover_artifacts: tuple[str, ...] | None = None  # artifact paths to delete once MLflow answers

    def dependencies_seen(self) -> dict[str, bool] | None:
        return self.dependency_up

    def sweep_pending(self) -> bool:
        return bool(self.cleanup_pending)

    def leftovers(self) -> list[str]:
        return list(self.leftover_artifacts or ())


def _learnt(run: ScenarioRun, **facts: Any) -> None:
    current = run.facts if isinstance(run.facts, MlflowFacts) else MlflowFacts(target_version=run.facts.target_version)
    run.facts = dataclasses.replace(current, **facts)


class MlflowStoreGauges(MetricFamilies):
    """synthetic_mlflow_dependency_up{target, dependency}: MLflow's backend/artifact store as
    the latest run that reached it saw it. Each series remembers the probe whose run set it:
    when that probe stops reaching the store (or is removed) the series goes, instead of
    showing an old value."""

    def __init__(self, registry: CollectorRegistry) -> None:
        super().__init__(registry)
        self.dependency_up = Gauge(
            "synthetic_mlflow_dependency_up",
            "MLflow's backend/artifact store as the latest run that reached it saw it (1 up, 0 down); absent when unknown.",
            ["target", "dependency"],
            registry=registry,
        )
        self._source: dict[tuple[str, str], str] = {}  # (target, dependency) -> probe

    def observe(self, result: ProbeResult) -> None:
        """Set what this run proved; drop what only this probe had proved before and this run
        could not tell (MLflow unreachable: no evidence either way)."""
        evidence = result.facts.dependencies_seen() or {}
        t = result.target
        for dependency, up in evidence.items():
            self.dependency_up.labels(t, str(dependency)).set(1 if up else 0)
            self._source[(t, str(dependency))] = result.probe
        for key, source in list(self._source.items()):
            if source == result.probe and key[0] == t and key[1] not in evidence:
                self._drop(key)

    def forget(self, target: str, probe: str, *, last_of_target: bool) -> None:
        for key, source in list(self._source.items()):
            if source == probe:
                self._drop(key)

    def _drop(self, key: tuple[str, str]) -> None:
        del self._source[key]
        try:
            self.dependency_up.remove(*key)
        except KeyError:
            pass


class ReadOptions(ScenarioOptions):
    max_results: int = Field(default=10, ge=1, le=1000)
    # The runs search: filtered and ordered, the query that turns slow when a migration
    # loses an index on the runs table.
    runs_filter: str = "attributes.status = 'FINISHED'"
    runs_order_by: str = "attributes.start_time DESC"


class WriteOptions(ScenarioOptions):
    experiment_name: str = Field(default="synthetic-monitor", min_length=1)
    artifacts: bool = False


async def run_read(run: ScenarioRun, options: ReadOptions) -> None:
    async with run.step("health") as step:
        await step.request("GET", "/health")
    async with run.step("experiments_search") as step:
        # MLflow 3 rejects a search without max_results.
        data = (
            await step.request("POST", f"{API}/experiments/search", json_body={"max_results": options.max_results})
        ).json_object()
        experiments = _require_list(step, data, "experiments")
    async with run.step("registered_models_search") as step:
        # GET only (POST is 405); an empty registry answers {}.
        data = (
            await step.request("GET", f"{API}/registered-models/search", params={"max_results": options.max_results})
        ).json_object()
        _require_list(step, data, "registered_models")
    async with run.step("runs_search") as step:
        ids = [str(e["experiment_id"]) for e in experiments if isinstance(e, dict) and e.get("experiment_id")]
        if not ids:
            step.skip("no experiment to search runs in")
        else:
            body = {
                "experiment_ids": ids,
                "filter": options.runs_filter,
                "order_by": [options.runs_order_by],
                "run_view_type": "ACTIVE_ONLY",
                "max_results": options.max_results,
            }
            # No matching run answers {}: fine, the query itself is what is timed.
            data = (await step.request("POST", f"{API}/runs/search", json_body=body)).json_object()
            _require_list(step, data, "runs")
    async with run.step("version") as step:
        await _read_version(run, step)


async def _read_version(run: ScenarioRun, step: Step) -> None:
    """GET /version (plain text) into the `target_version` fact, for synthetic_target_info.

    A server or proxy without the endpoint (404) is skipped, not failed: the version is
    context for dashboards, not a health signal.
    """
    response = await step.request("GET", "/version", expect={200, 404}, headers={"Accept": "text/plain"})
    if response.status_code == 404:
        step.skip("the server has no /version endpoint")
        return
    version = response.text.strip()
    if not VERSION_PATTERN.fullmatch(version):
        step.fail(Reason.INVALID_RESPONSE, f"GET /version: expected a version string, got {version[:60]!r}")
    run.facts = dataclasses.replace(run.facts, target_version=version)  # the base Facts field


def probe_tags(probe: str, member: str) -> list[dict[str, str]]:
    """What marks what a probe writes (runs, model versions): synthetic, whose probe, and in
    a fleet whose member, so the janitors find their own leftovers and nobody else's."""
    tags = [{"key": SYNTHETIC_TAG, "value": "true"}, {"key": PROBE_TAG, "value": probe}]
    return tags + ([{"key": MEMBER_TAG, "value": member}] if member else [])


async def create_probe_run(step: Step, run: ScenarioRun, experiment_id: str) -> tuple[str, str]:
    """runs/create for the write and registry paths: (run id, artifact URI)."""
    probe = run.probe_name or "probe"
    now_ms = int(time.time() * 1000)
    body = {
        "experiment_id": experiment_id,
        "start_time": now_ms,
        "run_name": f"synthetic-{probe}-{now_ms}",
        "tags": probe_tags(probe, run.member),
    }
    response = await step.request("POST", f"{API}/runs/create", json_body=body)
    info = _dig(step, response.json_object(), "run", "info")
    return _require_str(step, info, "run_id"), str(info.get("artifact_uri", ""))


async def run_write(run: ScenarioRun, options: WriteOptions) -> None:
    async with run.step("experiment_get_or_create") as step:
        experiment_id = await _experiment_get_or_create(step, options.experiment_name)
    run_id: str | None = None
    try:
        async with run.step("runs_create") as step:
            created, artifact_uri = await create_probe_run(step, run, experiment_id)
            run_id = created
        metric_value = round(random.uniform(0.0, 1000.0), 6)
        param_value = secrets.token_hex(8)
        async with run.step("runs_log_metric") as step:
            await step.request(
                "POST",
                f"{API}/runs/log-metric",
                json_body={
                    "run_id": run_id,
                    "key": METRIC_KEY,
                    "value": metric_value,
                    "timestamp": int(time.time() * 1000),
                    "step": 0,
                },
            )
        async with run.step("runs_log_parameter") as step:
            await step.request(
                "POST",
                f"{API}/runs/log-parameter",
                json_body={"run_id": run_id, "key": PARAM_KEY, "value": param_value},
            )
        async with run.step("runs_update") as step:
            await step.request(
                "POST",
                f"{API}/runs/update",
                json_body={"run_id": run_id, "status": "FINISHED", "end_time": int(time.time() * 1000)},
            )
        async with run.step("runs_get") as step:
            data = (await step.request("GET", f"{API}/runs/get", params={"run_id": run_id})).json_object()
            _verify_read_back(step, data, metric_value, param_value)
        if options.artifacts:
            await _artifact_round_trip(run, _artifact_path(experiment_id, created, artifact_uri))
    finally:
        if run_id is not None:
            async with run.step("runs_delete", cleanup=True) as step:
                await step.request("POST", f"{API}/runs/delete", json_body={"run_id": run_id})


async def _experiment_get_or_create(step: Step, name: str) -> str:
    """One probe experiment forever: look it up, create it once, tolerate a racing replica."""
    found = await step.request(
        "GET", f"{API}/experiments/get-by-name", params={"experiment_name": name}, expect={200, 404}
    )
    if found.status_code == 200:
        experiment = _dig(step, found.json_object(), "experiment")
        experiment_id = _require_str(step, experiment, "experiment_id")
        if experiment.get("lifecycle_stage") == "deleted":
            await step.request("POST", f"{API}/experiments/restore", json_body={"experiment_id": experiment_id})
        return experiment_id
    created = await step.request(
        "POST",
        f"{API}/experiments/create",
        json_body={"name": name, "tags": [{"key": SYNTHETIC_TAG, "value": "true"}]},
        expect={200, 400},
    )
    if created.status_code == 200:
        return _require_str(step, created.json_object(), "experiment_id")
    error = created.json_object() if created.body.startswith(b"{") else {}
    if error.get("error_code") != "RESOURCE_ALREADY_EXISTS":
        check_status(created)  # raises with MLflow's message
    again = await step.request("GET", f"{API}/experiments/get-by-name", params={"experiment_name": name})
    return _require_str(step, _dig(step, again.json_object(), "experiment"), "experiment_id")


def _verify_read_back(step: Step, data: dict[str, Any], metric_value: float, param_value: str) -> None:
    run_data = _dig(step, data, "run", "data")
    info = _dig(step, data, "run", "info")
    metrics = {m.get("key"): m.get("value") for m in _require_list(step, run_data, "metrics") if isinstance(m, dict)}
    params = {p.get("key"): p.get("value") for p in _require_list(step, run_data, "params") if isinstance(p, dict)}
    problems = []
    if metrics.get(METRIC_KEY) != metric_value:
        problems.append(f"metric {METRIC_KEY} is {metrics.get(METRIC_KEY)!r}, wrote {metric_value!r}")
    if params.get(PARAM_KEY) != param_value:
        problems.append(f"param {PARAM_KEY} is {params.get(PARAM_KEY)!r}, wrote {param_value!r}")
    if info.get("status") != "FINISHED":
        problems.append(f"status is {info.get('status')!r}, expected 'FINISHED'")
    if problems:
        step.fail(Reason.VALIDATION_FAILED, "read-back mismatch: " + "; ".join(problems))


def _artifact_path(
    experiment_id: str, run_id: str, artifact_uri: str, file: str = "synthetic-monitor/probe.txt"
) -> str:
    prefix = "mlflow-artifacts:/"
    if artifact_uri.startswith(prefix):
        base = artifact_uri[len(prefix) :].strip("/")
    else:
        base = f"{experiment_id}/{run_id}/artifacts"
    return f"{ARTIFACTS_API}/{quote(base)}/{quote(file)}"


async def _artifact_round_trip(run: ScenarioRun, path: str) -> None:
    """Bytes through the artifact proxy: proves the store behind MLflow (S3 in production)."""
    payload = f"synthetic-monitor {secrets.token_hex(16)}\n".encode()
    try:
        async with run.step("artifact_put") as step:
            await step.request("PUT", path, content=payload, headers={"Content-Type": "application/octet-stream"})
        async with run.step("artifact_get") as step:
            got = await step.request("GET", path, headers={"Accept": "*/*"})
            if got.body != payload:
                step.fail(
                    Reason.VALIDATION_FAILED, f"artifact read-back differs: {len(got.body)} bytes, wrote {len(payload)}"
                )
    finally:
        async with run.step("artifact_delete", cleanup=True) as step:
            await step.request("DELETE", path)


def _dig(step: Step, data: dict[str, Any], *keys: str) -> dict[str, Any]:
    current: Any = data
    for key in keys:
        current = current.get(key) if isinstance(current, dict) else None
        if not isinstance(current, dict):
            step.fail(Reason.INVALID_RESPONSE, f"response lacks the object {'.'.join(keys)}")
    return cast("dict[str, Any]", current)


def _require_str(step: Step, data: dict[str, Any], key: str) -> str:
    value = data.get(key)
    if not isinstance(value, str) or not value:
        step.fail(Reason.INVALID_RESPONSE, f"response lacks a string {key!r}")
    return value


def _require_list(step: Step, data: dict[str, Any], key: str) -> list[Any]:
    value = data.get(key, [])
    if not isinstance(value, list):
        step.fail(Reason.INVALID_RESPONSE, f"{key!r} is {type(value).__name__}, expected a list")
    return value


async def delete_leftover_artifacts(client: TargetClient, paths: list[str], timeout: float = 10.0) -> list[str]:
    """Delete probe artifacts a run could not be sure it removed (see `explain`); returns the
    paths deleted. Only paths the probe itself wrote under its own runs are ever passed in."""
    deleted = []
    for path in paths:
        if not path.startswith(ARTIFACTS_API + "/"):
            continue
        check_status(await client.request("DELETE", path, timeout=timeout), {200, 204, 404})
        deleted.append(path)
    return deleted


def error_hint(response: HttpResponse) -> str | None:
    """MLflow 3's host check answers a plain-text 403: say how to let the probe in."""
    if response.status_code == 403 and b"Invalid Host header" in response.body:
        return (
            " (MLflow 3 rejects Host names it does not know: start the server with "
            "--allowed-hosts including this target's host, or probe it by localhost or IP)"
        )
    return None


def diagnose_step(step: StepResult) -> tuple[str, str] | None:
    """MLflow's own diagnosis rule: its host check's 403 is the monitor's configuration."""
    if step.status_code == 403 and "Invalid Host header" in (step.error or ""):
        return "config", "the server rejects the Host the monitor uses (MLflow --allowed-hosts)"
    return None


KIND = TargetKind(
    name="mlflow",
    description="an MLflow tracking server",
    # MLflow's own conventions: username+password means basic auth, else a token.
    credential_env=("MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD", "MLFLOW_TRACKING_TOKEN"),
    standalone=StandaloneTarget("mlflow", "MLFLOW_TRACKING_URI", "http://localhost:5000"),
    error_hint=error_hint,
    diagnose=diagnose_step,
)

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
    }
)
RUN_STEPS = ("runs_create", "runs_log_metric", "runs_log_parameter", "runs_update", "runs_get")
WRITE_STEPS = frozenset({"runs_create", "runs_log_metric", "runs_log_parameter", "runs_update"})
ARTIFACT_STEPS = frozenset({"artifact_put", "artifact_get", "artifact_delete"})
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
        if step.ok:
            continue
        if _is_backend_store_error(step):
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
    if failed is not None and failed.reason is Reason.DEPENDENCY_UNAVAILABLE and failed.component:
        _learnt(run, dependency=failed.component)
        if failed.component == "artifact_store":
            slow = failed.name in timed_out
            run.diagnosis = Diagnosis(
                "artifact_store",
                f"the artifact store is {'slow or stalled' if slow else 'failing'}: {failed.name} "
                f"{'timed out' if slow else f'got HTTP {failed.status_code}'} while the run steps passed",
            )
        else:
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
            )
    if up:
        _learnt(run, dependency_up=up)
    # A run the server may have made that we could not delete: runs/create ended on our side
    # without an answer (the server may still finish it), or runs/delete failed.
    if any(
        (s.name == "runs_create" and s.reason in (Reason.TIMEOUT, Reason.WORKER_FAILURE)) or s.name == "runs_delete"
        for s in steps
        if not s.ok
    ):
        _learnt(run, cleanup_pending=True)
    # Likewise an artifact: a PUT stuck in a stalled S3 may be stored after our DELETE ran.
    put = next((s for s in steps if s.name == "artifact_put"), None)
    delete = next((s for s in steps if s.name == "artifact_delete"), None)
    if (
        delete is not None
        and delete.path
        and (not delete.ok or (put is not None and not put.ok and put.status_code is None))
    ):
        _learnt(run, cleanup_pending=True, leftover_artifacts=(delete.path,))


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


READ = Scenario(
    name="mlflow_read",
    target_kind="mlflow",
    steps=("health", "experiments_search", "registered_models_search", "runs_search", "version"),
    options_model=ReadOptions,
    run=run_read,
    description="MLflow read path: health, experiment, registered model and runs search, server version",
    default_probe=DefaultProbe("read", "30s", "10s"),
    explain=explain,
    metric_families=MlflowStoreGauges,
    facts_model=MlflowFacts,
    sweep=delete_leftover_artifacts,
)


async def _write_janitor(
    client: TargetClient, options: WriteOptions, probe_name: str, older_than: float, member: str
) -> list[str]:
    stale = await delete_stale_runs(client, options.experiment_name, probe_name, older_than, member=member)
    return [f"run {run_id}" for run_id in stale]


WRITE = Scenario(
    name="mlflow_write",
    target_kind="mlflow",
    steps=(
        "experiment_get_or_create",
        "runs_create",
        "runs_log_metric",
        "runs_log_parameter",
        "runs_update",
        "runs_get",
        "artifact_put",
        "artifact_get",
        "artifact_delete",
        "runs_delete",
    ),
    options_model=WriteOptions,
    run=run_write,
    description="MLflow write path with read-back and cleanup",
    optional_steps=lambda options: () if options.artifacts else ("artifact_put", "artifact_get", "artifact_delete"),
    cleanup_steps=("artifact_delete", "runs_delete"),
    janitor=_write_janitor,
    default_probe=DefaultProbe(
        "write", "5m", "30s", standalone_options={"experiment_name": "synthetic-monitor", "artifacts": True}
    ),
    explain=explain,
    metric_families=MlflowStoreGauges,
    facts_model=MlflowFacts,
    sweep=delete_leftover_artifacts,
)


async def delete_stale_runs(
    client: TargetClient,
    experiment_name: str,
    probe_name: str,
    older_than_seconds: float,
    timeout: float = 10.0,
    member: str = "",
) -> list[str]:
    """Delete this probe's runs that a crashed daemon left unfinished; returns their ids.

    Called once at start-up: a run interrupted by SIGKILL never reached its cleanup step.
    Only active runs tagged with this probe's name and older than the deadline are
    touched, so a replica's in-flight run is left alone; in a fleet (`member` set) only
    runs this member tagged, so another member's run is never touched at all.
    """
    found = await client.request(
        "GET", f"{API}/experiments/get-by-name", params={"experiment_name": experiment_name}, timeout=timeout
    )
    if found.status_code == 404:
        return []
    check_status(found)
    experiment_id = found.json_object().get("experiment", {}).get("experiment_id")
    if not experiment_id:
        return []
    search = await client.request(
        "POST",
        f"{API}/runs/search",
        json_body={
            "experiment_ids": [experiment_id],
            # Any active run of ours older than the deadline is litter: the probe deletes every
            # run it makes, FINISHED or not (a kill between runs_update and runs_delete).
            "filter": f"tags.`{PROBE_TAG}` = '{probe_name}'"
            + (f" and tags.`{MEMBER_TAG}` = '{member}'" if member else ""),
            "run_view_type": "ACTIVE_ONLY",
            "max_results": 1000,
        },
        timeout=timeout,
    )
    check_status(search)
    cutoff_ms = (time.time() - older_than_seconds) * 1000
    stale = [
        run["info"]["run_id"]
        for run in search.json_object().get("runs", [])
        if isinstance(run, dict) and run.get("info", {}).get("start_time", 0) < cutoff_ms
    ]
    for run_id in stale:
        check_status(await client.request("POST", f"{API}/runs/delete", json_body={"run_id": run_id}, timeout=timeout))
    return stale


KINDS = (KIND,)
SCENARIOS = (READ, WRITE)
