"""Maintenance windows at run time: which probes are in one now.

Two sources: the config's `maintenance:` list (replaced on reload) and windows created
over HTTP (`POST /api/v1/maintenance`), which live in the alert state file so a restart
keeps them. What a window does: the alert sink holds the probe's alerts, the
`synthetic_probe_maintenance` gauge is 1 (the Prometheus rules and SLO rules exclude
those runs through it), and the status page and badges say "maintenance". Probes keep
running and recording: the data stays honest.

Thread-safe: the HTTP thread adds and lists windows while the loop asks `active_for`.
"""

from __future__ import annotations

import datetime as dt
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from apscheduler.triggers.cron import CronTrigger
from pydantic import ValidationError

from monitor.config.common import error_message, field_path, to_seconds
from monitor.config.maintenance import MaintenanceConfig, cron_trigger

RUNTIME_MAX = 1000  # windows created over HTTP; a loop in a script must not fill the state file


class MaintenanceError(ValueError):
    """A bad window request: the message is one line for the API answer."""


@dataclass(frozen=True)
class Window:
    """One window, config or runtime; times are Unix seconds."""

    id: str
    name: str
    origin: str  # "config" | "runtime"
    probes: frozenset[str] = frozenset()
    targets: frozenset[str] = frozenset()
    start: float | None = None
    end: float | None = None
    schedule: str | None = None
    timezone: str | None = None
    duration: float = 0.0
    created_at: float | None = None
    _cron: CronTrigger | None = field(default=None, compare=False, repr=False)

    def covers(self, probe: str, target: str) -> bool:
        return probe in self.probes or target in self.targets

    def current(self, now: float) -> tuple[float, float] | None:
        """The occurrence (start, end) that holds `now`, or None."""
        if self._cron is None:
            assert self.start is not None and self.end is not None
            return (self.start, self.end) if self.start <= now < self.end else None
        since = dt.datetime.fromtimestamp(now - self.duration, dt.UTC)
        fire = self._cron.get_next_fire_time(None, since)
        if fire is None:
            return None
        begin = fire.timestamp()
        return (begin, begin + self.duration) if begin <= now < begin + self.duration else None

    def expired(self, now: float) -> bool:
        return self._cron is None and self.end is not None and self.end <= now

    def as_dict(self, now: float) -> dict[str, Any]:
        occurrence = self.current(now)
        return {
            "id": self.id,
            "name": self.name,
            "origin": self.origin,
            "probes": sorted(self.probes),
            "targets": sorted(self.targets),
            "start": _iso(self.start),
            "end": _iso(self.end),
            "schedule": self.schedule,
            "timezone": self.timezone,
            "duration_seconds": self.duration or None,
            "active": occurrence is not None,
            "active_until": _iso(occurrence[1]) if occurrence else None,
        }


def _iso(ts: float | None) -> str | None:
    return None if ts is None else dt.datetime.fromtimestamp(ts, dt.UTC).isoformat().replace("+00:00", "Z")


def from_config(index: int, cfg: MaintenanceConfig, origin: str = "config", wid: str | None = None) -> Window:
    trigger = cron_trigger(cfg.schedule, cfg.timezone) if cfg.schedule else None
    return Window(
        id=wid or f"config-{index}",
        name=cfg.name,
        origin=origin,
        probes=frozenset(cfg.probes),
        targets=frozenset(cfg.targets),
        start=cfg.start.timestamp() if cfg.start else None,
        end=cfg.end.timestamp() if cfg.end else None,
        schedule=cfg.schedule,
        timezone=cfg.timezone,
        duration=cfg.duration or 0.0,
        _cron=trigger,
    )


