"""Secrets stay secret, the metrics endpoint speaks TLS, and the probe works with least privilege.

1. Canary secrets. Distinct canary passwords and tokens are set through every supported
   way (config value, `*_file`, the MLflow/Asgard environment variables, URL userinfo, a
   secret header, alert receiver credentials) against endpoints that reject them (our fault
   proxy answering 401, MLflow's text). Daemons run at log level debug, fail, fire alerts at
   receivers that reject them, hit an internal error (traceback), and get a bad reload; then
   no canary may appear in the log, /status, /metrics, /healthz, the reload answer,
   `config show`, `config validate` errors, or `check` output.
2. TLS for /metrics: `tls: {cert_file, key_file}` with a self-signed certificate.
3. MLflow's basic-auth app (`mlflow server --app-name basic-auth`, needs `mlflow[auth]`):
   a dedicated probe user with one grant on the probe experiment passes both probes, a
   wrong password is a clear 401 failure that does not leak it.
"""

from __future__ import annotations

import base64
import json
import os
import secrets
import signal
import socket
import ssl
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from tests.faultproxy import FaultProxy, make_self_signed
from tests.helpers import read_port_file
from tests.helpers import wait_for as poll
from tests.servers import REPO, DaemonProcess, MlflowServer, free_port, mlflow_executable, wait_http
from tests.test_daemon import wait_for

# Every test here starts MLflow (basic auth) or daemon subprocesses; the canary fixture starts
# four daemons at once, which takes minutes on a loaded machine (a ceiling, not an expectation).
pytestmark = [pytest.mark.timeout(300), pytest.mark.integration]

RUN = secrets.token_hex(4)


def canary(name: str) -> str:
    return f"CANARY-{name}-{RUN}"


C = {
    name: canary(name)
    for name in (
        "pw_inline",
        "pw_file",
        "token_inline",
        "token_file",
        "url_password",
        "header",
        "internal_pw",
        "receiver_pw",
        "receiver_url_pw",
        "asgard_env_token",
        "mlflow_env_pw",
        "mlflow_env_token",
        "asgard_env_pw",
        "reload_pw",
        "echo_pw",
        "echo_token",
        "echo_header",
    )
}
USER = "probe"


def basic(user: str, password: str) -> str:
    return base64.b64encode(f"{user}:{password}".encode()).decode()


def forbidden(names: list[str] | None = None) -> dict[str, str]:
    """Every canary, and the base64 a basic-auth header would carry for it."""
    out: dict[str, str] = {}
    for name, value in C.items():
        if names is not None and name not in names:
            continue
        out[name] = value
        for user in (USER, "alert", "am"):
            out[f"{name} (basic {user})"] = basic(user, value)
    return out


def assert_clean(text: str, where: str, names: list[str] | None = None) -> None:
    leaked = [name for name, value in forbidden(names).items() if value in text]
    assert not leaked, f"{where} leaks {leaked}"


def cli(*args: str, env: dict[str, str] | None = None, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "monitor", *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=timeout,
        env=dict(os.environ, PYTHONUNBUFFERED="1", **(env or {})),
    )


# Blank the credential variables a developer's shell might hold, so each daemon sees only ours.
NO_ENV_CREDS = {
    k: ""
    for k in (
        "MLFLOW_TRACKING_USERNAME",
        "MLFLOW_TRACKING_PASSWORD",
        "MLFLOW_TRACKING_TOKEN",
        "ASGARD_USERNAME",
        "ASGARD_PASSWORD",
        "ASGARD_TOKEN",
    )
}


# --------------------------------------------------------------------------- canary daemons


@dataclass
class Captured:
    """Everything one canary daemon showed to the outside."""

    name: str
    config_path: Path
    env: dict[str, str]
    surfaces: dict[str, str] = field(default_factory=dict)
    status: dict[str, Any] = field(default_factory=dict)
    log: str = ""
    results: dict[str, subprocess.CompletedProcess[str]] = field(default_factory=dict)


def probe(name: str, target: str, scenario: str = "mlflow_read", **extra: Any) -> dict[str, Any]:
    # A run, its cleanup included (runs_delete: up to the deadline again), must fit in 90% of
    # the interval. The write probe's real write through a proxy needs a roomy deadline: beside
    # three other test workers, 1.8s timed out once in CI and the run never reached the wrong
    # type it is here to meet. So it runs every 9s with a 4s deadline.
    if scenario == "mlflow_write":
        return {"name": name, "target": target, "scenario": scenario, "interval": "9s", "timeout": "4s", **extra}
    return {"name": name, "target": target, "scenario": scenario, "interval": "1s", "timeout": "900ms", **extra}


