"""Issue 12, "bad input gets a clear error" and "secrets and endpoints by the exporter
conventions": each test here failed on the code before its fix.

- bad TLS files are config errors naming the field (validate exit 2; a reload keeps the
  old config and sets synthetic_monitor_config_last_reload_successful to 0);
- a target's deeply nested JSON, or a value that makes no valid URL, is invalid_response;
- the endpoints' HTTP framing: an oversized or badly framed body is refused and the
  connection closed (never parsed as a next request), with no traceback on stderr;
- facts are scrubbed; only secret header values are redacted;
- POST /-/reload only with --web.enable-lifecycle;
- `--web.config.file` (exporter-toolkit): promtool accepts the shipped example, a real
  Prometheus scrapes over TLS with basic auth, certificates are re-read on change;
- an Asgard gauge is absent, not stale, while Asgard cannot tell.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import socket
import ssl
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from prometheus_client import CollectorRegistry

from monitor.cli import main as cli_main
from monitor.config import load_config
from monitor.logsetup import Redactor
from monitor.probes.asgard.scenario import AsgardFacts, AsgardOptions
from monitor.results import ProbeResult, Reason, StepResult
from monitor.scenario.registry import SCENARIOS
from monitor.scenario.runner import run_probe
from monitor.sinks.metrics import MetricsSink, ProbeSeries
from monitor.web.server import Endpoints, MonitorHTTPServer
from monitor.web.webconfig import ServerSecurity, load_web_config
from tests.faultproxy import make_self_signed
from tests.helpers import read_port_file, wait_for
from tests.scripted import Conn, client_for, serve
from tests.servers import REPO, free_port, start_proc

pytestmark = pytest.mark.timeout(90)

PROMTOOL = shutil.which("promtool")
PROMETHEUS = shutil.which("prometheus")
EXAMPLE = REPO / "deploy" / "web-config.example.yml"
EXAMPLE_PASSWORD = "change-me"  # the example's hash is of this password (its comment says so)


def write_config(path: Path, **extra: Any) -> Path:
    doc: dict[str, Any] = {
        "targets": [{"name": "asgard", "kind": "asgard", "url": "http://127.0.0.1:9"}],
        "probes": [{"name": "api", "target": "asgard", "scenario": "asgard", "interval": "30s"}],
    }
    for key, value in extra.items():
        doc[key] = value
    path.write_text(yaml.safe_dump(doc))
    return path


def validate(path: Path, capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    code = cli_main(["config", "validate", str(path)])
    return code, capsys.readouterr().err


# --------------------------------------------------------------------------- 1. bad TLS files


def test_a_ca_file_that_is_not_a_certificate_fails_validation(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bogus = tmp_path / "ca.pem"
    bogus.write_text("this is not a certificate\n")
    path = write_config(
        tmp_path / "c.yaml",
        targets=[{"name": "asgard", "kind": "asgard", "url": "https://127.0.0.1:9", "tls": {"ca_file": str(bogus)}}],
    )
    code, err = validate(path, capsys)
    assert code == 2
    assert err.count("\n") == 1 and "targets[0].tls.ca_file" in err and "not a PEM CA certificate" in err, err


def test_serving_cert_and_key_that_do_not_load_fail_validation(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cert, key = make_self_signed(tmp_path / "a", "one")
    _, other_key = make_self_signed(tmp_path / "b", "two")
    garbage = tmp_path / "garbage.pem"
    garbage.write_text("-----BEGIN CERTIFICATE-----\nnope\n-----END CERTIFICATE-----\n")
    for tls, field in (
        ({"cert_file": str(garbage), "key_file": str(key)}, "tls.cert_file"),
        ({"cert_file": str(cert), "key_file": str(other_key)}, "tls.cert_file"),
        ({"cert_file": str(cert), "key_file": str(tmp_path / "missing.key")}, "tls.key_file"),
    ):
        code, err = validate(write_config(tmp_path / "c.yaml", tls=tls), capsys)
        assert code == 2 and err.count("\n") == 1 and field in err, (tls, err)
        assert "Traceback" not in err


def _reload_scenario(tmp_path: Path, break_config: Any) -> dict[str, Any]:
    """A daemon in this process; `break_config(path)` spoils the config, then a reload."""
    from monitor.daemon import Daemon

    path = write_config(tmp_path / "c.yaml")
    out: dict[str, Any] = {}

    async def scenario() -> None:
        daemon = Daemon(load_config(path), str(path), listen="127.0.0.1:0")
        task = asyncio.create_task(daemon.run())
        for _ in range(100):
            if daemon._server is not None and daemon.scheduler.running:
                break
            await asyncio.sleep(0.05)
        break_config(path)
        try:
            out["answer"] = await daemon.reload()
        except Exception as exc:  # the defect: it escaped
            out["answer"] = ("escaped", repr(exc))
        out["gauge"] = daemon.registry.get_sample_value("synthetic_monitor_config_last_reload_successful")
        out["probes"] = sorted(daemon.probes)
        daemon.request_stop()
        await asyncio.wait_for(task, 15)

    asyncio.run(scenario())
    return out


def test_a_reload_with_a_bad_ca_file_keeps_the_old_config(tmp_path: Path) -> None:
    bogus = tmp_path / "ca.pem"
    bogus.write_text("not a certificate")

    def spoil(path: Path) -> None:
        write_config(
            path,
            targets=[
                {"name": "asgard", "kind": "asgard", "url": "https://127.0.0.1:9", "tls": {"ca_file": str(bogus)}}
            ],
            probes=[{"name": "other", "target": "asgard", "scenario": "asgard", "interval": "30s"}],
        )

    out = _reload_scenario(tmp_path, spoil)
    ok, message = out["answer"]
    assert ok is False and "targets[0].tls.ca_file" in message
    assert out["gauge"] == 0 and out["probes"] == ["api"]


def test_a_reload_that_fails_after_validation_keeps_the_old_config(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Whatever validation cannot see (a file swapped between validation and use) must not escape."""
    from monitor import daemon as daemon_module

    def spoil(path: Path) -> None:
        write_config(path, targets=[{"name": "asgard", "kind": "asgard", "url": "http://127.0.0.1:10"}])

        def broken(target: Any) -> Any:
            raise ssl.SSLError("[X509] no certificate or crl found")

        monkeypatch.setattr(daemon_module, "make_client", broken)

    out = _reload_scenario(tmp_path, spoil)
    ok, message = out["answer"]
    assert ok is False and "does not apply" in message
    assert out["gauge"] == 0 and out["probes"] == ["api"]


