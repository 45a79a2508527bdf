"""Peers behind TLS and basic auth (`--web.config.file`): Prometheus' client names, faults counted.

Two real daemons serve HTTPS with basic auth. Alpha has the right CA and password for
beta and gets real votes; beta has a wrong password for alpha: every query is a 401,
counted in synthetic_monitor_peer_errors_total{reason="unauthorized"}, logged as a fault,
and named in the alert description, never a silent "unknown". A client without the CA
fails the handshake: reason "tls". A password inside a peer URL is refused at validation.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import bcrypt
import httpx
import pytest
import yaml
from prometheus_client import CollectorRegistry

from monitor.alerting.peers import PeerClient, PeerMetrics
from monitor.config import PeersConfig
from tests.faultproxy import FaultProxy, make_self_signed
from tests.helpers import free_port, read_port_file
from tests.servers import REPO
from tests.standin.asgard import serve_in_thread as serve_asgard
from tests.standin.webhook import WebhookServer, serve_in_thread
from tests.test_alert_e2e import wait_until
from tests.test_security import TLSDaemon, trusting

pytestmark = pytest.mark.timeout(120)

PASSWORD = "peer-password-7f3a"


class SecuredDaemon(TLSDaemon):
    """HTTPS with basic auth on every endpoint (readiness included)."""

    def wait_ready(self, timeout: float = 30.0) -> None:
        assert self.proc is not None
        self.port = read_port_file(self.port_file, timeout=timeout, proc=self.proc)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, f"daemon exited: {self.log_text()}"
            try:
                answer = httpx.get(f"{self.url}/healthz", verify=trusting(self.ca), auth=("peer", PASSWORD), timeout=2)
                if answer.status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        raise TimeoutError(f"the TLS daemon did not answer\n{self.log_text()[-2000:]}")


def metric(daemon: TLSDaemon, name: str, **labels: str) -> float:
    text = httpx.get(f"{daemon.url}/metrics", verify=trusting(daemon.ca), auth=("peer", PASSWORD), timeout=5).text
    total = 0.0
    for line in text.splitlines():
        if line.startswith(name + "{") and all(f'{k}="{v}"' in line for k, v in labels.items()):
            total += float(line.rsplit(" ", 1)[1])
    return total


@pytest.fixture
def secured(tmp_path: Path) -> Iterator[dict[str, Any]]:
    cert, key = make_self_signed(tmp_path / "tls", "peers")
    hashed = bcrypt.hashpw(PASSWORD.encode(), bcrypt.gensalt(rounds=4)).decode()
    web = tmp_path / "web.yml"
    web.write_text(
        yaml.safe_dump(
            {"tls_server_config": {"cert_file": str(cert), "key_file": str(key)}, "basic_auth_users": {"peer": hashed}}
        )
    )
    (tmp_path / "right").write_text(PASSWORD + "\n")
    (tmp_path / "wrong").write_text("not-the-password\n")
    hook: WebhookServer = serve_in_thread()
    # The target answers until both daemons run, then refuses: both locations fail and
    # each gate asks the other.
    asgard, asgard_url = serve_asgard()
    proxy = FaultProxy(asgard_url).start()
    daemons = [
        SecuredDaemon(tmp_path / f"{n}.yaml", tmp_path, args=("--web.config.file", str(web)), port=free_port())
        for n in ("a", "b")
    ]
    for daemon in daemons:
        daemon.ca = cert
    for name, daemon, other, secret in (
        ("alpha", daemons[0], daemons[1], "right"),
        ("beta", daemons[1], daemons[0], "wrong"),
    ):
        daemon.config_path.write_text(
            yaml.safe_dump(
                {
                    "location": name,
                    "log": {"format": "json"},
                    "targets": [{"name": "asgard", "kind": "asgard", "url": proxy.url}],
                    "probes": [
                        {
                            "name": "asgard_api",
                            "target": "asgard",
                            "scenario": "asgard",
                            "interval": "1s",
                            "timeout": "500ms",
                        }
                    ],
                    "peers": {
                        "urls": [f"https://127.0.0.1:{other.port}"],
                        "timeout": "2s",
                        "tls_config": {"ca_file": str(cert)},
                        "basic_auth": {"username": "peer", "password_file": str(tmp_path / secret)},
                    },
                    "alerting": {
                        "failure_threshold": 1,
                        "startup_grace": "0s",
                        "receivers": [{"kind": "webhook", "name": "hook", "url": f"{hook.url}/{name}"}],
                    },
                }
            )
        )

    def ran(daemon: SecuredDaemon) -> bool:
        answer = httpx.get(f"{daemon.url}/status", verify=trusting(cert), auth=("peer", PASSWORD), timeout=5)
        return all(p["last"] for p in answer.json()["probes"])

    try:
        for daemon in daemons:
            daemon.start()
        # Both ran once before the target goes: a peer with no result at all is no vote, and
        # alpha paged alone once when beta had not finished its first run (fresh-clone CI).
        wait_until(lambda: all(ran(d) for d in daemons), 30, "both daemons ran the probe once")
        proxy.refuse()
        yield {"daemons": daemons, "hook": hook, "cert": cert}
    finally:
        for daemon in daemons:
            if daemon.proc is not None and daemon.proc.poll() is None:
                daemon.stop()
        hook.stop()
        proxy.stop()
        asgard.stop()


def pages(hook: WebhookServer, path: str) -> list[dict[str, Any]]:
    return [
        a
        for e in hook.snapshot()
        if e["path"] == path
        for a in e["body"]["alerts"]
        if a["labels"]["alertname"] == "SyntheticProbeFailing" and a["status"] == "firing"
    ]


@pytest.mark.integration
def test_peers_over_tls_and_basic_auth_vote_and_a_401_is_a_counted_fault(secured: dict[str, Any]) -> None:
    alpha, beta = secured["daemons"]
    hook = secured["hook"]

    def context() -> str:
        return f"{hook.snapshot()[-4:]}\n{alpha.log_text()[-2500:]}\n{beta.log_text()[-2500:]}"

    # Alpha reads beta's verdicts over TLS with basic auth: beta's failure is a vote.
    [page] = wait_until(lambda: pages(hook, "/alpha"), 30, "alpha's page", context)
    assert "Failing from location(s): alpha, beta" in page["annotations"]["description"], page
    assert metric(alpha, "synthetic_monitor_peer_errors_total") == 0, context()
    assert metric(alpha, "synthetic_monitor_peer_response_bytes_total") > 0

    # Beta's password is wrong: a counted, logged fault, named in the page it sends alone.
    [lone] = wait_until(lambda: pages(hook, "/beta"), 30, "beta's page", context)
    description = lone["annotations"]["description"]
    assert "Failing from location(s): beta" in description and "unauthorized" in description, description
    wait_until(
        lambda: metric(beta, "synthetic_monitor_peer_errors_total", reason="unauthorized") >= 1, 10, "the 401 count"
    )
    failed = [json.loads(line) for line in beta.log_text().splitlines() if '"peer_query_failed"' in line]
    assert failed and failed[0]["reason"] == "unauthorized" and failed[0]["level"] == "error", failed
    assert PASSWORD not in alpha.log_text() + beta.log_text()

    # Without the CA the handshake fails: reason "tls", not a silent unknown.
    registry = CollectorRegistry()
    client = PeerClient(PeersConfig(urls=[alpha.url], timeout=2.0), PeerMetrics(registry))

    async def ask() -> Any:
        try:
            return await client.ask([alpha.url])
        finally:
            await client.aclose()

    [answer] = asyncio.run(ask())
    assert answer.doc is None and answer.error == "tls", answer
    assert registry.get_sample_value("synthetic_monitor_peer_errors_total", {"peer": alpha.url, "reason": "tls"}) == 1


@pytest.mark.integration
def test_a_password_in_a_peer_url_is_refused(tmp_path: Path) -> None:
    config = tmp_path / "config.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "targets": [{"name": "asgard", "kind": "asgard", "url": "http://127.0.0.1:1"}],
                "probes": [{"name": "asgard_api", "target": "asgard", "scenario": "asgard"}],
                "peers": ["http://user:hunter2@10.0.0.2:9356"],
            }
        )
    )
    run = subprocess.run(
        [sys.executable, "-m", "monitor", "config", "validate", str(config)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert run.returncode == 2, (run.stdout, run.stderr)
    lines = [line for line in (run.stderr + run.stdout).splitlines() if line.strip()]
    assert len(lines) == 1 and "peers.urls" in lines[0] and "basic_auth" in lines[0], lines
    assert "hunter2" not in run.stderr + run.stdout
