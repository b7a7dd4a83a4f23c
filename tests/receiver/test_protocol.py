"""The listener's HTTP protocol on a real uvicorn server and socket: header deadline, connection limit."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import orjson
import pytest
import uvicorn

from forwarder import telemetry
from forwarder.listener import bind
from forwarder.receiver.protocol import OVERLOADED_RETRY_AFTER, protocol_class

pytestmark = pytest.mark.anyio

HEADER_TIMEOUT = 0.3
MAX_CONNECTIONS = 2
MAX_HEADER_BYTES = 4096


async def ok(scope: Any, receive: Any, send: Any) -> None:
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"2")]})
    await send({"type": "http.response.body", "body": b"ok"})


@pytest.fixture
async def server() -> AsyncIterator[int]:
    sock = bind("127.0.0.1", 0)
    config = uvicorn.Config(
        ok,
        http=protocol_class(HEADER_TIMEOUT, MAX_HEADER_BYTES),
        lifespan="off",
        log_config=None,
        limit_concurrency=MAX_CONNECTIONS,
        timeout_keep_alive=30,
    )
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve(sockets=[sock]))
    for _ in range(500):  # bounded: the server starts in milliseconds
        if server.started:
            break
        await asyncio.sleep(0.01)
    assert server.started
    yield sock.getsockname()[1]
    server.should_exit = True
    await asyncio.wait_for(task, 10)


async def read_all(reader: asyncio.StreamReader) -> bytes:
    return await asyncio.wait_for(reader.read(), timeout=10 * HEADER_TIMEOUT + 5)


async def test_a_silent_connection_is_closed_after_the_header_timeout(server: int) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", server)
    started = asyncio.get_running_loop().time()
    assert await read_all(reader) == b""  # closed without a word: nothing was asked
    assert asyncio.get_running_loop().time() - started >= HEADER_TIMEOUT * 0.9
    writer.close()


async def test_headers_that_never_finish_get_408_json_and_a_close(server: int) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", server)
    writer.write(b"POST /webhooks/snyk HTTP/1.1\r\nHost: x\r\nX-Snyk-Ev")
    answer = await read_all(reader)
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 408 ")
    assert orjson.loads(body)["error"] == "header_timeout"
    writer.close()


async def test_a_keep_alive_connection_gets_a_fresh_deadline_per_request(server: int) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", server)
    for _ in range(3):
        await asyncio.sleep(HEADER_TIMEOUT / 2)  # well inside the deadline each time, past it in total
        writer.write(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        line = await asyncio.wait_for(reader.readuntil(b"ok"), 5)
        assert line.startswith(b"HTTP/1.1 200 ")
    writer.close()


async def test_at_the_connection_limit_the_answer_is_json_503_with_retry_after(
    server: int, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(telemetry._exhausted, "last", float("-inf"))  # whatever an earlier test logged
    held = [await asyncio.open_connection("127.0.0.1", server) for _ in range(MAX_CONNECTIONS - 1)]
    reader, writer = await asyncio.open_connection("127.0.0.1", server)
    writer.write(b"POST /webhooks/snyk HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n")
    head, _, body = (await read_all(reader)).partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 503 ")
    assert f"retry-after: {OVERLOADED_RETRY_AFTER}".encode() in head.lower()
    answer = orjson.loads(body)
    assert answer["error"] == "overloaded" and "listen.max_connections" in answer["message"]
    assert any("listen.max_connections" in r.getMessage() for r in caplog.records)
    for _, w in held:
        w.close()
    writer.close()


async def test_headers_over_the_limit_get_431_json_and_a_close(server: int) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", server)
    writer.write(b"POST /webhooks/snyk HTTP/1.1\r\nHost: x\r\nX-Big: ")
    for _ in range(10):  # 10 KiB of one header, more than twice the limit, never finished
        writer.write(b"a" * 1024)
    head, _, body = (await read_all(reader)).partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 431 ")
    assert orjson.loads(body)["error"] == "header_too_large"
    writer.close()


async def test_small_headers_with_a_large_body_in_the_same_read_are_fine(server: int) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", server)
    body = b"x" * (4 * MAX_HEADER_BYTES)
    writer.write(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n" % len(body) + body)
    assert (await asyncio.wait_for(reader.readuntil(b"ok"), 5)).startswith(b"HTTP/1.1 200 ")
    writer.close()


async def test_an_unparsable_request_gets_json_400(server: int) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", server)
    writer.write(b"\x00\x01 garbage\r\n\r\n")
    head, _, body = (await read_all(reader)).partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 400 ")
    assert orjson.loads(body)["error"] == "malformed_http"
    writer.close()