# --------------------------------------------------------------------------- 2. hostile answers


def _asgard_server(status_body: bytes, models_body: bytes = b'{"models": []}') -> Any:
    async def handler(conn: Conn) -> None:
        while True:
            request = await conn.read_request()
            if request.path.endswith("/status"):
                await conn.respond(200, status_body)
            elif request.path.endswith("/models"):
                await conn.respond(200, models_body)
            else:
                await conn.respond(404, b'{"detail": "no such model"}')

    return handler


async def _asgard_result(url: str) -> ProbeResult:
    async with client_for(url) as client:
        return await run_probe(SCENARIOS["asgard"], client, AsgardOptions(), probe="api", target="asgard", timeout=5)


async def test_deeply_nested_json_is_an_invalid_response() -> None:
    nested = b"[" * 200_000 + b"]" * 200_000
    async with serve(_asgard_server(nested)) as server:
        result = await _asgard_result(server.url)
    step = result.failed_step
    assert step is not None and step.name == "status"
    assert step.reason is Reason.INVALID_RESPONSE and "nested too deeply" in (step.error or ""), step
    assert result.traceback is None


async def test_a_deeply_nested_error_body_is_still_an_http_error() -> None:
    nested = b'{"a":' * 100_000 + b"1" + b"}" * 100_000

    async def handler(conn: Conn) -> None:
        while True:
            await conn.read_request()
            await conn.respond(500, nested)

    async with serve(handler) as server:
        result = await _asgard_result(server.url)
    assert result.failed_step is not None and result.failed_step.reason is Reason.HTTP_ERROR


