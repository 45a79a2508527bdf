"""`probes:`: which scenario runs against which target, how often, within which deadline."""

from __future__ import annotations

from typing import Any

from pydantic import (
    BaseModel,
    ValidationError,
    field_validator,
    model_validator,
)

from monitor.config.common import (
    DEFAULT_TIMEOUT_SHARE,
    RUN_SHARE_LIMIT,
    Duration,
    FieldError,
    Model,
    Name,
    error_message,
    field_path,
)
from monitor.durations import format_duration
from monitor.scenario.registry import SCENARIOS
from monitor.slo.model import ProbeSLOConfig


class ProbeConfig(Model):
    # The probe label of every series and alert.
    name: Name
    # The name of a target of the kind the scenario needs.
    target: str
    # A scenario a plug-in declares; its options are in the scenario sections below.
    scenario: str
    # Time between the starts of two runs.
    interval: Duration = 30.0
    # The run's deadline; default 80% of the interval, less if the cleanup needs it. Deadline plus cleanup reserve must fit in 90% of the interval.
    timeout: Duration | None = None
    # A cap per step; a step gets what is left of the deadline, at most this.
    step_timeout: Duration | None = None
    # The scenario's own options (see its section).
    options: Any = None
    # Per-probe objectives over the top-level `slo:` defaults.
    slo: ProbeSLOConfig | None = None

    @field_validator("scenario")
    @classmethod
    def _known_scenario(cls, value: str) -> str:
        if value not in SCENARIOS:
            raise ValueError(f"unknown scenario {value!r}; known: {', '.join(sorted(SCENARIOS))}")
        return value

    @model_validator(mode="after")
    def _deadline_and_options(self) -> ProbeConfig:
        options_model = SCENARIOS[self.scenario].options_model
        raw = self.options if self.options is not None else {}
        if not isinstance(raw, BaseModel):
            if not isinstance(raw, dict):
                raise FieldError("options", f"must be a mapping, got {type(raw).__name__}")
            try:
                self.options = options_model.model_validate(raw)
            except ValidationError as exc:
                first = exc.errors()[0]
                path = field_path(first["loc"])
                raise FieldError(
                    "options" + (f".{path}" if path else ""), error_message(first, options_model)
                ) from None
        self._check_deadline()
        return self

    def _cleanup_reserve(self, timeout: float) -> float:
        step_timeout = min(self.step_timeout or timeout, timeout)
        return SCENARIOS[self.scenario].cleanup_reserve(self.options, step_timeout)

    def _check_deadline(self) -> None:
        """Deadline + cleanup reserve <= 90 % of the interval; the default deadline is fitted to it."""
        limit = self.interval * RUN_SHARE_LIMIT
        if self.timeout is None:
            self.timeout = self._default_timeout(limit)
        elif self.timeout > self.interval:
            raise FieldError(
                "timeout",
                f"{format_duration(self.timeout)} exceeds the interval {format_duration(self.interval)}"
                f" (a run must end before the next one starts; the largest timeout that fits is {self._fits(limit)})",
            )
        else:
            reserve = self._cleanup_reserve(self.timeout)
            if self.timeout + reserve > limit + 1e-9:
                cleanup = f" plus its cleanup budget {format_duration(reserve)}" if reserve else ""
                raise FieldError(
                    "timeout",
                    f"{format_duration(self.timeout)}{cleanup} exceeds 90% of the interval"
                    f" {format_duration(self.interval)} ({format_duration(limit)}): the run, cleanup included,"
                    f" must end before the next one starts; the largest timeout that fits is {self._fits(limit)}",
                )
        if self.step_timeout is not None and self.step_timeout > self.timeout:
            self.step_timeout = self.timeout

    def _fits(self, limit: float) -> str:
        """The largest deadline (whole milliseconds) whose run and cleanup end within `limit`."""
        low, high = 0, int(limit * 1000)
        while low < high:  # the run plus its reserve grows with the deadline
            middle = (low + high + 1) // 2
            if middle / 1000 + self._cleanup_reserve(middle / 1000) <= limit + 1e-9:
                low = middle
            else:
                high = middle - 1
        return format_duration(low / 1000)

    def _default_timeout(self, limit: float) -> float:
        """80 % of the interval, or less so that the cleanup reserve still fits (reserve grows with it)."""
        timeout = self.interval * DEFAULT_TIMEOUT_SHARE
        if timeout + self._cleanup_reserve(timeout) <= limit:
            return timeout
        low, high = 0.0, timeout
        for _ in range(40):  # bisection: the reserve is a non-decreasing step function of the deadline
            middle = (low + high) / 2
            if middle + self._cleanup_reserve(middle) <= limit:
                low = middle
            else:
                high = middle
        return low

    @property
    def deadline(self) -> float:
        assert self.timeout is not None
        return self.timeout
