"""The one interface every receiver kind implements, and the shared HTTP client setup.

A notifier only knows how to deliver one batch once: `send` raises on any failure and
the dispatcher decides about retries, so every receiver kind retries the same way.
"""

from __future__ import annotations

from typing import Any

import httpx

from monitor import __version__
from monitor.alerting.alerts import Alert
from monitor.config import ReceiverConfig
from monitor.http.client import redact_url


class NotifyError(Exception):
    """A receiver answered, but not with success."""


class Notifier:
    """Base class: one httpx.AsyncClient per receiver, reused for every batch."""

    kind = "base"

    def __init__(self, config: ReceiverConfig) -> None:
        self.config = config
        self.name = config.label
        headers = {"User-Agent": f"synthetic-monitor/{__version__}", **config.headers}
        auth: httpx.Auth | None = None
        if config.auth is not None:
            if config.auth.bearer:
                headers["Authorization"] = f"Bearer {config.auth.bearer}"
            elif config.auth.basic:
                auth = httpx.BasicAuth(*config.auth.basic)
        # trust_env=False: like the probes, go direct; a proxy from the environment
        # must not silently reroute alerts.
        self._client = httpx.AsyncClient(
            timeout=config.timeout, headers=headers, auth=auth, trust_env=False, follow_redirects=False
        )

    @property
    def safe_url(self) -> str:
        return redact_url(self.config.url)

    async def send(self, alerts: list[Alert]) -> None:
        raise NotImplementedError

    async def _post(self, url: str, payload: Any) -> None:
        response = await self._client.post(url, json=payload)
        if not 200 <= response.status_code < 300:
            body = " ".join(response.text[:200].split())
            raise NotifyError(f"HTTP {response.status_code} from {redact_url(url)}: {body}")

    async def aclose(self) -> None:
        await self._client.aclose()
