"""The push heartbeat: a GET or POST to a dead-man's-switch URL every `interval`, sent only
while the daemon is healthy (the scheduler's heartbeat is fresh and the alert engine's
tick runs). It runs on the event loop on purpose: a wedged loop sends nothing, and the
external service pages for a monitor that can no longer page for itself."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable

import httpx
import structlog
from prometheus_client import CollectorRegistry, Counter

from monitor import __version__
from monitor.config import HeartbeatConfig
from monitor.sinks.exposition import Exposition, declare_in

RESULTS = ("sent", "failed", "withheld")


class HeartbeatPusher:
    """`start(config)`, `reconfigure(config)` on reload, `await stop()` at shutdown."""

    def __init__(self, registry: CollectorRegistry | Exposition, healthy: Callable[[], tuple[bool, str]]) -> None:
        self.pushes = Counter(
            "synthetic_monitor_heartbeat_pushes",
            "Dead-man's-switch heartbeats: sent, failed, or withheld because the daemon is unhealthy.",
            ["result"],
            registry=declare_in(registry),
        )
        for result in RESULTS:
            self.pushes.labels(result)
        self._healthy = healthy
        self._config: HeartbeatConfig | None = None
        self._task: asyncio.Task[None] | None = None
        self._log = structlog.get_logger("monitor.heartbeat")
        self._withholding = False

    def reconfigure(self, config: HeartbeatConfig | None) -> None:
        if config == self._config and (config is None or self._task is not None):
            return
        self._config = config
        if self._task is not None:
            self._task.cancel()
            self._task = None
        if config is not None:
            self._task = asyncio.get_running_loop().create_task(self._run(config), name="heartbeat-push")
            self._log.info("heartbeat_configured", url=config.where(), interval=config.interval)

    start = reconfigure

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def _run(self, config: HeartbeatConfig) -> None:
        headers = {"User-Agent": f"synthetic-monitor/{__version__}"}
        async with httpx.AsyncClient(timeout=config.timeout, headers=headers, follow_redirects=True) as client:
            while True:
                await self.push_once(client, config)
                await asyncio.sleep(config.interval)

    async def push_once(self, client: httpx.AsyncClient, config: HeartbeatConfig) -> bool:
        ok, why = self._healthy()
        if not ok:
            self.pushes.labels("withheld").inc()
            if not self._withholding:  # once per unhealthy spell, not every interval
                self._log.error("heartbeat_withheld", reason=why)
            self._withholding = True
            return False
        if self._withholding:
            self._log.info("heartbeat_resumed")
        self._withholding = False
        try:
            response = await client.request(config.method, config.url)
            response.raise_for_status()
        except httpx.HTTPError as exc:
            self.pushes.labels("failed").inc()
            # Never str(exc): it quotes the URL, whose path is the check's secret.
            error = f"HTTP {exc.response.status_code}" if isinstance(exc, httpx.HTTPStatusError) else type(exc).__name__
            self._log.warning("heartbeat_push_failed", url=config.where(), error=error)
            return False
        self.pushes.labels("sent").inc()
        return True
