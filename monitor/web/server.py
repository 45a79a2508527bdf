"""The daemon's own HTTP endpoints, served from a thread.

A thread (stdlib ThreadingHTTPServer) rather than the event loop on purpose: if the
loop ever wedges, /healthz still answers, with 503 from a stale heartbeat, instead of
hanging; and /metrics stays scrapable.
"""

from __future__ import annotations

import json
import socket
import ssl
import sys
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import structlog
from prometheus_client import CONTENT_TYPE_LATEST

from monitor.web.face import API as MAINTENANCE_API
from monitor.web.face import Answer, Face
from monitor.web.webconfig import ServerSecurity, Verdict


@dataclass(frozen=True)
class Endpoints:
    """What the server asks the daemon; every callable must be thread-safe."""

    metrics: Callable[[], Sequence[bytes]]  # the body in pieces, written without a join
    healthy: Callable[[], tuple[bool, str]]
    ready: Callable[[], tuple[bool, str]]
    status: Callable[[], dict[str, Any]]
    reload: Callable[[], tuple[bool, str]]
    face: Face | None = None  # the status page, badges and maintenance API (monitor/web/face.py)
    verdicts: Callable[[], bytes] | None = None  # the peers' compact quorum query (JSON)


MAX_BODY_BYTES = 64 * 1024  # only a maintenance window's small JSON is read
LIFECYCLE_DISABLED = b"Lifecycle API is not enabled.\n"  # Prometheus' own answer


class _Handler(BaseHTTPRequestHandler):
    server: MonitorHTTPServer
    _body = b""
    protocol_version = "HTTP/1.1"
    server_version = "synthetic-monitor"
    timeout = 10  # an idle or silent connection is closed, freeing its thread
    # Headers and body go out as separate writes; without TCP_NODELAY a keep-alive
    # scraper waits ~40 ms on every request for the delayed ACK (Nagle).
    disable_nagle_algorithm = True

    def do_GET(self) -> None:
        if not self._body_consumed() or not self._authorized():
            return
        path, _, query = self.path.partition("?")
        ep = self.server.endpoints
        gzip_ok = "gzip" in (self.headers.get("Accept-Encoding") or "")
        if ep.face is not None and path != "/metrics" and (answer := ep.face.get(path, query, gzip_ok)) is not None:
            self._answer(answer)
        elif path == "/metrics":
            self._send_pieces(200, ep.metrics(), CONTENT_TYPE_LATEST)
        elif path == "/healthz":
            self._send_check(*ep.healthy())
        elif path == "/readyz":
            self._send_check(*ep.ready())
        elif path == "/status":
            self._send_json(200, ep.status())
        elif path == "/api/v1/verdicts" and ep.verdicts is not None:
            self._send(200, ep.verdicts(), "application/json")
        elif path == "/":
            self._send(200, b"synthetic-monitor: /metrics /healthz /readyz /status, POST /-/reload\n", "text/plain")
        else:
            self._send(404, b"not found\n", "text/plain")

    do_HEAD = do_GET  # _send leaves the body out for HEAD

    def do_POST(self) -> None:
        if not self._body_consumed() or not self._authorized():
            return
        path = self.path.split("?", 1)[0]
        face = self.server.endpoints.face
        if face is not None and path == MAINTENANCE_API and self.command == "POST":
            if self._lifecycle_enabled() and (answer := face.post(path, self._body)) is not None:
                self._answer(answer)
        elif path == "/-/reload":
            if not self.server.lifecycle:
                # As Prometheus: reloading over HTTP is opt-in (--web.enable-lifecycle);
                # SIGHUP needs access to the process, this needs only the port.
                self._send(403, LIFECYCLE_DISABLED, "text/plain; charset=utf-8")
                return
            ok, message = self.server.endpoints.reload()
            self._send_json(200 if ok else 500, {"ok": ok, "message": message})
        else:
            self._send(405 if self.path in ("/metrics", "/status") else 404, b"not found\n", "text/plain")

    do_PUT = do_POST  # Prometheus takes PUT /-/reload too

    def do_DELETE(self) -> None:
        if not self._body_consumed() or not self._authorized():
            return
        path = self.path.split("?", 1)[0]
        face = self.server.endpoints.face
        if face is not None and path.startswith(MAINTENANCE_API + "/"):
            if self._lifecycle_enabled() and (answer := face.delete(path)) is not None:
                self._answer(answer)
        else:
            self._send(404, b"not found\n", "text/plain")

    def _lifecycle_enabled(self) -> bool:
        """Writes over HTTP are opt-in, as Prometheus' /-/reload (--web.enable-lifecycle)."""
        if not self.server.lifecycle:
            self._send(403, LIFECYCLE_DISABLED, "text/plain; charset=utf-8")
        return self.server.lifecycle

    def _answer(self, answer: Answer) -> None:
        self._send(answer.status, answer.body, answer.content_type, gzipped=answer.gzipped)

    def _body_consumed(self) -> bool:
        """Read (and drop) the request body so the next request on the connection starts
        where this one ends; anything we cannot frame exactly is refused and the
        connection closed, never half-read and parsed as a request."""
        self._body = b""
        if self.headers.get("Transfer-Encoding"):
            return self._refuse(411, "a chunked body is not accepted: send Content-Length")
        raw = self.headers.get_all("Content-Length") or []
        if not raw:
            return True
        values = {v.strip() for v in raw}
        value = values.pop()
        if values or not value.isdigit() or not value.isascii():
            return self._refuse(400, "bad Content-Length")
        length = int(value)
        if length > MAX_BODY_BYTES:
            return self._refuse(413, f"request body over {MAX_BODY_BYTES} bytes")
        chunks = []
        while length > 0:
            chunk = self.rfile.read(min(length, 16384))
            if not chunk:
                self.close_connection = True
                return False  # the client went away mid-body: nothing to answer
            chunks.append(chunk)
            length -= len(chunk)
        self._body = b"".join(chunks)
        return True

    def _refuse(self, status: int, message: str) -> bool:
        self.close_connection = True
        self._send(status, (message + "\n").encode(), "text/plain; charset=utf-8", close=True)
        # Drain a little of what the client is still sending: closing a socket with unread
        # data makes the kernel reset it, and the client might never see our answer.
        try:
            self.connection.settimeout(0.5)
            for _ in range(16):
                if not self.rfile.read1(16384):
                    break
        except (OSError, ValueError):
            pass
        return False

    def _authorized(self) -> bool:
        auth = self.server.security.auth if self.server.security else None
        if auth is None:
            return True
        verdict = auth.verdict(self.headers.get("Authorization"))
        if verdict == Verdict.OK:
            return True
        if verdict == Verdict.BUSY:  # too many password checks queued: come back later
            self.close_connection = True
            self.send_response(429)
            self.send_header("Retry-After", "1")
            self.send_header("Connection", "close")
            body = b"Too Many Requests\n"
        else:
            self.send_response(401)
            self.send_header("WWW-Authenticate", 'Basic realm="synthetic-monitor"')
            body = b"Unauthorized\n"
        self.send_header("Content-Type", "text/plain; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)
        return False

    def _send_check(self, ok: bool, message: str) -> None:
        self._send(200 if ok else 503, (message + "\n").encode(), "text/plain; charset=utf-8")

    def _send_json(self, status: int, data: Any) -> None:
        self._send(status, json.dumps(data, default=str).encode(), "application/json")

    def _send(self, status: int, body: bytes, content_type: str, close: bool = False, gzipped: bool = False) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        if gzipped:
            self.send_header("Content-Encoding", "gzip")
            self.send_header("Vary", "Accept-Encoding")
        self.send_header("Content-Length", str(len(body)))
        if close:
            self.send_header("Connection", "close")
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _send_pieces(self, status: int, pieces: Sequence[bytes], content_type: str) -> None:
        """`_send` for a body in pieces (a 20 MB /metrics): gather writes of up to
        IOV_BATCH pieces each, so the body is never joined into one buffer."""
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(sum(map(len, pieces))))
        self.end_headers()
        if self.command != "HEAD":
            send_pieces(self.connection, pieces)

    def log_message(self, format: str, *args: Any) -> None:  # scrapes are not news
        pass

    def log_error(self, format: str, *args: Any) -> None:
        """A malformed request line or header: structlog (scrubbed), never raw stderr."""
        self.server.log.debug("http_bad_request", error=format % args if args else format)


