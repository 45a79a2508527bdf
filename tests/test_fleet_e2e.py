"""Two daemons in two locations, two clustered Alertmanagers, real Prometheus: one page, not four.

    Asgard stand-in  <-- fault proxy --  daemon "alpha"  --+--> Alertmanager A <-gossip-> Alertmanager B
          ^------------------------------ daemon "beta"  --+           \\__________ one webhook __________/
    Prometheus scrapes both daemons (location as a scrape label) with the shipped rules.

The daemons are peers of each other. Alpha's own path breaks first: a warning naming
alpha, no page, from both the daemons' quorum and the rules. Then the target dies: one
critical notification for the pair of daemons and the pair of Alertmanagers, and after
the restart one resolved.
"""

from __future__ import annotations

import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from tests.faultproxy import FaultProxy
from tests.helpers import scrape, wait_for
from tests.servers import DaemonProcess, Proc, StandinProcess, free_port, start_proc
from tests.standin.webhook import WebhookServer, serve_in_thread
from tests.test_alert_e2e import ALERTMANAGER, PROMETHEUS, RULES, shortened_rules, wait_until

# Every test here starts daemons, a stand-in, Prometheus and two Alertmanagers.
pytestmark = [pytest.mark.timeout(150), pytest.mark.integration]

PROBE = "asgard_api"
FAILING = "SyntheticProbeFailing"
ONE_LOCATION = "SyntheticProbeFailingFromOneLocation"


def notifications(hook: WebhookServer, alertname: str, status: str) -> list[dict[str, Any]]:
    """Webhook messages (one per notification) holding an `alertname` alert in `status`."""
    out = []
    for entry in hook.snapshot():
        body = entry["body"]
        if isinstance(body, dict) and any(
            a.get("status") == status and a.get("labels", {}).get("alertname") == alertname
            for a in body.get("alerts") or []
        ):
            out.append(body)
    return out


def runs_of(daemon: DaemonProcess) -> float:
    """Runs the daemon finished so far (its own counter)."""
    return scrape(daemon.url).sum("synthetic_probe_runs_total", probe=PROBE)


def after_runs(daemons: list[DaemonProcess], count: int, context: Any) -> None:
    """Until each daemon finished `count` more runs: a window measured in the daemons' own
    events (at 1 s intervals, `count` s on an idle machine, longer on a loaded one)."""
    before = [runs_of(d) for d in daemons]
    wait_for(
        lambda: all(runs_of(d) - b >= count for d, b in zip(daemons, before)),
        timeout=count * 15,
        interval=0.2,
        what=f"{count} more runs of every daemon",
        context=context,
    )


def prometheus_alerts(url: str, alertname: str) -> list[dict[str, str]]:
    data = httpx.get(
        f"{url}/api/v1/query", params={"query": f'ALERTS{{alertname="{alertname}",alertstate="firing"}}'}, timeout=5
    ).json()
    return [r["metric"] for r in data["data"]["result"]]


def first_seen(checks: dict[str, Any], since: float, timeout: float, context: Any) -> dict[str, tuple[float, Any]]:
    """Poll every check together: seconds from `since` to its first truthy value, and the value."""
    found: dict[str, tuple[float, Any]] = {}
    deadline = time.monotonic() + timeout
    while len(found) < len(checks):
        for name, check in checks.items():
            if name not in found and (value := check()):
                found[name] = (time.monotonic() - since, value)
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {sorted(set(checks) - set(found))}\n{context()}")
        time.sleep(0.1)
    return found


