"""The people-facing routes: `/`, `/probe/<name>`, `/badge/...`, `/api/v1/maintenance`.

Called from the HTTP server's thread with the method, path, query and body; answers
(status, body, content type), or None for a path that is not one of these. Writes (POST
and DELETE of maintenance windows) are only reached with --web.enable-lifecycle: the
server checks that before, as for /-/reload.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any
from urllib.parse import parse_qs, unquote

from monitor.durations import format_duration, parse_duration
from monitor.maintenance import MaintenanceError
from monitor.web.pages.badges import status_badge, uptime_badge
from monitor.web.pages.data import PageSource
from monitor.web.pages.render import probe_page, status_page

Answer = tuple[int, bytes, str]
HTML = "text/html; charset=utf-8"
SVG = "image/svg+xml"
JSON = "application/json"
TEXT = "text/plain; charset=utf-8"
MAX_UPTIME_WINDOW = 7 * 86400.0
API = "/api/v1/maintenance"


def _json(status: int, data: Any) -> Answer:
    return status, json.dumps(data).encode(), JSON


class Face:
    def __init__(self, source: PageSource, changed: Callable[[], None] = lambda: None) -> None:
        self.source = source
        self.changed = changed  # a runtime window was added or ended (persist it)

    def get(self, path: str, query: str) -> Answer | None:
        if path == "/":
            return 200, status_page(self.source.page()).encode(), HTML
        if path.startswith("/probe/"):
            name = unquote(path[len("/probe/") :])
            page = self.source.page(only=name)
            if not page.probes:
                return 404, f"no probe named {name!r}\n".encode(), TEXT
            return 200, probe_page(page, page.probes[0]).encode(), HTML
        if path.startswith("/badge/"):
            return self._badge(path[len("/badge/") :], query)
        if path == API:
            now = self.source.clock()
            return _json(200, {"windows": [w.as_dict(now) for w in self.source.maintenance.windows()]})
        return None

    def _badge(self, rest: str, query: str) -> Answer:
        if rest.endswith("/uptime.svg"):
            name = unquote(rest[: -len("/uptime.svg")])
            raw = (parse_qs(query).get("window") or ["24h"])[0]
            try:
                window = parse_duration(raw)
            except ValueError as exc:
                return 400, f"window: {exc}\n".encode(), TEXT
            if not 0 < window <= MAX_UPTIME_WINDOW:
                return 400, b"window: must be above 0 and at most 7 days (168h)\n", TEXT
            if not self._known(name):
                return 404, b"no such probe\n", TEXT
            ratio = self.source.history.uptime(name, window, time.time())
            return 200, uptime_badge(name, format_duration(window), ratio).encode(), SVG
        if rest.endswith(".svg"):
            name = unquote(rest[: -len(".svg")])
            page = self.source.page(only=name)
            if not page.probes:
                return 404, b"no such probe\n", TEXT
            return 200, status_badge(name, page.probes[0].state).encode(), SVG
        return 404, b"not found\n", TEXT

    def _known(self, name: str) -> bool:
        return any(p.name == name for p in self.source.probes())

    def post(self, path: str, body: bytes) -> Answer | None:
        if path != API:
            return None
        try:
            data = json.loads(body or b"null")
        except ValueError as exc:
            return _json(400, {"error": f"the body is not JSON: {exc}"})
        try:
            window = self.source.maintenance.create(data)
        except MaintenanceError as exc:
            return _json(400, {"error": str(exc)})
        self.changed()
        return _json(201, window.as_dict(self.source.clock()))

    def delete(self, path: str) -> Answer | None:
        if not path.startswith(API + "/"):
            return None
        wid = unquote(path[len(API) + 1 :])
        window = self.source.maintenance.delete(wid)
        if window is None:
            config = any(w.id == wid for w in self.source.maintenance.windows())
            message = "a config window ends by editing the config" if config else f"no runtime window {wid!r}"
            return _json(409 if config else 404, {"error": message})
        self.changed()
        return _json(200, {"deleted": wid})
