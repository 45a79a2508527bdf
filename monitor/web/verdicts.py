"""The body of GET /api/v1/verdicts: each own probe's latest verdict, compact and cached.

Peers ask once per quorum tick while they hold an alert, so in a wide outage with 1,000
failing probes every peer asks every second. Each probe's row is a JSON array under the
document's `columns` (about 110 bytes a probe instead of 175 as an object) and is encoded
once per result: a request joins the cached rows, so serving it costs a string join, not
1,000 encodings. The document carries this daemon's clock (`now`): the asker computes a
verdict's age as `now - started_at` with no synchronised clock.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterable

from monitor.results import ProbeResult

COLUMNS = ("target", "ok", "started_at", "interval", "timeout", "reason", "reasons", "component")


def row(result: ProbeResult, interval: float) -> list[object]:
    """One probe's verdict under COLUMNS (reason, reasons and component only for a failure)."""
    failed = not result.ok
    return [
        result.target,
        result.ok,
        round(result.started_at, 3),
        interval,
        result.timeout_seconds,
        result.reason.value if failed and result.reason is not None else None,
        sorted(r.value for r in result.reasons) if failed else [],
        result.diagnosis.component if failed and result.diagnosis is not None else None,
    ]


class VerdictDocument:
    """Builds the body; thread-safe (the HTTP server calls it from its request threads)."""

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self._rows: dict[str, tuple[ProbeResult, float, bytes]] = {}
        self._head = b'"columns":' + json.dumps(list(COLUMNS), separators=(",", ":")).encode()

    def render(self, location: str | None, healthy: bool, latest: Iterable[tuple[str, ProbeResult, float]]) -> bytes:
        """`latest`: (probe name, its last result, its interval) for each own probe that ran."""
        parts: list[bytes] = []
        with self._lock:
            fresh: dict[str, tuple[ProbeResult, float, bytes]] = {}
            for name, result, interval in latest:
                cached = self._rows.get(name)
                if cached is None or cached[0] is not result or cached[1] != interval:
                    encoded = (
                        json.dumps(name).encode()
                        + b":"
                        + json.dumps(row(result, interval), separators=(",", ":")).encode()
                    )
                    cached = (result, interval, encoded)
                fresh[name] = cached
                parts.append(cached[2])
            self._rows = fresh  # forgets removed probes
        head = json.dumps(
            {"location": location, "healthy": healthy, "now": round(self._clock(), 3)}, separators=(",", ":")
        )
        return head[:-1].encode() + b"," + self._head + b',"probes":{' + b",".join(parts) + b"}}"
