"""One culprit per incident (issue 21): the target-level diagnosis over all probes of a target,
its gauge, /status and `check` lines, alert descriptions; a step starved by a spent deadline
blames nothing; pool exhaustion and PostgreSQL's connection limit are the backend store.

The step results fed to `explain` carry the error texts measured on gunicorn + PostgreSQL + S3
(tests/test_prodstack_mlflow3.py runs the real faults); the deadline case runs the real
write scenario over a real socket.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from monitor.alerting.engine import AlertEngine
from monitor.config import AlertingConfig
from monitor.culprit import TargetCulprit
from monitor.diagnosis import diagnose
from monitor.probes.mlflow.alerts import WORKER_FAILURE
from monitor.probes.mlflow.api import MlflowFacts
from monitor.probes.mlflow.explain import explain
from monitor.report import ProbeRuns, render_json, render_markdown, render_table
from monitor.results import ProbeResult, Reason, StepResult
from monitor.scenario.base import ScenarioRun
from monitor.scenario.registry import KINDS, SCENARIOS
from monitor.scenario.runner import run_probe
from monitor.sinks.history import HistorySink
from monitor.sinks.metrics import MetricsSink, ProbeSeries
from tests.scripted import Conn, client_for, serve

pytestmark = pytest.mark.timeout(30)

T0 = 1_700_000_000.0
RUN_STEPS = ("runs_create", "runs_log_metric", "runs_log_parameter", "runs_update", "runs_get")
POOL_400 = (
    "POST /api/2.0/mlflow/runs/create: HTTP 400: BAD_REQUEST (sqlalchemy.exc.TimeoutError) QueuePool limit of"
    " size 1 overflow 0 reached, connection timed out, timeout 1.00"
)
TOO_MANY = (
    "POST /api/2.0/mlflow/experiments/search: HTTP 503: TEMPORARILY_UNAVAILABLE (psycopg.OperationalError)"
    ' connection failed: FATAL:  too many connections for database "mlflow"'
)
PG_DOWN = (
    "POST /api/2.0/mlflow/experiments/search: HTTP 503: TEMPORARILY_UNAVAILABLE (psycopg.OperationalError)"
    ' connection failed: connection to server at "127.0.0.1", port 5432 failed: Connection refused'
)


class Config:
    """What the enricher reads of the config: probes with their intervals."""

    def __init__(self, *probes: tuple[str, float]) -> None:
        self.targets: list[Any] = []
        self.probes = [type("P", (), {"name": n, "target": "mlflow", "interval": i})() for n, i in probes]


def ok(name: str, seconds: float = 0.01) -> StepResult:
    return StepResult(name, True, seconds)


def bad(name: str, reason: Reason, error: str = "failed", status: int | None = None) -> StepResult:
    return StepResult(name, False, 0.5, reason=reason, error=error, status_code=status)


def run_of(probe: str, *steps: StepResult, at: float = T0, scenario: str | None = None) -> ProbeResult:
    """What the runner makes of these steps: MLflow's hints, then the run's diagnosis."""
    run = ScenarioRun(client=None, deadline=0.0, step_timeout=1.0, facts=MlflowFacts())  # type: ignore[arg-type]
    run.steps.extend(steps)
    explain(run)
    result = ProbeResult(probe, "mlflow", scenario or probe, at, 1.0, tuple(run.steps), 5.0, facts=run.facts)
    kind = KINDS["mlflow"]
    d = diagnose(result, kind.server_component, run.diagnosis, kind.diagnose, kind.component_runbooks())
    return _with(result, diagnosis=d)


def _with(result: ProbeResult, **changes: Any) -> ProbeResult:
    return ProbeResult(**{**{f: getattr(result, f) for f in result.__dataclass_fields__}, **changes})


READ_OK = ("health", "experiments_search", "registered_models_search", "runs_search", "version")


def culprit_of(*results: ProbeResult, now: float | None = None) -> tuple[TargetCulprit, list[ProbeResult]]:
    enricher = TargetCulprit(
        Config(("mlflow_read", 30), ("mlflow_write", 300), ("mlflow_registry", 300)),  # type: ignore[arg-type]
        clock=lambda: now if now is not None else max(r.started_at for r in results) + 1,
    )
    return enricher, [enricher.enrich(r) for r in results]


# ------------------------------------------------------------------ the differential rules


def test_s3_stall_is_one_artifact_store_culprit_across_probes() -> None:
    """Measured: the artifact steps name the store, /health and the first database step time out."""
    write = run_of(
        "mlflow_write",
        ok("experiment_get_or_create"),
        *(ok(s) for s in RUN_STEPS),
        bad("artifact_put", Reason.TIMEOUT, "PUT ...: no complete response within 2s"),
        ok("artifact_delete"),
        ok("runs_delete"),
        at=T0,
    )
    read = run_of("mlflow_read", bad("health", Reason.TIMEOUT, "GET /health: no complete response"), at=T0 + 5)
    write2 = run_of(
        "mlflow_write", bad("experiment_get_or_create", Reason.TIMEOUT, "GET ...: no complete response"), at=T0 + 9
    )
    assert read.diagnosis is not None and read.diagnosis.component == "mlflow_server"  # alone, it blames the server
    enricher, stamped = culprit_of(write, read, write2)
    culprit = stamped[-1].target_diagnosis
    assert culprit is not None and culprit.component == "artifact_store"
    assert "mlflow_read" in culprit.summary and "workers held by the artifact store" in culprit.summary
    assert enricher.current() == {"mlflow": culprit}


def test_table_lock_is_the_backend_store_whichever_timeout_fires_first() -> None:
    read = run_of(
        "mlflow_read",
        ok("health"),
        ok("experiments_search"),
        ok("registered_models_search"),
        bad("runs_search", Reason.TIMEOUT, "POST ...: no complete response within 7s"),
    )
    registry = run_of(
        "mlflow_registry", bad("registered_model_get_or_create", Reason.TIMEOUT, "GET ...: timeout"), at=T0 + 1
    )
    dying = run_of(
        "mlflow_read",
        ok("health"),
        bad("experiments_search", Reason.HTTP_ERROR, "POST ...: HTTP 500: HTML page: 500 Internal Server Error", 500),
        at=T0 + 2,
    )
    for results in ((read, registry), (registry, dying)):
        _, stamped = culprit_of(*results)
        culprit = stamped[-1].target_diagnosis
        assert culprit is not None and culprit.component == "backend_store", culprit


def test_database_down_and_worker_kill_and_recovery() -> None:
    down = run_of("mlflow_read", ok("health"), bad("experiments_search", Reason.HTTP_ERROR, PG_DOWN, 503))
    _, stamped = culprit_of(down)
    assert stamped[0].target_diagnosis is not None and stamped[0].target_diagnosis.component == "backend_store"
    killed = run_of("mlflow_read", bad("health", Reason.WORKER_FAILURE, "GET /health: connection reset"))
    fine = run_of("mlflow_write", ok("experiment_get_or_create"), *(ok(s) for s in RUN_STEPS), at=T0 + 1)
    enricher, stamped = culprit_of(killed, fine)
    assert stamped[-1].target_diagnosis is not None and stamped[-1].target_diagnosis.component == "mlflow_server"
    healed = run_of("mlflow_read", *(ok(s) for s in READ_OK), at=T0 + 2)
    assert enricher.enrich(healed).target_diagnosis is None
    assert enricher.current() == {}


def test_a_store_a_later_run_saw_working_is_not_blamed() -> None:
    s3_failed = run_of(
        "mlflow_write",
        ok("experiment_get_or_create"),
        *(ok(s) for s in RUN_STEPS),
        bad("artifact_put", Reason.HTTP_ERROR, "PUT ...: HTTP 500", 500),
    )
    s3_back = run_of(
        "mlflow_registry",
        ok("experiment_get_or_create"),
        ok("runs_create"),
        ok("artifact_put"),
        bad("model_version_create", Reason.HTTP_ERROR, "POST ...: HTTP 500: INTERNAL_ERROR boom", 500),
        at=T0 + 3,
    )
    _, stamped = culprit_of(s3_failed, s3_back)
    assert stamped[-1].target_diagnosis is not None and stamped[-1].target_diagnosis.component == "mlflow_server"


def test_a_stale_failure_of_a_slow_probe_stops_blaming() -> None:
    old = run_of("mlflow_read", ok("health"), bad("experiments_search", Reason.HTTP_ERROR, PG_DOWN, 503))
    enricher, _ = culprit_of(old)
    later = T0 + 30 * 2.5 + 10
    enricher._clock = lambda: later  # type: ignore[method-assign]
    fine = run_of("mlflow_write", ok("experiment_get_or_create"), *(ok(s) for s in RUN_STEPS), at=later - 1)
    assert enricher.enrich(fine).target_diagnosis is None


@pytest.mark.parametrize(
    ("error", "status", "words"),
    [(POOL_400, 400, "connection pool is exhausted"), (TOO_MANY, 503, "too many connections")],
)
def test_connection_shortages_are_the_backend_store_with_their_own_summary(error: str, status: int, words: str) -> None:
    result = run_of(
        "mlflow_write", ok("experiment_get_or_create"), bad("runs_create", Reason.HTTP_ERROR, error, status)
    )
    assert result.reason is Reason.DEPENDENCY_UNAVAILABLE
    assert result.facts.dependency_up == {"backend_store": False}
    assert result.diagnosis is not None and result.diagnosis.component == "backend_store"
    assert words in result.diagnosis.summary
    _, stamped = culprit_of(result)
    assert stamped[0].target_diagnosis is not None and words in stamped[0].target_diagnosis.summary


def test_cross_checked_result_takes_its_root_cause_targets_culprit() -> None:
    down = run_of("mlflow_read", ok("health"), bad("experiments_search", Reason.HTTP_ERROR, PG_DOWN, 503))
    asgard = ProbeResult(
        "asgard_api",
        "asgard",
        "asgard",
        T0 + 1,
        0.1,
        (bad("status", Reason.DEPENDENCY_UNAVAILABLE),),
        5.0,
        root_cause="mlflow",
    )
    asgard = _with(asgard, diagnosis=diagnose(asgard, "asgard"))
    _, stamped = culprit_of(down, asgard)
    culprit = stamped[-1].target_diagnosis
    assert culprit is not None and culprit.component == "backend_store" and "via target mlflow" in culprit.summary


# ------------------------------------------------------------------ where the culprit shows


def _engine() -> AlertEngine:
    return AlertEngine(
        AlertingConfig.model_validate({"failure_threshold": 1, "success_threshold": 1, "startup_grace": 0}), now=T0
    )


def test_gauge_status_check_and_alert_show_the_culprit() -> None:
    registry = CollectorRegistry()
    sink = MetricsSink(registry, (0.1, 1.0))
    sink.register(ProbeSeries("mlflow", "mlflow_read", ("health",), 5.0, "mlflow_read"))
    sink.register(ProbeSeries("mlflow", "mlflow_write", ("health",), 5.0, "mlflow_write"))
    history = HistorySink()
    write = run_of(
        "mlflow_write",
        ok("experiment_get_or_create"),
        *(ok(s) for s in RUN_STEPS),
        bad("artifact_put", Reason.TIMEOUT, "PUT ...: timeout"),
    )
    read = run_of("mlflow_read", bad("health", Reason.WORKER_FAILURE, "GET /health: connection reset"), at=T0 + 1)
    _, stamped = culprit_of(write, read)
    for result in stamped:
        sink.handle(result)
        history.handle(result)

    def value(component: str) -> float | None:
        return registry.get_sample_value("synthetic_target_diagnosis", {"target": "mlflow", "component": component})

    assert value("artifact_store") == 1.0 and value("mlflow_server") is None
    status = history.snapshot(["mlflow_read", "mlflow_write"])
    assert status["targets"]["mlflow"]["component"] == "artifact_store"
    assert status["probes"][0]["last"]["target_diagnosis"]["component"] == "artifact_store"
    runs = [
        ProbeRuns("mlflow_write", "mlflow", "mlflow", "mlflow_write", (stamped[0],)),
        ProbeRuns("mlflow_read", "mlflow", "mlflow", "mlflow_read", (stamped[1],)),
    ]
    assert json.loads(render_json(runs))["targets"] == [
        {"name": "mlflow", "diagnosis": stamped[1].target_diagnosis.as_dict()}  # type: ignore[union-attr]
    ]
    assert "target mlflow: culprit artifact_store" in render_table(runs)
    assert "culprit artifact_store" in render_markdown(runs)
    # The worker failure of the read probe follows from the held workers: no MLflowWorkerFailure page.
    engine = _engine()
    alerts = engine.observe(stamped[1], T0 + 100) + engine.observe(stamped[0], T0 + 100)
    assert WORKER_FAILURE not in {a.name for a in alerts}
    failing = [a for a in alerts if a.name == "SyntheticProbeFailing"]
    assert failing and "Target culprit: artifact_store" in failing[0].annotations["description"]
    # Recovery: the series goes.
    healed = [
        run_of("mlflow_read", *(ok(s) for s in READ_OK), at=T0 + 2),
        run_of(
            "mlflow_write", ok("experiment_get_or_create"), *(ok(s) for s in RUN_STEPS), ok("artifact_put"), at=T0 + 3
        ),
    ]
    enricher, _ = culprit_of(*stamped)
    for result in healed:
        sink.handle(enricher.enrich(result))
    assert value("artifact_store") is None


def test_a_worker_kill_with_healthy_stores_still_pages_worker_failure() -> None:
    killed = run_of("mlflow_read", bad("health", Reason.WORKER_FAILURE, "GET /health: connection reset"))
    _, stamped = culprit_of(killed)
    assert WORKER_FAILURE in {a.name for a in _engine().observe(stamped[0], T0 + 100)}


# ------------------------------------------------------------------ a step starved by a spent deadline


class Mlflow:
    """Just enough of MLflow's write path over a socket; `runs/get` eats the whole deadline
    (the test's clock jumps), as a slow database did when the bug was found."""

    def __init__(self) -> None:
        self.skew = 0.0
        self.metric: Any = None
        self.param: Any = None
        self.paths: list[str] = []

    def clock(self) -> float:
        return asyncio.get_running_loop().time() + self.skew

    async def __call__(self, conn: Conn) -> None:
        while True:
            request = await conn.read_request()
            path = request.path.split("?")[0]
            self.paths.append(f"{request.method} {path}")
            body: dict[str, Any] = {}
            sent = json.loads(request.body) if request.body.startswith(b"{") else {}
            if path.endswith("/experiments/get-by-name"):
                body = {"experiment": {"experiment_id": "1", "lifecycle_stage": "active"}}
            elif path.endswith("/runs/create"):
                body = {"run": {"info": {"run_id": "r1", "artifact_uri": "mlflow-artifacts:/1/r1/artifacts"}}}
            elif path.endswith("/runs/log-metric"):
                self.metric = sent["value"]
            elif path.endswith("/runs/log-parameter"):
                self.param = sent["value"]
            elif path.endswith("/runs/get"):
                self.skew += 1000.0  # the database was slow: the deadline is spent
                body = {
                    "run": {
                        "info": {"status": "FINISHED"},
                        "data": {
                            "metrics": [{"key": "synthetic_probe_value", "value": self.metric}],
                            "params": [{"key": "synthetic_probe_token", "value": self.param}],
                        },
                    }
                }
            await conn.respond(200, json.dumps(body).encode())


async def test_a_step_starved_by_the_deadline_is_skipped_and_blames_nothing() -> None:
    """Before: artifact_put failed 'deadline exhausted', was blamed on the artifact store and
    set synthetic_mlflow_dependency_up{artifact_store} to 0."""
    server_side = Mlflow()
    scenario = SCENARIOS["mlflow_write"]
    async with serve(server_side) as server, client_for(server.url) as client:
        result = await run_probe(
            scenario,
            client,
            scenario.options_model(artifacts=True),
            probe="mlflow_write",
            target="mlflow",
            timeout=5.0,
            clock=server_side.clock,
        )
    steps = {s.name: s for s in result.steps}
    put = steps["artifact_put"]
    assert put.skipped and not put.ok and put.reason is Reason.TIMEOUT and put.component is None
    assert "deadline spent" in (put.error or "")
    assert not any(p.startswith("PUT ") for p in server_side.paths)  # nothing was sent
    assert steps["artifact_delete"].ok and steps["runs_delete"].ok  # cleanup still runs
    assert isinstance(result.facts, MlflowFacts)
    assert (result.facts.dependency_up or {}).get("artifact_store") is not False
    assert result.facts.leftover_artifacts is None  # nothing was uploaded, nothing to sweep
    assert result.diagnosis is not None and result.diagnosis.component == "backend_store"
    assert "got no time" in result.diagnosis.summary
    registry = CollectorRegistry()
    sink = MetricsSink(registry, (0.1, 1.0))
    sink.register(ProbeSeries("mlflow", "mlflow_write", scenario.steps, 5.0, "mlflow_write"))
    sink.handle(result)
    assert (
        registry.get_sample_value(
            "synthetic_mlflow_dependency_up", {"target": "mlflow", "dependency": "artifact_store"}
        )
        is None
    )
    assert registry.get_sample_value(
        "synthetic_probe_step_failures_total",
        {"target": "mlflow", "probe": "mlflow_write", "step": "artifact_put", "reason": "timeout"},
    ) in (None, 0.0)


def test_a_connection_dropped_after_health_is_the_server_not_the_database() -> None:
    """Measured with workers SIGKILLed and healthy stores: /health answers, the next request's
    connection drops. That is any killed worker, no evidence against the database."""
    killed = run_of(
        "mlflow_read",
        ok("health"),
        bad("registered_models_search", Reason.WORKER_FAILURE, "GET ...: connection closed by the server"),
    )
    _, stamped = culprit_of(killed)
    culprit = stamped[0].target_diagnosis
    assert culprit is not None and culprit.component == "mlflow_server", culprit
    assert WORKER_FAILURE in {a.name for a in _engine().observe(stamped[0], T0 + 100)}


class _CountedProbes(list[Any]):
    iterations = 0

    def __iter__(self) -> Any:
        type(self).iterations += 1
        return super().__iter__()


def test_a_result_costs_a_scan_of_its_own_target_not_of_every_probe() -> None:
    """In the wide outage (1,000 probes, 100 targets) the enricher rebuilt a map of every
    probe's interval and scanned every probe's latest result per result: a fifth of the
    event loop's time. The intervals are read once per config; a result reads its target's."""
    config = Config(*[(f"p{i}", 10.0) for i in range(1000)])
    config.probes = _CountedProbes(config.probes)
    enricher = TargetCulprit(config, clock=lambda: T0 + 2)  # type: ignore[arg-type]
    failed = run_of("mlflow_read", ok("health"), bad("experiments_search", Reason.TIMEOUT))
    for i in range(1000):
        enricher.enrich(_with(failed, probe=f"p{i}", target=f"t{i // 10}"))
    assert _CountedProbes.iterations == 1
    assert sorted(r.probe for r in enricher._fresh("t7")) == [f"p{i}" for i in range(70, 80)]
    # A reload that moves a probe to another target: it no longer counts for the old one.
    enricher.enrich(_with(failed, probe="p70", target="t8"))
    assert "p70" not in {r.probe for r in enricher._fresh("t7")}
    assert "p70" in {r.probe for r in enricher._fresh("t8")}
    enricher.forget("p71")
    assert "p71" not in {r.probe for r in enricher._fresh("t7")}


def _dropped(name: str, seconds: float) -> StepResult:
    return StepResult(
        name, False, seconds, reason=Reason.WORKER_FAILURE, error=f"POST {name}: connection closed by the server"
    )


def test_workers_dying_suddenly_keep_a_timing_inference_off_the_database_for_the_incident() -> None:
    """Measured with workers SIGKILLed every 0.3 s and healthy stores: the first round drops
    connections 0.1-0.2 s into requests; in a later one a respawned worker answered
    experiment_get_or_create and died, so runs_create timed out waiting for the next worker:
    'a write timed out after a database step answered', the lock inference. Before, that
    round moved the culprit from the server to the database mid-incident."""
    read = run_of("mlflow_read", ok("health"), _dropped("registered_models_search", 0.15))
    write = run_of(
        "mlflow_write",
        ok("experiment_get_or_create"),
        bad("runs_create", Reason.TIMEOUT, "POST ...: no complete response within 2s"),
        at=T0 + 0.001,
    )
    assert write.diagnosis is not None and write.diagnosis.component == "backend_store"  # alone: the lock
    held = run_of("mlflow_read", bad("health", Reason.TIMEOUT, "GET /health: no complete response"), at=T0 + 8)
    write2 = run_of(
        "mlflow_write",
        ok("experiment_get_or_create"),
        bad("runs_create", Reason.TIMEOUT, "POST ...: no complete response within 2s"),
        at=T0 + 8.001,
    )
    _, stamped = culprit_of(read, write, held, write2)
    for result in stamped:
        assert result.target_diagnosis is not None and result.target_diagnosis.component == "mlflow_server", result
    assert "respawned worker" in str(stamped[-1].target_diagnosis)


def test_a_connection_the_worker_timeout_dropped_on_a_database_route_is_the_database() -> None:
    """Measured with experiments locked past gunicorn's 5 s timeout: /health answered, then
    experiments_search's worker was killed at the timeout and its connection dropped (more
    often it answers Flask's HTML 500). Before, the drop was no evidence and the first page
    named the server."""
    read = run_of("mlflow_read", ok("health"), _dropped("experiments_search", 5.6))
    _, stamped = culprit_of(read)
    culprit = stamped[0].target_diagnosis
    assert culprit is not None and culprit.component == "backend_store", culprit
    assert "database lock or saturation" in culprit.summary
    assert WORKER_FAILURE not in {a.name for a in _engine().observe(stamped[0], T0 + 100)}
