"""Alerting end to end on 127.0.0.1, with real processes only.

    real MLflow  <-- probes --  daemon (subprocess)  -- own push -->  webhook A
                                    ^ /metrics
                               real Prometheus (test copy of deploy/prometheus/rules.yml,
                               `for:` shortened, exprs unchanged)
                                    | alerts
                               real Alertmanager  -- webhook_configs -->  webhook B

Scenarios: MLflow killed (SyntheticProbeFailing fires at A and B, resolves at both when
MLflow is back on the same port), MLflow hung by SIGSTOP (SyntheticProbeTimeout), and a
real gunicorn worker timeout behind a locked sqlite database (the page names the database,
never MLflowWorkerFailure: one culprit per incident).

MLflow 3.17 serves with uvicorn (FastAPI app) unless `--gunicorn-opts` is given: that
flag alone switches `mlflow server` to gunicorn with the Flask app and sync workers,
which is what the original deployment ran and what the worker-timeout scenario needs.

Prometheus and Alertmanager come from the Debian packages `prometheus` and
`prometheus-alertmanager` (tests/run.sh installs them); without them the Prometheus
half of each scenario is skipped with a warning and the daemon's own path still runs.
"""

from __future__ import annotations

import datetime as dt
import shutil
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from tests.helpers import scrape, wait_for
from tests.servers import DaemonProcess, MlflowServer, Proc, free_port, start_proc
from tests.standin.webhook import WebhookServer, serve_in_thread

REPO = Path(__file__).resolve().parent.parent
RULES = REPO / "deploy" / "prometheus" / "rules.yml"
PROMETHEUS = shutil.which("prometheus")
ALERTMANAGER = shutil.which("alertmanager") or shutil.which("prometheus-alertmanager")
JOB = "synthetic-monitor"  # SyntheticMonitorDown selects up{job="synthetic-monitor"}
EXTRA_LABELS = {"cluster": "e2e"}

# Every test here starts daemons, MLflow, Prometheus and Alertmanager.
pytestmark = [pytest.mark.timeout(150), pytest.mark.integration]


# -- webhook receivers --------------------------------------------------------------


def received_alerts(hook: WebhookServer) -> list[dict[str, Any]]:
    """Every alert in every webhook message (Alertmanager webhook JSON), oldest first."""
    out = []
    for entry in hook.snapshot():
        body = entry["body"]
        if not isinstance(body, dict):
            continue
        for alert in body.get("alerts") or []:
            out.append(
                dict(
                    alert,
                    received_at=entry["received_at"],
                    receiver=body.get("receiver"),
                    message_status=body.get("status"),
                )
            )
    return out


def _rfc3339(text: str) -> float:
    """Prometheus' timestamps carry nanoseconds, more than fromisoformat reads."""
    whole, _, fraction = text.rstrip("Z").partition(".")
    return dt.datetime.fromisoformat(whole + "+00:00").timestamp() + float(f"0.{fraction or 0}")


def find_alert(
    hook: WebhookServer, alertname: str, status: str, since: float = 0.0, **labels: str
) -> dict[str, Any] | None:
    for alert in received_alerts(hook):
        got = alert.get("labels") or {}
        if (
            alert.get("status") == status
            and alert["received_at"] >= since
            and got.get("alertname") == alertname
            and all(got.get(k) == v for k, v in labels.items())
        ):
            return alert
    return None


def wait_until(
    predicate: Callable[[], Any], timeout: float, what: str, context: Callable[[], str] | None = None
) -> Any:
    """tests.helpers.wait_for, with this module's argument order."""
    return wait_for(predicate, timeout=timeout, what=what, context=context, ignore=())


# -- Prometheus + Alertmanager --------------------------------------------------------


def _rule_exprs(data: dict[str, Any]) -> list[tuple[str, str]]:
    return [(rule.get("alert") or rule["record"], rule["expr"]) for g in data["groups"] for rule in g["rules"]]


