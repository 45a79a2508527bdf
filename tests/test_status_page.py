"""The status page, badges and maintenance windows, in process (the daemon tests are
tests/test_maintenance_e2e.py and tests/test_status_page_browser.py).

- config windows: every bad window is exit 2 with one line naming the field;
- runtime windows: created, listed, ended, persisted and restored; cron windows open and close;
- the page escapes every value (a hostile name or server text stays text), badges are SVG;
- the HTTP routes honour the web config (basic auth) and --web.enable-lifecycle;
- `check --format html` writes the page for a one-off run.
"""

from __future__ import annotations

import base64
import datetime as dt
import json
import subprocess
import sys
import threading
import time
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import bcrypt
import httpx
import pytest
import yaml

from monitor.config import ConfigError, load_config
from monitor.maintenance import Maintenance, MaintenanceError
from monitor.results import Diagnosis, ProbeResult, Reason, StepResult
from monitor.sinks.history import HistorySink
from monitor.web.face import PAGE_MAX_WAIT, PAGE_RATE, Face
from monitor.web.pages.badges import COLORS, status_badge, uptime_badge
from monitor.web.pages.data import PageSource, ProbeInfo
from monitor.web.pages.render import RowCache, probe_page, status_page
from monitor.web.server import Endpoints, MonitorHTTPServer
from monitor.web.webconfig import ServerSecurity, load_web_config
from tests.servers import REPO
from tests.standin.asgard import AsgardServer

HOSTILE = '<script>alert("x")</script><img src=x onerror=alert(1)>'
BASE = {
    "targets": [{"name": "asgard", "kind": "asgard", "url": "http://127.0.0.1:9"}],
    "probes": [{"name": "asgard_api", "target": "asgard", "scenario": "asgard"}],
}


def _config(tmp_path: Path, windows: list[dict[str, Any]]) -> Path:
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump({**BASE, "maintenance": windows}), encoding="utf-8")
    return path


# ----------------------------------------------------------------- config validation


@pytest.mark.parametrize(
    ("window", "field", "words"),
    [
        (
            {"name": "w", "probes": ["asgard_api"], "start": "2026-12-20T03:00:00Z", "end": "2026-12-20T02:00:00Z"},
            "maintenance[0].end",
            "is not after start",
        ),
        (
            {"name": "w", "probes": ["nope"], "start": "2026-12-20T02:00:00Z", "end": "2026-12-20T03:00:00Z"},
            "maintenance[0].probes",
            "no probe named 'nope'",
        ),
        (
            {"name": "w", "targets": ["mlflow"], "schedule": "0 2 * * *", "duration": "30m"},
            "maintenance[0].targets",
            "no target named 'mlflow'",
        ),
        ({"name": "w", "targets": ["asgard"], "schedule": "0 25 * * *", "duration": "30m"}, "schedule", "bad cron"),
        ({"name": "w", "targets": ["asgard"], "schedule": "0 2 * *", "duration": "30m"}, "schedule", "five cron"),
        ({"name": "w", "targets": ["asgard"], "schedule": "0 2 * * *"}, "duration", "needs a `duration`"),
        (
            {"name": "w", "targets": ["asgard"], "schedule": "0 2 * * *", "duration": "1h", "timezone": "Mars/Base"},
            "maintenance[0].timezone",
            "unknown time zone",
        ),
        ({"name": "w", "start": "2026-12-20T02:00:00Z", "end": "2026-12-20T03:00:00Z"}, "probes", "needs `probes:`"),
    ],
)
@pytest.mark.integration
def test_a_bad_window_is_exit_2_naming_the_field(
    tmp_path: Path, window: dict[str, Any], field: str, words: str
) -> None:
    path = _config(tmp_path, [window])
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    message = str(caught.value)
    assert field in message and words in message and "\n" not in message, message
    done = subprocess.run(
        [sys.executable, "-m", "monitor", "config", "validate", str(path)], capture_output=True, text=True, cwd=REPO
    )
    assert done.returncode == 2 and field in done.stderr and len(done.stderr.strip().splitlines()) == 1, done.stderr


