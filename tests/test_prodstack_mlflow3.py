"""Issue 21's done-when on the production shape: one culprit per incident, the tracing probe,
artifact throughput under a throttled S3.

    gunicorn MLflow (4 sync workers) -- PostgreSQL 15, moto S3      (the session's `prodstack`)
    uvicorn MLflow (1 worker) -- its own PostgreSQL 15, moto S3 behind a FaultProxy (throttling)

The probes run in-process, concurrently each round as the daemon's jobs would, through
the daemon's own parts: `run_probe`, the culprit enricher, the metrics sink (the gauge
`synthetic_target_diagnosis` is read from it) and the alert engine. Each fault asserts:
the one culprit while it lasts (from the first blame on, nothing else is blamed), the
alert, and recovery (no culprit, the alert resolved); no MLflowWorkerFailure for a
database or S3 fault. Rounds are polled, never slept.

The uvicorn MLflow gets a tiny SQLAlchemy pool (2 connections, no overflow, 1 s wait) through
a sitecustomize shim: MLflow 3.17 reads MLFLOW_SQLALCHEMYSTORE_POOL_SIZE but drops a
MAX_OVERFLOW of 0 (`if pool_max_overflow:`) and has no pool-timeout variable, and under
gunicorn's sync workers (one request per process) a pool can never run dry anyway.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import httpx
import pytest
from prometheus_client import CollectorRegistry

from monitor.alerting.alerts import Alert
from monitor.alerting.engine import AlertEngine
from monitor.config import AlertingConfig
from monitor.culprit import TargetCulprit
from monitor.http.client import TargetClient
from monitor.probes.mlflow.alerts import DEPENDENCY_UNAVAILABLE as MLFLOW_DEPENDENCY_UNAVAILABLE
from monitor.probes.mlflow.alerts import WORKER_FAILURE
from monitor.results import ProbeResult
from monitor.scenario.registry import SCENARIOS
from monitor.scenario.runner import run_probe
from monitor.sinks.metrics import MetricsSink, ProbeSeries
from tests.faultproxy import Fault, FaultProxy
from tests.prodstack import AWS_ENV, BUCKET, PREFIX, ProdStack, missing_parts
from tests.servers import free_port, mlflow_executable, wait_http

pytestmark = pytest.mark.timeout(600)

# Two connections: OTLP ingest (log_spans_async) needs two at once, one is too few for it.
POOL_SIZE = 2

POOL_SHIM = '''
"""Test-only: a tiny SQLAlchemy pool for MLflow (see tests/test_prodstack_mlflow3.py)."""
import os
import sqlalchemy

_create_engine = sqlalchemy.create_engine
POOL = int(os.environ["SM_TEST_POOL_SIZE"])


def create_engine(url, *args, **kwargs):
    if str(url).startswith("postgresql"):
        kwargs.update(pool_size=POOL, max_overflow=0, pool_timeout=float(os.environ["SM_TEST_POOL_TIMEOUT"]))
    return _create_engine(url, *args, **kwargs)


sqlalchemy.create_engine = create_engine
'''


@dataclass(frozen=True)
class Probe:
    name: str
    scenario: str
    timeout: float
    step_timeout: float
    options: dict[str, Any] = field(default_factory=dict)
    interval: float = 10.0


class Harness:
    """The daemon's pipeline for one target, driven round by round."""

    def __init__(self, url: str, probes: list[Probe]) -> None:
        self.url = url
        self.probes = probes
        self.enricher = TargetCulprit(self, clock=time.time)  # type: ignore[arg-type]
        self.registry = CollectorRegistry()
        self.metrics = MetricsSink(self.registry, (0.1, 1.0, 10.0))
        for p in probes:
            scenario = SCENARIOS[p.scenario]
            self.metrics.register(
                ProbeSeries("mlflow", p.name, scenario.steps_for(self._options(p)), p.timeout, p.scenario)
            )
        self.engine = AlertEngine(
            AlertingConfig.model_validate({"failure_threshold": 1, "success_threshold": 1, "startup_grace": 0}),
            now=time.time(),
        )
        self.sent: list[Alert] = []
        self.results: list[ProbeResult] = []
        self.leftovers: dict[str, set[str]] = {}

    @property
    def targets(self) -> list[Any]:
        return []

    def _options(self, p: Probe) -> Any:
        return SCENARIOS[p.scenario].options_model(**p.options)

    async def round(self) -> list[ProbeResult]:
        client = TargetClient(self.url)
        try:
            raw = await asyncio.gather(
                *(
                    run_probe(
                        SCENARIOS[p.scenario],
                        client,
                        self._options(p),
                        probe=p.name,
                        target="mlflow",
                        timeout=p.timeout,
                        step_timeout=p.step_timeout,
                    )
                    for p in self.probes
                )
            )
        finally:
            await client.aclose()
        done = []
        for result in sorted(raw, key=lambda r: r.started_at + r.duration_seconds):
            result = self.enricher.enrich(result)
            self.metrics.handle(result)
            self.sent += self.engine.observe(result, time.time())
            self.leftovers.setdefault(result.probe, set()).update(result.facts.leftovers())
            done.append(result)
        self.results += done
        return done

    def blamed(self) -> set[str]:
        """The components synthetic_target_diagnosis names now (what a scrape would show)."""
        return {
            s.labels["component"]
            for metric in self.registry.collect()
            if metric.name == "synthetic_target_diagnosis"
            for s in metric.samples
            if s.value == 1
        }

    def alert(self, name: str, status: str = "firing", **labels: str) -> Alert | None:
        return next(
            (
                a
                for a in reversed(self.sent)
                if a.name == name and a.status == status and all(a.labels.get(k) == v for k, v in labels.items())
            ),
            None,
        )

    def context(self) -> str:
        lines = []
        for r in self.results[-8:]:
            failed = r.failed_step
            lines.append(
                f"{r.probe}: ok={r.ok} failed={failed.name if failed else None}/{failed.reason if failed else None}"
                f" diag={r.diagnosis} culprit={r.target_diagnosis} err={(failed.error or '')[:160] if failed else ''}"
            )
        return "\n".join(lines) + f"\nalerts: {[(a.name, a.labels.get('probe'), a.status) for a in self.sent[-10:]]}"

    async def until(self, what: str, predicate: Callable[[], bool], rounds: int = 12) -> None:
        for _ in range(rounds):
            await self.round()
            if predicate():
                return
        raise AssertionError(f"not within {rounds} rounds: {what}\n{self.context()}")

    async def only(self, component: str, rounds: int, since: int) -> None:
        """`rounds` more rounds still blame exactly `component`; every run since index `since` that
        carried a culprit named this one (one culprit per incident, no flapping)."""
        for _ in range(rounds):
            await self.round()
            assert self.blamed() == {component}, self.context()
        stamped = {r.target_diagnosis.component for r in self.results[since:] if r.target_diagnosis}
        assert stamped <= {component}, (stamped, self.context())

    async def clean_up(self) -> None:
        """What the daemon's job runner does once runs pass again: janitors and sweeps."""
        client = TargetClient(self.url)
        try:
            for p in self.probes:
                scenario = SCENARIOS[p.scenario]
                if scenario.janitor is not None:
                    await scenario.janitor(client, self._options(p), p.name, p.timeout, "")
                left = sorted(self.leftovers.pop(p.name, set()))
                if left and scenario.sweep is not None:
                    await scenario.sweep(client, left)
        finally:
            await client.aclose()


