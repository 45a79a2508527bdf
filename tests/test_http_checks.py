"""Checks as code (the `http` kind) against real HTTP servers on loopback.

A small shop API (stdlib HTTP server, real sockets) serves the chained check of the
"Writing checks" page; its switches change the answer's shape, require a secret header
and serve hostile answers. The Asgard example runs against the Asgard stand-in.
"""

from __future__ import annotations

import http.server
import json
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client import CollectorRegistry

from monitor.alerting.engine import AlertEngine
from monitor.clients import make_client
from monitor.config import AlertingConfig, load_config
from monitor.probes.http.scenario import AssertionFailures
from monitor.results import ProbeResult, Reason
from monitor.scenario.registry import SCENARIOS
from monitor.scenario.runner import run_probe

REPO = Path(__file__).resolve().parents[1]
SECRET = "s3cr3t-key-0001"
ROTATED = "s3cr3t-key-0002"


class Shop:
    """What the server does now, and what it saw."""

    def __init__(self) -> None:
        self.shape = "items"  # "data": the list moves to another key (a changed answer shape)
        self.key: str | None = None  # the X-Api-Key it requires (None: any)
        self.seen_keys: list[str] = []
        self.seen_auth: list[str] = []
        self.deleted: list[str] = []


def handler(shop: Shop) -> type[http.server.BaseHTTPRequestHandler]:
    class Handler(http.server.BaseHTTPRequestHandler):
        def _send(self, status: int, body: bytes, ctype: str = "application/json") -> None:
            self.send_response(status)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def do_GET(self) -> None:  # noqa: N802 - the stdlib's name
            key = self.headers.get("X-Api-Key", "")
            shop.seen_keys.append(key)
            shop.seen_auth.append(self.headers.get("Authorization", ""))
            if shop.key is not None and key != shop.key:
                # A careless server quotes the credential back: it must never show.
                return self._send(401, json.dumps({"error": f"bad key {key}"}).encode())
            path = self.path.split("?")[0]
            if path == "/v1/items":
                items = [{"id": "a1", "name": "apple"}, {"id": "b2", "name": "pear"}]
                return self._send(200, json.dumps({shop.shape: items}).encode())
            if path.startswith("/v1/items/"):
                return self._send(200, json.dumps({"id": path.rsplit("/", 1)[1]}).encode())
            if path == "/deep":
                return self._send(200, b"[" * 100_000 + b"]" * 100_000)
            if path == "/huge":
                return self._send(200, json.dumps({"items": list(range(300_000))}).encode())
            if path == "/binary":
                return self._send(200, bytes(range(256)) * 64, "application/octet-stream")
            return self._send(404, b'{"error": "not found"}')

        def do_DELETE(self) -> None:  # noqa: N802
            shop.deleted.append(self.path)
            self._send(204, b"")

        def log_message(self, format: str, *args: object) -> None:
            pass

    return Handler


@pytest.fixture()
def shop() -> Iterator[tuple[Shop, str]]:
    state = Shop()
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler(state))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield state, f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


STEPS: list[dict[str, Any]] = [
    {
        "name": "list",
        "request": {"method": "GET", "path": "/v1/items", "query": {"limit": "5"}},
        "expect": {"status": [200]},
        "assert": [{"name": "has_items", "cel": "size(body.items) > 0"}],
        "extract": {"item": "$.items[0].id"},
    },
    {
        "name": "item",
        "request": {"method": "GET", "path": "/v1/items/${item}"},
        "assert": [{"name": "same_item", "cel": "body.id == vars.item && duration_ms < 5000"}],
    },
    {"name": "cleanup_item", "request": {"method": "DELETE", "path": "/v1/items/${item}"}, "cleanup": True},
]


def write_config(tmp_path: Path, url: str, steps: list[dict[str, Any]] = STEPS, **target: Any) -> Path:
    config = tmp_path / "checks.yaml"
    document = {
        "targets": [{"name": "shop", "kind": "http", "url": url, **target}],
        "probes": [{"name": "shop_item", "target": "shop", "scenario": "http", "options": {"steps": steps}}],
        "alerting": {"enabled": False},
    }
    config.write_text(yaml.safe_dump(document))
    return config


async def run_once(config_path: Path) -> ProbeResult:
    config = load_config(config_path)
    probe = config.probes[0]
    client = make_client(config.target(probe.target))
    try:
        return await run_probe(
            SCENARIOS[probe.scenario], client, probe.options, probe=probe.name, target=probe.target, timeout=10.0
        )
    finally:
        await client.aclose()


def monitor(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "monitor", *args], cwd=REPO, capture_output=True, text=True, timeout=60
    )