def test_good_windows_load(tmp_path: Path) -> None:
    config = load_config(
        _config(
            tmp_path,
            [
                {"name": "db", "probes": ["asgard_api"], "start": "2026-12-20T02:00:00", "end": "2026-12-20T03:00:00Z"},
                {"name": "n", "targets": ["asgard"], "schedule": "0 2 * * *", "duration": "30m", "timezone": "UTC"},
            ],
        )
    )
    assert config.maintenance[0].start == dt.datetime(2026, 12, 20, 2, tzinfo=dt.UTC)  # naive is UTC
    assert config.maintenance[1].duration == 1800


# ----------------------------------------------------------------- windows at run time


class Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def _ts(text: str) -> float:
    return dt.datetime.fromisoformat(text).replace(tzinfo=dt.UTC).timestamp()


def test_cron_window_opens_and_closes_in_its_time_zone(tmp_path: Path) -> None:
    config = load_config(
        _config(
            tmp_path,
            [
                {
                    "name": "n",
                    "targets": ["asgard"],
                    "schedule": "0 2 * * *",
                    "duration": "30m",
                    "timezone": "Europe/Berlin",
                }
            ],
        )
    )
    clock = Clock(0)
    windows = Maintenance(clock)
    windows.configure(config.maintenance, {"asgard_api"}, {"asgard"})
    # 02:00 in Berlin in December is 01:00 UTC.
    for at, inside in [
        ("2026-12-20T00:59:59", False),
        ("2026-12-20T01:00:00", True),
        ("2026-12-20T01:29:59", True),
        ("2026-12-20T01:30:00", False),
        ("2026-12-21T01:10:00", True),
    ]:
        clock.now = _ts(at)
        assert (windows.active_for("asgard_api", "asgard") is not None) is inside, at
        assert windows.active_for("other", "elsewhere") is None, at


def test_runtime_windows_are_validated_listed_ended_and_restored() -> None:
    clock = Clock(_ts("2026-12-20T02:00:00"))
    windows = Maintenance(clock)
    windows.configure([], {"asgard_api", "mlflow_read"}, {"asgard", "mlflow"})
    for body, words in [
        ({"name": "x", "probes": ["nope"], "duration": "5m"}, "no probe named 'nope'"),
        ({"name": "x", "probes": ["asgard_api"], "duration": "soon"}, "duration"),
        (
            {"name": "x", "probes": ["asgard_api"], "start": "2026-12-20T01:00:00Z", "end": "2026-12-20T01:30:00Z"},
            "over",
        ),
        ({"name": "x", "probes": ["asgard_api"]}, "end"),
        ([1, 2], "JSON object"),
    ]:
        with pytest.raises(MaintenanceError, match=words):
            windows.create(body)  # type: ignore[arg-type]
    window = windows.create({"name": HOSTILE, "probes": ["asgard_api"], "duration": "10m"})
    assert windows.active_for("asgard_api", "asgard") == window
    assert windows.active_for("mlflow_read", "mlflow") is None
    saved = windows.dump()
    clock.now += 60
    later = Maintenance(clock)
    later.configure([], {"asgard_api"}, {"asgard"})
    assert later.restore(json.loads(json.dumps(saved))) == 1
    assert later.active_for("asgard_api", "asgard") is not None
    assert later.delete(window.id) is not None and later.active_for("asgard_api", "asgard") is None
    clock.now += 600  # past its end: an expired window is not restored
    assert Maintenance(clock).restore(saved) == 0


# ----------------------------------------------------------------- page and badges


def _result(probe: str, ok: bool, started: float, error: str | None = None) -> ProbeResult:
    step = StepResult(
        "status",
        ok,
        0.05 if ok else 0.2,
        reason=None if ok else Reason.INVALID_RESPONSE,
        error=None if ok else error,
        method="GET",
        path="/mlops/status",
    )
    return ProbeResult(
        probe=probe,
        target="asgard",
        scenario="asgard",
        started_at=started,
        duration_seconds=step.duration_seconds,
        steps=(step,),
        timeout_seconds=10,
        diagnosis=None if ok else Diagnosis("asgard", error or ""),
    )


