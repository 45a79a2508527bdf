"""The logic behind /healthz, /readyz and /status (the HTTP server calls it from its thread).

Liveness is the scheduler's heartbeat: the endpoints run in a thread of their own, so a
wedged event loop shows as a stale heartbeat, not as a hang. Readiness and status read
the history sink, which keeps the recent results for exactly this.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from monitor import __version__
from monitor.config import Config
from monitor.fleet import fleet_status, identity
from monitor.sinks.history import HistorySink
from monitor.web.verdicts import VerdictDocument


class EndpointLogic:
    def __init__(
        self,
        history: HistorySink,
        probes: Callable[[], list[str]],
        config: Callable[[], Config],
        scheduler_running: Callable[[], bool],
        stale_after: float,
        alerting_ok: Callable[[], bool] = lambda: True,
    ) -> None:
        self.history = history
        self._probes = probes
        self._config = config
        self._scheduler_running = scheduler_running
        self.stale_after = stale_after
        self._alerting_ok = alerting_ok
        self._verdicts = VerdictDocument()
        self._last_beat = time.monotonic()

    def beat(self) -> None:
        """The scheduler loop proved alive (its heartbeat job ran)."""
        self._last_beat = time.monotonic()

    def healthy(self) -> tuple[bool, str]:
        age = time.monotonic() - self._last_beat
        if not self._scheduler_running():
            return False, "scheduler is not running"
        if age > self.stale_after:
            return False, f"scheduler heartbeat is stale ({age:.1f}s old)"
        return True, f"ok (heartbeat {age:.1f}s ago)"

    def ready(self) -> tuple[bool, str]:
        names = self._probes()
        if self.history.all_ran(names):
            return True, "ok: every probe has run"
        waiting = [n for n in names if self.history.last(n) is None]
        return False, f"waiting for first run of: {', '.join(waiting)}"

    def status(self) -> dict[str, Any]:
        config = self._config()
        data = self.history.snapshot(self._probes())
        data["version"] = __version__
        data["healthy"], _ = self.healthy()
        data["ready"], _ = self.ready()
        data.update(identity(config))
        data["fleet"] = fleet_status(config)
        return data

    def verdicts(self) -> bytes:
        """GET /api/v1/verdicts (monitor/web/verdicts.py): what a peer needs for a quorum vote.

        The latest verdict of each own probe with its interval and timeout (so the asker
        can tell a fresh verdict from a stale one), and whether this daemon is healthy (a
        wedged scheduler or a broken alert engine makes its old verdicts worthless).
        """
        config = self._config()
        intervals = {p.name: p.interval for p in config.probes}
        names = self._probes()
        latest = self.history.latest(names)
        rows = ((n, latest[n], intervals[n]) for n in names if n in latest and n in intervals)
        healthy, _ = self.healthy()
        return self._verdicts.render(config.location, healthy and self._alerting_ok(), rows)