IOV_BATCH = 1024  # pieces per sendmsg (Linux UIO_MAXIOV): fewer calls, fewer GIL re-takes
JOIN_BYTES = 1 << 20  # without sendmsg (TLS), pieces go out joined in about this much


def send_pieces(sock: socket.socket, pieces: Sequence[bytes]) -> None:
    """Write every piece in order: sendmsg gathers (plain TCP), else joined batches (TLS)."""
    if isinstance(sock, ssl.SSLSocket) or not hasattr(sock, "sendmsg"):
        batch: list[bytes] = []
        size = 0
        for piece in pieces:
            batch.append(piece)
            size += len(piece)
            if size >= JOIN_BYTES:
                sock.sendall(b"".join(batch))
                batch, size = [], 0
        if batch:
            sock.sendall(b"".join(batch))
        return
    rest: list[bytes | memoryview] = [piece for piece in pieces if piece]
    first = 0
    while first < len(rest):
        sent = sock.sendmsg(rest[first : first + IOV_BATCH])
        while sent:  # drop what went out; a partly sent piece keeps its rest
            size = len(rest[first])
            if sent >= size:
                sent -= size
                first += 1
            else:
                rest[first] = memoryview(rest[first])[sent:]
                sent = 0


class MonitorHTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(
        self,
        address: tuple[str, int],
        endpoints: Endpoints,
        *,
        security: ServerSecurity | None = None,
        lifecycle: bool = False,
    ) -> None:
        super().__init__(address, _Handler)
        self.endpoints = endpoints
        self.lifecycle = lifecycle
        self.security = security
        self.log = structlog.get_logger("monitor.web.server")
        self._thread: threading.Thread | None = None

    def get_request(self) -> tuple[socket.socket, Any]:
        """Accept, then wrap in the TLS context current now: a renewed certificate is
        served from the next connection on. The handshake happens in the handler's
        thread on first read, so a client that never sends a ClientHello blocks nobody."""
        sock, address = self.socket.accept()
        context = self.security.ssl_context() if self.security else None
        if context is not None:
            try:
                sock = context.wrap_socket(sock, server_side=True, do_handshake_on_connect=False)
            except (OSError, ValueError):
                sock.close()
                raise
        return sock, address

    def handle_error(self, request: Any, client_address: Any) -> None:
        """A failed connection (TLS handshake, reset, a bug) goes to the structured log,
        scrubbed like every line, never as a bare traceback on stderr."""
        exc = sys.exc_info()[1]
        if isinstance(exc, (OSError, TimeoutError)):  # ssl.SSLError is an OSError
            self.log.debug("http_connection_failed", error=f"{type(exc).__name__}: {exc}")
        else:
            self.log.error("http_request_failed", error=f"{type(exc).__name__}: {exc}", exc_info=True)

    def start(self) -> None:
        self._thread = threading.Thread(target=self.serve_forever, name="http-server", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self.shutdown()
        self.server_close()
