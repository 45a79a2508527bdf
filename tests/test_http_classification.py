"""Reason classification of `monitor.http` and the step/runner bookkeeping, against real sockets.

Nothing here mocks httpx: every case is a scripted TCP server on 127.0.0.1 (an
`asyncio.start_server` whose per-connection coroutine plays one misbehaviour) and a
real `TargetClient` pointed at it. Each test asserts the `Reason` and that the message
says something useful (method, path, the cause) without leaking credentials.
"""

from __future__ import annotations

import asyncio
import base64
import datetime
import ipaddress
import json
import shutil
import ssl
import subprocess
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from monitor.http.client import HttpResponse, check_status, describe_http_error, redact_url, split_userinfo
from monitor.results import Reason, StepFailure
from monitor.scenario import runner as runner_module
from monitor.scenario.base import Scenario, ScenarioOptions, ScenarioRun
from monitor.scenario.runner import run_probe
from tests.scripted import Conn, Handler, ScriptedServer, answer, client_for, closed_port, failure_of, serve

pytestmark = pytest.mark.timeout(20)

# --------------------------------------------------------------------------- transport failures


async def test_connection_refused_is_unreachable() -> None:
    failure = await failure_of(f"http://127.0.0.1:{closed_port()}")
    assert failure.reason is Reason.UNREACHABLE
    assert failure.message.startswith("GET /probe: cannot connect")
    assert "refused" in failure.message.lower() or "connect call failed" in failure.message.lower()
    assert failure.status_code is None


async def test_unresolvable_name_is_unreachable() -> None:
    failure = await failure_of("http://nonexistent.invalid", timeout=3.0)
    assert failure.reason is Reason.UNREACHABLE, failure.message
    assert failure.message.startswith("GET /probe: cannot connect")  # not the 3 s deadline: unreachable


async def test_accept_and_never_answer_times_out_on_time() -> None:
    async def handler(conn: Conn) -> None:
        await conn.read_request()
        await conn.hang()

    async with serve(handler) as server:
        started = time.monotonic()
        failure = await failure_of(server.url, timeout=0.5)
        elapsed = time.monotonic() - started
    assert failure.reason is Reason.TIMEOUT
    assert "GET /probe" in failure.message and "0.5s" in failure.message
    # Never before the timeout; the bug this catches is a hang, so the ceiling is generous.
    assert 0.45 <= elapsed < 10