class _Elements(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict[str, str | None]]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))


def _source(history: HistorySink, names: list[str], windows: Maintenance | None = None) -> PageSource:
    return PageSource(
        history=history,
        probes=lambda: [ProbeInfo(n, "asgard", "asgard") for n in names],
        maintenance=windows or Maintenance(),
    )


def test_the_page_escapes_every_value_it_shows() -> None:
    history = HistorySink()
    now = 1_800_000_000.0
    history.handle(_result(HOSTILE, True, now - 60))
    history.handle(_result(HOSTILE, False, now - 30, error=f"expected JSON, got HTML: {HOSTILE}"))
    windows = Maintenance()
    windows.configure([], {HOSTILE}, {"asgard"})
    windows.create({"name": HOSTILE, "targets": ["asgard"], "duration": "1h"})
    page = _source(history, [HOSTILE], windows).page()
    for html in (
        status_page(page),
        probe_page(_source(history, [HOSTILE], windows).page(only=HOSTILE), page.probes[0]),
    ):
        parser = _Elements()
        parser.feed(html)
        tags = {tag for tag, _ in parser.tags}
        assert "script" not in tags and "img" not in tags, tags
        assert not any(k.startswith("on") for _, attrs in parser.tags for k in attrs)
        assert "&lt;script&gt;" in html and "<script>" not in html


def test_row_shows_sparkline_state_and_ratio() -> None:
    history = HistorySink(keep=5)
    for i in range(7):
        history.handle(_result("p", i != 5, 1_800_000_000.0 + i))
    row = _source(history, ["p"]).page().probes[0]
    assert row.state == "passing" and len(row.runs) == 5 and row.success_ratio == pytest.approx(0.8)
    html = status_page(_source(history, ["p"]).page())
    svg = html[html.index('<svg class="spark"') : html.index("</svg>") + 6]
    root = ET.fromstring(svg)
    ns = "{http://www.w3.org/2000/svg}"
    assert len(root.find(f"{ns}polyline").get("points", "").split()) == 5  # type: ignore[union-attr]
    assert len(root.findall(f"{ns}circle")) == 1  # the one failed run


@pytest.mark.parametrize("state", sorted(COLORS))
def test_status_badges_are_svg(state: str) -> None:
    root = ET.fromstring(status_badge("asgard_api", state))
    assert root.tag == "{http://www.w3.org/2000/svg}svg"
    texts = [t.text for t in root.iter("{http://www.w3.org/2000/svg}text")]
    assert texts == ["asgard_api", state]


@pytest.mark.parametrize("ratio", [None, 0.5, 0.97, 0.999, 1.0])
def test_uptime_badges_are_svg(ratio: float | None) -> None:
    root = ET.fromstring(uptime_badge(HOSTILE, "24h", ratio))
    assert root.tag == "{http://www.w3.org/2000/svg}svg"


def test_uptime_counts_whole_hours_of_the_window() -> None:
    history = HistorySink()
    base = 1_800_000_000.0 - 1_800_000_000.0 % 3600
    for hour in range(30):  # 30 hours: the first 6 all failures, then all passing
        for i in range(4):
            history.handle(_result("p", hour >= 6, base + hour * 3600 + i * 600))
    now = base + 29 * 3600 + 1800
    # 24h back from hour 29.5 is hour 5.5: hours 5..29 count, hour 5 failed (whole hours).
    assert history.uptime("p", 24 * 3600, now) == pytest.approx(24 / 25)
    assert history.uptime("p", 20 * 3600, now) == 1.0
    assert history.uptime("p", 30 * 3600, now) == pytest.approx(24 / 30)
    assert history.uptime("q", 3600, now) is None


