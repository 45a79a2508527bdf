"""Issue 26: one incident seen from two locations through an Alertmanager pair pages once.

The reported setup: two daemons in two locations (`sidecar`, `in-cluster`), each the
other's peer, both pushing to two clustered Alertmanagers (`--cluster.peer` to each other,
settle timeout 2 s, and the peer timeout of the shipped HA example
deploy/alertmanager/ha-pair.sh: with the default 15 s, longer than the group_interval,
the second member re-sends alerts that resolved during its wait; docs/alerting.md), route
`group_by: [alertname, target, probe]`, `group_wait: 5s`, `group_interval` 6s (the report
had 3s: see GROUP_INTERVAL), `repeat_interval: 1h`, one recording webhook with `send_resolved: true`. Probe `mlflow_read` every 2 s,
`failure_threshold: 1`. MLflow is stopped for 15 s, then started again, five times in a
row: every time one critical firing notification, one resolved, no warning (a passing
vote from before the outage is no vote) and no notification twice.
"""

from __future__ import annotations

import datetime as dt
import json
import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from tests.servers import REPO, DaemonProcess, MlflowServer, Proc, free_port, start_proc
from tests.standin.webhook import WebhookServer, serve_in_thread
from tests.test_alert_e2e import ALERTMANAGER, wait_until

# Timing contract between two Alertmanagers (GROUP_INTERVAL, the peer timeout of
# ha-pair.sh): measured to hold beside three busy CPU loops, so it runs with the other tests.
pytestmark = pytest.mark.timeout(420)

FAILING = "SyntheticProbeFailing"
# The report had 3s. With a peer timeout below it, the first member's notification record
# must reach the second within that timeout (else both send) and a resolve must not fall in
# the rest of the interval (else the second re-sends a stale firing): 1s and 3s left 1s for
# the one and 2s for the other, and a loaded 2-core machine missed the 1s (both Alertmanagers
# sent one page, 2026-12-03). 2s and 6s leave 2s and 4s.
GROUP_INTERVAL = "6s"
PEER_TIMEOUT = re.findall(r"--cluster\.peer-timeout=(\S+)", (REPO / "deploy/alertmanager/ha-pair.sh").read_text())[0]
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
        sender = str(body.get("externalURL", "")).rsplit(":", 1)[-1]  # which Alertmanager sent it
        lines.append(
            f"{time.strftime('%H:%M:%S', time.gmtime(entry['received_at']))} am:{sender} {body.get('status')}: {alerts}"
        )
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


def starts(message: dict[str, Any]) -> set[float]:
    """The startsAt of the SyntheticProbeFailing alerts in a notification, as Unix seconds."""
    return {
        dt.datetime.fromisoformat(a["startsAt"]).timestamp()
        for a in message.get("alerts") or []
        if a["labels"].get("alertname") == FAILING
    }


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
                        "group_interval": GROUP_INTERVAL,
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
                        f"--cluster.peer-timeout={PEER_TIMEOUT}",
                        "--log.level=debug",
                    ],
                    tmp_path,
                    f"http://127.0.0.1:{web[i]}/-/ready",
                )
            )
        daemons = [DaemonProcess(tmp_path / f"{name}.yaml", tmp_path, port=free_port()) for name in LOCATIONS]
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
        yield {
            "hook": hook,
            "mlflow": mlflow,
            "daemons": daemons,
            "procs": procs,
            "workdir": tmp_path,
            "alertmanagers": [f"http://127.0.0.1:{port}" for port in web],
        }
    finally:
        for daemon in daemons:
            if daemon.proc is not None and daemon.proc.poll() is None:
                daemon.stop()
        for proc in procs:
            proc.stop()
        mlflow.stop()
        hook.stop()