def _children(pid: int) -> list[int]:
    out = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True, check=False)
    return [int(p) for p in out.stdout.split()]


# ---------------------------------------------------------------- the uvicorn MLflow


class UvicornMlflow:
    """`mlflow server` (uvicorn, one worker) on the stack's PostgreSQL, its S3 through `s3_url`."""

    def __init__(self, workdir: Path, stack: ProdStack, s3_url: str) -> None:
        self.workdir = workdir
        self.stack = stack
        self.s3_url = s3_url
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> UvicornMlflow:
        shim = self.workdir / "shim"
        shim.mkdir(exist_ok=True)
        (shim / "sitecustomize.py").write_text(POOL_SHIM)
        env = dict(
            os.environ,
            **AWS_ENV,
            MLFLOW_S3_ENDPOINT_URL=self.s3_url,
            MLFLOW_SERVER_ENABLE_JOB_EXECUTION="false",
            PYTHONUNBUFFERED="1",
            PYTHONPATH=str(shim),
            SM_TEST_POOL_TIMEOUT="1",
            SM_TEST_POOL_SIZE=str(POOL_SIZE),
            AWS_RETRY_MODE="standard",
            AWS_MAX_ATTEMPTS="2",
        )
        command = [
            mlflow_executable(),
            "server",
            "--backend-store-uri",
            self.stack.postgres.uri,
            "--artifacts-destination",
            f"s3://{BUCKET}/{PREFIX}",
            "--host",
            "127.0.0.1",
            "--port",
            str(self.port),
            "--workers",
            "1",
        ]
        self._log = open(self.workdir / "mlflow-uvicorn.log", "ab")
        self.proc = subprocess.Popen(
            command, cwd=self.workdir, stdout=self._log, stderr=subprocess.STDOUT, env=env, start_new_session=True
        )
        wait_http(f"{self.url}/health", timeout=150, proc=self.proc)
        return self

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=5)
        self.proc = None
        if self._log:
            self._log.close()


