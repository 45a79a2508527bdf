"""The MLflow scenarios end to end against a real `mlflow server`."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import httpx

from monitor.http.client import TargetClient
from monitor.probes.mlflow.api import SYNTHETIC_TAG
from monitor.probes.mlflow.read import ReadOptions
from monitor.probes.mlflow.write import WriteOptions
from monitor.results import ProbeResult, Reason
from monitor.scenario.registry import SCENARIOS
from monitor.scenario.runner import run_probe
from tests.servers import MlflowServer, free_port

WRITE_STEPS = [
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
]


async def probe(
    client: TargetClient, scenario: str, options: Any, timeout: float = 10.0, name: str = "p"
) -> ProbeResult:
    return await run_probe(SCENARIOS[scenario], client, options, probe=name, target="mlflow", timeout=timeout)


def describe(result: ProbeResult) -> str:
    return "; ".join(f"{s.name}={'ok' if s.ok else s.reason}:{s.error}" for s in result.steps)


def experiments_named(url: str, name: str) -> list[dict[str, Any]]:
    data = httpx.post(
        f"{url}/api/2.0/mlflow/experiments/search",
        json={"max_results": 1000, "filter": f"name = '{name}'", "view_type": "ALL"},
    ).json()
    return data.get("experiments", [])


def active_runs(url: str, experiment_id: str) -> list[dict[str, Any]]:
    data = httpx.post(
        f"{url}/api/2.0/mlflow/runs/search",
        json={"experiment_ids": [experiment_id], "run_view_type": "ACTIVE_ONLY", "max_results": 1000},
    ).json()
    return data.get("runs", [])


async def test_read_scenario_passes(mlflow_server: MlflowServer) -> None:
    client = TargetClient(mlflow_server.url)
    try:
        result = await probe(client, "mlflow_read", ReadOptions())
    finally:
        await client.aclose()
    assert result.ok, describe(result)
    assert [s.name for s in result.steps] == [
        "health",
        "experiments_search",
        "registered_models_search",
        "runs_search",
        "version",
        "server_info",
    ]
    assert all(s.status_code == 200 and s.duration_seconds > 0 for s in result.steps)


async def test_write_scenario_passes_with_artifacts(mlflow_server: MlflowServer) -> None:
    client = TargetClient(mlflow_server.url)
    try:
        result = await probe(client, "mlflow_write", WriteOptions(experiment_name="write-ok", artifacts=True))
    finally:
        await client.aclose()
    assert result.ok, describe(result)
    assert [s.name for s in result.steps] == WRITE_STEPS


async def test_write_without_artifacts_skips_artifact_steps(mlflow_server: MlflowServer) -> None:
    client = TargetClient(mlflow_server.url)
    try:
        result = await probe(client, "mlflow_write", WriteOptions(experiment_name="write-noart"))
    finally:
        await client.aclose()
    assert result.ok, describe(result)
    assert [s.name for s in result.steps] == [s for s in WRITE_STEPS if not s.startswith("artifact_")]


class TamperingClient(TargetClient):
    """Sends a different metric value than the scenario believes it wrote: a lying store."""

    async def request(self, method: str, path: str, **kwargs: Any):  # type: ignore[override]
        body = kwargs.get("json_body")
        if path.endswith("/runs/log-metric") and isinstance(body, dict):
            kwargs["json_body"] = {**body, "value": body["value"] + 1.5}
        return await super().request(method, path, **kwargs)


async def test_read_back_catches_a_wrong_metric_and_still_cleans_up(mlflow_server: MlflowServer) -> None:
    client = TamperingClient(mlflow_server.url)
    try:
        result = await probe(client, "mlflow_write", WriteOptions(experiment_name="tampered"))
    finally:
        await client.aclose()
    assert not result.ok
    failed = result.failed_step
    assert failed is not None and failed.name == "runs_get"
    assert failed.reason is Reason.VALIDATION_FAILED
    assert "synthetic_probe_value" in (failed.error or "")
    assert result.steps[-1].name == "runs_delete" and result.steps[-1].ok
    (experiment,) = experiments_named(mlflow_server.url, "tampered")
    assert active_runs(mlflow_server.url, experiment["experiment_id"]) == []


async def test_many_runs_keep_one_experiment_and_no_active_runs(mlflow_server: MlflowServer) -> None:
    client = TargetClient(mlflow_server.url)
    name = "many-runs"
    try:
        # Two at once race on creating the experiment: RESOURCE_ALREADY_EXISTS must count as success.
        first = await asyncio.gather(
            *(probe(client, "mlflow_write", WriteOptions(experiment_name=name)) for _ in range(2))
        )
        rest = [await probe(client, "mlflow_write", WriteOptions(experiment_name=name)) for _ in range(6)]
    finally:
        await client.aclose()
    for result in [*first, *rest]:
        assert result.ok, describe(result)
    experiments = experiments_named(mlflow_server.url, name)
    assert len(experiments) == 1
    assert active_runs(mlflow_server.url, experiments[0]["experiment_id"]) == []
    deleted = httpx.post(
        f"{mlflow_server.url}/api/2.0/mlflow/runs/search",
        json={
            "experiment_ids": [experiments[0]["experiment_id"]],
            "run_view_type": "DELETED_ONLY",
            "max_results": 1000,
        },
    ).json()["runs"]
    assert len(deleted) == 8
    tags = {t["key"]: t["value"] for t in deleted[0]["data"]["tags"]}
    assert tags[SYNTHETIC_TAG] == "true"


async def test_deleted_probe_experiment_is_restored(mlflow_server: MlflowServer) -> None:
    client = TargetClient(mlflow_server.url)
    try:
        assert (await probe(client, "mlflow_write", WriteOptions(experiment_name="restored"))).ok
        (experiment,) = experiments_named(mlflow_server.url, "restored")
        httpx.post(
            f"{mlflow_server.url}/api/2.0/mlflow/experiments/delete",
            json={"experiment_id": experiment["experiment_id"]},
        ).raise_for_status()
        result = await probe(client, "mlflow_write", WriteOptions(experiment_name="restored"))
    finally:
        await client.aclose()
    assert result.ok, describe(result)
    (again,) = experiments_named(mlflow_server.url, "restored")
    assert again["lifecycle_stage"] == "active"


async def test_killed_server_is_unreachable(own_mlflow: MlflowServer) -> None:
    client = TargetClient(own_mlflow.url)
    try:
        assert (await probe(client, "mlflow_read", ReadOptions())).ok
        own_mlflow.kill()
        result = await probe(client, "mlflow_read", ReadOptions())
    finally:
        await client.aclose()
    assert result.failed_step is not None and result.failed_step.name == "health"
    assert result.reason is Reason.UNREACHABLE


async def test_wrong_port_is_unreachable() -> None:
    client = TargetClient(f"http://127.0.0.1:{free_port()}")
    try:
        result = await probe(client, "mlflow_read", ReadOptions(), timeout=3)
    finally:
        await client.aclose()
    assert result.reason is Reason.UNREACHABLE
    assert "cannot connect" in (result.failed_step.error or "")


async def test_stopped_server_times_out_within_deadline_then_recovers(own_mlflow: MlflowServer) -> None:
    client = TargetClient(own_mlflow.url)
    try:
        assert (await probe(client, "mlflow_read", ReadOptions())).ok
        own_mlflow.pause()
        try:
            started = time.monotonic()
            result = await probe(client, "mlflow_read", ReadOptions(), timeout=2.0)
            elapsed = time.monotonic() - started
        finally:
            own_mlflow.resume()
        assert result.reason is Reason.TIMEOUT, describe(result)
        assert result.failed_step.name == "health"
        assert 1.9 <= elapsed <= 2.0 + 0.5
        after = await probe(client, "mlflow_read", ReadOptions())
    finally:
        await client.aclose()
    assert after.ok, describe(after)


async def test_write_scenario_timeout_still_deletes_the_run(own_mlflow: MlflowServer) -> None:
    """A hang after the run exists: the step times out, cleanup gets its own budget once it resumes."""

    class PausingClient(TargetClient):
        async def request(self, method: str, path: str, **kwargs: Any):  # type: ignore[override]
            if path.endswith("/runs/log-parameter"):
                own_mlflow.pause()
                loop = asyncio.get_running_loop()
                loop.call_later(kwargs["timeout"] + 0.3, own_mlflow.resume)
            return await super().request(method, path, **kwargs)

    client = PausingClient(own_mlflow.url)
    try:
        result = await probe(client, "mlflow_write", WriteOptions(experiment_name="timeout-cleanup"), timeout=3.0)
    finally:
        own_mlflow.resume()
        await client.aclose()
    assert result.failed_step is not None and result.failed_step.name == "runs_log_parameter"
    assert result.reason is Reason.TIMEOUT
    assert result.steps[-1].name == "runs_delete" and result.steps[-1].ok, describe(result)
    (experiment,) = experiments_named(own_mlflow.url, "timeout-cleanup")
    assert active_runs(own_mlflow.url, experiment["experiment_id"]) == []
