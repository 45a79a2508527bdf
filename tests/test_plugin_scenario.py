"""Scenarios are plug-ins: another kind of target is one new file plus one registry line.

The example plug-in (tests/plugins/http_health.py, a plain HTTP health check of kind
`health`) goes into a copy of the package as monitor/probes/http_health.py, and its name
into the registry's PLUGINS line; nothing else of monitor/ changes (checked file by
file). Then, against a real HTTP server on loopback: the config loads (the kind is
known, a target without probes gets the scenario's default probe), `check` passes, a
failure is blamed on that kind's own target (the generic `server`, never another kind's
component), and the daemon runs the probe and exports both the usual series and the
plug-in's own family. And in the real package, no module outside the MLflow and Asgard
plug-in folders names either service, not even in a comment or inside an identifier.
"""

from __future__ import annotations

import filecmp
import http.server
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from monitor.scenario.registry import KINDS, SCENARIOS
from tests.servers import free_port

REPO = Path(__file__).resolve().parents[1]
PLUGIN = REPO / "tests" / "plugins" / "http_health.py"


class _Health(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:  # noqa: N802 - the stdlib's name
        if self.path == "/broken":  # what a proxy answers when the workers behind it died
            body, status = b"<html>bad gateway</html>", 502
        else:
            body, status = (b'{"status": "ok"}', 200) if self.path == "/health" else (b"not found", 404)
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture(scope="module")
def health_url() -> Iterator[str]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Health)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


