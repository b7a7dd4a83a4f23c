"""Signature verification on raw bytes (cases.md C-01, C-02, C-03)."""

from __future__ import annotations

import pytest

from forwarder.receiver.verify import Verifier, signature
from tests.helpers import BODY_A_SIGNATURE, BODY_B_SIGNATURE, PING_BODY, PING_SIGNATURE, SECRET, sample

BODY_A = sample("body_a.json")
BODY_B = sample("body_b.json")


def test_signature_matches_the_published_vectors() -> None:
    assert signature(SECRET.encode(), BODY_A).decode() == BODY_A_SIGNATURE
    assert signature(SECRET.encode(), BODY_B).decode() == BODY_B_SIGNATURE
    assert signature(SECRET.encode(), PING_BODY).decode() == PING_SIGNATURE


@pytest.mark.parametrize(
    "header",
    [
        # C-01 (c): digests a re-serializing verifier would compute
        "sha256=1aca2788841d5e35f8d0af8fb755df57fc3aac62137cf93293bd11270ea60884",
        "sha256=be7fb0813011e882bf51fd2c96529fd66184abe314b658f61efcdc54cf3f9d9e",
        # C-02 variants 3..6, 8, 9
        "2d939932011eb88be3254af806d2b951e5fcba04d102c7c999e6ca3081a6d7d8",
        "sha1=0123456789abcdef0123456789abcdef01234567",
        "sha256",
        "sha256=",
        "sha256=7d38cdd689735b008b3c702edd92eea23791c5f6",
        "SHA256=2D939932011EB88BE3254AF806D2B951E5FCBA04D102C7C999E6CA3081A6D7D8",
        # C-03: HMAC under the empty key
        "sha256=35cb1e705c77594d1747eae901321c96658229fa07ee901618a8767a5b464f35",
    ],
)
def test_body_a_rejects_every_wrong_form(header: str) -> None:
    assert Verifier([SECRET]).match(header.encode(), BODY_A) is None


def test_c01d_ascii_escaped_body_b_digest_is_rejected() -> None:
    bad = b"sha256=0f04fe5f6e1f05955ccaf2261d8a48c0090481108df0b79c67f0ef802ce65d84"
    assert Verifier([SECRET]).match(bad, BODY_B) is None


def test_missing_header_never_matches() -> None:
    assert Verifier([SECRET]).match(None, BODY_A) is None


def test_either_of_two_secrets_matches_during_rotation() -> None:
    verifier = Verifier(["old-secret-value", SECRET])
    assert verifier.match(BODY_A_SIGNATURE.encode(), BODY_A) == 1
    assert verifier.match(signature(b"old-secret-value", BODY_A), BODY_A) == 0
    assert verifier.match(signature(b"third", BODY_A), BODY_A) is None


@pytest.mark.parametrize("secrets", [[], [""], ["  "]])
def test_an_empty_secret_cannot_be_used(secrets: list[str]) -> None:
    with pytest.raises(ValueError, match="non-empty"):
        Verifier(secrets)
