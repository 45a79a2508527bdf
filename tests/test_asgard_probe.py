"""The Asgard scenario against the stand-in, every fault switch, and the MLflow cross-check."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from monitor.config import Config, load_config
from monitor.http.client import TargetClient
from monitor.probes.asgard.crosscheck import LINK_BROKEN, MLFLOW_DOWN, cross_check
from monitor.probes.asgard.scenario import AsgardOptions
from monitor.probes.mlflow.read import ReadOptions
from monitor.results import ProbeResult, Reason
from monitor.scenario.registry import SCENARIOS
from monitor.scenario.runner import run_probe
from tests.servers import MlflowServer
from tests.standin.asgard import AsgardServer, serve_in_thread


@pytest.fixture(scope="module")
def standin() -> Iterator[tuple[AsgardServer, str]]:
    server, url = serve_in_thread(models=["churn-model", "fraud-model"])
    yield server, url
    server.stop()


@pytest.fixture(autouse=True)
def clean_faults(request: pytest.FixtureRequest) -> Iterator[None]:
    yield
    if "standin" in request.fixturenames:
        server, _ = request.getfixturevalue("standin")
        server.faults.reset()


def set_faults(url: str, **switches: Any) -> None:
    httpx.post(f"{url}/admin/faults", json=switches).raise_for_status()


async def asgard(url: str, timeout: float = 2.0, **options: Any) -> ProbeResult:
    client = TargetClient(url)
    try:
        return await run_probe(
            SCENARIOS["asgard"], client, AsgardOptions(**options), probe="asgard_api", target="asgard", timeout=timeout
        )
    finally:
        await client.aclose()


def steps(result: ProbeResult) -> list[tuple[str, bool, str | None]]:
    return [(s.name, s.ok, s.reason.value if s.reason else None) for s in result.steps]


async def test_healthy_asgard_passes_every_step(standin: tuple[AsgardServer, str]) -> None:
    result = await asgard(standin[1])
    assert steps(result) == [("status", True, None), ("models_list", True, None), ("model_get", True, None)]
    assert result.facts.dependencies == {"mlflow": True, "feast": True}
    assert result.facts.inventory["registered_models"] == 2
    assert set(result.facts.inventory) == {"registered_models", "active_experiments", "feature_views"}
    assert result.steps[2].path == "/mlops/models/churn-model"


@pytest.mark.parametrize(
    ("switches", "step", "reason", "text"),
    [
        ({"latency": 1.5}, "status", Reason.TIMEOUT, "no complete response"),
        ({"hang": True}, "status", Reason.TIMEOUT, "no complete response"),
        ({"drop": True}, "status", Reason.WORKER_FAILURE, "closed"),
        ({"error_status": 500}, "status", Reason.HTTP_ERROR, "HTTP 500"),
        ({"error_status": 503}, "status", Reason.WORKER_FAILURE, "HTTP 503"),
        ({"error_status": 401}, "status", Reason.HTTP_ERROR, "credentials"),
        ({"non_json": True}, "status", Reason.INVALID_RESPONSE, "HTML"),
        ({"mlflow_available": False}, "status", Reason.DEPENDENCY_UNAVAILABLE, "mlflow unavailable"),
        ({"feast_available": False}, "status", Reason.DEPENDENCY_UNAVAILABLE, "feast unavailable"),
    ],
    ids=["latency", "hang", "drop", "500", "503", "401", "non_json", "mlflow_down", "feast_down"],
)
async def test_each_switch_gives_its_reason_then_recovers(
    standin: tuple[AsgardServer, str], switches: dict[str, Any], step: str, reason: Reason, text: str
) -> None:
    server, url = standin
    set_faults(url, **switches)
    started = time.monotonic()
    result = await asgard(url, timeout=1.0)
    assert time.monotonic() - started < 1.0 + 0.5
    assert result.failed_step is not None and result.failed_step.name == step, steps(result)
    assert result.reason is reason
    assert text in (result.failed_step.error or "")
    server.faults.reset()
    assert (await asgard(url)).ok


async def test_false_flag_keeps_the_facts(standin: tuple[AsgardServer, str]) -> None:
    set_faults(standin[1], feast_available=False)
    result = await asgard(standin[1])
    assert result.facts.dependencies == {"mlflow": True, "feast": False}
    assert result.facts.unavailable == ("feast",)
    assert result.facts.inventory["feature_views"] >= 0


async def test_no_models_skips_model_get(standin: tuple[AsgardServer, str]) -> None:
    set_faults(standin[1], no_models=True)
    result = await asgard(standin[1])
    assert result.ok
    assert result.steps[2].skipped and "no models" in (result.steps[2].error or "")


async def test_configured_model_name_and_a_missing_model(standin: tuple[AsgardServer, str]) -> None:
    assert (await asgard(standin[1], model_name="fraud-model")).steps[2].path == "/mlops/models/fraud-model"
    missing = await asgard(standin[1], model_name="no-such-model")
    assert missing.failed_step.name == "model_get" and missing.reason is Reason.HTTP_ERROR
    assert "404" in (missing.failed_step.error or "")


async def test_array_payload_is_accepted(standin: tuple[AsgardServer, str]) -> None:
    set_faults(standin[1], models_shape="array")
    result = await asgard(standin[1])
    assert result.ok and result.facts.models_listed == 2


async def test_renamed_fields_follow_the_config(standin: tuple[AsgardServer, str]) -> None:
    set_faults(
        standin[1], rename={"mlflow_available": "mlflowUp", "registered_models": "models_total"}, mlflow_available=False
    )
    unconfigured = await asgard(standin[1])
    # Not knowing the renamed flag, the probe cannot see MLflow is down: it reports what it can.
    assert unconfigured.ok and "mlflow" not in unconfigured.facts.dependencies
    configured = await asgard(standin[1], fields={"mlflow_available": "mlflowUp", "registered_models": "models_total"})
    assert configured.reason is Reason.DEPENDENCY_UNAVAILABLE and "mlflowUp=false" in configured.failed_step.error
    assert configured.facts.inventory["registered_models"] == 2


async def test_missing_optional_fields_are_tolerated(standin: tuple[AsgardServer, str]) -> None:
    set_faults(standin[1], omit=["feast_available", "feature_views", "mlflow_tracking_uri"])
    result = await asgard(standin[1])
    assert result.ok
    assert result.facts.dependencies == {"mlflow": True}
    assert "feature_views" not in result.facts.inventory


async def test_inference_step(standin: tuple[AsgardServer, str]) -> None:
    ok = await asgard(standin[1], inference={"enabled": True, "payload": {"inputs": [[1, 2, 3]]}})
    assert ok.ok and [s.name for s in ok.steps][-1] == "inference"
    wrong = await asgard(standin[1], inference={"enabled": True, "payload": {"inputs": [1]}, "expect_field": "scores"})
    assert wrong.failed_step.name == "inference" and wrong.reason is Reason.VALIDATION_FAILED


def two_target_config(mlflow_url: str, asgard_url: str) -> Config:
    return load_config(None, {"MLFLOW_TRACKING_URI": mlflow_url, "ASGARD_URL": asgard_url})


async def read_mlflow(url: str) -> ProbeResult:
    client = TargetClient(url)
    try:
        return await run_probe(
            SCENARIOS["mlflow_read"], client, ReadOptions(), probe="mlflow_read", target="mlflow", timeout=3.0
        )
    finally:
        await client.aclose()


async def test_crosscheck_broken_link_while_mlflow_is_up(mlflow_server: MlflowServer) -> None:
    server, url = serve_in_thread(mlflow_url=mlflow_server.url)
    try:
        config = two_target_config(mlflow_server.url, url)
        direct = await read_mlflow(mlflow_server.url)
        assert direct.ok
        assert (await asgard(url)).facts.dependencies["mlflow"] is True  # the stand-in really asks MLflow
        server.faults.update({"mlflow_available": False})
        result = cross_check(await asgard(url), config, {"mlflow_read": direct})
    finally:
        server.stop()
    assert result.reason is Reason.DEPENDENCY_UNAVAILABLE
    assert result.facts.crosscheck == LINK_BROKEN
    assert result.root_cause is None
    assert "Asgard-to-MLflow link is broken" in result.failed_step.error


async def test_crosscheck_mlflow_itself_down(own_mlflow: MlflowServer) -> None:
    server, url = serve_in_thread(mlflow_url=own_mlflow.url)
    try:
        config = two_target_config(own_mlflow.url, url)
        own_mlflow.kill()
        direct = await read_mlflow(own_mlflow.url)
        seen = await asgard(url, timeout=5.0)
        result = cross_check(seen, config, {"mlflow_read": direct})
    finally:
        server.stop()
    assert direct.reason is Reason.UNREACHABLE
    assert seen.facts.dependencies["mlflow"] is False  # the stand-in saw MLflow die by itself
    assert result.facts.crosscheck == MLFLOW_DOWN
    assert result.root_cause == "mlflow"
    assert any("MLflow itself is failing" in note for note in result.notes)