def shortened_rules(source: Path, target: Path, hold: str = "1s") -> set[str]:
    """A copy of the shipped rules with every `for:` set to `hold`; exprs are kept verbatim.

    Returns the alert and record names.
    """
    data = yaml.safe_load(source.read_text())
    original = _rule_exprs(data)
    for group in data["groups"]:
        group.pop("interval", None)  # evaluate every group at the global 1 s
        for rule in group["rules"]:
            if "for" in rule:
                rule["for"] = hold
    target.write_text(yaml.safe_dump(data, sort_keys=False))
    assert _rule_exprs(yaml.safe_load(target.read_text())) == original, "the copy must keep every expr verbatim"
    return {name for name, _ in original}


class AlertStack:
    """Prometheus scraping the daemon every 1 s with the test rules, Alertmanager -> hook B."""

    def __init__(self, workdir: Path, daemon_port: int, hook_b: WebhookServer) -> None:
        self.workdir = workdir
        self.daemon_port = daemon_port
        self.hook_b = hook_b
        self.am_port, self.prom_port = free_port(), free_port()
        self.procs: list[Proc] = []

    @property
    def prom_url(self) -> str:
        return f"http://127.0.0.1:{self.prom_port}"

    def start(self) -> AlertStack:
        assert PROMETHEUS and ALERTMANAGER
        work = self.workdir
        work.mkdir(parents=True, exist_ok=True)
        (work / "alertmanager.yml").write_text(
            yaml.safe_dump(
                {
                    "route": {
                        "receiver": "webhook-b",
                        "group_by": ["alertname", "target", "probe"],
                        "group_wait": "0s",
                        "group_interval": "1s",
                        "repeat_interval": "1h",
                    },
                    "receivers": [
                        {
                            "name": "webhook-b",
                            "webhook_configs": [{"url": f"{self.hook_b.url}/alertmanager", "send_resolved": True}],
                        }
                    ],
                }
            )
        )
        self.procs.append(
            start_proc(
                "alertmanager",
                [
                    ALERTMANAGER,
                    f"--config.file={work / 'alertmanager.yml'}",
                    f"--storage.path={work / 'am-data'}",
                    f"--web.listen-address=127.0.0.1:{self.am_port}",
                    "--cluster.listen-address=",
                ],
                work,
                f"http://127.0.0.1:{self.am_port}/-/ready",
            )
        )
        names = shortened_rules(RULES, work / "rules.yml")
        assert {"SyntheticProbeFailing", "SyntheticProbeTimeout", "MLflowWorkerFailure"} <= names
        (work / "prometheus.yml").write_text(
            yaml.safe_dump(
                {
                    "global": {"scrape_interval": "1s", "scrape_timeout": "1s", "evaluation_interval": "1s"},
                    "rule_files": [str(work / "rules.yml")],
                    "alerting": {"alertmanagers": [{"static_configs": [{"targets": [f"127.0.0.1:{self.am_port}"]}]}]},
                    "scrape_configs": [
                        {"job_name": JOB, "static_configs": [{"targets": [f"127.0.0.1:{self.daemon_port}"]}]}
                    ],
                }
            )
        )
        self.procs.append(
            start_proc(
                "prometheus",
                [
                    PROMETHEUS,
                    f"--config.file={work / 'prometheus.yml'}",
                    f"--storage.tsdb.path={work / 'prom-data'}",
                    f"--web.listen-address=127.0.0.1:{self.prom_port}",
                ],
                work,
                f"{self.prom_url}/-/ready",
            )
        )
        return self

    def query(self, expr: str) -> list[dict[str, Any]]:
        try:
            data = httpx.get(f"{self.prom_url}/api/v1/query", params={"query": expr}, timeout=2).json()
        except (httpx.HTTPError, ValueError):
            return []
        return data.get("data", {}).get("result", []) if data.get("status") == "success" else []

    def evaluated_since(self, moment: float, times: int = 2) -> bool:
        """Every rule group was evaluated at least `times` intervals (1 s) after `moment`."""
        try:
            groups = httpx.get(f"{self.prom_url}/api/v1/rules", timeout=2).json()["data"]["groups"]
        except (httpx.HTTPError, ValueError, KeyError):
            return False
        return bool(groups) and all(_rfc3339(g["lastEvaluation"]) >= moment + times for g in groups)

    def wait_scraping(self, timeout: float = 20) -> None:
        """Prometheus holds >= 3 samples of the daemon's failure counters (increase() needs a baseline)."""
        wait_until(
            lambda: any(
                float(r["value"][1]) >= 3
                for r in self.query(
                    f'count_over_time(synthetic_probe_step_failures_total{{job="{JOB}",reason="timeout"}}[1m])'
                )
            ),
            timeout,
            "Prometheus to scrape the daemon",
            self.tails,
        )

    def tails(self) -> str:
        return "\n".join(p.tail() for p in self.procs)

    def stop(self) -> None:
        for proc in reversed(self.procs):
            proc.stop()
        self.procs.clear()


