"""MLflow's REST API as the probes use it: paths, the probe's tags, typed facts, shared request helpers
and the janitors' searches. No scenario lives here."""

from __future__ import annotations

import dataclasses
import re
import time
from dataclasses import dataclass
from typing import Any, cast
from urllib.parse import quote

from monitor.http.client import TargetClient, check_status
from monitor.results import Dependency, Facts, Reason
from monitor.scenario.base import (
    ScenarioRun,
    Step,
)

API = "/api/2.0/mlflow"


ARTIFACTS_API = "/api/2.0/mlflow-artifacts/artifacts"


MPU_API = "/api/2.0/mlflow-artifacts/mpu"


SERVER_INFO = "/api/3.0/mlflow/server-info"  # MLflow 3: store type, multipart uploads, ...


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
    leftover_artifacts: tuple[str, ...] | None = None  # artifact paths (or probe traces) to delete once MLflow answers
    probe_trace: str | None = None  # the tracing probe's trace, "trace:<experiment id>:<trace id>"
    trace_visible_seconds: float | None = None  # OTLP export sent -> the trace readable
    # (direction, bytes per second) of this run's artifact transfers (upload, download)
    artifact_throughput: tuple[tuple[str, float], ...] | None = None

    def dependency_states(self) -> dict[str, Dependency]:
        """The stores this run's own steps reached: up or down (a store not reached is unknown)."""
        return {d: Dependency.UP if up else Dependency.DOWN for d, up in (self.dependency_up or {}).items()}

    def sweep_pending(self) -> bool:
        return bool(self.cleanup_pending)

    def leftovers(self) -> list[str]:
        return list(self.leftover_artifacts or ())


def learnt(run: ScenarioRun, **facts: Any) -> None:
    current = run.facts if isinstance(run.facts, MlflowFacts) else MlflowFacts(target_version=run.facts.target_version)
    run.facts = dataclasses.replace(current, **facts)


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
    info = dig(step, response.json_object(), "run", "info")
    return require_str(step, info, "run_id"), str(info.get("artifact_uri", ""))


async def experiment_get_or_create(step: Step, name: str) -> str:
    """One probe experiment forever: look it up, create it once, tolerate a racing replica."""
    found = await step.request(
        "GET", f"{API}/experiments/get-by-name", params={"experiment_name": name}, expect={200, 404}
    )
    if found.status_code == 200:
        experiment = dig(step, found.json_object(), "experiment")
        experiment_id = require_str(step, experiment, "experiment_id")
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
        return require_str(step, created.json_object(), "experiment_id")
    error = created.json_object() if created.body.startswith(b"{") else {}
    if error.get("error_code") != "RESOURCE_ALREADY_EXISTS":
        check_status(created)  # raises with MLflow's message
    again = await step.request("GET", f"{API}/experiments/get-by-name", params={"experiment_name": name})
    return require_str(step, dig(step, again.json_object(), "experiment"), "experiment_id")


def artifact_path(experiment_id: str, run_id: str, artifact_uri: str, file: str | None = None) -> str:
    file = file or "synthetic-monitor/probe.txt"
    prefix = "mlflow-artifacts:/"
    if artifact_uri.startswith(prefix):
        base = artifact_uri[len(prefix) :].strip("/")
    else:
        base = f"{experiment_id}/{run_id}/artifacts"
    return f"{ARTIFACTS_API}/{quote(base)}/{quote(file)}"


def dig(step: Step, data: dict[str, Any], *keys: str) -> dict[str, Any]:
    current: Any = data
    for key in keys:
        current = current.get(key) if isinstance(current, dict) else None
        if not isinstance(current, dict):
            step.fail(Reason.INVALID_RESPONSE, f"response lacks the object {'.'.join(keys)}")
    return cast("dict[str, Any]", current)


def require_str(step: Step, data: dict[str, Any], key: str) -> str:
    value = data.get(key)
    if not isinstance(value, str) or not value:
        step.fail(Reason.INVALID_RESPONSE, f"response lacks a string {key!r}")
    return value


def require_list(step: Step, data: dict[str, Any], key: str) -> list[Any]:
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


async def sweep_leftovers(client: TargetClient, leftovers: list[str], timeout: float = 10.0) -> list[str]:
    """The scenarios' `sweep`: probe artifacts (paths) and probe traces ("trace:<experiment>:<id>")
    a run could not be sure it removed; returns what it deleted."""
    deleted = await delete_leftover_artifacts(client, [p for p in leftovers if not p.startswith("trace:")], timeout)
    for leftover in leftovers:
        if not leftover.startswith("trace:"):
            continue
        experiment_id, _, trace_id = leftover[len("trace:") :].partition(":")
        if not experiment_id or not trace_id.startswith("tr-"):
            continue
        response = await client.request(
            "POST",
            "/api/3.0/mlflow/traces/delete-traces",
            json_body={"experiment_id": experiment_id, "request_ids": [trace_id]},
            timeout=timeout,
        )
        check_status(response)
        deleted.append(leftover)
    return deleted


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
