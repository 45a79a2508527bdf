"""Who is to blame: MLflow's own errors vs its workers, its backend and artifact stores,
the monitor's own connection pool, and the diagnosis shown everywhere a failure is.

The MLflow cases feed `explain` the step results a real run produces (the error texts
are the ones measured against gunicorn + PostgreSQL + S3, see test_prodstack_faults.py);
the HTTP cases go through a real TargetClient over real sockets.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from monitor.alerting.engine import AlertEngine
from monitor.config import AlertingConfig
from monitor.diagnosis import diagnose, is_monitor_fault
from monitor.probes.asgard.alerts import DEPENDENCY_UNAVAILABLE
from monitor.probes.mlflow.alerts import DEPENDENCY_UNAVAILABLE as MLFLOW_DEPENDENCY_UNAVAILABLE
from monitor.probes.mlflow.alerts import WORKER_FAILURE
from monitor.probes.mlflow.api import MlflowFacts
from monitor.probes.mlflow.explain import explain
from monitor.report import ProbeRuns, render_json, render_markdown, render_table
from monitor.results import Diagnosis, Facts, ProbeResult, Reason, StepFailure, StepResult
from monitor.scenario.base import ScenarioRun
from monitor.scenario.registry import KINDS, SCENARIOS
from monitor.scenario.runner import run_probe
from monitor.sinks.logging import LogSink
from monitor.sinks.metrics import MetricsSink, ProbeSeries
from tests.scripted import Conn, answer, client_for, closed_port, failure_of, serve

pytestmark = pytest.mark.timeout(30)

PG_DOWN = (
    "POST /api/2.0/mlflow/experiments/search: HTTP 503: TEMPORARILY_UNAVAILABLE (psycopg.OperationalError)"
    ' connection failed: connection to server at "127.0.0.1", port 5432 failed: Connection refused'
)
RUN_STEPS = ("runs_create", "runs_log_metric", "runs_log_parameter", "runs_update", "runs_get")
T0 = 1_700_000_000.0


def ok(name: str) -> StepResult:
    return StepResult(name, True, 0.01)


def bad(name: str, reason: Reason, error: str = "failed", status: int | None = None) -> StepResult:
    return StepResult(name, False, 0.5, reason=reason, error=error, status_code=status)


def explained(*steps: StepResult, kind: str = "mlflow") -> ProbeResult:
    """What the runner does after a scenario: its hints, then the generic diagnosis."""
    run = ScenarioRun(
        client=None,
        deadline=0.0,
        step_timeout=1.0,  # type: ignore[arg-type]
        facts=MlflowFacts() if kind == "mlflow" else Facts(),
    )
    run.steps.extend(steps)
    if kind == "mlflow":
        explain(run)
    result = ProbeResult("mlflow_write", "mlflow", "mlflow_write", T0, 1.0, tuple(run.steps), 5.0, facts=run.facts)
    k = KINDS[kind]
    d = diagnose(result, k.server_component, run.diagnosis, k.diagnose, k.component_runbooks())
    return ProbeResult(**{**{f: getattr(result, f) for f in result.__dataclass_fields__}, "diagnosis": d})


# ------------------------------------------------------------------ MLflow's own answer is not worker_failure


async def test_mlflow_json_error_503_is_not_worker_failure() -> None:
    body = json.dumps({"error_code": "TEMPORARILY_UNAVAILABLE", "message": "(psycopg.OperationalError) x"}).encode()
    async with serve(answer(503, body)) as server:
        failure = await failure_of(server.url, error_classifier=KINDS["mlflow"].classify_error)
        # The error_code rule is the MLflow kind's: the generic client knows no service's error shape.
        generic = await failure_of(server.url)
    assert failure.reason is Reason.HTTP_ERROR
    assert "TEMPORARILY_UNAVAILABLE" in failure.message
    assert generic.reason is Reason.WORKER_FAILURE


async def test_proxy_503_page_stays_worker_failure() -> None:
    async with serve(
        answer(503, b"<html><title>503 Service Unavailable</title></html>", content_type="text/html")
    ) as s:
        failure = await failure_of(s.url)
    assert failure.reason is Reason.WORKER_FAILURE


# ------------------------------------------------------------------ MLflow hints


def test_database_down_503_is_backend_store_dependency() -> None:
    result = explained(ok("health"), bad("experiments_search", Reason.HTTP_ERROR, PG_DOWN, 503))
    assert result.reason is Reason.DEPENDENCY_UNAVAILABLE
    assert result.facts.dependency == "backend_store"
    assert result.facts.dependency_up == {"backend_store": False}
    assert result.diagnosis is not None and result.diagnosis.component == "backend_store"


def test_503_without_a_database_error_is_left_alone() -> None:
    error = "POST /x: HTTP 503: TEMPORARILY_UNAVAILABLE rate limited"
    result = explained(ok("health"), bad("experiments_search", Reason.HTTP_ERROR, error, 503))
    assert result.reason is Reason.HTTP_ERROR and result.facts.dependency is None
    assert result.diagnosis == Diagnosis("mlflow_server", result.diagnosis.summary)  # type: ignore[union-attr]


@pytest.mark.parametrize(
    ("reason", "status", "words"),
    [
        (Reason.HTTP_ERROR, 500, "failing"),
        (Reason.TIMEOUT, None, "slow or stalled"),
    ],
)
def test_artifact_step_failing_after_run_steps_passed_is_artifact_store(
    reason: Reason, status: int | None, words: str
) -> None:
    result = explained(
        ok("experiment_get_or_create"),
        *(ok(s) for s in RUN_STEPS),
        bad("artifact_put", reason, "PUT /api/2.0/mlflow-artifacts/artifacts/x: trouble", status),
        bad("artifact_delete", reason, "DELETE ...: trouble", status),
        ok("runs_delete"),
    )
    assert result.reason is Reason.DEPENDENCY_UNAVAILABLE and result.failed_step.name == "artifact_put"  # type: ignore[union-attr]
    assert result.steps[-2].reason is Reason.DEPENDENCY_UNAVAILABLE  # the cleanup too
    assert result.facts.dependency == "artifact_store"
    assert result.facts.dependency_up == {"backend_store": True, "artifact_store": False}
    assert result.diagnosis is not None and result.diagnosis.component == "artifact_store"
    assert words in result.diagnosis.summary


def test_artifact_step_killed_worker_stays_worker_failure() -> None:
    """A closed connection is the worker's death, whatever it was doing: no status, no re-blame."""
    result = explained(
        ok("experiment_get_or_create"),
        *(ok(s) for s in RUN_STEPS),
        bad("artifact_put", Reason.WORKER_FAILURE, "connection closed by the server"),
        ok("runs_delete"),
    )
    assert result.reason is Reason.WORKER_FAILURE
    assert result.diagnosis is not None and result.diagnosis.component == "mlflow_server"