# ----------------------------------------------------------------- the HTTP routes


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[str, Maintenance, dict[str, str]]]:
    web = tmp_path / "web.yml"
    web.write_text(
        yaml.safe_dump({"basic_auth_users": {"ops": bcrypt.hashpw(b"s3cret", bcrypt.gensalt(4)).decode()}}),
        encoding="utf-8",
    )
    history = HistorySink()
    history.handle(_result("asgard_api", False, 1_800_000_000.0, error="boom"))
    windows = Maintenance()
    windows.configure([], {"asgard_api"}, {"asgard"})
    changes: list[int] = []
    face = Face(_source(history, ["asgard_api"], windows), lambda: changes.append(1))
    endpoints = Endpoints(
        metrics=lambda: [b""],
        healthy=lambda: (True, "ok"),
        ready=lambda: (True, "ok"),
        status=dict,
        reload=lambda: (True, "ok"),
        face=face,
    )
    servers = []
    for lifecycle in (True, False):
        server = MonitorHTTPServer(
            ("127.0.0.1", 0), endpoints, security=ServerSecurity(load_web_config(web)), lifecycle=lifecycle
        )
        server.start()
        servers.append(server)
    auth = {"Authorization": "Basic " + base64.b64encode(b"ops:s3cret").decode()}
    urls = {
        "on": f"http://127.0.0.1:{servers[0].server_address[1]}",
        "off": f"http://127.0.0.1:{servers[1].server_address[1]}",
    }
    yield urls["on"], windows, {"off": urls["off"], **auth}
    for server in servers:
        server.stop()
    assert changes  # persisted at least once


def test_routes_honour_web_config_and_lifecycle(served: tuple[str, Maintenance, dict[str, str]]) -> None:
    url, windows, extra = served
    off = extra.pop("off")
    auth = extra
    for path in (
        "/",
        "/probe/asgard_api",
        "/badge/asgard_api.svg",
        "/badge/asgard_api/uptime.svg",
        "/api/v1/maintenance",
    ):
        assert httpx.get(url + path).status_code == 401, path
        answer = httpx.get(url + path, headers=auth)
        assert answer.status_code == 200, (path, answer.text)
    page = httpx.get(url + "/", headers=auth)  # httpx asks for gzip, as browsers do
    assert page.headers["content-type"].startswith("text/html") and page.headers["content-encoding"] == "gzip"
    plain = httpx.get(url + "/", headers={**auth, "Accept-Encoding": "identity"})
    assert "content-encoding" not in plain.headers and plain.text == page.text
    assert ET.fromstring(httpx.get(url + "/badge/asgard_api.svg", headers=auth).text).tag.endswith("svg")
    assert httpx.get(url + "/badge/nope.svg", headers=auth).status_code == 404
    assert httpx.get(url + "/badge/asgard_api/uptime.svg?window=9d", headers=auth).status_code == 400
    assert httpx.get(url + "/probe/nope", headers=auth).status_code == 404
    body = {"name": "db upgrade", "probes": ["asgard_api"], "duration": "30m"}
    assert httpx.post(url + "/api/v1/maintenance", json=body).status_code == 401
    assert httpx.post(off + "/api/v1/maintenance", json=body, headers=auth).status_code == 403
    assert httpx.delete(off + "/api/v1/maintenance/x", headers=auth).status_code == 403
    bad = httpx.post(url + "/api/v1/maintenance", json={**body, "probes": ["nope"]}, headers=auth)
    assert bad.status_code == 400 and "no probe named 'nope'" in bad.json()["error"]
    created = httpx.post(url + "/api/v1/maintenance", json=body, headers=auth)
    assert created.status_code == 201 and created.json()["active"] is True, created.text
    wid = created.json()["id"]
    listed = httpx.get(url + "/api/v1/maintenance", headers=auth).json()["windows"]
    assert [w["id"] for w in listed] == [wid]
    badge = ET.fromstring(httpx.get(url + "/badge/asgard_api.svg", headers=auth).text)
    assert [t.text for t in badge.iter("{http://www.w3.org/2000/svg}text")][-1] == "maintenance"
    assert "maintenance" in httpx.get(url + "/", headers=auth).text
    assert httpx.delete(url + f"/api/v1/maintenance/{wid}", headers=auth).json() == {"deleted": wid}
    assert httpx.delete(url + f"/api/v1/maintenance/{wid}", headers=auth).status_code == 404
    assert windows.active_for("asgard_api", "asgard") is None
    failing = ET.fromstring(httpx.get(url + "/badge/asgard_api.svg", headers=auth).text)
    assert [t.text for t in failing.iter("{http://www.w3.org/2000/svg}text")][-1] == "failing"