@pytest.fixture
def fleet(tmp_path: Path) -> Iterator[dict[str, Any]]:
    if not (ALERTMANAGER and PROMETHEUS):
        pytest.skip(
            "prometheus / prometheus-alertmanager not installed (apt-get install prometheus prometheus-alertmanager)"
        )
    procs: list[Proc] = []
    daemons: list[DaemonProcess] = []
    hook = serve_in_thread()
    standin = StandinProcess(tmp_path).start()
    proxy = FaultProxy(standin.url).start()
    try:
        # Two Alertmanagers, one cluster over loopback; group_wait long enough for both
        # locations' alerts to land in one notification.
        (tmp_path / "am.yml").write_text(
            yaml.safe_dump(
                {
                    "route": {
                        "receiver": "hook",
                        "group_by": ["alertname", "target", "probe"],
                        "group_wait": "4s",
                        "group_interval": "4s",
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
                        "--cluster.peer-timeout=2s",
                        "--cluster.gossip-interval=100ms",
                        "--cluster.pushpull-interval=2s",
                    ],
                    tmp_path,
                    f"http://127.0.0.1:{web[i]}/-/ready",
                )
            )
        # Peers must know each other's address before either starts: the one case for fixed ports.
        daemons = [DaemonProcess(tmp_path / f"{name}.yaml", tmp_path, port=free_port()) for name in ("alpha", "beta")]
        for name, daemon, url, other in (
            ("alpha", daemons[0], proxy.url, daemons[1]),
            ("beta", daemons[1], standin.url, daemons[0]),
        ):
            daemon.config_path.write_text(
                yaml.safe_dump(
                    {
                        "location": name,
                        "targets": [{"name": "asgard", "kind": "asgard", "url": url}],
                        "probes": [
                            {
                                "name": PROBE,
                                "target": "asgard",
                                "scenario": "asgard",
                                "interval": "1s",
                                "timeout": "800ms",
                            }
                        ],
                        "peers": {"urls": [other.url], "timeout": "500ms"},
                        "alerting": {
                            "failure_threshold": 1,
                            "success_threshold": 1,
                            "startup_grace": "0s",
                            "resend_interval": "2s",
                            "retry_backoff": "200ms",
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
        prom_port = free_port()
        shortened_rules(RULES, tmp_path / "rules.yml")
        (tmp_path / "prometheus.yml").write_text(
            yaml.safe_dump(
                {
                    "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
                    "rule_files": [str(tmp_path / "rules.yml")],
                    "scrape_configs": [
                        {
                            "job_name": "synthetic-monitor",
                            "static_configs": [
                                {"targets": [f"127.0.0.1:{d.port}"], "labels": {"location": name}}
                                for name, d in zip(("alpha", "beta"), daemons)
                            ],
                        }
                    ],
                }
            )
        )
        procs.append(
            start_proc(
                "prometheus",
                [
                    PROMETHEUS,
                    f"--config.file={tmp_path / 'prometheus.yml'}",
                    f"--storage.tsdb.path={tmp_path / 'tsdb'}",
                    f"--web.listen-address=127.0.0.1:{prom_port}",
                ],
                tmp_path,
                f"http://127.0.0.1:{prom_port}/-/ready",
            )
        )
        yield {
            "hook": hook,
            "standin": standin,
            "proxy": proxy,
            "daemons": daemons,
            "procs": procs,
            "prometheus": f"http://127.0.0.1:{prom_port}",
        }
    finally:
        for daemon in daemons:
            if daemon.proc is not None and daemon.proc.poll() is None:
                daemon.stop()
        for proc in procs:
            proc.stop()
        proxy.stop()
        standin.kill()
        hook.stop()


def test_one_broken_path_warns_both_broken_page_once_and_resolve_once_despite_losses(fleet: dict[str, Any]) -> None:
    hook, standin, proxy = fleet["hook"], fleet["standin"], fleet["proxy"]
    daemons, prom = fleet["daemons"], fleet["prometheus"]

    def context() -> str:
        return "\n".join(
            [f"hook: {[e['body'] for e in hook.snapshot()][-4:]}"]
            + [d.log_text()[-2000:] for d in daemons]
            + [p.tail(800) for p in fleet["procs"]]
        )

    def passing(daemon: DaemonProcess) -> bool:
        last = httpx.get(f"{daemon.url}/status", timeout=3).json()["probes"][0]["last"]
        return bool(last and last["ok"])

    wait_until(lambda: all(passing(d) for d in daemons), 30, "both locations passing", context)
    wait_until(
        lambda: (
            len(httpx.get(f"{prom}/api/v1/targets", timeout=3).json()["data"]["activeTargets"]) == 2
            and all(
                t["health"] == "up"
                for t in httpx.get(f"{prom}/api/v1/targets", timeout=3).json()["data"]["activeTargets"]
            )
        ),
        20,
        "Prometheus scraping both daemons",
        context,
    )

    # 1. Only alpha's path breaks: a warning naming alpha, never a page.
    broken = time.monotonic()
    proxy.refuse()
    seen = first_seen(
        {
            "push": lambda: notifications(hook, ONE_LOCATION, "firing"),
            "rule": lambda: prometheus_alerts(prom, ONE_LOCATION),
        },
        broken,
        30,
        context,
    )
    warned_after, rule_warned_after = seen["push"][0], seen["rule"][0]
    warning, rule = seen["push"][1], seen["rule"][1]
    alert = next(a for a in warning[0]["alerts"] if a["labels"]["alertname"] == ONE_LOCATION)
    assert alert["labels"]["location"] == "alpha" and alert["labels"]["severity"] == "warning"
    assert "passing from: beta" in alert["annotations"]["description"]
    assert [r["location"] for r in rule] == ["alpha"]
    after_runs(daemons, 4, context)  # four more failed runs at alpha: each would have paged by now
    assert not notifications(hook, FAILING, "firing"), context()
    assert not prometheus_alerts(prom, FAILING), context()

    # 2. The target dies: both locations agree -> one critical notification.
    killed = time.monotonic()
    standin.kill()
    seen = first_seen(
        {"push": lambda: notifications(hook, FAILING, "firing"), "rule": lambda: prometheus_alerts(prom, FAILING)},
        killed,
        30,
        context,
    )
    paged_after, ruled_after = seen["push"][0], seen["rule"][0]
    # Six more runs of each daemon (each re-sends the page): longer than group_interval (4 s),
    # so a duplicate (second daemon, second Alertmanager) would show.
    after_runs(daemons, 6, context)
    pages = notifications(hook, FAILING, "firing")
    assert len(pages) == 1, context()
    locations = sorted(a["labels"]["location"] for a in pages[0]["alerts"] if a["labels"]["alertname"] == FAILING)
    assert locations == ["alpha", "beta"], pages  # both locations' copies in the one notification
    described = next(a for a in pages[0]["alerts"] if a["labels"]["alertname"] == FAILING)["annotations"]["description"]
    assert "Failing from location(s): alpha, beta" in described

    # 3. Mid-outage, one daemon and one Alertmanager die (SIGKILL); then the target comes
    # back. Alpha resolves its copy; beta's copy expires at its endsAt; the surviving
    # Alertmanager knows from the gossiped notification log that the page went out
    # (whichever member sent it) and sends the one resolved notification.
    daemons[1].stop(signal.SIGKILL)
    am_b = fleet["procs"][1]
    am_b.kill()
    standin.start()
    proxy.accept()
    wait_until(
        lambda: [m for m in notifications(hook, FAILING, "resolved") if m.get("status") == "resolved"],
        40,
        "the resolved notification",
        context,
    )
    after_runs(daemons[:1], 6, context)  # as above: a second resolved would show
    resolved = [m for m in notifications(hook, FAILING, "resolved") if m.get("status") == "resolved"]
    assert len(resolved) == 1, context()
    # The two locations may resolve on either side of a group_interval tick: a message
    # with one copy resolved and one still firing is an update, not a second page.
    pages = [
        m for m in notifications(hook, FAILING, "firing") if not any(a.get("status") == "resolved" for a in m["alerts"])
    ]
    assert len(pages) == 1, context()
    print(
        f"\ntime to page (interval 1 s, threshold 1, group_wait 4 s; rules: scrape/eval 1 s, `for` 1 s):"
        f" daemon push via the Alertmanager pair: warning {warned_after:.1f} s, critical {paged_after:.1f} s;"
        f" rules (ALERTS firing in Prometheus): warning {rule_warned_after:.1f} s, critical {ruled_after:.1f} s"
    )
