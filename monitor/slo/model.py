"""The `slo:` config block (top-level defaults, per-probe override) and its resolution.

Objectives are percentages in the YAML (99.5) because that is how people say them; the
rule generator and the report work with ratios. Windows accept days (`30d`), which the
probe-level durations do not need.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Annotated, Any

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field

from monitor.durations import parse_duration

DEFAULT_AVAILABILITY = 99.5
DEFAULT_WINDOW = 30 * 86400.0
DEFAULT_MIN_FAILURES = 2
_DAYS = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([dw])\s*$")


def parse_window(value: object) -> float:
    """Seconds; `30d`, `4w`, or anything parse_duration takes (`12h`, `90m`)."""
    if isinstance(value, str):
        match = _DAYS.match(value)
        if match:
            return float(match.group(1)) * (86400.0 if match.group(2) == "d" else 7 * 86400.0)
    try:
        seconds = parse_duration(value)
    except ValueError:
        raise ValueError(f"expected a window like 30d, 4w or 12h, got {value!r}") from None
    if not math.isfinite(seconds) or seconds <= 0:
        raise ValueError(f"must be a positive duration like 30d, got {value!r}")
    return seconds


def format_window(seconds: float) -> str:
    """Prometheus' spelling (`30d`, `6h`, `5m`), the one rule names and range selectors use."""
    whole = int(round(seconds))
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if whole >= size and whole % size == 0:
            return f"{whole // size}{unit}"
    return f"{whole}s"


def _objective(value: float) -> float:
    if not 0 < value < 100:
        raise ValueError(f"must be above 0 and below 100 (a percentage), got {value:g}")
    return value


Objective = Annotated[float, AfterValidator(_objective)]
Window = Annotated[float, BeforeValidator(parse_window)]


def _threshold(value: object) -> float:
    seconds = parse_duration(value)
    if not math.isfinite(seconds) or seconds <= 0:
        raise ValueError(f"must be a positive duration, got {value!r}")
    return seconds


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid")


class LatencyObjective(_Model):
    """`objective` percent of runs finish within `threshold`."""

    # A run within this duration is fast enough; rounded to a bucket bound of metrics.buckets.
    threshold: Annotated[float, BeforeValidator(_threshold)]
    # Percent of runs that must be within the threshold.
    objective: Objective = 95.0


class SLOConfig(_Model):
    """Top-level `slo:` defaults."""

    # Percent of runs that pass (above 0, below 100).
    availability: Objective = DEFAULT_AVAILABILITY
    # The SLO window (d and w allowed: 30d, 4w).
    window: Window = DEFAULT_WINDOW
    # Optional: that share of runs finish within the threshold.
    latency: LatencyObjective | None = None
    # A burn-rate pair pages only when its long window holds at least this many bad
    # runs: a probe with few runs per window (the 5 min write probe) must not page on
    # one failure (docs/objectives.md).
    min_failures: int = Field(default=DEFAULT_MIN_FAILURES, ge=1)


class ProbeSLOConfig(_Model):
    """Per-probe `slo:`: any key given replaces the default; `latency: null` turns it off."""

    # false: no rules for this probe, not in the report.
    enabled: bool = True
    availability: Objective | None = None
    window: Window | None = None
    # Optional: that share of runs finish within the threshold.
    latency: LatencyObjective | None = None
    min_failures: int | None = Field(default=None, ge=1)


@dataclass(frozen=True)
class Objectives:
    """The effective objectives of one probe (ratios, seconds)."""

    probe: str
    target: str
    interval: float
    availability: float
    window: float
    latency_threshold: float | None
    latency_objective: float | None
    min_failures: int

    @property
    def error_budget(self) -> float:
        return 1.0 - self.availability

    @property
    def latency_budget(self) -> float | None:
        return None if self.latency_objective is None else 1.0 - self.latency_objective


def resolve(defaults: SLOConfig, probe: Any) -> Objectives | None:
    """Merge the probe's override over the defaults; None when the probe opts out."""
    own: ProbeSLOConfig | None = getattr(probe, "slo", None)
    fields: set[str] = own.model_fields_set if own is not None else set()
    if own is not None and not own.enabled:
        return None

    def pick(name: str) -> Any:
        return getattr(own, name) if own is not None and name in fields else getattr(defaults, name)

    latency: LatencyObjective | None = pick("latency")
    availability = pick("availability")
    return Objectives(
        probe=probe.name,
        target=probe.target,
        interval=float(probe.interval),
        availability=float(availability if availability is not None else defaults.availability) / 100.0,
        window=float(pick("window") or defaults.window),
        latency_threshold=latency.threshold if latency else None,
        latency_objective=latency.objective / 100.0 if latency else None,
        min_failures=int(pick("min_failures") or defaults.min_failures),
    )
