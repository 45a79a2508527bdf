"""Issue 18: a webhook gets one firing and one resolved notice per variant through the quorum
gate, whatever happens in between: Alertmanager-only re-sends and a restart of the daemon.

Two real daemons, peers of each other. Only alpha's path to the Asgard stand-in breaks
(a fault proxy refuses), so alpha sends the warning SyntheticProbeFailingFromOneLocation.
Alpha re-sends it every second to its Alertmanager receiver only (resend_interval 1 s;
the receiver is a recording server), is restarted (SIGTERM, same state file), and then
its path heals. Before the fix the gate copied the receivers of the last re-send into the
resolve (Alertmanager alone), and a restart forgot which variant was sent: the webhook
never got the resolve, or got it under the wrong alert name.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from tests.faultproxy import FaultProxy
from tests.helpers import free_port
from tests.servers import DaemonProcess
from tests.standin.asgard import serve_in_thread as serve_asgard
from tests.standin.webhook import WebhookServer, serve_in_thread
from tests.test_alert_e2e import wait_until

pytestmark = pytest.mark.timeout(150)

ONE_LOCATION = "SyntheticProbeFailingFromOneLocation"


def notices(hook: WebhookServer, path: str) -> list[tuple[str, str, str]]:
    """(alertname, status, startsAt) of every alert in every message to `path`."""
    out = []
    for entry in hook.snapshot():
        if entry["path"].split("/api/v2/alerts")[0] != path:
            continue
        body = entry["body"]
        alerts = body if isinstance(body, list) else body.get("alerts", [])
        for alert in alerts:
            status = alert.get("status") or ("resolved" if path.startswith("/api") and _ended(alert) else "firing")
            out.append((alert["labels"]["alertname"], status, alert["startsAt"]))
    return out


def _ended(alert: dict[str, Any]) -> bool:
    import datetime as dt

    ends = alert.get("endsAt")
    return bool(ends) and dt.datetime.fromisoformat(ends).timestamp() <= dt.datetime.now(dt.UTC).timestamp() + 0.5


@pytest.fixture
def pair(tmp_path: Path) -> Iterator[dict[str, Any]]:
    hook = serve_in_thread()
    asgard, asgard_url = serve_asgard()
    proxy = FaultProxy(asgard_url).start()
    daemons = [DaemonProcess(tmp_path / f"{name}.yaml", tmp_path, port=free_port()) for name in ("alpha", "beta")]
    for name, daemon, other, url in (
        ("alpha", daemons[0], daemons[1], proxy.url),
        ("beta", daemons[1], daemons[0], asgard_url),
    ):
        daemon.config_path.write_text(
            yaml.safe_dump(
                {
                    "location": name,
                    "log": {"format": "json"},
                    "targets": [{"name": "asgard", "kind": "asgard", "url": url}],
                    "probes": [{"name": "asgard_api", "target": "asgard", "scenario": "asgard", "interval": "1s"}],
                    "peers": {"urls": [other.url], "timeout": "500ms"},
                    "alerting": {
                        "failure_threshold": 1,
                        "success_threshold": 1,
                        "startup_grace": "0s",
                        "resend_interval": "1s",
                        "state_file": str(tmp_path / f"{name}-alerts.json"),
                        "receivers": [
                            {"kind": "alertmanager", "name": "am", "url": f"{hook.url}/{name}-am"},
                            {"kind": "webhook", "name": "hook", "url": f"{hook.url}/{name}-hook"},
                        ],
                    },
                }
            )
        )
    try:
        for daemon in daemons:
            daemon.start()
        yield {"hook": hook, "proxy": proxy, "daemons": daemons}
    finally:
        for daemon in daemons:
            if daemon.proc is not None and daemon.proc.poll() is None:
                daemon.stop()
        proxy.stop()
        asgard.stop()
        hook.stop()


@pytest.mark.integration
def test_resends_and_a_restart_between_the_warning_and_its_resolve(pair: dict[str, Any]) -> None:
    hook, proxy = pair["hook"], pair["proxy"]
    alpha, beta = pair["daemons"]

    def context() -> str:
        return f"{json.dumps(notices(hook, '/alpha-hook'))}\n{alpha.log_text()[-3000:]}"

    def passing(daemon: DaemonProcess) -> bool:
        last = httpx.get(f"{daemon.url}/status", timeout=3).json()["probes"][0]["last"]
        return bool(last and last["ok"])

    wait_until(lambda: passing(alpha) and passing(beta), 30, "both locations passing", context)
    proxy.refuse()
    wait_until(lambda: (ONE_LOCATION, "firing") in [n[:2] for n in notices(hook, "/alpha-hook")], 20, "the warning")
    # Alertmanager-only re-sends of the warning (one a second) ...
    wait_until(lambda: len(notices(hook, "/alpha-am")) >= 4, 20, "re-sends to Alertmanager", context)
    # ... and a restart in the middle of the incident.
    assert alpha.stop() == 0
    alpha.start()
    resent = len(notices(hook, "/alpha-am"))
    wait_until(lambda: len(notices(hook, "/alpha-am")) > resent + 1, 20, "re-sends after the restart", context)
    after = notices(hook, "/alpha-am")[resent:]
    assert {name for name, _, _ in after} == {ONE_LOCATION}, after  # still the warning, by name
    proxy.accept()
    wait_until(
        lambda: (ONE_LOCATION, "resolved") in [n[:2] for n in notices(hook, "/alpha-hook")],
        20,
        "the resolve at the webhook",
        context,
    )
    got = notices(hook, "/alpha-hook")
    assert [n[:2] for n in got] == [(ONE_LOCATION, "firing"), (ONE_LOCATION, "resolved")], got
    assert got[0][2] == got[1][2]  # the same alert: the same startsAt
