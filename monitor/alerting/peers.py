"""Asking the peers: one compact request per peer per quorum tick, with TLS and basic auth.

Each peer answers GET /api/v1/verdicts (monitor/web/verdicts.py) with only the latest
verdict of each of its own probes and whether it is healthy itself: about 110 bytes a
failing probe instead of the whole /status document (about 720 bytes a probe). Requests run concurrently, at most
`CONCURRENCY` at a time, each bounded by `peers.timeout`.

A peer that refuses our credentials (401/403) or fails the TLS handshake is a fault of
the monitoring itself, not an unknown vote to shrug at: it is counted in
synthetic_monitor_peer_errors_total{peer, reason} and logged (once per change, not once
per tick), and the quorum description names it.
"""

from __future__ import annotations

import asyncio
import socket
import ssl
from dataclasses import dataclass
from typing import Any

import httpx
import structlog
from prometheus_client import CollectorRegistry, Counter

from monitor.config import PeersConfig
from monitor.config.common import safe_url
from monitor.sinks.exposition import Exposition, declare_in

VERDICTS_PATH = "/api/v1/verdicts"
CONCURRENCY = 8
REASONS = ("unauthorized", "tls", "timeout", "connection", "http_status", "bad_response")


@dataclass(frozen=True)
class PeerAnswer:
    """One peer's verdict document, or why there is none (`error` is one of REASONS)."""

    url: str
    doc: dict[str, Any] | None
    error: str | None = None
    detail: str = ""


class PeerMetrics:
    """The peer query's own series; owned here, declared once per daemon."""

    def __init__(self, registry: CollectorRegistry | Exposition | None = None) -> None:
        own = declare_in(registry) if registry is not None else CollectorRegistry()
        self.errors = Counter(
            "synthetic_monitor_peer_errors",
            "Peer verdict queries that failed, by peer and reason (unauthorized and tls are configuration faults).",
            ["peer", "reason"],
            registry=own,
        )
        self.response_bytes = Counter(
            "synthetic_monitor_peer_response_bytes",
            "Bytes of verdict documents received from each peer.",
            ["peer"],
            registry=own,
        )


async def peer_urls(peers: PeersConfig) -> list[str]:
    """The configured URLs plus every address of the headless Service (its pods)."""
    urls = list(peers.urls)
    if peers.service:
        host, _, port = peers.service.rpartition(":")
        try:
            infos = await asyncio.get_running_loop().getaddrinfo(host, int(port), type=socket.SOCK_STREAM)
        except OSError:
            infos = []
        for address in sorted({str(info[4][0]) for info in infos}):
            shown = f"[{address}]" if ":" in address else address
            urls.append(f"{peers.scheme}://{shown}:{port}")
    return urls


def ssl_context(peers: PeersConfig) -> ssl.SSLContext | bool:
    """The TLS context from `tls_config` (Prometheus' meaning of every field)."""
    tls = peers.tls_config
    if tls is None:
        return True
    context = ssl.create_default_context(cafile=str(tls.ca_file) if tls.ca_file else None)
    if tls.cert_file is not None and tls.key_file is not None:
        context.load_cert_chain(str(tls.cert_file), str(tls.key_file))
    if tls.insecure_skip_verify:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    return context


def classify(exc: BaseException) -> str:
    """The reason label of a failed query."""
    current: BaseException | None = exc
    while current is not None:
        if isinstance(current, ssl.SSLError):
            return "tls"
        current = current.__cause__ or current.__context__
    if isinstance(exc, httpx.TimeoutException):
        return "timeout"
    return "connection"


class PeerClient:
    """Queries every peer's verdicts; keeps one pooled client, rebuilt on reconfigure."""

    def __init__(self, peers: PeersConfig, metrics: PeerMetrics | None = None, logger: Any = None) -> None:
        self.peers = peers
        self.metrics = metrics if metrics is not None else PeerMetrics()
        self._log = logger if logger is not None else structlog.get_logger("monitor.alerting.peers")
        self._client: httpx.AsyncClient | None = None
        self._failing: dict[str, str] = {}  # peer -> reason last logged

    def reconfigure(self, peers: PeersConfig) -> None:
        if peers != self.peers and self._client is not None:
            client, self._client = self._client, None
            asyncio.get_running_loop().create_task(client.aclose())
        self.peers = peers

    def _http(self) -> httpx.AsyncClient:
        if self._client is None:
            auth = self.peers.basic_auth
            self._client = httpx.AsyncClient(
                verify=ssl_context(self.peers),
                auth=httpx.BasicAuth(auth.username, auth.password) if auth is not None else None,
                follow_redirects=False,
                trust_env=False,
                limits=httpx.Limits(max_connections=CONCURRENCY, max_keepalive_connections=CONCURRENCY),
            )
        return self._client

    async def ask(self, urls: list[str]) -> list[PeerAnswer]:
        """Every peer's verdicts, at most CONCURRENCY requests in flight."""
        gate = asyncio.Semaphore(CONCURRENCY)
        client = self._http()
        tls = self.peers.tls_config
        extensions = {"sni_hostname": tls.server_name} if tls is not None and tls.server_name else None

        async def one(url: str) -> PeerAnswer:
            async with gate:
                answer = await self._one(client, url, extensions)
            self._note(answer)
            return answer

        return list(await asyncio.gather(*(one(u) for u in urls)))

    async def _one(self, client: httpx.AsyncClient, url: str, extensions: dict[str, Any] | None) -> PeerAnswer:
        try:
            response = await client.get(f"{url}{VERDICTS_PATH}", timeout=self.peers.timeout, extensions=extensions)
        except (httpx.HTTPError, ssl.SSLError, OSError) as exc:
            return PeerAnswer(url, None, classify(exc), f"{type(exc).__name__}: {' '.join(str(exc).split())[:200]}")
        self.metrics.response_bytes.labels(safe_url(url)).inc(len(response.content))
        if response.status_code in (401, 403):
            return PeerAnswer(url, None, "unauthorized", f"HTTP {response.status_code}: check peers.basic_auth")
        if response.status_code != 200:
            return PeerAnswer(url, None, "http_status", f"HTTP {response.status_code}")
        try:
            doc = response.json()
        except ValueError:
            return PeerAnswer(url, None, "bad_response", "not JSON")
        if not isinstance(doc, dict) or not isinstance(doc.get("probes"), dict) or "columns" not in doc:
            return PeerAnswer(url, None, "bad_response", "not a verdict document")
        return PeerAnswer(url, doc)

    def _note(self, answer: PeerAnswer) -> None:
        peer = safe_url(answer.url)
        if answer.error is None:
            if self._failing.pop(peer, None) is not None:
                self._log.info("peer_query_recovered", peer=peer)
            return
        self.metrics.errors.labels(peer, answer.error).inc()
        if self._failing.get(peer) != answer.error:
            self._failing[peer] = answer.error
            self._log.error(
                "peer_query_failed",
                peer=peer,
                reason=answer.error,
                error=answer.detail,
                effect="this peer's votes are unknown until it answers",
            )

    async def aclose(self) -> None:
        if self._client is not None:
            await self._client.aclose()
            self._client = None
