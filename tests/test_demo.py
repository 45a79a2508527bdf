"""The README's first command: the demo stack starts, passes, shows a fault, stops clean."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from tests.servers import REPO, free_port

# The demo starts MLflow, the stand-in and the daemon.
pytestmark = [pytest.mark.integration, pytest.mark.slow]


def descendants(pid: int) -> set[int]:
    """Every live process below `pid` (children start their own sessions, so walk PPIDs)."""
    parents: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            parents[int(entry.name)] = int(stat.rsplit(")", 1)[1].split()[1])
    found: set[int] = set()
    frontier = [pid]
    while frontier:
        current = frontier.pop()
        for child, parent in parents.items():
            if parent == current and child not in found:
                found.add(child)
                frontier.append(child)
    return found


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def test_demo_starts_passes_shows_a_fault_and_stops_clean(tmp_path: Path) -> None:
    ports = {name: free_port() for name in ("mlflow", "asgard", "monitor")}
    out_path = tmp_path / "demo.out"
    with out_path.open("wb") as out:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "monitor",
                "demo",
                "--mlflow-port",
                str(ports["mlflow"]),
                "--asgard-port",
                str(ports["asgard"]),
                "--monitor-port",
                str(ports["monitor"]),
            ],
            cwd=REPO,
            stdout=out,
            stderr=subprocess.STDOUT,
            env=dict(os.environ, PYTHONUNBUFFERED="1"),
        )
    try:
        deadline = time.monotonic() + 120
        while "probes passing" not in out_path.read_text() and time.monotonic() < deadline:
            assert proc.poll() is None, out_path.read_text()
            time.sleep(0.5)
        text = out_path.read_text()
        assert "all 3 probes passing" in text, text
        monitor = re.search(r"metrics\s+(http://\S+)/metrics", text).group(1)
        asgard = re.search(r"Asgard\s+(http://\S+)/mlops/status", text).group(1)
        children = descendants(proc.pid)
        assert len(children) >= 3

        # Flip a switch: the failure shows within one interval (5 s) plus the deadline (4 s).
        httpx.post(f"{asgard}/admin/faults", json={"error_status": 503}).raise_for_status()
        deadline = time.monotonic() + 5 + 4 + 2
        seen = False
        while time.monotonic() < deadline and not seen:
            metrics = httpx.get(f"{monitor}/metrics").text
            seen = (
                re.search(
                    r'synthetic_probe_step_failures_total\{[^}]*probe="asgard_api"[^}]*'
                    r'reason="worker_failure"[^}]*step="status"[^}]*\} [1-9]',
                    metrics,
                )
                is not None
            )
            time.sleep(0.5)
        assert seen, "no worker_failure of asgard_api within one interval"
        httpx.delete(f"{asgard}/admin/faults").raise_for_status()
    finally:
        proc.send_signal(signal.SIGINT)
        code = proc.wait(timeout=30)
    assert code == 0, out_path.read_text()
    assert "stopped." in out_path.read_text()
    left = [pid for pid in children if alive(pid)]
    assert left == [], f"processes left behind: {left}"