@pytest.fixture(scope="module")
def stores(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ProdStack]:
    """PostgreSQL and S3 of the uvicorn MLflow: its own pair, so these tests do not wait for
    (or fall with) the gunicorn server's warm-up; the stack's checks work on it as usual."""
    reason = missing_parts()
    if reason:
        pytest.skip(reason)
    stack = ProdStack(tmp_path_factory.mktemp("uvicorn-stores"))
    try:
        stack.postgres.init()
        stack.s3.start()
        yield stack
    finally:
        stack.s3.kill()
        stack.postgres.destroy()


@pytest.fixture(scope="module")
def s3_proxy(stores: ProdStack) -> Iterator[FaultProxy]:
    with FaultProxy(stores.s3.url) as proxy:
        yield proxy


@pytest.fixture(scope="module")
def uvicorn_mlflow(
    stores: ProdStack, s3_proxy: FaultProxy, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[UvicornMlflow]:
    server = UvicornMlflow(tmp_path_factory.mktemp("uvicorn"), stores, s3_proxy.url).start()
    yield server
    server.stop()


def _lock_waiters(stack: ProdStack) -> int:
    with stack.postgres.connect() as conn:
        row = conn.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = 'mlflow' AND wait_event_type = 'Lock'"
        ).fetchone()
    return int(row[0]) if row else 0


def _probe_traces(stack: ProdStack) -> list[str]:
    """Probe traces still in PostgreSQL (span attributes name the probe)."""
    with stack.postgres.connect() as conn:
        rows = conn.execute(
            "SELECT DISTINCT t.request_id FROM trace_info t JOIN spans s ON s.trace_id = t.request_id"
            " WHERE s.content LIKE %s",
            ("%synthetic_monitor.probe%",),
        ).fetchall()
    return [row[0] for row in rows]


# ---------------------------------------------------------------- uvicorn + PostgreSQL + S3

TRACING = Probe("mlflow_tracing", "mlflow_tracing", timeout=8.0, step_timeout=4.0)
WRITE_BIG = Probe(
    "mlflow_write",
    "mlflow_write",
    timeout=25.0,
    step_timeout=20.0,
    options={"artifacts": True, "artifact_size": "6MiB"},
)


