"""A lean HTTP/1.1 transport for httpx: keep-alive connections on plain asyncio protocols.

httpx's default transport (httpcore on anyio) spends ~1.2 ms of CPU per request here, ten
times the wire work, and the daemon makes hundreds of requests a second. This plugs into
httpx's documented extension point (`AsyncBaseTransport`), so the client, auth, headers
and exception types stay httpx's; only the wire work is done here, and only what a probe
needs: one request at a time per connection, HTTP/1.1, no proxies, no HTTP/2. Responses
are parsed by llhttp (through `httptools`, as uvicorn does): status line, headers, chunked
framing and Content-Length are a vetted parser's job, not ours.

Errors are raised as the httpx exceptions httpcore would raise for the same fault, so the
classification in `monitor.http` does not know which transport ran. Each response carries
its phase timings (connect, tls, first_byte, body) in `extensions["phases"]`.
"""

from __future__ import annotations

import asyncio
import select
import ssl
import time
from collections.abc import AsyncIterator, Callable
from typing import Any, cast

import httptools
import httpx

from monitor.certificates import PeerCertificate, peer_certificate

MAX_HEADER_BYTES = 64 * 1024
# Above this much unread body the socket stops being read: memory stays bounded even when
# a server sends far more than the caller will accept.
_READ_HIGH_WATER = 256 * 1024
_DEFAULT_PORTS = {"http": 80, "https": 443}
_NO_BODY_STATUSES = frozenset({204, 304})
# Methods a client may send twice (RFC 9110 section 9.2.2): the ones retried on a fresh
# connection when a reused one turns out to have been closed by the server.
IDEMPOTENT_METHODS = frozenset({"GET", "HEAD", "PUT", "DELETE", "OPTIONS"})
_FORBIDDEN_IN_HEADERS = (b"\r", b"\n", b"\0")

_Origin = tuple[str, str, int]


class PeerClosed(httpx.RemoteProtocolError):
    """The server closed the connection before the response was complete.

    A type of its own so classification never depends on message text, which may
    quote bytes the server sent.
    """


class UnsafeRequestHeader(httpx.LocalProtocolError):
    """An outgoing header name or value holds CR, LF or NUL: the monitor's own request is
    wrong (its configuration), so it is never sent and never blamed on the target."""


class Phases:
    """Where one request's time went, as blackbox_exporter splits it (seconds).

    connect and tls are 0 on a reused connection; first_byte runs from the request
    written to the first response byte; body from there to the last body byte read.
    """

    __slots__ = ("connect", "tls", "first_byte", "body")

    def __init__(self) -> None:
        self.connect = 0.0
        self.tls = 0.0
        self.first_byte = 0.0
        self.body = 0.0


class _Stop(Exception):
    """Raised from a parser callback to stop llhttp at once (the reason is kept apart)."""