async def test_a_server_value_that_makes_no_valid_url_is_an_invalid_response() -> None:
    """Asgard lists a model whose name makes a URL over httpx's length limit."""
    status = json.dumps({"mlflow_available": True, "feast_available": True}).encode()
    models = json.dumps({"models": [{"name": "m" * 70_000}]}).encode()
    async with serve(_asgard_server(status, models)) as server:
        result = await _asgard_result(server.url)
    step = result.failed_step
    assert step is not None and step.name == "model_get"
    assert step.reason is Reason.INVALID_RESPONSE and "no valid URL" in (step.error or ""), step
    assert len(step.error or "") < 1000


async def test_an_mlflow_run_id_that_makes_no_valid_url_is_an_invalid_response() -> None:
    """MLflow's run id goes into the runs/get query: a 70,000-character one must not be a probe bug."""
    from monitor.probes.mlflow.write import WriteOptions

    run_id = "r" * 70_000

    async def handler(conn: Conn) -> None:
        while True:
            request = await conn.read_request()
            if "get-by-name" in request.path:
                body = {"experiment": {"experiment_id": "1", "lifecycle_stage": "active"}}
            elif request.path.endswith("/runs/create"):
                body = {"run": {"info": {"run_id": run_id, "artifact_uri": "mlflow-artifacts:/1/x/artifacts"}}}
            else:
                body = {}
            await conn.respond(200, json.dumps(body).encode())

    async with serve(handler) as server:
        async with client_for(server.url) as client:
            result = await run_probe(
                SCENARIOS["mlflow_write"], client, WriteOptions(), probe="write", target="mlflow", timeout=5
            )
    step = result.failed_step
    assert step is not None and step.name == "runs_get", result.steps
    assert step.reason is Reason.INVALID_RESPONSE and "no valid URL" in (step.error or "")
    assert [s.name for s in result.steps][-1] == "runs_delete" and result.steps[-1].ok  # cleanup still ran


# --------------------------------------------------------------------------- 3 + 6. the endpoints' HTTP


class Endpoint:
    """MonitorHTTPServer on 127.0.0.1 with stand-in answers; counts reloads."""

    def __init__(self, *, lifecycle: bool = True, security: ServerSecurity | None = None) -> None:
        self.reloads = 0
        endpoints = Endpoints(
            metrics=lambda: [b"up 1\n"],
            healthy=lambda: (True, "ok"),
            ready=lambda: (True, "ok"),
            status=lambda: {"ok": True},
            reload=self._reload,
        )
        self.server = MonitorHTTPServer(("127.0.0.1", 0), endpoints, security=security, lifecycle=lifecycle)
        self.port = self.server.server_address[1]
        self.server.start()

    def _reload(self) -> tuple[bool, str]:
        self.reloads += 1
        return True, "reloaded"

    def stop(self) -> None:
        self.server.stop()


@pytest.fixture
def endpoint() -> Iterator[Endpoint]:
    server = Endpoint()
    yield server
    server.stop()


