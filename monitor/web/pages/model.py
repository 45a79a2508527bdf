"""What the pages show, as plain values: the daemon and `check --format html` both build it."""

from __future__ import annotations

from dataclasses import dataclass, field

from monitor.results import ProbeResult
from monitor.sinks.history import Run


@dataclass(slots=True)
class ProbeRow:
    """One probe's row (not frozen: 1,000 of them are made per request, and a frozen
    dataclass's __init__ costs several times as much)."""

    name: str
    target: str
    scenario: str
    location: str | None
    last: ProbeResult | None
    runs: tuple[Run, ...]
    total_runs: int
    maintenance: str | None = None  # the open window's name
    uptime_24h: float | None = None

    @property
    def state(self) -> str:
        """passing | failing | maintenance | unknown (the badge's words)."""
        if self.maintenance is not None:
            return "maintenance"
        if self.last is None:
            return "unknown"
        return "passing" if self.last.ok else "failing"

    @property
    def success_ratio(self) -> float | None:
        """Over the kept runs (the sparkline's)."""
        return sum(r.ok for r in self.runs) / len(self.runs) if self.runs else None


@dataclass(frozen=True)
class AlertRow:
    name: str
    severity: str
    target: str
    probe: str
    since: float
    receivers: tuple[str, ...]
    quorum: str
    summary: str = ""


@dataclass(frozen=True)
class WindowRow:
    id: str
    name: str
    origin: str
    covers: str
    when: str
    active: bool


@dataclass(frozen=True)
class Page:
    version: str
    generated_at: float
    probes: list[ProbeRow]
    alerts: list[AlertRow] = field(default_factory=list)
    windows: list[WindowRow] = field(default_factory=list)
    # target -> (component, summary): the target-level culprit, when the status data has one.
    target_diagnosis: dict[str, tuple[str, str]] = field(default_factory=dict)
    location: str | None = None
    replica: str | None = None
    shard: str | None = None
    reloaded_at: float | None = None
    refresh_seconds: int | None = None  # meta refresh; None for a one-off report
    title: str = "synthetic-monitor"
    failures: list[ProbeResult] = field(default_factory=list)
