"""The webhook endpoint in process, with the real SQLite buffer (cases.md C-01..C-05)."""

from __future__ import annotations

import contextlib
import gzip
import sqlite3
from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path

import httpx
import pytest

from forwarder.buffer import SqliteBuffer
from forwarder.config.model import ListenConfig
from forwarder.errors import DiskFull
from forwarder.receiver import Verifier, WebhookEndpoint, build_app
from forwarder.types import Webhook
from tests.helpers import BODY_A_SIGNATURE, PING_BODY, PING_SIGNATURE, SECRET, issue, sample, sign, snapshot_body

pytestmark = pytest.mark.anyio
BODY_A = sample("body_a.json")
PATH = "/webhooks/snyk"


class Harness:
    def __init__(self, client: httpx.AsyncClient, buffer: SqliteBuffer) -> None:
        self.client = client
        self.buffer = buffer

    async def post(
        self,
        body: bytes,
        *,
        event: str | None = "project_snapshot/v0",
        signature: str | None = "auto",
        transport_id: str | None = None,
        extra: dict[str, str] | None = None,
    ) -> httpx.Response:
        headers = {"Content-Type": "application/json", **(extra or {})}
        if event is not None:
            headers["X-Snyk-Event"] = event
        if signature == "auto":
            signature = sign(body)
        if signature is not None:
            headers["X-Hub-Signature"] = signature
        if transport_id is not None:
            headers["X-Snyk-Transport-ID"] = transport_id
        return await self.client.post(PATH, content=body, headers=headers)

    def count(self, table: str = "events") -> int:
        with contextlib.closing(sqlite3.connect(self.buffer.path)) as conn:
            return int(conn.execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0])


def _app(buffer: SqliteBuffer, listen: ListenConfig, store: object = None) -> httpx.AsyncClient:
    endpoint = WebhookEndpoint(verifier=Verifier([SECRET]), store=store or buffer.append, listen=listen)  # type: ignore[arg-type]
    transport = httpx.ASGITransport(app=build_app(endpoint, PATH), client=("192.0.2.7", 4711))
    return httpx.AsyncClient(transport=transport, base_url="https://testserver")


@pytest.fixture
async def harness(tmp_path: Path) -> AsyncIterator[Harness]:
    buffer = SqliteBuffer.open(tmp_path / "state", outputs=["local"])
    async with _app(buffer, ListenConfig(max_body_bytes=64 * 1024, max_inflight_body_bytes=256 * 1024)) as client:
        yield Harness(client, buffer)
    await buffer.close()


async def test_c01_exact_bytes_are_accepted_and_stored_verbatim(harness: Harness) -> None:
    response = await harness.post(BODY_A, signature=BODY_A_SIGNATURE)
    assert response.status_code == 202
    assert response.json()["status"] == "stored"
    with contextlib.closing(sqlite3.connect(harness.buffer.path)) as conn:
        (body,) = conn.execute("SELECT body FROM events").fetchone()
    assert body == BODY_A


@pytest.mark.parametrize("name", ["x-hub-signature", "X-HUB-SIGNATURE"])
async def test_c02_header_name_is_case_insensitive(harness: Harness, name: str) -> None:
    response = await harness.post(BODY_A, signature=None, extra={name: BODY_A_SIGNATURE})
    assert response.status_code == 202


@pytest.mark.parametrize(
    "signature",
    [
        "2d939932011eb88be3254af806d2b951e5fcba04d102c7c999e6ca3081a6d7d8",
        "sha1=0123456789abcdef0123456789abcdef01234567",
        "sha256",
        "sha256=",
        None,
        "sha256=7d38cdd689735b008b3c702edd92eea23791c5f6",
        "SHA256=2D939932011EB88BE3254AF806D2B951E5FCBA04D102C7C999E6CA3081A6D7D8",
        "sha256=1aca2788841d5e35f8d0af8fb755df57fc3aac62137cf93293bd11270ea60884",
    ],
)
async def test_c02_wrong_signatures_get_401_and_store_nothing(harness: Harness, signature: str | None) -> None:
    response = await harness.post(BODY_A, signature=signature)
    assert response.status_code == 401
    assert response.json()["error"] == "bad_signature"
    assert "2d939932011eb88be3254af806d2b951e5fcba04d102c7c999e6ca3081a6d7d8" not in response.text
    assert harness.count() == 0
    expected = (
        "missing"
        if signature is None
        else "does not match"
        if signature == "sha256=1aca2788841d5e35f8d0af8fb755df57fc3aac62137cf93293bd11270ea60884"
        else "malformed"
    )
    assert expected in response.json()["message"]


