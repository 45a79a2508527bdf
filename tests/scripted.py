"""Scripted TCP servers on 127.0.0.1 for HTTP tests: each connection plays one behaviour.

An `asyncio.start_server` whose per-connection coroutine (the test's script) reads
requests and answers however the case needs, well-formed or not, so tests exercise
the real client and transport over real sockets.
"""

from __future__ import annotations

import asyncio
import socket
import ssl
import struct
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import pytest

from monitor.http.client import TargetClient, check_status
from monitor.results import StepFailure

Handler = Callable[["Conn"], Awaitable[None]]


@dataclass
class Request:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes


@dataclass
class Conn:
    """One accepted connection, handed to the test's script."""

    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter
    server: ScriptedServer

    async def read_request(self) -> Request:
        head = await self.reader.readuntil(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        method, path, _ = lines[0].split(" ", 2)
        headers = {}
        for line in lines[1:]:
            if line:
                name, _, value = line.partition(":")
                headers[name.strip().lower()] = value.strip()
        length = int(headers.get("content-length", "0"))
        body = await self.reader.readexactly(length) if length else b""
        request = Request(method, path, headers, body)
        self.server.requests.append(request)
        return request

    async def send(self, data: bytes) -> None:
        self.writer.write(data)
        await self.writer.drain()

    async def respond(
        self,
        status: int,
        body: bytes = b"",
        *,
        content_type: str = "application/json",
        headers: dict[str, str] | None = None,
        reason: str = "X",
    ) -> None:
        head = [f"HTTP/1.1 {status} {reason}", f"Content-Type: {content_type}", f"Content-Length: {len(body)}"]
        head += [f"{k}: {v}" for k, v in (headers or {}).items()]
        await self.send(("\r\n".join(head) + "\r\n\r\n").encode("latin-1") + body)

    async def hang(self) -> None:
        await asyncio.Event().wait()

    def reset(self) -> None:
        """Close with SO_LINGER 0: the peer gets a TCP RST instead of a FIN."""
        sock = self.writer.get_extra_info("socket")
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.writer.transport.abort()


@dataclass
class ScriptedServer:
    handler: Handler
    ssl_context: ssl.SSLContext | None = None
    requests: list[Request] = field(default_factory=list)
    connections: int = 0
    port: int = 0
    _server: asyncio.Server | None = None
    _tasks: set[asyncio.Task[Any]] = field(default_factory=set)
    _writers: list[asyncio.StreamWriter] = field(default_factory=list)

    @property
    def url(self) -> str:
        scheme = "https" if self.ssl_context else "http"
        return f"{scheme}://127.0.0.1:{self.port}"

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        self._writers.append(writer)
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        try:
            await self.handler(Conn(reader, writer, self))
        except (ConnectionError, asyncio.IncompleteReadError, asyncio.CancelledError, ssl.SSLError):
            pass
        finally:
            self._tasks.discard(task)
            if not writer.is_closing():
                writer.close()

    async def start(self) -> ScriptedServer:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0, ssl=self.ssl_context)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def stop(self) -> None:
        assert self._server is not None
        self._server.close()
        for task in list(self._tasks):
            task.cancel()
        for writer in self._writers:
            if not writer.is_closing():
                writer.transport.abort()
        await asyncio.sleep(0)
        await self._server.wait_closed()


@asynccontextmanager
async def serve(handler: Handler, ssl_context: ssl.SSLContext | None = None) -> AsyncIterator[ScriptedServer]:
    server = await ScriptedServer(handler, ssl_context).start()
    try:
        yield server
    finally:
        await server.stop()


@asynccontextmanager
async def client_for(url: str, **kwargs: Any) -> AsyncIterator[TargetClient]:
    client = TargetClient(url, **kwargs)
    try:
        yield client
    finally:
        await client.aclose()


def answer(status: int, body: bytes = b"{}", **kwargs: Any) -> Handler:
    """A server that answers every request on a connection with one fixed response."""

    async def handler(conn: Conn) -> None:
        while True:
            await conn.read_request()
            await conn.respond(status, body, **kwargs)

    return handler


def replay(raw: bytes) -> Handler:
    """A server that answers every request on a connection with the same raw bytes."""

    async def handler(conn: Conn) -> None:
        while True:
            await conn.read_request()
            await conn.send(raw)

    return handler


async def failure_of(url: str, path: str = "/probe", *, timeout: float = 2.0, **kwargs: Any) -> StepFailure:
    """The StepFailure raised by request() (or by check_status on what it returned)."""
    async with client_for(url, **kwargs) as client:
        with pytest.raises(StepFailure) as info:
            response = await client.request("GET", path, timeout=timeout)
            check_status(response)
    return info.value


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