@pytest.fixture(scope="module")
def plugged(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of the package with the plug-in added: returns the directory to put on PYTHONPATH."""
    root = tmp_path_factory.mktemp("plugged")
    shutil.copytree(REPO / "monitor", root / "monitor", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(PLUGIN, root / "monitor" / "probes" / "http_health.py")
    registry = root / "monitor" / "probes" / "__init__.py"
    text = registry.read_text()
    imports = re.search(r"^from monitor\.probes import (.*)$", text, re.M)
    line = re.search(r"^PLUGINS = \((.*)\)$", text, re.M)
    assert imports is not None and line is not None, "the registry's import and PLUGINS lines are gone"
    text = text.replace(imports.group(0), f"from monitor.probes import {imports.group(1)}, http_health")
    registry.write_text(text.replace(line.group(0), f"PLUGINS = ({line.group(1)}, http_health)"))
    return root


def _files(top: Path) -> set[str]:
    return {str(p.relative_to(top)) for p in top.rglob("*") if p.is_file() and "__pycache__" not in p.parts}


def test_the_plugin_is_one_new_file_and_one_changed_line(plugged: Path) -> None:
    original, copy = REPO / "monitor", plugged / "monitor"
    assert _files(copy) - _files(original) == {"probes/http_health.py"}
    changed = [f for f in sorted(_files(original)) if not filecmp.cmp(original / f, copy / f, shallow=False)]
    assert changed == ["probes/__init__.py"]
    before = (original / "probes/__init__.py").read_text().splitlines()
    after = (copy / "probes/__init__.py").read_text().splitlines()
    # the registry's two lines: the plug-in's import and its place in PLUGINS
    assert len(before) == len(after) and sum(a != b for a, b in zip(before, after)) == 2


def _monitor(plugged: Path, *args: str, **kw: object) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(plugged)}
    return subprocess.run(
        [sys.executable, "-m", "monitor", *args], env=env, capture_output=True, text=True, timeout=60, cwd=plugged, **kw
    )  # type: ignore[call-overload]


@pytest.mark.integration
def test_config_default_probe_and_check_work_for_the_new_kind(plugged: Path, health_url: str, tmp_path: Path) -> None:
    config = tmp_path / "c.yaml"
    config.write_text(yaml.safe_dump({"targets": [{"name": "web", "kind": "health", "url": health_url}]}))
    shown = _monitor(plugged, "config", "show", str(config), "--format", "json")
    assert shown.returncode == 0, shown.stderr
    probes = json.loads(shown.stdout)["probes"]
    assert [(p["name"], p["scenario"], p["interval"], p["timeout"]) for p in probes] == [
        ("web_health", "http_health", "30s", "10s")
    ]
    check = _monitor(plugged, "check", "--config", str(config), "--format", "json")
    assert check.returncode == 0, check.stdout + check.stderr
    report = json.loads(check.stdout)
    assert report["ok"] is True
    assert report["probes"][0]["steps"][0]["name"] == "health"
    assert report["probes"][0]["facts"] == {"body_bytes": 16}
    # An unknown kind is still a config error naming the field (the real package has no `health` kind).
    bad = subprocess.run(
        [sys.executable, "-m", "monitor", "config", "validate", str(config)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert bad.returncode == 2 and "targets[0].kind" in bad.stderr and "unknown kind 'health'" in bad.stderr


@pytest.mark.integration
def test_a_failure_of_the_new_kind_is_blamed_on_its_own_target(plugged: Path, health_url: str, tmp_path: Path) -> None:
    """No kind inherits another's components: the plug-in declares none, so a dead worker
    behind its target is the generic `server`, and the alert text names no other service."""
    config = tmp_path / "c.yaml"
    probe = {"name": "web_broken", "target": "web", "scenario": "http_health", "options": {"path": "/broken"}}
    config.write_text(
        yaml.safe_dump({"targets": [{"name": "web", "kind": "health", "url": health_url}], "probes": [probe]})
    )
    check = _monitor(plugged, "check", "--config", str(config), "--format", "json")
    assert check.returncode == 1, check.stdout + check.stderr
    (report,) = json.loads(check.stdout)["probes"]
    assert report["steps"][0]["reason"] == "worker_failure"
    assert report["diagnosis"]["component"] == "server", report["diagnosis"]
    summary = report["diagnosis"]["summary"]
    assert "step health" in summary and not re.search("mlflow|asgard", summary, re.I), summary


@pytest.mark.integration
def test_the_daemon_runs_the_new_kind_and_exports_its_metrics(plugged: Path, health_url: str, tmp_path: Path) -> None:
    config = tmp_path / "c.yaml"
    config.write_text(
        yaml.safe_dump(
            {"targets": [{"name": "web", "kind": "health", "url": health_url}], "alerting": {"enabled": False}}
        )
    )
    port = free_port()
    env = {**os.environ, "PYTHONPATH": str(plugged)}
    log = open(tmp_path / "daemon.log", "w")
    command = [sys.executable, "-m", "monitor", "run", "--config", str(config), "--listen", f"127.0.0.1:{port}"]
    proc = subprocess.Popen(command, env=env, cwd=plugged, stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 30
        samples: dict[tuple[str, tuple[tuple[str, str], ...]], float] = {}
        while time.monotonic() < deadline:
            try:
                text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=2).text
            except httpx.HTTPError:
                time.sleep(0.2)
                continue
            samples = {
                (s.name, tuple(sorted(s.labels.items()))): s.value
                for f in text_string_to_metric_families(text)
                for s in f.samples
            }
            if samples.get(
                ("synthetic_probe_runs_total", (("probe", "web_health"), ("result", "success"), ("target", "web")))
            ):
                break
            time.sleep(0.2)
        else:
            pytest.fail(f"no successful run in 30 s:\n{(tmp_path / 'daemon.log').read_text()}")
        assert samples[("synthetic_probe_success", (("probe", "web_health"), ("target", "web")))] == 1
        assert samples[("synthetic_http_health_body_bytes", (("target", "web"),))] == 16
        assert (
            "synthetic_probe_step_duration_seconds_count",
            (("probe", "web_health"), ("step", "health"), ("target", "web")),
        ) in samples
        assert httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=2).status_code == 200
    finally:
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(timeout=20)
        log.close()
    assert code == 0


# The plug-ins that may name their service: their own folders. monitor/probes/__init__.py is
# the registry line that lists the plug-ins by name; nothing else may.
OWN_FOLDERS = ("probes/mlflow", "probes/asgard")
REGISTRY_LINE = "probes/__init__.py"
# Anywhere in a line, any case: a word, a part of an identifier (MLflowWorkerFailure,
# mlflow_server, ASGARD_URL), a comment or a docstring. Stricter than a word match.
SERVICES = re.compile(r"mlflow|asgard", re.I)


def test_no_module_outside_its_plugin_folder_names_mlflow_or_asgard() -> None:
    found = []
    for path in sorted((REPO / "monitor").rglob("*.py")):
        relative = path.relative_to(REPO / "monitor").as_posix()
        if relative == REGISTRY_LINE or relative.startswith(OWN_FOLDERS):
            continue
        for number, line in enumerate(path.read_text().splitlines(), 1):
            if SERVICES.search(line):
                found.append(f"monitor/{relative}:{number}: {line.strip()}")
    assert not found, "MLflow or Asgard named outside their plug-in folders:\n" + "\n".join(found)


def test_the_service_check_catches_a_comment_and_an_identifier() -> None:
    """The check above is only worth something if it sees what it is meant to forbid."""
    assert SERVICES.search("# retries like the MLflow client does")
    assert SERVICES.search("WORKER = 'MLflowWorkerFailure'")
    assert SERVICES.search("server_component: str = 'mlflow_server'")
    assert SERVICES.search('"""Parse the ASGARD payload tolerantly."""')
    assert not SERVICES.search("component = 'server'  # the target's own server")


# Names of scenarios and kinds that are also plain protocol words: a quoted "http" is a URL scheme.
PROTOCOL_WORDS = frozenset({"http"})
NAMES = sorted({*SCENARIOS, *KINDS} - PROTOCOL_WORDS)


def test_no_module_outside_probes_names_a_scenario_or_a_kind() -> None:
    """Scenario and kind names live in monitor/probes/ only: the core reads the registry."""
    names = re.compile("|".join(rf"""["']{re.escape(name)}["']""" for name in NAMES))
    found = []
    for path in sorted((REPO / "monitor").rglob("*.py")):
        relative = path.relative_to(REPO / "monitor")
        if relative.parts[0] == "probes":
            continue
        for number, line in enumerate(path.read_text().splitlines(), 1):
            if names.search(line):
                found.append(f"monitor/{relative}:{number}: {line.strip()}")
    assert not found, "scenario or kind names outside monitor/probes/:\n" + "\n".join(found)


def test_every_kind_declares_its_components_and_alerts_honestly() -> None:
    """A kind's server component is one it declares (or the generic `server`); the kinds'
    alert names are unique; the MLflow defaults belong to the MLflow kind only."""
    from monitor.scenario.contract import GENERIC_COMPONENTS
    from monitor.scenario.registry import KIND_ALERTS

    generic = {c.name for c in GENERIC_COMPONENTS}
    assert generic == {"server", "network", "auth", "config", "monitor"}
    for kind in KINDS.values():
        assert kind.server_component in kind.component_runbooks()
    assert sum(len(k.alerts) for k in KINDS.values()) == len(KIND_ALERTS)
    others = [k for k in KINDS.values() if k.name != "mlflow"]
    assert all("mlflow_server" not in k.component_runbooks() for k in others)
