"""10,000 fuzzed requests: never a 500, never a crash, and nothing unverified is ever stored."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import sqlite3
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from forwarder.buffer import SqliteBuffer
from forwarder.config.model import ListenConfig
from forwarder.receiver import Verifier, WebhookEndpoint, build_app
from tests.helpers import SECRET, sample, sign

PATH = "/webhooks/snyk"
LIMIT = 16 * 1024

header_names = st.sampled_from(
    [
        "X-Hub-Signature",
        "x-hub-signature",
        "X-Snyk-Event",
        "X-Snyk-Transport-ID",
        "X-Snyk-Timestamp",
        "Content-Type",
        "Content-Encoding",
        "Transfer-Encoding",
        "User-Agent",
        "X-Forwarded-For",
        "Accept",
    ]
)
header_values = st.one_of(
    st.sampled_from(
        ["project_snapshot/v0", "ping/v0", "project_snapshot/v1", "", "sha256=", "gzip", "application/json"]
    ),
    st.text(st.characters(min_codepoint=32, max_codepoint=126), max_size=80),
)
bodies = st.one_of(
    st.binary(max_size=2048),
    st.just(sample("body_a.json")),
    st.just(sample("body_b.json")),
    st.just(b'{"webhookId":"x"}'),
    st.text(max_size=400).map(str.encode),
    st.builds(lambda n: b'{"newIssues":[' + b'{"id":"x"},' * n + b"{}]}", st.integers(0, 50)),
    st.builds(lambda n: b"x" * n, st.integers(LIMIT - 2, LIMIT + 2)),
)


@st.composite
def requests(draw: st.DrawFn) -> tuple[str, bytes, list[tuple[str, str]], bool]:
    body = draw(bodies)
    headers = draw(st.lists(st.tuples(header_names, header_values), max_size=6))
    if draw(st.booleans()):
        headers.append(("X-Snyk-Event", draw(st.sampled_from(["project_snapshot/v0", "ping/v0", "other/v3"]))))
    signature = draw(st.sampled_from(["valid", "none", "random", "empty-key", "upper"]))
    if signature == "valid":
        headers.append(("X-Hub-Signature", sign(body)))
    elif signature == "random":
        headers.append(("X-Hub-Signature", "sha256=" + draw(st.binary(min_size=32, max_size=32)).hex()))
    elif signature == "empty-key":
        headers.append(("X-Hub-Signature", "sha256=" + hmac.new(b"", body, hashlib.sha256).hexdigest()))
    elif signature == "upper":
        headers.append(("X-Hub-Signature", sign(body).upper()))
    method = draw(st.sampled_from(["POST"] * 8 + ["GET", "PUT", "DELETE"]))
    return method, body, headers, signature == "valid"


@contextlib.contextmanager
def harness(tmp_path: Path) -> Iterator[tuple[asyncio.AbstractEventLoop, httpx.AsyncClient, SqliteBuffer]]:
    loop = asyncio.new_event_loop()

    async def setup() -> tuple[httpx.AsyncClient, SqliteBuffer]:
        buffer = SqliteBuffer.open(tmp_path, outputs=["local"], dedup_bodies=False)
        listen = replace(ListenConfig(), max_body_bytes=LIMIT, max_inflight_body_bytes=LIMIT * 4, body_timeout=5.0)
        endpoint = WebhookEndpoint(
            verifier=Verifier([SECRET]), store=buffer.append, listen=listen, admission=buffer.admission
        )
        transport = httpx.ASGITransport(app=build_app(endpoint, PATH), raise_app_exceptions=True)
        return httpx.AsyncClient(transport=transport, base_url="https://testserver"), buffer

    client, buffer = loop.run_until_complete(setup())
    try:
        yield loop, client, buffer
    finally:
        loop.run_until_complete(client.aclose())
        loop.run_until_complete(buffer.close())
        loop.close()


def test_ten_thousand_fuzzed_requests(tmp_path: Path) -> None:
    stats = {"2xx": 0, "4xx": 0, "503": 0}
    signed: set[bytes] = set()
    with harness(tmp_path) as (loop, client, buffer):

        @settings(
            max_examples=10_000,
            deadline=None,
            database=None,
            suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
        )
        @given(requests())
        def one(request: tuple[str, bytes, list[tuple[str, str]], bool]) -> None:
            method, body, headers, valid = request
            if valid:
                signed.add(body)
            response = loop.run_until_complete(client.request(method, PATH, content=body, headers=headers))
            assert response.status_code < 500 or response.status_code == 503, response.text
            assert response.headers["content-type"].startswith(("application/json", "text/plain"))
            if 200 <= response.status_code < 300:
                stats["2xx"] += 1
                assert method == "POST" and valid, "only a correctly signed body may be acknowledged"
            elif response.status_code == 503:
                stats["503"] += 1
            else:
                stats["4xx"] += 1

        one()
        path = buffer.path
    with contextlib.closing(sqlite3.connect(path)) as conn:
        stored = [b for (b,) in conn.execute("SELECT body FROM events UNION ALL SELECT body FROM quarantine")]
    assert stats["2xx"] > 200 and stats["4xx"] > 1000, stats  # both paths were exercised
    assert stored, "some correctly signed snapshots must have been stored"
    assert set(stored) <= signed, "nothing unverified ever reached the buffer (and so no output)"


pytestmark = pytest.mark.slow
