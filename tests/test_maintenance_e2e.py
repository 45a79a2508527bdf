"""Maintenance windows against a real daemon, real sockets and the recording webhook.

Three Asgard stand-ins break at once. Probe `open_api` pages (SyntheticProbeFailing at
the webhook); `config_api` (a window in the config file) and `runtime_api` (a window
created with POST /api/v1/maintenance) keep running and failing but push nothing,
synthetic_probe_maintenance is 1 for exactly them, and the page and badges say
maintenance. The runtime window survives a restart of the daemon (alert state file),
and once it is deleted its probe pages: the window, nothing else, held the alert.
"""

from __future__ import annotations

import datetime as dt
import re
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from tests.servers import DaemonProcess
from tests.standin.asgard import AsgardServer
from tests.standin.asgard import serve_in_thread as asgard_in_thread
from tests.standin.webhook import WebhookServer
from tests.standin.webhook import serve_in_thread as webhook_in_thread
from tests.test_alert_e2e import received_alerts
from tests.test_daemon import wait_for

pytestmark = pytest.mark.timeout(180)

PROBES = ("open_api", "config_api", "runtime_api")


@pytest.fixture
def rig(tmp_path: Path) -> Iterator[tuple[dict[str, AsgardServer], WebhookServer, Path]]:
    servers = {name: asgard_in_thread()[0] for name in PROBES}
    hook = webhook_in_thread()
    now = dt.datetime.now(dt.UTC)
    config = {
        "log": {"level": "info", "format": "json"},
        "targets": [{"name": f"t_{n}", "kind": "asgard", "url": s.url} for n, s in servers.items()],
        "probes": [
            {"name": n, "target": f"t_{n}", "scenario": "asgard", "interval": "1s", "timeout": "800ms"} for n in PROBES
        ],
        "maintenance": [
            {
                "name": "db-upgrade",
                "probes": ["config_api"],
                "start": (now - dt.timedelta(hours=1)).isoformat(),
                "end": (now + dt.timedelta(hours=1)).isoformat(),
            }
        ],
        "alerting": {
            "failure_threshold": 2,
            "success_threshold": 2,
            "startup_grace": "0s",
            "state_file": str(tmp_path / "alert-state.json"),
            "receivers": [{"kind": "webhook", "url": hook.url + "/hook"}],
        },
    }
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config), encoding="utf-8")
    yield servers, hook, path
    hook.stop()
    for server in servers.values():
        server.stop()


def _gauge(daemon: DaemonProcess) -> dict[str, float]:
    text = httpx.get(daemon.url + "/metrics").text
    return {
        m.group(1): float(m.group(2))
        for m in re.finditer(r'synthetic_probe_maintenance\{target="[^"]*",probe="([^"]*)"\} (\S+)', text)
    }


def _consecutive(daemon: DaemonProcess, probe: str) -> float:
    text = httpx.get(daemon.url + "/metrics").text
    for line in text.splitlines():
        if line.startswith("synthetic_probe_consecutive_failures{") and f'probe="{probe}"' in line:
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def _fired(hook: WebhookServer) -> set[str]:
    return {a["labels"]["probe"] for a in received_alerts(hook) if a["status"] == "firing"}


def _badge(daemon: DaemonProcess, probe: str) -> str:
    root = ET.fromstring(httpx.get(f"{daemon.url}/badge/{probe}.svg").text)
    return [t.text or "" for t in root.iter("{http://www.w3.org/2000/svg}text")][-1]


@pytest.mark.integration
def test_windows_hold_alerts_while_other_probes_page(
    rig: tuple[dict[str, AsgardServer], WebhookServer, Path], tmp_path: Path
) -> None:
    servers, hook, path = rig
    daemon = DaemonProcess(path, tmp_path).start()
    stopped = False
    try:
        wait_for(
            lambda: all(_consecutive(daemon, p) == 0 for p in PROBES) and _badge(daemon, "open_api") == "passing",
            20,
            "first runs",
        )
        created = httpx.post(
            daemon.url + "/api/v1/maintenance", json={"name": "hotfix", "probes": ["runtime_api"], "duration": "1h"}
        )
        assert created.status_code == 201, created.text
        window: dict[str, Any] = created.json()
        assert _gauge(daemon) == {"open_api": 0.0, "config_api": 1.0, "runtime_api": 1.0}

        for server in servers.values():
            server.faults.update({"error_status": 500})
        wait_for(lambda: "open_api" in _fired(hook), 30, "open_api to page at the webhook")
        # The windowed probes keep running and recording: well past the threshold, no page.
        wait_for(
            lambda: min(_consecutive(daemon, p) for p in ("config_api", "runtime_api")) >= 5, 30, "failures recorded"
        )
        assert _fired(hook) == {"open_api"}, received_alerts(hook)
        assert {p: _badge(daemon, p) for p in PROBES} == {
            "open_api": "failing",
            "config_api": "maintenance",
            "runtime_api": "maintenance",
        }
        page = httpx.get(daemon.url + "/").text
        assert 'data-probe="config_api" data-state="maintenance"' in page and "hotfix" in page

        # A restart keeps the runtime window (alert state file), and the hold with it.
        assert daemon.stop() == 0
        stopped = True
        daemon = DaemonProcess(path, tmp_path).start()
        stopped = False
        listed = httpx.get(daemon.url + "/api/v1/maintenance").json()["windows"]
        assert {(w["id"], w["origin"], w["active"]) for w in listed} == {
            ("config-0", "config", True),
            (window["id"], "runtime", True),
        }
        assert _gauge(daemon) == {"open_api": 0.0, "config_api": 1.0, "runtime_api": 1.0}
        wait_for(lambda: _consecutive(daemon, "runtime_api") >= 4, 30, "runtime_api failing after the restart")
        assert _fired(hook) == {"open_api"}, received_alerts(hook)

        # End the runtime window early: now its probe pages; the config window still holds.
        assert httpx.delete(f"{daemon.url}/api/v1/maintenance/{window['id']}").status_code == 200
        wait_for(lambda: "runtime_api" in _fired(hook), 30, "runtime_api to page once its window is gone")
        assert _gauge(daemon)["runtime_api"] == 0.0
        assert "config_api" not in _fired(hook)
    finally:
        if not stopped:
            daemon.stop()
