"""A lean HTTP/1.1 transport for httpx: keep-alive connections on plain asyncio protocols.

httpx's default transport (httpcore on anyio) spends ~1.2 ms of CPU per request here, ten
times the wire work, and the daemon makes hundreds of requests a second. This plugs into
httpx's documented extension point (`AsyncBaseTransport`), so the client, auth, headers
and exception types stay httpx's; only the wire work is done here, and only what a probe
needs: one request at a time per connection, HTTP/1.1, no proxies, no HTTP/2.

Errors are raised as the httpx exceptions httpcore would raise for the same fault, so the
classification in `monitor.http` does not know which transport ran.
"""

from __future__ import annotations

import asyncio
import re
import select
import ssl
import time
from collections.abc import AsyncIterator, Callable
from typing import Any
import httpx

MAX_HEADER_BYTES = 64 * 1024
# Above this much unread data the socket stops being read: memory stays bounded even when
# a server sends far more than the caller will accept.
_READ_HIGH_WATER = 256 * 1024
_DEFAULT_PORTS = {"http": 80, "https": 443}
_NO_BODY_STATUSES = frozenset({204, 304})

_Origin = tuple[str, str, int]
_TOKEN = re.compile(rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_CHUNK_SIZE = re.compile(rb"[0-9A-Fa-f]{1,16}")


class PeerClosed(httpx.RemoteProtocolError):
    """The server closed the connection before the response was complete.

    A type of its own so classification never depends on message text, which may
    quote bytes the server sent.
    """


class _Connection(asyncio.Protocol):
    """One socket and its unread bytes; the transport reads it through `wait`."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.transport: asyncio.Transport | None = None
        self.buffer = bytearray()
        self.eof = False
        self.error: BaseException | None = None
        self.idle_since = 0.0
        self._waiter: asyncio.Future[bool] | None = None
        self._paused = False
        self._poll: Any = None

    # asyncio.Protocol -----------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        sock = transport.get_extra_info("socket")
        if sock is not None:
            self._poll = select.poll()
            self._poll.register(sock.fileno(), select.POLLIN)

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        if len(self.buffer) > _READ_HIGH_WATER and not self._paused and self.transport is not None:
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

    def take(self, size: int) -> bytes:
        chunk = bytes(self.buffer[:size])
        del self.buffer[:size]
        return chunk

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
        return self.transport is not None and not self.eof and not self.buffer and not self.transport.is_closing()

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
        if self._slots.locked():
            try:
                async with asyncio.timeout(timeouts.get("pool")):
                    await self._slots.acquire()
            except TimeoutError:
                raise httpx.PoolTimeout("no free connection in time") from None
        else:
            await self._slots.acquire()
        conn: _Connection | None = None
        try:
            conn = self._checkout(origin) or await self._connect(origin, timeouts.get("connect"))
            conn.transport.write(_serialize(request, body))  # type: ignore[union-attr]
            status, reason, version, headers = await _read_head(conn, read_timeout)
            framing, length, keep_alive = _framing(request.method, status, version, headers)
            if keep_alive and "close" in request.headers.get("connection", "").lower():
                keep_alive = False  # we asked the server to close it
        except BaseException:
            if conn is not None:
                conn.close()
            self._slots.release()
            raise
        stream = _ResponseBody(self, origin, conn, framing, length, keep_alive, read_timeout)
        return httpx.Response(
            status,
            headers=headers,
            stream=stream,
            extensions={"http_version": version, "reason_phrase": reason},
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

    async def _connect(self, origin: _Origin, timeout: float | None) -> _Connection:
        scheme, host, port = origin
        loop = asyncio.get_running_loop()
        tls: ssl.SSLContext | None = None
        if scheme == "https":
            if callable(self._ssl_context):
                self._ssl_context = self._ssl_context()
            tls = self._ssl_context or ssl.create_default_context()
        try:
            async with asyncio.timeout(timeout):
                try:
                    raw, conn = await loop.create_connection(lambda: _Connection(loop), host, port)
                except OSError as exc:
                    raise httpx.ConnectError(str(exc) or type(exc).__name__) from exc
                if tls is not None:
                    # After the TCP connect, any failure is the TLS handshake's, be it an
                    # alert, a reset or a close (a TLS proxy without a backend).
                    try:
                        conn.transport = await loop.start_tls(raw, conn, tls, server_hostname=host)  # type: ignore[assignment]
                    except BaseException as exc:
                        raw.close()
                        if not isinstance(exc, OSError):
                            raise
                        cause = exc if isinstance(exc, ssl.SSLError) else ssl.SSLEOFError(f"handshake interrupted: {exc}")
                        raise httpx.ConnectError(f"TLS handshake failed: {exc}") from cause
        except TimeoutError:
            raise httpx.ConnectTimeout(f"no connection to {host}:{port} in time") from None
        return conn

    def _release(self, origin: _Origin, conn: _Connection, reusable: bool) -> None:
        self._slots.release()
        # Not `usable`: its socket poll is for idle connections and runs at checkout.
        if reusable and not self._closed and conn.quiet:
            conn.resume()  # paused by a large body: it must still notice the server closing
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


class _ResponseBody(httpx.AsyncByteStream):
    """The body as it arrives; the connection goes back to the pool once it was read whole."""

    def __init__(
        self,
        pool: LeanTransport,
        origin: _Origin,
        conn: _Connection,
        framing: str,
        length: int,
        keep_alive: bool,
        read_timeout: float | None,
    ) -> None:
        self._pool = pool
        self._origin = origin
        self._conn: _Connection | None = conn
        self._framing = framing
        self._length = length
        self._keep_alive = keep_alive
        self._timeout = read_timeout
        self._complete = False

    async def __aiter__(self) -> AsyncIterator[bytes]:
        conn = self._conn
        if conn is None:
            raise httpx.StreamClosed()
        if self._framing == "length":
            async for chunk in self._read_length(conn):
                yield chunk
        elif self._framing == "chunked":
            async for chunk in self._read_chunked(conn):
                yield chunk
        else:
            while True:
                if conn.buffer:
                    yield conn.take(len(conn.buffer))
                elif conn.eof:
                    if isinstance(conn.error, OSError):
                        raise conn.broken("connection broken mid-body")
                    break
                else:
                    await conn.wait(self._timeout)
        self._complete = True

    async def _read_length(self, conn: _Connection) -> AsyncIterator[bytes]:
        async for chunk in self._read_exactly(conn, self._length, "incomplete body"):
            yield chunk

    async def _read_exactly(self, conn: _Connection, size: int, what: str) -> AsyncIterator[bytes]:
        """`size` bytes as they arrive; an EOF before them is the server giving up."""
        remaining = size
        while remaining:
            if conn.buffer:
                chunk = conn.take(remaining)
                remaining -= len(chunk)
                yield chunk
            elif conn.eof:
                raise conn.broken(f"{what}: received {size - remaining} of {size} bytes")
            else:
                await conn.wait(self._timeout)

    async def _read_chunked(self, conn: _Connection) -> AsyncIterator[bytes]:
        while True:
            line = await _read_line(conn, self._timeout, "incomplete chunked body")
            size_text = line.split(b";", 1)[0].strip()
            if not _CHUNK_SIZE.fullmatch(size_text):
                raise httpx.RemoteProtocolError(f"malformed chunk size {size_text[:20]!r}")
            size = int(size_text, 16)
            if size == 0:
                while await _read_line(conn, self._timeout, "incomplete chunked trailer"):
                    pass  # trailers are ignored
                return
            async for chunk in self._read_exactly(conn, size, "incomplete chunked body"):
                yield chunk
            if await _read_line(conn, self._timeout, "incomplete chunked body"):
                raise httpx.RemoteProtocolError("malformed chunked body: no CRLF after a chunk")

    async def aclose(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            self._pool._release(self._origin, conn, self._complete and self._keep_alive)


def _serialize(request: httpx.Request, body: bytes) -> bytes:
    parts = [request.method.encode("ascii"), b" ", request.url.raw_path, b" HTTP/1.1\r\n"]
    chunked = False
    for name, value in request.headers.raw:
        parts += (name, b": ", value, b"\r\n")
        if name.lower() == b"transfer-encoding" and b"chunked" in value.lower():
            chunked = True
    parts.append(b"\r\n")
    if chunked:
        if body:
            parts += (b"%x\r\n" % len(body), body, b"\r\n")
        parts.append(b"0\r\n\r\n")
    elif body:
        parts.append(body)
    return b"".join(parts)


async def _read_line(conn: _Connection, timeout: float | None, what: str) -> bytes:
    """One line without its CRLF (or lone LF), bounded in length."""
    while True:
        end = conn.buffer.find(b"\n")
        if end >= 0:
            return conn.take(end + 1).rstrip(b"\r\n")
        if len(conn.buffer) > MAX_HEADER_BYTES:
            raise httpx.RemoteProtocolError(f"chunked body line longer than {MAX_HEADER_BYTES} bytes")
        if conn.eof:
            raise conn.broken(what)
        await conn.wait(timeout)


async def _read_head(
    conn: _Connection, timeout: float | None
) -> tuple[int, bytes, bytes, list[tuple[bytes, bytes]]]:
    """Status line and headers of the final response (1xx interim responses are skipped).

    Lines may end in a lone LF and folded header lines are unfolded, as RFC 9112 lets a
    client accept; anything else malformed is a protocol error, as h11 would have it.
    """
    while True:
        checked = False
        while True:
            buffer = conn.buffer
            if not checked and (line_end := buffer.find(b"\n")) >= 0:
                _parse_status_line(bytes(buffer[:line_end]).rstrip(b"\r"))  # garbage fails at once, not at EOF
                checked = True
            head_end = _blank_line(buffer)
            if head_end is not None:
                break
            if len(buffer) > MAX_HEADER_BYTES:
                raise httpx.RemoteProtocolError(f"response header larger than {MAX_HEADER_BYTES} bytes")
            if conn.eof:
                if not buffer:
                    if isinstance(conn.error, OSError):
                        raise conn.broken("Server disconnected without sending a response")
                    raise PeerClosed("Server disconnected without sending a response.")
                raise conn.broken("incomplete response header")
            await conn.wait(timeout)
        head_length, consumed = head_end
        lines = [line.rstrip(b"\r") for line in conn.take(consumed)[:head_length].split(b"\n")]
        version, status, reason = _parse_status_line(lines[0])
        if status < 200:
            if status == 101:
                raise httpx.RemoteProtocolError("unexpected protocol switch (HTTP 101)")
            continue
        return status, reason, version, _parse_headers(lines[1:])


def _blank_line(buffer: bytearray) -> tuple[int, int] | None:
    """(length of the head without its final line break, bytes up to the body) once the
    blank line that ends the head has arrived."""
    found = [(i, i + len(sep)) for sep in (b"\n\r\n", b"\n\n") if (i := buffer.find(sep)) >= 0]
    return min(found) if found else None


def _parse_headers(lines: list[bytes]) -> list[tuple[bytes, bytes]]:
    headers: list[tuple[bytes, bytes]] = []
    for line in lines:
        if line[:1] in (b" ", b"\t"):  # obs-fold: continues the previous value
            if not headers:
                raise httpx.RemoteProtocolError(f"malformed response header line {line[:40]!r}")
            name, value = headers[-1]
            headers[-1] = (name, (value + b" " + line.strip()).strip())
            continue
        name, sep, value = line.partition(b":")
        if not sep or not _TOKEN.fullmatch(name) or b"\0" in value or b"\r" in value:
            raise httpx.RemoteProtocolError(f"malformed response header line {line[:40]!r}")
        headers.append((name, value.strip(b" \t")))
    return headers


def _parse_status_line(line: bytes) -> tuple[bytes, int, bytes]:
    version, _, rest = line.partition(b" ")
    code, _, reason = rest.partition(b" ")
    if version not in (b"HTTP/1.1", b"HTTP/1.0") or len(code) != 3 or not code.isdigit() or code[:1] == b"0":
        raise httpx.RemoteProtocolError(f"malformed status line {line[:40]!r}")
    return version, int(code), reason


def _framing(method: str, status: int, version: bytes, headers: list[tuple[bytes, bytes]]) -> tuple[str, int, bool]:
    """How the body ends (RFC 9112 section 6.3) and whether the connection may be reused."""
    keep_alive = version == b"HTTP/1.1"
    chunked = False
    lengths: set[bytes] = set()
    for name, value in headers:
        lower = name.lower()
        if lower == b"content-length":
            lengths.update(v.strip() for v in value.split(b","))
        elif lower == b"transfer-encoding":
            if value.strip().lower() != b"chunked":  # what h11 supported; any other coding is refused
                raise httpx.RemoteProtocolError(f"unsupported Transfer-Encoding {value[:40]!r}")
            chunked = True
        elif lower == b"connection":
            tokens = {t.strip() for t in value.lower().split(b",")}
            if b"close" in tokens:
                keep_alive = False
            elif b"keep-alive" in tokens and version == b"HTTP/1.0":
                keep_alive = True
    if method == "HEAD" or status in _NO_BODY_STATUSES:
        return "length", 0, keep_alive
    if chunked:
        return "chunked", 0, keep_alive
    if lengths:
        if len(lengths) != 1 or not next(iter(lengths)).isdigit():
            raise httpx.RemoteProtocolError(f"invalid Content-Length {b','.join(sorted(lengths))[:40]!r}")
        return "length", int(next(iter(lengths))), keep_alive
    return "close", 0, False
