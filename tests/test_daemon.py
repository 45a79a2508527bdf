"""The daemon as a user runs it: a subprocess serving /metrics, /healthz, /readyz, /status."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from tests import helpers
from tests.servers import DaemonProcess, MlflowServer

EXPECTED_FAMILIES = {
    "synthetic_probe_runs": "counter",
    "synthetic_probe_success": "gauge",
    "synthetic_probe_duration_seconds": "histogram",
    "synthetic_probe_step_duration_seconds": "histogram",
    "synthetic_probe_step_failures": "counter",
    "synthetic_probe_consecutive_failures": "gauge",
    "synthetic_probe_last_success_timestamp_seconds": "gauge",
    "synthetic_probe_timeout_seconds": "gauge",
    "synthetic_probe_step_phase_seconds": "gauge",
    "synthetic_asgard_dependency_up": "gauge",
    "synthetic_asgard_inventory": "gauge",
    "synthetic_monitor_build_info": "gauge",
    "synthetic_monitor_heartbeat_timestamp_seconds": "gauge",
    "synthetic_monitor_job_events": "counter",
    "synthetic_monitor_schedule_lag_seconds": "histogram",
    "synthetic_monitor_config_last_reload_successful": "gauge",
    "synthetic_monitor_alerts_firing": "gauge",
    "synthetic_monitor_notifications": "counter",
    "synthetic_monitor_sink_errors": "counter",
}


def write_config(path: Path, mlflow_url: str, read_interval: str = "2s", write_interval: str = "5s") -> Path:
    path.write_text(
        yaml.safe_dump(
            {
                "log": {"format": "json", "level": "info"},
                "targets": [{"name": "mlflow", "kind": "mlflow", "url": mlflow_url}],
                "probes": [
                    {
                        "name": "mlflow_read",
                        "target": "mlflow",
                        "scenario": "mlflow_read",
                        "interval": read_interval,
                        "timeout": "1500ms",
                    },
                    {
                        "name": "mlflow_write",
                        "target": "mlflow",
                        "scenario": "mlflow_write",
                        "interval": write_interval,
                        # deadline + 2 cleanup steps x step_timeout must fit in 90% of the interval
                        "timeout": "2500ms",
                        "step_timeout": "1s",
                        "options": {"experiment_name": "daemon-test", "artifacts": True},
                    },
                ],
            }
        )
    )
    return path


def scrape(url: str) -> dict[str, Any]:
    text = httpx.get(f"{url}/metrics").text
    return {family.name: family for family in text_string_to_metric_families(text)}


def sample(families: dict[str, Any], name: str, **labels: str) -> float | None:
    for family in families.values():
        for s in family.samples:
            if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()):
                return s.value
    return None


def wait_for(predicate: Callable[[], Any], timeout: float, what: str) -> Any:
    """tests.helpers.wait_for with this module's argument order (other modules import it)."""
    return helpers.wait_for(predicate, timeout=timeout, what=what, ignore=())


@pytest.fixture
def daemon_for(tmp_path: Path):
    started: list[DaemonProcess] = []

    def start(mlflow_url: str, **kwargs: str) -> DaemonProcess:
        daemon = DaemonProcess(write_config(tmp_path / "config.yaml", mlflow_url, **kwargs), tmp_path).start()
        started.append(daemon)
        return daemon

    yield start
    for daemon in started:
        if daemon.proc is not None and daemon.proc.poll() is None:
            daemon.stop()


