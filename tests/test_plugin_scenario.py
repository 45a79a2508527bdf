"""Scenarios are plug-ins: a third kind of target is one new file plus one registry line.

The example plug-in (tests/plugins/http_health.py, a plain HTTP health check of kind
`http`) goes into a copy of the package as monitor/probes/http_health.py, and its name
into the registry's PLUGINS line; nothing else of monitor/ changes (checked file by
file). Then, against a real HTTP server on loopback: the config loads (the kind is
known, a target without probes gets the scenario's default probe), `check` passes, and
the daemon runs the probe and exports both the usual series and the plug-in's own family.
And in the real package, no module outside monitor/probes/ names a scenario or a kind.
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
        body = b'{"status": "ok"}' if self.path == "/health" else b"not found"
        self.send_response(200 if self.path == "/health" else 404)
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
    config.write_text(yaml.safe_dump({"targets": [{"name": "web", "kind": "http", "url": health_url}]}))
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
    # An unknown kind is still a config error naming the field (the real package has no `http` kind).
    bad = subprocess.run(
        [sys.executable, "-m", "monitor", "config", "validate", str(config)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert bad.returncode == 2 and "targets[0].kind" in bad.stderr and "unknown kind 'http'" in bad.stderr


@pytest.mark.integration
def test_the_daemon_runs_the_new_kind_and_exports_its_metrics(plugged: Path, health_url: str, tmp_path: Path) -> None:
    config = tmp_path / "c.yaml"
    config.write_text(
        yaml.safe_dump(
            {"targets": [{"name": "web", "kind": "http", "url": health_url}], "alerting": {"enabled": False}}
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


NAMES = sorted({*SCENARIOS, *KINDS})
# The diagnosis component contract (results.COMPONENTS) has a component `asgard` too: the
# two modules that define it may spell it; everywhere else it counts as the kind's name.
COMPONENT_CONTRACT = ("results.py", "diagnosis.py")


def test_no_module_outside_probes_names_a_scenario_or_a_kind() -> None:
    """Scenario and kind names live in monitor/probes/ only (standin/ is demo and test tooling,
    excluded from the wheel, and builds a demo configuration)."""
    from monitor.results import COMPONENTS

    def pattern(names: list[str]) -> re.Pattern[str]:
        return re.compile("|".join(rf"""["']{re.escape(name)}["']""" for name in names))

    everywhere, contract = pattern(NAMES), pattern([n for n in NAMES if n not in COMPONENTS])
    found = []
    for path in sorted((REPO / "monitor").rglob("*.py")):
        relative = path.relative_to(REPO / "monitor")
        if relative.parts[0] == "probes":
            continue
        names = contract if str(relative) in COMPONENT_CONTRACT else everywhere
        for number, line in enumerate(path.read_text().splitlines(), 1):
            if names.search(line):
                found.append(f"monitor/{relative}:{number}: {line.strip()}")
    assert not found, "scenario or kind names outside monitor/probes/:\n" + "\n".join(found)
