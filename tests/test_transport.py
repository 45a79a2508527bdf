"""The lean HTTP/1.1 transport against scripted servers: framing, keep-alive and the pool.

Failure classification is tested in test_http_classification.py; here the cases are
the ones a hand-written transport can get wrong while every request still "works":
reusing a connection it must not, losing bytes between responses, hanging on a body
that has no length, or leaking a pool slot on cancellation.
"""

from __future__ import annotations

import asyncio
import gzip
import json
import socket
import threading
import time

import httpx
import pytest

from monitor.http.client import TargetClient
from monitor.http.transport import MAX_HEADER_BYTES, LeanTransport
from monitor.results import Reason, StepFailure
from tests.scripted import Conn, answer, client_for, failure_of, replay, serve

pytestmark = pytest.mark.timeout(20)


async def test_keep_alive_reuses_one_connection() -> None:
    async with serve(answer(200, b'{"n": 1}')) as server:
        async with client_for(server.url) as client:
            for _ in range(5):
                assert (await client.request("GET", "/x", timeout=2)).json_object() == {"n": 1}
    assert server.connections == 1
    assert len(server.requests) == 5


async def test_request_line_headers_and_json_body_reach_the_server() -> None:
    async with serve(answer(200)) as server:
        async with client_for(server.url + "/base/", headers={"X-Probe": "yes"}, bearer_token="tok") as client:
            await client.request("POST", "/api/run", timeout=2, json_body={"a": [1, "é"]}, params={"q": "1 2"})
    (request,) = server.requests
    assert (request.method, request.path) == ("POST", "/base/api/run?q=1+2")
    assert json.loads(request.body) == {"a": [1, "é"]}
    assert request.headers["content-type"] == "application/json"
    assert request.headers["content-length"] == str(len(request.body))
    assert request.headers["host"] == f"127.0.0.1:{server.port}"
    assert (request.headers["x-probe"], request.headers["authorization"]) == ("yes", "Bearer tok")


async def test_chunked_body_with_extensions_and_trailers() -> None:
    async with serve(
        replay(
            b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"
            b'5;ext=1\r\n{"a":\r\n'
            b"3\r\n 12\r\n"
            b"1\r\n}\r\n"
            b"0\r\nX-Trailer: t\r\n\r\n"
        )
    ) as server:
        async with client_for(server.url) as client:
            for _ in range(2):
                assert (await client.request("GET", "/c", timeout=2)).json_object() == {"a": 12}
    assert server.connections == 1  # the trailer was consumed: the connection stayed in step


