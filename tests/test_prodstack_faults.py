"""Done-when test of issue 11: the daemon against MLflow in its production shape names the
broken part of each real fault.

    real MLflow (gunicorn, 4 sync workers) -- PostgreSQL 15 (own cluster)
         ^                                  \\-- moto S3 server (artifacts)
         | probes
    daemon (subprocess) -- pushes alerts --> webhook receiver stand-in

Healthy runs pass; then each fault is injected and cleared in turn, and each must give
the expected reason, `dependency` fact, `diagnosis.component` and alert at the receiver,
then recover (resolved notice):

| fault                                   | probe / step                          | reason                 | component      | alert                              |
|-----------------------------------------|---------------------------------------|------------------------|----------------|------------------------------------|
| PostgreSQL stopped (pg_ctl stop)        | mlflow_read / experiments_search      | dependency_unavailable | backend_store  | MLflowDependencyUnavailable (crit) |
| S3 gone (moto killed)                   | mlflow_write / artifact_put           | dependency_unavailable | artifact_store | MLflowDependencyUnavailable (warn) |
| S3 stalled (moto SIGSTOP)               | mlflow_write / artifact_put           | dependency_unavailable | artifact_store | MLflowDependencyUnavailable (warn) |
| `LOCK TABLE runs IN ACCESS EXCLUSIVE`   | mlflow_write / runs_create            | timeout                | backend_store  | SyntheticProbeTimeout              |
| gunicorn WORKER TIMEOUT (experiments locked longer than gunicorn's 5 s) | mlflow_read / experiments_search | worker_failure | mlflow_server (target culprit backend_store) | SyntheticProbeFailing |

(The killed worker either drops the connection or, waiting on PostgreSQL, answers Flask's
HTML 500 page: psycopg turns gunicorn's abort into a cancelled query. Both are worker_failure.)

MLflowWorkerFailure fires for none of them: each is a database or S3 fault, the target's
one culprit (issue 21) is the store, never the workers it held. At the end: no active probe run in
PostgreSQL and no probe object in the bucket.

Timing: gunicorn kills a stuck worker after 5 s (+ up to ~1.3 s of arbiter polling); the
write probe's steps time out at 3 s (before that kill: a lock or a stall shows as our
timeout), the read probe's deadline is 8 s (after it: the kill shows as worker_failure).
"""

from __future__ import annotations

import json
import signal
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from tests.prodstack import ProdStack
from tests.servers import DaemonProcess
from tests.standin.webhook import WebhookServer, serve_in_thread

pytestmark = pytest.mark.timeout(240)


def _alerts(hook: WebhookServer) -> list[dict[str, Any]]:
    out = []
    for entry in hook.snapshot():
        body = entry["body"]
        for alert in (body.get("alerts") or []) if isinstance(body, dict) else []:
            out.append(dict(alert, received_at=entry["received_at"]))
    return out


def _find(hook: WebhookServer, alertname: str, status: str, since: float, **labels: str) -> dict[str, Any] | None:
    for alert in _alerts(hook):
        got = alert.get("labels") or {}
        if (
            alert["status"] == status
            and alert["received_at"] >= since
            and got.get("alertname") == alertname
            and all(got.get(k) == v for k, v in labels.items())
        ):
            return alert
    return None