# ----------------------------------------------------------------- check --format html


@pytest.mark.integration
def test_check_format_html_writes_the_page(tmp_path: Path) -> None:
    asgard = AsgardServer(("127.0.0.1", 0))
    threading.Thread(target=asgard.serve_forever, daemon=True).start()
    try:
        path = tmp_path / "config.yaml"
        config = {
            "targets": [
                {"name": "asgard", "kind": "asgard", "url": asgard.url},
                {"name": "dead", "kind": "asgard", "url": "http://127.0.0.1:9"},
            ],
            "probes": [
                {"name": "asgard_api", "target": "asgard", "scenario": "asgard"},
                {"name": "dead_api", "target": "dead", "scenario": "asgard"},
            ],
            "location": "eu-west",
        }
        path.write_text(yaml.safe_dump(config), encoding="utf-8")
        done = subprocess.run(
            [sys.executable, "-m", "monitor", "check", "--config", str(path), "--format", "html", "--repeat", "2"],
            capture_output=True,
            text=True,
            cwd=REPO,
            timeout=60,
        )
    finally:
        asgard.stop()
    assert done.returncode == 1, done.stderr  # one probe failed
    html = done.stdout
    assert html.startswith("<!DOCTYPE html>") and 'http-equiv="refresh"' not in html
    assert 'data-probe="asgard_api" data-state="passing"' in html
    assert 'data-probe="dead_api" data-state="failing"' in html and "unreachable" in html
    assert "location eu-west" in html and html.count('<svg class="spark"') == 2


def test_row_cache_renders_a_row_again_when_its_probe_ran() -> None:
    history = HistorySink()
    history.handle(_result("p", True, 1_800_000_000.0))
    history.handle(_result("q", True, 1_800_000_000.0))
    cache = RowCache()
    source = _source(history, ["p", "q"])
    first = status_page(source.page(), cache=cache)
    assert first.count('data-state="passing"') == 2
    history.handle(_result("p", False, 1_800_000_010.0, error="now broken"))
    second = status_page(source.page(), cache=cache)
    assert 'data-probe="p" data-state="failing"' in second and "now broken" in second
    assert 'data-probe="q" data-state="passing"' in second
    uncached = status_page(source.page())
    cut = slice(uncached.index('<table id="probes">'), uncached.index("<h2>Maintenance"))
    assert uncached[cut] == second[cut]  # the cache changes nothing on the page


def test_status_pages_are_paced_not_refused_until_the_queue_is_long() -> None:
    history = HistorySink()
    history.handle(_result("p", True, 1_800_000_000.0))
    face = Face(_source(history, ["p"]))
    started = time.monotonic()
    answers = [face.get("/", "") for _ in range(6)]
    took = time.monotonic() - started
    assert all(a is not None and a.status == 200 for a in answers)
    assert took >= 5 / PAGE_RATE * 0.9, took  # six pages back to back: five waits for a slot
    face._next_slot = time.monotonic() + PAGE_MAX_WAIT + 1  # a queue longer than a client should wait
    refused = face.get("/", "")
    assert refused is not None and refused.status == 429
    badge = face.get("/badge/p.svg", "")
    assert badge is not None and badge.status == 200  # badges are not paced
