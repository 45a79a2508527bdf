"""`log:` and `metrics:`: the monitor's own output."""

from __future__ import annotations

from typing import Literal

from pydantic import (
    Field,
    field_validator,
)

from monitor.config.common import DEFAULT_BUCKETS, Model


class LogConfig(Model):
    level: Literal["debug", "info", "warning", "error"] = "info"
    format: Literal["json", "console", "auto"] = "auto"


class MetricsConfig(Model):
    buckets: list[float] = Field(default=list(DEFAULT_BUCKETS), min_length=1)

    @field_validator("buckets")
    @classmethod
    def _increasing(cls, value: list[float]) -> list[float]:
        if any(b <= 0 for b in value) or sorted(set(value)) != value:
            raise ValueError("must be positive and strictly increasing")
        return value