def _run_daemon(captured: Captured, workdir: Path, bad_reload: str | None) -> Captured:
    daemon = DaemonProcess(captured.config_path, workdir, env=captured.env).start()
    try:

        def every_probe_failed_twice() -> bool:
            status = httpx.get(f"{daemon.url}/status", timeout=5).json()
            return all(p["runs"] >= 2 for p in status["probes"])

        wait_for(every_probe_failed_twice, 40, f"{captured.name}: every probe ran twice")
        time.sleep(1.0)  # let alert notifications reach their (rejecting) receivers
        status = httpx.get(f"{daemon.url}/status", timeout=5)
        captured.status = status.json()
        captured.surfaces["/status"] = status.text
        captured.surfaces["/metrics"] = httpx.get(f"{daemon.url}/metrics", timeout=5).text
        captured.surfaces["/healthz"] = httpx.get(f"{daemon.url}/healthz", timeout=5).text
        captured.surfaces["/readyz"] = httpx.get(f"{daemon.url}/readyz", timeout=5).text
        if bad_reload is not None:
            good = captured.config_path.read_text()
            captured.config_path.write_text(bad_reload)
            answer = httpx.post(f"{daemon.url}/-/reload", timeout=10)
            assert answer.status_code == 500
            captured.surfaces["POST /-/reload (bad config)"] = answer.text
            daemon.proc.send_signal(signal.SIGHUP)
            time.sleep(0.5)
            captured.config_path.write_text(good)
    finally:
        code = daemon.stop()
    captured.log = daemon.log_text()
    captured.surfaces["log (stdout+stderr, debug)"] = captured.log
    assert code == 0
    return captured