async def test_body_trickling_slower_than_the_timeout_times_out() -> None:
    """Every single read is quick (so httpx's per-read timeout never fires): only the whole-request bound does."""

    async def handler(conn: Conn) -> None:
        await conn.read_request()
        await conn.send(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n\r\n")
        for _ in range(1000):
            await conn.send(b" ")
            await asyncio.sleep(0.05)

    async with serve(handler) as server:
        started = time.monotonic()
        failure = await failure_of(server.url, timeout=0.6)
        elapsed = time.monotonic() - started
    assert failure.reason is Reason.TIMEOUT, failure.message
    assert "no complete response within 0.6s" in failure.message
    assert elapsed < 25  # the trickle lasts 50 s: the whole-request bound ended it


async def test_connection_closed_without_response_is_worker_failure() -> None:
    async def handler(conn: Conn) -> None:
        await conn.read_request()
        conn.writer.close()

    async with serve(handler) as server:
        failure = await failure_of(server.url)
    assert failure.reason is Reason.WORKER_FAILURE, failure.message
    assert "connection closed by the server" in failure.message
    assert failure.message.startswith("GET /probe:")


async def test_reset_mid_body_is_worker_failure() -> None:
    async def handler(conn: Conn) -> None:
        await conn.read_request()
        await conn.send(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 5000\r\n\r\n")
        await conn.send(b'{"partial": "' + b"x" * 100)
        await asyncio.sleep(0.1)
        conn.reset()

    async with serve(handler) as server:
        failure = await failure_of(server.url)
    assert failure.reason is Reason.WORKER_FAILURE, failure.message
    assert failure.message.startswith("GET /probe: connection")
    assert "reset" in failure.message.lower() or "closed" in failure.message.lower()


async def test_close_mid_body_is_worker_failure() -> None:
    async def handler(conn: Conn) -> None:
        await conn.read_request()
        await conn.send(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 5000\r\n\r\n{")
        conn.writer.close()

    async with serve(handler) as server:
        failure = await failure_of(server.url)
    assert failure.reason is Reason.WORKER_FAILURE, failure.message


async def test_garbage_instead_of_http_is_invalid_response() -> None:
    async def handler(conn: Conn) -> None:
        await conn.read_request()
        await conn.send(b"SSH-2.0-OpenSSH_9.2\r\n\r\n")
        await conn.hang()

    async with serve(handler) as server:
        failure = await failure_of(server.url)
    assert failure.reason is Reason.INVALID_RESPONSE, failure.message
    assert "malformed HTTP response" in failure.message


# --------------------------------------------------------------------------- statuses


@pytest.mark.parametrize(
    ("status", "reason"),
    [
        (500, Reason.HTTP_ERROR),
        (502, Reason.WORKER_FAILURE),
        (503, Reason.WORKER_FAILURE),
        (504, Reason.WORKER_FAILURE),
        (404, Reason.HTTP_ERROR),
        (400, Reason.HTTP_ERROR),
    ],
)
async def test_status_classification(status: int, reason: Reason) -> None:
    async with serve(answer(status, b"upstream trouble", content_type="text/plain")) as server:
        failure = await failure_of(server.url)
    assert failure.reason is reason
    assert failure.status_code == status
    assert failure.message == f"GET /probe: HTTP {status}: upstream trouble"


async def test_request_returns_unexpected_statuses_as_is() -> None:
    async with serve(answer(503, b"")) as server, client_for(server.url) as client:
        response = await client.request("GET", "/x", timeout=2)
    assert response.status_code == 503
    check_status(response, {503})  # expected by the step: no failure


async def test_gateway_html_page_is_summarised_by_title() -> None:
    page = b"<html><head><title>502 Bad Gateway</title></head><body><center>nginx</center></body></html>"
    async with serve(answer(502, page, content_type="text/html")) as server:
        failure = await failure_of(server.url)
    assert failure.reason is Reason.WORKER_FAILURE
    assert failure.message == "GET /probe: HTTP 502: HTML page: 502 Bad Gateway"


async def test_401_hints_at_credentials() -> None:
    async with serve(answer(401, b"", headers={"WWW-Authenticate": 'Basic realm="mlflow"'})) as server:
        failure = await failure_of(server.url)
    assert failure.reason is Reason.HTTP_ERROR
    assert failure.status_code == 401
    assert "HTTP 401" in failure.message and "credentials" in failure.message


async def test_403_invalid_host_header_mentions_allowed_hosts() -> None:
    """The hint is the MLflow kind's (probes/mlflow.py): a client of another kind does not give it."""
    from monitor.probes.mlflow.kind import KIND

    body = b"Invalid Host header - possible DNS rebinding attack detected"
    async with serve(answer(403, body, content_type="text/plain")) as server:
        failure = await failure_of(server.url, error_hint=KIND.error_hint)
        plain = await failure_of(server.url)
    assert failure.reason is Reason.HTTP_ERROR
    assert "HTTP 403" in failure.message
    assert "Invalid Host header" in failure.message
    assert "--allowed-hosts" in failure.message
    assert "Invalid Host header" in plain.message and "--allowed-hosts" not in plain.message


async def test_plain_403_has_no_allowed_hosts_hint() -> None:
    async with serve(answer(403, b'{"error_code": "PERMISSION_DENIED", "message": "nope"}')) as server:
        failure = await failure_of(server.url)
    assert failure.message == "GET /probe: HTTP 403: PERMISSION_DENIED nope"


async def test_mlflow_error_body_appears_in_message() -> None:
    body = json.dumps(
        {"error_code": "RESOURCE_DOES_NOT_EXIST", "message": "Could not find experiment with name 'synthetic-monitor'"}
    ).encode()
    async with serve(answer(404, body)) as server:
        failure = await failure_of(server.url)
    assert failure.reason is Reason.HTTP_ERROR
    assert "RESOURCE_DOES_NOT_EXIST" in failure.message
    assert "Could not find experiment with name 'synthetic-monitor'" in failure.message


async def test_long_error_body_is_truncated_to_one_line() -> None:
    body = ("line one\nline two " + "y" * 5000).encode()
    async with serve(answer(500, body, content_type="text/plain")) as server:
        failure = await failure_of(server.url)
    assert "\n" not in failure.message
    assert len(failure.message) < 400
    assert "line one line two" in failure.message


async def test_redirect_is_not_followed() -> None:
    async with serve(answer(302, b"", headers={"Location": "/login"})) as server:
        failure = await failure_of(server.url)
        assert [r.path for r in server.requests] == ["/probe"]
    assert failure.reason is Reason.HTTP_ERROR
    assert failure.status_code == 302
    assert "HTTP 302" in failure.message


# --------------------------------------------------------------------------- bodies


async def _response(handler: Handler, **kwargs: Any) -> HttpResponse:
    async with serve(handler) as server, client_for(server.url, **kwargs) as client:
        return await client.request("GET", "/api/thing", timeout=2)


async def test_html_where_json_expected_is_invalid_response() -> None:
    page = b"<!DOCTYPE html><html><head><title>Sign in</title></head><body>login</body></html>"
    response = await _response(answer(200, page, content_type="text/html"))
    with pytest.raises(StepFailure) as info:
        response.json()
    assert info.value.reason is Reason.INVALID_RESPONSE
    assert "HTML" in info.value.message and "Sign in" in info.value.message
    assert info.value.message.startswith("GET /api/thing: expected JSON")
    assert info.value.status_code == 200


async def test_malformed_json_is_invalid_response() -> None:
    response = await _response(answer(200, b'{"experiments": [1, 2,'))
    with pytest.raises(StepFailure) as info:
        response.json()
    assert info.value.reason is Reason.INVALID_RESPONSE
    assert "malformed JSON" in info.value.message


async def test_json_array_where_object_expected_is_invalid_response() -> None:
    response = await _response(answer(200, b"[1, 2, 3]"))
    assert response.json() == [1, 2, 3]
    with pytest.raises(StepFailure) as info:
        response.json_object()
    assert info.value.reason is Reason.INVALID_RESPONSE
    assert "expected a JSON object, got list" in info.value.message


async def test_json_object_passes() -> None:
    response = await _response(answer(200, b'{"experiments": []}'))
    assert response.json_object() == {"experiments": []}
    assert response.method == "GET" and response.path == "/api/thing"


async def test_body_at_the_cap_is_read() -> None:
    response = await _response(answer(200, b"a" * 1000), max_body_bytes=1000)
    assert response.body == b"a" * 1000


async def test_declared_oversized_body_fails_before_reading_it() -> None:
    """Content-Length above the cap: fail at once, without waiting for a body that never comes."""

    async def handler(conn: Conn) -> None:
        await conn.read_request()
        await conn.send(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 100000000\r\n\r\n")
        await conn.hang()

    async with serve(handler) as server:
        failure = await failure_of(server.url, timeout=3.0, max_body_bytes=1000)
    assert failure.reason is Reason.INVALID_RESPONSE, failure.message
    assert "100000000 bytes exceeds the 1000 byte cap" in failure.message  # refused on Content-Length


async def test_chunked_oversized_body_stops_reading_early() -> None:
    """No Content-Length: the cap is enforced while streaming; the rest is never awaited."""
    sent: list[int] = []

    async def handler(conn: Conn) -> None:
        await conn.read_request()
        await conn.send(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n")
        for _ in range(3):
            await conn.send(b"200\r\n" + b"z" * 0x200 + b"\r\n")
            sent.append(0x200)
        await conn.hang()  # never the final 0-size chunk

    async with serve(handler) as server:
        failure = await failure_of(server.url, timeout=3.0, max_body_bytes=1000)
    assert failure.reason is Reason.INVALID_RESPONSE, failure.message
    assert "response body exceeds the 1000 byte cap" in failure.message
    assert sum(sent) == 1536  # stopped reading at the cap: the rest was never awaited


# --------------------------------------------------------------------------- TLS


@pytest.fixture(scope="module")
def self_signed(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1 (cryptography, else openssl, else a visible skip)."""
    directory = tmp_path_factory.mktemp("tls")
    cert, key = directory / "cert.pem", directory / "key.pem"
    try:
        from cryptography import x509
        from cryptography.hazmat.primitives import hashes, serialization
        from cryptography.hazmat.primitives.asymmetric import ec
        from cryptography.x509.oid import NameOID
    except ImportError:
        if shutil.which("openssl") is None:
            pytest.skip("neither the cryptography package nor openssl is available to make a test certificate")
        subprocess.run(
            [
                "openssl",
                "req",
                "-x509",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:prime256v1",
                "-nodes",
                "-keyout",
                str(key),
                "-out",
                str(cert),
                "-days",
                "2",
                "-subj",
                "/CN=127.0.0.1",
                "-addext",
                "subjectAltName=IP:127.0.0.1",
                "-addext",
                "basicConstraints=critical,CA:TRUE",
            ],
            check=True,
            capture_output=True,
            timeout=30,
        )
        return cert, key
    private = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(private.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=2))
        .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(private, hashes.SHA256())
    )
    cert.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    key.write_bytes(
        private.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    return cert, key


def _server_context(cert: Path, key: Path) -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    return context


async def test_self_signed_certificate_is_tls_error(self_signed: tuple[Path, Path]) -> None:
    async with serve(answer(200), _server_context(*self_signed)) as server:
        failure = await failure_of(server.url)
    assert failure.reason is Reason.TLS_ERROR, failure.message
    assert "TLS error" in failure.message
    assert "CERTIFICATE_VERIFY_FAILED" in failure.message or "certificate" in failure.message.lower()


async def test_self_signed_certificate_trusted_via_ca_file(self_signed: tuple[Path, Path]) -> None:
    cert, _ = self_signed
    async with serve(answer(200, b'{"ok": true}'), _server_context(*self_signed)) as server:
        async with client_for(server.url, verify=str(cert)) as client:
            response = await client.request("GET", "/health", timeout=2)
    assert response.status_code == 200 and response.json() == {"ok": True}


async def test_https_url_against_plain_http_port_is_tls_error() -> None:
    async def handler(conn: Conn) -> None:
        await conn.send(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")

    async with serve(handler) as server:
        failure = await failure_of(server.url.replace("http://", "https://"))
    assert failure.reason is Reason.TLS_ERROR, failure.message


# --------------------------------------------------------------------------- credentials


async def test_url_userinfo_becomes_basic_auth_and_never_appears_in_messages() -> None:
    async with serve(answer(401, b'{"error_code": "UNAUTHENTICATED", "message": "bad creds"}')) as server:
        url = f"http://probe-user:canary-s3cret@127.0.0.1:{server.port}"
        async with client_for(url) as client:
            assert client.base_url == server.url
            with pytest.raises(StepFailure) as info:
                check_status(await client.request("GET", "/api/2.0/mlflow/experiments/search", timeout=2))
        sent = server.requests[0].headers["authorization"]
    assert sent == "Basic " + base64.b64encode(b"probe-user:canary-s3cret").decode()
    assert info.value.reason is Reason.HTTP_ERROR
    assert "canary-s3cret" not in info.value.message and "probe-user" not in info.value.message

    failure = await failure_of(f"http://probe-user:canary-s3cret@127.0.0.1:{closed_port()}")
    assert failure.reason is Reason.UNREACHABLE
    assert "canary-s3cret" not in failure.message


async def test_percent_encoded_userinfo_is_decoded_for_basic_auth() -> None:
    async with serve(answer(200)) as server:
        async with client_for(f"http://user:p%40ss%3Aw@127.0.0.1:{server.port}") as client:
            await client.request("GET", "/", timeout=2)
        sent = server.requests[0].headers["authorization"]
    assert sent == "Basic " + base64.b64encode(b"user:p@ss:w").decode()


async def test_explicit_credentials_and_bearer_token() -> None:
    async with serve(answer(200)) as server:
        async with client_for(server.url, basic_auth=("alice", "pw")) as client:
            await client.request("GET", "/a", timeout=2)
        async with client_for(server.url, bearer_token="tok-123", headers={"X-Extra": "1"}) as client:
            await client.request("GET", "/b", timeout=2)
        first, second = server.requests
    assert first.headers["authorization"] == "Basic " + base64.b64encode(b"alice:pw").decode()
    assert first.headers["accept"] == "application/json"
    assert first.headers["user-agent"] == "synthetic-monitor"
    assert second.headers["authorization"] == "Bearer tok-123"
    assert second.headers["x-extra"] == "1"


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("http://127.0.0.1:5000/api", "http://127.0.0.1:5000/api"),
        ("http://user:pass@127.0.0.1:5000/api?x=1#f", "http://127.0.0.1:5000/api?x=1#f"),
        ("https://user@mlflow.example.com/", "https://mlflow.example.com/"),
        ("http://user:@host", "http://host"),
        ("http://u:p@mlflow.example.com:8443", "http://mlflow.example.com:8443"),
        pytest.param(
            "http://u:p@[::1]:8080/x",
            "http://[::1]:8080/x",
            id="ipv6",
        ),
    ],
)
def test_redact_url(url: str, expected: str) -> None:
    assert redact_url(url) == expected


def test_split_userinfo() -> None:
    assert split_userinfo("http://127.0.0.1:5000") == ("http://127.0.0.1:5000", None)
    assert split_userinfo("http://a:b@127.0.0.1:5000/x") == ("http://127.0.0.1:5000/x", ("a", "b"))
    assert split_userinfo("http://a@h") == ("http://h", ("a", ""))


def test_describe_http_error_without_body() -> None:
    response = HttpResponse(500, httpx.Headers(), b"", "POST", "/api/2.0/mlflow/runs/create")
    assert describe_http_error(response) == "POST /api/2.0/mlflow/runs/create: HTTP 500"


async def test_exhausted_timeout_fails_without_a_request() -> None:
    async with serve(answer(200)) as server, client_for(server.url) as client:
        with pytest.raises(StepFailure) as info:
            await client.request("GET", "/x", timeout=0)
        assert server.connections == 0
    assert info.value.reason is Reason.TIMEOUT
    assert "deadline exhausted" in info.value.message


# --------------------------------------------------------------------------- runner


class NoOptions(ScenarioOptions):
    pass


def scenario(run: Callable[[ScenarioRun, Any], Awaitable[None]], *steps: str) -> Scenario:
    return Scenario(name="test_scenario", target_kind="mlflow", steps=steps, options_model=NoOptions, run=run)


def routes(table: dict[str, tuple[int, bytes] | None]) -> Handler:
    """Answer by path; None means hang."""

    async def handler(conn: Conn) -> None:
        while True:
            request = await conn.read_request()
            entry = table[request.path]
            if entry is None:
                await conn.hang()
            await conn.respond(*entry)

    return handler


async def _run(
    server: ScriptedServer, body: Callable[[ScenarioRun, Any], Awaitable[None]], timeout: float = 2.0, **kwargs: Any
):
    async with client_for(server.url) as client:
        return await run_probe(scenario(body), client, NoOptions(), probe="p", target="t", timeout=timeout, **kwargs)


async def test_plain_exception_in_step_is_internal_error_with_traceback() -> None:
    async def body(run: ScenarioRun, options: Any) -> None:
        async with run.step("ok_step") as step:
            await step.request("GET", "/ok")
        async with run.step("buggy"):
            {}["missing"]  # noqa: B018 - a bug in the scenario
        async with run.step("never"):
            pass

    async with serve(routes({"/ok": (200, b"{}")})) as server:
        result = await _run(server, body)
    assert [s.name for s in result.steps] == ["ok_step", "buggy"]
    assert not result.ok
    assert result.failed_step is not None and result.failed_step.name == "buggy"
    assert result.reason is Reason.INTERNAL_ERROR
    assert result.failed_step.error == "KeyError: 'missing'"
    assert result.traceback is not None and "KeyError" in result.traceback
    assert result.steps[0].ok and result.steps[0].status_code == 200
    assert (result.steps[0].method, result.steps[0].path) == ("GET", "/ok")


async def test_exception_outside_any_step_is_internal_error_at_scenario() -> None:
    async def body(run: ScenarioRun, options: Any) -> None:
        async with run.step("ok_step") as step:
            await step.request("GET", "/ok")
        raise RuntimeError("between steps")

    async with serve(routes({"/ok": (200, b"{}")})) as server:
        result = await _run(server, body)
    assert [s.name for s in result.steps] == ["ok_step", "scenario"]
    assert result.failed_step is not None and result.failed_step.name == "scenario"
    assert result.reason is Reason.INTERNAL_ERROR
    assert result.failed_step.error == "RuntimeError: between steps"
    assert result.traceback is not None and "between steps" in result.traceback


async def test_cleanup_runs_after_a_failed_step() -> None:
    async def body(run: ScenarioRun, options: Any) -> None:
        try:
            async with run.step("create") as step:
                await step.request("POST", "/create")
            async with run.step("skipped_by_failure") as step:
                await step.request("GET", "/ok")
        finally:
            async with run.step("delete", cleanup=True) as step:
                await step.request("POST", "/delete")

    async with serve(routes({"/create": (503, b"busy"), "/ok": (200, b"{}"), "/delete": (200, b"{}")})) as server:
        result = await _run(server, body)
        paths = [r.path for r in server.requests]
    assert paths == ["/create", "/delete"]
    assert [(s.name, s.ok, s.reason) for s in result.steps] == [
        ("create", False, Reason.WORKER_FAILURE),
        ("delete", True, None),
    ]
    assert result.failed_step is not None and result.failed_step.status_code == 503
    assert result.traceback is None


async def test_failed_cleanup_is_recorded_and_does_not_abort() -> None:
    async def body(run: ScenarioRun, options: Any) -> None:
        async with run.step("delete", cleanup=True) as step:
            await step.request("POST", "/delete")
        async with run.step("after") as step:
            await step.request("GET", "/ok")

    async with serve(routes({"/delete": (500, b"x"), "/ok": (200, b"{}")})) as server:
        result = await _run(server, body)
    assert [(s.name, s.ok) for s in result.steps] == [("delete", False), ("after", True)]
    assert result.reason is Reason.HTTP_ERROR


async def test_cleanup_gets_a_budget_after_the_deadline_is_spent() -> None:
    async def body(run: ScenarioRun, options: Any) -> None:
        try:
            async with run.step("slow") as step:
                await step.request("GET", "/hang")
        finally:
            async with run.step("delete", cleanup=True) as step:
                await step.request("POST", "/delete")

    async with serve(routes({"/hang": None, "/delete": (200, b"{}")})) as server:
        result = await _run(server, body, timeout=0.4)
    assert [(s.name, s.ok, s.reason) for s in result.steps] == [
        ("slow", False, Reason.TIMEOUT),
        ("delete", True, None),
    ]


async def test_skip_marks_a_step_skipped_and_ok() -> None:
    async def body(run: ScenarioRun, options: Any) -> None:
        async with run.step("model_get") as step:
            step.skip("no registered models")

    async with serve(routes({})) as server:
        result = await _run(server, body)
    (step,) = result.steps
    assert step.ok and step.skipped and step.reason is None
    assert step.error == "skipped: no registered models"
    assert result.ok and result.reason is None


async def test_step_fail_keeps_last_status() -> None:
    async def body(run: ScenarioRun, options: Any) -> None:
        async with run.step("runs_get") as step:
            await step.request("GET", "/ok")
            step.fail(Reason.VALIDATION_FAILED, "metric read back as 1.0, wrote 2.0")

    async with serve(routes({"/ok": (200, b"{}")})) as server:
        result = await _run(server, body)
    step = result.steps[0]
    assert (step.reason, step.status_code, step.error) == (
        Reason.VALIDATION_FAILED,
        200,
        "metric read back as 1.0, wrote 2.0",
    )


async def test_deadline_exhaustion_in_a_request_is_timeout() -> None:
    async def body(run: ScenarioRun, options: Any) -> None:
        async with run.step("slow") as step:
            await step.request("GET", "/hang")

    async with serve(routes({"/hang": None})) as server:
        started = time.monotonic()
        result = await _run(server, body, timeout=0.5)
        elapsed = time.monotonic() - started
    assert result.failed_step is not None and result.failed_step.name == "slow"
    assert result.reason is Reason.TIMEOUT
    assert result.timeout_seconds == 0.5
    assert elapsed < 10  # the route never answers: only the deadline ends the run


async def test_step_timeout_caps_each_step() -> None:
    async def body(run: ScenarioRun, options: Any) -> None:
        async with run.step("slow") as step:
            await step.request("GET", "/hang")

    async with serve(routes({"/hang": None})) as server:
        started = time.monotonic()
        result = await _run(server, body, timeout=5.0, step_timeout=0.3)
        elapsed = time.monotonic() - started
    assert result.reason is Reason.TIMEOUT
    assert elapsed < 4.0  # the step's 0.3 s bound ended it, not the run's 5 s deadline


async def test_deadline_spent_before_a_step_is_timeout_without_request() -> None:
    async def body(run: ScenarioRun, options: Any) -> None:
        async with run.step("dawdle"):
            await asyncio.sleep(0.35)
        async with run.step("late") as step:
            await step.request("GET", "/ok")

    async with serve(routes({"/ok": (200, b"{}")})) as server:
        result = await _run(server, body, timeout=0.3)
        assert server.requests == []
    assert [(s.name, s.ok) for s in result.steps] == [("dawdle", True), ("late", False)]
    assert result.reason is Reason.TIMEOUT
    # Starved, not failed on its own: skipped, no blame for its route (issue 21).
    late = result.failed_step
    assert late is not None and late.skipped and "deadline spent by earlier steps" in (late.error or "")


async def test_hang_outside_any_step_is_timeout_at_scenario(monkeypatch: pytest.MonkeyPatch) -> None:
    # No cleanup steps in this scenario: the outer bound is the timeout + OUTER_GRACE_SECONDS (1 s).
    assert runner_module.OUTER_GRACE_SECONDS == 1.0

    async def body(run: ScenarioRun, options: Any) -> None:
        await asyncio.Event().wait()

    async with serve(routes({})) as server:
        started = time.monotonic()
        result = await _run(server, body, timeout=0.2)
        elapsed = time.monotonic() - started
    assert [(s.name, s.reason) for s in result.steps] == [("scenario", Reason.TIMEOUT)]
    assert elapsed < 10
