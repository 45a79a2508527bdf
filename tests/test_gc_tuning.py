"""The daemon's collector thresholds: full collections stopped the loop 130-280 ms every
~10 s in a fleet's wide outage (monitor/daemon.py, GC_THRESHOLDS)."""

from __future__ import annotations

import asyncio
import gc
from pathlib import Path

import structlog
import yaml

from monitor.config import load_config
from monitor.daemon import GC_THRESHOLDS, Daemon
from monitor.logsetup import configure_logging
from tests.helpers import closed_port


async def test_a_running_daemon_collects_young_objects_every_50000_allocations(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    url = f"http://127.0.0.1:{closed_port()}"
    path.write_text(
        yaml.safe_dump(
            {
                "targets": [{"name": "mlflow", "kind": "mlflow", "url": url}],
                "probes": [{"name": "p", "target": "mlflow", "scenario": "mlflow_read", "interval": "1h"}],
            }
        )
    )
    before = gc.get_threshold()
    gc.set_threshold(700, 10, 10)  # CPython's default (an in-process daemon of another test may have set its own)
    saved = structlog.get_config()
    try:
        configure_logging("error", "json", stream=open("/dev/null", "w"))
        daemon = Daemon(load_config(path), str(path), listen="127.0.0.1:0")
        task = asyncio.create_task(daemon.run())
        for _ in range(200):
            if daemon.scheduler.running:
                break
            await asyncio.sleep(0.05)
        seen = gc.get_threshold()
        daemon.request_stop()
        assert await asyncio.wait_for(task, 20) == 0
    finally:
        structlog.configure(**saved)
        gc.set_threshold(*before)
    assert GC_THRESHOLDS[0] == 50_000 and seen == GC_THRESHOLDS