async def test_two_signature_headers_are_refused(harness: Harness) -> None:
    headers = [
        ("X-Snyk-Event", "project_snapshot/v0"),
        ("X-Hub-Signature", BODY_A_SIGNATURE),
        ("X-Hub-Signature", "sha256=00"),
    ]
    response = await harness.client.post(PATH, content=BODY_A, headers=headers)
    assert response.status_code == 401


async def test_c04a_ping_is_200_and_stores_nothing(harness: Harness) -> None:
    response = await harness.post(PING_BODY, event="ping/v0", signature=PING_SIGNATURE)
    assert response.status_code == 200
    assert harness.count() == 0 and harness.count("quarantine") == 0


async def test_c04b_ping_with_wrong_signature_is_401(harness: Harness) -> None:
    response = await harness.post(PING_BODY, event="ping/v0", signature=BODY_A_SIGNATURE)
    assert response.status_code == 401


@pytest.mark.parametrize("event", ["project_snapshot/v1", "snapshot_deleted/v0", "ping/v1", "garbage"])
async def test_c04de_unknown_events_are_quarantined_not_shipped(
    harness: Harness, event: str, caplog: pytest.LogCaptureFixture
) -> None:
    response = await harness.post(BODY_A, event=event)
    assert response.status_code == 202
    assert response.json()["status"] == "quarantined"
    assert harness.count() == 0 and harness.count("quarantine") == 1
    warnings = [r for r in caplog.records if r.levelname == "WARNING" and "unknown Snyk event" in r.getMessage()]
    assert len(warnings) == 1
    name, _, version = event.partition("/")
    assert warnings[0].__dict__["event"] == name
    assert warnings[0].__dict__["version"] == (version or None)


async def test_c04f_missing_event_header_is_400_after_the_signature(harness: Harness) -> None:
    assert (await harness.post(BODY_A, event=None)).status_code == 400
    assert (await harness.post(BODY_A, event=None, signature="sha256=00")).status_code == 401
    assert harness.count() == 0


async def test_c04g_unknown_keys_in_a_v0_payload_are_fine(harness: Harness) -> None:
    body = BODY_A.replace(b'"cvssScore":7.30', b'"cvssScore":7.30,"riskScore":{"value":612}')
    assert body != BODY_A
    assert (await harness.post(body)).status_code == 202
    assert harness.count() == 1


@pytest.mark.parametrize("body", [b"{not json", b'{"a":1', b"\xff\xfe{}", b""])
async def test_malformed_json_is_400_and_stores_nothing(harness: Harness, body: bytes) -> None:
    response = await harness.post(body)
    assert response.status_code == 400
    assert response.json()["error"] == "malformed_json"
    assert harness.count() == 0


async def test_a_snapshot_that_is_not_an_object_is_400(harness: Harness) -> None:
    assert (await harness.post(b"[1,2]")).status_code == 400
    assert harness.count() == 0


async def test_c05_body_over_the_limit_is_413_before_reading(harness: Harness) -> None:
    limit = 64 * 1024
    body = b'{"pad":"' + b"x" * (limit - 10) + b'"}'
    assert len(body) == limit
    assert (await harness.post(body)).status_code == 202
    response = await harness.post(body + b" ")
    assert response.status_code == 413
    assert "max_body_bytes" in response.json()["message"]
    assert harness.count() == 1


async def test_c05_chunked_body_over_the_limit_is_413(harness: Harness) -> None:
    async def chunks() -> AsyncIterator[bytes]:
        for _ in range(70):
            yield b" " * 1024

    headers = {"X-Snyk-Event": "project_snapshot/v0", "X-Hub-Signature": "sha256=00"}
    response = await harness.client.post(PATH, content=chunks(), headers=headers)
    assert response.status_code == 413


async def test_repeated_transport_id_is_acknowledged_without_storing_twice(harness: Harness) -> None:
    first = await harness.post(BODY_A, transport_id="998fe884-18a0-45db-8ae0-e379eea3bc0a")
    second = await harness.post(BODY_A, transport_id="998fe884-18a0-45db-8ae0-e379eea3bc0a")
    assert first.status_code == 202
    assert second.status_code == 200 and second.json()["status"] == "duplicate"
    assert harness.count() == 1


