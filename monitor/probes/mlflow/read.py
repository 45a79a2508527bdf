"""The MLflow read path: health, experiment, registered model and runs search, server version and capabilities."""

from __future__ import annotations

import dataclasses
from typing import Any

from pydantic import Field

from monitor.probes.mlflow.api import API, SERVER_INFO, VERSION_PATTERN, MlflowFacts, require_list, sweep_leftovers
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


class ReadOptions(ScenarioOptions):
    max_results: int = Field(default=10, ge=1, le=1000)
    # The runs search: filtered and ordered, the query that turns slow when a migration
    # loses an index on the runs table.
    runs_filter: str = "attributes.status = 'FINISHED'"
    runs_order_by: str = "attributes.start_time DESC"


async def run_read(run: ScenarioRun, options: ReadOptions) -> None:
    async with run.step("health") as step:
        await step.request("GET", "/health")
    async with run.step("experiments_search") as step:
        # MLflow 3 rejects a search without max_results.
        data = (
            await step.request("POST", f"{API}/experiments/search", json_body={"max_results": options.max_results})
        ).json_object()
        experiments = require_list(step, data, "experiments")
    async with run.step("registered_models_search") as step:
        # GET only (POST is 405); an empty registry answers {}.
        data = (
            await step.request("GET", f"{API}/registered-models/search", params={"max_results": options.max_results})
        ).json_object()
        require_list(step, data, "registered_models")
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
            require_list(step, data, "runs")
    async with run.step("version") as step:
        await _read_version(run, step)
    async with run.step("server_info") as step:
        await read_server_info(run, step)


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


async def read_server_info(run: ScenarioRun, step: Step) -> dict[str, Any]:
    """GET /api/3.0/mlflow/server-info (MLflow 3) into the capability facts; 404 (older servers,
    proxies that do not route it) is skipped: capabilities are context, not health."""
    response = await step.request("GET", SERVER_INFO, expect={200, 404})
    if response.status_code == 404:
        step.skip("the server has no server-info endpoint (MLflow before 3)")
        return {}
    info = response.json_object()
    store_type = info.get("store_type")
    multipart = info.get("multipart_uploads_enabled")
    run.facts = dataclasses.replace(
        run.facts,
        target_store_type=store_type if isinstance(store_type, str) and VERSION_PATTERN.fullmatch(store_type) else None,
        target_multipart_uploads=multipart if isinstance(multipart, bool) else None,
    )
    return info


READ = Scenario(
    name="mlflow_read",
    target_kind="mlflow",
    steps=("health", "experiments_search", "registered_models_search", "runs_search", "version", "server_info"),
    options_model=ReadOptions,
    run=run_read,
    description="MLflow read path: health, experiment, registered model and runs search, server version and capabilities",
    default_probe=DefaultProbe("read", "30s", "10s"),
    explain=explain,
    metric_families=MlflowStoreGauges,
    facts_model=MlflowFacts,
    sweep=sweep_leftovers,
)
