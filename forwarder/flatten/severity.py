"""Snyk severities, their order, and the one numeric scale every format shares.

The numbers are the recommended values of the CEF severity bands (low 0–3, medium 4–6,
high 7–8, critical 9–10; acceptance case C-10), reused for ECS ``event.severity`` so a SIEM sees the
same number whichever format an output uses. Unknown or missing severity has no number.
"""

from __future__ import annotations

ORDER = ("low", "medium", "high", "critical")
RANK = {name: rank for rank, name in enumerate(ORDER)}
SCORE = {"low": 3, "medium": 6, "high": 8, "critical": 10}


def normalize(value: object) -> str | None:
    """``High`` → ``high``; anything that is not one of Snyk's four words → ``None``."""
    if isinstance(value, str):
        lowered = value.strip().lower()
        if lowered in RANK:
            return lowered
    return None


def at_least(severity: str | None, minimum: str | None) -> bool:
    """Filter test for ``min_severity``: a record of unknown severity passes only with no minimum."""
    if minimum is None:
        return True
    return severity is not None and RANK[severity] >= RANK[minimum]
