"""Issue 26: one incident seen from two locations through an Alertmanager pair pages once.

Exactly the reported setup: two daemons in two locations (`sidecar`, `in-cluster`), each
the other's peer, both pushing to two clustered Alertmanagers (`--cluster.peer` to each
other, settle timeout 2 s; everything else Alertmanager's defaults), route `group_by:
[alertname, target, probe]`, `group_wait: 5s`, `group_interval: 3s`, `repeat_interval:
1h`, one recording webhook with `send_resolved: true`. Probe `mlflow_read` every 2 s,
`failure_threshold: 1`. MLflow is stopped for 15 s, then started again, five times in a
row: every time one critical firing notification, one resolved, no warning (a passing
vote from before the outage is no vote) and no notification twice.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from tests.servers import DaemonProcess, MlflowServer, Proc, free_port, start_proc
from tests.standin.webhook import WebhookServer, serve_in_thread
from tests.test_alert_e2e import ALERTMANAGER, wait_until

pytestmark = pytest.mark.timeout(420)

FAILING = "SyntheticProbeFailing"
OUTAGE_SECONDS = 15.0
CYCLES = 5
LOCATIONS = ("sidecar", "in-cluster")


def summary(hook: WebhookServer) -> str:
    """One line per notification: when, status, and each alert's name, location, status, start."""
    lines = []
    for entry in hook.snapshot():
        body = entry["body"] if isinstance(entry["body"], dict) else {}
        alerts = ", ".join(
            f"{a['labels'].get('alertname')}/{a['labels'].get('location')}/{a.get('status')}@{a.get('startsAt')}"
            for a in body.get("alerts") or []
        )
        lines.append(f"{time.strftime('%H:%M:%S', time.gmtime(entry['received_at']))} {body.get('status')}: {alerts}")
    return "\n".join(lines)


def messages(hook: WebhookServer, since: int = 0) -> list[dict[str, Any]]:
    return [e["body"] for e in hook.snapshot()[since:] if isinstance(e["body"], dict)]


def identity(message: dict[str, Any]) -> str:
    """What makes two notifications the same notification (Alertmanager re-sent it)."""
    alerts = sorted(
        json.dumps([a.get("status"), a.get("labels"), a.get("startsAt"), a.get("endsAt")], sort_keys=True)
        for a in message.get("alerts") or []
    )
    return json.dumps([message.get("status"), message.get("groupKey"), alerts])


def critical_firing(message: dict[str, Any]) -> bool:
    alerts = message.get("alerts") or []
    return bool(alerts) and all(a["labels"].get("alertname") == FAILING and a.get("status") == "firing" for a in alerts)


def resolved(message: dict[str, Any]) -> bool:
    alerts = message.get("alerts") or []
    return message.get("status") == "resolved" and any(a["labels"].get("alertname") == FAILING for a in alerts)


