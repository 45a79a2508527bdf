"""Lifecycle of the daemon process: graceful stop, reload, crash leftovers, start while targets are down."""

from __future__ import annotations

import json
import signal
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from monitor.probes.mlflow.api import PROBE_TAG, SYNTHETIC_TAG
from tests.servers import DaemonProcess, MlflowServer, free_port
from tests.standin.asgard import serve_in_thread
from tests.test_daemon import sample, scrape, wait_for

# Every test here starts a daemon subprocess and signals it.
pytestmark = [pytest.mark.integration]


def write(path: Path, document: dict[str, Any]) -> Path:
    path.write_text(yaml.safe_dump(document))
    return path


def log_events(daemon: DaemonProcess) -> list[dict[str, Any]]:
    return [json.loads(line) for line in daemon.log_text().splitlines() if line.startswith("{")]


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_stop_lets_the_inflight_run_finish_and_exits_zero(tmp_path: Path, sig: signal.Signals) -> None:
    server, url = serve_in_thread()
    server.faults.update({"latency": 2.0})
    config = write(
        tmp_path / "c.yaml",
        {
            "log": {"format": "json"},
            "targets": [{"name": "asgard", "kind": "asgard", "url": url}],
            "probes": [{"name": "slow", "target": "asgard", "scenario": "asgard", "interval": "20s", "timeout": "10s"}],
        },
    )
    daemon = DaemonProcess(config, tmp_path).start()
    try:
        # The first run starts within the 2 s spread and takes >= 6 s (3 steps x 2 s).
        wait_for(lambda: httpx.get(f"{url}/admin/faults").status_code == 200, 5, "stand-in")
        time.sleep(3.0)
        started = time.monotonic()
        code = daemon.stop(sig)
        elapsed = time.monotonic() - started
    finally:
        server.stop()
    assert code == 0
    assert elapsed < 10
    events = [e["event"] for e in log_events(daemon)]
    assert events.index("monitor_stopping") < events.index("probe_run") < events.index("monitor_stopped")
    run = next(e for e in log_events(daemon) if e["event"] == "probe_run")
    assert run["ok"] is True


def base_config(url: str, probes: list[dict[str, Any]]) -> dict[str, Any]:
    return {"log": {"format": "json"}, "targets": [{"name": "asgard", "kind": "asgard", "url": url}], "probes": probes}


def test_reload_swaps_probes_and_a_bad_config_keeps_the_old_one(tmp_path: Path) -> None:
    server, url = serve_in_thread()
    path = tmp_path / "c.yaml"
    write(path, base_config(url, [{"name": "first", "target": "asgard", "scenario": "asgard", "interval": "1s"}]))
    daemon = DaemonProcess(path, tmp_path).start()
    try:
        wait_for(
            lambda: sample(scrape(daemon.url), "synthetic_probe_runs_total", probe="first", result="success"),
            10,
            "first probe running",
        )
        write(path, base_config(url, [{"name": "second", "target": "asgard", "scenario": "asgard", "interval": "1s"}]))
        daemon.proc.send_signal(signal.SIGHUP)
        wait_for(
            lambda: sample(scrape(daemon.url), "synthetic_probe_runs_total", probe="second", result="success"),
            10,
            "second probe running after SIGHUP",
        )
        families = scrape(daemon.url)
        assert sample(families, "synthetic_probe_runs_total", probe="first", result="success") is None
        assert sample(families, "synthetic_probe_success", probe="first") is None
        assert sample(families, "synthetic_monitor_config_last_reload_successful") == 1

        path.write_text("probes: [this is: not valid")
        answer = httpx.post(f"{daemon.url}/-/reload")
        assert answer.status_code == 500 and "not valid YAML" in answer.json()["message"]
        assert sample(scrape(daemon.url), "synthetic_monitor_config_last_reload_successful") == 0
        before = sample(scrape(daemon.url), "synthetic_probe_runs_total", probe="second", result="success")
        wait_for(
            lambda: sample(scrape(daemon.url), "synthetic_probe_runs_total", probe="second", result="success") > before,
            5,
            "old config still running",
        )
        assert httpx.get(f"{daemon.url}/healthz").status_code == 200

        write(path, base_config(url, [{"name": "second", "target": "asgard", "scenario": "asgard", "interval": "1s"}]))
        assert httpx.post(f"{daemon.url}/-/reload").status_code == 200
        assert sample(scrape(daemon.url), "synthetic_monitor_config_last_reload_successful") == 1
        assert any(e["event"] == "config_reload_failed" for e in log_events(daemon))
        assert daemon.stop() == 0
    finally:
        server.stop()