async def test_body_without_length_is_read_to_close_and_not_reused() -> None:
    async def handler(conn: Conn) -> None:
        await conn.read_request()
        await conn.send(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n\r\n")
        await conn.send(b'{"until": ')
        await conn.send(b'"close"}')
        conn.writer.close()

    async with serve(handler) as server:
        async with client_for(server.url) as client:
            for _ in range(2):
                assert (await client.request("GET", "/u", timeout=2)).json_object() == {"until": "close"}
    assert server.connections == 2


async def test_connection_close_header_opens_a_new_connection() -> None:
    async with serve(answer(200, headers={"Connection": "close"})) as server:
        async with client_for(server.url) as client:
            for _ in range(3):
                await client.request("GET", "/x", timeout=2)
    assert server.connections == 3


async def test_http_1_0_response_is_not_reused() -> None:
    async with serve(replay(b"HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\n{}")) as server:
        async with client_for(server.url) as client:
            for _ in range(2):
                assert (await client.request("GET", "/x", timeout=2)).status_code == 200
    assert server.connections == 2


@pytest.mark.parametrize("method, status", [("HEAD", 200), ("GET", 204), ("GET", 304)])
async def test_responses_without_a_body_do_not_wait_for_one(method: str, status: int) -> None:
    # A HEAD answer declares the length the GET would have: none of it follows.
    async with serve(replay(b"HTTP/1.1 %d X\r\nContent-Length: 1234\r\n\r\n" % status)) as server:
        async with client_for(server.url) as client:
            for _ in range(2):
                response = await client.request(method, "/x", timeout=1)
                assert (response.status_code, response.body) == (status, b"")
    assert server.connections == 1


async def test_interim_100_continue_is_skipped() -> None:
    async def handler(conn: Conn) -> None:
        await conn.read_request()
        await conn.send(b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\n")
        await conn.respond(200, b'{"final": true}')
        await conn.hang()

    async with serve(handler) as server:
        async with client_for(server.url) as client:
            assert (await client.request("GET", "/x", timeout=2)).json_object() == {"final": True}


async def test_idle_connection_closed_by_the_server_is_replaced_transparently() -> None:
    async def handler(conn: Conn) -> None:
        await conn.read_request()
        await conn.respond(200)
        conn.writer.close()  # a server's keep-alive timeout, while the client is idle

    async with serve(handler) as server:
        async with client_for(server.url) as client:
            await client.request("GET", "/x", timeout=2)
            await asyncio.sleep(0.2)
            assert (await client.request("GET", "/x", timeout=2)).status_code == 200
    assert server.connections == 2


async def test_a_close_the_event_loop_has_not_seen_yet_is_still_noticed() -> None:
    """The server closes while the loop is blocked, so no EOF callback ran before the next request."""
    listener = socket.create_server(("127.0.0.1", 0))
    accepted: list[int] = []

    def serve_one_per_connection() -> None:
        for _ in range(2):
            conn, _ = listener.accept()
            accepted.append(1)
            with conn:
                conn.recv(65536)
                conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}")
                conn.shutdown(socket.SHUT_WR)
                conn.recv(1)  # until the client closes its side

    thread = threading.Thread(target=serve_one_per_connection, daemon=True)
    thread.start()
    try:
        async with client_for(f"http://127.0.0.1:{listener.getsockname()[1]}") as client:
            await client.request("GET", "/x", timeout=2)
            time.sleep(0.3)  # blocks the loop: the FIN arrives, unprocessed
            assert (await client.request("GET", "/x", timeout=2)).status_code == 200
        await asyncio.to_thread(thread.join, 5)
    finally:
        listener.close()
    assert len(accepted) == 2


async def test_stray_bytes_after_a_response_retire_the_connection() -> None:
    async with serve(replay(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}garbage")) as server:
        async with client_for(server.url) as client:
            for _ in range(3):
                assert (await client.request("GET", "/x", timeout=2)).json_object() == {}
    assert server.connections == 3


async def test_gzip_body_is_inflated() -> None:
    body = gzip.compress(b'{"zipped": true}')
    async with serve(answer(200, body, headers={"Content-Encoding": "gzip"})) as server:
        async with client_for(server.url) as client:
            assert (await client.request("GET", "/z", timeout=2)).json_object() == {"zipped": True}


async def test_oversized_header_is_invalid_response() -> None:
    async def handler(conn: Conn) -> None:
        await conn.read_request()
        await conn.send(b"HTTP/1.1 200 OK\r\nX-Big: " + b"a" * (MAX_HEADER_BYTES + 10))
        await conn.hang()

    async with serve(handler) as server:
        failure = await failure_of(server.url)
    assert failure.reason is Reason.INVALID_RESPONSE, failure.message
    assert "header" in failure.message


# What llhttp (through httptools) refuses, with the reason per case. "h11" marks a case
# kept from the h11-parity table whose outcome llhttp shares; "llhttp" one where llhttp
# differs from what h11 did and the transport follows llhttp.
@pytest.mark.parametrize(
    "head",
    [
        # h11: conflicting Content-Length values.
        b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\n{}",
        # llhttp: a repeated, equal Content-Length is refused too (h11 merged it).
        b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 2\r\n\r\n{}",
        # h11: not a number.
        b"HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n{}",
        # h11: a header line without a colon.
        b"HTTP/1.1 200 OK\r\nno colon here\r\n\r\n{}",
        # h11: a chunk size that is not hex.
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
        # h11: a four-digit status.
        b"HTTP/1.1 2000 OK\r\n\r\n",
        # h11: chunk sizes with a 0x prefix, a sign, or longer than 64 bits.
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n0x2\r\n{}\r\n0\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n-0\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n+2\r\n{}\r\n0\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n" + b"1" * 70_000,
        # h11 refused these codings; llhttp would read them to EOF still encoded, which
        # nothing here can decode, so the transport refuses them at the head (its policy).
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n{}",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked, gzip\r\n\r\n2\r\n{}\r\n0\r\n\r\n",
        # h11: NUL in a value, a space in a name.
        b"HTTP/1.1 200 OK\r\nX-Nul: a\x00b\r\nContent-Length: 2\r\n\r\n{}",
        b"HTTP/1.1 200 OK\r\nX A: b\r\nContent-Length: 2\r\n\r\n{}",
        # llhttp: both Transfer-Encoding and Content-Length (request smuggling shape).
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Length: 2\r\n\r\n2\r\n{}\r\n0\r\n\r\n",
        # llhttp (strict by default): a lone LF ends no line and obs-fold is refused; the
        # hand parser accepted both, as RFC 9112 lets a client.
        b"HTTP/1.1 200 OK\nX-Folded: one\r\n  two\nTransfer-Encoding: chunked\n\n2\n{}\n0\n\n",
        b"HTTP/1.1 200 OK\r\nX-Folded: one\r\n  two\r\nContent-Length: 2\r\n\r\n{}",
        # h11: not HTTP at all, quoting words that once meant worker_failure.
        b"ERR connection closed by peer\r\n\r\n",
    ],
)
async def test_malformed_framing_is_invalid_response(head: bytes) -> None:
    async def handler(conn: Conn) -> None:
        await conn.read_request()
        await conn.send(head)
        await conn.hang()

    async with serve(handler) as server:
        failure = await failure_of(server.url)
    assert failure.reason is Reason.INVALID_RESPONSE, failure.message
    assert "malformed HTTP response" in failure.message


async def test_concurrent_requests_beyond_the_pool_wait_their_turn() -> None:
    async def handler(conn: Conn) -> None:
        while True:
            await conn.read_request()
            await asyncio.sleep(0.05)
            await conn.respond(200)

    async with serve(handler) as server:
        async with client_for(server.url) as client:
            statuses = await asyncio.gather(*(client.request("GET", f"/{i}", timeout=5) for i in range(12)))
    assert [r.status_code for r in statuses] == [200] * 12
    assert server.connections == 4  # the pool's limit, each connection reused


async def test_a_timed_out_request_frees_its_slot_and_its_connection() -> None:
    async def handler(conn: Conn) -> None:
        request = await conn.read_request()
        if request.path == "/slow":
            await conn.hang()
        await conn.respond(200)
        await conn.hang()

    async with serve(handler) as server:
        async with client_for(server.url) as client:
            for _ in range(5):  # more than the pool's 4 slots: a leaked slot would block here
                with pytest.raises(StepFailure) as info:
                    await client.request("GET", "/slow", timeout=0.1)
                assert info.value.reason is Reason.TIMEOUT
            assert (await client.request("GET", "/fast", timeout=2)).status_code == 200
    assert server.connections == 6  # no connection with a half-read answer was reused


async def test_transport_rejects_other_schemes() -> None:
    transport = LeanTransport()
    with pytest.raises(httpx.UnsupportedProtocol):
        await transport.handle_async_request(httpx.Request("GET", "ftp://127.0.0.1/x"))
    await transport.aclose()


async def test_a_run_in_flight_when_its_client_is_closed_still_completes_unpooled() -> None:
    """A reload closes a replaced target's client while a long run may still be going."""
    async with serve(answer(200)) as server:
        client = TargetClient(server.url)
        await client.request("GET", "/x", timeout=2)
        await client.aclose()
        for _ in range(2):
            assert (await client.request("GET", "/x", timeout=2)).status_code == 200
        await asyncio.sleep(0.1)
    assert server.connections == 3  # none kept after the close


async def test_request_connection_close_is_honoured() -> None:
    async def handler(conn: Conn) -> None:
        request = await conn.read_request()
        await conn.respond(200)
        if request.headers.get("connection") == "close":
            await asyncio.sleep(0.05)  # the close lands after the client's next request went out
            conn.writer.close()
            return
        await conn.hang()

    async with serve(handler) as server:
        async with client_for(server.url, headers={"Connection": "close"}) as client:
            for _ in range(5):
                assert (await client.request("GET", "/x", timeout=2)).status_code == 200
    assert server.connections == 5


@pytest.mark.parametrize("how", ["close", "reset"])
async def test_a_handshake_cut_by_the_server_is_a_tls_error(how: str) -> None:
    """A TLS proxy without a backend: the TCP connect works, the handshake does not."""

    async def handler(conn: Conn) -> None:
        await conn.reader.read(1)  # the ClientHello arrives
        if how == "reset":
            conn.reset()
        else:
            conn.writer.close()

    async with serve(handler) as server:
        failure = await failure_of(server.url.replace("http://", "https://"))
    assert failure.reason is Reason.TLS_ERROR, failure.message
    assert "TLS" in failure.message


@pytest.mark.parametrize("framing", ["length", "chunked", "close"])
async def test_bodies_beyond_the_read_pause_threshold_are_read_whole(framing: str) -> None:
    body = json.dumps({"blob": "x" * 3_000_000}).encode()

    async def handler(conn: Conn) -> None:
        while True:
            await conn.read_request()
            if framing == "length":
                await conn.respond(200, body)
            elif framing == "chunked":
                await conn.send(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
                for i in range(0, len(body), 700_000):
                    piece = body[i : i + 700_000]
                    await conn.send(b"%x\r\n%s\r\n" % (len(piece), piece))
                await conn.send(b"0\r\n\r\n")
            else:
                await conn.send(b"HTTP/1.1 200 OK\r\n\r\n" + body)
                conn.writer.close()
                return

    async with serve(handler) as server:
        async with client_for(server.url) as client:
            for _ in range(2):
                response = await client.request("GET", "/big", timeout=10)
                assert len(response.json_object()["blob"]) == 3_000_000
    assert server.connections == (2 if framing == "close" else 1)


async def test_status_099_is_a_status_as_llhttp_reads_it() -> None:
    """llhttp differs from h11 here: any three digits are a status, so 099 is an
    unexpected HTTP status (http_error), not a malformed response."""
    async with serve(replay(b"HTTP/1.1 099 Odd\r\nContent-Length: 2\r\n\r\n{}")) as server:
        failure = await failure_of(server.url)
    assert (failure.reason, failure.status_code) == (Reason.HTTP_ERROR, 99), failure.message


def test_a_complete_response_is_freed_by_refcounting_alone() -> None:
    """The parser and its callbacks' owner referred to each other: every response was cyclic
    garbage, and at 1,000 probes the young collections that freed them took 50-100 ms."""
    import gc
    import weakref

    from monitor.http.transport import _Response

    response = _Response("GET")
    response.feed(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
    assert response.complete and response.http_version == b"HTTP/1.1" and bytes(response.body) == b"ok"
    gone = weakref.ref(response)
    gc.disable()
    try:
        del response
        assert gone() is None, "a complete response outlived its last reference (a reference cycle)"
    finally:
        gc.enable()


async def test_requests_through_the_transport_leave_no_cyclic_garbage() -> None:
    """Fifty requests on a pooled connection: nothing of theirs waits for the collector."""
    import gc

    from monitor.http import transport

    async with serve(answer(200, b'{"ok": true}')) as server, client_for(server.url) as client:
        await client.request("GET", "/warm-up", timeout=2.0)
        gc.collect()
        gc.disable()
        gc.set_debug(gc.DEBUG_SAVEALL)
        try:
            for _ in range(50):
                response = await client.request("GET", "/probe", timeout=2.0)
                assert response.status_code == 200
            del response
            gc.collect()
            left = [o for o in gc.garbage if isinstance(o, (transport._Response, transport._ResponseBody))]
        finally:
            gc.set_debug(0)
            gc.garbage.clear()
            gc.enable()
    assert not left, f"{len(left)} response objects were cyclic garbage"
