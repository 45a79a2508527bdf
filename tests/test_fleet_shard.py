"""Three real daemons share 300 probes: each probe runs exactly K times an interval across the fleet.

The probes aim at a closed loopback port (connection refused in microseconds), so the
test measures scheduling, not a server: a failed run counts in synthetic_probe_runs_total
like a passed one.
"""

from __future__ import annotations

import math
import time
from collections import defaultdict
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from monitor.shard import assignment
from tests import helpers
from tests.helpers import closed_port, wait_for
from tests.servers import DaemonProcess

# Every test here starts a fleet of daemon subprocesses.
pytestmark = [pytest.mark.integration]


PROBES = [f"shard_{i:03d}" for i in range(300)]
INTERVAL = 5.0
MEMBERS = 3


def _config(tmp_path: Path, k: int) -> Path:
    closed = closed_port()
    document = helpers.config(
        [helpers.target("closed", "mlflow", f"http://127.0.0.1:{closed}")],
        [helpers.probe(n, "closed", "mlflow_read", f"{INTERVAL:g}s", timeout="2s") for n in PROBES],
        log={"level": "error", "format": "json"},
        alerting={"enabled": False},
        shard={"count": MEMBERS, "replicas_per_probe": k},
        location="loopback",
    )
    return helpers.write_config(tmp_path / f"fleet-k{k}.yaml", document)


@pytest.fixture
def fleet(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[list[DaemonProcess]]:
    path = _config(tmp_path, request.param)
    daemons = [DaemonProcess(path, tmp_path, env={"POD_NAME": f"synthetic-monitor-{i}"}) for i in range(MEMBERS)]
    try:
        with ThreadPoolExecutor(MEMBERS) as pool:  # started together: the fleet's start-up is one wait
            list(pool.map(DaemonProcess.start, daemons))
        yield daemons
    finally:
        for daemon in daemons:
            if daemon.proc is not None and daemon.proc.poll() is None:
                daemon.stop()


def _runs(daemon: DaemonProcess) -> dict[str, float]:
    """Runs so far per probe (success + failure) from the daemon's /metrics."""
    text = httpx.get(f"{daemon.url}/metrics", timeout=10).text
    runs: dict[str, float] = defaultdict(float)
    for family in text_string_to_metric_families(text):
        if family.name == "synthetic_probe_runs":
            for sample in family.samples:
                if sample.name == "synthetic_probe_runs_total":
                    runs[sample.labels["probe"]] += sample.value
    return dict(runs)


def _wait_ready(daemons: list[DaemonProcess], timeout: float = 90.0) -> None:
    def ready() -> bool:
        return all(httpx.get(f"{d.url}/readyz", timeout=10).status_code == 200 for d in daemons)

    wait_for(ready, timeout=timeout, interval=0.3, what="every member ready")


def _window(daemons: list[DaemonProcess], runs_each: int) -> tuple[list[dict[str, float]], float]:
    """Runs per probe of each member between two scrapes: the second once every probe has
    ended `runs_each` more runs on every member that holds it (an event, not a sleep).

    Returns the runs and the longest the window can have been (from the start of the first
    scrapes to the end of the second: a scrape reads each series at some moment inside it).
    """
    with ThreadPoolExecutor(len(daemons)) as pool:  # scraped together: a narrower window
        outer_start = time.monotonic()
        before = list(pool.map(_runs, daemons))

        def enough() -> list[dict[str, float]]:
            after = list(pool.map(_runs, daemons))
            deltas = [{p: a[p] - b.get(p, 0.0) for p in a} for a, b in zip(after, before)]
            return deltas if all(min(d.values(), default=0) >= runs_each for d in deltas) else []

        deltas = wait_for(enough, timeout=(runs_each + 2) * INTERVAL * 6, interval=0.5, what=f"{runs_each} runs each")
        outer_end = time.monotonic()
    return deltas, outer_end - outer_start


@pytest.mark.parametrize("fleet", [1, 2], indirect=True, ids=["K=1", "K=2"])
def test_every_probe_runs_exactly_k_times_per_interval_across_the_fleet(fleet: list[DaemonProcess]) -> None:
    status = [httpx.get(f"{d.url}/status", timeout=10).json() for d in fleet]
    k = status[0]["fleet"]["shard"]["replicas_per_probe"]
    expected = assignment(PROBES, MEMBERS, k)
    for index, member in enumerate(status):
        shard = member["fleet"]["shard"]
        assert shard["index"] == index and member["replica"] == f"synthetic-monitor-{index}"
        assert shard["assignment"] == expected  # every member computes the same table
        assert {p["name"] for p in member["probes"]} == {p for p, m in expected.items() if index in m}
    _wait_ready(fleet)
    deltas, longest = _window(fleet, 2)
    # Exactly K holders per probe (its series exist only where it runs), each running it at
    # most once per interval: load can only delay a run, never add one. A run that began
    # before the window and ended inside it counts too, hence the one over.
    high = math.ceil(longest / INTERVAL) + 1
    holders: dict[str, list[int]] = defaultdict(list)
    for index, delta in enumerate(deltas):
        for probe, runs in delta.items():
            holders[probe].append(index)
            assert 2 <= runs <= high, (index, probe, runs, longest)
    assert {p: sorted(m) for p, m in holders.items()} == expected
    assert all(len(m) == k for m in holders.values())
    total = sum(sum(d.values()) for d in deltas)
    print(
        f"\nK={k}: {total / len(PROBES):.2f} runs per probe in a window of at most {longest:.2f} s"
        f" ({INTERVAL:g} s interval, {MEMBERS} members)"
    )

    if k < 2:
        return
    # One member stops: the probes it shared are still run, by their other holder.
    fleet[0].stop()
    survivors = fleet[1:]
    deltas, _ = _window(survivors, 1)  # returns once every probe a survivor holds ran again
    for probe, members in expected.items():
        if 0 not in members:
            continue
        others = [m for m in members if m != 0]
        assert sum(deltas[m - 1].get(probe, 0.0) for m in others) >= 1, probe
