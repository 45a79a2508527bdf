"""Receivers are checked at start-up (issue 23): DNS and a TCP connect, a warning line and
`synthetic_monitor_receiver_reachable`, never a refusal to start. A real daemon, real sockets."""

from __future__ import annotations

import json
import socket
import time
from pathlib import Path

import httpx
import pytest
import yaml

from tests.servers import DaemonProcess, free_port


def _reachable(url: str) -> dict[str, float]:
    body = httpx.get(f"{url}/metrics", timeout=30).text
    return {
        line.split('"')[1]: float(line.rsplit(" ", 1)[1])
        for line in body.splitlines()
        if line.startswith("synthetic_monitor_receiver_reachable{")
    }


@pytest.mark.integration
def test_unreachable_receivers_warn_and_the_daemon_runs(tmp_path: Path) -> None:
    refused = free_port()
    with socket.socket() as listening:
        listening.bind(("127.0.0.1", 0))
        listening.listen()
        up = listening.getsockname()[1]
        config = tmp_path / "config.yaml"
        config.write_text(
            yaml.safe_dump(
                {
                    "log": {"format": "json"},
                    "targets": [{"name": "m", "kind": "mlflow", "url": "http://127.0.0.1:9"}],
                    "probes": [{"name": "r", "target": "m", "scenario": "mlflow_read", "interval": "1h"}],
                    "alerting": {
                        "receivers": [
                            {"kind": "alertmanager", "name": "nodns", "url": "http://no-such-host.invalid:9093"},
                            {"kind": "alertmanager", "name": "refused", "url": f"http://127.0.0.1:{refused}"},
                            {"kind": "webhook", "name": "up", "url": f"http://127.0.0.1:{up}/hook"},
                        ]
                    },
                }
            )
        )
        daemon = DaemonProcess(config, tmp_path, args=()).start()
        try:
            deadline = time.monotonic() + 30
            while len(seen := _reachable(daemon.url)) < 3 and time.monotonic() < deadline:
                time.sleep(0.1)
        finally:
            daemon.stop()
    assert seen == {"nodns": 0.0, "refused": 0.0, "up": 1.0}
    warnings = [
        json.loads(line)
        for line in daemon.log_text().splitlines()
        if line.startswith("{") and "alert_receiver_unreachable" in line
    ]
    assert {w["receiver"]: w["problem"].split(":")[0] for w in warnings} == {"nodns": "DNS", "refused": "TCP"}
