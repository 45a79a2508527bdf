"""The daemon's own HTTP endpoints, served from a thread.

A thread (stdlib ThreadingHTTPServer) rather than the event loop on purpose: if the
loop ever wedges, /healthz still answers, with 503 from a stale heartbeat, instead of
hanging; and /metrics stays scrapable.
"""

from __future__ import annotations

import json
import ssl
import threading
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Callable

from prometheus_client import CONTENT_TYPE_LATEST


@dataclass(frozen=True)
class Endpoints:
    """What the server asks the daemon; every callable must be thread-safe."""

    metrics: Callable[[], bytes]
    healthy: Callable[[], tuple[bool, str]]
    ready: Callable[[], tuple[bool, str]]
    status: Callable[[], dict[str, Any]]
    reload: Callable[[], tuple[bool, str]]


class _Handler(BaseHTTPRequestHandler):
    server: "MonitorHTTPServer"
    protocol_version = "HTTP/1.1"
    server_version = "synthetic-monitor"
    timeout = 10  # an idle or silent connection is closed, freeing its thread
    # Headers and body go out as separate writes; without TCP_NODELAY a keep-alive
    # scraper waits ~40 ms on every request for the delayed ACK (Nagle).
    disable_nagle_algorithm = True

    def do_GET(self) -> None:
        path = self.path.split("?", 1)[0]
        ep = self.server.endpoints
        if path == "/metrics":
            self._send(200, ep.metrics(), CONTENT_TYPE_LATEST)
        elif path == "/healthz":
            self._send_check(*ep.healthy())
        elif path == "/readyz":
            self._send_check(*ep.ready())
        elif path == "/status":
            self._send_json(200, ep.status())
        elif path == "/":
            self._send(200, b"synthetic-monitor: /metrics /healthz /readyz /status, POST /-/reload\n", "text/plain")
        else:
            self._send(404, b"not found\n", "text/plain")

    do_HEAD = do_GET  # _send leaves the body out for HEAD

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        if length:
            self.rfile.read(min(length, 65536))
        if self.path.split("?", 1)[0] == "/-/reload":
            ok, message = self.server.endpoints.reload()
            self._send_json(200 if ok else 500, {"ok": ok, "message": message})
        else:
            self._send(405 if self.path in ("/metrics", "/status") else 404, b"not found\n", "text/plain")

    def _send_check(self, ok: bool, message: str) -> None:
        self._send(200 if ok else 503, (message + "\n").encode(), "text/plain; charset=utf-8")

    def _send_json(self, status: int, data: Any) -> None:
        self._send(status, json.dumps(data, default=str).encode(), "application/json")

    def _send(self, status: int, body: bytes, content_type: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:  # scrapes are not news
        pass


class MonitorHTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, address: tuple[str, int], endpoints: Endpoints, tls: ssl.SSLContext | None = None) -> None:
        super().__init__(address, _Handler)
        self.endpoints = endpoints
        if tls is not None:
            # The handshake happens in the handler's thread on first read, not inside
            # accept(): a client that never sends a ClientHello must not block the server.
            self.socket = tls.wrap_socket(self.socket, server_side=True, do_handshake_on_connect=False)
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self.serve_forever, name="http-server", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self.shutdown()
        self.server_close()


def tls_context(cert_file: str, key_file: str) -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert_file, key_file)
    return context