def test_flask_html_500_on_a_database_step_is_a_dying_worker() -> None:
    """Measured: a gunicorn WORKER TIMEOUT of a worker waiting on PostgreSQL answers Flask's page."""
    error = "POST /api/2.0/mlflow/experiments/search: HTTP 500: HTML page: Internal Server Error"
    result = explained(ok("health"), bad("experiments_search", Reason.HTTP_ERROR, error, 500))
    assert result.reason is Reason.WORKER_FAILURE
    assert result.diagnosis is not None and result.diagnosis.component == "mlflow_server"
    assert "WORKER TIMEOUT" in result.diagnosis.summary
    json_500 = "POST /x: HTTP 500: INTERNAL_ERROR boom"  # MLflow's own JSON error: its answer, not a death
    assert explained(bad("experiments_search", Reason.HTTP_ERROR, json_500, 500)).reason is Reason.HTTP_ERROR


def test_artifact_5xx_when_a_run_step_failed_is_not_blamed_on_the_store() -> None:
    result = explained(
        ok("experiment_get_or_create"),
        ok("runs_create"),
        bad("runs_log_metric", Reason.HTTP_ERROR, "x", 500),
        bad("artifact_delete", Reason.HTTP_ERROR, "y", 500),
    )
    assert result.steps[-1].reason is Reason.HTTP_ERROR and result.facts.dependency is None