# -- fixtures -------------------------------------------------------------------------


@dataclass
class Rig:
    workdir: Path
    hook_a: WebhookServer
    hook_b: WebhookServer
    daemons: list[DaemonProcess]
    stacks: list[AlertStack]

    def start_daemon(
        self,
        mlflow_url: str,
        *,
        interval: str = "1s",
        timeout: str = "800ms",
        failure_threshold: int = 1,
        with_prometheus: bool = True,
    ) -> tuple[DaemonProcess, AlertStack | None]:
        config = self.workdir / "monitor.yaml"
        config.write_text(
            yaml.safe_dump(
                {
                    "log": {"format": "json", "level": "info"},
                    "targets": [{"name": "mlflow", "kind": "mlflow", "url": mlflow_url}],
                    "probes": [
                        {
                            "name": "mlflow_read",
                            "target": "mlflow",
                            "scenario": "mlflow_read",
                            "interval": interval,
                            "timeout": timeout,
                        }
                    ],
                    "alerting": {
                        "failure_threshold": failure_threshold,
                        "success_threshold": 1,
                        "startup_grace": "0s",
                        "resend_interval": "3s",
                        "labels": EXTRA_LABELS,
                        "state_file": str(self.workdir / "alerts.json"),
                        "retry_backoff": "200ms",
                        "receivers": [{"kind": "webhook", "url": f"{self.hook_a.url}/daemon"}],
                    },
                }
            )
        )
        if with_prometheus and not (PROMETHEUS and ALERTMANAGER):
            # The whole test, never half of it: "fires at both receivers" needs both paths.
            pytest.skip(
                "prometheus / prometheus-alertmanager not installed (apt-get install prometheus"
                " prometheus-alertmanager): the Prometheus -> Alertmanager receiver cannot be checked"
            )
        daemon = DaemonProcess(config, self.workdir)
        self.daemons.append(daemon)  # before start: a daemon that never gets healthy is stopped too
        daemon.start()
        stack = None
        if with_prometheus:
            # After the daemon: it binds port 0, so its port is known once it runs.
            stack = AlertStack(self.workdir / "prom", daemon.port, self.hook_b)
            self.stacks.append(stack)
            stack.start()
        return daemon, stack

    def context(self, *extra: Callable[[], str]) -> Callable[[], str]:
        def text() -> str:
            parts = [
                f"webhook A: {received_alerts(self.hook_a)[-6:]}",
                f"webhook B: {received_alerts(self.hook_b)[-6:]}",
            ]
            parts += [f"--- daemon log ---\n{d.log_text()[-3000:]}" for d in self.daemons]
            parts += [s.tails() for s in self.stacks]
            parts += [f() for f in extra]
            return "\n".join(parts)

        return text


@pytest.fixture
def rig(tmp_path: Path) -> Iterator[Rig]:
    hook_a, hook_b = serve_in_thread(), serve_in_thread()
    rig = Rig(tmp_path, hook_a, hook_b, [], [])
    try:
        yield rig
    finally:
        for daemon in rig.daemons:
            if daemon.proc is not None and daemon.proc.poll() is None:
                daemon.stop()
        for stack in rig.stacks:
            stack.stop()
        hook_a.stop()
        hook_b.stop()


def status_of(daemon: DaemonProcess) -> dict[str, Any]:
    return httpx.get(f"{daemon.url}/status", timeout=2).json()["probes"][0]


def wait_baseline(daemon: DaemonProcess, rig: Rig, stack: AlertStack | None) -> float:
    """Until the daemon passes and nothing fires, then the time the test counts alerts from.

    On a loaded machine a run may time out before the fault (the deadlines are short, to keep
    the test short); its alert resolves with the next passing run. Waiting for that state
    (an event) and ignoring what came before keeps the check about the fault only.
    """
    if stack is not None:
        stack.wait_scraping()

    def clean() -> bool:
        last = status_of(daemon)["last"]
        return bool(last and last["ok"]) and scrape(daemon.url).sum("synthetic_monitor_alerts_firing") == 0

    wait_until(clean, 60, "a passing run with nothing firing", rig.context())
    return time.time()


