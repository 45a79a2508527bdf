"""`alerting:`: thresholds, grace, labels and the receivers alerts are pushed to."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Literal

from pydantic import (
    BeforeValidator,
    Field,
    field_validator,
    model_validator,
)

from monitor.config.common import Duration, FieldError, HeaderName, HeaderValue, Model, Name, check_url
from monitor.config.targets import AuthConfig
from monitor.durations import parse_duration


class ReceiverConfig(Model):
    """Where the daemon's own alert engine pushes notifications (one worker per receiver)."""

    # alertmanager: POST /api/v2/alerts; webhook: the Alertmanager webhook JSON.
    kind: Literal["alertmanager", "webhook"]
    # The receiver's base URL.
    url: str
    # Needed when two receivers share a kind; the receiver label of the notification metrics.
    name: Name | None = None
    # Per request.
    timeout: Duration = 5.0
    # Extra request headers.
    headers: dict[HeaderName, HeaderValue] = {}
    # Credentials for the receiver.
    auth: AuthConfig | None = None
    # Webhook consumers that only want problems can turn resolved notices off;
    # Alertmanager always gets them (it needs endsAt to close the alert early).
    send_resolved: bool = True
    # Webhooks only: a still-firing alert is notified again after this long (Alertmanager's
    # default). Ignored for Alertmanager receivers: they get the resend_interval re-sends
    # and repeat by their own routes (not an error: `config show` output must validate).
    repeat_interval: Duration = 4 * 3600.0

    check_url = field_validator("url")(classmethod(lambda cls, v: check_url(v)))

    @property
    def label(self) -> str:
        return self.name or self.kind


ALERT_LABEL_PATTERN = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


# Labels the engine sets itself; an extra label must not shadow them.
RESERVED_ALERT_LABELS = frozenset({"alertname", "target", "probe", "severity", "dependency"})


class AlertingConfig(Model):
    # false turns the daemon's own alerting off (resolving what fires).
    enabled: bool = True
    # Consecutive bad runs to fire.
    failure_threshold: int = Field(default=2, ge=1)
    # Consecutive good runs to resolve.
    success_threshold: int = Field(default=2, ge=1)
    # No firing this long after start.
    startup_grace: Annotated[float, BeforeValidator(parse_duration), Field(ge=0)] = 60.0
    # Firing alerts are re-sent this often (endsAt four intervals ahead).
    resend_interval: Duration = 60.0
    # A run longer than this counts for SyntheticProbeLatencyHigh.
    latency_threshold: Duration = 5.0
    # Extra alert labels (e.g. cluster, namespace).
    labels: dict[str, str] = {}
    # Base of the runbook_url annotation (+ #alertname) and of the diagnosis links (+ #diagnosis-<component>).
    runbook_url: str | None = None
    # Alertmanager's generatorURL of the pushed alerts.
    generator_url: str | None = None
    # Alert state kept across restarts (firing alerts, pending counters, undelivered resolves).
    state_file: Path | None = None
    # A saved state older than this is not trusted (its alerts are resolved at start);
    # default 10 x resend_interval.
    state_max_age: Duration | None = None
    # Notification batches queued per receiver (oldest dropped when full).
    queue_size: int = Field(default=1000, ge=1)
    # Per notification batch: first retry after retry_backoff, doubling up to
    # retry_backoff_max, giving up after retry_attempts tries (a later re-send covers it).
    retry_backoff: Duration = 0.5
    # The longest wait between two tries.
    retry_backoff_max: Duration = 30.0
    # Tries per batch.
    retry_attempts: int = Field(default=5, ge=1, le=20)
    # How long a receiver's worker gathers notifications into one request: in a wide
    # outage each receiver gets a few requests, not one per alert.
    batch_wait: Annotated[float, BeforeValidator(parse_duration), Field(ge=0, le=60)] = 1.0
    # Where alerts are pushed.
    receivers: list[ReceiverConfig] = []

    @field_validator("labels")
    @classmethod
    def _label_names(cls, value: dict[str, str]) -> dict[str, str]:
        for name in value:
            if not ALERT_LABEL_PATTERN.match(name):
                raise ValueError(f"label name {name!r} is not a valid Prometheus label name")
            if name in RESERVED_ALERT_LABELS:
                raise ValueError(f"label {name!r} is set by the alert engine itself")
        return value

    @field_validator("runbook_url", "generator_url")
    @classmethod
    def _urls(cls, value: str | None) -> str | None:
        return None if value is None else check_url(value.strip())

    @model_validator(mode="after")
    def _unique_receivers(self) -> AlertingConfig:
        seen: set[str] = set()
        for index, receiver in enumerate(self.receivers):
            if receiver.label in seen:
                raise FieldError(
                    f"receivers[{index}].name",
                    f"duplicate receiver {receiver.label!r} (give each receiver a distinct name)",
                )
            seen.add(receiver.label)
        if self.retry_backoff_max < self.retry_backoff:
            raise FieldError("retry_backoff_max", "must not be smaller than retry_backoff")
        return self

    @property
    def state_ttl(self) -> float:
        return self.state_max_age if self.state_max_age is not None else 10 * self.resend_interval