def exchange(port: int, raw: bytes, timeout: float = 5.0) -> bytes:
    """Send raw bytes, half-close, read everything until the server closes."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        try:
            sock.sendall(raw)
            sock.shutdown(socket.SHUT_WR)
        except OSError:
            pass
        chunks = []
        try:
            while chunk := sock.recv(65536):
                chunks.append(chunk)
        except OSError:
            pass
    return b"".join(chunks)


def test_an_oversized_reload_body_is_refused_and_never_parsed_as_a_request(endpoint: Endpoint) -> None:
    smuggled = b"GET /status HTTP/1.1\r\nHost: x\r\n\r\n"
    body = b"x" * 65536 + smuggled + b"y" * 1000
    raw = b"POST /-/reload HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n" % len(body) + body
    answer = exchange(endpoint.port, raw)
    assert answer.startswith(b"HTTP/1.1 413"), answer[:200]
    assert answer.count(b"HTTP/1.1 ") == 1, answer  # the tail was not answered as a request
    assert endpoint.reloads == 0


def test_a_body_within_the_limit_is_read_whole_and_the_connection_stays_in_step(endpoint: Endpoint) -> None:
    body = b"z" * 70_000
    first = b"GET /healthz HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n" % len(body) + body
    # 70,000 > 64 KiB: refused. A 60,000-byte body is read whole; the next request follows it.
    assert exchange(endpoint.port, first).startswith(b"HTTP/1.1 413")
    body = b"z" * 60_000
    raw = (
        b"POST /-/reload HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n" % len(body)
        + body
        + b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    answer = exchange(endpoint.port, raw)
    assert answer.count(b"HTTP/1.1 200") == 2 and endpoint.reloads == 1, answer


@pytest.mark.parametrize(
    "header",
    [
        b"Content-Length: abc",
        b"Content-Length: -5",
        b"Content-Length: 1\r\nContent-Length: 2",
        b"Transfer-Encoding: chunked",
    ],
)
def test_bad_framing_is_a_clean_4xx_without_a_traceback(
    endpoint: Endpoint, header: bytes, capfd: pytest.CaptureFixture[str]
) -> None:
    raw = b"POST /-/reload HTTP/1.1\r\nHost: x\r\n" + header + b"\r\n\r\n5\r\nhello\r\n0\r\n\r\n"
    answer = exchange(endpoint.port, raw)
    assert answer.startswith((b"HTTP/1.1 400", b"HTTP/1.1 411")), answer[:200]
    assert answer.count(b"HTTP/1.1 ") == 1 and endpoint.reloads == 0
    time.sleep(0.2)  # let the handler thread finish whatever it would print
    captured = capfd.readouterr()
    assert "Traceback" not in captured.err and "Traceback" not in captured.out


def test_reload_over_http_needs_the_lifecycle_flag() -> None:
    closed = Endpoint(lifecycle=False)
    try:
        answer = httpx.post(f"http://127.0.0.1:{closed.port}/-/reload", timeout=5)
        assert answer.status_code == 403 and "Lifecycle API is not enabled" in answer.text
        assert httpx.put(f"http://127.0.0.1:{closed.port}/-/reload", timeout=5).status_code == 403
        assert closed.reloads == 0
        assert httpx.get(f"http://127.0.0.1:{closed.port}/metrics", timeout=5).status_code == 200
    finally:
        closed.stop()
    opened = Endpoint(lifecycle=True)
    try:
        assert httpx.post(f"http://127.0.0.1:{opened.port}/-/reload", timeout=5).status_code == 200
        assert opened.reloads == 1
    finally:
        opened.stop()


def test_run_accepts_the_exporter_flags() -> None:
    from monitor.cli import build_parser

    args = build_parser().parse_args(["run", "--web.enable-lifecycle", "--web.config.file", "w.yml"])
    assert args.web_enable_lifecycle is True and args.web_config_file == "w.yml"
    assert build_parser().parse_args(["run"]).web_enable_lifecycle is False


# --------------------------------------------------------------------------- 4 + 5. redaction


def test_facts_are_scrubbed_and_lose_url_userinfo() -> None:
    secret = "s3cr3t-facts-canary"
    result = ProbeResult(
        probe="api",
        target="asgard",
        scenario="asgard",
        started_at=0.0,
        duration_seconds=0.1,
        steps=(StepResult("status", True, 0.1),),
        timeout_seconds=1.0,
        facts=AsgardFacts(
            mlflow_tracking_uri="http://probe:hunter22@mlflow:5000",
            inventory={f"token {secret}": 1},
            crosscheck=f"note: token {secret}",
            dependencies={"mlflow": True},
            models_listed=3,
        ),
    )
    clean = result.redacted(Redactor([secret]).scrub)
    text = json.dumps(clean.as_dict())
    assert secret not in text and "hunter22" not in text
    assert isinstance(clean.facts, AsgardFacts)
    assert clean.facts.dependencies == {"mlflow": True} and clean.facts.models_listed == 3


async def test_asgard_keeps_its_tracking_uri_without_credentials() -> None:
    status = json.dumps(
        {
            "mlflow_available": True,
            "feast_available": True,
            "mlflow_tracking_uri": "http://probe:hunter22@mlflow.internal:5000",
        }
    ).encode()
    async with serve(_asgard_server(status)) as server:
        result = await _asgard_result(server.url)
    assert result.facts.mlflow_tracking_uri == "http://mlflow.internal:5000"


def test_only_secret_header_values_are_redacted(tmp_path: Path) -> None:
    path = write_config(
        tmp_path / "c.yaml",
        targets=[
            {
                "name": "asgard",
                "kind": "asgard",
                "url": "http://127.0.0.1:9",
                "headers": {
                    "X-Env": "prod",
                    "X-Team": "mlops-platform",
                    "X-Api-Key": "key-canary-123",
                    "Authorization": "Bearer tok-canary-456",
                },
            }
        ],
    )
    config = load_config(path)
    secrets = config.secret_values()
    assert {"key-canary-123", "Bearer tok-canary-456", "tok-canary-456"} <= secrets
    assert "prod" not in secrets and "mlops-platform" not in secrets
    scrub = Redactor(secrets).scrub
    assert scrub("prod cluster, team mlops-platform") == "prod cluster, team mlops-platform"
    assert "tok-canary-456" not in scrub("server said: bad token tok-canary-456")
    shown = config.redacted()["targets"][0]["headers"]
    assert shown["X-Env"] == "prod" and shown["X-Api-Key"] == "**********" and shown["Authorization"] == "**********"


# --------------------------------------------------------------------------- 8. no stale Asgard gauges


def _asgard_run(facts: dict[str, Any], ok: bool) -> ProbeResult:
    step = StepResult("status", ok, 0.01, None if ok else Reason.UNREACHABLE, None if ok else "refused")
    return ProbeResult("api", "asgard", "asgard", time.time(), 0.01, (step,), 1.0, facts=AsgardFacts(**facts))


def test_asgard_gauges_are_absent_while_asgard_cannot_tell() -> None:
    registry = CollectorRegistry()
    sink = MetricsSink(registry, [0.1, 1.0])
    sink.register(ProbeSeries("asgard", "api", ("status",), 1.0, "asgard"))
    sink.register(ProbeSeries("mlflow", "read", ("health",), 1.0))

    def up(dep: str) -> float | None:
        return registry.get_sample_value("synthetic_asgard_dependency_up", {"target": "asgard", "dependency": dep})

    def inventory() -> float | None:
        return registry.get_sample_value("synthetic_asgard_inventory", {"target": "asgard", "kind": "feature_views"})

    sink.handle(
        _asgard_run({"dependencies": {"mlflow": True, "feast": False}, "inventory": {"feature_views": 4}}, ok=False)
    )
    assert (up("mlflow"), up("feast"), inventory()) == (1, 0, 4)
    # An MLflow probe's result says nothing about Asgard.
    sink.handle(
        ProbeResult("read", "mlflow", "mlflow_read", time.time(), 0.01, (StepResult("health", True, 0.01),), 1.0)
    )
    assert up("mlflow") == 1
    # Asgard unreachable: no status, so neither flag nor count is known.
    sink.handle(_asgard_run({}, ok=False))
    assert (up("mlflow"), up("feast"), inventory()) == (None, None, None)
    # A status that stops reporting one flag: that one is unknown, the other is fresh.
    sink.handle(_asgard_run({"dependencies": {"mlflow": True}, "inventory": {}}, ok=True))
    assert (up("mlflow"), up("feast"), inventory()) == (1, None, None)


# --------------------------------------------------------------------------- 7. --web.config.file


def _web_dir(tmp_path: Path, name: str = "metrics") -> Path:
    """The shipped example, unchanged, next to a certificate under the names it expects."""
    folder = tmp_path / "web"
    cert, key = make_self_signed(tmp_path / "gen", name)
    folder.mkdir(exist_ok=True)
    shutil.copy(cert, folder / "tls.crt")
    shutil.copy(key, folder / "tls.key")
    shutil.copy(EXAMPLE, folder / "web-config.yml")
    return folder


@pytest.mark.integration
@pytest.mark.skipif(PROMTOOL is None, reason="promtool missing (Debian package prometheus)")
def test_promtool_accepts_the_shipped_web_config(tmp_path: Path) -> None:
    folder = _web_dir(tmp_path)
    done = subprocess.run(
        [PROMTOOL, "check", "web-config", str(folder / "web-config.yml")], capture_output=True, text=True, timeout=30
    )
    assert done.returncode == 0, done.stdout + done.stderr
    web = load_web_config(folder / "web-config.yml")
    assert web.tls is not None and set(web.users) == {"prometheus"}


@pytest.mark.parametrize(
    "document, field",
    [
        ({"basic_auth_users": {"prometheus": "plain-password"}}, "basic_auth_users.prometheus"),
        ({"tls_server_config": {"cert_file": "tls.crt"}}, "tls_server_config.key_file"),
        (
            {
                "tls_server_config": {
                    "cert_file": "tls.crt",
                    "key_file": "tls.key",
                    "client_auth_type": "RequireAnyClientCert",
                }
            },
            "tls_server_config.client_auth_type",
        ),
        ({"tls_server_config": {"cert_file": "nope.crt", "key_file": "tls.key"}}, "tls_server_config.cert_file"),
        ({"tls_sever_config": {}}, "tls_sever_config: unknown key"),
    ],
)
def test_a_bad_web_config_is_exit_2_naming_the_field(
    tmp_path: Path, document: dict[str, Any], field: str, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = _web_dir(tmp_path)
    (folder / "bad.yml").write_text(yaml.safe_dump(document))
    config = write_config(tmp_path / "c.yaml")
    # In process: `run` checks the web config before it starts anything.
    code = cli_main(
        ["run", "--config", str(config), "--listen", "127.0.0.1:0", "--web.config.file", str(folder / "bad.yml")]
    )
    err = capsys.readouterr().err
    assert code == 2 and field in err and err.count("\n") == 1, err


@pytest.mark.integration
def test_legacy_tls_together_with_the_web_config_points_to_the_flag(tmp_path: Path) -> None:
    folder = _web_dir(tmp_path)
    config = write_config(
        tmp_path / "c.yaml", tls={"cert_file": str(folder / "tls.crt"), "key_file": str(folder / "tls.key")}
    )
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "monitor",
            "run",
            "--config",
            str(config),
            "--listen",
            "127.0.0.1:0",
            "--web.config.file",
            str(folder / "web-config.yml"),
        ],
        capture_output=True,
        text=True,
        timeout=30,
        cwd=REPO,
    )
    assert done.returncode == 2 and "--web.config.file" in done.stderr, done.stderr


def _served_cert(port: int) -> bytes:
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    with socket.create_connection(("127.0.0.1", port), timeout=5) as raw:
        with context.wrap_socket(raw, server_hostname="127.0.0.1") as tls:
            der = tls.getpeercert(binary_form=True)
    assert der is not None
    return der


def _der(pem_file: Path) -> bytes:
    return ssl.PEM_cert_to_DER_cert(pem_file.read_text())


def test_a_replaced_certificate_is_served_on_the_next_handshake(tmp_path: Path) -> None:
    folder = _web_dir(tmp_path, "first")
    endpoint = Endpoint(security=ServerSecurity(load_web_config(folder / "web-config.yml")))
    try:
        assert _served_cert(endpoint.port) == _der(folder / "tls.crt")
        first = _der(folder / "tls.crt")
        new_cert, new_key = make_self_signed(tmp_path / "renewed", "second")
        # As a Secret update lands: the key first, then the certificate (a moment where they
        # do not match must keep the old pair serving, not break the endpoint).
        shutil.copy(new_key, folder / "tls.key")
        assert _served_cert(endpoint.port) == first
        shutil.copy(new_cert, folder / "tls.crt")
        assert _served_cert(endpoint.port) == _der(new_cert) != first
    finally:
        endpoint.stop()


def test_basic_auth_from_the_web_config(tmp_path: Path) -> None:
    folder = _web_dir(tmp_path)
    endpoint = Endpoint(security=ServerSecurity(load_web_config(folder / "web-config.yml")))
    url = f"https://127.0.0.1:{endpoint.port}"
    verify = ssl.create_default_context(cafile=str(folder / "tls.crt"))
    try:
        assert httpx.get(f"{url}/metrics", verify=verify, timeout=5).status_code == 401
        wrong = httpx.get(f"{url}/metrics", verify=verify, auth=("prometheus", "wrong"), timeout=5)
        assert wrong.status_code == 401 and wrong.headers["WWW-Authenticate"].startswith("Basic")
        assert (
            httpx.get(f"{url}/metrics", verify=verify, auth=("nobody", EXAMPLE_PASSWORD), timeout=5).status_code == 401
        )
        for _ in range(3):  # the second and third are answered from the cache
            good = httpx.get(f"{url}/metrics", verify=verify, auth=("prometheus", EXAMPLE_PASSWORD), timeout=5)
            assert good.status_code == 200 and good.text == "up 1\n"
        assert httpx.post(f"{url}/-/reload", verify=verify, timeout=5).status_code == 401
        assert endpoint.reloads == 0
    finally:
        endpoint.stop()


@pytest.mark.integration
@pytest.mark.skipif(PROMETHEUS is None, reason="prometheus missing (Debian package prometheus)")
def test_a_real_prometheus_scrapes_over_tls_with_basic_auth(tmp_path: Path) -> None:
    from tests.standin.asgard import serve_in_thread

    folder = _web_dir(tmp_path)
    asgard, asgard_url = serve_in_thread()
    config = write_config(
        tmp_path / "c.yaml",
        targets=[{"name": "asgard", "kind": "asgard", "url": asgard_url}],
        probes=[{"name": "api", "target": "asgard", "scenario": "asgard", "interval": "1s"}],
    )
    port_file = tmp_path / "port"
    daemon = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "monitor",
            "run",
            "--config",
            str(config),
            "--listen",
            "127.0.0.1:0",
            "--port-file",
            str(port_file),
            "--web.config.file",
            str(folder / "web-config.yml"),
        ],
        cwd=REPO,
        stdout=open(tmp_path / "daemon.log", "wb"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    prom_port = free_port()
    procs = []
    try:
        port = read_port_file(port_file, timeout=30, proc=daemon)
        verify = ssl.create_default_context(cafile=str(folder / "tls.crt"))
        _wait(
            lambda: (
                httpx.get(
                    f"https://127.0.0.1:{port}/healthz", verify=verify, timeout=2, auth=("prometheus", EXAMPLE_PASSWORD)
                ).status_code
                == 200
            ),
            30,
            "the TLS daemon",
        )

        def job(name: str, password: str) -> dict[str, Any]:
            return {
                "job_name": name,
                "scheme": "https",
                "tls_config": {"ca_file": str(folder / "tls.crt")},
                "basic_auth": {"username": "prometheus", "password": password},
                "static_configs": [{"targets": [f"127.0.0.1:{port}"]}],
            }

        (tmp_path / "prometheus.yml").write_text(
            yaml.safe_dump(
                {
                    "global": {"scrape_interval": "1s", "scrape_timeout": "1s"},
                    "scrape_configs": [job("good", EXAMPLE_PASSWORD), job("wrong", "not-the-password")],
                }
            )
        )
        procs.append(
            start_proc(
                "prometheus",
                [
                    str(PROMETHEUS),
                    f"--config.file={tmp_path / 'prometheus.yml'}",
                    f"--storage.tsdb.path={tmp_path / 'prom-data'}",
                    f"--web.listen-address=127.0.0.1:{prom_port}",
                ],
                tmp_path,
                f"http://127.0.0.1:{prom_port}/-/ready",
            )
        )

        def targets() -> dict[str, dict[str, Any]]:
            data = httpx.get(f"http://127.0.0.1:{prom_port}/api/v1/targets", timeout=2).json()
            return {t["labels"]["job"]: t for t in data["data"]["activeTargets"]}

        _wait(lambda: {t["health"] for t in targets().values()} == {"up", "down"}, 30, "both scrape jobs judged")
        seen = targets()
        assert seen["good"]["health"] == "up" and seen["wrong"]["health"] == "down"
        assert "401" in seen["wrong"]["lastError"], seen["wrong"]

        def up(job_name: str) -> float | None:
            data = httpx.get(
                f"http://127.0.0.1:{prom_port}/api/v1/query", params={"query": f'up{{job="{job_name}"}}'}, timeout=2
            ).json()["data"]["result"]
            return float(data[0]["value"][1]) if data else None

        _wait(lambda: up("good") == 1.0 and up("wrong") == 0.0, 20, "up == 1 / 0")
        runs = httpx.get(
            f"http://127.0.0.1:{prom_port}/api/v1/query",
            params={"query": 'synthetic_probe_runs_total{job="good",probe="api",result="success"}'},
            timeout=2,
        ).json()["data"]["result"]
        assert runs, "Prometheus holds the daemon's series through TLS + basic auth"
        # This daemon runs without --web.enable-lifecycle: even an authenticated reload is refused.
        refused = httpx.post(
            f"https://127.0.0.1:{port}/-/reload", verify=verify, timeout=5, auth=("prometheus", EXAMPLE_PASSWORD)
        )
        assert refused.status_code == 403 and "Lifecycle API is not enabled" in refused.text
    finally:
        for proc in procs:
            proc.stop()
        daemon.terminate()
        try:
            daemon.wait(timeout=15)
        except subprocess.TimeoutExpired:
            daemon.kill()
            daemon.wait()
        asgard.stop()
    log = (tmp_path / "daemon.log").read_text(errors="replace")
    assert "Traceback" not in log, log[-2000:]


def _wait(check: Any, timeout: float, what: str) -> None:
    """tests.helpers.wait_for, with this module's argument order."""
    wait_for(check, timeout=timeout, interval=0.25, what=what, ignore=(httpx.HTTPError, KeyError, ValueError))


def test_client_certificates_when_the_web_config_requires_them(tmp_path: Path) -> None:
    folder = _web_dir(tmp_path)
    client_cert, client_key = make_self_signed(tmp_path / "client", "scraper")  # its own CA
    (folder / "mtls.yml").write_text(
        yaml.safe_dump(
            {
                "tls_server_config": {
                    "cert_file": "tls.crt",
                    "key_file": "tls.key",
                    "client_auth_type": "RequireAndVerifyClientCert",
                    "client_ca_file": str(client_cert),
                }
            }
        )
    )
    endpoint = Endpoint(security=ServerSecurity(load_web_config(folder / "mtls.yml")))
    url = f"https://127.0.0.1:{endpoint.port}/metrics"
    try:
        anonymous = ssl.create_default_context(cafile=str(folder / "tls.crt"))
        with pytest.raises(httpx.HTTPError):
            httpx.get(url, verify=anonymous, timeout=5)
        identified = ssl.create_default_context(cafile=str(folder / "tls.crt"))
        identified.load_cert_chain(str(client_cert), str(client_key))
        assert httpx.get(url, verify=identified, timeout=5).status_code == 200
    finally:
        endpoint.stop()
