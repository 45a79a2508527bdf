"""The status page in a real headless Chromium, against a running daemon.

Three Asgard targets: one healthy, one whose server is stopped mid-test, and one that
answers with markup instead of JSON (`<script>`, `<img onerror>`), whose text ends up in
the probe's error. A runtime maintenance window gets a hostile name too (probe names
cannot carry markup: the config allows [A-Za-z0-9_.-]; the window name and server text
are the free text that reaches the page). Chromium's own DOM (`--dump-dom`) must show
each probe's row with its SVG sparkline, the stopped probe failing, its firing alert,
and the hostile texts as text, never as elements. A screenshot is written to the test's
tmp dir (path printed); STATUS_PAGE_SCREENSHOT=path copies it there (docs/img).

Chromium is the Debian package `chromium` (tests/run.sh installs it as root); without
it the test is skipped with that reason.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import threading
from collections.abc import Iterator
from html.parser import HTMLParser
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from tests.servers import REPO, DaemonProcess, free_port, start_proc
from tests.standin.asgard import serve_in_thread as asgard_in_thread
from tests.standin.webhook import serve_in_thread as webhook_in_thread
from tests.test_daemon import wait_for

pytestmark = pytest.mark.timeout(240)

HOSTILE_BODY = '<script>document.title="pwned"</script><img src=x onerror="document.title=1">'
HOSTILE_WINDOW = '<b id="injected">db</b><script>alert(1)</script>'


def _chromium() -> str:
    path = shutil.which("chromium") or shutil.which("chromium-browser")
    if path is None:
        pytest.skip("chromium not installed: apt-get install chromium (tests/run.sh does it as root)")
    return path


class _Hostile(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        body = HOSTILE_BODY.encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        pass


class _Dom(HTMLParser):
    """Elements (tag, attributes, enclosing row's data-probe) and the text of each row."""

    def __init__(self) -> None:
        super().__init__()
        self.elements: list[tuple[str, dict[str, str | None], str | None]] = []
        self.rows: dict[str, dict[str, Any]] = {}
        self.alerts: list[str] = []
        self._row: str | None = None
        self._alert_row = False
        self.text: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        if tag == "tr":
            self._row = a.get("data-probe")
            self._alert_row = "data-alert" in a
            if self._row is not None:
                self.rows[self._row] = {"state": a.get("data-state"), "text": [], "svg": 0, "points": 0}
        if self._row is not None and tag == "svg" and "spark" in (a.get("class") or ""):
            self.rows[self._row]["svg"] += 1
        if self._row is not None and tag == "polyline":
            self.rows[self._row]["points"] = len((a.get("points") or "").split())
        self.elements.append((tag, a, self._row))

    def handle_endtag(self, tag: str) -> None:
        if tag == "tr":
            self._row, self._alert_row = None, False

    def handle_data(self, data: str) -> None:
        self.text.append(data)
        if self._row is not None:
            self.rows[self._row]["text"].append(data)
        if self._alert_row:
            self.alerts.append(data)


@pytest.fixture
def stack(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, Any]]:
    monkeypatch.setenv("PYTHONPATH", str(REPO))  # the stand-in process imports tests.standin
    good, _ = asgard_in_thread()
    port = free_port()  # a process of its own, so stopping it closes its keep-alive connections too
    doomed = start_proc(
        "asgard-doomed",
        [sys.executable, "-m", "tests.standin.asgard", "--port", str(port)],
        tmp_path,
        f"http://127.0.0.1:{port}/mlops/status",
    )
    hostile = ThreadingHTTPServer(("127.0.0.1", 0), _Hostile)
    threading.Thread(target=hostile.serve_forever, daemon=True).start()
    hook = webhook_in_thread()
    urls = {
        "good": good.url,
        "doomed": f"http://127.0.0.1:{port}",
        "hostile": f"http://127.0.0.1:{hostile.server_address[1]}",
    }
    config = {
        "location": "eu-west",
        "targets": [{"name": n, "kind": "asgard", "url": u} for n, u in urls.items()],
        "probes": [
            {"name": f"{n}_api", "target": n, "scenario": "asgard", "interval": "1s", "timeout": "800ms"} for n in urls
        ],
        "alerting": {
            "failure_threshold": 2,
            "startup_grace": "0s",
            "receivers": [{"kind": "webhook", "url": hook.url + "/hook", "name": "oncall"}],
        },
    }
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config), encoding="utf-8")
    daemon = DaemonProcess(path, tmp_path).start()
    yield {"daemon": daemon, "doomed": doomed, "tmp": tmp_path}
    daemon.stop()
    hook.stop()
    hostile.shutdown()
    hostile.server_close()
    good.stop()
    doomed.stop()