def expect_labels(alert: dict[str, Any], alertname: str, severity: str) -> None:
    labels = alert["labels"]
    assert labels["alertname"] == alertname
    assert labels["target"] == "mlflow" and labels["probe"] == "mlflow_read"
    assert labels["severity"] == severity


# -- scenarios ------------------------------------------------------------------------


def test_killed_mlflow_fires_at_both_receivers_and_resolves_after_restart(rig: Rig) -> None:
    mlflow = MlflowServer(rig.workdir / "mlflow").start()
    restarted: MlflowServer | None = None
    try:
        daemon, stack = rig.start_daemon(mlflow.url)
        since = wait_baseline(daemon, rig, stack)

        mlflow.kill()
        # Threshold 1: the first failed run fires (how fast: tests/perf/time_to_alert.py).
        fired_a = wait_until(
            lambda: find_alert(rig.hook_a, "SyntheticProbeFailing", "firing", since=since, probe="mlflow_read"),
            30,
            "SyntheticProbeFailing at webhook A (daemon push)",
            rig.context(),
        )
        expect_labels(fired_a, "SyntheticProbeFailing", "critical")
        assert fired_a["labels"]["cluster"] == "e2e"
        assert fired_a["receiver"] == "webhook" and fired_a["endsAt"].startswith("0001-")
        description = fired_a["annotations"]["description"]
        # Usually the next run's first step; a kill that lands mid-run fails a later one.
        read_steps = (
            "health",
            "experiments_search",
            "registered_models_search",
            "runs_search",
            "version",
            "server_info",
        )
        assert any(f"step {step}" in description for step in read_steps)
        assert "unreachable" in description or "worker_failure" in description
        assert fired_a["annotations"]["summary"]
        if stack is not None:
            fired_b = wait_until(
                lambda: find_alert(rig.hook_b, "SyntheticProbeFailing", "firing", probe="mlflow_read"),
                30,
                "SyntheticProbeFailing at webhook B (Prometheus -> Alertmanager)",
                rig.context(),
            )
            expect_labels(fired_b, "SyntheticProbeFailing", "critical")
            assert fired_b["labels"]["job"] == JOB and fired_b["receiver"] == "webhook-b"
            assert fired_b["annotations"]["runbook_url"].endswith("#syntheticprobefailing")

        restarted = MlflowServer(mlflow.workdir, port=mlflow.port).start()
        back_at = time.time()
        resolved_a = wait_until(
            lambda: find_alert(rig.hook_a, "SyntheticProbeFailing", "resolved", since=since, probe="mlflow_read"),
            30,
            "resolved SyntheticProbeFailing at webhook A",
            rig.context(),
        )
        assert resolved_a["received_at"] >= back_at - 1
        assert resolved_a["startsAt"] == fired_a["startsAt"] and not resolved_a["endsAt"].startswith("0001-")
        assert resolved_a["labels"] == fired_a["labels"]
        if stack is not None:
            wait_until(
                lambda: find_alert(rig.hook_b, "SyntheticProbeFailing", "resolved", probe="mlflow_read"),
                30,
                "resolved SyntheticProbeFailing at webhook B",
                rig.context(),
            )
        # Nothing about the read probe is left firing at the daemon.
        firing = httpx.get(f"{daemon.url}/metrics", timeout=2).text
        assert 'synthetic_monitor_alerts_firing{alertname="SyntheticProbeFailing"' not in firing
        assert 'synthetic_monitor_notifications_total{receiver="webhook",result="success"}' in firing
        assert daemon.stop() == 0
    finally:
        if restarted is not None:
            restarted.stop()
        mlflow.stop()
        if mlflow._log is not None:  # MlflowServer.kill() leaves its log file open
            mlflow._log.close()


