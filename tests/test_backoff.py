"""Backoff bounds (cases.md C-17): each delay lies in [step/2, step], steps double up to the cap."""

from __future__ import annotations

import random

from forwarder.backoff import Backoff


def test_delays_keep_at_least_half_of_each_step_and_respect_the_cap() -> None:
    backoff = Backoff(1.0, 60.0, rng=random.Random(7))
    for attempt in range(1, 40):
        step = min(60.0, 2.0 ** (attempt - 1))
        for _ in range(50):
            assert step / 2 <= backoff.delay(attempt) <= step


def test_retry_after_is_a_floor() -> None:
    backoff = Backoff(0.1, 1.0, rng=random.Random(1))
    assert backoff.delay(1, floor=5.0) == 5.0
    assert backoff.delay(1, floor=0.01) >= 0.05


def test_jitter_actually_varies() -> None:
    backoff = Backoff(1.0, 60.0, rng=random.Random(3))
    assert len({round(backoff.delay(4), 6) for _ in range(20)}) > 10
