"""Checks that the fake Snyk v1 webhook API answers, refuses and delivers the way the notes say Snyk does.

The CLI tests will trust this fake, so it is driven here with a real HTTP client (httpx) over TLS, and its
pings are received by a small local HTTPS server whose signatures are recomputed independently.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
import ssl
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
import trustme

from tests.helpers import PING_BODY, PING_SIGNATURE
from tests.helpers import SECRET as VECTOR_SECRET

from .https_target import HttpsTarget
from .ports import LOOPBACK, free_port
from .snyk_api import NOT_AUTHORISED, FakeSnykApi, ScriptedReply, TokenGrant

ORG = "4a18d42f-0706-4ad0-b127-24078731fbed"
OTHER_ORG = "39db46b1-ad57-47e6-a87d-e34f6968030b"
TOKEN = "tok-admin-0001"
SECRET = "s3cr3t-" + "a8be22bb7bed43a3ac24de3580093560"
WAIT = 5.0


@dataclass(frozen=True)
class Pki:
    ca: trustme.CA
    ca_file: Path
    cert_file: Path
    key_file: Path


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    d = tmp_path_factory.mktemp("snyk-pki")
    ca = trustme.CA()
    leaf = ca.issue_cert("127.0.0.1", "localhost")
    pki = Pki(ca, d / "ca.pem", d / "server.pem", d / "server.key")
    ca.cert_pem.write_to_path(str(pki.ca_file))
    leaf.cert_chain_pems[0].write_to_path(str(pki.cert_file))
    leaf.private_key_pem.write_to_path(str(pki.key_file))
    return pki


@pytest.fixture
def api(pki: Pki) -> Iterator[FakeSnykApi]:
    tokens = {TOKEN: TokenGrant(frozenset({ORG}))}
    with FakeSnykApi(pki.cert_file, pki.key_file, tokens=tokens, delivery_ca_file=pki.ca_file) as fake:
        yield fake


def make_client(api: FakeSnykApi, pki: Pki, token: str | None = TOKEN, timeout: float = WAIT) -> httpx.Client:
    headers = {} if token is None else {"Authorization": f"token {token}"}
    verify = ssl.create_default_context(cafile=str(pki.ca_file))
    return httpx.Client(base_url=api.base_url, verify=verify, headers=headers, timeout=timeout)


@pytest.fixture
def client(api: FakeSnykApi, pki: Pki) -> Iterator[httpx.Client]:
    with make_client(api, pki) as c:
        yield c


@pytest.fixture
def receiver(pki: Pki) -> Iterator[HttpsTarget]:
    with HttpsTarget(pki.cert_file, pki.key_file, "/snyk/webhook?tenant=a") as r:
        yield r


def hmac_hex(secret: str, body: bytes) -> str:
    return "sha256=" + hmac.new(secret.encode("utf-8"), body, hashlib.sha256).hexdigest()


def assert_error(response: httpx.Response, status: int) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    assert uuid.UUID(response.headers["x-error-reference"])
    body: dict[str, Any] = response.json()
    assert body["code"] == status
    assert isinstance(body["message"], str) and body["message"]
    assert body["error"] == body["message"]
    return body


def create(client: httpx.Client, url: str, secret: str = SECRET, org: str = ORG) -> str:
    response = client.post(f"org/{org}/webhooks", json={"url": url, "secret": secret})
    assert response.status_code == 200, response.text
    webhook_id: str = response.json()["id"]
    return webhook_id


# -- create and the ping that follows ------------------------------------------------------------------------


def test_create_answers_id_and_url_then_sends_a_signed_ping(
    api: FakeSnykApi, client: httpx.Client, receiver: HttpsTarget
) -> None:
    response = client.post(f"org/{ORG}/webhooks", json={"url": receiver.url, "secret": SECRET})

    assert response.status_code == 200
    created = response.json()
    assert set(created) == {"id", "url"}
    assert created["url"] == receiver.url
    assert uuid.UUID(created["id"]).version == 4

    [delivery] = api.wait_for_deliveries(1, WAIT)
    [got] = receiver.wait(1)
    assert got.path == "/snyk/webhook?tenant=a"
    assert got.body == b'{"webhookId":"' + created["id"].encode() + b'"}'
    assert json.loads(got.body) == {"webhookId": created["id"]}
    assert got.headers["x-hub-signature"] == hmac_hex(SECRET, got.body)
    assert re.fullmatch(r"sha256=[0-9a-f]{64}", got.headers["x-hub-signature"])
    assert got.headers["content-type"] == "application/json"
    assert got.headers["x-snyk-event"] == "ping/v0"
    assert uuid.UUID(got.headers["x-snyk-transport-id"]).version == 4
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", got.headers["x-snyk-timestamp"])
    sent_at = datetime.fromisoformat(got.headers["x-snyk-timestamp"])
    assert abs((datetime.now(UTC) - sent_at).total_seconds()) < 60
    assert re.fullmatch(r"Snyk-Webhooks/[0-9a-f]{7}", got.headers["user-agent"])

    assert delivery.status == 200 and delivery.ok and delivery.error is None
    assert delivery.webhook_id == created["id"] and delivery.org_id == ORG and delivery.event == "ping/v0"
    assert delivery.transport_id == got.headers["x-snyk-transport-id"]
    assert delivery.body == got.body
    assert [h.url for h in api.webhooks(ORG)] == [receiver.url]


def test_ping_signature_matches_the_project_test_vector(
    api: FakeSnykApi, client: httpx.Client, receiver: HttpsTarget
) -> None:
    hook_id = json.loads(PING_BODY)["webhookId"]
    api.add_webhook(ORG, receiver.url, VECTOR_SECRET, webhook_id=hook_id)

    response = client.post(f"org/{ORG}/webhooks/{hook_id}/ping")

    assert response.status_code == 200
    assert response.content == b""
    [got] = receiver.wait(1)
    assert got.body == PING_BODY
    assert got.headers["x-hub-signature"] == PING_SIGNATURE


# -- list / get / delete / ping --------------------------------------------------------------------------------


def test_list_get_delete(api: FakeSnykApi, client: httpx.Client, receiver: HttpsTarget) -> None:
    first = create(client, receiver.url)
    second = create(client, receiver.url + "&rotation=2", secret=SECRET + "-new")

    listing = client.get(f"org/{ORG}/webhooks")
    assert listing.status_code == 200
    assert listing.json() == {
        "results": [{"id": first, "url": receiver.url}, {"id": second, "url": receiver.url + "&rotation=2"}],
        "total": 2,
    }
    got = client.get(f"org/{ORG}/webhooks/{first}")
    assert got.status_code == 200
    assert got.json() == {"id": first, "url": receiver.url}

    deleted = client.delete(f"org/{ORG}/webhooks/{first}")
    assert deleted.status_code == 200
    assert deleted.content == b""

    assert_error(client.get(f"org/{ORG}/webhooks/{first}"), 404)
    assert_error(client.delete(f"org/{ORG}/webhooks/{first}"), 404)
    assert client.get(f"org/{ORG}/webhooks").json() == {
        "results": [{"id": second, "url": receiver.url + "&rotation=2"}],
        "total": 1,
    }
    assert [h.id for h in api.webhooks(ORG)] == [second]


def test_ping_endpoint_sends_a_new_delivery_signed_with_the_stored_secret(
    api: FakeSnykApi, client: httpx.Client, receiver: HttpsTarget
) -> None:
    secret = "rotated-" + uuid.uuid4().hex
    hook_id = create(client, receiver.url, secret=secret)
    api.wait_for_deliveries(1, WAIT)

    response = client.post(f"org/{ORG}/webhooks/{hook_id}/ping")
    assert response.status_code == 200

    first, second = api.wait_for_deliveries(2, WAIT)
    received = receiver.wait(2)
    assert second.event == "ping/v0" and second.webhook_id == hook_id and second.status == 200
    assert second.transport_id != first.transport_id
    assert received[1].body == b'{"webhookId":"' + hook_id.encode() + b'"}'
    assert received[1].headers["x-hub-signature"] == hmac_hex(secret, received[1].body)
    assert received[1].headers["x-hub-signature"] != hmac_hex(SECRET, received[1].body)

    assert_error(client.post(f"org/{ORG}/webhooks/{uuid.uuid4()}/ping"), 404)
    # Deliveries run in order on one thread: a ping queued by the refused call would come before the marker.
    api.deliver(hook_id, "marker/v0", b"{}")
    assert [d.event for d in api.wait_for_deliveries(3, WAIT)] == ["ping/v0", "ping/v0", "marker/v0"]


def test_deliver_sends_arbitrary_events_byte_for_byte(
    api: FakeSnykApi, client: httpx.Client, receiver: HttpsTarget
) -> None:
    hook_id = create(client, receiver.url)
    body = '{"project": {"name": "café “quoted”"}, "score": 7.30}'.encode()

    transport_id = api.deliver(hook_id, "project_snapshot/v0", body)

    received = receiver.wait(2)
    assert received[1].body == body
    assert received[1].headers["x-snyk-event"] == "project_snapshot/v0"
    assert received[1].headers["x-snyk-transport-id"] == transport_id
    assert received[1].headers["x-hub-signature"] == hmac_hex(SECRET, body)


# -- create validation -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "content",
    [
        json.dumps({"url": "http://127.0.0.1:9/hook", "secret": SECRET}).encode(),
        json.dumps({"url": "ftp://127.0.0.1/hook", "secret": SECRET}).encode(),
        json.dumps({"url": "https://", "secret": SECRET}).encode(),
        json.dumps({"secret": SECRET}).encode(),
        json.dumps({"url": "https://127.0.0.1/hook"}).encode(),
        json.dumps({"url": "https://127.0.0.1/hook", "secret": ""}).encode(),
        json.dumps({"url": 5, "secret": SECRET}).encode(),
        json.dumps(["https://127.0.0.1/hook", SECRET]).encode(),
        b"url=https://127.0.0.1/hook&secret=x",
        b"",
    ],
    ids=["http", "ftp", "no-host", "no-url", "no-secret", "empty-secret", "url-not-str", "array", "form", "empty"],
)
def test_create_refuses_bad_requests(
    api: FakeSnykApi, client: httpx.Client, receiver: HttpsTarget, content: bytes
) -> None:
    response = client.post(
        f"org/{ORG}/webhooks", content=content, headers={"Content-Type": "application/json; charset=utf-8"}
    )

    assert_error(response, 400)
    assert api.webhooks() == []
    # Deliveries run in order on one thread: if the refused create had queued a ping, it would come first.
    good = create(client, receiver.url)
    assert [d.webhook_id for d in api.wait_for_deliveries(1, WAIT)] == [good]


def test_duplicate_url_is_allowed_by_default(api: FakeSnykApi, client: httpx.Client, receiver: HttpsTarget) -> None:
    create(client, receiver.url)
    create(client, receiver.url)
    assert len(api.webhooks(ORG)) == 2


def test_duplicate_url_refused_with_422_when_switched_on(pki: Pki, receiver: HttpsTarget) -> None:
    with (
        FakeSnykApi(
            pki.cert_file,
            pki.key_file,
            tokens={TOKEN: TokenGrant(frozenset({ORG}))},
            delivery_ca_file=pki.ca_file,
            refuse_duplicate_urls=True,
        ) as api,
        make_client(api, pki) as client,
    ):
        create(client, receiver.url)
        again = client.post(f"org/{ORG}/webhooks", json={"url": receiver.url, "secret": SECRET + "2"})
        assert_error(again, 422)
        assert len(api.webhooks(ORG)) == 1
        create(client, receiver.url + "&v=2")
        assert len(api.webhooks(ORG)) == 2


# -- auth ------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "authorization",
    [None, f"token {TOKEN}-wrong", f"Bearer {TOKEN}", f"token  {TOKEN}", TOKEN, f"TOKEN {TOKEN}"],
    ids=["missing", "wrong-token", "bearer", "two-spaces", "no-scheme", "upper-scheme"],
)
def test_unauthenticated_requests_get_401(
    api: FakeSnykApi, pki: Pki, receiver: HttpsTarget, authorization: str | None
) -> None:
    hook = api.add_webhook(ORG, receiver.url, SECRET)
    headers = {} if authorization is None else {"Authorization": authorization}
    with make_client(api, pki, token=None) as client:
        for response in (
            client.get(f"org/{ORG}/webhooks", headers=headers),
            client.post(f"org/{ORG}/webhooks", json={"url": receiver.url, "secret": SECRET}, headers=headers),
            client.delete(f"org/{ORG}/webhooks/{hook.id}", headers=headers),
        ):
            assert response.status_code == 401
            assert response.json() == NOT_AUTHORISED
            assert response.json() == {"code": 401, "error": "Not authorised", "message": "Not authorised"}
            assert uuid.UUID(response.headers["x-error-reference"])
    assert api.webhooks() == [hook]


@pytest.mark.parametrize("scheme", ["token", "Token"])
def test_both_documented_token_spellings_are_accepted(api: FakeSnykApi, pki: Pki, scheme: str) -> None:
    with make_client(api, pki, token=None) as client:
        response = client.get(f"org/{ORG}/webhooks", headers={"Authorization": f"{scheme} {TOKEN}"})
    assert response.status_code == 200
    assert response.json() == {"results": [], "total": 0}


def test_other_org_is_not_found(api: FakeSnykApi, client: httpx.Client, receiver: HttpsTarget) -> None:
    theirs = api.add_webhook(OTHER_ORG, receiver.url, SECRET)

    for response in (
        client.get(f"org/{OTHER_ORG}/webhooks"),
        client.get(f"org/{OTHER_ORG}/webhooks/{theirs.id}"),
        client.delete(f"org/{OTHER_ORG}/webhooks/{theirs.id}"),
        client.post(f"org/{OTHER_ORG}/webhooks/{theirs.id}/ping"),
        client.post(f"org/{OTHER_ORG}/webhooks", json={"url": receiver.url, "secret": SECRET}),
    ):
        body = assert_error(response, 404)
        assert body["message"] == (
            f"Org {OTHER_ORG} was not found or you may not have the correct permissions to access the org."
        )
    assert api.webhooks(OTHER_ORG) == [theirs]
    assert api.webhooks(ORG) == []


def test_missing_permissions_get_403(api: FakeSnykApi, pki: Pki, receiver: HttpsTarget) -> None:
    api.add_token("tok-viewer", [ORG], create=False, delete=False)
    api.add_token("tok-blind", [ORG], view=False)
    hook = api.add_webhook(ORG, receiver.url, SECRET)

    with make_client(api, pki, token="tok-viewer") as viewer, make_client(api, pki, token="tok-blind") as blind:
        body = assert_error(viewer.post(f"org/{ORG}/webhooks", json={"url": receiver.url, "secret": SECRET}), 403)
        assert "Create Outbound Webhooks" in body["message"]
        body = assert_error(viewer.delete(f"org/{ORG}/webhooks/{hook.id}"), 403)
        assert "Remove Outbound Webhooks" in body["message"]
        assert viewer.get(f"org/{ORG}/webhooks").json()["total"] == 1
        assert viewer.post(f"org/{ORG}/webhooks/{hook.id}/ping").status_code == 200
        assert_error(blind.get(f"org/{ORG}/webhooks"), 403)
    assert api.webhooks(ORG) == [hook]


# -- rate limiting and fault injection -------------------------------------------------------------------------


def test_throttle_next_answers_429_then_recovers(api: FakeSnykApi, client: httpx.Client) -> None:
    api.throttle_next(2, retry_after=7)

    for _ in range(2):
        response = client.get(f"org/{ORG}/webhooks")
        assert_error(response, 429)
        assert response.headers["retry-after"] == "7"
    assert client.get(f"org/{ORG}/webhooks").status_code == 200

    api.throttle_next(1)
    response = client.get(f"org/{ORG}/webhooks")
    assert_error(response, 429)
    assert "retry-after" not in response.headers


def test_real_rate_limit_per_window(api: FakeSnykApi, client: httpx.Client) -> None:
    api.set_rate_limit(3, window=60)

    assert [client.get(f"org/{ORG}/webhooks").status_code for _ in range(3)] == [200, 200, 200]
    response = client.get(f"org/{ORG}/webhooks")
    assert_error(response, 429)
    assert "retry-after" not in response.headers

    api.set_rate_limit(1, window=60, send_retry_after=True)
    assert client.get(f"org/{ORG}/webhooks").status_code == 200
    response = client.get(f"org/{ORG}/webhooks")
    assert_error(response, 429)
    assert 1 <= int(response.headers["retry-after"]) <= 60

    api.set_rate_limit(None)
    assert client.get(f"org/{ORG}/webhooks").status_code == 200


def test_scripted_reply_matches_method_and_path(api: FakeSnykApi, client: httpx.Client, receiver: HttpsTarget) -> None:
    api.script(ScriptedReply(503, {"oops": True}, {"X-Fault": "yes"}), method="GET", path=r"/webhooks$")

    assert create(client, receiver.url)  # POST: not matched
    faulty = client.get(f"org/{ORG}/webhooks")
    assert faulty.status_code == 503
    assert faulty.json() == {"oops": True}
    assert faulty.headers["x-fault"] == "yes"
    assert uuid.UUID(faulty.headers["x-error-reference"])
    assert client.get(f"org/{ORG}/webhooks").json()["total"] == 1  # used up

    api.script(ScriptedReply(502, b"<html>bad gateway</html>", {"Content-Type": "text/html"}, error_reference=False))
    html = client.get(f"org/{ORG}/webhooks")
    assert (html.status_code, html.text) == (502, "<html>bad gateway</html>")
    assert "x-error-reference" not in html.headers
    assert [r.scripted for r in api.requests()] == [False, True, False, True]


def test_slow_and_dropped_replies(api: FakeSnykApi, pki: Pki) -> None:
    api.script(ScriptedReply(delay=0.4), times=2)
    with make_client(api, pki, timeout=0.1) as impatient, pytest.raises(httpx.ReadTimeout):
        impatient.get(f"org/{ORG}/webhooks")
    with make_client(api, pki) as client:
        started = time.monotonic()
        slow = client.get(f"org/{ORG}/webhooks")
        assert slow.status_code == 200  # processed normally, only late
        assert time.monotonic() - started >= 0.35

        api.script(ScriptedReply(drop_connection=True))
        with pytest.raises(httpx.RemoteProtocolError):
            client.get(f"org/{ORG}/webhooks")
        assert api.requests()[-1].status is None
        assert client.get(f"org/{ORG}/webhooks").status_code == 200


# -- observability and secrecy ---------------------------------------------------------------------------------


def test_every_request_is_recorded_in_order(api: FakeSnykApi, client: httpx.Client, receiver: HttpsTarget) -> None:
    hook_id = create(client, receiver.url)
    client.get(f"org/{ORG}/webhooks?page=1")
    client.delete(f"org/{ORG}/webhooks/{hook_id}")

    log = api.requests()
    assert [(r.seq, r.method, r.path, r.status) for r in log] == [
        (1, "POST", f"/v1/org/{ORG}/webhooks", 200),
        (2, "GET", f"/v1/org/{ORG}/webhooks", 200),
        (3, "DELETE", f"/v1/org/{ORG}/webhooks/{hook_id}", 200),
    ]
    assert log[0].json == {"url": receiver.url, "secret": SECRET}
    assert log[0].header("authorization") == f"token {TOKEN}"
    assert log[1].query == "page=1" and log[1].json is None
    assert json.loads(log[0].response_body)["id"] == hook_id


def test_secret_is_never_returned(api: FakeSnykApi, client: httpx.Client, receiver: HttpsTarget) -> None:
    hook_id = create(client, receiver.url)
    responses = [
        client.get(f"org/{ORG}/webhooks"),
        client.get(f"org/{ORG}/webhooks/{hook_id}"),
        client.post(f"org/{ORG}/webhooks/{hook_id}/ping"),
        client.post(f"org/{ORG}/webhooks", json={"url": receiver.url.replace("https", "http"), "secret": SECRET}),
        client.post(f"org/{OTHER_ORG}/webhooks", json={"url": receiver.url, "secret": SECRET}),
        client.delete(f"org/{ORG}/webhooks/{hook_id}"),
    ]
    assert [r.status_code for r in responses] == [200, 200, 200, 400, 404, 200]

    log = api.requests()
    assert sum(SECRET.encode() in r.body for r in log) == 3  # the scan below would see it if it leaked
    for recorded in log:
        assert SECRET.encode() not in recorded.response_body
        assert all(SECRET not in value for _, value in recorded.response_headers)
    for delivery in api.wait_for_deliveries(2, WAIT):
        assert SECRET.encode() not in delivery.body
        assert all(SECRET not in value for _, value in delivery.headers)


def test_delivery_failures_are_recorded(pki: Pki, client: httpx.Client, api: FakeSnykApi) -> None:
    with HttpsTarget(pki.cert_file, pki.key_file, "/snyk/webhook?tenant=a", status=500) as failing:
        create(client, failing.url)
        [answered] = api.wait_for_deliveries(1, WAIT)
    assert answered.status == 500 and not answered.ok and answered.error is None

    create(client, f"https://{LOOPBACK}:{free_port()}/hook")
    refused = api.wait_for_deliveries(2, WAIT)[1]
    assert refused.status is None and refused.error is not None
    assert not refused.ok


def test_delivery_verifies_the_receiver_certificate(pki: Pki, receiver: HttpsTarget) -> None:
    # No delivery_ca_file: the system trust store does not know the test CA.
    with FakeSnykApi(pki.cert_file, pki.key_file, tokens={TOKEN: TokenGrant(frozenset({ORG}))}) as api:
        with make_client(api, pki) as client:
            create(client, receiver.url)
        [delivery] = api.wait_for_deliveries(1, WAIT)
    assert delivery.status is None
    assert delivery.error is not None and "CERTIFICATE_VERIFY_FAILED" in delivery.error
    assert receiver.received == []


# -- routing and variants --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", f"/org/{ORG}/webhooks"),  # base URL without /v1
        ("GET", f"/v1/org/{ORG}/webhooks/"),  # trailing slash
        ("GET", f"/v1//org/{ORG}/webhooks"),  # sloppy URL join
        ("PUT", f"/v1/org/{ORG}/webhooks/00000000-0000-4000-8000-000000000000"),  # no update endpoint
        ("GET", f"/v1/org/{ORG}/webhooks/00000000-0000-4000-8000-000000000000/ping"),
    ],
)
def test_unknown_routes_get_json_404(api: FakeSnykApi, client: httpx.Client, method: str, path: str) -> None:
    assert_error(client.request(method, api.url(path)), 404)
    assert api.requests()[-1].path == path


def test_plain_http_and_created_status_variants(receiver: HttpsTarget, pki: Pki) -> None:
    with (
        FakeSnykApi(
            plain_http=True,
            tokens={TOKEN: TokenGrant(frozenset({ORG}))},
            delivery_ca_file=pki.ca_file,
            create_status=201,
        ) as api,
        httpx.Client(base_url=api.base_url, headers={"Authorization": f"token {TOKEN}"}) as client,
    ):
        assert api.base_url == f"http://{LOOPBACK}:{api.port}/v1/"
        response = client.post(f"org/{ORG}/webhooks", json={"url": receiver.url, "secret": SECRET})
        assert response.status_code == 201
        assert api.wait_for_deliveries(1, WAIT)[0].status == 200


def test_constructor_needs_tls_material_or_plain_http() -> None:
    with pytest.raises(ValueError, match="cert_file"):
        FakeSnykApi()
