"""The model registry path, the runs search and the server version, against a real `mlflow server`.

The registry scenario must leave nothing behind: after any number of runs, failed steps
included, exactly one registered model and no model versions, runs or artifacts remain.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import re
import time
from importlib.metadata import version as installed_version
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from prometheus_client import CollectorRegistry

from monitor.http.client import HttpResponse, TargetClient
from monitor.probes.mlflow.api import PROBE_TAG, SYNTHETIC_TAG
from monitor.probes.mlflow.read import ReadOptions
from monitor.probes.mlflow.registry import RegistryOptions, delete_stale_versions
from monitor.results import Facts, ProbeResult, Reason, StepResult
from monitor.scenario.registry import SCENARIOS
from monitor.scenario.runner import run_probe
from monitor.sinks.metrics import MetricsSink, ProbeSeries
from tests.servers import DaemonProcess, MlflowServer
from tests.test_daemon import sample, scrape, wait_for

REGISTRY_STEPS = [
    "registered_model_get_or_create",
    "experiment_get_or_create",
    "runs_create",
    "artifact_put",
    "model_version_create",
    "model_alias_set",
    "model_alias_get",
    "model_version_delete",
    "artifact_delete",
    "runs_delete",
]
CLEANUP = ["model_version_delete", "artifact_delete", "runs_delete"]


async def probe(client: TargetClient, scenario: str, options: Any, name: str = "reg") -> ProbeResult:
    return await run_probe(SCENARIOS[scenario], client, options, probe=name, target="mlflow", timeout=15.0)


def describe(result: ProbeResult) -> str:
    return "; ".join(f"{s.name}={'ok' if s.ok else s.reason}:{s.error}" for s in result.steps)


def api(server: MlflowServer) -> str:
    return f"{server.url}/api/2.0/mlflow"


def registered_models(server: MlflowServer, name: str) -> list[dict[str, Any]]:
    data = httpx.get(
        f"{api(server)}/registered-models/search", params={"filter": f"name = '{name}'", "max_results": 100}
    ).json()
    return data.get("registered_models", [])


def versions_of(server: MlflowServer, name: str) -> list[dict[str, Any]]:
    data = httpx.get(
        f"{api(server)}/model-versions/search", params={"filter": f"name = '{name}'", "max_results": 1000}
    ).json()
    return data.get("model_versions", [])


def active_probe_runs(server: MlflowServer, experiment: str, probe_name: str) -> list[dict[str, Any]]:
    found = httpx.get(f"{api(server)}/experiments/get-by-name", params={"experiment_name": experiment}).json()
    data = httpx.post(
        f"{api(server)}/runs/search",
        json={
            "experiment_ids": [found["experiment"]["experiment_id"]],
            "run_view_type": "ACTIVE_ONLY",
            "max_results": 1000,
            "filter": f"tags.`{PROBE_TAG}` = '{probe_name}'",
        },
    ).json()
    return data.get("runs", [])


def probe_artifacts(server: MlflowServer) -> list[str]:
    """Files the registry probe wrote into the artifact store that are still there."""
    root = server.workdir / "artifacts"
    return [str(p) for p in root.rglob("synthetic-monitor-model/*")] if root.exists() else []


def assert_nothing_left(server: MlflowServer, model: str, experiment: str, probe_name: str = "reg") -> None:
    assert len(registered_models(server, model)) == 1
    assert versions_of(server, model) == []
    assert active_probe_runs(server, experiment, probe_name) == []
    assert probe_artifacts(server) == []


# --------------------------------------------------------------------------- the read path


async def test_read_reports_the_server_version_and_searches_runs(mlflow_server: MlflowServer) -> None:
    client = TargetClient(mlflow_server.url)
    try:
        result = await probe(client, "mlflow_read", ReadOptions())
        # A filter nothing matches: MLflow answers {} (no "runs" key), which is a pass.
        empty = await probe(client, "mlflow_read", ReadOptions(runs_filter="tags.`no-such-tag` = 'nothing'"))
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
    assert result.facts.target_version == installed_version("mlflow")
    search = result.steps[-3]
    assert (search.method, search.path, search.status_code, search.skipped) == (
        "POST",
        "/api/2.0/mlflow/runs/search",
        200,
        False,
    )
    assert empty.ok, describe(empty)


async def test_runs_search_sends_the_filter(mlflow_server: MlflowServer) -> None:
    """A filter MLflow cannot parse fails the step: proof the filter reaches the server."""
    client = TargetClient(mlflow_server.url)
    try:
        result = await probe(client, "mlflow_read", ReadOptions(runs_filter="this is not a filter"))
    finally:
        await client.aclose()
    assert result.failed_step is not None and result.failed_step.name == "runs_search", describe(result)
    assert result.reason is Reason.HTTP_ERROR and "INVALID_PARAMETER_VALUE" in (result.failed_step.error or "")


class VersionClient(TargetClient):
    """Answers GET /version itself: a proxy without the endpoint, or one serving a login page."""

    def __init__(self, url: str, status: int, body: bytes) -> None:
        super().__init__(url)
        self.status, self.body = status, body

    async def request(self, method: str, path: str, **kwargs: Any) -> HttpResponse:  # type: ignore[override]
        response = await super().request(method, path, **kwargs)
        if path == "/version":
            return dataclasses.replace(response, status_code=self.status, body=self.body)
        return response


@pytest.mark.parametrize(
    ("status", "body", "outcome"),
    [
        (404, b"<html>Not Found</html>", "skipped"),
        (200, b"<!doctype html><html><body>Sign in</body></html>", "invalid_response"),
        (500, b"<html>Internal Server Error</html>", "http_error"),
    ],
)
async def test_version_step_without_a_version(
    mlflow_server: MlflowServer, status: int, body: bytes, outcome: str
) -> None:
    client = VersionClient(mlflow_server.url, status, body)
    try:
        result = await probe(client, "mlflow_read", ReadOptions())
    finally:
        await client.aclose()
    step = next(s for s in result.steps if s.name == "version")
    assert result.facts.target_version is None
    if outcome == "skipped":
        assert result.ok and step.skipped, describe(result)
    else:
        assert result.failed_step == step and step.reason == Reason(outcome), describe(result)


# --------------------------------------------------------------------------- the registry path


async def test_many_registry_runs_leave_one_model_and_no_versions(mlflow_server: MlflowServer) -> None:
    options = RegistryOptions(model_name="registry-many", experiment_name="registry-many")
    client = TargetClient(mlflow_server.url)
    try:
        # Two at once race on creating the model: RESOURCE_ALREADY_EXISTS must count as success.
        first = await asyncio.gather(*(probe(client, "mlflow_registry", options) for _ in range(2)))
        rest = [await probe(client, "mlflow_registry", options) for _ in range(3)]
    finally:
        await client.aclose()
    for result in [*first, *rest]:
        assert result.ok, describe(result)
        assert [s.name for s in result.steps] == REGISTRY_STEPS
    assert_nothing_left(mlflow_server, "registry-many", "registry-many")
    (model,) = registered_models(mlflow_server, "registry-many")
    assert {t["key"]: t["value"] for t in model.get("tags", [])}[SYNTHETIC_TAG] == "true"


class FaultClient(TargetClient):
    """Breaks one registry request the way a sick server would."""

    def __init__(self, url: str, fault: str) -> None:
        super().__init__(url)
        self.fault = fault

    async def request(self, method: str, path: str, **kwargs: Any) -> HttpResponse:  # type: ignore[override]
        body = kwargs.get("json_body")
        if self.fault == "alias_set_rejected" and path.endswith("/registered-models/alias") and method == "POST":
            kwargs["json_body"] = {**(body or {}), "version": "999999"}  # MLflow: no such version
        response = await super().request(method, path, **kwargs)
        if self.fault == "alias_resolves_elsewhere" and path.endswith("/registered-models/alias") and method == "GET":
            data = json.loads(response.body)
            data["model_version"]["version"] = "424242"
            return dataclasses.replace(response, body=json.dumps(data).encode())
        if self.fault == "create_answer_lost" and path.endswith("/model-versions/create"):
            # The server registered the version but the answer never arrived.
            return dataclasses.replace(response, status_code=504, body=b"<html>504 Gateway Time-out</html>")
        return response


@pytest.mark.parametrize(
    ("fault", "step", "reason"),
    [
        ("alias_set_rejected", "model_alias_set", Reason.HTTP_ERROR),
        ("alias_resolves_elsewhere", "model_alias_get", Reason.VALIDATION_FAILED),
        ("create_answer_lost", "model_version_create", Reason.WORKER_FAILURE),
    ],
)
async def test_a_failed_registry_step_still_deletes_everything(
    mlflow_server: MlflowServer, fault: str, step: str, reason: Reason
) -> None:
    model = f"registry-{fault.replace('_', '-')}"
    client = FaultClient(mlflow_server.url, fault)
    try:
        result = await probe(client, "mlflow_registry", RegistryOptions(model_name=model, experiment_name=model))
    finally:
        await client.aclose()
    failed = result.failed_step
    assert failed is not None and (failed.name, failed.reason) == (step, reason), describe(result)
    assert [s.name for s in result.steps[-3:]] == CLEANUP
    assert all(s.ok for s in result.steps[-3:]), describe(result)
    assert_nothing_left(mlflow_server, model, model)


class PendingClient(TargetClient):
    """Reports the new version as PENDING_REGISTRATION for `pending` answers, then `final`:
    what an asynchronous registry does (sqlite MLflow answers READY at once)."""

    def __init__(self, url: str, pending: int, final: str) -> None:
        super().__init__(url)
        self.pending, self.final, self.gets = pending, final, 0

    async def request(self, method: str, path: str, **kwargs: Any) -> HttpResponse:  # type: ignore[override]
        response = await super().request(method, path, **kwargs)
        if path.endswith("/model-versions/create") or path.endswith("/model-versions/get"):
            if path.endswith("/get"):
                self.gets += 1
            data = json.loads(response.body)
            status = "PENDING_REGISTRATION" if self.gets < self.pending else self.final
            data["model_version"].update(status=status, status_message=f"probe says {status}")
            return dataclasses.replace(response, body=json.dumps(data).encode())
        return response


@pytest.mark.parametrize(
    ("pending", "final", "failed"),
    [
        (2, "READY", None),
        (1, "FAILED_REGISTRATION", (Reason.VALIDATION_FAILED, r"model version \d+ ended FAILED_REGISTRATION: .*")),
        # Usually our own deadline check; under load the last poll itself may run out of time.
        (
            10**6,
            "READY",
            (
                Reason.TIMEOUT,
                r"model version \d+ still PENDING_REGISTRATION after [\d.e+-]+s, at the probe's deadline"
                r"|GET \S*/model-versions/get: .*",
            ),
        ),
    ],
)
async def test_version_creation_waits_while_pending(
    mlflow_server: MlflowServer, pending: int, final: str, failed: tuple[Reason, str] | None
) -> None:
    model = f"registry-pending-{final.lower()}-{pending}"
    client = PendingClient(mlflow_server.url, pending, final)
    try:
        result = await run_probe(
            SCENARIOS["mlflow_registry"],
            client,
            RegistryOptions(model_name=model, experiment_name=model),
            probe="reg",
            target="mlflow",
            timeout=3.0,
        )
    finally:
        await client.aclose()
    if failed is None:
        assert result.ok and client.gets == 2, describe(result)
    else:
        step = result.failed_step
        assert step is not None and step.name == "model_version_create", describe(result)
        assert step.reason is failed[0] and re.fullmatch(failed[1], step.error or ""), describe(result)
    assert all(s.ok for s in result.steps[-3:]) and [s.name for s in result.steps[-3:]] == CLEANUP
    assert_nothing_left(mlflow_server, model, model)


async def test_janitor_deletes_only_old_versions_of_this_probe(mlflow_server: MlflowServer) -> None:
    """What a daemon killed mid-run leaves: versions tagged with its probe name."""
    model = "registry-janitor"
    base = api(mlflow_server)
    httpx.post(f"{base}/registered-models/create", json={"name": model}).raise_for_status()
    experiment_id = httpx.post(f"{base}/experiments/create", json={"name": model}).json()["experiment_id"]

    def leftover(probe_name: str) -> str:
        run = httpx.post(
            f"{base}/runs/create",
            json={
                "experiment_id": experiment_id,
                "tags": [{"key": PROBE_TAG, "value": probe_name}],
            },
        ).json()["run"]["info"]
        created = httpx.post(
            f"{base}/model-versions/create",
            json={
                "name": model,
                "source": f"{run['artifact_uri']}/m",
                "run_id": run["run_id"],
                "tags": [{"key": PROBE_TAG, "value": probe_name}],
            },
        )
        created.raise_for_status()
        return str(created.json()["model_version"]["version"])

    ours, theirs = leftover("reg"), leftover("someone-else")
    client = TargetClient(mlflow_server.url)
    janitor = SCENARIOS["mlflow_registry"].janitor
    assert janitor is not None
    options = RegistryOptions(model_name=model, experiment_name=model)
    try:
        # Younger than the deadline: maybe a replica's run in flight, left alone.
        assert await delete_stale_versions(client, model, "reg", older_than_seconds=3600) == []
        await asyncio.sleep(0.05)
        deleted = await janitor(client, options, "reg", 0.0, "")
    finally:
        await client.aclose()
    assert f"model version {model}/{ours}" in deleted
    assert any(d.startswith("run ") for d in deleted)  # the leftover probe run goes too
    assert [v["version"] for v in versions_of(mlflow_server, model)] == [theirs]
    assert active_probe_runs(mlflow_server, model, "reg") == []
    assert len(active_probe_runs(mlflow_server, model, "someone-else")) == 1


# --------------------------------------------------------------------------- the daemon


def log_events(daemon: DaemonProcess) -> list[dict[str, Any]]:
    return [json.loads(line) for line in daemon.log_text().splitlines() if line.startswith("{")]


def test_daemon_deletes_a_killed_runs_version_and_exports_the_server_version(
    mlflow_server: MlflowServer, tmp_path: Path
) -> None:
    """The real daemon: its start-up janitor removes what a SIGKILL mid-run left (a version
    and a run tagged with the probe's name), its registry runs pass, and /metrics shows
    synthetic_target_info with the server's version."""
    model = "registry-daemon"
    base = api(mlflow_server)
    httpx.post(f"{base}/registered-models/create", json={"name": model}).raise_for_status()
    experiment_id = httpx.post(f"{base}/experiments/create", json={"name": model}).json()["experiment_id"]
    run = httpx.post(
        f"{base}/runs/create",
        json={
            "experiment_id": experiment_id,
            "start_time": 0,
            "tags": [{"key": PROBE_TAG, "value": "registry"}],
        },
    ).json()["run"]["info"]
    httpx.post(
        f"{base}/model-versions/create",
        json={
            "name": model,
            "source": f"{run['artifact_uri']}/m",
            "run_id": run["run_id"],
            "tags": [{"key": PROBE_TAG, "value": "registry"}],
        },
    ).raise_for_status()
    left_at = time.monotonic()
    deadline = 3.0
    config = tmp_path / "c.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "log": {"format": "json"},
                "targets": [{"name": "mlflow", "kind": "mlflow", "url": mlflow_server.url}],
                "probes": [
                    {"name": "read", "target": "mlflow", "scenario": "mlflow_read", "interval": "2s"},
                    {
                        "name": "registry",
                        "target": "mlflow",
                        "scenario": "mlflow_registry",
                        "interval": "10s",
                        # three cleanup steps of 2 s each must fit after the deadline, in 90 % of the interval
                        "timeout": f"{deadline}s",
                        "step_timeout": "2s",
                        "options": {"model_name": model, "experiment_name": model},
                    },
                ],
            }
        )
    )
    time.sleep(max(0.0, deadline + 0.2 - (time.monotonic() - left_at)))  # the leftover is older than the deadline
    daemon = DaemonProcess(config, tmp_path).start()
    try:
        zero = sample(
            scrape(daemon.url),
            "synthetic_probe_step_failures_total",
            probe="registry",
            step="model_alias_get",
            reason="validation_failed",
        )
        assert zero is not None  # every step's series exists from start-up
        wait_for(
            lambda: any(
                e.get("event") == "stale_runs_deleted" and e.get("probe") == "registry" for e in log_events(daemon)
            ),
            20,
            "janitor",
        )
        wait_for(
            lambda: (
                sample(
                    scrape(daemon.url), "synthetic_target_info", target="mlflow", version=installed_version("mlflow")
                )
                == 1
            ),
            20,
            "synthetic_target_info",
        )
        wait_for(
            lambda: sample(scrape(daemon.url), "synthetic_probe_runs_total", probe="registry", result="success"),
            30,
            "a passing registry run",
        )
    finally:
        assert daemon.stop() == 0
    (event,) = [e for e in log_events(daemon) if e.get("event") == "stale_runs_deleted"]
    assert f"run {run['run_id']}" in event["deleted"]
    assert_nothing_left(mlflow_server, model, model, probe_name="registry")


