"""Build the pages' `Page` from what the daemon keeps (history, alerts, windows, config).

Runs in the HTTP server's thread: it reads the history under its lock, copies the
engine's firing alerts, and asks the windows once per render, never per probe.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from monitor import __version__
from monitor.alerting.alerts import Alert
from monitor.durations import format_duration
from monitor.maintenance import Maintenance, Window
from monitor.sinks.history import HistorySink
from monitor.web.pages.model import AlertRow, Page, ProbeRow, WindowRow
from monitor.web.pages.render import when


@dataclass(frozen=True)
class ProbeInfo:
    name: str
    target: str
    scenario: str


def window_rows(maintenance: Maintenance, now: float) -> list[WindowRow]:
    rows = []
    for w in maintenance.windows():
        covers = ", ".join([*(f"probe {p}" for p in sorted(w.probes)), *(f"target {t}" for t in sorted(w.targets))])
        if w.schedule:
            span = f"cron {w.schedule} ({w.timezone or 'UTC'}) for {format_duration(w.duration)}"
        else:
            span = f"{when(w.start)} .. {when(w.end)}"
        rows.append(WindowRow(w.id, w.name, w.origin, covers, span, w.current(now) is not None))
    return rows


@dataclass
class PageSource:
    """Where a page's values come from; every callable must be thread-safe."""

    history: HistorySink
    probes: Callable[[], Sequence[ProbeInfo]]
    maintenance: Maintenance
    identity: Callable[[], dict[str, Any]] = dict
    alerts: Callable[[], list[Alert]] = list
    receivers: Callable[[], list[str]] = list
    quorum: Callable[[str, str], str] = lambda target, probe: "no peers (local verdict)"
    target_diagnosis: Callable[[], dict[str, tuple[str, str]]] = dict
    reloaded_at: Callable[[], float | None] = lambda: None
    refresh_seconds: int | None = 15
    clock: Callable[[], float] = time.time

    def page(self, only: str | None = None) -> Page:
        now = self.clock()
        probes = [p for p in self.probes() if only is None or p.name == only]
        who = self.identity()
        location = who.get("location")
        covered: dict[str, Window] = self.maintenance.in_maintenance([(p.name, p.target) for p in probes], now)
        view = self.history.view([p.name for p in probes])
        rows = [
            ProbeRow(
                name=p.name,
                target=p.target,
                scenario=p.scenario,
                location=location,
                last=last,
                runs=runs,
                total_runs=count,
                maintenance=covered[p.name].name if p.name in covered else None,
                uptime_24h=uptime,
            )
            for p, (last, runs, count, uptime) in zip(probes, view)
        ]
        return Page(
            version=__version__,
            generated_at=now,
            probes=rows,
            alerts=self._alert_rows(),
            windows=window_rows(self.maintenance, now),
            target_diagnosis=self.target_diagnosis(),
            location=location,
            replica=who.get("replica"),
            shard=who.get("shard"),
            reloaded_at=self.reloaded_at(),
            refresh_seconds=self.refresh_seconds,
            failures=self.history.failures(only) if only is not None else [],
        )

    def _alert_rows(self) -> list[AlertRow]:
        receivers = tuple(self.receivers())
        rows = []
        for alert in self.alerts():
            target, probe = alert.labels.get("target", ""), alert.labels.get("probe", "")
            rows.append(
                AlertRow(
                    name=alert.name,
                    severity=alert.labels.get("severity", ""),
                    target=target,
                    probe=probe,
                    since=alert.starts_at,
                    receivers=receivers,
                    quorum=self.quorum(target, probe) if alert.name == "SyntheticProbeFailing" else "-",
                    summary=alert.annotations.get("summary", ""),
                )
            )
        return rows