class Rig:
    def __init__(self, stack: ProdStack, workdir: Path) -> None:
        self.stack = stack
        self.workdir = workdir
        self.hook = serve_in_thread()
        config = workdir / "monitor.yaml"
        config.write_text(
            yaml.safe_dump(
                {
                    "log": {"format": "json", "level": "info"},
                    "targets": [{"name": "mlflow", "kind": "mlflow", "url": stack.mlflow.url}],
                    "probes": [
                        # A run, its cleanup reserve included, fits in 90 % of the interval (config rule).
                        {
                            "name": "mlflow_read",
                            "target": "mlflow",
                            "scenario": "mlflow_read",
                            "interval": "8s",
                            "timeout": "7s",
                        },
                        # Two cleanup steps of at most 2 s each after a 4 s deadline: 8 s <= 90 % of 9 s.
                        {
                            "name": "mlflow_write",
                            "target": "mlflow",
                            "scenario": "mlflow_write",
                            "interval": "9s",
                            "timeout": "4s",
                            "step_timeout": "2s",
                            "options": {"experiment_name": "synthetic-monitor", "artifacts": True},
                        },
                        # The registry path rides along: after every fault no model version is left.
                        # Three cleanup steps of at most 2 s after a 4 s deadline: 10 s <= 90 % of 12 s.
                        {
                            "name": "mlflow_registry",
                            "target": "mlflow",
                            "scenario": "mlflow_registry",
                            "interval": "12s",
                            "timeout": "4s",
                            "step_timeout": "2s",
                            "options": {
                                "model_name": "synthetic-monitor-probe",
                                "experiment_name": "synthetic-monitor",
                            },
                        },
                    ],
                    "alerting": {
                        "failure_threshold": 1,
                        "success_threshold": 1,
                        "startup_grace": "0s",
                        "resend_interval": "30s",
                        "retry_backoff": "200ms",
                        "receivers": [{"kind": "webhook", "url": f"{self.hook.url}/hook"}],
                    },
                }
            )
        )
        self.daemon = DaemonProcess(config, workdir)

    def status(self) -> dict[str, Any]:
        return httpx.get(f"{self.daemon.url}/status", timeout=5).json()

    def metrics(self) -> str:
        return httpx.get(f"{self.daemon.url}/metrics", timeout=5).text

    def context(self) -> str:
        alerts = [(a["labels"].get("alertname"), a["labels"].get("probe"), a["status"]) for a in _alerts(self.hook)]
        return f"alerts: {alerts[-12:]}\n--- daemon log ---\n{self.daemon.log_text()[-4000:]}\n{self.stack.tails()}"

    def wait(self, predicate: Callable[[], Any], timeout: float, what: str) -> Any:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            value = predicate()
            if value:
                return value
            time.sleep(0.25)
        raise AssertionError(f"timed out after {timeout:g}s waiting for {what}\n{self.context()}")

    def fired(self, alertname: str, since: float, timeout: float = 25, **labels: str) -> dict[str, Any]:
        return self.wait(
            lambda: _find(self.hook, alertname, "firing", since, **labels), timeout, f"{alertname} {labels} firing"
        )

    def resolved(self, alertname: str, since: float, timeout: float = 25, **labels: str) -> dict[str, Any]:
        return self.wait(
            lambda: _find(self.hook, alertname, "resolved", since, **labels), timeout, f"{alertname} {labels} resolved"
        )

    def failure(self, probe: str, since: float) -> dict[str, Any]:
        """The newest failed run of `probe` that started after `since` (from /status)."""
        for run in self.status()["recent_failures"]:
            if run["name"] == probe and run["started_at"] >= since:
                return run
        raise AssertionError(f"no failed run of {probe} since {since}\n{self.context()}")

    def passes_again(self, probe: str, since: float, timeout: float = 25) -> None:
        def ok() -> bool:
            last = next(p for p in self.status()["probes"] if p["name"] == probe)["last"]
            return bool(last and last["ok"] and last["started_at"] >= since)

        self.wait(ok, timeout, f"a passing run of {probe}")


@pytest.fixture
def rig(prodstack: ProdStack, tmp_path: Path) -> Iterator[Rig]:
    rig = Rig(prodstack, tmp_path)
    try:
        rig.daemon.start()
        yield rig
    finally:
        if rig.daemon.proc is not None and rig.daemon.proc.poll() is None:
            rig.daemon.stop(signal.SIGTERM)
        rig.hook.stop()


def _expect(run: dict[str, Any], step: str, reason: str, component: str, dependency: str | None) -> dict[str, Any]:
    failed = next(s for s in run["steps"] if not s["ok"])
    assert (failed["name"], failed["reason"]) == (step, reason), run
    assert run["diagnosis"]["component"] == component, run
    assert run["facts"].get("dependency") == dependency, run
    return failed


