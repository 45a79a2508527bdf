"""The first hour (issue 23): with no config file, `check` probes only what the environment
names, and `--read-only` creates nothing on a real MLflow (counted through its own API)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest

from monitor import __version__
from monitor.config import load_config
from tests.servers import DaemonProcess, MlflowServer

REPO = Path(__file__).resolve().parents[1]
API = "/api/2.0/mlflow"


def clean_env(**extra: str) -> dict[str, str]:
    """The inherited environment without anything the config loader reads, plus `extra`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "ASGARD_", "SYNTHETIC_MONITOR_"))}
    return {**env, **extra}


def _cli(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "monitor", *args], cwd=REPO, capture_output=True, text=True, env=env, timeout=120
    )


def _inventory(url: str) -> dict[str, int]:
    """How many experiments, runs and registered models the server holds (deleted ones included)."""
    with httpx.Client(base_url=url, timeout=30) as http:
        experiments = (
            http.post(f"{API}/experiments/search", json={"max_results": 1000, "view_type": "ALL"})
            .json()
            .get("experiments", [])
        )
        ids = [e["experiment_id"] for e in experiments]
        runs = (
            http.post(f"{API}/runs/search", json={"experiment_ids": ids, "max_results": 1000, "run_view_type": "ALL"})
            .json()
            .get("runs", [])
        )
        models = http.get(f"{API}/registered-models/search", params={"max_results": 1000}).json()
    return {"experiments": len(ids), "runs": len(runs), "models": len(models.get("registered_models", []))}


def test_no_file_probes_no_asgard_unless_named() -> None:
    only_mlflow = load_config(None, env={"MLFLOW_TRACKING_URI": "http://127.0.0.1:5055"})
    assert {t.kind for t in only_mlflow.targets} == {"mlflow"}
    named = load_config(None, env={"MLFLOW_TRACKING_URI": "http://127.0.0.1:5055", "ASGARD_URL": "http://a:8000"})
    assert {t.kind for t in named.targets} == {"mlflow", "asgard"}


def test_read_only_drops_every_writing_probe() -> None:
    env = {"MLFLOW_TRACKING_URI": "http://127.0.0.1:5055"}
    assert {p.scenario for p in load_config(None, env=env).probes} == {"mlflow_read", "mlflow_write", "mlflow_registry"}
    assert [p.scenario for p in load_config(None, env=env, read_only=True).probes] == ["mlflow_read"]


@pytest.mark.integration
def test_read_only_config_key(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text(
        "read_only: true\n"
        "targets: [{name: m, kind: mlflow, url: 'http://127.0.0.1:5055'}]\n"
        "probes:\n"
        "  - {name: r, target: m, scenario: mlflow_read}\n"
        "  - {name: w, target: m, scenario: mlflow_write, interval: 5m}\n"
    )
    assert [p.name for p in load_config(path, env={}).probes] == ["r"]
    path.write_text(
        "read_only: true\n"
        "targets: [{name: m, kind: mlflow, url: 'http://127.0.0.1:5055'}]\n"
        "probes: [{name: w, target: m, scenario: mlflow_write, interval: 5m}]\n"
    )
    proc = _cli("config", "validate", str(path), env=clean_env())
    assert proc.returncode == 2
    assert proc.stderr.strip().endswith("read_only: every configured probe writes, so none is left to run")


def test_check_with_only_the_tracking_uri(mlflow_server: MlflowServer) -> None:
    env = clean_env(MLFLOW_TRACKING_URI=mlflow_server.url)

    before = _inventory(mlflow_server.url)
    # Credentials in the URL (MLflow's server ignores them here): the report shows the URL without them.
    with_userinfo = mlflow_server.url.replace("http://", "http://probe:s3cret-pw@")
    proc = _cli("check", "--read-only", env={**env, "MLFLOW_TRACKING_URI": with_userinfo})
    assert proc.returncode == 0, proc.stdout + proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[0] == "read-only: no selected probe writes (read_only is on)"
    assert lines[1].startswith(f"synthetic-monitor {__version__} check at ") and lines[1].endswith(
        " UTC, location (not set)"
    )
    assert lines[2] == f"target mlflow (mlflow) {mlflow_server.url}, version 3.17.2"
    assert "s3cret-pw" not in proc.stdout + proc.stderr
    assert "asgard" not in proc.stdout and "8000" not in proc.stdout
    assert _inventory(mlflow_server.url) == before  # nothing created, not even the probe experiment

    proc = _cli("check", "--format", "json", env=env)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    report: dict[str, Any] = json.loads(proc.stdout)
    assert report["ok"] is True
    assert sorted(p["name"] for p in report["probes"]) == ["mlflow_read", "mlflow_registry", "mlflow_write"]
    assert all(p["target"] == "mlflow" for p in report["probes"])
    # The warning before anything runs names the writers and where they write (stderr: stdout is JSON).
    assert proc.stderr.splitlines()[0] == (
        f"writes: mlflow_write -> {mlflow_server.url}, mlflow_registry -> {mlflow_server.url}"
        " (they create and clean up test data there; --read-only skips them)"
    )


@pytest.mark.integration
def test_run_read_only_schedules_no_writer(tmp_path: Path) -> None:
    config = tmp_path / "c.yaml"
    config.write_text(
        "targets: [{name: m, kind: mlflow, url: 'http://127.0.0.1:9'}]\n"
        "probes:\n"
        "  - {name: r, target: m, scenario: mlflow_read, interval: 1h}\n"
        "  - {name: w, target: m, scenario: mlflow_write, interval: 1h}\n"
    )
    daemon = DaemonProcess(config, tmp_path, args=("--read-only",)).start()
    try:
        body = httpx.get(f"{daemon.url}/metrics", timeout=30).text
    finally:
        daemon.stop()
    assert 'synthetic_probe_success{probe="r",target="m"}' in body
    assert 'probe="w"' not in body
