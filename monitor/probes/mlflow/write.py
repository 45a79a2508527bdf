"""The MLflow write path: one long-lived probe experiment, a run tagged as synthetic, a metric and a
param written and read back (data integrity, not just HTTP 200), optionally a byte round-trip
through the artifact proxy, and the run deleted again even when a step in between failed."""

from __future__ import annotations

import random
import secrets
import time
from typing import Any

from pydantic import ByteSize, Field

from monitor.http.client import TargetClient
from monitor.probes.mlflow.api import (
    API,
    METRIC_KEY,
    PARAM_KEY,
    MlflowFacts,
    artifact_path,
    create_probe_run,
    delete_stale_runs,
    dig,
    experiment_get_or_create,
    require_list,
    sweep_leftovers,
)
from monitor.probes.mlflow.artifacts import artifact_round_trip, artifact_steps_off
from monitor.probes.mlflow.explain import explain
from monitor.probes.mlflow.gauges import MlflowStoreGauges
from monitor.results import Reason
from monitor.scenario.base import (
    DefaultProbe,
    Scenario,
    ScenarioOptions,
    ScenarioRun,
    Step,
)


class WriteOptions(ScenarioOptions):
    experiment_name: str = Field(default="synthetic-monitor", min_length=1)
    artifacts: bool = False
    # Bytes of the probe artifact ("8MiB"); unset: a tiny text file. Set, each run exports its
    # upload/download throughput, and from MULTIPART_MIN_BYTES on it goes through MLflow's
    # multipart endpoints when the server reports multipart support.
    artifact_size: ByteSize | None = Field(default=None, gt=0, le=1024**3)


async def run_write(run: ScenarioRun, options: WriteOptions) -> None:
    async with run.step("experiment_get_or_create") as step:
        experiment_id = await experiment_get_or_create(step, options.experiment_name)
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
            path = artifact_path(
                experiment_id, created, artifact_uri, "synthetic-monitor/probe.bin" if options.artifact_size else None
            )
            await artifact_round_trip(run, path, options.artifact_size)
    finally:
        if run_id is not None:
            async with run.step("runs_delete", cleanup=True) as step:
                await step.request("POST", f"{API}/runs/delete", json_body={"run_id": run_id})


def _verify_read_back(step: Step, data: dict[str, Any], metric_value: float, param_value: str) -> None:
    run_data = dig(step, data, "run", "data")
    info = dig(step, data, "run", "info")
    metrics = {m.get("key"): m.get("value") for m in require_list(step, run_data, "metrics") if isinstance(m, dict)}
    params = {p.get("key"): p.get("value") for p in require_list(step, run_data, "params") if isinstance(p, dict)}
    problems = []
    if metrics.get(METRIC_KEY) != metric_value:
        problems.append(f"metric {METRIC_KEY} is {metrics.get(METRIC_KEY)!r}, wrote {metric_value!r}")
    if params.get(PARAM_KEY) != param_value:
        problems.append(f"param {PARAM_KEY} is {params.get(PARAM_KEY)!r}, wrote {param_value!r}")
    if info.get("status") != "FINISHED":
        problems.append(f"status is {info.get('status')!r}, expected 'FINISHED'")
    if problems:
        step.fail(Reason.VALIDATION_FAILED, "read-back mismatch: " + "; ".join(problems))


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
        "artifact_abort",
        "artifact_delete",
        "runs_delete",
    ),
    options_model=WriteOptions,
    run=run_write,
    description="MLflow write path with read-back and cleanup",
    optional_steps=lambda options: artifact_steps_off(options.artifacts, options.artifact_size),
    cleanup_steps=("artifact_abort", "artifact_delete", "runs_delete"),
    janitor=_write_janitor,
    default_probe=DefaultProbe(
        "write", "5m", "30s", standalone_options={"experiment_name": "synthetic-monitor", "artifacts": True}
    ),
    explain=explain,
    metric_families=MlflowStoreGauges,
    facts_model=MlflowFacts,
    sweep=sweep_leftovers,
    writes=True,
)