@pytest.fixture(scope="module")
def canaries(tmp_path_factory: pytest.TempPathFactory, mlflow_server: MlflowServer) -> Iterator[dict[str, Captured]]:
    """Four daemons at once (config ways, two env mixes, an echoing server), then the CLI."""
    workdir = tmp_path_factory.mktemp("canaries")
    reject = FaultProxy(mlflow_server.url).start()
    reject.set_fault("status", status=401)  # MLflow's own 401 text, everywhere
    echo = FaultProxy(mlflow_server.url).start()
    echo.set_fault("status", status=401, echo=True)  # an API that quotes the credentials it rejects
    internal = FaultProxy(mlflow_server.url).start()
    # Real MLflow behind it, except that runs/get answers a wrong type: an internal error.
    internal.set_fault("rewrite", path="/runs/get", edits=[{"at": "run.data.metrics", "set": 5}])
    proxies = [reject, echo, internal]
    secrets_dir = workdir / "secrets"
    secrets_dir.mkdir()
    pw_file, token_file = secrets_dir / "password", secrets_dir / "token"
    pw_file.write_text(C["pw_file"] + "\n")
    token_file.write_text(C["token_file"] + "\n")
    port = reject.port

    config_ways = {
        "log": {"level": "debug", "format": "json"},
        "targets": [
            {
                "name": "pw_inline",
                "kind": "mlflow",
                "url": reject.url,
                "auth": {"username": USER, "password": C["pw_inline"]},
                "headers": {"X-Api-Key": C["header"]},
            },
            {
                "name": "pw_file",
                "kind": "mlflow",
                "url": reject.url,
                "auth": {"username": USER, "password_file": str(pw_file)},
            },
            {"name": "token_inline", "kind": "mlflow", "url": reject.url, "auth": {"token": C["token_inline"]}},
            {"name": "token_file", "kind": "mlflow", "url": reject.url, "auth": {"token_file": str(token_file)}},
            {"name": "url_userinfo", "kind": "mlflow", "url": f"http://{USER}:{C['url_password']}@127.0.0.1:{port}"},
            {
                "name": "internal",
                "kind": "mlflow",
                "url": internal.url,
                "auth": {"username": USER, "password": C["internal_pw"]},
            },
            {"name": "asgard", "kind": "asgard", "url": reject.url},
        ],
        "probes": [
            probe("pw_inline_read", "pw_inline"),
            probe("pw_inline_write", "pw_inline", "mlflow_write"),
            probe("pw_file_read", "pw_file"),
            probe("token_inline_read", "token_inline"),
            probe("token_file_read", "token_file"),
            probe("url_userinfo_read", "url_userinfo"),
            probe("internal_write", "internal", "mlflow_write", options={"experiment_name": "canary"}),
            probe("asgard_api", "asgard", "asgard"),
        ],
        "alerting": {
            "startup_grace": 0,
            "failure_threshold": 1,
            "retry_backoff": "100ms",
            "retry_attempts": 2,
            "receivers": [
                {
                    "kind": "webhook",
                    "name": "hook",
                    "url": f"{reject.url}/hook",
                    "auth": {"username": "alert", "password": C["receiver_pw"]},
                },
                {"kind": "alertmanager", "name": "am", "url": f"http://am:{C['receiver_url_pw']}@127.0.0.1:{port}"},
            ],
        },
    }
    env_targets = {
        "log": {"level": "debug", "format": "json"},
        "targets": [
            {"name": "mlflow", "kind": "mlflow", "url": reject.url},
            {"name": "asgard", "kind": "asgard", "url": reject.url},
        ],
        "probes": [
            probe("mlflow_read", "mlflow"),
            probe("mlflow_write", "mlflow", "mlflow_write"),
            probe("asgard_api", "asgard", "asgard"),
        ],
    }
    echo_doc = {
        "log": {"level": "debug", "format": "json"},
        "targets": [
            {
                "name": "echo_pw",
                "kind": "mlflow",
                "url": echo.url,
                "auth": {"username": USER, "password": C["echo_pw"]},
                "headers": {"X-Api-Key": C["echo_header"]},
            },
            {"name": "echo_token", "kind": "mlflow", "url": echo.url, "auth": {"token": C["echo_token"]}},
        ],
        "probes": [probe("echo_pw_read", "echo_pw"), probe("echo_token_read", "echo_token")],
    }
    daemons = {
        "config": Captured("config", workdir / "config.yaml", dict(NO_ENV_CREDS, ASGARD_TOKEN=C["asgard_env_token"])),
        "env_basic": Captured(
            "env_basic",
            workdir / "env_basic.yaml",
            dict(
                NO_ENV_CREDS,
                MLFLOW_TRACKING_USERNAME=USER,
                MLFLOW_TRACKING_PASSWORD=C["mlflow_env_pw"],
                ASGARD_TOKEN=C["asgard_env_token"],
            ),
        ),
        "env_token": Captured(
            "env_token",
            workdir / "env_token.yaml",
            dict(
                NO_ENV_CREDS,
                MLFLOW_TRACKING_TOKEN=C["mlflow_env_token"],
                ASGARD_USERNAME=USER,
                ASGARD_PASSWORD=C["asgard_env_pw"],
            ),
        ),
        "echo": Captured("echo", workdir / "echo.yaml", dict(NO_ENV_CREDS)),
    }
    docs = {"config": config_ways, "env_basic": env_targets, "env_token": env_targets, "echo": echo_doc}
    cli_config: dict[str, str] = {}
    for name, captured in daemons.items():
        captured.config_path.write_text(yaml.safe_dump(docs[name]))
        copy = workdir / f"{name}-cli.yaml"  # the daemon's own file gets a bad reload meanwhile
        copy.write_text(yaml.safe_dump(docs[name]))
        cli_config[name] = str(copy)
    # A bad reload that carries a canary where a parser might quote it.
    bad = json.loads(json.dumps(config_ways))
    bad["targets"][0]["url"] = f"http://{USER}:{C['reload_pw']}@127.0.0.1:99999"
    bad_reload = yaml.safe_dump(bad)
    # Malformed configs holding a canary: `config validate` must name the field, not quote the secret.
    invalid = {
        "url with bad port": {
            **config_ways,
            "targets": [{"name": "x", "kind": "mlflow", "url": f"http://{USER}:{C['reload_pw']}@127.0.0.1:99999"}],
        },
        "password without username": {
            **config_ways,
            "targets": [{"name": "x", "kind": "mlflow", "url": reject.url, "auth": {"password": C["reload_pw"]}}],
        },
        "password of the wrong type": {
            **config_ways,
            "targets": [
                {
                    "name": "x",
                    "kind": "mlflow",
                    "url": reject.url,
                    "auth": {"username": USER, "password": [C["reload_pw"]]},
                }
            ],
        },
        "token and username": {
            **config_ways,
            "targets": [
                {"name": "x", "kind": "mlflow", "url": reject.url, "auth": {"username": USER, "token": C["reload_pw"]}}
            ],
        },
        "unknown key beside a password": {
            **config_ways,
            "targets": [
                {
                    "name": "x",
                    "kind": "mlflow",
                    "url": reject.url,
                    "auth": {"username": USER, "password": C["reload_pw"], "pasword": C["reload_pw"]},
                }
            ],
        },
    }
    invalid_files = {}
    for index, (label, doc) in enumerate(invalid.items()):
        invalid_files[label] = workdir / f"invalid-{index}.yaml"
        invalid_files[label].write_text(yaml.safe_dump(doc))
    try:
        with ThreadPoolExecutor(8) as pool:
            runs = {
                name: pool.submit(_run_daemon, captured, workdir, bad_reload if name == "config" else None)
                for name, captured in daemons.items()
            }
            cli_runs = {
                f"config show ({name})": pool.submit(cli, "config", "show", cli_config[name], env=d.env)
                for name, d in daemons.items()
            }
            cli_runs["config show --format json (config)"] = pool.submit(
                cli, "config", "show", "--format", "json", cli_config["config"], env=daemons["config"].env
            )
            cli_runs["check --format json (config)"] = pool.submit(
                cli, "check", "--config", cli_config["config"], "--format", "json", env=daemons["config"].env
            )
            cli_runs["check --format table (env_token)"] = pool.submit(
                cli, "check", "--config", cli_config["env_token"], env=daemons["env_token"].env
            )
            cli_runs["check --format markdown (env_basic)"] = pool.submit(
                cli, "check", "--config", cli_config["env_basic"], "--format", "markdown", env=daemons["env_basic"].env
            )
            cli_runs["check --format json (echo)"] = pool.submit(
                cli, "check", "--config", cli_config["echo"], "--format", "json", env=daemons["echo"].env
            )
            for label, path in invalid_files.items():
                cli_runs[f"config validate ({label})"] = pool.submit(
                    cli, "config", "validate", str(path), env=NO_ENV_CREDS
                )
            captured = {name: future.result() for name, future in runs.items()}
            cli_out = {name: future.result() for name, future in cli_runs.items()}
        result_surfaces = {name: f"exit {r.returncode}\n{r.stdout}\n{r.stderr}" for name, r in cli_out.items()}
        captured["cli"] = Captured("cli", workdir, {}, surfaces=result_surfaces, results=cli_out)
        captured["proxies"] = Captured(
            "proxies",
            workdir,
            {},
            status={
                "reject": set(reject.authorizations),
                "echo": set(echo.authorizations),
                "internal": set(internal.authorizations),
            },
        )
        yield captured
    finally:
        for proxy in proxies:
            proxy.stop()