# --------------------------------------------------------------------------- metrics


def _result(probe_name: str, target: str, facts: dict[str, Any]) -> ProbeResult:
    return ProbeResult(
        probe=probe_name,
        target=target,
        scenario="mlflow_read",
        started_at=1.0,
        duration_seconds=0.1,
        steps=(StepResult("version", ok=True, duration_seconds=0.01),),
        timeout_seconds=5.0,
        facts=Facts(**facts),
    )


def test_target_info_is_absent_until_known_and_one_series_per_target() -> None:
    registry = CollectorRegistry()
    sink = MetricsSink(registry, [0.1, 1.0])
    read = SCENARIOS["mlflow_read"]
    sink.register(ProbeSeries("mlflow", "read", read.steps_for(ReadOptions()), 5.0))
    sink.register(ProbeSeries("mlflow", "read2", read.steps_for(ReadOptions()), 5.0))

    def versions() -> dict[str, float]:
        return {
            s.labels["version"]: s.value
            for m in registry.collect()
            for s in m.samples
            if s.name == "synthetic_target_info" and s.labels["target"] == "mlflow"
        }

    assert versions() == {}
    sink.handle(_result("read", "mlflow", {}))
    assert versions() == {}
    sink.handle(_result("read", "mlflow", {"target_version": "3.17.2"}))
    assert versions() == {"3.17.2": 1.0}
    sink.handle(_result("read", "mlflow", {"target_version": "3.18.0"}))  # an upgrade replaces the series
    assert versions() == {"3.18.0": 1.0}
    sink.unregister("read")
    assert versions() == {"3.18.0": 1.0}  # another probe of the target remains
    sink.unregister("read2")
    assert versions() == {}
    sink.handle(_result("read2", "mlflow", {"target_version": "3.18.0"}))  # a run that outlived its probe
    assert versions() == {}


def test_registry_step_series_exist_from_start() -> None:
    registry = CollectorRegistry()
    sink = MetricsSink(registry, [0.1, 1.0])
    scenario = SCENARIOS["mlflow_registry"]
    sink.register(ProbeSeries("mlflow", "registry", scenario.steps_for(RegistryOptions()), 30.0))
    for step in REGISTRY_STEPS:
        for reason in ("timeout", "validation_failed"):
            value = registry.get_sample_value(
                "synthetic_probe_step_failures_total",
                {"target": "mlflow", "probe": "registry", "step": step, "reason": reason},
            )
            assert value == 0.0, (step, reason)