def test_write_timing_out_after_a_database_read_passed_is_a_database_lock() -> None:
    result = explained(ok("experiment_get_or_create"), bad("runs_create", Reason.TIMEOUT, "no complete response"))
    assert result.reason is Reason.TIMEOUT  # still a timeout: slow, not down
    assert result.diagnosis is not None and result.diagnosis.component == "backend_store"
    assert "database lock or saturation" in result.diagnosis.summary
    assert result.facts.dependency_up == {"backend_store": True}


def test_first_step_timing_out_is_the_server() -> None:
    result = explained(bad("experiment_get_or_create", Reason.TIMEOUT, "no complete response"))
    assert result.diagnosis is not None and result.diagnosis.component == "mlflow_server"
    assert result.facts.dependency_up is None  # no evidence either way: the gauge stays absent


# ------------------------------------------------------------------ generic rules


@pytest.mark.parametrize(
    ("step", "kind", "component"),
    [
        (
            bad("health", Reason.UNREACHABLE, "GET /health: cannot connect: [Errno 111] Connection refused"),
            "mlflow",
            "mlflow_server",
        ),
        (
            bad("health", Reason.UNREACHABLE, "GET /health: cannot connect: [Errno -2] Name or service not known"),
            "mlflow",
            "network",
        ),
        (bad("health", Reason.TLS_ERROR, "TLS error: CERTIFICATE_VERIFY_FAILED"), "mlflow", "network"),
        (bad("experiments_search", Reason.HTTP_ERROR, "HTTP 401: UNAUTHENTICATED", 401), "mlflow", "auth"),
        (bad("health", Reason.HTTP_ERROR, "HTTP 403: Invalid Host header", 403), "mlflow", "config"),
        (bad("health", Reason.HTTP_ERROR, "HTTP 404: Not Found", 404), "mlflow", "config"),
        (bad("scenario", Reason.INTERNAL_ERROR, "KeyError: 'x'"), "mlflow", "monitor"),
        (bad("status", Reason.TIMEOUT, "no complete response"), "asgard", "asgard"),
        (bad("status", Reason.WORKER_FAILURE, "connection closed"), "asgard", "asgard"),
    ],
)
def test_generic_rules(step: StepResult, kind: str, component: str) -> None:
    result = explained(step, kind=kind)
    assert result.diagnosis is not None and result.diagnosis.component == component
    assert step.name in result.diagnosis.summary and "\n" not in result.diagnosis.summary


def test_passing_run_has_no_diagnosis() -> None:
    assert explained(ok("health")).diagnosis is None


# ------------------------------------------------------------------ the monitor's own pool


async def test_pool_exhausted_is_the_monitors_fault_not_a_target_timeout() -> None:
    """Four requests hang on the target and hold every connection of the pool; the fifth
    never gets one: that is the monitor's own trouble, and the target was never asked."""
    asked = 0

    async def handler(conn: Conn) -> None:
        nonlocal asked
        await conn.read_request()
        asked += 1
        await conn.hang()

    async with serve(handler) as server:
        async with client_for(server.url) as client:
            hanging = [asyncio.create_task(client.request("GET", "/hang", timeout=5.0)) for _ in range(4)]
            while asked < 4:
                await asyncio.sleep(0.01)
            with pytest.raises(StepFailure) as caught:
                await client.request("GET", "/probe", timeout=0.5)
            for task in hanging:
                task.cancel()
            await asyncio.gather(*hanging, return_exceptions=True)
    failure = caught.value
    assert failure.component == "monitor" and failure.reason is not Reason.TIMEOUT
    assert "the target was not asked" in failure.message and asked == 4


def test_pool_fault_result_is_a_monitor_fault() -> None:
    step = StepResult("health", False, 0.5, reason=Reason.INTERNAL_ERROR, error="pool", component="monitor")
    result = explained(step)
    assert is_monitor_fault(result)
    assert result.diagnosis is not None and result.diagnosis.component == "monitor"
    assert not is_monitor_fault(explained(bad("scenario", Reason.INTERNAL_ERROR, "bug")))