def test_start_deletes_runs_left_by_a_killed_daemon(mlflow_server: MlflowServer, tmp_path: Path) -> None:
    api = f"{mlflow_server.url}/api/2.0/mlflow"
    experiment_id = httpx.post(f"{api}/experiments/create", json={"name": "crash-leftovers"}).json()["experiment_id"]

    def make_run(probe: str, age_seconds: float) -> str:
        body = {
            "experiment_id": experiment_id,
            "start_time": int((time.time() - age_seconds) * 1000),
            "tags": [{"key": SYNTHETIC_TAG, "value": "true"}, {"key": PROBE_TAG, "value": probe}],
        }
        return httpx.post(f"{api}/runs/create", json=body).json()["run"]["info"]["run_id"]

    leftover = make_run("writer", 600)  # what a SIGKILL mid-run leaves: RUNNING, old
    in_flight = make_run("writer", 0)  # a replica's run in progress: too young to touch
    other = make_run("someone-else", 600)  # not ours
    finished = make_run("writer", 600)  # killed between runs_update and runs_delete
    httpx.post(f"{api}/runs/update", json={"run_id": finished, "status": "FINISHED"}).raise_for_status()
    config = write(
        tmp_path / "c.yaml",
        {
            "log": {"format": "json"},
            "targets": [{"name": "mlflow", "kind": "mlflow", "url": mlflow_server.url}],
            "probes": [
                {
                    "name": "writer",
                    "target": "mlflow",
                    "scenario": "mlflow_write",
                    "interval": "1m",
                    "timeout": "20s",
                    "options": {"experiment_name": "crash-leftovers"},
                }
            ],
        },
    )
    daemon = DaemonProcess(config, tmp_path).start()
    try:
        wait_for(lambda: any(e["event"] == "stale_runs_deleted" for e in log_events(daemon)), 15, "janitor")
    finally:
        daemon.stop()

    def stage(run_id: str) -> str:
        return httpx.get(f"{api}/runs/get", params={"run_id": run_id}).json()["run"]["info"]["lifecycle_stage"]

    assert stage(leftover) == "deleted"
    assert stage(finished) == "deleted"
    assert stage(in_flight) == "active"
    assert stage(other) == "active"


def test_starts_while_targets_are_down_and_recovers(tmp_path: Path) -> None:
    mlflow_port, asgard_port = free_port(), free_port()
    config = write(
        tmp_path / "c.yaml",
        {
            "log": {"format": "json"},
            "targets": [
                {"name": "mlflow", "kind": "mlflow", "url": f"http://127.0.0.1:{mlflow_port}"},
                {"name": "asgard", "kind": "asgard", "url": f"http://127.0.0.1:{asgard_port}"},
            ],
            "probes": [
                {"name": "read", "target": "mlflow", "scenario": "mlflow_read", "interval": "1s"},
                {"name": "api", "target": "asgard", "scenario": "asgard", "interval": "1s"},
            ],
        },
    )
    daemon = DaemonProcess(config, tmp_path).start()
    mlflow = MlflowServer(tmp_path / "mlflow", port=mlflow_port)
    asgard = None
    try:
        wait_for(lambda: httpx.get(f"{daemon.url}/readyz").status_code == 200, 10, "ready while targets are down")
        families = scrape(daemon.url)
        assert (
            sample(families, "synthetic_probe_step_failures_total", probe="read", step="health", reason="unreachable")
            >= 1
        )
        assert (
            sample(families, "synthetic_probe_step_failures_total", probe="api", step="status", reason="unreachable")
            >= 1
        )
        asgard, _ = serve_in_thread(port=asgard_port)
        mlflow.start()
        wait_for(
            lambda: (
                sample(scrape(daemon.url), "synthetic_probe_success", probe="read") == 1
                and sample(scrape(daemon.url), "synthetic_probe_success", probe="api") == 1
            ),
            15,
            "recovery",
        )
        assert httpx.get(f"{daemon.url}/healthz").status_code == 200
        assert daemon.stop() == 0
    finally:
        mlflow.stop()
        if asgard is not None:
            asgard.stop()
