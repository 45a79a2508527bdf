"""A run's time budget: deadline, cleanup reserve, the runner's outer bound, the next run.

The rule (README "Timeouts"): a run may last its deadline plus one cleanup budget
(min(5 s, step timeout)) per cleanup step of its scenario; the runner's outer bound covers
that whole reserve, and the configuration requires deadline + reserve <= 90 % of the
interval, so cleanup is never cancelled and the next run is never skipped for an overrun.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from monitor.config import ConfigError, load_config
from monitor.events import Event, JobEvent
from monitor.http.client import TargetClient
from monitor.probes.mlflow.api import PROBE_TAG
from monitor.probes.mlflow.write import WriteOptions
from monitor.results import Reason
from monitor.scenario.base import CLEANUP_BUDGET_SECONDS, Scenario, ScenarioOptions, ScenarioRun
from monitor.scenario.registry import SCENARIOS
from monitor.scenario.runner import OUTER_GRACE_SECONDS, run_probe
from monitor.scheduler import ProbeScheduler
from tests.faultproxy import Fault, FaultProxy
from tests.scripted import answer, client_for, serve
from tests.servers import MlflowServer

REPO = Path(__file__).resolve().parents[1]


def describe(result: Any) -> str:
    return "; ".join(f"{s.name}={'ok' if s.ok else s.reason}:{s.error}" for s in result.steps)


# --------------------------------------------------------------------------- the config rule


def write_config(path: Path, **probe: Any) -> Path:
    path.write_text(
        yaml.safe_dump(
            {
                "targets": [{"name": "mlflow", "kind": "mlflow", "url": "http://127.0.0.1:5000"}],
                "probes": [{"name": "p", "target": "mlflow", **probe}],
            }
        )
    )
    return path


@pytest.mark.parametrize(
    ("probe", "phrase"),
    [
        # timeout == interval: the next run would be skipped (and SyntheticMonitorStalled fire in an outage)
        ({"scenario": "mlflow_read", "interval": "30s", "timeout": "30s"}, "exceeds 90% of the interval 30s"),
        # 20s + 2 cleanup steps x 5s = 30s > 27s
        (
            {"scenario": "mlflow_write", "interval": "30s", "timeout": "20s", "options": {"artifacts": True}},
            "plus its cleanup budget 10s exceeds 90% of the interval 30s",
        ),
        # 1s + runs_delete 1s > 0.9s
        ({"scenario": "mlflow_write", "interval": "1s", "timeout": "1s"}, "plus its cleanup budget 1s"),
    ],
)
@pytest.mark.integration
def test_deadline_without_room_for_cleanup_is_a_config_error(
    tmp_path: Path, probe: dict[str, Any], phrase: str
) -> None:
    path = write_config(tmp_path / "c.yaml", **probe)
    with pytest.raises(ConfigError) as info:
        load_config(path, env={})
    assert f"{path}: probes[0].timeout: " in str(info.value), info.value
    assert phrase in str(info.value)
    # the CLI: exit 2, one line naming the field
    done = subprocess.run(
        [sys.executable, "-m", "monitor", "config", "validate", str(path)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2, done
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "probes[0].timeout" in lines[0], done.stderr


@pytest.mark.parametrize(
    ("probe", "timeout"),
    [
        ({"scenario": "mlflow_read", "interval": "10s"}, 8.0),  # 80 %: no cleanup steps
        ({"scenario": "mlflow_write", "interval": "5m"}, 240.0),  # 240 + 5 <= 270
        ({"scenario": "mlflow_write", "interval": "10s", "options": {"artifacts": True}}, 3.0),  # 3 + 2 x 3 = 9
        ({"scenario": "mlflow_write", "interval": "20s", "options": {"artifacts": True}}, 8.0),  # 8 + 2 x 5 = 18
        ({"scenario": "mlflow_write", "interval": "30s", "timeout": "20s"}, 20.0),  # 20 + 5 <= 27
    ],
)
def test_default_deadline_leaves_room_for_cleanup(tmp_path: Path, probe: dict[str, Any], timeout: float) -> None:
    config = load_config(write_config(tmp_path / "c.yaml", **probe), env={})
    (loaded,) = config.probes
    assert loaded.deadline == pytest.approx(timeout, abs=1e-6)
    scenario = SCENARIOS[loaded.scenario]
    reserve = scenario.cleanup_reserve(loaded.options, min(loaded.step_timeout or loaded.deadline, loaded.deadline))
    assert loaded.deadline + reserve <= loaded.interval * 0.9 + 1e-6


def test_shipped_and_default_configs_follow_the_rule() -> None:
    paths = [REPO / "deploy/kubernetes/base/config.yaml", REPO / "deploy/kubernetes/standalone/config.yaml"]
    for path in [*paths, None]:
        config = load_config(path, env={})
        for probe in config.probes:
            scenario = SCENARIOS[probe.scenario]
            reserve = scenario.cleanup_reserve(probe.options, min(probe.step_timeout or probe.deadline, probe.deadline))
            assert probe.deadline + reserve <= probe.interval * 0.9, (path, probe.name)


# --------------------------------------------------------------------------- the runner's outer bound


class NoOptions(ScenarioOptions):
    pass


async def test_outer_bound_blames_the_step_in_progress_not_scenario() -> None:
    """Code inside a step that hangs outside any request: the outer bound names that step."""

    async def body(run: ScenarioRun, options: Any) -> None:
        async with run.step("stuck"):
            await asyncio.Event().wait()

    scenario = Scenario(name="t", target_kind="mlflow", steps=("stuck",), options_model=NoOptions, run=body)
    async with serve(answer(200)) as server, client_for(server.url) as client:
        started = time.monotonic()
        result = await run_probe(scenario, client, NoOptions(), probe="p", target="t", timeout=0.2)
    assert time.monotonic() - started < 0.2 + OUTER_GRACE_SECONDS + 2.0
    assert [(s.name, s.reason) for s in result.steps] == [("stuck", Reason.TIMEOUT)], describe(result)


def test_write_scenario_reserves_a_budget_per_cleanup_step() -> None:
    write = SCENARIOS["mlflow_write"]
    assert write.cleanup_reserve(WriteOptions(artifacts=True), 30.0) == 2 * CLEANUP_BUDGET_SECONDS
    assert write.cleanup_reserve(WriteOptions(artifacts=False), 30.0) == CLEANUP_BUDGET_SECONDS
    assert write.cleanup_reserve(WriteOptions(artifacts=True), 2.0) == 4.0  # capped by the step timeout
    assert SCENARIOS["mlflow_read"].cleanup_reserve(SCENARIOS["mlflow_read"].options_model(), 30.0) == 0.0


@pytest.mark.timeout(60)
async def test_hung_target_neither_leaks_the_run_nor_blames_scenario(mlflow_server: MlflowServer) -> None:
    """Deadline spent in artifact_put, artifact_delete hangs its whole budget, runs_delete is slow.

    With a 5 s deadline each cleanup step gets 5 s: the run ends at about 5 + 5 + 2 = 12 s.
    An outer bound of deadline + one budget + 1 s (11 s) would cancel runs_delete: the
    MLflow run would leak and the result would blame a step `scenario` that does not exist.
    """
    experiment = f"run-budget-{uuid.uuid4().hex[:8]}"
    proxy = FaultProxy(mlflow_server.url).start()
    proxy.set_faults(
        [
            Fault("hang", path="/mlflow-artifacts/artifacts/"),
            Fault("pass", path="/runs/delete", delay=2.0),
        ]
    )
    client = TargetClient(proxy.url)
    try:
        started = time.monotonic()
        result = await run_probe(
            SCENARIOS["mlflow_write"],
            client,
            WriteOptions(experiment_name=experiment, artifacts=True),
            probe="budget",
            target="mlflow",
            timeout=5.0,
        )
        elapsed = time.monotonic() - started
    finally:
        await client.aclose()
        proxy.stop()
    names = [s.name for s in result.steps]
    assert "scenario" not in names, describe(result)
    assert result.failed_step is not None and result.failed_step.name == "artifact_put", describe(result)
    # An artifact step that timed out while the run steps passed is the artifact store's
    # (monitor/diagnosis.py): the timeout is reclassified, and the step still named.
    assert result.reason is Reason.DEPENDENCY_UNAVAILABLE, describe(result)
    assert result.diagnosis is not None and result.diagnosis.component == "artifact_store", result.diagnosis
    cleanup = {s.name: s for s in result.steps if s.name in ("artifact_delete", "runs_delete")}
    assert cleanup["artifact_delete"].reason is Reason.DEPENDENCY_UNAVAILABLE, describe(result)  # hung like the PUT
    assert cleanup["runs_delete"].ok, describe(result)
    assert 11.0 < elapsed < 5.0 + 2 * CLEANUP_BUDGET_SECONDS + OUTER_GRACE_SECONDS, elapsed
    found = httpx.get(
        f"{mlflow_server.url}/api/2.0/mlflow/experiments/get-by-name",
        params={"experiment_name": experiment},
        timeout=10,
    ).json()
    runs = httpx.post(
        f"{mlflow_server.url}/api/2.0/mlflow/runs/search",
        timeout=10,
        json={
            "experiment_ids": [found["experiment"]["experiment_id"]],
            "run_view_type": "ACTIVE_ONLY",
            "filter": f"tags.`{PROBE_TAG}` = 'budget'",
            "max_results": 100,
        },
    ).json()
    assert runs.get("runs", []) == [], "the probe's MLflow run leaked"


# --------------------------------------------------------------------------- the scheduler's guard


async def test_scheduler_skips_and_counts_a_run_that_would_overlap() -> None:
    """Defence in depth: the config rule makes overruns rare; one that happens is skipped, never run twice."""
    events: list[tuple[str, str]] = []
    active = 0
    most = 0
    runs = 0

    def emit(event: Event) -> None:
        if isinstance(event, JobEvent):
            events.append((event.probe, event.event))

    async def job(name: str) -> None:
        nonlocal active, most, runs
        active += 1
        most = max(most, active)
        try:
            await asyncio.sleep(1.6)  # outlasts three 0.5 s intervals
        finally:
            active -= 1
            runs += 1

    scheduler = ProbeScheduler(emit, heartbeat_interval=5.0, first_run_spread=0.05)
    scheduler.start()
    try:
        scheduler.add_probe("slow", 0.5, job)
        deadline = time.monotonic() + 30
        while not (runs >= 2 and ("slow", "skipped") in events) and time.monotonic() < deadline:
            await asyncio.sleep(0.1)
    finally:
        scheduler.shutdown()
    assert runs >= 2 and ("slow", "skipped") in events, (runs, events)
    assert most == 1, "two runs of one probe overlapped"


def test_every_cleanup_step_is_declared_by_its_scenario() -> None:
    """A step opened with cleanup=True but not in `cleanup_steps` would get no reserve: the outer bound could cancel it."""
    import inspect
    import re

    for scenario in SCENARIOS.values():
        source = inspect.getsource(inspect.getmodule(scenario.run))  # type: ignore[arg-type]
        opened = set(re.findall(r"""run\.step\(\s*["'](\w+)["']\s*,\s*cleanup\s*=\s*True""", source))
        declared = set(scenario.cleanup_steps)
        module_scenarios = [
            s for s in SCENARIOS.values() if inspect.getmodule(s.run) is inspect.getmodule(scenario.run)
        ]
        declared_in_module = set().union(*(s.cleanup_steps for s in module_scenarios))
        assert opened <= declared_in_module, (
            f"{inspect.getmodule(scenario.run).__name__}: cleanup steps {opened - declared_in_module} opened"  # type: ignore[union-attr]
            " with cleanup=True but in no scenario's cleanup_steps"
        )
        assert declared <= set(scenario.steps), f"{scenario.name}: cleanup_steps not among its steps"