@pytest.mark.integration
def test_five_outages_each_page_once_resolve_once_and_never_twice(pair: dict[str, Any]) -> None:
    hook, mlflow, daemons = pair["hook"], pair["mlflow"], pair["daemons"]
    waited: list[float] = []  # how long each outage waited for the Alertmanagers' last group to go

    def context() -> str:
        return "\n".join(
            [f"hook:\n{summary(hook)}", f"waited for the groups to go: {waited}"]
            + [d.log_text()[-2500:] for d in daemons]
            + [p.tail(1500) for p in pair["procs"]]
        )

    def passing(daemon: DaemonProcess) -> bool:
        last = httpx.get(f"{daemon.url}/status", timeout=3).json()["probes"][0]["last"]
        return bool(last and last["ok"])

    def quiet(daemon: DaemonProcess) -> bool:
        metrics = httpx.get(f"{daemon.url}/metrics", timeout=3).text
        return not [
            line
            for line in metrics.splitlines()
            if line.startswith("synthetic_monitor_alerts_firing{") and not line.endswith(" 0.0")
        ]

    # Both locations pass and hold no alert (a slow first run on a busy machine may have
    # fired one while the peer was not up yet), and what that sent is out of the way.
    wait_until(lambda: all(passing(d) and quiet(d) for d in daemons), 60, "both locations passing, quiet", context)

    def groups_gone() -> bool:
        return all(httpx.get(f"{am}/api/v2/alerts/groups", timeout=3).json() == [] for am in pair["alertmanagers"])

    began = time.time()
    for cycle in range(CYCLES):
        # A new outage's alerts must open a new group in both Alertmanagers (flushed after
        # group_wait, with both locations' copies), not join the last incident's group that
        # a member still holds (flushed at its next group_interval tick: one location only).
        t = time.monotonic()
        wait_until(groups_gone, 60, f"cycle {cycle}: both Alertmanagers dropped the last group", context)
        waited.append(time.monotonic() - t)
        killed = time.time()
        stopped = time.monotonic()
        mlflow.kill()

        def pages_since(moment: float = killed) -> list[dict[str, Any]]:
            return [m for m in messages(hook) if critical_firing(m) and min(starts(m)) >= moment - 1.0]

        [page, *more] = wait_until(pages_since, OUTAGE_SECONDS + 10, f"cycle {cycle}: the critical page", context)
        incident = starts(page)
        left = OUTAGE_SECONDS - (time.monotonic() - stopped)
        if left > 0:
            time.sleep(left)  # the reported outage length, not a wait for a condition
        mlflow.start()

        def resolves(incident: set[float] = incident) -> list[dict[str, Any]]:
            return [m for m in messages(hook) if resolved(m) and starts(m) & incident]

        wait_until(resolves, 40, f"cycle {cycle}: the resolve", context)
        assert not more and len(pages_since()) == 1, f"cycle {cycle}: more than one page\n{context()}"
        locations = sorted(a["labels"]["location"] for a in page["alerts"])
        assert locations == sorted(LOCATIONS), f"cycle {cycle}: {locations}\n{context()}"  # both copies, one page
    # Alertmanager's second member may send what the first already sent up to its peer
    # timeout plus a group_interval later: wait that long (and more) once, at the end.
    settle = time.monotonic() + 15 + 3
    while time.monotonic() < settle:
        time.sleep(0.5)
    everything = messages(hook)
    seen: dict[str, int] = {}
    for message in everything:
        seen[identity(message)] = seen.get(identity(message), 0) + 1
    twice = [json.loads(k) for k, n in seen.items() if n > 1]
    print(f"waited for the groups to go: {[round(w, 1) for w in waited]}")
    assert not twice, f"notifications received twice: {twice}\n{context()}"
    pages = [m for m in everything if critical_firing(m) and min(starts(m)) >= began - 1.0]
    closed = [m for m in everything if resolved(m) and min(starts(m)) >= began - 1.0]
    assert len(pages) == CYCLES and len(closed) == CYCLES, context()
    # A stale pass is no vote: never the one-location warning for an outage both locations see.
    assert not [m for m in everything if any("FromOneLocation" in a["labels"]["alertname"] for a in m["alerts"])]