@pytest.mark.integration
async def test_tracing_on_uvicorn_postgres_s3_healthy_database_down_and_clean(
    stores: ProdStack, uvicorn_mlflow: UvicornMlflow
) -> None:
    h = Harness(uvicorn_mlflow.url, [TRACING])
    for _ in range(2):
        (result,) = await h.round()
        assert result.ok, h.context()
    assert (
        h.registry.get_sample_value(
            "synthetic_mlflow_trace_visible_seconds_count", {"target": "mlflow", "probe": "mlflow_tracing"}
        )
        == 2.0
    )
    assert _probe_traces(stores) == []
    stores.postgres.stop()
    try:
        since = len(h.results)
        await h.until("the database blamed", lambda: h.blamed() == {"backend_store"}, rounds=6)
        await h.only("backend_store", rounds=1, since=since)
    finally:
        stores.postgres.start()
    await h.until("tracing passes again", lambda: h.results[-1].ok and not h.blamed(), rounds=10)
    await h.clean_up()
    assert _probe_traces(stores) == [], h.context()


@pytest.mark.integration
async def test_pool_exhaustion_is_the_backend_store(stores: ProdStack, uvicorn_mlflow: UvicornMlflow) -> None:
    """The pool's one connection waits on a held lock: the next request gets SQLAlchemy's
    QueuePool timeout, which MLflow answers as HTTP 400."""
    h = Harness(uvicorn_mlflow.url, [Probe("mlflow_write", "mlflow_write", timeout=8.0, step_timeout=6.0)])
    await h.until("a passing write run", lambda: h.results[-1].ok, rounds=3)
    with stores.postgres.connect() as conn:
        conn.autocommit = False
        conn.execute("LOCK TABLE runs IN ACCESS EXCLUSIVE MODE")
        # Requests that take every connection of the pool and wait on the lock.
        holders = [
            threading.Thread(
                target=lambda: httpx.post(
                    f"{uvicorn_mlflow.url}/api/2.0/mlflow/runs/search",
                    json={"experiment_ids": ["0"], "max_results": 1},
                    timeout=60,
                ),
                daemon=True,
            )
            for _ in range(POOL_SIZE)
        ]
        for holder in holders:
            holder.start()
        # Poll until each holder's session waits on the lock: the pool is empty from then on.
        deadline = time.monotonic() + 60
        while _lock_waiters(stores) < POOL_SIZE:
            assert time.monotonic() < deadline, "the holders never waited on the lock"
            await asyncio.sleep(0.1)
        try:
            since = len(h.results)
            await h.until("the database blamed", lambda: h.blamed() == {"backend_store"}, rounds=6)
            result = h.results[-1]
            assert result.target_diagnosis is not None
            assert "connection pool is exhausted" in result.target_diagnosis.summary, h.context()
            step = result.failed_step
            assert step is not None and step.status_code == 400 and "QueuePool" in (step.error or ""), h.context()
            assert h.alert(MLFLOW_DEPENDENCY_UNAVAILABLE, dependency="backend_store") is not None
            await h.only("backend_store", rounds=1, since=since)
        finally:
            conn.rollback()
    for holder in holders:
        holder.join(timeout=30)
    await h.until("recovered", lambda: h.results[-1].ok and not h.blamed(), rounds=6)
    assert h.alert(MLFLOW_DEPENDENCY_UNAVAILABLE, "resolved", dependency="backend_store") is not None
    assert h.alert(WORKER_FAILURE) is None
    await h.clean_up()
    assert stores.active_probe_runs() == [], h.context()