def test_metrics_health_ready_status(mlflow_server: MlflowServer, daemon_for) -> None:
    daemon = daemon_for(mlflow_server.url)
    # Every series exists from the first scrape, before any run.
    families = scrape(daemon.url)
    for name, kind in EXPECTED_FAMILIES.items():
        assert name in families, name
        assert families[name].type == kind, name
    assert (
        sample(
            families,
            "synthetic_probe_step_failures_total",
            probe="mlflow_write",
            step="runs_get",
            reason="validation_failed",
        )
        == 0
    )
    assert sample(families, "synthetic_probe_timeout_seconds", probe="mlflow_read") == 1.5
    # Zero until the first run: the scrape may come after it on a loaded machine.
    read_runs = sum(
        sample(families, "synthetic_probe_runs_total", probe="mlflow_read", result=r) for r in ("success", "failure")
    )
    first_byte = sample(
        families, "synthetic_probe_step_phase_seconds", probe="mlflow_read", step="health", phase="first_byte"
    )
    assert first_byte == 0 if read_runs == 0 else first_byte > 0, (read_runs, first_byte)

    wait_for(lambda: httpx.get(f"{daemon.url}/readyz").status_code == 200, 20, "/readyz 200")
    assert httpx.get(f"{daemon.url}/healthz").status_code == 200

    families = wait_for(
        lambda: (
            (f := scrape(daemon.url))
            and (sample(f, "synthetic_probe_runs_total", probe="mlflow_read", result="success") or 0) >= 2
            and f
        ),
        20,
        "two successful read runs",
    )
    assert sample(families, "synthetic_probe_success", target="mlflow", probe="mlflow_write") == 1
    for step in ("experiment_get_or_create", "runs_get", "artifact_get", "runs_delete"):
        count = sample(
            families, "synthetic_probe_step_duration_seconds_count", target="mlflow", probe="mlflow_write", step=step
        )
        assert count and count >= 1, step
    assert (
        sample(families, "synthetic_probe_step_duration_seconds_bucket", probe="mlflow_read", step="health", le="+Inf")
        >= 2
    )
    assert sample(families, "synthetic_monitor_build_info") == 1
    assert time.time() - sample(families, "synthetic_monitor_heartbeat_timestamp_seconds") < 10
    assert sample(families, "synthetic_monitor_schedule_lag_seconds_count", probe="mlflow_read") >= 2

    status = httpx.get(f"{daemon.url}/status").json()
    names = [p["name"] for p in status["probes"]]
    assert names == ["mlflow_read", "mlflow_write"]
    last = status["probes"][0]["last"]
    assert last["ok"] is True and last["steps"][0]["name"] == "health"
    # MLflow's think time shows as first_byte; plain http: no TLS handshake.
    phases = last["steps"][0]["phases"]
    assert set(phases) == {"connect", "tls", "first_byte", "body"} and phases["tls"] == 0
    assert 0 < phases["first_byte"] <= last["steps"][0]["duration_seconds"]
    assert (
        sample(
            families,
            "synthetic_probe_step_phase_seconds",
            target="mlflow",
            probe="mlflow_read",
            step="health",
            phase="first_byte",
        )
        or 0
    ) > 0
    assert status["recent_failures"] == []

    log = daemon.log_text()
    lines = [json.loads(line) for line in log.splitlines() if line.startswith("{")]
    runs = [line for line in lines if line.get("event") == "probe_run"]
    assert runs and {"probe", "target", "ok", "duration_ms", "steps"} <= set(runs[0])
    assert daemon.stop() == 0


def test_killed_mlflow_shows_unreachable_within_one_interval(own_mlflow: MlflowServer, daemon_for) -> None:
    daemon = daemon_for(own_mlflow.url, read_interval="2s", write_interval="5s")
    wait_for(lambda: httpx.get(f"{daemon.url}/readyz").status_code == 200, 20, "ready")
    own_mlflow.kill()
    killed_at = time.monotonic()
    wait_for(
        lambda: (
            (
                sample(
                    scrape(daemon.url),
                    "synthetic_probe_step_failures_total",
                    probe="mlflow_read",
                    step="health",
                    reason="unreachable",
                )
                or 0
            )
            >= 1
        ),
        2 + 1.5 + 1,
        "an unreachable failure of the read probe",
    )
    assert time.monotonic() - killed_at <= 2 + 1.5 + 1
    assert httpx.get(f"{daemon.url}/healthz").status_code == 200
    status = httpx.get(f"{daemon.url}/status").json()
    failure = status["recent_failures"][0]
    assert failure["reason"] == "unreachable" and "cannot connect" in failure["error"]
    families = scrape(daemon.url)
    assert sample(families, "synthetic_probe_success", probe="mlflow_read") == 0
    assert sample(families, "synthetic_probe_consecutive_failures", probe="mlflow_read") >= 1
    assert daemon.stop() == 0


