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

    def verdicts(self) -> dict[str, Any]:
        """GET /api/v1/verdicts: what a peer needs for a quorum vote, and nothing more.

        The latest verdict of each own probe, with its age by this daemon's clock (so the
        asker needs no synchronised clock), its interval and timeout (so the asker can
        tell a fresh verdict from a stale one), and whether this daemon is healthy (a
        wedged scheduler or a broken alert engine makes its old verdicts worthless).
        """
        config = self._config()
        settings = {p.name: p for p in config.probes}
        names = self._probes()
        latest = self.history.latest(names)
        now = time.time()
        probes: dict[str, Any] = {}
        for name in names:
            result, probe = latest.get(name), settings.get(name)
            if result is None or probe is None:
                continue
            verdict: dict[str, Any] = {
                "target": result.target,
                "ok": result.ok,
                "started_at": round(result.started_at, 3),
                "age": round(now - result.started_at, 3),
                "interval": probe.interval,
                "timeout": result.timeout_seconds,
            }
            if not result.ok:
                verdict["reason"] = result.reason.value if result.reason is not None else None
                verdict["reasons"] = sorted(r.value for r in result.reasons)
                verdict["component"] = result.diagnosis.component if result.diagnosis is not None else None
            probes[name] = verdict
        healthy, _ = self.healthy()
        return {"location": config.location, "healthy": healthy and self._alerting_ok(), "probes": probes}