@pytest.mark.integration
async def test_a_throttled_s3_moves_the_throughput_histograms_before_any_timeout(
    stores: ProdStack, uvicorn_mlflow: UvicornMlflow, s3_proxy: FaultProxy
) -> None:
    h = Harness(uvicorn_mlflow.url, [WRITE_BIG])

    def rates() -> dict[str, float]:
        return dict(h.results[-1].facts.artifact_throughput or ())  # type: ignore[attr-defined]

    await h.until("a passing 6 MiB round trip", lambda: h.results[-1].ok, rounds=3)
    multipart = next(s for s in h.results[-1].steps if s.name == "artifact_put")
    # S3 behind the proxy: server-info says multipart, so the upload ended with mpu/complete.
    assert multipart.ok and "/mpu/complete/" in (multipart.path or ""), (multipart, h.context())
    fast = rates()
    s3_proxy.set_fault(Fault("pass", delay=1.5, path=f"/{BUCKET}/"))  # unscoped, `pass` would clear
    try:
        (slow_run,) = await h.round()
    finally:
        s3_proxy.clear()
    assert slow_run.ok, h.context()  # slower, not failing: the histogram shows it first
    slow = rates()
    assert slow["upload"] < fast["upload"] / 2 and slow["download"] < fast["download"] / 2, (fast, slow)
    for direction in ("upload", "download"):
        labels = {"target": "mlflow", "probe": "mlflow_write", "direction": direction}
        assert h.registry.get_sample_value("synthetic_mlflow_artifact_throughput_bytes_count", labels) >= 2.0
    # A part the storage refuses: the upload fails, is aborted, and no part stays behind.
    s3_proxy.set_fault(Fault("status", status=500, path="synthetic-monitor/probe.bin", query="partNumber"))
    try:
        (broken,) = await h.round()
    finally:
        s3_proxy.clear()
    steps = {s.name: s for s in broken.steps}
    assert not steps["artifact_put"].ok and steps["artifact_abort"].ok and steps["artifact_delete"].ok, h.context()
    assert broken.diagnosis is not None and broken.diagnosis.component == "artifact_store", h.context()
    # Nothing left: the objects are deleted, no multipart upload stays open.
    assert stores.probe_objects() == []
    uploads = stores.s3.client().list_multipart_uploads(Bucket=BUCKET).get("Uploads", [])
    assert [u["Key"] for u in uploads if "synthetic-monitor" in u["Key"]] == []


# ---------------------------------------------------------------- gunicorn + PostgreSQL + S3

GUNICORN_PROBES = [
    Probe("mlflow_read", "mlflow_read", timeout=7.0, step_timeout=7.0),
    Probe("mlflow_write", "mlflow_write", timeout=4.0, step_timeout=2.0, options={"artifacts": True}),
    Probe(
        "mlflow_registry",
        "mlflow_registry",
        timeout=4.0,
        step_timeout=2.0,
        options={"model_name": "synthetic-monitor-probe", "experiment_name": "synthetic-monitor"},
    ),
]


async def test_s3_stall_across_probes_is_one_artifact_store_culprit(prodstack: ProdStack) -> None:
    h = Harness(prodstack.mlflow.url, GUNICORN_PROBES)
    prodstack.mlflow.warm_up(rounds=1)
    await h.until("a healthy round", lambda: all(r.ok for r in h.results[-3:]) and not h.blamed(), rounds=4)
    prodstack.s3.pause()
    try:
        await h.until("the artifact store blamed", lambda: h.blamed() == {"artifact_store"}, rounds=6)
        since = len(h.results)
        await h.only("artifact_store", rounds=2, since=since)
        assert h.alert(MLFLOW_DEPENDENCY_UNAVAILABLE, dependency="artifact_store") is not None
    finally:
        prodstack.s3.resume()
    # gunicorn killed the held workers; bring the new ones past their cold start first.
    prodstack.mlflow.warm_up(rounds=1)
    await h.until("recovered", lambda: all(r.ok for r in h.results[-3:]) and not h.blamed(), rounds=10)
    assert h.alert(MLFLOW_DEPENDENCY_UNAVAILABLE, "resolved", dependency="artifact_store") is not None
    assert h.alert(WORKER_FAILURE) is None, h.context()
    await h.clean_up()


