"""Values and builders shared by the tests (the acceptance-case conventions of cases.md)."""

from __future__ import annotations

import hashlib
import hmac
import json
from importlib import resources
from pathlib import Path
from typing import Any

from forwarder.flatten import Snapshot
from forwarder.types import Record, StoredEvent, Webhook

SECRET = "whsec-EXAMPLE-not-real-0001"
FIXTURES = Path(__file__).parent / "fixtures"

BODY_A_SHA256 = "bcaf44b9de01317c22c175a926f8e8e962b4060efdc2a795203f16090899cfd2"
BODY_A_SIGNATURE = "sha256=2d939932011eb88be3254af806d2b951e5fcba04d102c7c999e6ca3081a6d7d8"
BODY_B_SHA256 = "69638e20710bd1cba551a4e2ebe78f149a1d35d32064a86902d0338e0cc449fc"
BODY_B_SIGNATURE = "sha256=491c90f6a4ca1aae691bdbe097d11e36218bbfc8b14fe2b45aaf3ff5822c4366"
PING_BODY = b'{"webhookId":"d3cf26b3-2d77-497b-bce2-23b33cc15362"}'
PING_SIGNATURE = "sha256=20e193afce429f02886ec35f10fc875ad74aa3f17bdb6f39cc90e982df24b193"


def sample(name: str) -> bytes:
    """A payload shipped with the package (the same files `send-test` sends)."""
    return resources.files("forwarder.samples").joinpath(name).read_bytes()


def sign(body: bytes, secret: str = SECRET) -> str:
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def issue(
    issue_id: str = "SNYK-JS-EXAMPLE-1",
    *,
    severity: str | None = "high",
    title: str = "Example issue",
    **data: Any,
) -> dict[str, Any]:
    issue_data: dict[str, Any] = {"id": issue_id, "title": title, **data}
    if severity is not None:
        issue_data["severity"] = severity
    return {"id": issue_id, "issueType": "vuln", "pkgName": "pkg", "pkgVersions": ["1.0.0"], "issueData": issue_data}


def snapshot_body(new: list[Any] | None = None, removed: list[Any] | None = None, **extra: Any) -> bytes:
    payload = {
        "project": {"name": "acme/api", "id": "0f3c2a51-7d4e-4c1b-9a8e-2b6f0c9d1e23", "type": "npm"},
        "org": {"name": "Acme", "id": "8e2d7b14-3c6a-4f09-b5d1-92a4c0e7f318"},
        "newIssues": new or [],
        "removedIssues": removed or [],
        **extra,
    }
    return json.dumps(payload, separators=(",", ":"), ensure_ascii=False).encode()


def stored(
    body: bytes, *, event_id: int = 1, timestamp: str | None = None, received_at: float = 1709802303.120
) -> StoredEvent:
    webhook = Webhook(
        body=body,
        body_sha256=hashlib.sha256(body).hexdigest(),
        event_name="project_snapshot/v0",
        received_at=received_at,
        transport_id="998fe884-18a0-45db-8ae0-e379eea3bc0a",
        snyk_timestamp=timestamp,
    )
    return StoredEvent(id=event_id, webhook=webhook)


def flatten_all(body: bytes, *, summary: bool = False, timestamp: str | None = None) -> list[Record]:
    snapshot = Snapshot(stored(body, timestamp=timestamp), json.loads(body), summary=summary)
    return [r for r in (snapshot.record(i) for i in range(len(snapshot))) if r is not None]


def leaf_paths(value: Any, prefix: str = "") -> list[tuple[str, Any]]:
    """Every (dotted path, leaf value) of a nested document; lists are leaves."""
    if isinstance(value, dict):
        out: list[tuple[str, Any]] = []
        for key, item in value.items():
            out.extend(leaf_paths(item, f"{prefix}.{key}" if prefix else key))
        return out
    return [(prefix, value)]