def test_hung_mlflow_fires_timeout_and_resolves_on_sigcont(rig: Rig) -> None:
    mlflow = MlflowServer(rig.workdir / "mlflow").start()
    try:
        daemon, stack = rig.start_daemon(mlflow.url)
        since = wait_baseline(daemon, rig, stack)

        mlflow.pause()
        try:
            fired_a = wait_until(
                lambda: find_alert(rig.hook_a, "SyntheticProbeTimeout", "firing", since=since, probe="mlflow_read"),
                30,
                "SyntheticProbeTimeout at webhook A",
                rig.context(),
            )
            expect_labels(fired_a, "SyntheticProbeTimeout", "warning")
            assert "reason timeout" in fired_a["annotations"]["description"]
            assert find_alert(rig.hook_a, "SyntheticProbeFailing", "firing", since=since, probe="mlflow_read")
            if stack is not None:
                fired_b = wait_until(
                    lambda: find_alert(rig.hook_b, "SyntheticProbeTimeout", "firing", probe="mlflow_read"),
                    30,
                    "SyntheticProbeTimeout at webhook B",
                    rig.context(),
                )
                expect_labels(fired_b, "SyntheticProbeTimeout", "warning")
                assert fired_b["labels"]["reason"] == "timeout" and fired_b["labels"]["job"] == JOB
        finally:
            mlflow.resume()
        resumed_at = time.time()
        resolved = wait_until(
            lambda: find_alert(rig.hook_a, "SyntheticProbeTimeout", "resolved", since=resumed_at, probe="mlflow_read"),
            30,
            "resolved SyntheticProbeTimeout at webhook A",
            rig.context(),
        )
        assert resolved["startsAt"] == fired_a["startsAt"]
        wait_until(
            lambda: find_alert(rig.hook_a, "SyntheticProbeFailing", "resolved", since=since, probe="mlflow_read"),
            30,
            "resolved SyntheticProbeFailing at webhook A",
            rig.context(),
        )
        # The rule's increase(...[5m]) keeps the Prometheus copy firing for 5 minutes
        # after the last timeout by design; its resolution is covered by promtool tests.
        assert daemon.stop() == 0
    finally:
        mlflow.stop()