def _surfaces(captured: dict[str, Captured], names: tuple[str, ...]) -> list[tuple[str, str]]:
    return [(f"{c.name}: {where}", text) for n in names for c in [captured[n]] for where, text in c.surfaces.items()]


def test_every_canary_was_really_sent(canaries: dict[str, Captured]) -> None:
    """Not vacuous: each way of setting a secret put it on the wire (and the servers rejected it)."""
    seen = canaries["proxies"].status["reject"]
    expected = {
        "pw_inline": f"Basic {basic(USER, C['pw_inline'])}",
        "pw_file": f"Basic {basic(USER, C['pw_file'])}",
        "token_inline": f"Bearer {C['token_inline']}",
        "token_file": f"Bearer {C['token_file']}",
        "url_password": f"Basic {basic(USER, C['url_password'])}",
        "asgard_env_token": f"Bearer {C['asgard_env_token']}",
        "mlflow_env_pw": f"Basic {basic(USER, C['mlflow_env_pw'])}",
        "mlflow_env_token": f"Bearer {C['mlflow_env_token']}",
        "asgard_env_pw": f"Basic {basic(USER, C['asgard_env_pw'])}",
        "receiver_pw": f"Basic {basic('alert', C['receiver_pw'])}",
        "receiver_url_pw": f"Basic {basic('am', C['receiver_url_pw'])}",
    }
    missing = [name for name, header in expected.items() if header not in seen]
    assert not missing, f"never sent: {missing}"
    assert f"Basic {basic(USER, C['internal_pw'])}" in canaries["proxies"].status["internal"]


def test_the_failures_happened(canaries: dict[str, Captured]) -> None:
    """The daemons failed the ways the leak checks rely on: 401s, bad answers, a bad reload."""
    status = canaries["config"].status
    by_name = {p["name"]: p["last"] for p in status["probes"]}
    assert by_name["pw_inline_read"]["reason"] == "http_error"
    assert "check the target's credentials" in by_name["pw_inline_read"]["error"]
    assert by_name["internal_write"]["reason"] == "invalid_response"  # a wrong type, with its password sent
    log = canaries["config"].log
    events = [json.loads(line) for line in log.splitlines() if line.startswith("{")]
    assert any(e.get("event") == "config_reload_failed" for e in events)
    assert any(e.get("event") == "alert_notification_failed" and "401" in e.get("error", "") for e in events)
    reload_answer = canaries["config"].surfaces["POST /-/reload (bad config)"]
    assert "invalid port" in reload_answer and "***" in reload_answer
    results = canaries["cli"].results
    assert results["check --format json (config)"].returncode == 1
    for name, result in results.items():
        if name.startswith("config validate"):
            assert result.returncode == 2, (name, result.stderr)
            assert "Traceback" not in result.stderr
            assert len(result.stderr.strip().splitlines()) == 1, result.stderr


SURFACE_GROUPS = {
    "config_ways_daemon": ("config",),
    "env_basic_daemon": ("env_basic",),
    "env_token_daemon": ("env_token",),
    "cli": ("cli",),
}