class _Response:
    """llhttp's callbacks for one response on a connection: head, body bytes, completion."""

    def __init__(self, method: str) -> None:
        # The parser holds this object's bound methods, and this object the parser: a cycle
        # that only the garbage collector would free. It is dropped once the response is
        # complete or failed, so refcounting frees both at once (at 1,000 probes this was
        # 50,000 objects per young collection, 50-100 ms pauses that scrapes waited out).
        self.parser: httptools.HttpResponseParser | None = httptools.HttpResponseParser(self)
        self.version = b""
        self.head_only = method == "HEAD"
        self.status = 0
        self.reason = b""
        self.headers: list[tuple[bytes, bytes]] = []
        self.head_bytes = 0
        self.head_done = False
        self.interim = False
        self.to_eof = False
        self.keep_alive = False
        self.body = bytearray()
        self.complete = False
        self.error: httpx.TransportError | None = None
        self.stray = False  # bytes beyond this response: the connection is out of step
        self.first_byte_at = 0.0

    def feed(self, data: bytes) -> None:
        if not self.first_byte_at:
            self.first_byte_at = time.monotonic()
        parser = self.parser
        if self.complete or self.error is not None or parser is None:
            self.stray = True
            return
        if not self.head_done:
            self.head_bytes += len(data)
        try:
            parser.feed_data(data)
        except httptools.HttpParserCallbackError as exc:
            # httptools wraps what a callback raised; a _Stop has already said why.
            if not isinstance(exc.__context__, _Stop) and self.error is None:
                self.error = httpx.RemoteProtocolError(f"response parser callback failed: {exc}")
        except httptools.HttpParserUpgrade:
            self.error = httpx.RemoteProtocolError("unexpected protocol switch (HTTP 101)")
        except httptools.HttpParserError as exc:
            if self.complete:
                self.stray = True  # garbage after a complete response: retire the connection
            elif self.error is None:
                self.error = httpx.RemoteProtocolError(f"llhttp: {exc}")
        if not self.head_done and self.error is None and self.head_bytes > MAX_HEADER_BYTES:
            self.error = httpx.RemoteProtocolError(f"response header larger than {MAX_HEADER_BYTES} bytes")
        if self.complete or self.error is not None:
            self.parser = None  # see __init__

    # llhttp callbacks ------------------------------------------------------------------
    def on_message_begin(self) -> None:
        if self.complete:
            self.stray = True
            raise _Stop
        self.reason = b""
        self.headers = []

    def on_status(self, data: bytes) -> None:
        self.reason += data  # may arrive in pieces

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers.append((name, value))

    def on_headers_complete(self) -> None:
        parser = cast(httptools.HttpResponseParser, self.parser)  # callbacks run inside feed()
        status = parser.get_status_code()
        self.version = parser.get_http_version().encode("ascii")
        if 100 <= status < 200:
            if status == 101:
                self.error = httpx.RemoteProtocolError("unexpected protocol switch (HTTP 101)")
                raise _Stop
            self.interim = True  # 100 Continue, 103 Early Hints: the final answer follows
            return
        chunked = has_length = False
        for name, value in self.headers:
            lower = name.lower()
            if lower == b"transfer-encoding":
                # llhttp would read any other coding to EOF and hand over still-encoded
                # bytes; nothing here can decode them, so they are refused up front.
                if value.strip().lower() != b"chunked":
                    self.error = httpx.RemoteProtocolError(f"unsupported Transfer-Encoding {value[:40]!r}")
                    raise _Stop
                chunked = True
            elif lower == b"content-length":
                has_length = True
        self.status = status
        self.keep_alive = parser.should_keep_alive()
        self.to_eof = not (chunked or has_length or self.head_only or status in _NO_BODY_STATUSES)
        self.head_done = True
        if self.head_only:
            self.complete = True  # llhttp cannot be told; what follows a HEAD answer is stray

    def on_body(self, data: bytes) -> None:
        if self.head_only:
            self.stray = True
            raise _Stop
        self.body += data

    def on_message_complete(self) -> None:
        if self.interim:
            self.interim = False
            return
        self.complete = True

    @property
    def http_version(self) -> bytes:
        return b"HTTP/" + self.version


