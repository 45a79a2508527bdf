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
import yaml
from prometheus_client.parser import text_string_to_metric_families

from monitor.shard import assignment
from tests.servers import DaemonProcess, free_port

# Every test here starts a fleet of daemon subprocesses.
pytestmark = [pytest.mark.integration]


PROBES = [f"shard_{i:03d}" for i in range(300)]
INTERVAL = 5.0
MEMBERS = 3


def _config(tmp_path: Path, k: int) -> Path:
    closed = free_port()  # nothing listens there
    document = {
        "log": {"level": "error", "format": "json"},
        "targets": [{"name": "closed", "kind": "mlflow", "url": f"http://127.0.0.1:{closed}"}],
        "probes": [
            {"name": n, "target": "closed", "scenario": "mlflow_read", "interval": f"{INTERVAL:g}s", "timeout": "2s"}
            for n in PROBES
        ],
        "alerting": {"enabled": False},
        "shard": {"count": MEMBERS, "replicas_per_probe": k},
        "location": "loopback",
    }
    path = tmp_path / f"fleet-k{k}.yaml"
    path.write_text(yaml.safe_dump(document))
    return path


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


def _wait_ready(daemons: list[DaemonProcess], timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    waiting = list(daemons)
    while waiting and time.monotonic() < deadline:
        waiting = [d for d in waiting if httpx.get(f"{d.url}/readyz", timeout=5).status_code != 200]
        time.sleep(0.3)
    assert not waiting, "members not ready: " + ", ".join(d.log_text()[-500:] for d in waiting)


def _window(daemons: list[DaemonProcess], intervals: int) -> tuple[list[dict[str, float]], float, float]:
    """Runs per probe of each member over about `intervals` probe intervals.

    A scrape of 100 probes takes ~1 s on a loaded machine and reads each series at some
    moment inside it, so the window is only known within bounds: it is at least the time
    between the end of the first scrapes and the start of the second, at most the time
    from the start of the first to the end of the second. Returns the runs and both bounds.
    """
    with ThreadPoolExecutor(len(daemons)) as pool:  # scraped together: a narrower window
        outer_start = time.monotonic()
        before = list(pool.map(_runs, daemons))
        inner_start = time.monotonic()
        time.sleep(intervals * INTERVAL)
        inner_end = time.monotonic()
        after = list(pool.map(_runs, daemons))
        outer_end = time.monotonic()
    runs = [{p: a[p] - b.get(p, 0.0) for p in a} for a, b in zip(after, before)]
    return runs, inner_end - inner_start, outer_end - outer_start


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
    deltas, shortest, longest = _window(fleet, 2)
    # A probe runs once per interval on its grid: a window of length L holds floor(L/I) or ceil(L/I).
    # Runs are counted when they end: on a loaded machine a run that straddles either edge of
    # the window moves one count across it, so each probe may be one short of the grid's
    # count; the fleet-wide total below still pins K.
    low, high = max(1, math.floor(shortest / INTERVAL) - 1), math.ceil(longest / INTERVAL)
    holders: dict[str, list[int]] = defaultdict(list)
    for index, delta in enumerate(deltas):
        for probe, runs in delta.items():
            holders[probe].append(index)
            assert low <= runs <= high, (index, probe, runs, shortest, longest)
    assert {p: sorted(m) for p, m in holders.items()} == expected  # a probe's series exist only where it runs
    total = sum(sum(d.values()) for d in deltas)
    # Across the fleet: K runs per probe per interval, within the window's uncertainty.
    # 10 % slack below: runs are counted when they end, and a loaded machine starts some a little
    # late, past the window's end (seen: 1.94 runs per probe in a 10.0 s window). K - 1 or K + 1
    # would be 50 % off, so K is still pinned.
    assert k * shortest / INTERVAL * 0.9 <= total / len(PROBES) <= k * longest / INTERVAL * 1.03, (
        total,
        shortest,
        longest,
    )
    print(
        f"\nK={k}: {total / len(PROBES):.2f} runs per probe in a window of {shortest:.2f}-{longest:.2f} s"
        f" ({INTERVAL:g} s interval, {MEMBERS} members)"
    )

    if k < 2:
        return
    # One member stops: the probes it shared are still run, by their other holder.
    fleet[0].stop()
    survivors = fleet[1:]
    deltas, _, _ = _window(survivors, 1)
    for probe, members in expected.items():
        if 0 not in members:
            continue
        others = [m for m in members if m != 0]
        assert sum(deltas[m - 1].get(probe, 0.0) for m in others) >= 1, probe