@pytest.mark.parametrize("group", list(SURFACE_GROUPS))
def test_no_canary_anywhere(canaries: dict[str, Captured], group: str) -> None:
    surfaces = _surfaces(canaries, SURFACE_GROUPS[group])
    assert surfaces
    # `check` against the echoing server is checked apart (see the two echo tests below).
    checked = [(where, text) for where, text in surfaces if not where.startswith("cli: check --format json (echo)")]
    for where, text in checked:
        assert_clean(text, where)


def test_echoed_credentials_are_scrubbed_from_the_log(canaries: dict[str, Captured]) -> None:
    """A server that quotes the rejected credentials in its error: the redactor catches them in the log."""
    echo = canaries["echo"]
    status = echo.status
    assert any("invalid credentials" in (p["last"]["error"] or "") for p in status["probes"])
    assert_clean(echo.log, "echo daemon log")


def test_echoed_credentials_never_reach_status_or_check_output(canaries: dict[str, Captured]) -> None:
    echo = canaries["echo"]
    assert_clean(echo.surfaces["/status"], "echo daemon /status")
    result = canaries["cli"].results["check --format json (echo)"]
    assert_clean(result.stdout + result.stderr, "check --format json against the echoing server")


def test_config_show_masks_every_secret(canaries: dict[str, Captured]) -> None:
    result = canaries["cli"].results["config show --format json (config)"]
    assert result.returncode == 0, result.stderr
    shown = json.loads(result.stdout)
    targets = {t["name"]: t for t in shown["targets"]}
    assert targets["pw_inline"]["auth"]["password"] == "**********"
    assert targets["pw_inline"]["headers"] == {"X-Api-Key": "**********"}
    assert targets["token_inline"]["auth"]["token"] == "**********"
    assert "***@" in targets["url_userinfo"]["url"]
    assert "***@" in shown["alerting"]["receivers"][1]["url"]
    env_show = canaries["cli"].results["config show (env_token)"]
    assert env_show.returncode == 0 and "**********" in env_show.stdout


# --------------------------------------------------------------------------- TLS for /metrics


class TLSDaemon(DaemonProcess):
    """The daemon serving its endpoints over HTTPS (DaemonProcess waits on plain HTTP)."""

    ca: Path

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.port}"

    def wait_ready(self, timeout: float = 30.0) -> None:
        self.port = read_port_file(self.port_file, timeout=timeout, proc=self.proc)

        def healthy() -> bool:
            assert self.proc is not None and self.proc.poll() is None, f"daemon exited: {self.log_text()}"
            return httpx.get(f"{self.url}/healthz", verify=trusting(self.ca), timeout=2).status_code == 200

        poll(healthy, timeout=timeout, interval=0.2, what="the TLS daemon's /healthz")


@pytest.fixture(scope="module")
def tls_daemon(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TLSDaemon]:
    from tests.standin.asgard import serve_in_thread

    workdir = tmp_path_factory.mktemp("tls-daemon")
    cert, key = make_self_signed(workdir / "tls", "metrics")
    asgard, url = serve_in_thread()
    config = workdir / "config.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "log": {"format": "json"},
                "tls": {"cert_file": str(cert), "key_file": str(key)},
                "targets": [{"name": "asgard", "kind": "asgard", "url": url}],
                "probes": [probe("asgard_api", "asgard", "asgard")],
            }
        )
    )
    daemon = TLSDaemon(config, workdir)
    daemon.ca = cert
    try:
        daemon.start()
        yield daemon
        assert daemon.stop() == 0
    finally:
        if daemon.proc is not None and daemon.proc.poll() is None:
            daemon.stop()
        asgard.stop()


def trusting(ca: Path) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=str(ca))


def test_metrics_over_tls(tls_daemon: TLSDaemon) -> None:
    ca = trusting(tls_daemon.ca)
    metrics = httpx.get(f"{tls_daemon.url}/metrics", verify=ca, timeout=5)
    assert metrics.status_code == 200 and "synthetic_monitor_build_info" in metrics.text
    assert httpx.get(f"{tls_daemon.url}/healthz", verify=ca, timeout=5).status_code == 200
    wait_for(lambda: httpx.get(f"{tls_daemon.url}/readyz", verify=ca, timeout=5).status_code == 200, 10, "ready")
    assert httpx.get(f"{tls_daemon.url}/status", verify=ca, timeout=5).json()["probes"][0]["last"]["ok"] is True
    # Untrusted without the CA, and no plain-HTTP fallback on the TLS port.
    with pytest.raises(httpx.ConnectError, match="CERTIFICATE_VERIFY_FAILED"):
        httpx.get(f"{tls_daemon.url}/metrics", timeout=5)
    with pytest.raises(httpx.HTTPError):
        httpx.get(f"http://127.0.0.1:{tls_daemon.port}/metrics", timeout=5)
    # The server survives the failed handshakes above.
    assert httpx.get(f"{tls_daemon.url}/healthz", verify=ca, timeout=5).status_code == 200


