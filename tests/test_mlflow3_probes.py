"""MLflow 3 probes against a real `mlflow server` (sqlite, uvicorn; gunicorn where said):
the tracing probe (OTLP/HTTP JSON in, trace API out, nothing left behind), the server's
capabilities in synthetic_target_info, and the write probe's artifact throughput."""

from __future__ import annotations

import json
import secrets
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client import CollectorRegistry

from monitor.http.client import TargetClient
from monitor.probes.mlflow.api import sweep_leftovers
from monitor.probes.mlflow.tracing import TRACES_API, otlp_payload
from monitor.results import ProbeResult, Reason
from monitor.scenario.registry import SCENARIOS
from monitor.scenario.runner import run_probe
from monitor.sinks.metrics import MetricsSink, ProbeSeries
from tests.scripted import Conn, serve
from tests.servers import MlflowServer

pytestmark = pytest.mark.timeout(180)

TRACES = "synthetic-monitor-traces"


async def _run(url: str, scenario: str, probe: str = "tracing", **options: Any) -> ProbeResult:
    client = TargetClient(url)
    try:
        return await run_probe(
            SCENARIOS[scenario],
            client,
            SCENARIOS[scenario].options_model(**options),
            probe=probe,
            target="mlflow",
            timeout=20.0,
        )
    finally:
        await client.aclose()


def _experiment_id(url: str, name: str = TRACES) -> str:
    found = httpx.get(f"{url}/api/2.0/mlflow/experiments/get-by-name", params={"experiment_name": name}, timeout=10)
    found.raise_for_status()
    return str(found.json()["experiment"]["experiment_id"])


def _traces(url: str, experiment_id: str) -> list[str]:
    found = httpx.post(
        f"{url}{TRACES_API}/search",
        json={
            "locations": [{"type": "MLFLOW_EXPERIMENT", "mlflow_experiment": {"experiment_id": experiment_id}}],
            "max_results": 500,
        },
        timeout=10,
    )
    found.raise_for_status()
    return [t["trace_id"] for t in found.json().get("traces", [])]


def _sink(*probes: tuple[str, str]) -> tuple[MetricsSink, CollectorRegistry]:
    registry = CollectorRegistry()
    sink = MetricsSink(registry, (0.1, 1.0))
    for probe, scenario in probes:
        sink.register(ProbeSeries("mlflow", probe, SCENARIOS[scenario].steps, 20.0, scenario))
    return sink, registry


async def test_tracing_probe_reads_its_trace_back_and_leaves_none(mlflow_server: MlflowServer) -> None:
    sink, registry = _sink(("tracing", "mlflow_tracing"))
    for _ in range(3):
        result = await _run(mlflow_server.url, "mlflow_tracing")
        assert result.ok, result.as_dict()
        assert [s.name for s in result.steps] == [
            "experiment_get_or_create",
            "trace_export",
            "trace_get",
            "trace_delete",
        ]
        visible = result.facts.trace_visible_seconds  # type: ignore[attr-defined]
        assert isinstance(visible, float) and 0 < visible < 20
        sink.handle(result)
    assert (
        registry.get_sample_value(
            "synthetic_mlflow_trace_visible_seconds_count", {"target": "mlflow", "probe": "tracing"}
        )
        == 3.0
    )
    assert _traces(mlflow_server.url, _experiment_id(mlflow_server.url)) == []


async def test_tracing_janitor_and_sweep_delete_the_probes_traces_only(mlflow_server: MlflowServer) -> None:
    url = mlflow_server.url
    await _run(url, "mlflow_tracing")  # makes the experiment
    experiment = _experiment_id(url)

    def export(probe: str) -> str:
        trace = secrets.token_hex(16)
        body = otlp_payload(trace, secrets.token_hex(8), secrets.token_hex(8), probe, "left-behind")
        response = httpx.post(f"{url}/v1/traces", json=body, headers={"x-mlflow-experiment-id": experiment}, timeout=10)
        response.raise_for_status()
        return f"tr-{trace}"

    mine, other = export("tracing"), export("someone-else")
    janitor = SCENARIOS["mlflow_tracing"].janitor
    assert janitor is not None
    client = TargetClient(url)
    try:
        # Younger than the deadline: an in-flight run of a replica, left alone.
        assert await janitor(client, SCENARIOS["mlflow_tracing"].options_model(), "tracing", 3600.0, "") == []
        time.sleep(0.01)
        deleted = await janitor(client, SCENARIOS["mlflow_tracing"].options_model(), "tracing", 0.0, "")
        assert deleted == [f"trace {mine}"]
        assert _traces(url, experiment) == [other]
        # A run that could not delete its trace reports it; the sweep deletes it once MLflow answers.
        assert await sweep_leftovers(client, [f"trace:{experiment}:{other}"]) == [f"trace:{experiment}:{other}"]
    finally:
        await client.aclose()
    assert _traces(url, experiment) == []