def _browser(chromium: str, tmp: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [
            chromium,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--no-first-run",
            f"--user-data-dir={tmp / 'chromium-profile'}",
            *args,
        ],
        capture_output=True,
        text=True,
        timeout=90,
    )


@pytest.mark.integration
def test_status_page_in_headless_chromium(stack: dict[str, Any]) -> None:
    chromium = _chromium()
    daemon: DaemonProcess = stack["daemon"]
    tmp: Path = stack["tmp"]

    def runs(probe: str) -> int:
        data = httpx.get(daemon.url + "/status").json()
        return next(p["runs"] for p in data["probes"] if p["name"] == probe)

    wait_for(lambda: all(runs(p) >= 3 for p in ("good_api", "doomed_api", "hostile_api")), 30, "three runs each")
    stack["doomed"].stop()  # its server is gone: the probe fails, then SyntheticProbeFailing fires
    wait_for(
        lambda: (
            any(
                a["labels"]["probe"] == "doomed_api" for a in httpx.get(daemon.url + "/status").json().get("alerts", [])
            )
            or "doomed_api</td>" in httpx.get(daemon.url + "/").text.split('id="alerts"')[-1]
        ),
        30,
        "the doomed probe's alert to fire",
    )
    created = httpx.post(
        daemon.url + "/api/v1/maintenance", json={"name": HOSTILE_WINDOW, "probes": ["hostile_api"], "duration": "1h"}
    )
    assert created.status_code == 201, created.text

    done = _browser(chromium, tmp, "--dump-dom", daemon.url + "/")
    assert done.returncode == 0, done.stderr[-2000:]
    dom = _Dom()
    dom.feed(done.stdout)

    assert set(dom.rows) == {"good_api", "doomed_api", "hostile_api"}, dom.rows.keys()
    for probe, row in dom.rows.items():
        assert row["svg"] == 1 and row["points"] >= 3, (probe, row)
    assert dom.rows["good_api"]["state"] == "passing"
    assert dom.rows["doomed_api"]["state"] == "failing"
    assert "unreachable" in "".join(dom.rows["doomed_api"]["text"])
    assert dom.rows["hostile_api"]["state"] == "maintenance"
    alert_text = " ".join(dom.alerts)
    assert "SyntheticProbeFailing" in alert_text and "doomed_api" in alert_text and "oncall" in alert_text

    # Hostile texts are shown as text: Chromium built no element from them.
    assert not [e for e in dom.elements if e[0] in ("script", "img") or e[1].get("id") == "injected"]
    assert not [e for e in dom.elements if any(k.startswith("on") for k in e[1])]
    text = "".join(dom.text)
    assert HOSTILE_BODY in "".join(dom.rows["hostile_api"]["text"]), dom.rows["hostile_api"]["text"]
    assert HOSTILE_WINDOW in text

    shot = tmp / "status-page.png"
    done = _browser(
        chromium, tmp, "--hide-scrollbars", "--window-size=1400,760", f"--screenshot={shot}", daemon.url + "/"
    )
    assert done.returncode == 0 and shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", done.stderr[-2000:]
    print(f"status page screenshot: {shot}")
    copy_to = os.environ.get("STATUS_PAGE_SCREENSHOT")
    if copy_to:
        shutil.copy(shot, copy_to)