def test_a_silent_tcp_client_does_not_block_the_tls_endpoints(tls_daemon: TLSDaemon) -> None:
    silent = socket.create_connection(("127.0.0.1", tls_daemon.port), timeout=5)
    try:
        time.sleep(0.2)
        answer = httpx.get(f"{tls_daemon.url}/healthz", verify=trusting(tls_daemon.ca), timeout=3)
        assert answer.status_code == 200
    finally:
        silent.close()
    # Whatever happened, the server answers again once the silent client is gone.
    wait_for(
        lambda: httpx.get(f"{tls_daemon.url}/healthz", verify=trusting(tls_daemon.ca), timeout=3).status_code == 200,
        10,
        "healthz after the silent client left",
    )


# --------------------------------------------------------------------------- MLflow basic-auth app

ADMIN_PASSWORD = f"admin-{secrets.token_hex(8)}"  # MLflow requires 12+ characters
PROBE_EXPERIMENT = "synthetic-monitor"
AUTH_INI = """\
[mlflow]
# The probe user needs no default access: its one grant is on the probe experiment.
default_permission = NO_PERMISSIONS
database_uri = sqlite:///{db}
admin_username = admin
authorization_function = mlflow.server.auth:authenticate_request_basic_auth
# Cache verified credentials: without it every request pays a PBKDF2 hash (~0.5 s here).
auth_cache_ttl_seconds = 300
"""


@dataclass
class AuthServer:
    url: str
    proc: subprocess.Popen[bytes]
    workdir: Path
    users: dict[str, str] = field(default_factory=dict)
    experiment_id: str = ""
    other_experiment_id: str = ""
    grant_api: str = ""

    def admin(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        return httpx.request(method, f"{self.url}{path}", auth=("admin", ADMIN_PASSWORD), timeout=30, **kwargs)

    def grant(self, username: str, experiment_id: str, permission: str) -> None:
        """EDIT/MANAGE on one experiment: the MLflow 2.x route if it exists, else the 3.x grant API."""
        legacy = self.admin(
            "POST",
            "/api/2.0/mlflow/experiments/permissions/create",
            json={"experiment_id": experiment_id, "username": username, "permission": permission},
        )
        if legacy.status_code != 404:
            assert legacy.status_code == 200, legacy.text
            self.grant_api = "/api/2.0/mlflow/experiments/permissions/create"
            return
        answer = self.admin(
            "POST",
            "/api/3.0/mlflow/users/permissions/grant",
            json={
                "username": username,
                "resource_type": "experiment",
                "resource_id": experiment_id,
                "permission": permission,
            },
        )
        assert answer.status_code == 200, answer.text
        self.grant_api = "/api/3.0/mlflow/users/permissions/grant"


@pytest.fixture(scope="module", autouse=True)
def auth_mlflow_process(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AuthServer | None]:
    """Start MLflow's basic-auth app at module start: it boots (~20 s) while the canary daemons run."""
    try:
        import flask_wtf  # noqa: F401  (mlflow[auth])
    except ImportError:
        yield None
        return
    workdir = tmp_path_factory.mktemp("mlflow-auth")
    ini = workdir / "basic_auth.ini"
    ini.write_text(AUTH_INI.format(db=workdir / "auth.db"))
    port = free_port()
    env = dict(
        os.environ,
        PYTHONUNBUFFERED="1",
        MLFLOW_SERVER_ENABLE_JOB_EXECUTION="false",
        MLFLOW_AUTH_CONFIG_PATH=str(ini),
        MLFLOW_FLASK_SERVER_SECRET_KEY=secrets.token_hex(16),
        MLFLOW_AUTH_ADMIN_PASSWORD=ADMIN_PASSWORD,
    )
    log = open(workdir / "mlflow.log", "ab")
    proc = subprocess.Popen(
        [
            mlflow_executable(),
            "server",
            "--app-name",
            "basic-auth",
            "--backend-store-uri",
            f"sqlite:///{workdir / 'mlflow.db'}",
            "--artifacts-destination",
            str(workdir / "artifacts"),
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--workers",
            "1",
        ],
        cwd=workdir,
        stdout=log,
        stderr=subprocess.STDOUT,
        env=env,
        start_new_session=True,
    )
    try:
        yield AuthServer(f"http://127.0.0.1:{port}", proc, workdir)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(5)
        log.close()


@pytest.fixture(scope="module")
def auth_mlflow(auth_mlflow_process: AuthServer | None) -> AuthServer:
    """The basic-auth server with an admin-made probe experiment and two probe users."""
    if auth_mlflow_process is None:
        pytest.skip("needs mlflow[auth]: pip install 'mlflow[auth]==3.17.2'")
    server = auth_mlflow_process
    wait_http(f"{server.url}/health", timeout=90, proc=server.proc)
    for user in ("probe", "probe-edit"):
        password = f"pw-{user}-{secrets.token_hex(8)}"
        answer = server.admin("POST", "/api/2.0/mlflow/users/create", json={"username": user, "password": password})
        assert answer.status_code == 200, answer.text
        server.users[user] = password
    created = server.admin("POST", "/api/2.0/mlflow/experiments/create", json={"name": PROBE_EXPERIMENT})
    assert created.status_code == 200, created.text
    server.experiment_id = created.json()["experiment_id"]
    other = server.admin("POST", "/api/2.0/mlflow/experiments/create", json={"name": "someone-elses"})
    server.other_experiment_id = other.json()["experiment_id"]
    server.grant("probe", server.experiment_id, "MANAGE")
    server.grant("probe-edit", server.experiment_id, "EDIT")
    return server


def auth_check(
    server: AuthServer, tmp_path: Path, user: str, password: str, artifacts: bool = True
) -> tuple[subprocess.CompletedProcess[str], dict[str, Any]]:
    password_file = tmp_path / "password"
    password_file.write_text(password)
    config = tmp_path / "config.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "targets": [
                    {
                        "name": "mlflow",
                        "kind": "mlflow",
                        "url": server.url,
                        "auth": {"username": user, "password_file": str(password_file)},
                    }
                ],
                "probes": [
                    {
                        "name": "mlflow_read",
                        "target": "mlflow",
                        "scenario": "mlflow_read",
                        "interval": "30s",
                        "timeout": "20s",
                    },
                    {
                        "name": "mlflow_write",
                        "target": "mlflow",
                        "scenario": "mlflow_write",
                        "interval": "1m",
                        "timeout": "30s",
                        "options": {"experiment_name": PROBE_EXPERIMENT, "artifacts": artifacts},
                    },
                ],
            }
        )
    )
    result = cli("check", "--config", str(config), "--format", "json", env=NO_ENV_CREDS, timeout=90)
    assert result.stdout.strip(), result.stderr
    report = json.loads(result.stdout)
    return result, {p["name"]: p for p in report["probes"]}


