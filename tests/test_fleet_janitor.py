"""Write probes of two fleet members on one MLflow: each tags and cleans up only its own runs."""

from __future__ import annotations

import time

import httpx

from monitor.http.client import TargetClient
from monitor.probes.mlflow.api import MEMBER_TAG, PROBE_TAG, delete_stale_runs
from monitor.probes.mlflow.write import WriteOptions
from monitor.scenario.registry import SCENARIOS
from monitor.scenario.runner import run_probe
from tests.servers import MlflowServer

API = "/api/2.0/mlflow"


def _run_tags(url: str, run_id: str) -> dict[str, str]:
    data = httpx.get(f"{url}{API}/runs/get", params={"run_id": run_id}).json()
    return {t["key"]: t["value"] for t in data["run"]["data"].get("tags", [])}


def _leftover(url: str, experiment_id: str, member: str, started_ms: int) -> str:
    """A run a killed member left behind (created, never cleaned up)."""
    body = {
        "experiment_id": experiment_id,
        "start_time": started_ms,
        "tags": [{"key": PROBE_TAG, "value": "fleet_write"}, {"key": MEMBER_TAG, "value": member}],
    }
    return str(httpx.post(f"{url}{API}/runs/create", json=body).json()["run"]["info"]["run_id"])


async def test_the_janitor_deletes_only_its_own_members_leftovers(mlflow_server: MlflowServer) -> None:
    url = mlflow_server.url
    client = TargetClient(url)
    try:
        options = WriteOptions(experiment_name="fleet-janitor", artifacts=False)
        result = await run_probe(
            SCENARIOS["mlflow_write"],
            client,
            options,
            probe="fleet_write",
            target="mlflow",
            timeout=20.0,
            member="synthetic-monitor-1",
        )
        assert result.ok, [(s.name, s.error) for s in result.steps if not s.ok]
        experiment = httpx.get(
            f"{url}{API}/experiments/get-by-name", params={"experiment_name": "fleet-janitor"}
        ).json()
        experiment_id = experiment["experiment"]["experiment_id"]
        written = (
            httpx.post(
                f"{url}{API}/runs/search",
                json={
                    "experiment_ids": [experiment_id],
                    "run_view_type": "DELETED_ONLY",
                    "max_results": 10,
                    "filter": f"tags.`{MEMBER_TAG}` = 'synthetic-monitor-1'",
                },
            )
            .json()
            .get("runs", [])
        )
        assert len(written) == 1  # the probe's own (cleaned-up) run carried its member tag
        old = int((time.time() - 3600) * 1000)
        mine = _leftover(url, experiment_id, "synthetic-monitor-0", old)
        theirs = _leftover(url, experiment_id, "synthetic-monitor-1", old)
        assert _run_tags(url, theirs)[MEMBER_TAG] == "synthetic-monitor-1"
        deleted = await delete_stale_runs(client, "fleet-janitor", "fleet_write", 60.0, member="synthetic-monitor-0")
        assert deleted == [mine]
        state = httpx.get(f"{url}{API}/runs/get", params={"run_id": theirs}).json()["run"]["info"]["lifecycle_stage"]
        assert state == "active"  # another member's run is never touched
        # Without a member (a lone daemon) every leftover of the probe is litter.
        assert await delete_stale_runs(client, "fleet-janitor", "fleet_write", 60.0) == [theirs]
    finally:
        await client.aclose()
