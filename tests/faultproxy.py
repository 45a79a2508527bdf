"""A fault-injecting HTTP/1.1 reverse proxy of our own, for end-to-end fault tests.

It sits in front of a real upstream (the real `mlflow server` in the tests) and, per a
switch settable at run time, either passes requests through or misbehaves the way a
broken server, gateway or network does. Only the standard library: asyncio raw streams,
one event loop in a background thread, so a synchronous test (or another process, through
the admin endpoint) can flip the switch between two probe runs.

Faults (`Fault.kind`):

    pass            forward to the upstream unchanged (the default)
    hang            read the request, never answer (until the client gives up)
    trickle         200 headers, then a body slower than any deadline (1 byte per `interval`)
    close           read the request, close the connection with no response
    reset           200 headers and part of the body, then a TCP reset (SO_LINGER 0)
    status          answer `status` with `body` (and `headers`); 401 adds WWW-Authenticate;
                    `echo=True` quotes the request's credentials in a JSON error body
    html            200 text/html page (what a login page or an ingress error page looks like)
    malformed_json  200 application/json that is not JSON
    json            200 application/json of `json` (e.g. the wrong shape: a list, {"unexpected": 1})
    big             200 with a `size`-byte body, streamed from one small buffer (chunked, or
                    with a declared Content-Length when `chunked=False`; gzip-compressed on
                    the wire when `gzip=True`, a "zip bomb": ~50 KB carrying 50 MB)
    redirect        302 to the very same URL (a redirect loop)
    rewrite         forward, then edit the upstream's JSON answer (`edits`, see `apply_edit`)

Each fault can be scoped to requests whose path contains `path` (e.g. "/runs/get"), so it
hits the intended step; requests that match no fault pass through. Any fault can first
wait `delay` seconds (`Fault("pass", delay=2)`: a slow upstream that still answers). Besides faults,
`refuse()` closes the listening socket (connection refused on the same port, open
connections dropped) and `accept()` opens it again.

Admin endpoint (never faulted, never forwarded), for use from another process:
    GET    /__faultproxy__          {"faults": [...], "listening": true, "stats": {...}}
    PUT    /__faultproxy__          body {"faults": [{"kind": "status", "status": 503, "path": "/health"}]}
    DELETE /__faultproxy__          back to pass-through

As a script: `python -m tests.faultproxy --upstream http://127.0.0.1:5000 --port 8080`
prints `faultproxy listening on http://127.0.0.1:8080` and serves until SIGTERM/SIGINT.
Everything listens on 127.0.0.1 unless told otherwise.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import datetime as dt
import ipaddress
import json
import signal
import socket
import ssl
import struct
import sys
import threading
import zlib
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

ADMIN_PATH = "/__faultproxy__"
KINDS = frozenset(
    {
        "pass",
        "hang",
        "trickle",
        "close",
        "reset",
        "status",
        "html",
        "malformed_json",
        "json",
        "big",
        "redirect",
        "rewrite",
    }
)
# Hop-by-hop headers (RFC 9110 7.6.1) and the framing headers we set ourselves.
_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-connection",
        "proxy-authenticate",
        "proxy-authorization",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
        "content-length",
    }
)
_REASONS = {
    200: "OK",
    302: "Found",
    400: "Bad Request",
    401: "Unauthorized",
    403: "Forbidden",
    404: "Not Found",
    500: "Internal Server Error",
    502: "Bad Gateway",
    503: "Service Unavailable",
    504: "Gateway Timeout",
}
INVALID_HOST_BODY = b"Invalid Host header - possible DNS rebinding attack detected"
MLFLOW_401_BODY = (
    b"You are not authenticated. Please see https://www.mlflow.org/docs/latest/auth/index.html"
    b"#authenticating-to-mlflow on how to authenticate."
)
HTML_PAGE = (
    b"<!DOCTYPE html>\n<html><head><title>Sign in - Corporate SSO</title></head>"
    b"<body><form method=post><input name=user><input name=password type=password></form></body></html>\n"
)
MALFORMED_JSON = b'{"experiments": [{"experiment_id": "0", "name": "Default", '
_CHUNK = 64 * 1024
UPSTREAM_TIMEOUT = 30.0
HANG_LIMIT = 120.0  # bound: a hung connection is released after this even if the client stays


@dataclass(frozen=True)
class Fault:
    """One fault rule. Immutable: the proxy swaps whole rule tuples, never edits one."""

    kind: str = "pass"
    path: str | None = None  # only requests whose path contains this substring
    status: int = 500
    body: str | None = None  # for `status` (default: a short text per status)
    headers: dict[str, str] = field(default_factory=dict)
    json: Any = None  # for `json`
    interval: float = 0.25  # for `trickle`: seconds per byte
    size: int = 50 * 1024 * 1024  # for `big`
    chunked: bool = True  # for `big`
    gzip: bool = False  # for `big`
    edits: tuple[dict[str, Any], ...] = ()  # for `rewrite`
    echo: bool = False  # for `status`: quote the request's credentials in the error body
    delay: float = 0.0  # seconds to wait before serving (any kind; `pass` = a slow upstream)
    query: str | None = None  # only requests whose query string contains this (e.g. "partNumber")

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"unknown fault kind {self.kind!r}; known: {', '.join(sorted(KINDS))}")
        if not isinstance(self.edits, tuple):
            object.__setattr__(self, "edits", tuple(self.edits))

    def matches(self, path: str, query: str = "") -> bool:
        return (self.path is None or self.path in path) and (self.query is None or self.query in query)

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["edits"] = list(self.edits)
        return data


@dataclass
class _Request:
    method: str
    target: str
    version: str
    headers: list[tuple[str, str]]
    body: bytes

    def header(self, name: str) -> str | None:
        name = name.lower()
        return next((v for k, v in self.headers if k.lower() == name), None)

    @property
    def path(self) -> str:
        return self.target.split("?", 1)[0]

    @property
    def wants_close(self) -> bool:
        value = (self.header("connection") or "").lower()
        return "close" in value or (self.version == "HTTP/1.0" and "keep-alive" not in value)


class _ClientGone(Exception):
    """The client closed or reset its side: stop serving this connection quietly."""


class FaultProxy:
    """The proxy; `start()` runs it in a background thread with its own event loop."""

    def __init__(
        self, upstream: str, host: str = "127.0.0.1", port: int = 0, tls: ssl.SSLContext | None = None
    ) -> None:
        parts = urlsplit(upstream)
        if parts.scheme != "http" or not parts.hostname:
            raise ValueError(f"upstream must be http://host:port, got {upstream!r}")
        self.upstream_host = parts.hostname
        self.upstream_port = parts.port or 80
        self.upstream_netloc = parts.netloc
        self.host = host
        self.port = port
        self.tls = tls
        self.stats: Counter[str] = Counter()
        # Every Authorization header seen (a test proxy: it exists to prove what was sent).
        self.authorizations: set[str] = set()
        self._faults: tuple[Fault, ...] = ()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._server: asyncio.base_events.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self._tasks: set[asyncio.Task[Any]] = set()
        self._stopped: asyncio.Event | None = None

    # -- control (thread-safe) ---------------------------------------------------------

    @property
    def url(self) -> str:
        return f"{'https' if self.tls else 'http'}://{self.host}:{self.port}"

    @property
    def faults(self) -> tuple[Fault, ...]:
        return self._faults

    def set_fault(self, kind: str | Fault = "pass", **params: Any) -> Fault:
        """Replace every rule by this one fault (`set_fault("status", status=503, path="/health")`)."""
        fault = kind if isinstance(kind, Fault) else Fault(kind, **params)
        self._faults = () if fault.kind == "pass" and fault.path is None else (fault,)
        return fault

    def set_faults(self, faults: list[Fault] | tuple[Fault, ...]) -> None:
        """Several scoped rules at once; the first one whose `path` matches applies."""
        self._faults = tuple(faults)

    def clear(self) -> None:
        """Back to pass-through (and listening, if `refuse()` closed the port)."""
        self._faults = ()
        if not self.listening:
            self.accept()

    @property
    def listening(self) -> bool:
        return self._server is not None

    def refuse(self) -> None:
        """Close the listening socket and every open connection: new connects are refused."""
        self._call(self._close_listener())

    def accept(self) -> None:
        """Listen again on the same port after `refuse()`."""
        self._call(self._open_listener())

    def open_connections(self) -> int:
        return len(self._writers)

    # -- lifecycle ---------------------------------------------------------------------

    def start(self, timeout: float = 10.0) -> FaultProxy:
        ready = threading.Event()
        errors: list[BaseException] = []

        def run() -> None:
            loop = asyncio.new_event_loop()
            loop.set_exception_handler(_quiet_exceptions)
            self._loop = loop
            asyncio.set_event_loop(loop)
            self._stopped = asyncio.Event()
            try:
                loop.run_until_complete(self._open_listener())
            except BaseException as exc:  # bind failure: report to start()
                errors.append(exc)
                ready.set()
                loop.close()
                return
            ready.set()
            try:
                loop.run_until_complete(self._stopped.wait())
                loop.run_until_complete(self._shutdown())
            finally:
                loop.close()

        self._thread = threading.Thread(target=run, name=f"faultproxy-{self.port}", daemon=True)
        self._thread.start()
        if not ready.wait(timeout):
            raise TimeoutError("fault proxy did not start")
        if errors:
            raise errors[0]
        return self

    def stop(self, timeout: float = 10.0) -> None:
        loop, stopped = self._loop, self._stopped
        if loop is None or stopped is None or loop.is_closed():
            return
        loop.call_soon_threadsafe(stopped.set)
        if self._thread is not None:
            self._thread.join(timeout)

    def __enter__(self) -> FaultProxy:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _call(self, coro: Any, timeout: float = 10.0) -> Any:
        assert self._loop is not None, "start() the proxy first"
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout)

    async def _open_listener(self) -> None:
        if self._server is not None:
            return
        self._server = await asyncio.start_server(
            self._handle,
            self.host,
            self.port,
            ssl=self.tls,
            reuse_address=True,
            limit=256 * 1024,
        )
        self.port = self._server.sockets[0].getsockname()[1]

    async def _close_listener(self) -> None:
        server, self._server = self._server, None
        if server is not None:
            server.close()
        for writer in list(self._writers):
            writer.transport.abort()
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.wait(set(self._tasks), timeout=5)
        if server is not None:
            await asyncio.wait_for(server.wait_closed(), 5)

    async def _shutdown(self) -> None:
        await self._close_listener()
        if self._tasks:
            await asyncio.wait(set(self._tasks), timeout=5)

    # -- one client connection ---------------------------------------------------------

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        self._writers.add(writer)
        self.stats["connections"] += 1
        aborted = False
        try:
            while True:
                request = await _read_request(reader)
                if request is None:
                    break
                self.stats["requests"] += 1
                if request.header("authorization"):
                    self.authorizations.add(request.header("authorization") or "")
                if request.path.startswith(ADMIN_PATH):
                    keep = await self._admin(request, writer)
                else:
                    fault = (
                        next(
                            (f for f in self._faults if f.matches(request.path, request.target.partition("?")[2])), None
                        )
                        or Fault()
                    )
                    self.stats[fault.kind] += 1
                    keep, aborted = await self._serve(fault, request, reader, writer)
                if not keep or request.wants_close or aborted:
                    break
        except (
            _ClientGone,
            ConnectionError,
            asyncio.IncompleteReadError,
            asyncio.LimitOverrunError,
            ValueError,
            ssl.SSLError,
            OSError,
        ):
            pass
        except asyncio.CancelledError:
            aborted = True
            writer.transport.abort()
        finally:
            self._writers.discard(writer)
            self._tasks.discard(task)
            if not aborted:
                try:
                    writer.close()
                    await asyncio.wait_for(writer.wait_closed(), 2)
                except (ConnectionError, OSError, TimeoutError, ssl.SSLError, asyncio.CancelledError):
                    pass

    async def _serve(
        self, fault: Fault, request: _Request, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> tuple[bool, bool]:
        """Answer one request; returns (keep the connection, connection was aborted)."""
        kind = fault.kind
        if fault.delay > 0:
            await asyncio.sleep(fault.delay)
        if kind in ("pass", "rewrite"):
            status, headers, body = await self._forward(request)
            if kind == "rewrite" and status == 200:
                try:
                    document = json.loads(body)
                    for edit in fault.edits:
                        document = apply_edit(document, edit)
                    body = json.dumps(document).encode()
                    self.stats["rewritten"] += 1
                except ValueError:
                    pass
            await _respond(writer, status, headers, body, head=request.method == "HEAD")
            return True, False
        if kind == "hang":
            await _wait_for_eof(reader, HANG_LIMIT)
            return False, False
        if kind == "close":
            return False, False
        if kind == "trickle":
            body = b'{"experiments": [], "run": {}}' + b" " * 200
            await _send(writer, _head(200, [("Content-Type", "application/json"), ("Content-Length", str(len(body)))]))
            for byte in body:
                await asyncio.sleep(fault.interval)
                await _send(writer, bytes([byte]))
            return False, False
        if kind == "reset":
            await _send(writer, _head(200, [("Content-Type", "application/json"), ("Content-Length", "100000")]))
            await _send(writer, b'{"run": {"info": {"run_id": "' + b"x" * 2000)
            await asyncio.sleep(0.05)  # let the partial body reach the client before the RST
            sock = writer.get_extra_info("socket")
            if sock is not None:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            writer.transport.abort()
            self.stats["resets"] += 1
            return False, True
        if kind == "status":
            body = fault.body.encode() if fault.body is not None else _default_body(fault.status)
            if fault.echo:
                body = _echo_body(fault.status, request)
            headers = [("Content-Type", _guess_type(body))]
            if fault.status == 401:
                headers.append(("WWW-Authenticate", 'Basic realm="mlflow"'))
            headers += list(fault.headers.items())
            await _respond(writer, fault.status, headers, body)
            return True, False
        if kind == "html":
            await _respond(writer, 200, [("Content-Type", "text/html; charset=utf-8")], HTML_PAGE)
            return True, False
        if kind == "malformed_json":
            await _respond(writer, 200, [("Content-Type", "application/json")], MALFORMED_JSON)
            return True, False
        if kind == "json":
            await _respond(writer, 200, [("Content-Type", "application/json")], json.dumps(fault.json).encode())
            return True, False
        if kind == "redirect":
            await _respond(
                writer,
                302,
                [("Location", request.target), ("Content-Type", "text/html")],
                b"<html><body>Redirecting...</body></html>",
            )
            return True, False
        if kind == "big":
            await self._big(fault, writer)
            return False, False
        raise AssertionError(kind)

    async def _big(self, fault: Fault, writer: asyncio.StreamWriter) -> None:
        """Stream `size` bytes of a JSON-looking body from one small buffer (never held whole)."""
        headers = [("Content-Type", "application/json")]
        if fault.gzip:
            headers.append(("Content-Encoding", "gzip"))
        pieces = _gzip_pieces(fault.size) if fault.gzip else _plain_pieces(fault.size)
        if fault.chunked or fault.gzip:
            headers.append(("Transfer-Encoding", "chunked"))
        else:
            headers.append(("Content-Length", str(fault.size)))
        await _send(writer, _head(200, headers))
        for piece in pieces:
            if not piece:
                continue
            data = b"%x\r\n%s\r\n" % (len(piece), piece) if (fault.chunked or fault.gzip) else piece
            await _send(writer, data)
            self.stats["big_bytes_sent"] += len(piece)
        if fault.chunked or fault.gzip:
            await _send(writer, b"0\r\n\r\n")

    async def _forward(self, request: _Request) -> tuple[int, list[tuple[str, str]], bytes]:
        """One request to the upstream on a fresh connection; the whole answer, unchunked."""
        headers = [(k, v) for k, v in request.headers if k.lower() not in _HOP and k.lower() != "host"]
        headers = [("Host", self.upstream_netloc), *headers, ("Connection", "close")]
        if request.body or request.method in ("POST", "PUT", "PATCH"):
            headers.append(("Content-Length", str(len(request.body))))
        head = f"{request.method} {request.target} HTTP/1.1\r\n" + "".join(f"{k}: {v}\r\n" for k, v in headers)
        try:
            async with asyncio.timeout(UPSTREAM_TIMEOUT):
                up_reader, up_writer = await asyncio.open_connection(self.upstream_host, self.upstream_port)
                try:
                    up_writer.write(head.encode("latin-1") + b"\r\n" + request.body)
                    await up_writer.drain()
                    status, resp_headers, body = await _read_response(up_reader, request.method)
                finally:
                    up_writer.close()
        except (OSError, TimeoutError, asyncio.IncompleteReadError, ValueError) as exc:
            self.stats["upstream_errors"] += 1
            return 502, [("Content-Type", "text/plain")], f"faultproxy: upstream failed: {exc!r}".encode()
        return status, [(k, v) for k, v in resp_headers if k.lower() not in _HOP], body

    async def _admin(self, request: _Request, writer: asyncio.StreamWriter) -> bool:
        if request.method in ("PUT", "POST"):
            try:
                data = json.loads(request.body or b"{}")
                faults = [Fault(**{k: v for k, v in f.items()}) for f in data.get("faults", [])]
            except (ValueError, TypeError) as exc:
                await _respond(
                    writer, 400, [("Content-Type", "application/json")], json.dumps({"error": str(exc)}).encode()
                )
                return True
            self.set_faults(faults)
        elif request.method == "DELETE":
            self._faults = ()
        elif request.method != "GET":
            await _respond(writer, 405, [("Content-Type", "text/plain")], b"GET, PUT, POST or DELETE\n")
            return True
        state = {
            "faults": [f.to_json() for f in self._faults],
            "listening": self.listening,
            "open_connections": len(self._writers),
            "stats": dict(self.stats),
        }
        await _respond(writer, 200, [("Content-Type", "application/json")], json.dumps(state).encode())
        return True


def _quiet_exceptions(loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
    """Failed TLS handshakes and peers that reset are the point of this proxy, not news."""
    exc = context.get("exception")
    if isinstance(exc, (ssl.SSLError, ConnectionError, OSError)):
        return
    loop.default_exception_handler(context)


# -- HTTP/1.1 framing --------------------------------------------------------------------


async def _read_request(reader: asyncio.StreamReader) -> _Request | None:
    try:
        head = await reader.readuntil(b"\r\n\r\n")
    except asyncio.IncompleteReadError as exc:
        if exc.partial.strip():
            raise
        return None
    lines = head.decode("latin-1").split("\r\n")
    method, target, version = lines[0].split(" ", 2)
    headers = [(k.strip(), v.strip()) for k, _, v in (line.partition(":") for line in lines[1:] if line)]
    request = _Request(method, target, version, headers, b"")
    if (request.header("transfer-encoding") or "").lower() == "chunked":
        request.body = await _read_chunked(reader)
    else:
        length = int(request.header("content-length") or 0)
        request.body = await reader.readexactly(length) if length else b""
    return request


async def _read_response(reader: asyncio.StreamReader, method: str) -> tuple[int, list[tuple[str, str]], bytes]:
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split(" ", 2)[1])
    headers = [(k.strip(), v.strip()) for k, _, v in (line.partition(":") for line in lines[1:] if line)]
    get = {k.lower(): v for k, v in headers}
    if method == "HEAD" or status in (204, 304) or 100 <= status < 200:
        return status, headers, b""
    if get.get("transfer-encoding", "").lower() == "chunked":
        return status, headers, await _read_chunked(reader)
    if "content-length" in get:
        return status, headers, await reader.readexactly(int(get["content-length"]))
    return status, headers, await reader.read()


async def _read_chunked(reader: asyncio.StreamReader) -> bytes:
    parts: list[bytes] = []
    while True:
        size = int((await reader.readuntil(b"\r\n")).split(b";", 1)[0].strip(), 16)
        if size == 0:
            while (await reader.readuntil(b"\r\n")) != b"\r\n":  # trailers
                pass
            return b"".join(parts)
        parts.append(await reader.readexactly(size))
        await reader.readexactly(2)


def _head(status: int, headers: list[tuple[str, str]]) -> bytes:
    lines = [
        f"HTTP/1.1 {status} {_REASONS.get(status, 'Status')}",
        "Server: faultproxy",
        *(f"{k}: {v}" for k, v in headers),
    ]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


async def _respond(
    writer: asyncio.StreamWriter, status: int, headers: list[tuple[str, str]], body: bytes, head: bool = False
) -> None:
    headers = [(k, v) for k, v in headers if k.lower() not in _HOP] + [("Content-Length", str(len(body)))]
    await _send(writer, _head(status, headers) + (b"" if head else body))


async def _send(writer: asyncio.StreamWriter, data: bytes) -> None:
    if writer.is_closing():
        raise _ClientGone()
    writer.write(data)
    try:
        await writer.drain()
    except (ConnectionError, OSError) as exc:
        raise _ClientGone() from exc


async def _wait_for_eof(reader: asyncio.StreamReader, limit: float) -> None:
    try:
        async with asyncio.timeout(limit):
            while await reader.read(65536):
                pass
    except (TimeoutError, ConnectionError, OSError):
        pass


def _plain_pieces(size: int):
    prefix = b'{"registered_models": [], "padding": "'
    suffix = b'"}'
    block = b"x" * _CHUNK
    yield prefix
    left = size - len(prefix) - len(suffix)
    while left > 0:
        piece = block if left >= _CHUNK else block[:left]
        left -= len(piece)
        yield piece
    yield suffix


def _gzip_pieces(size: int):
    """A gzip stream of `size` bytes of JSON, compressed on the fly (~1000:1 for the padding).

    The compressed bytes are sent in 16 KiB pieces, so one network read of the client carries
    ~16 MB once inflated: what a small "zip bomb" does to a reader that inflates without a bound.
    """
    compressor = zlib.compressobj(9, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
    pending = b""
    for piece in _plain_pieces(size):
        pending += compressor.compress(piece)
        if len(pending) >= 16 * 1024:
            yield pending
            pending = b""
    yield pending + compressor.flush()


def _default_body(status: int) -> bytes:
    if status == 401:
        return MLFLOW_401_BODY
    if status == 403:
        return INVALID_HOST_BODY
    if status == 500:
        return json.dumps({"error_code": "INTERNAL_ERROR", "message": "faultproxy: simulated server error"}).encode()
    if status in (502, 503, 504):
        name = _REASONS[status]
        return (
            f"<html><head><title>{status} {name}</title></head><body><center><h1>{status} {name}</h1>"
            f"</center><hr><center>nginx</center></body></html>".encode()
        )
    return f"{status} {_REASONS.get(status, 'Status')}\n".encode()


def _echo_body(status: int, request: _Request) -> bytes:
    """An API that quotes what it rejected ("invalid token 'abc'"): credentials in the error body."""
    auth = request.header("authorization") or ""
    scheme, _, value = auth.partition(" ")
    quoted = value
    if scheme.lower() == "basic":
        try:
            quoted = base64.b64decode(value).decode("utf-8", "replace")
        except ValueError:
            pass
    message = f"invalid credentials {quoted!r} (Authorization: {auth})"
    extra = {k: v for k, v in request.headers if k.lower().startswith("x-")}
    if extra:
        message += f" headers {extra}"
    return json.dumps(
        {"error_code": "UNAUTHENTICATED" if status == 401 else "PERMISSION_DENIED", "message": message}
    ).encode()


def _guess_type(body: bytes) -> str:
    head = body.lstrip()[:1]
    if head in (b"{", b"["):
        return "application/json"
    if head == b"<":
        return "text/html"
    return "text/plain; charset=utf-8"


# -- JSON rewriting ------------------------------------------------------------------------


def apply_edit(document: Any, edit: dict[str, Any]) -> Any:
    """Edit one value in a JSON document, in place; returns the document.

    `edit` is {"at": PATH, "set": VALUE} or {"at": PATH, "add": NUMBER} or {"at": PATH,
    "delete": true}. PATH is dot-separated; a segment `name[key=value]` selects, in the list
    `name`, the element whose `key` equals `value`; a bare integer indexes a list:

        {"at": "run.data.metrics[key=synthetic_probe_value].value", "add": 1.5}
    """
    segments = _split_path(edit["at"])
    parent: Any = None
    current: Any = document
    last: Any = None
    for segment in segments:
        parent, last = current, segment
        current = _step(current, segment)
    if "set" in edit:
        _assign(parent, last, edit["set"])
    elif "add" in edit:
        _assign(parent, last, current + edit["add"])
    elif edit.get("delete"):
        if isinstance(parent, dict):
            parent.pop(last if isinstance(last, str) else last[0], None)
        else:
            parent.remove(current)
    else:
        raise ValueError(f"edit needs set, add or delete: {edit!r}")
    return document


def _split_path(path: str) -> list[Any]:
    out: list[Any] = []
    for part in path.split("."):
        if "[" in part and part.endswith("]"):
            name, _, selector = part[:-1].partition("[")
            key, _, value = selector.partition("=")
            if name:
                out.append(name)
            out.append((key, value))
        elif part.isdigit():
            out.append(int(part))
        else:
            out.append(part)
    return out


def _step(current: Any, segment: Any) -> Any:
    if isinstance(segment, tuple):
        key, value = segment
        for item in current:
            if isinstance(item, dict) and str(item.get(key)) == value:
                return item
        raise ValueError(f"no element with {key}={value}")
    if isinstance(segment, int):
        return current[segment]
    if not isinstance(current, dict) or segment not in current:
        raise ValueError(f"no key {segment!r}")
    return current[segment]


def _assign(parent: Any, segment: Any, value: Any) -> None:
    if isinstance(segment, tuple):
        index = parent.index(_step(parent, segment))
        parent[index] = value
    else:
        parent[segment] = value


# -- a self-signed certificate for the TLS cases -----------------------------------------


def make_self_signed(directory: Path, name: str = "faultproxy") -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1 and localhost; returns (cert_file, key_file).

    Being its own CA, the certificate is untrusted by default and trusted when passed as
    the CA file (`tls.ca_file` of a target, `verify=` of httpx).
    """
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    directory.mkdir(parents=True, exist_ok=True)
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=2))
        .add_extension(
            x509.SubjectAlternativeName([x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_file, key_file = directory / f"{name}.crt", directory / f"{name}.key"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    key_file.chmod(0o600)
    return cert_file, key_file


def server_tls_context(cert_file: Path, key_file: Path) -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(str(cert_file), str(key_file))
    return context


# -- command line ----------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.faultproxy", description=__doc__.split("\n\n")[0])
    parser.add_argument("--upstream", required=True, help="http://host:port of the real server")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--fault", default=None, help='initial faults as JSON: [{"kind": "close"}]')
    args = parser.parse_args(argv)
    proxy = FaultProxy(args.upstream, args.host, args.port).start()
    if args.fault:
        proxy.set_faults([Fault(**f) for f in json.loads(args.fault)])
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    print(f"faultproxy listening on {proxy.url}", flush=True)
    while not stop.wait(0.5):
        pass
    proxy.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