def test_basic_auth_probe_user_with_one_grant_passes(auth_mlflow: AuthServer, tmp_path: Path) -> None:
    result, probes = auth_check(auth_mlflow, tmp_path, "probe", auth_mlflow.users["probe"])
    assert result.returncode == 0, result.stdout
    assert probes["mlflow_read"]["ok"] and probes["mlflow_write"]["ok"], probes
    steps = [s["name"] for s in probes["mlflow_write"]["steps"]]
    assert steps[-1] == "runs_delete" and "artifact_delete" in steps
    # ...and nothing beyond its experiment: the grant is the probe's whole reach.
    outside = httpx.post(
        f"{auth_mlflow.url}/api/2.0/mlflow/runs/create",
        timeout=30,
        auth=("probe", auth_mlflow.users["probe"]),
        json={"experiment_id": auth_mlflow.other_experiment_id, "start_time": 0},
    )
    assert outside.status_code == 403
    runs = (
        auth_mlflow.admin(
            "POST",
            "/api/2.0/mlflow/runs/search",
            json={"experiment_ids": [auth_mlflow.experiment_id], "max_results": 100},
        )
        .json()
        .get("runs", [])
    )
    assert runs == [], "the probe deletes its runs"


def test_basic_auth_edit_alone_cannot_clean_up(auth_mlflow: AuthServer, tmp_path: Path) -> None:
    """MLflow 3.17: EDIT can create, log, update and read runs, but deleting one needs MANAGE."""
    result, probes = auth_check(auth_mlflow, tmp_path, "probe-edit", auth_mlflow.users["probe-edit"], artifacts=False)
    assert result.returncode == 1
    assert probes["mlflow_read"]["ok"]
    write = probes["mlflow_write"]
    failed = [s for s in write["steps"] if not s["ok"]]
    assert [(s["name"], s["reason"]) for s in failed] == [("runs_delete", "http_error")], write["steps"]
    assert "HTTP 403" in failed[0]["error"]
    assert all(s["ok"] for s in write["steps"] if s["name"] != "runs_delete")