async def test_the_chained_check_passes(shop: tuple[Shop, str], tmp_path: Path) -> None:
    state, url = shop
    result = await run_once(write_config(tmp_path, url))
    assert result.ok, result.as_dict()
    assert [s.name for s in result.steps] == ["list", "item", "cleanup_item"]
    assert result.steps[1].path == "/v1/items/a1"  # the var extracted by step list
    assert state.deleted == ["/v1/items/a1"]


async def test_a_changed_shape_fails_the_named_assertion_at_its_step(shop: tuple[Shop, str], tmp_path: Path) -> None:
    state, url = shop
    state.shape = "data"
    result = await run_once(write_config(tmp_path, url))
    failed = result.failed_step
    assert failed is not None and failed.name == "list"
    assert failed.reason is Reason.ASSERTION_FAILED
    assert "has_items" in (failed.error or "") and "size(" not in (failed.error or "")  # the name, never the expression
    assert result.diagnosis is not None and result.diagnosis.component == "server"
    assert "shop" in result.diagnosis.summary and "has_items" in result.diagnosis.summary
    assert "list" in result.diagnosis.summary
    # The cleanup step cannot run without the var the failed step would have extracted.
    assert [s.name for s in result.steps] == ["list", "cleanup_item"] and result.steps[1].skipped
    registry = CollectorRegistry()
    family = AssertionFailures(registry)
    family.observe(result)
    labels = {"target": "shop", "probe": "shop_item", "step": "list", "assertion": "has_items"}
    assert registry.get_sample_value("synthetic_probe_assertion_failures_total", labels) == 1.0
    family.forget("shop", "shop_item", last_of_target=True)
    assert registry.get_sample_value("synthetic_probe_assertion_failures_total", labels) is None
    # The default alert names the step and the assertion (never the expression), and the culprit.
    engine = AlertEngine(AlertingConfig.model_validate({"startup_grace": 0}), now=0.0)
    fired = {a.name: a for a in engine.observe(result, 1.0) + engine.observe(result, 2.0)}
    description = fired["SyntheticProbeFailing"].annotations["description"]
    assert "step list, reason assertion_failed" in description and "assertion has_items is false" in description
    assert "Diagnosis: server: target shop" in description and "size(" not in description
    assert not {n for n in fired if "MLflow" in n or "Asgard" in n}


async def test_extraction_finding_nothing_is_invalid_response(shop: tuple[Shop, str], tmp_path: Path) -> None:
    _, url = shop
    steps = [{"name": "list", "request": {"path": "/v1/items"}, "extract": {"item": "$.items[5].id"}}]
    result = await run_once(write_config(tmp_path, url, steps))
    failed = result.failed_step
    assert failed is not None and failed.reason is Reason.INVALID_RESPONSE
    assert "selected nothing" in (failed.error or "")


@pytest.mark.parametrize(
    ("path", "why"),
    [("/deep", "nested"), ("/huge", "more than"), ("/binary", "expected JSON")],
)
async def test_hostile_answers_are_invalid_response(
    shop: tuple[Shop, str], tmp_path: Path, path: str, why: str
) -> None:
    _, url = shop
    steps = [{"name": "hostile", "request": {"path": path}, "assert": [{"name": "any", "cel": "body != null"}]}]
    result = await run_once(write_config(tmp_path, url, steps))
    failed = result.failed_step
    assert failed is not None and failed.reason is Reason.INVALID_RESPONSE, result.as_dict()
    assert why in (failed.error or "")


async def test_text_only_assertions_take_a_binary_answer(shop: tuple[Shop, str], tmp_path: Path) -> None:
    """`body` is null for an answer that is not JSON; an assertion that does not name it still runs."""
    _, url = shop
    steps = [{"name": "blob", "request": {"path": "/binary"}, "assert": [{"name": "big", "cel": "size(text) > 100"}]}]
    result = await run_once(write_config(tmp_path, url, steps))
    assert result.ok, result.as_dict()


@pytest.mark.integration
def test_a_secret_header_reaches_the_server_is_reread_and_never_shows(shop: tuple[Shop, str], tmp_path: Path) -> None:
    state, url = shop
    state.key = SECRET
    key_file = tmp_path / "key"
    key_file.write_text(SECRET + "\n")
    config = write_config(tmp_path, url, headers={"X-Api-Key": {"file": str(key_file)}})
    check = monitor("check", "--config", str(config), "--format", "json")
    assert check.returncode == 0, check.stdout + check.stderr
    assert state.seen_keys[0] == SECRET
    shown = monitor("config", "show", str(config), "--format", "json")
    assert shown.returncode == 0 and SECRET not in shown.stdout + shown.stderr

    async def rotated() -> ProbeResult:
        from monitor.logsetup import Redactor

        config_loaded = load_config(config)
        probe = config_loaded.probes[0]
        client = make_client(config_loaded.target("shop"))
        try:
            first = await run_probe(SCENARIOS["http"], client, probe.options, probe="p", target="shop", timeout=10)
            assert first.ok
            key_file.write_text(ROTATED + "\n")  # Kubernetes rotates the Secret; the server still wants the old one
            second = await run_probe(SCENARIOS["http"], client, probe.options, probe="p", target="shop", timeout=10)
            return second.redacted(Redactor(config_loaded.secret_values()).scrub)
        finally:
            await client.aclose()

    import asyncio

    second = asyncio.run(rotated())
    assert state.seen_keys[-1] == ROTATED  # re-read on change
    failed = second.failed_step
    assert failed is not None and failed.status_code == 401
    text = json.dumps(second.as_dict())
    assert ROTATED not in text and "bad key ***" in text  # the server quoted it back; the result does not


