"""A request that crosses the server's keep-alive close on the wire, and unsafe headers.

A server closes an idle keep-alive connection when its timer says so; a request the
client sent on that connection just before the FIN reached it gets no byte of an
answer. Browsers and Go's net/http send such a request again on a new connection when
the method is idempotent; so does the transport, once, and never a POST, never after a
byte of a response, never on a connection it had just opened.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from monitor.results import Reason, StepFailure
from tests.scripted import Conn, client_for, serve

pytestmark = pytest.mark.timeout(30)

IDLE_TIMEOUT = 0.3  # the server's keep-alive timeout
LATENCY = 0.1  # one way, added by the relay (a network, not loopback)


class _Relay:
    """A TCP relay on 127.0.0.1 that delays every byte and every close by LATENCY, each way."""

    def __init__(self, upstream_port: int) -> None:
        self.upstream_port = upstream_port
        self.port = 0
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[Any]] = set()

    async def _pump(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[tuple[float, bytes]] = asyncio.Queue()

        async def deliver() -> None:
            while True:
                at, data = await queue.get()
                await asyncio.sleep(max(0.0, at - loop.time()))
                if not data:
                    writer.close()  # the close travels as late as the bytes did
                    return
                with contextlib.suppress(ConnectionError, RuntimeError):
                    writer.write(data)

        delivery = asyncio.create_task(deliver())
        try:
            while data := await reader.read(65536):
                queue.put_nowait((loop.time() + LATENCY, data))
        except ConnectionError:
            pass
        queue.put_nowait((loop.time() + LATENCY, b""))
        await delivery

    async def _handle(self, client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter) -> None:
        server_reader, server_writer = await asyncio.open_connection("127.0.0.1", self.upstream_port)
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        try:
            await asyncio.gather(self._pump(client_reader, server_writer), self._pump(server_reader, client_writer))
        finally:
            self._tasks.discard(task)

    async def __aenter__(self) -> _Relay:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.close()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.sleep(0)


async def keep_alive_server(conn: Conn) -> None:
    """A server with a keep-alive timeout: it answers, then closes after IDLE_TIMEOUT idle."""
    while True:
        try:
            await asyncio.wait_for(conn.read_request(), IDLE_TIMEOUT)
        except TimeoutError:
            conn.writer.close()
            return
        await conn.respond(200, b"{}")


async def _probe_at_the_servers_close(method: str, rounds: int) -> tuple[list[Reason | None], int, int]:
    """Requests whose send lands exactly when the server's idle timer closes the
    connection: after each answer the client waits the server's idle timeout minus one
    way of latency, so its next request and the server's FIN cross on the wire (with a
    margin of one way of latency on either side). Returns the outcomes, and the
    connections and requests the server saw."""
    outcomes: list[Reason | None] = []
    async with serve(keep_alive_server) as server:
        async with _Relay(server.port) as relay:
            async with client_for(f"http://127.0.0.1:{relay.port}") as client:
                await client.request("GET", "/open", timeout=5)
                for _ in range(rounds):
                    await asyncio.sleep(IDLE_TIMEOUT - LATENCY)
                    try:
                        await client.request(method, "/probe", timeout=5, json_body={} if method == "POST" else None)
                        outcomes.append(None)
                    except StepFailure as failure:
                        outcomes.append(failure.reason)
    return outcomes, server.connections, len(server.requests)


@pytest.mark.parametrize("method", ["GET", "DELETE"])
async def test_a_request_crossing_the_servers_keep_alive_close_is_retried(method: str) -> None:
    outcomes, connections, requests = await _probe_at_the_servers_close(method, rounds=2)
    assert outcomes == [None, None]
    # Each probe went out on the idle connection, found it closed and was sent again on a
    # new one: the server saw every request once, each on its own connection.
    assert (connections, requests) == (3, 3)


async def test_a_post_crossing_the_servers_close_is_not_retried() -> None:
    outcomes, connections, requests = await _probe_at_the_servers_close("POST", rounds=1)
    assert outcomes == [Reason.WORKER_FAILURE]
    assert (connections, requests) == (1, 1)  # the POST never reached it and was not sent again


# ----------------------------------------------------------------- the limits, scripted


def _drop_on_reuse(first_answer: bytes = b"") -> Callable[[Conn], Awaitable[None]]:
    """Answers the first request of a connection; closes on the second after sending
    `first_answer` (nothing: a close that crossed the request; a byte: a server that died
    while answering)."""

    async def handler(conn: Conn) -> None:
        await conn.read_request()
        await conn.respond(200, b"{}")
        await conn.read_request()
        if first_answer:
            await conn.send(first_answer)
        conn.writer.close()

    return handler


@pytest.mark.parametrize("method", ["GET", "HEAD", "PUT", "DELETE", "OPTIONS"])
async def test_idempotent_methods_are_retried_once_on_a_new_connection(method: str) -> None:
    async with serve(_drop_on_reuse()) as server:
        async with client_for(server.url) as client:
            await client.request("GET", "/x", timeout=2)
            response = await client.request(method, "/x", timeout=2)
    assert response.status_code == 200
    assert server.connections == 2
    assert [r.method for r in server.requests] == ["GET", method, method]


async def test_no_retry_after_a_byte_of_the_response() -> None:
    async with serve(_drop_on_reuse(b"HTTP/1.1 2")) as server:
        async with client_for(server.url) as client:
            await client.request("GET", "/x", timeout=2)
            with pytest.raises(StepFailure) as info:
                await client.request("GET", "/x", timeout=2)
    assert info.value.reason is Reason.WORKER_FAILURE, info.value.message
    assert server.connections == 1


async def test_no_retry_on_a_new_connection_and_only_one_retry() -> None:
    """A server that drops every request: the first attempt on a fresh connection is the
    server's failure; on a reused one, one more try, then the failure stands."""

    async def handler(conn: Conn) -> None:
        if server.connections == 1:
            await conn.read_request()
            await conn.respond(200, b"{}")
        await conn.read_request()
        conn.writer.close()

    async with serve(handler) as server:
        async with client_for(server.url) as client:
            await client.request("GET", "/x", timeout=2)
            with pytest.raises(StepFailure) as info:
                await client.request("GET", "/x", timeout=2)
            assert info.value.reason is Reason.WORKER_FAILURE, info.value.message
            assert server.connections == 2  # the reused one and exactly one new one
            with pytest.raises(StepFailure) as info:
                await client.request("GET", "/x", timeout=2)
            assert info.value.reason is Reason.WORKER_FAILURE
    assert server.connections == 3  # a fresh connection's drop is not retried


# ----------------------------------------------------------------- unsafe outgoing headers


@pytest.mark.parametrize("value", ["a\r\nX-Injected: 1", "a\nb", "a\rb", "a\x00b"])
async def test_a_header_value_with_cr_or_lf_is_refused_before_sending(value: str) -> None:
    async with serve(keep_alive_server) as server:
        for where in ("client", "request"):
            async with client_for(server.url, headers={"X-Team": value} if where == "client" else None) as client:
                with pytest.raises(StepFailure) as info:
                    await client.request(
                        "GET", "/x", timeout=2, headers={"X-Team": value} if where == "request" else None
                    )
            failure = info.value
            # The monitor's own request is wrong: never the target's timeout or failure.
            assert failure.reason is Reason.INTERNAL_ERROR, failure.message
            assert "X-Team" in failure.message and "CR, LF or NUL" in failure.message
            assert "configuration" in failure.message
    assert server.connections == 0  # nothing reached the wire
