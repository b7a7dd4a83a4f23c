"""Snyk payload → records. Pure: no I/O, no clock; times come from the stored event.

Record numbering (the buffer's cursors depend on it, so it must never change for a given body):
``newIssues[0..n)`` → indices ``0..n`` (action ``introduced``), then ``removedIssues[0..m)`` →
``n..n+m`` (``resolved``), then, when summaries are on, one ``summary`` record at ``n+m``.
An array element that is not an object keeps its index but yields no record.

Record ids hash only signed content — the body's SHA-256, the action, the index and the issue
id — never X-Snyk-Timestamp or the transport id, so a re-delivery, or the same event arriving
through a second webhook during secret rotation, yields the same ids and the SIEM can drop
the duplicate.
"""

from __future__ import annotations

import hashlib
from typing import Any

from forwarder.flatten import severity as sev
from forwarder.flatten.ecs import SnapshotFacts, issue_document, summary_document
from forwarder.flatten.timestamps import parse_ms
from forwarder.flatten.values import ident, obj
from forwarder.types import Action, Position, Record, StoredEvent

__all__ = ["Snapshot", "record_id", "shape_problems"]


def shape_problems(payload: Any) -> list[str]:
    """What in a ``project_snapshot/v0`` body would make issues vanish without a trace.

    Flattening tolerates all of it (nothing crashes, the raw event stays stored); this names it
    so that a change in Snyk's payload shows up as a warning, not as a quiet drop in records.
    """
    root = obj(payload)
    if "newIssues" not in root and "removedIssues" not in root:
        return ["has neither newIssues nor removedIssues"]
    problems = []
    for key in ("newIssues", "removedIssues"):
        value = root.get(key)
        if key in root and not isinstance(value, list):
            problems.append(f"{key} is not a list ({type(value).__name__})")
        elif isinstance(value, list):
            bad = sum(1 for item in value if not isinstance(item, dict))
            if bad:
                problems.append(f"{bad} of {len(value)} {key} elements are not objects")
    return problems


def record_id(body_sha256: str, action: str, index: int, issue_id: str | None) -> str:
    """128 bits of SHA-256 over signed content; hex, so every SIEM accepts it as a key."""
    material = f"{body_sha256}\x1f{action}\x1f{index}\x1f{issue_id or ''}".encode()
    return hashlib.sha256(material).hexdigest()[:32]


class Snapshot:
    """The records of one stored ``project_snapshot`` delivery, built on demand by index."""

    def __init__(self, event: StoredEvent, payload: Any, *, summary: bool) -> None:
        webhook = event.webhook
        self.event_id = event.id
        root = obj(payload)
        new, removed = root.get("newIssues"), root.get("removedIssues")
        self._new: list[Any] = new if isinstance(new, list) else []
        self._removed: list[Any] = removed if isinstance(removed, list) else []
        self._summary = summary
        self._body_sha256 = webhook.body_sha256
        received_ms = int(webhook.received_at * 1000)
        # X-Snyk-Timestamp is when Snyk says the event happened (acceptance case C-09); it is unsigned,
        # so it only sets the time, never an id. Without it the receive time stands in.
        snyk_ms = parse_ms(webhook.snyk_timestamp)
        self._time_ms = received_ms if snyk_ms is None else snyk_ms
        self._facts = SnapshotFacts(
            time_ms=self._time_ms,
            received_ms=received_ms,
            body_sha256=webhook.body_sha256,
            transport_id=webhook.transport_id,
            project=obj(root.get("project")),
            org=obj(root.get("org")),
            group=obj(root.get("group")),
        )

    def __len__(self) -> int:
        return len(self._new) + len(self._removed) + (1 if self._summary else 0)

    def record(self, index: int) -> Record | None:
        """Record ``index`` in the numbering above, or ``None`` for a malformed array element."""
        n_new, n_removed = len(self._new), len(self._removed)
        if index < n_new:
            return self._issue(index, self._new[index], "introduced")
        if index < n_new + n_removed:
            return self._issue(index, self._removed[index - n_new], "resolved")
        if self._summary and index == n_new + n_removed:
            rid = record_id(self._body_sha256, "summary", index, None)
            document = summary_document(self._facts, rid, n_new, n_removed)
            return Record(rid, Position(self.event_id, index), self._time_ms, None, "summary", document)
        raise IndexError(index)

    def _issue(self, index: int, issue: Any, action: Action) -> Record | None:
        if not isinstance(issue, dict):
            return None
        issue_id = ident(issue.get("id")) or ident(obj(issue.get("issueData")).get("id"))
        rid = record_id(self._body_sha256, action, index, issue_id)
        document = issue_document(self._facts, rid, issue, action)
        severity = sev.normalize(obj(issue.get("issueData")).get("severity"))
        return Record(rid, Position(self.event_id, index), self._time_ms, severity, action, document)
