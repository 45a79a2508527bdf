"""Recent results per probe, for /status, /readyz, the status page and badges (the
cross-check keeps its own store).

Failures are kept in their own ring so that a stream of successes does not push the
last incident out of view. Per probe there is a small ring of (start, duration, ok) for
the page's sparkline, and hourly (ok, total) counts for a week for the uptime badge:
gatus keeps hourly buckets too, and a week of them is 169 pairs per probe where a week
of single runs of a 30 s probe would be 20,160.
"""

from __future__ import annotations

import threading
from collections import deque
from typing import Any, NamedTuple

from monitor.results import ProbeResult

HOUR = 3600.0
UPTIME_HOURS = 7 * 24  # the longest badge window
DAY = 86400.0


class Run(NamedTuple):
    """What the sparkline needs of one run."""

    started_at: float
    duration: float
    ok: bool


class HistorySink:
    name = "history"
    takes_monitor_faults = True  # /status shows the monitor's own trouble too

    def __init__(self, keep: int = 30, keep_failures: int = 50) -> None:
        self._keep = keep
        self._keep_failures = keep_failures
        self._lock = threading.Lock()
        self._last: dict[str, ProbeResult] = {}
        # Not whole results: 20 of them are ~13 KB a probe. A tuple, replaced per run, so
        # the status page takes it as it is instead of copying 1,000 rings per request.
        self._recent: dict[str, tuple[Run, ...]] = {}
        self._hours: dict[str, deque[list[float]]] = {}  # [hour start, ok runs, runs], oldest first
        self._uptime_day: dict[str, float | None] = {}
        self._failures: deque[ProbeResult] = deque(maxlen=keep_failures)
        self._runs: dict[str, int] = {}
        # One culprit per target: the stamp of its newest result (None: healthy).
        self._culprits: dict[str, dict[str, str] | None] = {}

    def handle(self, result: ProbeResult) -> None:
        with self._lock:
            self._last[result.probe] = result
            ok = result.ok
            kept = self._recent.get(result.probe, ())
            self._recent[result.probe] = (
                *kept[max(0, len(kept) - self._keep + 1) :],
                Run(result.started_at, result.duration_seconds, ok),
            )
            hours = self._hours.setdefault(result.probe, deque(maxlen=UPTIME_HOURS + 1))
            hour = result.started_at - result.started_at % HOUR
            if not hours or hours[-1][0] < hour:
                hours.append([hour, 0.0, 0.0])
            bucket = hours[-1]  # a result older than the newest hour counts there: close enough
            bucket[1] += ok
            bucket[2] += 1
            # The page's 24 h uptime, as of this run: O(25) here instead of O(probes x hours)
            # under the lock on every page render.
            self._uptime_day[result.probe] = _ratio(hours, result.started_at - DAY)
            self._runs[result.probe] = self._runs.get(result.probe, 0) + 1
            culprit = result.target_diagnosis
            self._culprits[result.target] = culprit.as_dict() if culprit else None
            if not result.ok:
                self._failures.append(result)

    def last(self, probe: str) -> ProbeResult | None:
        with self._lock:
            return self._last.get(probe)

    def latest(self, probes: list[str]) -> dict[str, ProbeResult]:
        """The last result of each of `probes` that has one, under one lock (O(probes))."""
        with self._lock:
            last = self._last
            return {name: last[name] for name in probes if name in last}

    def forget(self, probe: str) -> None:
        with self._lock:
            self._last.pop(probe, None)
            self._recent.pop(probe, None)
            self._hours.pop(probe, None)
            self._uptime_day.pop(probe, None)
            self._runs.pop(probe, None)

    def all_ran(self, probes: list[str]) -> bool:
        with self._lock:
            return all(p in self._last for p in probes)

    def snapshot(self, probes: list[str]) -> dict[str, Any]:
        """The /status document: configured probes first, then recent failures."""
        with self._lock:
            entries = []
            for name in probes:
                last = self._last.get(name)
                entries.append(
                    {
                        "name": name,
                        "runs": self._runs.get(name, 0),
                        "recent_ok": [run.ok for run in self._recent.get(name, ())],
                        "last": last.as_dict() if last else None,
                    }
                )
            failures = [r.as_dict() for r in reversed(self._failures)]
            targets = {t: c for t, c in self._culprits.items() if any(r.target == t for r in self._last.values())}
        return {"probes": entries, "recent_failures": failures, "targets": targets}

    def recent(self, probe: str) -> list[Run]:
        """The last runs of a probe, oldest first (the sparkline)."""
        with self._lock:
            return list(self._recent.get(probe, ()))

    def runs(self, probe: str) -> int:
        with self._lock:
            return self._runs.get(probe, 0)

    def uptime(self, probe: str, window: float, now: float) -> float | None:
        """Share of successful runs that started within `window` before `now`, counted in
        whole hours (the hour holding `now - window` is in); None without runs."""
        since = now - window
        with self._lock:
            hours = self._hours.get(probe)
            buckets = [b for b in hours if b[0] + HOUR > since] if hours else []
        total = sum(b[2] for b in buckets)
        return sum(b[1] for b in buckets) / total if total else None

    def failures(self, probe: str | None = None) -> list[ProbeResult]:
        """Kept failed runs, newest first (all probes, or one)."""
        with self._lock:
            kept = list(self._failures)
        return [r for r in reversed(kept) if probe is None or r.probe == probe]

    def view(self, probes: list[str]) -> list[tuple[ProbeResult | None, tuple[Run, ...], int, float | None]]:
        """(last, recent runs, run count, 24 h uptime as of the last run) per probe: plain
        lookups under the lock, nothing copied (the loop's `handle` waits on this lock)."""
        with self._lock:
            last, recent, runs, uptime = self._last, self._recent, self._runs, self._uptime_day
            return [(last.get(n), recent.get(n, ()), runs.get(n, 0), uptime.get(n)) for n in probes]


def _ratio(hours: deque[list[float]], since: float) -> float | None:
    ok = total = 0.0
    for bucket in reversed(hours):
        if bucket[0] + HOUR <= since:
            break
        ok += bucket[1]
        total += bucket[2]
    return ok / total if total else None
