"""Reading flat values out of an ECS document, shared by the flat formats (CEF, LEEF, syslog SD)."""

from __future__ import annotations

from typing import Any


def get(document: dict[str, Any], path: str) -> Any:
    """The value at a dotted path, or ``None``."""
    value: Any = document
    for part in path.split("."):
        if not isinstance(value, dict):
            return None
        value = value.get(part)
    return value


def joined(value: Any) -> str | None:
    """A list as one comma-separated value (C-07: several CVEs share one key)."""
    if isinstance(value, list):
        return ",".join(str(v) for v in value) or None
    return None if value is None else str(value)


def number(value: Any) -> str | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return f"{value:g}" if isinstance(value, float) else str(value)


def package(document: dict[str, Any]) -> str | None:
    name, version = get(document, "package.name"), get(document, "package.version")
    if isinstance(name, str) and isinstance(version, str):
        return f"{name}@{version}"
    return name if isinstance(name, str) else None


def shortened(document: dict[str, Any]) -> str | None:
    paths = get(document, "snyk.shortened_fields")
    return "shortened to fit the output's size limit: " + ", ".join(paths) if paths else None
