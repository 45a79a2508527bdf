"""The people-facing routes: `/`, `/probe/<name>`, `/badge/...`, `/api/v1/maintenance`.

Called from the HTTP server's thread with the method, path, query and body; answers
(status, body, content type), or None for a path that is not one of these. Writes (POST
and DELETE of maintenance windows) are only reached with --web.enable-lifecycle: the
server checks that before, as for /-/reload.
"""

from __future__ import annotations

import gzip
import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, NamedTuple
from urllib.parse import parse_qs, unquote

from monitor.durations import format_duration, parse_duration
from monitor.maintenance import MaintenanceError
from monitor.web.pages.badges import status_badge, uptime_badge
from monitor.web.pages.data import PageSource
from monitor.web.pages.render import RowCache, probe_page, status_page


class Answer(NamedTuple):
    status: int
    body: bytes
    content_type: str
    gzipped: bool = False  # the body is gzip (Content-Encoding), for a client that accepts it


@dataclass(frozen=True)
class _Rendered:
    at: float  # monotonic
    raw: bytes
    gzipped: bytes


HTML = "text/html; charset=utf-8"
SVG = "image/svg+xml"
JSON = "application/json"
TEXT = "text/plain; charset=utf-8"
MAX_UPTIME_WINDOW = 7 * 86400.0
API = "/api/v1/maintenance"
# A rendered status page is served for this long: the page refreshes every 15 s, and a
# client asking back to back (or many at once) must not take the GIL from the event loop
# that schedules the probes. Renders are bounded at one per TTL whatever the load.
PAGE_TTL_SECONDS = 2.0
GZIP_LEVEL = 6  # ~5 ms CPU for 1,000 probes; level 1 measured 134 KiB where 5-6 gave ~30 KiB
# Pages served a second at most, all clients together; a request over the rate waits its
# turn asleep (the GIL free for the loop), and one that would wait over PAGE_MAX_WAIT is a
# 429. Even a cached page costs the server thread a millisecond of GIL per request; a
# client asking back to back would otherwise take the loop's time and delay the probes.
PAGE_RATE = 20.0
PAGE_MAX_WAIT = 1.0


def _json(status: int, data: Any) -> Answer:
    return Answer(status, json.dumps(data).encode(), JSON)


class Face:
    def __init__(self, source: PageSource, changed: Callable[[], None] = lambda: None) -> None:
        self.source = source
        self.changed = changed  # a runtime window was added or ended (persist it)
        self.rows = RowCache()
        self._page_lock = threading.Lock()  # one render at a time
        self._page: _Rendered | None = None
        self._pace_lock = threading.Lock()
        self._next_slot = 0.0

    def get(self, path: str, query: str, gzip_ok: bool = False) -> Answer | None:
        if (path == "/" or path.startswith("/probe/")) and not self._paced():
            return Answer(429, b"too many requests for the status pages: retry in a second\n", TEXT)
        if path == "/":
            rendered = self._status_page()
            return Answer(200, rendered.gzipped, HTML, True) if gzip_ok else Answer(200, rendered.raw, HTML)
        if path.startswith("/probe/"):
            name = unquote(path[len("/probe/") :])
            page = self.source.page(only=name)
            if not page.probes:
                return Answer(404, f"no probe named {name!r}\n".encode(), TEXT)
            return Answer(200, probe_page(page, page.probes[0]).encode(), HTML)
        if path.startswith("/badge/"):
            return self._badge(path[len("/badge/") :], query)
        if path == API:
            now = self.source.clock()
            return _json(200, {"windows": [w.as_dict(now) for w in self.source.maintenance.windows()]})
        return None

    def _paced(self) -> bool:
        """Wait for this request's slot (PAGE_RATE a second); False when it is too far off."""
        with self._pace_lock:
            now = time.monotonic()
            slot = max(now, self._next_slot)
            if slot - now > PAGE_MAX_WAIT:
                return False
            self._next_slot = slot + 1.0 / PAGE_RATE
        if slot > now:
            time.sleep(slot - now)
        return True

    def _status_page(self) -> _Rendered:
        """The page, rendered at most once per PAGE_TTL_SECONDS; while one request renders,
        the others get the previous page instead of waiting (stale while revalidating).
        Gzipped once per render: 1,000 probes are ~900 KiB of HTML and ~30 KiB gzipped."""
        page = self._page
        if page is not None and time.monotonic() - page.at < PAGE_TTL_SECONDS:
            return page
        if not self._page_lock.acquire(blocking=page is None):
            assert page is not None
            return page
        try:
            page = self._page
            if page is None or time.monotonic() - page.at >= PAGE_TTL_SECONDS:
                raw = status_page(self.source.page(), cache=self.rows).encode()
                page = self._page = _Rendered(time.monotonic(), raw, gzip.compress(raw, GZIP_LEVEL))
            return page
        finally:
            self._page_lock.release()

    def _badge(self, rest: str, query: str) -> Answer:
        if rest.endswith("/uptime.svg"):
            name = unquote(rest[: -len("/uptime.svg")])
            raw = (parse_qs(query).get("window") or ["24h"])[0]
            try:
                window = parse_duration(raw)
            except ValueError as exc:
                return Answer(400, f"window: {exc}\n".encode(), TEXT)
            if not 0 < window <= MAX_UPTIME_WINDOW:
                return Answer(400, b"window: must be above 0 and at most 7 days (168h)\n", TEXT)
            if not self._known(name):
                return Answer(404, b"no such probe\n", TEXT)
            ratio = self.source.history.uptime(name, window, time.time())
            return Answer(200, uptime_badge(name, format_duration(window), ratio).encode(), SVG)
        if rest.endswith(".svg"):
            name = unquote(rest[: -len(".svg")])
            page = self.source.page(only=name)
            if not page.probes:
                return Answer(404, b"no such probe\n", TEXT)
            return Answer(200, status_badge(name, page.probes[0].state).encode(), SVG)
        return Answer(404, b"not found\n", TEXT)

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
        self._page = None  # the next page shows the new window
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
        self._page = None
        self.changed()
        return _json(200, {"deleted": wid})