def test_each_real_fault_names_its_broken_part_and_recovers(rig: Rig) -> None:
    stack = rig.stack
    t0 = time.time()
    # Healthy: every run of both probes passes (artifacts round-trip through S3, runs in
    # PostgreSQL), at least two each, and nothing is sent to the receiver.
    for probe, runs in (("mlflow_read", 2), ("mlflow_write", 2), ("mlflow_registry", 1)):
        rig.wait(
            lambda probe=probe, runs=runs: (
                len(next(p for p in rig.status()["probes"] if p["name"] == probe)["recent_ok"]) >= runs
            ),
            40,
            f"{runs} run(s) of {probe}",
        )
    assert all(all(p["recent_ok"]) for p in rig.status()["probes"]), rig.context()
    assert not _alerts(rig.hook), rig.context()
    print(f"\nprodstack start-up {stack.startup_seconds:.1f}s, healthy phase {time.time() - t0:.1f}s")
    assert 'synthetic_mlflow_dependency_up{dependency="backend_store",target="mlflow"} 1.0' in rig.metrics()
    assert 'synthetic_mlflow_dependency_up{dependency="artifact_store",target="mlflow"} 1.0' in rig.metrics()

    # -- PostgreSQL stopped: MLflow answers its own 503 TEMPORARILY_UNAVAILABLE --------------
    since = time.time()
    stack.postgres.stop()
    try:
        fired = rig.fired("MLflowDependencyUnavailable", since, probe="mlflow_read", dependency="backend_store")
        assert fired["labels"]["severity"] == "critical"
        assert "Diagnosis: backend_store" in fired["annotations"]["description"]
        rig.fired("MLflowDependencyUnavailable", since, probe="mlflow_write", dependency="backend_store")
        run = rig.failure("mlflow_read", since)
        step = _expect(run, "experiments_search", "dependency_unavailable", "backend_store", "backend_store")
        assert step["status_code"] == 503 and "TEMPORARILY_UNAVAILABLE" in step["error"]
        assert 'synthetic_mlflow_dependency_up{dependency="backend_store",target="mlflow"} 0.0' in rig.metrics()
    finally:
        cleared = time.time()
        stack.postgres.start()
    rig.resolved("MLflowDependencyUnavailable", cleared, probe="mlflow_read", dependency="backend_store")
    rig.resolved("MLflowDependencyUnavailable", cleared, probe="mlflow_write", dependency="backend_store")

    # -- S3 gone: MLflow's artifact proxy answers 500 (HTML), the run steps pass ------------
    since = time.time()
    stack.s3.kill()
    try:
        fired = rig.fired("MLflowDependencyUnavailable", since, probe="mlflow_write", dependency="artifact_store")
        assert fired["labels"]["severity"] == "warning"
        run = rig.failure("mlflow_write", since)
        step = _expect(run, "artifact_put", "dependency_unavailable", "artifact_store", "artifact_store")
        assert step["status_code"] == 500, step
        assert all(s["ok"] for s in run["steps"] if s["name"].startswith("runs_")), run
    finally:
        cleared = time.time()
        stack.s3.start()
    rig.resolved("MLflowDependencyUnavailable", cleared, probe="mlflow_write", dependency="artifact_store")

    # -- S3 stalled: the artifact steps hang, the run steps pass --------------------------
    since = time.time()
    stack.s3.pause()
    try:
        rig.fired("MLflowDependencyUnavailable", since, probe="mlflow_write", dependency="artifact_store")
        run = rig.failure("mlflow_write", since)
        _expect(run, "artifact_put", "dependency_unavailable", "artifact_store", "artifact_store")
        assert "slow or stalled" in run["diagnosis"]["summary"], run
    finally:
        cleared = time.time()
        stack.s3.resume()
    rig.resolved("MLflowDependencyUnavailable", cleared, probe="mlflow_write", dependency="artifact_store")

    # -- runs table locked: runs/create waits on the lock, our 3 s step deadline ends it ----
    since = time.time()
    with stack.postgres.connect() as conn:
        conn.autocommit = False
        conn.execute("LOCK TABLE runs IN ACCESS EXCLUSIVE MODE")
        try:
            fired = rig.fired("SyntheticProbeTimeout", since, probe="mlflow_write")
            assert "Diagnosis: backend_store" in fired["annotations"]["description"]
            run = rig.failure("mlflow_write", since)
            _expect(run, "runs_create", "timeout", "backend_store", None)
            assert "database lock or saturation" in run["diagnosis"]["summary"], run
        finally:
            cleared = time.time()
            conn.rollback()
    rig.resolved("SyntheticProbeTimeout", cleared, probe="mlflow_write")

    # Nothing so far was the write path's workers' fault. The read probe's runs_search reads
    # the locked runs table too, and here gunicorn's 5 s timeout is shorter than the read
    # deadline, so gunicorn may kill that worker first: a worker failure that really happened
    # (in production the 300 s gunicorn timeout is longer than any deadline: a timeout).
    workers = [a for a in _alerts(rig.hook) if a["labels"]["alertname"] == "MLflowWorkerFailure"]
    assert all(
        a["labels"]["probe"] == "mlflow_read" and "runs_search" in a["annotations"]["description"]
        for a in workers
        if a["status"] == "firing"
    ), rig.context()

    # -- gunicorn worker timeout: experiments locked past gunicorn's 5 s --------------------
    # The run still names the dying worker, but the target's one culprit (issue 21) is the
    # database it waited on: /health answered in the same run. So no MLflowWorkerFailure
    # page for this database fault; SyntheticProbeFailing names the culprit.
    since = time.time()
    with stack.postgres.connect() as conn:
        conn.autocommit = False
        conn.execute("LOCK TABLE experiments IN ACCESS EXCLUSIVE MODE")
        try:
            fired = rig.wait(
                lambda: next(
                    (
                        a
                        for a in _alerts(rig.hook)
                        if a["status"] == "firing"
                        and a["received_at"] >= since
                        and a["labels"].get("alertname") == "SyntheticProbeFailing"
                        and a["labels"].get("probe") == "mlflow_read"
                        and "worker_failure" in a["annotations"]["description"]
                    ),
                    None,
                ),
                35,
                "SyntheticProbeFailing of mlflow_read for the killed worker",
            )
            assert "Diagnosis: mlflow_server" in fired["annotations"]["description"]
            assert "Target culprit: backend_store" in fired["annotations"]["description"]
            run = rig.failure("mlflow_read", since)
            step = _expect(run, "experiments_search", "worker_failure", "mlflow_server", None)
            assert run["target_diagnosis"]["component"] == "backend_store", run
            # Either the connection drops, or (measured: psycopg turns gunicorn's abort of a
            # worker waiting on PostgreSQL into a cancelled query) the dying worker answers
            # Flask's HTML 500 page.
            assert step["status_code"] is None or (step["status_code"] == 500 and "HTML page" in step["error"]), step
        finally:
            cleared = time.time()
            conn.rollback()
    rig.resolved("SyntheticProbeFailing", cleared, probe="mlflow_read")
    assert "WORKER TIMEOUT" in stack.mlflow.log_text()
    assert not _find(rig.hook, "MLflowWorkerFailure", "firing", since), rig.context()
    rig.passes_again("mlflow_write", cleared)

    # The JSON log line of a failed run carries the diagnosis too.
    lines = [json.loads(line) for line in rig.daemon.log_text().splitlines() if line.startswith("{")]
    failed = [x for x in lines if x.get("event") == "probe_run" and not x.get("ok")]
    assert {x["diagnosis"]["component"] for x in failed} >= {"backend_store", "artifact_store", "mlflow_server"}

    # A runs/create that timed out on our side may still have been committed once the lock
    # went away: the daemon's janitor deletes it at a passing run after the deadline.
    # The same for an artifact PUT that a stalled S3 stored after our DELETE.
    rig.wait(
        lambda: stack.active_probe_runs() == [] and stack.probe_objects() == [] and stack.model_versions() == [],
        40,
        "no active probe run in PostgreSQL, no probe object in the bucket, no model version",
    )
    # Stop (in-flight runs clean up), then nothing may be left behind.
    assert rig.daemon.stop(signal.SIGTERM) == 0
    assert stack.active_probe_runs() == [], rig.context()
    assert stack.probe_objects() == [], rig.context()
    assert stack.model_versions() == [], rig.context()  # the registry probe's versions: all deleted
    print(f"\nprodstack fault cycle: {time.time() - t0:.1f}s")


def test_a_missing_part_is_named_in_the_skip_reason(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No silent skips: without root, or without PostgreSQL, the reason says what to do."""
    import tests.prodstack as prodstack_module

    monkeypatch.setattr(prodstack_module.os, "geteuid", lambda: 1000)
    assert "needs root" in (prodstack_module.missing_parts() or "")
    monkeypatch.setattr(prodstack_module.os, "geteuid", lambda: 0)
    monkeypatch.setattr(prodstack_module, "PG_BIN", tmp_path / "no-postgres")
    assert "apt-get install postgresql" in (prodstack_module.missing_parts() or "")