@pytest.mark.integration
@pytest.mark.parametrize("form", ["bearer_token_file", "basic_auth"])
async def test_credentials_from_files_reach_the_server_and_follow_a_rotation(
    shop: tuple[Shop, str], tmp_path: Path, form: str
) -> None:
    state, url = shop
    secret = tmp_path / "secret"
    secret.write_text(SECRET + "\n")
    target: dict[str, Any] = (
        {"auth": {"bearer_token_file": str(secret)}}
        if form == "bearer_token_file"
        else {"basic_auth": {"username": "probe", "password_file": str(secret)}}
    )
    config = write_config(tmp_path, url, **target)
    loaded = load_config(config)
    probe = loaded.probes[0]
    client = make_client(loaded.target("shop"))  # one client, as the daemon keeps one per target
    try:
        for value in (SECRET, ROTATED):
            secret.write_text(value + "\n")
            result = await run_probe(SCENARIOS["http"], client, probe.options, probe="p", target="shop", timeout=10)
            assert result.ok, result.as_dict()
    finally:
        await client.aclose()
    import base64

    def expected(value: str) -> str:
        if form == "bearer_token_file":
            return f"Bearer {value}"
        return "Basic " + base64.b64encode(f"probe:{value}".encode()).decode()

    assert state.seen_auth[0] == expected(SECRET) and state.seen_auth[-1] == expected(ROTATED)
    shown = monitor("config", "show", str(config), "--format", "json")
    assert shown.returncode == 0 and SECRET not in shown.stdout and ROTATED not in shown.stdout


@pytest.mark.parametrize(
    ("change", "field", "message"),
    [
        (
            ("assert", 0, "cel", "size(body.items > "),
            "probes[0].options.steps[0].assert[0].cel",
            "Syntax error at 1:19",
        ),
        (("extract", "item", None, "$.items[0"), "probes[0].options.steps[0].extract.item", "JSONPath syntax error"),
    ],
)
@pytest.mark.integration
def test_broken_cel_and_jsonpath_are_refused_naming_the_field(
    tmp_path: Path, change: tuple[Any, ...], field: str, message: str
) -> None:
    steps = json.loads(json.dumps(STEPS))
    key, index, sub, value = change
    if sub is None:
        steps[0][key][index] = value
    else:
        steps[0][key][index][sub] = value
    result = monitor("config", "validate", str(write_config(tmp_path, "http://127.0.0.1:9", steps)))
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and f"{field}: {message}" in lines[0], result.stderr


@pytest.mark.integration
def test_a_var_used_before_it_is_extracted_is_a_config_error(tmp_path: Path) -> None:
    steps = json.loads(json.dumps(STEPS))
    steps[1]["request"]["path"] = "/v1/orders/${order}"
    result = monitor("config", "validate", str(write_config(tmp_path, "http://127.0.0.1:9", steps)))
    assert result.returncode == 2 and "var order used" in result.stderr and "steps[1]" in result.stderr


@pytest.mark.integration
def test_more_than_twenty_steps_is_a_config_error(tmp_path: Path) -> None:
    steps = [{"name": f"s{i}", "request": {"path": "/v1/items"}} for i in range(21)]
    result = monitor("config", "validate", str(write_config(tmp_path, "http://127.0.0.1:9", steps)))
    assert result.returncode == 2 and "probes[0].options.steps" in result.stderr


@pytest.mark.integration
async def test_the_asgard_example_passes_against_the_standin(tmp_path: Path) -> None:
    from tests.test_asgard_standin import start_standin

    standin = start_standin("--models", "churn,fraud")
    try:
        document = yaml.safe_load((REPO / "deploy/examples/checks-asgard-models.yaml").read_text())
        document["targets"][0]["url"] = standin.url
        config = tmp_path / "asgard.yaml"
        config.write_text(yaml.safe_dump(document))
        result = await run_once(config)
        assert result.ok, result.as_dict()
        assert result.steps[1].path == "/mlops/models/churn"
    finally:
        assert standin.stop() == 0
