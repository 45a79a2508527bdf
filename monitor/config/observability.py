"""`log:` and `metrics:`: the monitor's own output."""

from __future__ import annotations

from typing import Literal

from pydantic import (
    Field,
    field_validator,
)

from monitor.config.common import DEFAULT_BUCKETS, Model


class LogConfig(Model):
    # The lowest level logged.
    level: Literal["debug", "info", "warning", "error"] = "info"
    # JSON lines, a console view, or auto: console when stdout is a TTY.
    format: Literal["json", "console", "auto"] = "auto"


class MetricsConfig(Model):
    # Histogram bucket bounds in seconds, strictly increasing; read at start only.
    buckets: list[float] = Field(default=list(DEFAULT_BUCKETS), min_length=1)

    @field_validator("buckets")
    @classmethod
    def _increasing(cls, value: list[float]) -> list[float]:
        if any(b <= 0 for b in value) or sorted(set(value)) != value:
            raise ValueError("must be positive and strictly increasing")
        return value
