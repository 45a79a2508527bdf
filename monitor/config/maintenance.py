"""`maintenance:`: windows during which probes keep running but page nobody.

A window is either one-off (`start`, `end`: ISO 8601 timestamps, UTC when no offset is
given) or recurring (`schedule`: a five-field cron line, read by APScheduler's
CronTrigger, in UTC or `timezone:`, plus `duration`). It names the probes or the targets
it covers; the names are checked against the rest of the config (model.py), so a typo
is a config error at start-up, not a page during the upgrade.
"""

from __future__ import annotations

import datetime as dt
import zoneinfo
from typing import Annotated

from apscheduler.triggers.cron import CronTrigger
from pydantic import Field, field_validator, model_validator

from monitor.config.common import Duration, FieldError, Model

WINDOW_NAME_MAX = 120


def utc(value: dt.datetime) -> dt.datetime:
    """A naive timestamp is UTC (the cluster's clocks are)."""
    return value.replace(tzinfo=dt.UTC) if value.tzinfo is None else value


def cron_trigger(schedule: str, timezone: str | None) -> CronTrigger:
    """The trigger for a five-field cron line; ValueError with APScheduler's reason."""
    if len(schedule.split()) != 5:
        raise ValueError(f"expected five cron fields (minute hour day month weekday), got {schedule!r}")
    return CronTrigger.from_crontab(schedule, timezone=zoneinfo.ZoneInfo(timezone or "UTC"))


class MaintenanceConfig(Model):
    name: Annotated[str, Field(min_length=1, max_length=WINDOW_NAME_MAX)]
    probes: list[str] = []
    targets: list[str] = []
    start: dt.datetime | None = None
    end: dt.datetime | None = None
    schedule: str | None = None
    duration: Duration | None = None
    timezone: str | None = None

    @field_validator("timezone")
    @classmethod
    def _zone(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                zoneinfo.ZoneInfo(value)
            except (zoneinfo.ZoneInfoNotFoundError, ValueError):
                raise ValueError(f"unknown time zone {value!r} (an IANA name like Europe/Berlin)") from None
        return value

    @model_validator(mode="after")
    def _shape(self) -> MaintenanceConfig:
        if not self.probes and not self.targets:
            raise FieldError("probes", "a window needs `probes:` or `targets:` (what it covers)")
        if self.schedule is not None:
            if self.start is not None or self.end is not None:
                raise FieldError("schedule", "use either `schedule` + `duration` or `start` + `end`, not both")
            if self.duration is None:
                raise FieldError("duration", "a recurring window (`schedule`) needs a `duration`, e.g. 30m")
            try:
                cron_trigger(self.schedule, self.timezone)
            except ValueError as exc:
                raise FieldError("schedule", f"bad cron line: {exc}") from None
            return self
        if self.duration is not None:
            raise FieldError("duration", "only a recurring window (`schedule`) takes a duration; use `end`")
        if self.start is None or self.end is None:
            raise FieldError("start" if self.start is None else "end", "a one-off window needs `start` and `end`")
        self.start, self.end = utc(self.start), utc(self.end)
        if self.end <= self.start:
            raise FieldError("end", f"{self.end.isoformat()} is not after start {self.start.isoformat()}")
        return self