def test_basic_auth_probe_user_runs_the_registry_path(auth_mlflow: AuthServer, tmp_path: Path) -> None:
    """No default access and one experiment grant suffice: the probe user creates (and so
    manages) its own registered model, and leaves no version behind. A model someone else
    made, without a grant, is a clear 403 at the first step."""
    password_file = tmp_path / "password"
    password_file.write_text(auth_mlflow.users["probe"])

    def check(model: str) -> tuple[int, dict[str, Any]]:
        config = tmp_path / "config.yaml"
        config.write_text(
            yaml.safe_dump(
                {
                    "targets": [
                        {
                            "name": "mlflow",
                            "kind": "mlflow",
                            "url": auth_mlflow.url,
                            "auth": {"username": "probe", "password_file": str(password_file)},
                        }
                    ],
                    "probes": [
                        {
                            "name": "mlflow_registry",
                            "target": "mlflow",
                            "scenario": "mlflow_registry",
                            "interval": "1m",
                            "timeout": "30s",
                            "options": {"experiment_name": PROBE_EXPERIMENT, "model_name": model},
                        }
                    ],
                }
            )
        )
        result = cli("check", "--config", str(config), "--format", "json", env=NO_ENV_CREDS, timeout=90)
        return result.returncode, json.loads(result.stdout)["probes"][0]

    code, probe = check("auth-probe-model")
    assert code == 0, probe
    versions = auth_mlflow.admin(
        "GET",
        "/api/2.0/mlflow/model-versions/search",
        params={"filter": "name = 'auth-probe-model'", "max_results": 100},
    ).json()
    assert versions.get("model_versions", []) == []

    auth_mlflow.admin("POST", "/api/2.0/mlflow/registered-models/create", json={"name": "admin-only-model"})
    code, probe = check("admin-only-model")
    failed = next(s for s in probe["steps"] if not s["ok"])
    assert (code, failed["name"], failed["reason"]) == (1, "registered_model_get_or_create", "http_error"), probe
    assert "HTTP 403" in failed["error"]


def test_basic_auth_wrong_password_is_a_clear_401_without_the_password(auth_mlflow: AuthServer, tmp_path: Path) -> None:
    wrong = canary("wrong_password")
    result, probes = auth_check(auth_mlflow, tmp_path, "probe", wrong)
    assert result.returncode == 1
    read, write = probes["mlflow_read"], probes["mlflow_write"]
    assert read["steps"][0]["name"] == "health" and read["steps"][0]["ok"]  # /health is open
    failed = next(s for s in read["steps"] if not s["ok"])
    assert (failed["name"], failed["reason"]) == ("experiments_search", "http_error")
    assert "HTTP 401" in failed["error"] and "check the target's credentials" in failed["error"]
    failed = next(s for s in write["steps"] if not s["ok"])
    assert (failed["name"], failed["reason"]) == ("experiment_get_or_create", "http_error")
    assert "HTTP 401" in failed["error"]
    for text in (result.stdout, result.stderr):
        assert wrong not in text and basic("probe", wrong) not in text


def test_a_traceback_quoting_a_secret_is_scrubbed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """An internal error whose message and traceback carry the password: log and /status stay clean."""
    import asyncio
    import io

    import structlog

    from monitor import daemon as daemon_module
    from monitor.config import load_config
    from monitor.logsetup import configure_logging
    from monitor.scenario import registry as registry_module
    from monitor.scenario.base import Scenario, ScenarioOptions

    secret = canary("traceback")

    async def leaky(run: Any, options: Any) -> None:
        async with run.step("health"):
            raise RuntimeError(f"connecting with password {secret} failed")

    monkeypatch.setitem(
        registry_module._SCENARIOS, "leaky", Scenario("leaky", "mlflow", ("health",), ScenarioOptions, leaky)
    )
    path = tmp_path / "c.yaml"
    path.write_text(
        yaml.safe_dump(
            {
                "targets": [
                    {
                        "name": "m",
                        "kind": "mlflow",
                        "url": "http://127.0.0.1:9",
                        "auth": {"username": USER, "password": secret},
                    }
                ],
                "probes": [{"name": "leaky", "target": "m", "scenario": "leaky", "interval": "1s"}],
            }
        )
    )
    config = load_config(path)
    saved = structlog.get_config()
    buffer = io.StringIO()
    out: dict[str, Any] = {}

    async def run() -> None:
        d = daemon_module.Daemon(config, str(path), listen="127.0.0.1:0")
        task = asyncio.create_task(d.run())
        for _ in range(100):
            if d.history.last("leaky") is not None:
                break
            await asyncio.sleep(0.1)
        out["status"] = json.dumps(d.endpoints.status())
        d.request_stop()
        await asyncio.wait_for(task, 15)

    try:
        configure_logging("debug", "json", config.secret_values(), stream=buffer)
        asyncio.run(run())
    finally:
        structlog.configure(**saved)
    log = buffer.getvalue()
    internal = [json.loads(line) for line in log.splitlines() if '"probe_internal_error"' in line]
    assert internal and "RuntimeError: connecting with password *** failed" in internal[0]["traceback"]
    assert "internal_error" in out["status"] and "***" in out["status"]
    assert secret not in log
    assert secret not in out["status"]