class _Connection(asyncio.Protocol):
    """One socket; the response being read is parsed as bytes arrive."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.transport: asyncio.Transport | None = None
        self.response: _Response | None = None
        self.stray = False  # bytes arrived while no response was expected
        self.eof = False
        self.error: BaseException | None = None
        self.idle_since = 0.0
        self._waiter: asyncio.Future[bool] | None = None
        self._paused = False
        self._poll: Any = None
        self.certificate: PeerCertificate | None = None  # what the server presented at the handshake

    # asyncio.Protocol -----------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # A stream connection: asyncio hands its Transport here (typed as the base class).
        self.transport = cast(asyncio.Transport, transport)
        sock = transport.get_extra_info("socket")
        if sock is not None:
            self._poll = select.poll()
            self._poll.register(sock.fileno(), select.POLLIN)

    def data_received(self, data: bytes) -> None:
        response = self.response
        if response is None:
            self.stray = True
        else:
            response.feed(data)
            if len(response.body) > _READ_HIGH_WATER and not self._paused and self.transport is not None:
                self._paused = True
                self.transport.pause_reading()
        self._wake(True)

    def eof_received(self) -> bool:
        self.eof = True
        self._wake(True)
        return False  # close our side too

    def connection_lost(self, exc: Exception | None) -> None:
        self.eof = True
        self.error = exc
        self.transport = None
        self._wake(True)

    # ----------------------------------------------------------------------------------
    def _wake(self, value: bool) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(value)

    def resume(self) -> None:
        if self._paused and self.transport is not None:
            self._paused = False
            self.transport.resume_reading()

    async def wait(self, timeout: float | None) -> None:
        """Until more bytes or EOF arrive; httpx.ReadTimeout after `timeout` seconds."""
        self.resume()
        waiter: asyncio.Future[bool] = self.loop.create_future()
        self._waiter = waiter
        timer = self.loop.call_later(timeout, self._wake, False) if timeout is not None else None
        try:
            arrived = await waiter
        finally:
            self._waiter = None
            if timer is not None:
                timer.cancel()
        if not arrived:
            raise httpx.ReadTimeout("timed out waiting for the server")

    @property
    def usable(self) -> bool:
        """Idle and still open: no EOF, and no stray bytes a server sent unasked.

        The socket itself is asked too, as httpcore does: a server that closed the
        connection while the event loop was busy has not been seen by `eof_received` yet,
        and reusing it would report a dropped connection instead of a dead server.
        """
        return self.quiet and (self._poll is None or not self._poll.poll(0))

    @property
    def quiet(self) -> bool:
        """Open, no EOF seen, nothing unread: what the event loop alone can tell."""
        response = self.response
        return (
            self.transport is not None
            and not self.eof
            and not self.stray
            and (response is None or (not response.stray and not response.body))
            and not self.transport.is_closing()
        )

    def close(self) -> None:
        self._poll = None
        if self.transport is not None:
            self.transport.close()
            self.transport = None

    def broken(self, what: str) -> httpx.TransportError:
        """The exception for an EOF where more was due: a reset is a ReadError, a close a protocol error."""
        if isinstance(self.error, OSError):
            exc: httpx.TransportError = httpx.ReadError(f"{what}: {self.error}")
            exc.__cause__ = self.error
            return exc
        return PeerClosed(f"{what}: peer closed the connection")


class LeanTransport(httpx.AsyncBaseTransport):
    """A small connection pool: at most `max_connections` requests in flight, the rest wait."""

    def __init__(
        self,
        ssl_context: ssl.SSLContext | Callable[[], ssl.SSLContext] | None = None,
        *,
        max_connections: int = 4,
        keepalive_expiry: float = 30.0,
    ) -> None:
        # A callable is asked on the first https connection: a context with the CA bundle
        # loaded holds ~1.8 MB, which a daemon probing plain-http targets never needs.
        self._ssl_context = ssl_context
        self._slots = asyncio.Semaphore(max_connections)
        self._keepalive_expiry = keepalive_expiry
        self._idle: dict[_Origin, list[_Connection]] = {}
        self._closed = False

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        url = request.url
        scheme = url.scheme
        if scheme not in _DEFAULT_PORTS:
            raise httpx.UnsupportedProtocol(f"unsupported URL scheme {scheme!r}")
        origin = (scheme, url.host, url.port or _DEFAULT_PORTS[scheme])
        timeouts: dict[str, float | None] = request.extensions.get("timeout", {})
        read_timeout = timeouts.get("read")
        body = await request.aread()
        wire = _serialize(request, body)  # before a slot is taken: a bad header never reaches a socket
        if self._slots.locked():
            try:
                async with asyncio.timeout(timeouts.get("pool")):
                    await self._slots.acquire()
            except TimeoutError:
                raise httpx.PoolTimeout("no free connection in time") from None
        else:
            await self._slots.acquire()
        conn: _Connection | None = None
        phases: Phases = request.extensions.get("phases") or Phases()
        try:
            conn = self._checkout(origin)
            if conn is None:
                conn = await self._connect(origin, timeouts.get("connect"), phases)
                response = await _exchange(conn, request.method, wire, read_timeout, phases)
            else:
                try:
                    response = await _exchange(conn, request.method, wire, read_timeout, phases)
                except (PeerClosed, httpx.ReadError):
                    # A reused connection the server had already closed, with not one byte
                    # of an answer: the request crossed the server's close on the wire.
                    # Retried once on a new connection, as browsers and Go's net/http do;
                    # never a POST, never after any byte of a response.
                    if request.method not in IDEMPOTENT_METHODS or conn.response is None or conn.response.first_byte_at:
                        raise
                    conn.close()
                    conn = None
                    phases.first_byte = 0.0  # the new attempt's own phases from here
                    conn = await self._connect(origin, timeouts.get("connect"), phases)
                    response = await _exchange(conn, request.method, wire, read_timeout, phases)
            keep_alive = response.keep_alive
            if keep_alive and "close" in request.headers.get("connection", "").lower():
                keep_alive = False  # we asked the server to close it
        except BaseException:
            if conn is not None:
                conn.close()
            self._slots.release()
            raise
        stream = _ResponseBody(self, origin, conn, response, keep_alive, read_timeout, phases)
        return httpx.Response(
            response.status,
            headers=response.headers,
            stream=stream,
            extensions={
                "http_version": response.http_version,
                "reason_phrase": response.reason,
                "phases": phases,
                "tls_certificate": conn.certificate,
            },
        )

    def _checkout(self, origin: _Origin) -> _Connection | None:
        idle = self._idle.get(origin)
        now = time.monotonic()
        while idle:
            conn = idle.pop()
            if conn.usable and now - conn.idle_since < self._keepalive_expiry:
                return conn
            conn.close()
        return None

    async def _connect(self, origin: _Origin, timeout: float | None, phases: Phases) -> _Connection:
        scheme, host, port = origin
        loop = asyncio.get_running_loop()
        tls: ssl.SSLContext | None = None
        if scheme == "https":
            if callable(self._ssl_context):
                self._ssl_context = self._ssl_context()
            tls = self._ssl_context or ssl.create_default_context()
        try:
            async with asyncio.timeout(timeout):
                started = time.monotonic()
                try:
                    raw, conn = await loop.create_connection(lambda: _Connection(loop), host, port)
                except OSError as exc:
                    raise httpx.ConnectError(str(exc) or type(exc).__name__) from exc
                connected = time.monotonic()
                phases.connect = connected - started
                if tls is not None:
                    # After the TCP connect, any failure is the TLS handshake's, be it an
                    # alert, a reset or a close (a TLS proxy without a backend).
                    try:
                        secured = await loop.start_tls(raw, conn, tls, server_hostname=host)
                        conn.transport = secured
                    except BaseException as exc:
                        raw.close()
                        if not isinstance(exc, OSError):
                            raise
                        cause = (
                            exc if isinstance(exc, ssl.SSLError) else ssl.SSLEOFError(f"handshake interrupted: {exc}")
                        )
                        raise httpx.ConnectError(f"TLS handshake failed: {exc}") from cause
                    phases.tls = time.monotonic() - connected
                    # Read once per connection, from this handshake: no second connection to look.
                    if secured is not None:
                        conn.certificate = peer_certificate(secured.get_extra_info("ssl_object"))
        except TimeoutError:
            raise httpx.ConnectTimeout(f"no connection to {host}:{port} in time") from None
        return conn

    def _release(self, origin: _Origin, conn: _Connection, reusable: bool) -> None:
        self._slots.release()
        # Not `usable`: its socket poll is for idle connections and runs at checkout.
        if reusable and not self._closed and conn.quiet:
            conn.resume()  # paused by a large body: it must still notice the server closing
            conn.response = None
            conn.idle_since = time.monotonic()
            self._idle.setdefault(origin, []).append(conn)
        else:
            conn.close()

    async def aclose(self) -> None:
        """Close the idle connections; a run still in flight finishes on its own
        connection, which is then closed rather than pooled."""
        self._closed = True
        for idle in self._idle.values():
            for conn in idle:
                conn.close()
        self._idle.clear()


async def _exchange(conn: _Connection, method: str, wire: bytes, timeout: float | None, phases: Phases) -> _Response:
    """Send the request and wait for the head of the final response (1xx ones are skipped)."""
    response = _Response(method)
    conn.response = response
    if conn.transport is None:  # made and closed before any request: report it as a peer close
        raise PeerClosed("connection closed before the request was sent")
    conn.transport.write(wire)
    sent = time.monotonic()
    try:
        while not response.head_done:
            if response.error is not None:
                raise response.error
            if conn.eof:
                if not response.first_byte_at:
                    if isinstance(conn.error, OSError):
                        raise conn.broken("Server disconnected without sending a response")
                    raise PeerClosed("Server disconnected without sending a response.")
                raise conn.broken("incomplete response header")
            await conn.wait(timeout)
    except BaseException:
        # As far as it got: a timeout waiting for the answer shows up as a long first_byte.
        phases.first_byte = (response.first_byte_at or time.monotonic()) - sent
        if response.first_byte_at:
            phases.body = time.monotonic() - response.first_byte_at
        raise
    phases.first_byte = response.first_byte_at - sent
    return response


class _ResponseBody(httpx.AsyncByteStream):
    """The body as it arrives; the connection goes back to the pool once it was read whole."""

    def __init__(
        self,
        pool: LeanTransport,
        origin: _Origin,
        conn: _Connection,
        response: _Response,
        keep_alive: bool,
        read_timeout: float | None,
        phases: Phases,
    ) -> None:
        self._pool = pool
        self._origin = origin
        self._conn: _Connection | None = conn
        self._response = response
        self._keep_alive = keep_alive
        self._timeout = read_timeout
        self._phases = phases
        self._complete = False

    async def __aiter__(self) -> AsyncIterator[bytes]:
        conn = self._conn
        if conn is None:
            raise httpx.StreamClosed()
        response = self._response
        received = 0
        try:
            while True:
                if response.body:
                    chunk = bytes(response.body)
                    response.body.clear()
                    received += len(chunk)
                    yield chunk
                elif response.error is not None:
                    raise response.error
                elif response.complete:
                    break
                elif conn.eof:
                    if response.to_eof and not isinstance(conn.error, OSError):
                        break  # a body without a length ends with the connection
                    raise conn.broken(f"incomplete body: received {received} bytes")
                else:
                    await conn.wait(self._timeout)
        finally:
            # Also when the reader stops early (a body over the cap) or times out.
            self._phases.body = time.monotonic() - response.first_byte_at
        self._complete = not response.to_eof

    async def aclose(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            self._pool._release(self._origin, conn, self._complete and self._keep_alive)


def _serialize(request: httpx.Request, body: bytes) -> bytes:
    parts = [request.method.encode("ascii"), b" ", request.url.raw_path, b" HTTP/1.1\r\n"]
    chunked = False
    raw = request.headers.raw
    for name, value in raw:
        parts += (name, b": ", value, b"\r\n")
        if name.lower() == b"transfer-encoding" and b"chunked" in value.lower():
            chunked = True
    parts.append(b"\r\n")
    # Exactly one CRLF per line (request line, each header, the blank line) and no NUL:
    # three C-speed scans of the head instead of a check per header and character.
    lines = len(raw) + 2
    head = b"".join(parts)
    if head.count(b"\n") != lines or head.count(b"\r") != lines or b"\0" in head:
        for name, value in raw:
            if any(c in name or c in value for c in _FORBIDDEN_IN_HEADERS):
                raise UnsafeRequestHeader(
                    f"outgoing header {name.decode('latin-1')!r} holds CR, LF or NUL: refused before sending"
                )
        raise UnsafeRequestHeader("the request line holds CR, LF or NUL: refused before sending")
    parts = [head]
    if chunked:
        if body:
            parts += (b"%x\r\n" % len(body), body, b"\r\n")
        parts.append(b"0\r\n\r\n")
    elif body:
        parts.append(body)
    return b"".join(parts)
