"""Receivers checked at start-up and after a reload: does the name resolve, does the port
accept a TCP connection? A receiver that fails either gets one warning line and
`synthetic_monitor_receiver_reachable{receiver} 0`; the daemon starts anyway (an
Alertmanager that comes up later is normal in a rollout, and notifications are retried).
Nothing is sent: the check never makes an HTTP request, so it has no side effect.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Iterable
from typing import Any
from urllib.parse import urlsplit

from prometheus_client import CollectorRegistry, Gauge

from monitor.config import ReceiverConfig
from monitor.http.client import redact_url

DEFAULT_PORTS = {"http": 80, "https": 443}


async def probe_receiver(url: str, timeout: float) -> str | None:
    """None when `url`'s host resolves and its port accepts a connection, else why not (one line)."""
    parts = urlsplit(url)
    host, port = parts.hostname or "", parts.port or DEFAULT_PORTS.get(parts.scheme, 80)
    loop = asyncio.get_running_loop()
    try:
        async with asyncio.timeout(timeout):
            addresses = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (OSError, TimeoutError) as exc:
        return f"DNS: {host} does not resolve ({getattr(exc, 'strerror', None) or type(exc).__name__})"
    try:
        async with asyncio.timeout(timeout):
            _, writer = await asyncio.open_connection(*addresses[0][4][:2])
    except (OSError, TimeoutError) as exc:
        return f"TCP: {host}:{port} does not accept a connection ({getattr(exc, 'strerror', None) or 'timed out'})"
    writer.close()
    return None


class ReceiverCheck:
    """Owns `synthetic_monitor_receiver_reachable`; `run` checks every configured receiver."""

    def __init__(self, registry: CollectorRegistry, logger: Any) -> None:
        self.gauge = Gauge(
            "synthetic_monitor_receiver_reachable",
            "1 if the receiver's host resolved and its port accepted a TCP connection at the last check.",
            ["receiver"],
            registry=registry,
        )
        self.log = logger
        self._known: set[str] = set()

    async def run(self, receivers: Iterable[ReceiverConfig]) -> dict[str, str | None]:
        receivers = list(receivers)
        problems = await asyncio.gather(*(probe_receiver(r.url, min(r.timeout, 5.0)) for r in receivers))
        outcome = {r.label: problem for r, problem in zip(receivers, problems)}
        for gone in self._known - set(outcome):
            self.gauge.remove(gone)
        self._known = set(outcome)
        for receiver, problem in zip(receivers, problems):
            self.gauge.labels(receiver.label).set(0 if problem else 1)
            if problem:
                self.log.warning(
                    "alert_receiver_unreachable", receiver=receiver.label, url=redact_url(receiver.url), problem=problem
                )
        return outcome
