"""Typed events of the monitor itself (scheduler trouble, heartbeat, config loads).

They take the same road as results: the pipeline fans each one out to every sink that
has `handle_event`, and each sink turns it into its own metrics, alerts or log lines.
Nothing calls back into the daemon.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

JobEventKind = Literal["error", "missed", "skipped"]


@dataclass(frozen=True, slots=True)
class JobEvent:
    """The scheduler could not run a probe as planned (a job error, a missed or skipped run)."""

    probe: str
    event: JobEventKind
    detail: str | None = None


@dataclass(frozen=True, slots=True)
class ScheduleLag:
    """How late a run started against its schedule."""

    probe: str
    seconds: float


@dataclass(frozen=True, slots=True)
class Heartbeat:
    """The scheduler loop proved alive at `at` (Unix time)."""

    at: float


@dataclass(frozen=True, slots=True)
class ConfigLoaded:
    """A configuration (re)load finished; `ok` False when the old config kept running."""

    ok: bool


Event = JobEvent | ScheduleLag | Heartbeat | ConfigLoaded
