"""The alert value passed from the engine to the notifiers, and its wire helpers.

Alert names and severities are a contract shared with deploy/prometheus/rules.yml:
the same problem seen by the engine and by Prometheus must carry the same labels so
Alertmanager groups and inhibits both copies together.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

PROBE_FAILING = "SyntheticProbeFailing"
PROBE_TIMEOUT = "SyntheticProbeTimeout"
LATENCY_HIGH = "SyntheticProbeLatencyHigh"
MONITOR_STALLED = "SyntheticMonitorStalled"

# The generic alerts (a kind declares its own with their severities: TargetKind.alerts).
# Same severities as deploy/prometheus/rules.yml (critical pages, warning waits).
SEVERITY: dict[str, str] = {
    PROBE_FAILING: "critical",
    PROBE_TIMEOUT: "warning",
    LATENCY_HIGH: "warning",
    MONITOR_STALLED: "warning",
}
ALERT_NAMES = tuple(SEVERITY)


def severity(alertname: str) -> str:
    return SEVERITY[alertname]


@dataclass(frozen=True, slots=True)
class Alert:
    """One notification about one alert: a snapshot, never mutated after it is made.

    A firing alert carries `ends_at` in the future (now + 4 x resend_interval) so that
    Alertmanager keeps it alive between re-sends but still expires it if the daemon
    dies; a resolved one carries the time it resolved.
    """

    labels: dict[str, str]
    annotations: dict[str, str]
    starts_at: float
    ends_at: float | None = None
    generator_url: str = ""
    resolved: bool = False
    # None: every receiver. Otherwise only these receiver names: a re-send for
    # Alertmanager's endsAt, a webhook's repeat, or the retry of an undelivered resolve.
    receivers: tuple[str, ...] | None = None

    @property
    def status(self) -> str:
        return "resolved" if self.resolved else "firing"

    @property
    def name(self) -> str:
        return self.labels["alertname"]

    def for_receiver(self, name: str) -> bool:
        return self.receivers is None or name in self.receivers

    @property
    def fingerprint(self) -> str:
        """A stable id from the label set (what Alertmanager's fingerprint identifies)."""
        text = "\xff".join(f"{k}\xfe{v}" for k, v in sorted(self.labels.items()))
        return hashlib.sha256(text.encode()).hexdigest()[:16]

    def as_alertmanager(self) -> dict[str, Any]:
        """The Alertmanager API v2 `postableAlert` shape."""
        data: dict[str, Any] = {
            "labels": dict(self.labels),
            "annotations": dict(self.annotations),
            "startsAt": rfc3339(self.starts_at),
            "generatorURL": self.generator_url,
        }
        if self.ends_at is not None:
            data["endsAt"] = rfc3339(self.ends_at)
        return data

    def as_webhook(self) -> dict[str, Any]:
        """One entry of `alerts` in the Alertmanager webhook JSON."""
        return {
            "status": self.status,
            "labels": dict(self.labels),
            "annotations": dict(self.annotations),
            "startsAt": rfc3339(self.starts_at),
            # Alertmanager sends the zero time for an open alert; consumers test for it.
            "endsAt": rfc3339(self.ends_at) if self.resolved and self.ends_at is not None else ZERO_TIME,
            "generatorURL": self.generator_url,
            "fingerprint": self.fingerprint,
        }


ZERO_TIME = "0001-01-01T00:00:00Z"


def rfc3339(timestamp: float) -> str:
    """UTC, millisecond precision, `Z` suffix: what Alertmanager itself writes."""
    moment = datetime.fromtimestamp(timestamp, tz=UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"