def test_gunicorn_worker_timeout_on_locked_database_pages_the_database_not_the_workers(rig: Rig) -> None:
    """A worker gunicorn kills at its timeout while it waits on a locked database: the page
    names the database (one culprit per incident), and MLflowWorkerFailure fires on neither
    path, not even after the recovery, when the culprit's series is gone but the worker
    failures are still inside the rule's 5 minutes (it did, at Alertmanager, before)."""
    # --gunicorn-opts switches MLflow 3.17 from uvicorn to gunicorn sync workers (Flask app);
    # --no-control-socket: gunicorn >= 24 otherwise shares ~/.gunicorn/gunicorn.ctl between servers.
    mlflow = MlflowServer(rig.workdir / "mlflow", gunicorn_opts="--timeout 3 --no-control-socket").start()
    release = threading.Event()
    holder: threading.Thread | None = None
    try:
        probe_conn = sqlite3.connect(mlflow.db_path)
        try:
            journal = probe_conn.execute("PRAGMA journal_mode").fetchone()[0]
        finally:
            probe_conn.close()
        assert journal.lower() != "wal", "in WAL mode an exclusive lock does not block MLflow's reads"
        # The deadline (7 s) is longer than gunicorn's kill (3 s timeout + up to ~1 s of arbiter
        # polling), so the request ends with the worker being killed, not with our deadline.
        daemon, stack = rig.start_daemon(mlflow.url, interval="8s", timeout="7s")
        since = wait_baseline(daemon, rig, stack)
        assert "Starting gunicorn" in mlflow.log_path.read_text(errors="replace")

        locked = threading.Event()
        lock_error: list[BaseException] = []

        def hold_lock() -> None:
            try:
                conn = sqlite3.connect(mlflow.db_path, isolation_level=None, timeout=10, check_same_thread=False)
                try:
                    conn.execute("BEGIN EXCLUSIVE")
                    locked.set()
                    release.wait(25)  # a stuck database: until the alert is seen, never over 25 s
                    conn.execute("ROLLBACK")
                finally:
                    conn.close()
            except BaseException as exc:  # noqa: BLE001 - reported by the test thread
                lock_error.append(exc)
                locked.set()

        holder = threading.Thread(target=hold_lock, name="sqlite-exclusive-lock", daemon=True)
        holder.start()
        assert locked.wait(15) and not lock_error, lock_error

        def mlflow_log() -> str:
            return "--- mlflow log ---\n" + mlflow.log_path.read_text(errors="replace")[-2500:]

        fired = wait_until(
            lambda: find_alert(rig.hook_a, "SyntheticProbeFailing", "firing", since=since, probe="mlflow_read"),
            8 + 6.5 + 2,
            "SyntheticProbeFailing at webhook A",
            rig.context(mlflow_log),
        )
        if stack is not None:
            wait_until(
                lambda: find_alert(rig.hook_b, "SyntheticProbeFailing", "firing", probe="mlflow_read"),
                30,
                "SyntheticProbeFailing at webhook B",
                rig.context(mlflow_log),
            )
        release.set()
        released_at = time.time()
        expect_labels(fired, "SyntheticProbeFailing", "critical")
        description = fired["annotations"]["description"]
        assert "step experiments_search, reason worker_failure" in description, description
        assert "Target culprit: backend_store" in description, description
        assert "WORKER TIMEOUT" in mlflow.log_path.read_text(errors="replace")
        # The run the page came from (a later one may have met the busy sync worker: a timeout).
        failures = httpx.get(f"{daemon.url}/status", timeout=2).json()["recent_failures"]
        step = next(
            s
            for f in failures
            for s in f["steps"]
            if s["name"] == "experiments_search" and s["reason"] == "worker_failure"
        )
        assert step["status_code"] is None, step
        # Ended by the worker kill (gunicorn's 3 s timeout), before the probe's own 7 s deadline.
        assert 2.5 < step["duration_seconds"] < 7.0, step

        holder.join(10)
        assert not holder.is_alive()
        # The next run after the release passes (one interval at most), which resolves both alerts.
        passed = wait_until(
            lambda: find_alert(rig.hook_a, "SyntheticProbeFailing", "resolved", since=released_at, probe="mlflow_read"),
            8 + 7 + 2,
            "a passing run after the lock is released",
            rig.context(mlflow_log),
        )
        assert passed["startsAt"] == fired["startsAt"]
        if stack is not None:
            # Recovered: the culprit's series is gone and the worker failure is still inside the
            # rule's 5 minutes. Prometheus evaluates every 1 s (`for` 1 s), Alertmanager sends at
            # once: give the rule more than that, then nothing may have paged the workers.
            def culprit_gone_failures_kept() -> bool:
                return not stack.query("synthetic_target_diagnosis") and bool(
                    stack.query('increase(synthetic_probe_step_failures_total{reason="worker_failure"}[5m]) > 0')
                )

            wait_until(culprit_gone_failures_kept, 30, "Prometheus: culprit gone, failures kept", rig.context())
            gone = time.time()
            # The rule's `for` is 1 s: two evaluations after that moment would have fired it.
            wait_until(lambda: stack.evaluated_since(gone, times=2), 15, "two rule evaluations", rig.context())
            assert not [
                a
                for a in httpx.get(f"{stack.prom_url}/api/v1/alerts", timeout=2).json()["data"]["alerts"]
                if a["labels"]["alertname"] == "MLflowWorkerFailure"
            ], rig.context(mlflow_log)()
        for hook in (rig.hook_a, rig.hook_b):
            assert find_alert(hook, "MLflowWorkerFailure", "firing", probe="mlflow_read") is None, rig.context(
                mlflow_log
            )()
        # Every run that met the lock failed because of it (how many met it depends on how fast
        # the alert came back, which this test does not control), and the last passed.
        runs = status_of(daemon)["recent_ok"]
        assert runs[-1] is True, runs
        failures = [
            f
            for f in httpx.get(f"{daemon.url}/status", timeout=2).json()["recent_failures"]
            if f["started_at"] >= since
        ]
        # (The killed request; a run that met the one busy sync worker meanwhile timed out.)
        failed_steps = [s for f in failures for s in f["steps"] if not s["ok"]]
        assert any(s["reason"] == "worker_failure" for s in failed_steps), failures
        assert all(s["reason"] in ("worker_failure", "timeout") for s in failed_steps), failures
        assert daemon.stop() == 0
    finally:
        release.set()
        if holder is not None:
            holder.join(15)
        mlflow.stop()