@pytest.fixture
def pair(tmp_path: Path) -> Iterator[dict[str, Any]]:
    if not ALERTMANAGER:
        pytest.skip("prometheus-alertmanager not installed (apt-get install prometheus-alertmanager)")
    procs: list[Proc] = []
    daemons: list[DaemonProcess] = []
    hook = serve_in_thread()
    mlflow = MlflowServer(tmp_path / "mlflow").start()
    try:
        (tmp_path / "am.yml").write_text(
            yaml.safe_dump(
                {
                    "route": {
                        "receiver": "hook",
                        "group_by": ["alertname", "target", "probe"],
                        "group_wait": "5s",
                        "group_interval": "3s",
                        "repeat_interval": "1h",
                    },
                    "receivers": [
                        {"name": "hook", "webhook_configs": [{"url": f"{hook.url}/am", "send_resolved": True}]}
                    ],
                }
            )
        )
        web, gossip = [free_port(), free_port()], [free_port(), free_port()]
        for i in (0, 1):
            procs.append(
                start_proc(
                    f"alertmanager-{i}",
                    [
                        ALERTMANAGER,
                        f"--config.file={tmp_path / 'am.yml'}",
                        f"--storage.path={tmp_path / f'am{i}'}",
                        f"--web.listen-address=127.0.0.1:{web[i]}",
                        f"--cluster.listen-address=127.0.0.1:{gossip[i]}",
                        f"--cluster.peer=127.0.0.1:{gossip[1 - i]}",
                        "--cluster.settle-timeout=2s",
                        "--log.level=debug",
                    ],
                    tmp_path,
                    f"http://127.0.0.1:{web[i]}/-/ready",
                )
            )
        daemons = [DaemonProcess(tmp_path / f"{name}.yaml", tmp_path) for name in LOCATIONS]
        for name, daemon, other in ((LOCATIONS[0], daemons[0], daemons[1]), (LOCATIONS[1], daemons[1], daemons[0])):
            daemon.config_path.write_text(
                yaml.safe_dump(
                    {
                        "location": name,
                        "log": {"level": "debug"},
                        "targets": [{"name": "mlflow", "kind": "mlflow", "url": mlflow.url}],
                        "probes": [
                            {
                                "name": "mlflow_read",
                                "target": "mlflow",
                                "scenario": "mlflow_read",
                                "interval": "2s",
                            }
                        ],
                        "peers": {"urls": [other.url]},
                        "alerting": {
                            "failure_threshold": 1,
                            "startup_grace": "0s",
                            "state_file": str(tmp_path / f"{name}-alerts.json"),
                            "receivers": [
                                {"kind": "alertmanager", "name": f"am{i}", "url": f"http://127.0.0.1:{web[i]}"}
                                for i in (0, 1)
                            ],
                        },
                    }
                )
            )
        for daemon in daemons:
            daemon.start()
        yield {"hook": hook, "mlflow": mlflow, "daemons": daemons, "procs": procs, "workdir": tmp_path}
    finally:
        for daemon in daemons:
            if daemon.proc is not None and daemon.proc.poll() is None:
                daemon.stop()
        for proc in procs:
            proc.stop()
        mlflow.stop()
        hook.stop()


def test_five_outages_each_page_once_resolve_once_and_never_twice(pair: dict[str, Any]) -> None:
    hook, mlflow, daemons = pair["hook"], pair["mlflow"], pair["daemons"]

    def context() -> str:
        return "\n".join(
            [f"hook:\n{summary(hook)}"]
            + [d.log_text()[-2500:] for d in daemons]
            + [p.tail(1500) for p in pair["procs"]]
        )

    def passing(daemon: DaemonProcess) -> bool:
        last = httpx.get(f"{daemon.url}/status", timeout=3).json()["probes"][0]["last"]
        return bool(last and last["ok"])

    wait_until(lambda: all(passing(d) for d in daemons), 30, "both locations passing", context)
    for cycle in range(CYCLES):
        start = len(hook.snapshot())
        stopped = time.monotonic()
        mlflow.kill()
        wait_until(
            lambda start=start: [m for m in messages(hook, start) if critical_firing(m)],
            OUTAGE_SECONDS + 10,
            f"cycle {cycle}: the critical page",
            context,
        )
        left = OUTAGE_SECONDS - (time.monotonic() - stopped)
        if left > 0:
            time.sleep(left)  # the reported outage length, not a wait for a condition
        mlflow.start()
        wait_until(
            lambda start=start: [m for m in messages(hook, start) if resolved(m)],
            40,
            f"cycle {cycle}: the resolve",
            context,
        )
        got = messages(hook, start)
        pages = [m for m in got if critical_firing(m)]
        assert len(pages) == 1, f"cycle {cycle}: {len(pages)} critical pages\n{context()}"
        locations = sorted(a["labels"]["location"] for a in pages[0]["alerts"])
        assert locations == sorted(LOCATIONS), pages  # one page carrying both locations' copies
        assert not [m for m in got if m.get("commonLabels", {}).get("severity") == "warning"], context()
    # Alertmanager's second member may send what the first already sent up to its peer
    # timeout (15 s by default) plus a group_interval later: wait that long once, at the end.
    settle = time.monotonic() + 15 + 3 + 5
    while time.monotonic() < settle:
        time.sleep(0.5)
    everything = messages(hook)
    seen: dict[str, int] = {}
    for message in everything:
        seen[identity(message)] = seen.get(identity(message), 0) + 1
    twice = [json.loads(k) for k, n in seen.items() if n > 1]
    assert not twice, f"notifications received twice: {twice}\n{context()}"
    pages = [m for m in everything if critical_firing(m)]
    resolves = [m for m in everything if resolved(m)]
    assert len(pages) == CYCLES and len(resolves) == CYCLES, context()
    assert not [m for m in everything if any("FromOneLocation" in a["labels"]["alertname"] for a in m["alerts"])]