async def test_runner_attaches_the_diagnosis() -> None:
    async with client_for(f"http://127.0.0.1:{closed_port()}") as client:
        result = await run_probe(
            SCENARIOS["mlflow_read"],
            client,
            SCENARIOS["mlflow_read"].options_model(),
            probe="mlflow_read",
            target="mlflow",
            timeout=2.0,
        )
    assert result.diagnosis is not None and result.diagnosis.component == "mlflow_server"
    assert result.as_dict()["diagnosis"]["component"] == "mlflow_server"


# ------------------------------------------------------------------ gauge and alert


def _metrics() -> tuple[MetricsSink, CollectorRegistry]:
    registry = CollectorRegistry()
    sink = MetricsSink(registry, (0.1, 1.0))
    for probe in ("mlflow_read", "mlflow_write"):
        sink.register(ProbeSeries("mlflow", probe, ("health",), 5.0, probe))  # the probe is named as its scenario
    return sink, registry


def _with(result: ProbeResult, **changes: Any) -> ProbeResult:
    return ProbeResult(**{**{f: getattr(result, f) for f in result.__dataclass_fields__}, **changes})


def test_dependency_gauge_absent_until_evidence_then_follows_it_and_never_goes_stale() -> None:
    sink, registry = _metrics()

    def value(dependency: str) -> float | None:
        return registry.get_sample_value(
            "synthetic_mlflow_dependency_up", {"target": "mlflow", "dependency": dependency}
        )

    no_evidence = explained(bad("health", Reason.UNREACHABLE, "refused"))
    sink.handle(no_evidence)
    assert value("backend_store") is None and value("artifact_store") is None
    write_ok = explained(ok("experiment_get_or_create"), *(ok(s) for s in RUN_STEPS), ok("artifact_put"))
    sink.handle(write_ok)
    assert (value("backend_store"), value("artifact_store")) == (1.0, 1.0)
    down = explained(ok("health"), bad("experiments_search", Reason.HTTP_ERROR, PG_DOWN, 503))
    sink.handle(_with(down, probe="mlflow_read"))
    assert value("backend_store") == 0.0 and value("artifact_store") == 1.0  # the read probe never tests S3
    # The read probe set backend_store; its next run cannot reach MLflow: no stale 0 stays.
    sink.handle(_with(no_evidence, probe="mlflow_read"))
    assert value("backend_store") is None and value("artifact_store") == 1.0
    sink.unregister("mlflow_write")
    assert value("artifact_store") is None


def test_alert_fires_per_dependency_with_its_severity_and_not_as_worker_or_asgard_alert() -> None:
    engine = AlertEngine(
        AlertingConfig.model_validate({"failure_threshold": 1, "success_threshold": 1, "startup_grace": 0}),
        now=T0,
        probes=[("mlflow_write", "mlflow")],
    )
    down = explained(bad("experiment_get_or_create", Reason.HTTP_ERROR, PG_DOWN, 503))
    fired = {a.name: a for a in engine.observe(down, T0 + 1)}
    alert = fired[MLFLOW_DEPENDENCY_UNAVAILABLE]
    assert alert.labels["dependency"] == "backend_store" and alert.labels["severity"] == "critical"
    assert "Diagnosis: backend_store" in alert.annotations["description"]
    assert "(runbook #diagnosis-backend_store)" in alert.annotations["description"]
    with_url = AlertEngine(
        AlertingConfig.model_validate(
            {"failure_threshold": 1, "startup_grace": 0, "runbook_url": "https://runbooks.example/sm"}
        ),
        now=T0,
        probes=[("mlflow_write", "mlflow")],
    )
    described = {a.name: a for a in with_url.observe(down, T0 + 1)}[MLFLOW_DEPENDENCY_UNAVAILABLE]
    assert "(runbook https://runbooks.example/sm#diagnosis-backend_store)" in described.annotations["description"]
    assert WORKER_FAILURE not in fired and DEPENDENCY_UNAVAILABLE not in fired
    recovered = explained(ok("experiment_get_or_create"), *(ok(s) for s in RUN_STEPS), ok("artifact_put"))
    resolved = [a for a in engine.observe(recovered, T0 + 2) if a.name == MLFLOW_DEPENDENCY_UNAVAILABLE]
    assert resolved and resolved[0].resolved
    s3 = explained(
        ok("experiment_get_or_create"),
        *(ok(s) for s in RUN_STEPS),
        bad("artifact_put", Reason.HTTP_ERROR, "PUT x: HTTP 500: HTML page", 500),
    )
    fired = {a.name: a for a in engine.observe(s3, T0 + 3)}
    assert fired[MLFLOW_DEPENDENCY_UNAVAILABLE].labels["dependency"] == "artifact_store"
    assert fired[MLFLOW_DEPENDENCY_UNAVAILABLE].labels["severity"] == "warning"