@pytest.mark.integration
async def test_tracing_on_a_gunicorn_server_is_a_config_finding_naming_the_server(tmp_path: Path) -> None:
    server = MlflowServer(tmp_path / "gunicorn", gunicorn_opts="--worker-class sync --no-control-socket").start()
    try:
        result = await _run(server.url, "mlflow_tracing")
    finally:
        server.stop()
    assert not result.ok
    export = next(s for s in result.steps if s.name == "trace_export")
    assert export.status_code == 404 and "gunicorn" in (export.error or "")
    assert result.diagnosis is not None and result.diagnosis.component == "config"
    assert "gunicorn" in result.diagnosis.summary and "Not an outage" in result.diagnosis.summary
    assert next(s for s in result.steps if s.name == "trace_delete").ok  # cleanup still ran


async def test_read_probe_reports_server_capabilities_in_target_info(mlflow_server: MlflowServer) -> None:
    sink, registry = _sink(("read", "mlflow_read"))
    result = await _run(mlflow_server.url, "mlflow_read", probe="read")
    assert result.ok, result.as_dict()
    assert result.facts.target_store_type == "SqlStore"
    assert result.facts.target_multipart_uploads is False  # a local artifact directory: no multipart
    sink.handle(result)
    labels = {
        "target": "mlflow",
        "version": result.facts.target_version,
        "store_type": "SqlStore",
        "multipart_uploads": "false",
    }
    assert registry.get_sample_value("synthetic_target_info", labels) == 1.0


async def test_write_probe_with_artifact_size_exports_both_throughputs(mlflow_server: MlflowServer) -> None:
    sink, registry = _sink(("write", "mlflow_write"))
    result = await _run(mlflow_server.url, "mlflow_write", probe="write", artifacts=True, artifact_size="6MiB")
    assert result.ok, result.as_dict()
    rates = dict(result.facts.artifact_throughput)  # type: ignore[attr-defined]
    assert set(rates) == {"upload", "download"} and all(r > 0 for r in rates.values())
    sink.handle(result)
    for direction in ("upload", "download"):
        labels = {"target": "mlflow", "probe": "write", "direction": direction}
        assert registry.get_sample_value("synthetic_mlflow_artifact_throughput_bytes_count", labels) == 1.0
    small = await _run(mlflow_server.url, "mlflow_write", probe="write", artifacts=True)
    assert small.ok and small.facts.artifact_throughput is None  # type: ignore[attr-defined]


class TracingStandIn:
    """MLflow's tracing routes over a socket, answering as told: a trace whose spans carry
    another run's attributes, or an export that never answers."""

    def __init__(self, export: str = "ok") -> None:
        self.export = export
        self.deleted: list[Any] = []

    async def __call__(self, conn: Conn) -> None:
        while True:
            request = await conn.read_request()
            path = request.path.split("?")[0]
            body: dict[str, Any] = {}
            if path.endswith("/experiments/get-by-name"):
                body = {"experiment": {"experiment_id": "7", "lifecycle_stage": "active"}}
            elif path == "/v1/traces" and self.export == "hang":
                await conn.hang()
            elif path == f"{TRACES_API}/get":
                span = {"attributes": [{"key": "synthetic_monitor.probe", "value": {"string_value": "tracing"}}]}
                body = {"trace": {"spans": [{**span, "name": "synthetic-monitor-probe"}, {**span, "name": "other"}]}}
            elif path == f"{TRACES_API}/delete-traces":
                self.deleted.append(json.loads(request.body))
            await conn.respond(200, json.dumps(body).encode())


async def test_a_trace_read_back_wrong_is_validation_failed_and_still_deleted() -> None:
    stand_in = TracingStandIn()
    async with serve(stand_in) as server:
        result = await _run(server.url, "mlflow_tracing")
    failed = result.failed_step
    assert failed is not None and failed.name == "trace_get" and failed.reason is Reason.VALIDATION_FAILED
    assert "span names" in (failed.error or "") and "run=None" in (failed.error or "")
    assert stand_in.deleted and stand_in.deleted[0]["request_ids"][0].startswith("tr-")
    assert not result.facts.sweep_pending()


async def test_an_export_without_an_answer_leaves_its_trace_for_the_sweep() -> None:
    stand_in = TracingStandIn(export="hang")
    async with serve(stand_in) as server:
        client = TargetClient(server.url)
        try:
            result = await run_probe(
                SCENARIOS["mlflow_tracing"],
                client,
                SCENARIOS["mlflow_tracing"].options_model(),
                probe="tracing",
                target="mlflow",
                timeout=1.0,
            )
        finally:
            await client.aclose()
    export = next(s for s in result.steps if s.name == "trace_export")
    assert export.reason is Reason.TIMEOUT
    trace_id = stand_in.deleted[0]["request_ids"][0]
    # The server may store the trace after our delete ran: the run reports it for the sweep.
    assert result.facts.sweep_pending() and result.facts.leftovers() == [f"trace:7:{trace_id}"]
