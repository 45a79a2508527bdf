"""`heartbeat:`: who watches the watcher. An optional push to a dead-man's-switch service
(healthchecks.io, Cronitor, Dead Man's Snitch, a Uptime Kuma push monitor), sent every
`interval` while the daemon is healthy; the service pages when the pushes stop."""

from __future__ import annotations

from typing import Annotated, Literal
from urllib.parse import urlsplit

from pydantic import AfterValidator, model_validator

from monitor.config.common import Duration, FieldError, Model, check_url


class HeartbeatConfig(Model):
    # The URL usually holds the check's secret id: it is logged without its path.
    url: Annotated[str, AfterValidator(check_url)]
    interval: Duration = 60.0
    timeout: Duration = 10.0
    method: Literal["GET", "POST"] = "GET"

    def where(self) -> str:
        """Scheme and host only: the path of a push URL is usually its secret (logs, `config show`)."""
        parts = urlsplit(self.url)
        return f"{parts.scheme}://{parts.netloc.rpartition('@')[2]}/..."

    @model_validator(mode="after")
    def _timeout_within_interval(self) -> HeartbeatConfig:
        if self.timeout > self.interval:
            raise FieldError("timeout", f"{self.timeout:g}s exceeds the interval {self.interval:g}s")
        return self