async def test_postgres_connection_limit_is_the_backend_store(prodstack: ProdStack) -> None:
    h = Harness(prodstack.mlflow.url, GUNICORN_PROBES[:2])
    prodstack.mlflow.warm_up(rounds=1)
    await h.until("a healthy round", lambda: all(r.ok for r in h.results[-2:]) and not h.blamed(), rounds=4)
    pg = prodstack.postgres
    pg.psql("ALTER DATABASE mlflow CONNECTION LIMIT 0")
    # MLflow's pooled sessions go too, as after a failover: every new one is refused.
    pg.psql("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = 'mlflow' AND usename = 'mlflow'")
    try:
        await h.until(
            "PostgreSQL's connection limit blamed",
            lambda: (
                h.blamed() == {"backend_store"} and "too many connections" in str(h.enricher.current().get("mlflow"))
            ),
            rounds=8,
        )
        assert h.alert(MLFLOW_DEPENDENCY_UNAVAILABLE, dependency="backend_store") is not None
    finally:
        pg.psql("ALTER DATABASE mlflow CONNECTION LIMIT -1")
    await h.until("recovered", lambda: all(r.ok for r in h.results[-2:]) and not h.blamed(), rounds=8)
    assert h.alert(WORKER_FAILURE) is None, h.context()
    await h.clean_up()


async def test_gunicorn_workers_killed_with_healthy_stores_is_the_server(prodstack: ProdStack) -> None:
    h = Harness(prodstack.mlflow.url, GUNICORN_PROBES[:2])
    prodstack.mlflow.warm_up(rounds=1)
    await h.until("a healthy round", lambda: all(r.ok for r in h.results[-2:]) and not h.blamed(), rounds=4)
    master = prodstack.mlflow.proc
    assert master is not None
    stop = threading.Event()

    def kill_workers() -> None:
        # mlflow server -> the gunicorn arbiter -> its workers: kill the workers, keep the arbiter.
        while not stop.is_set():
            for arbiter in _children(master.pid):
                for worker in _children(arbiter):
                    try:
                        os.kill(worker, signal.SIGKILL)
                    except ProcessLookupError:
                        pass
            stop.wait(0.3)

    killer = threading.Thread(target=kill_workers, daemon=True)
    killer.start()

    # Known ambiguity (seen in 2 of 3 full runs on 2026-12-03, never alone): a respawned
    # worker may answer experiment_get_or_create and die before runs_create, which then waits
    # for the next worker and times out: from outside that is exactly "a database route timed
    # out right after another one answered", the lock inference of MLflow's explain. Once a
    # connection dropped within WATCHDOG_SECONDS in the incident (a sudden death, the usual
    # first round here) the inference no longer counts; an incident whose workers all died
    # idle shows none, and the store blamed first stays. So the server must be blamed, or
    # else the store by that inference and nothing else, and `only` below: without flapping.
    def server_or_the_lock_inference() -> bool:
        blamed = h.blamed()
        if blamed == {"mlflow_server"}:
            return True
        current = str(h.enricher.current().get("mlflow"))
        return blamed == {"backend_store"} and "database lock or saturation" in current

    try:
        await h.until("the server blamed (or the lock inference)", server_or_the_lock_inference, rounds=6)
        component = next(iter(h.blamed()))
        since = len(h.results)
        await h.only(component, rounds=1, since=since)
    finally:
        stop.set()
        killer.join(timeout=10)
    if component == "mlflow_server":
        assert h.alert(WORKER_FAILURE) is not None, h.context()
    else:  # the store explains the held workers: one culprit, so no worker-failure page beside it
        assert h.alert(WORKER_FAILURE) is None, h.context()
    prodstack.mlflow.warm_up(rounds=1)
    await h.until("recovered", lambda: all(r.ok for r in h.results[-2:]) and not h.blamed(), rounds=8)
    await h.clean_up()
    assert prodstack.active_probe_runs() == [], h.context()