# ------------------------------------------------------------------ shown everywhere


def test_diagnosis_in_every_check_format_and_the_log_line() -> None:
    result = explained(ok("health"), bad("experiments_search", Reason.HTTP_ERROR, PG_DOWN, 503))
    probes = [ProbeRuns("mlflow_read", "mlflow", "mlflow", "mlflow_read", (result,))]
    data = json.loads(render_json(probes))
    assert data["probes"][0]["diagnosis"]["component"] == "backend_store"
    assert data["probes"][0]["failures"][0]["component"] == "backend_store"
    assert "diagnosis backend_store:" in render_table(probes)
    assert "#diagnosis-backend_store" in render_table(probes)
    assert "**Diagnosis:** `backend_store`" in render_markdown(probes)

    logged: list[dict[str, Any]] = []

    class Capture:
        def warning(self, event: str, **fields: Any) -> None:
            logged.append(fields)

    LogSink(Capture()).handle(result)
    assert logged[0]["diagnosis"]["component"] == "backend_store"


async def test_daemon_counts_a_pool_timeout_as_its_own_job_event_not_a_target_failure(
    tmp_path: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A scenario whose own requests hold the whole pool: its next request cannot get a
    connection. The daemon counts that as the monitor's job event; the target's run
    counters and alerts do not move, /status shows diagnosis `monitor`."""
    import yaml

    from monitor import daemon as daemon_module
    from monitor.config import load_config
    from monitor.scenario import registry as registry_module
    from monitor.scenario.base import Scenario, ScenarioOptions

    async def handler(conn: Conn) -> None:
        await conn.read_request()
        await conn.hang()

    async def hog(run: Any, options: Any) -> None:
        async with run.step("health") as step:
            hanging = [asyncio.create_task(run.client.request("GET", "/hang", timeout=3.0)) for _ in range(4)]
            await asyncio.sleep(0.2)
            try:
                await step.request("GET", "/health")
            finally:
                for task in hanging:
                    task.cancel()
                await asyncio.gather(*hanging, return_exceptions=True)

    monkeypatch.setitem(registry_module._SCENARIOS, "hog", Scenario("hog", "mlflow", ("health",), ScenarioOptions, hog))
    async with serve(handler) as server:
        path = tmp_path / "c.yaml"
        path.write_text(
            yaml.safe_dump(
                {
                    "targets": [{"name": "mlflow", "kind": "mlflow", "url": server.url}],
                    "probes": [
                        {"name": "hog", "target": "mlflow", "scenario": "hog", "interval": "2s", "timeout": "1s"}
                    ],
                    "alerting": {"failure_threshold": 1, "startup_grace": "0s"},
                }
            )
        )
        d = daemon_module.Daemon(load_config(path), str(path), listen="127.0.0.1:0")
        task = asyncio.create_task(d.run())
        deadline = asyncio.get_running_loop().time() + 20
        while asyncio.get_running_loop().time() < deadline and d.history._runs.get("hog", 0) < 1:
            await asyncio.sleep(0.1)
        d.request_stop()
        assert await asyncio.wait_for(task, 15) == 0
    registry = d.registry
    last = d.history.last("hog")
    assert last is not None and last.diagnosis is not None and last.diagnosis.component == "monitor"
    assert registry.get_sample_value("synthetic_monitor_job_events_total", {"probe": "hog", "event": "error"}) >= 1
    assert (
        registry.get_sample_value(
            "synthetic_probe_runs_total", {"target": "mlflow", "probe": "hog", "result": "failure"}
        )
        == 0
    )
    assert (
        registry.get_sample_value(
            "synthetic_probe_step_failures_total",
            {"target": "mlflow", "probe": "hog", "step": "health", "reason": "timeout"},
        )
        == 0
    )
    # Only the monitor's own alert may fire (its jobs are in trouble), none about the target.
    assert {a.name for a in d.alerts._engine.firing()} <= {"SyntheticMonitorStalled"}


def test_a_run_that_may_have_left_a_run_behind_is_swept_once_the_target_answers(tmp_path: Any) -> None:
    """runs/create timed out on our side, but the server may still commit it: once the probe
    passes again and that run is older than the deadline, the daemon's janitor deletes it."""
    import yaml

    from monitor import daemon as daemon_module
    from monitor.config import load_config

    timed_out = explained(ok("experiment_get_or_create"), bad("runs_create", Reason.TIMEOUT, "no complete response"))
    assert timed_out.facts.cleanup_pending is True
    assert (
        explained(ok("experiment_get_or_create"), *(ok(s) for s in RUN_STEPS), ok("runs_delete")).facts.cleanup_pending
        is None
    )
    path = tmp_path / "c.yaml"
    path.write_text(
        yaml.safe_dump(
            {
                "targets": [{"name": "mlflow", "kind": "mlflow", "url": "http://127.0.0.1:1"}],
                "probes": [{"name": "mlflow_write", "target": "mlflow", "scenario": "mlflow_write", "interval": "10s"}],
            }
        )
    )
    config = load_config(path)
    d = daemon_module.Daemon(config, str(path), listen="127.0.0.1:0")
    swept: list[str | None] = []

    async def fake_delete(only: str | None = None, artifacts: list[str] | None = None) -> None:
        swept.append(only)

    runner = d.runner
    runner.delete_stale_runs = fake_delete  # type: ignore[method-assign]
    runner.background = lambda coro: asyncio.run(coro)
    probe = config.probes[0]
    passed = explained(ok("experiment_get_or_create"), *(ok(s) for s in RUN_STEPS), ok("runs_delete"))
    runner.sweep_if_due(probe, timed_out)
    runner.sweep_if_due(probe, passed)
    assert swept == []  # too soon: the left-over run may still be a replica's in-flight one
    runner._sweep_after[probe.name] -= probe.deadline + 1
    runner.sweep_if_due(probe, passed)
    assert swept == ["mlflow_write"]
    runner.sweep_if_due(probe, passed)
    assert swept == ["mlflow_write"]  # once


def test_an_artifact_put_stuck_in_a_stalled_store_is_left_for_the_janitor() -> None:
    """A PUT stuck in a stalled S3 may be stored after our DELETE: its path is kept for the sweep."""
    path = "/api/2.0/mlflow-artifacts/artifacts/1/abc/artifacts/synthetic-monitor/probe.txt"
    result = explained(
        ok("experiment_get_or_create"),
        *(ok(s) for s in RUN_STEPS),
        bad("artifact_put", Reason.TIMEOUT, "no complete response"),
        StepResult("artifact_delete", True, 0.1, method="DELETE", path=path),
        ok("runs_delete"),
    )
    assert result.facts.cleanup_pending is True and result.facts.leftover_artifacts == (path,)
    clean = explained(
        ok("experiment_get_or_create"),
        *(ok(s) for s in RUN_STEPS),
        ok("artifact_put"),
        StepResult("artifact_delete", True, 0.1, method="DELETE", path=path),
        ok("runs_delete"),
    )
    assert clean.facts.leftover_artifacts is None
