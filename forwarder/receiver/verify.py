"""X-Hub-Signature verification over the exact bytes received.

Snyk signs ``sha256=`` + lowercase hex HMAC-SHA256(secret, raw body). We compute that whole
string for each active secret and compare it with the header value in constant time
(``hmac.compare_digest``). Consequences, each a past failure of other receivers (acceptance cases
C-01..C-03):

- the body is never parsed and re-serialized before hashing (spacing, ``7.30``, ``é`` survive);
- the algorithm is never taken from the header: ``sha1=…``, a bare digest, upper-case hex, an
  empty digest or a missing ``=`` simply do not match;
- there is no code path for "no secret configured": the config refuses empty secrets.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Sequence

PREFIX = b"sha256="
_HEX = frozenset(b"0123456789abcdef")


def why_not(header: bytes | None) -> str:
    """Why a header did not verify, for the operator: absent, not Snyk's form, or a wrong digest.

    Only the header's shape is judged (it is what the sender already knows); nothing about the
    secret is revealed.
    """
    if header is None:
        return "X-Hub-Signature is missing (or sent twice)"
    digest = header[len(PREFIX) :]
    if not header.startswith(PREFIX) or len(digest) != 64 or not _HEX.issuperset(digest):
        return "X-Hub-Signature is malformed (expected sha256= and 64 lower-case hex digits)"
    return "X-Hub-Signature does not match the body"


def signature(secret: bytes, body: bytes) -> bytes:
    """The header value Snyk sends for ``body``."""
    return PREFIX + hmac.new(secret, body, hashlib.sha256).hexdigest().encode("ascii")


class Verifier:
    def __init__(self, secrets: Sequence[str]) -> None:
        keys = [s.encode("utf-8") for s in secrets]
        if not keys or any(not k.strip() for k in keys):
            raise ValueError("at least one non-empty secret is required")
        self._keys = keys

    def match(self, header: bytes | None, body: bytes) -> int | None:
        """Index of the secret that produced ``header`` for ``body``, or ``None``.

        Every secret is tried even after a match, so the time taken does not reveal which one
        matched or whether the first one did.
        """
        if header is None:
            return None
        found = None
        for index, key in enumerate(self._keys):
            if hmac.compare_digest(header, signature(key, body)) and found is None:
                found = index
        return found