async def test_other_methods_get_405_with_a_hint(harness: Harness) -> None:
    response = await harness.client.get(PATH)
    assert response.status_code == 405
    assert "POST" in response.json()["message"]
    assert (await harness.client.post("/elsewhere", content=b"{}")).status_code == 404


async def test_a_storage_failure_is_503_never_2xx(tmp_path: Path) -> None:
    async def failing_store(webhook: Webhook) -> object:
        raise DiskFull("disk full while writing the buffer")

    buffer = SqliteBuffer.open(tmp_path / "state", outputs=["local"])
    async with _app(buffer, ListenConfig(), store=failing_store) as client:
        headers = {"X-Snyk-Event": "project_snapshot/v0", "X-Hub-Signature": BODY_A_SIGNATURE}
        response = await client.post(PATH, content=BODY_A, headers=headers)
    await buffer.close()
    assert response.status_code == 503
    assert response.headers["retry-after"].isdigit()
    assert "NOT accepted" in response.json()["message"]


async def test_memory_budget_queues_bodies_instead_of_failing(tmp_path: Path) -> None:
    buffer = SqliteBuffer.open(tmp_path / "state", outputs=["local"])
    listen = replace(ListenConfig(), max_body_bytes=8 * 1024, max_inflight_body_bytes=8 * 1024)
    async with _app(buffer, listen) as client:
        import asyncio

        bodies = [b'{"pad":"' + bytes([97 + i]) * 6000 + b'"}' for i in range(5)]
        results = await asyncio.gather(
            *(
                client.post(
                    PATH, content=b, headers={"X-Snyk-Event": "project_snapshot/v0", "X-Hub-Signature": sign(b)}
                )
                for b in bodies
            )
        )
    await buffer.close()
    assert [r.status_code for r in results] == [202] * 5


async def test_after_shutdown_begins_new_requests_get_503_and_store_nothing(tmp_path: Path) -> None:
    buffer = SqliteBuffer.open(tmp_path / "state", outputs=["local"])
    endpoint = WebhookEndpoint(verifier=Verifier([SECRET]), store=buffer.append, listen=ListenConfig())
    transport = httpx.ASGITransport(app=build_app(endpoint, PATH))
    async with httpx.AsyncClient(transport=transport, base_url="https://testserver") as client:
        endpoint.shutdown(grace=60.0)
        body = snapshot_body([issue("LATE")])
        response = await client.post(
            PATH, content=body, headers={"X-Snyk-Event": "project_snapshot/v0", "X-Hub-Signature": sign(body)}
        )
    assert response.status_code == 503 and response.headers["retry-after"] == "5"
    assert response.json()["error"] == "shutting_down"
    assert Harness(client, buffer).count() == 0
    await buffer.close()


async def test_a_trailing_slash_is_a_404_with_a_hint_not_a_redirect(harness: Harness) -> None:
    response = await harness.client.post(PATH + "/", content=b"{}", headers={"Host": "evil.example"})
    assert response.status_code == 404 and "location" not in response.headers
    assert PATH in response.json()["message"]


async def test_a_compressed_body_gets_415_send_it_uncompressed(harness: Harness) -> None:
    body = gzip.compress(sample("snapshot_small.json"))
    response = await harness.post(body, extra={"Content-Encoding": "gzip"})
    assert response.status_code == 415
    assert "uncompressed" in response.json()["message"]
    assert harness.count() == 0
    plain = await harness.post(sample("snapshot_small.json"), extra={"Content-Encoding": "identity"})
    assert plain.status_code == 202


async def test_a_body_that_is_not_utf8_is_400_naming_the_encoding(harness: Harness) -> None:
    body = '{"project": {"name": "café"}}'.encode("latin-1")
    response = await harness.post(body)
    assert response.status_code == 400
    assert "UTF-8" in response.json()["message"] and harness.count() == 0


async def test_a_snapshot_without_issue_arrays_is_kept_and_warned_about(
    harness: Harness, caplog: pytest.LogCaptureFixture
) -> None:
    response = await harness.post(b'{"project": {"name": "x"}, "newIssues": "notalist"}')
    assert response.status_code == 202 and harness.count() == 1  # nothing lost
    warned = [r for r in caplog.records if "yield no records" in r.getMessage()]
    assert len(warned) == 1 and warned[0].problems == ["newIssues is not a list (str)"]  # type: ignore[attr-defined]