class Maintenance:
    """The set of windows: the config's, and the runtime ones the API adds and deletes."""

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self._config: tuple[Window, ...] = ()
        self._runtime: dict[str, Window] = {}
        self._known: tuple[set[str], set[str]] = (set(), set())

    def configure(self, windows: Iterable[MaintenanceConfig], probes: set[str], targets: set[str]) -> None:
        """The config's windows and the names a runtime window may use (at start and reload)."""
        with self._lock:
            self._config = tuple(from_config(i, w) for i, w in enumerate(windows))
            self._known = (set(probes), set(targets))

    def windows(self) -> list[Window]:
        with self._lock:
            return [*self._config, *self._runtime.values()]

    def active(self, now: float | None = None) -> list[tuple[Window, float]]:
        """Windows open now, each with the end of its current occurrence."""
        now = self._clock() if now is None else now
        out = []
        for window in self.windows():
            occurrence = window.current(now)
            if occurrence is not None:
                out.append((window, occurrence[1]))
        return out

    def active_for(self, probe: str, target: str, now: float | None = None) -> Window | None:
        """The open window covering this probe, if any (the alert sink asks per result)."""
        now = self._clock() if now is None else now
        for window in self.windows():
            if window.covers(probe, target) and window.current(now) is not None:
                return window
        return None

    def in_maintenance(self, pairs: Iterable[tuple[str, str]], now: float | None = None) -> dict[str, Window]:
        """Probe name -> its open window, for many probes at once (page, gauge): the
        windows are evaluated once, not once per probe."""
        open_now = [w for w, _ in self.active(now)]
        if not open_now:
            return {}
        return {p: w for p, t in pairs for w in open_now if w.covers(p, t)}

    # -- runtime windows (the HTTP API) ------------------------------------------------

    def create(self, body: Mapping[str, Any]) -> Window:
        """A runtime window from the API's JSON: like a config entry; `start` defaults to now,
        and `duration` may stand in for `end`."""
        if not isinstance(body, Mapping):
            raise MaintenanceError("the body must be a JSON object")
        now = self._clock()
        data = dict(body)
        if data.get("schedule") is None:
            data.setdefault("start", dt.datetime.fromtimestamp(now, dt.UTC).isoformat())
            if "end" not in data and "duration" in data:
                try:
                    seconds = to_seconds(data.pop("duration"))
                except ValueError as exc:
                    raise MaintenanceError(f"duration: {exc}") from None
                data["end"] = _plus(data["start"], seconds)
        try:
            cfg = MaintenanceConfig.model_validate(data)
        except ValidationError as exc:
            first = exc.errors()[0]
            where = field_path(first["loc"])
            raise MaintenanceError(f"{where + ': ' if where else ''}{error_message(first)}") from None
        probes, targets = self._known
        for key, names, known in (("probes", cfg.probes, probes), ("targets", cfg.targets, targets)):
            unknown = [n for n in names if n not in known]
            if unknown:
                raise MaintenanceError(f"{key}: no {key[:-1]} named {unknown[0]!r}")
        window = from_config(0, cfg, origin="runtime", wid=uuid.uuid4().hex[:12])
        window = _with_created(window, now)
        if window.expired(now):
            raise MaintenanceError("end: the window is already over")
        with self._lock:
            self._drop_expired(now)
            if len(self._runtime) >= RUNTIME_MAX:
                raise MaintenanceError(f"{RUNTIME_MAX} runtime windows exist already; delete some first")
            self._runtime[window.id] = window
        return window

    def delete(self, wid: str) -> Window | None:
        """End a runtime window early; None when there is no such runtime window."""
        with self._lock:
            return self._runtime.pop(wid, None)

    def dump(self) -> list[dict[str, Any]]:
        """Runtime windows for the state file (expired ones are left out)."""
        now = self._clock()
        with self._lock:
            self._drop_expired(now)
            runtime = list(self._runtime.values())
        return [
            {
                "id": w.id,
                "name": w.name,
                "probes": sorted(w.probes),
                "targets": sorted(w.targets),
                "start": _iso(w.start),
                "end": _iso(w.end),
                "schedule": w.schedule,
                "timezone": w.timezone,
                "duration": w.duration or None,
                "created_at": w.created_at,
            }
            for w in runtime
        ]

    def restore(self, items: Any) -> int:
        """Runtime windows from the state file; unusable or expired entries are dropped."""
        if not isinstance(items, list):
            return 0
        now = self._clock()
        kept: dict[str, Window] = {}
        for item in items:
            if not isinstance(item, dict) or not isinstance(item.get("id"), str):
                continue
            fields = {k: v for k, v in item.items() if k not in ("id", "created_at") and v is not None}
            try:
                cfg = MaintenanceConfig.model_validate(fields)
            except ValidationError:
                continue
            window = _with_created(from_config(0, cfg, origin="runtime", wid=item["id"]), item.get("created_at"))
            if not window.expired(now):
                kept[window.id] = window
        with self._lock:
            self._runtime = kept
        return len(kept)

    def _drop_expired(self, now: float) -> None:
        for wid in [w.id for w in self._runtime.values() if w.expired(now)]:
            del self._runtime[wid]


def _with_created(window: Window, created_at: Any) -> Window:
    return replace(window, created_at=float(created_at) if isinstance(created_at, (int, float)) else None)


def _plus(start: Any, seconds: float) -> str:
    try:
        begin = dt.datetime.fromisoformat(str(start).replace("Z", "+00:00"))
    except ValueError:
        raise MaintenanceError(f"start: not an ISO 8601 timestamp: {start!r}") from None
    if begin.tzinfo is None:
        begin = begin.replace(tzinfo=dt.UTC)
    return (begin + dt.timedelta(seconds=seconds)).isoformat()