def test_probe_that_raises_is_internal_error_and_daemon_keeps_running(
    mlflow_server: MlflowServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A bug in a scenario is counted and logged with a traceback; the job keeps being scheduled."""
    from monitor import daemon as daemon_module
    from monitor.config import load_config
    from monitor.scenario import registry as registry_module
    from monitor.scenario.base import Scenario, ScenarioOptions

    async def broken(run: Any, options: Any) -> None:
        async with run.step("health") as step:
            await step.request("GET", "/health")
        raise RuntimeError("bug in the scenario")

    monkeypatch.setitem(
        registry_module._SCENARIOS, "broken", Scenario("broken", "mlflow", ("health",), ScenarioOptions, broken)
    )
    path = tmp_path / "c.yaml"
    path.write_text(
        yaml.safe_dump(
            {
                "targets": [{"name": "mlflow", "kind": "mlflow", "url": mlflow_server.url}],
                "probes": [{"name": "broken", "target": "mlflow", "scenario": "broken", "interval": "1s"}],
            }
        )
    )
    config = load_config(path)

    async def scenario() -> dict[str, Any]:
        d = daemon_module.Daemon(config, str(path), listen="127.0.0.1:0")
        task = asyncio.create_task(d.run())
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline and d.history._runs.get("broken", 0) < 3:
            await asyncio.sleep(0.1)
        d.request_stop()
        assert await asyncio.wait_for(task, 15) == 0
        families = {
            f.name: f
            for f in text_string_to_metric_families(
                __import__("prometheus_client").generate_latest(d.registry).decode()
            )
        }
        return {"runs": d.history._runs.get("broken", 0), "families": families, "last": d.history.last("broken")}

    out = asyncio.run(scenario())
    assert out["runs"] >= 3
    assert (
        sample(
            out["families"],
            "synthetic_probe_step_failures_total",
            probe="broken",
            step="scenario",
            reason="internal_error",
        )
        >= 3
    )
    last = out["last"]
    assert last.reason.value == "internal_error" and last.failed_step.name == "scenario"
    assert "RuntimeError: bug in the scenario" in last.traceback
    assert sample(out["families"], "synthetic_monitor_job_events_total", probe="broken", event="error") == 0


@pytest.mark.slow
def test_healthz_turns_503_while_the_event_loop_is_wedged(tmp_path: Path) -> None:
    """The endpoints run in a thread, so a stuck loop shows as a stale heartbeat, not a hang."""
    from monitor import daemon as daemon_module
    from monitor.config import load_config
    from tests.servers import free_port
    from tests.standin.asgard import serve_in_thread

    server, url = serve_in_thread()
    port = free_port()
    path = tmp_path / "c.yaml"
    path.write_text(
        yaml.safe_dump(
            {
                "targets": [{"name": "asgard", "kind": "asgard", "url": url}],
                "probes": [{"name": "api", "target": "asgard", "scenario": "asgard", "interval": "1s"}],
            }
        )
    )
    d = daemon_module.Daemon(load_config(path), str(path), listen=f"127.0.0.1:{port}")
    d.heartbeat_stale_after = 3.0  # the heartbeat beats every 2 s
    seen: dict[str, int] = {}

    async def scenario() -> None:
        task = asyncio.create_task(d.run())
        await asyncio.sleep(1.5)
        seen["before"] = (await asyncio.to_thread(httpx.get, f"http://127.0.0.1:{port}/healthz")).status_code
        time.sleep(4.0)  # wedge the loop: no heartbeat can run
        seen["wedged"] = httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=2).status_code
        await asyncio.sleep(2.5)
        seen["after"] = (await asyncio.to_thread(httpx.get, f"http://127.0.0.1:{port}/healthz")).status_code
        d.request_stop()
        await asyncio.wait_for(task, 15)

    try:
        asyncio.run(scenario())
    finally:
        server.stop()
    assert seen == {"before": 200, "wedged": 503, "after": 200}
