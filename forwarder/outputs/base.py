"""The contract every output meets, and the registry entry shape.

An output turns a batch of formatted messages into one attempt at its destination and says what
happened (:data:`~forwarder.types.Outcome`). It never sleeps between attempts, never loops, and
never touches the buffer: retrying, backing off, splitting and dead-lettering are the shipper's.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from forwarder.config.model import DeliveryConfig
from forwarder.config.reader import Table
from forwarder.types import Message, Outcome, Record


class Output(Protocol):
    name: str

    async def send(self, batch: Sequence[Message]) -> Outcome:
        """One attempt to deliver ``batch`` (never empty). Must return within the output's own
        timeouts; exceptions are bugs, every expected failure is an Outcome."""
        ...

    def message_budget(self, record: Record) -> int | None:
        """The most bytes ``record``'s formatted message may take at this destination (after the
        output's own header and framing), or ``None`` when there is no limit. Longer records are
        shortened carefully before sending (:mod:`forwarder.formats.shorten`)."""
        ...

    async def healthcheck(self) -> None:
        """Raise :class:`~forwarder.errors.OutputError` with an operator-readable message if the
        destination cannot be reached (used by ``check-config --probe`` and readiness)."""
        ...

    async def aclose(self) -> None:
        """Release connections and files; the output is not used afterwards."""
        ...


@dataclass(frozen=True, slots=True)
class OutputType:
    """One row of the registry in :mod:`forwarder.outputs`."""

    parse: Callable[[Table], Any]
    build: Callable[[str, Any], Output]
    formats: tuple[str, ...]
    delivery_defaults: DeliveryConfig
