"""Shared fixtures (one real MLflow server for the session, fresh ones for fault tests),
the automatic `integration` marker, and the logs of a failed test's processes."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests import helpers
from tests.servers import MlflowServer

# The production-shape stack (gunicorn + PostgreSQL + S3) as the session fixture `prodstack`.
pytest_plugins = ["tests.prodstack"]

# A test that uses one of these fixtures (directly or through another fixture) talks to an
# external server: it is marked `integration` without saying so.
SERVER_FIXTURES = frozenset(
    {
        "mlflow_server",
        "own_mlflow",
        "prodstack",
        "cli",  # tests/test_config.py: every `synthetic-monitor config` subprocess of the module
        "standin_proc",  # tests/test_asgard_standin.py: the stand-in as its own process
    }
)

# Modules that hold a worker for half a minute or more, longest first (worker-seconds in
# a full run on 2 cores, 2026-12-04): handed out first, so none of them starts last and
# ends the parallel part alone. A module not listed follows in collection order.
LONG_MODULES = (
    "tests/test_fleet_am_pair.py",  # 190 s: five 15 s outages
    "tests/test_perf_smoke.py",  # 155 s: every benchmark in smoke mode
    "tests/test_alert_e2e.py",  # 137 s
    "tests/test_fault_matrix.py",  # 95 s
    "tests/test_fleet_shard.py",  # 64 s
    "tests/test_scale.py",  # 56 s
    "tests/test_fleet_e2e.py",  # 52 s
    "tests/test_security.py",
    "tests/test_mlflow_scenarios.py",
    "tests/test_daemon.py",
    "tests/test_slo_rules.py",
    "tests/test_lifecycle.py",
    "tests/test_config.py",
    "tests/test_asgard_standin.py",
    "tests/test_asgard_probe.py",
)

# Set by `./tests/run.sh --fast`: a test in the fast lane that starts a server process is
# mismarked, and fails saying so (the marks stay honest as tests are added).
FAST_LANE = os.environ.get("SYNTHETIC_MONITOR_FAST_LANE") == "1"


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    def module(item: pytest.Item) -> str:
        return item.nodeid.split("::", 1)[0]

    # The production stack's fault tests (gunicorn sync workers with 2-7 s timeouts, a
    # database lock, a stalled S3) read which part broke from timings: beside three other
    # test workers on 2 cores, CPU starvation looks like a fault of its own. They are
    # marked `serial`, and `./tests/run.sh` runs them alone after the parallel part.
    stack = {module(i) for i in items if "prodstack" in getattr(i, "fixturenames", ())}
    for item in items:
        if SERVER_FIXTURES.intersection(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.integration)
        if module(item) in stack:
            item.add_marker(pytest.mark.serial)
    # `./tests/run.sh` runs the rest in worker processes (pytest-xdist, `--dist loadfile
    # --no-loadscope-reorder`): a module stays on one worker, so its module fixtures start
    # once, and the modules are handed out in this order: the long ones first.
    rank = {name: i for i, name in enumerate(LONG_MODULES)}
    items.sort(key=lambda item: rank.get(module(item), len(rank)))  # stable: the rest keep their order


def pytest_configure(config: pytest.Config) -> None:
    if FAST_LANE:
        # Refuse every process, in tests and in fixtures of any scope alike.
        subprocess.Popen = _RefusedPopen  # type: ignore[misc]


class _RefusedPopen:
    def __init__(self, args: object, *_: object, **__: object) -> None:
        pytest.fail(
            f"starts a process ({args!r:.120}) in the fast lane: mark the test @pytest.mark.integration"
            " (or use a fixture that conftest.SERVER_FIXTURES marks)",
            pytrace=False,
        )


@pytest.fixture(autouse=True)
def _processes_of_this_test(request: pytest.FixtureRequest) -> None:
    """Remember which processes this test starts, for the failure report below."""
    request.node.stash[_FIRST_PROCESS] = len(helpers.STARTED)


_FIRST_PROCESS = pytest.StashKey[int]()


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    """A failed test's report ends with the log tails of the processes it started."""
    report = yield
    if report.failed and call.when in ("setup", "call"):
        first = item.stash.get(_FIRST_PROCESS, len(helpers.STARTED))
        for process in helpers.STARTED[first:]:
            report.sections.append((f"log of {process.name}", process.tail(4000)))
    return report


@pytest.fixture(scope="session")
def mlflow_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MlflowServer]:
    server = MlflowServer(tmp_path_factory.mktemp("mlflow")).start()
    yield server
    server.stop()


@pytest.fixture
def own_mlflow(tmp_path: Path) -> Iterator[MlflowServer]:
    """A private MLflow server that a test may kill or pause."""
    server = MlflowServer(tmp_path / "mlflow").start()
    yield server
    server.stop()
