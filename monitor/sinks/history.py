"""Recent results per probe, for /status and /readyz (the cross-check keeps its own store).

Failures are kept in their own ring so that a stream of successes does not push the
last incident out of view.
"""

from __future__ import annotations

import threading
from collections import deque
from typing import Any

from monitor.results import ProbeResult


class HistorySink:
    name = "history"
    takes_monitor_faults = True  # /status shows the monitor's own trouble too

    def __init__(self, keep: int = 20, keep_failures: int = 50) -> None:
        self._keep = keep
        self._keep_failures = keep_failures
        self._lock = threading.Lock()
        self._last: dict[str, ProbeResult] = {}
        self._recent: dict[str, deque[bool]] = {}  # pass/fail only: 20 whole results are ~13 KB a probe
        self._failures: deque[ProbeResult] = deque(maxlen=keep_failures)
        self._runs: dict[str, int] = {}
        # One culprit per target: the stamp of its newest result (None: healthy).
        self._culprits: dict[str, dict[str, str] | None] = {}

    def handle(self, result: ProbeResult) -> None:
        with self._lock:
            self._last[result.probe] = result
            self._recent.setdefault(result.probe, deque(maxlen=self._keep)).append(result.ok)
            self._runs[result.probe] = self._runs.get(result.probe, 0) + 1
            culprit = result.target_diagnosis
            self._culprits[result.target] = culprit.as_dict() if culprit else None
            if not result.ok:
                self._failures.append(result)

    def last(self, probe: str) -> ProbeResult | None:
        with self._lock:
            return self._last.get(probe)

    def forget(self, probe: str) -> None:
        with self._lock:
            self._last.pop(probe, None)
            self._recent.pop(probe, None)
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
                        "recent_ok": list(self._recent.get(name, ())),
                        "last": last.as_dict() if last else None,
                    }
                )
            failures = [r.as_dict() for r in reversed(self._failures)]
            targets = {t: c for t, c in self._culprits.items() if any(r.target == t for r in self._last.values())}
        return {"probes": entries, "recent_failures": failures, "targets": targets}
