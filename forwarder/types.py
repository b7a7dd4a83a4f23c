"""The shapes every layer shares: what was received, what is stored, what ships, what came back.

Imports point down the pipeline (receiver → buffer → flatten → formats → outputs → shipper);
this module imports none of them, so any layer may import it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

Document = dict[str, Any]
"""An ECS-shaped record: nested objects, no dotted keys, no None/empty values."""

EventKind = Literal["snapshot", "unknown"]
Action = Literal["introduced", "resolved", "summary"]


@dataclass(frozen=True, slots=True)
class Webhook:
    """A verified delivery, as the receiver hands it to the buffer.

    ``body`` is kept byte for byte: record ids derive from its SHA-256, and the raw bytes are
    the only thing the signature vouches for.
    """

    body: bytes
    body_sha256: str
    event_name: str
    received_at: float
    kind: EventKind = "snapshot"
    transport_id: str | None = None
    snyk_timestamp: str | None = None


@dataclass(frozen=True, slots=True)
class StoredEvent:
    """A webhook as read back from the buffer, with the position the buffer gave it."""

    id: int
    webhook: Webhook


@dataclass(frozen=True, slots=True)
class Position:
    """Where an output stands: every record before (event_id, index) has been handled.

    Records of one event are numbered in flatten order, so the position is stable across
    restarts and a large snapshot can resume mid-way.
    """

    event_id: int
    index: int

    def __lt__(self, other: Position) -> bool:
        return (self.event_id, self.index) < (other.event_id, other.index)

    def __le__(self, other: Position) -> bool:
        return (self.event_id, self.index) <= (other.event_id, other.index)


@dataclass(frozen=True, slots=True)
class Record:
    """One flattened finding (or snapshot summary) with its deterministic id."""

    id: str
    position: Position
    time_ms: int
    severity: str | None
    action: Action
    document: Document = field(repr=False)


@dataclass(frozen=True, slots=True)
class Message:
    """A record rendered in an output's format (ECS JSON, CEF, LEEF), before transport framing."""

    record: Record
    body: bytes
    # Set when the record cannot be made to fit the destination's size limit; the shipper moves
    # such a message to the dead-letter store instead of sending it.
    problem: str | None = None


# --- delivery outcomes: outputs classify, the shipper decides what to do -------------------------


@dataclass(frozen=True, slots=True)
class Delivered:
    """The destination has every message of the batch."""


@dataclass(frozen=True, slots=True)
class Retry:
    """Nothing in the batch is known delivered; send the same batch again after a backoff.

    ``after`` is the destination's own hint (Retry-After) and is a floor for the backoff.
    """

    reason: str
    after: float | None = None


@dataclass(frozen=True, slots=True)
class Reject:
    """The destination refused some messages for good; they go to the dead-letter store.

    ``indices`` are positions inside the batch (``None`` means every message). When
    ``others_delivered`` is false the remaining messages were not taken and are sent again.
    """

    reason: str
    indices: tuple[int, ...] | None = None
    others_delivered: bool = False


@dataclass(frozen=True, slots=True)
class Split:
    """The batch is too large for the destination: halve it; a single message is rejected."""

    reason: str


@dataclass(frozen=True, slots=True)
class Pause:
    """The output's own configuration is wrong (bad token, unknown index): keep everything,
    stop sending, and probe again slowly."""

    reason: str


Outcome = Delivered | Retry | Reject | Split | Pause
