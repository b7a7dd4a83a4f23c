"""Typed, path-aware access to a parsed TOML table.

Every getter knows the dotted key it reads, so a mistake anywhere in the file is reported as
``outputs.siem.port: must be an integer between 1 and 65535 (got '514x'); fix: …``. Unknown keys
are errors too: a typo such as ``max_body_byte`` silently falling back to a default is the kind
of mistake an operator only finds during an incident.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Iterable
from pathlib import Path
from typing import Any, Literal, TypeVar

from forwarder.errors import ConfigError

T = TypeVar("T")

# How a command uses the secrets in the file. "create": read them, generating a missing
# ``generate = true`` file (only the daemon does: commands an operator runs, perhaps as root,
# must leave no file behind). "resolve": read them, never create; a secret still to be generated
# reads as empty and not ``available``. "skip": not read at all (status and replay need none).
SecretUse = Literal["create", "resolve", "skip"]

_MISSING: Any = object()

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?\s*$")
_DURATION_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, None: 1.0}
_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(B|KB|MB|GB|KiB|MiB|GiB)?\s*$")
_SIZE_UNITS = {
    None: 1,
    "B": 1,
    "KB": 1000,
    "MB": 1000**2,
    "GB": 1000**3,
    "KiB": 1024,
    "MiB": 1024**2,
    "GiB": 1024**3,
}


def parse_duration(value: object) -> float | None:
    """Seconds from a number or a string like ``500ms``, ``10s``, ``5m``, ``24h``, ``7d``."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, str):
        match = _DURATION.match(value)
        if match:
            return float(match.group(1)) * _DURATION_UNITS[match.group(2)]
    return None


def parse_size(value: object) -> int | None:
    """Bytes from an integer or a string like ``64MiB``, ``10MB``, ``512KiB``."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, str):
        match = _SIZE.match(value)
        if match:
            return int(float(match.group(1)) * _SIZE_UNITS[match.group(2)])
    return None


def _close(word: str, candidates: Iterable[str]) -> str | None:
    matches = difflib.get_close_matches(word, list(candidates), n=1, cutoff=0.75)
    return matches[0] if matches else None


class Table:
    """One TOML table plus its dotted path; getters validate and remember which keys were read."""

    def __init__(self, data: dict[str, Any], path: str, base_dir: Path, *, secrets: SecretUse = "create") -> None:
        self.data = data
        self.path = path
        self.base_dir = base_dir
        self.secrets = secrets
        self._seen: set[str] = set()

    def key(self, name: str) -> str:
        return f"{self.path}.{name}" if self.path else name

    def error(self, name: str, message: str, *, hint: str = "", value: object = None) -> ConfigError:
        return ConfigError(self.key(name), message, hint=hint, value=value)

    def has(self, name: str) -> bool:
        return name in self.data

    def raw(self, name: str, default: Any = _MISSING) -> Any:
        self._seen.add(name)
        if name in self.data:
            return self.data[name]
        if default is _MISSING:
            near = _close(name, [k for k in self.data if k not in self._seen])
            if near:
                hint = f"rename `{near}` to `{name}`"
            elif self.path:
                hint = f"add `{name} = …` to the [{self.path}] table"
            else:
                hint = f"add a [{name}] section"
            raise self.error(name, "is required", hint=hint)
        return default

    def string(
        self,
        name: str,
        default: Any = _MISSING,
        *,
        choices: Iterable[str] | None = None,
        allow_empty: bool = False,
    ) -> Any:
        value = self.raw(name, default)
        if value is default and default is not _MISSING:
            return value
        if not isinstance(value, str):
            raise self.error(name, "must be a string", value=value, hint=f'write it in quotes: {name} = "…"')
        if not allow_empty and not value.strip():
            raise self.error(name, "must not be empty", hint=f"set a value or remove `{name}` to use the default")
        if choices is not None:
            allowed = list(choices)
            if value not in allowed:
                raise self.error(
                    name,
                    "is not one of " + ", ".join(allowed),
                    value=value,
                    hint="use one of the listed values",
                )
        return value

    def integer(
        self, name: str, default: Any = _MISSING, *, minimum: int | None = None, maximum: int | None = None
    ) -> Any:
        value = self.raw(name, default)
        if value is default and default is not _MISSING:
            return value
        if isinstance(value, bool) or not isinstance(value, int):
            example = value.strip() if isinstance(value, str) and value.strip().isdigit() else "10"
            raise self.error(
                name, "must be an integer", value=value, hint=f"write a number without quotes: {name} = {example}"
            )
        self._check_range(name, value, minimum, maximum)
        return value

    def number(
        self,
        name: str,
        default: Any = _MISSING,
        *,
        minimum: float | None = None,
        maximum: float | None = None,
    ) -> Any:
        value = self.raw(name, default)
        if value is default and default is not _MISSING:
            return value
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise self.error(name, "must be a number", value=value, hint=f"write a number without quotes: {name} = 1.5")
        self._check_range(name, value, minimum, maximum)
        return float(value)

    def boolean(self, name: str, default: Any = _MISSING) -> Any:
        value = self.raw(name, default)
        if value is default and default is not _MISSING:
            return value
        if not isinstance(value, bool):
            raise self.error(name, "must be true or false", value=value, hint=f"write {name} = true or {name} = false")
        return value

    def duration(
        self, name: str, default: Any = _MISSING, *, minimum: float = 0.0, maximum: float | None = None
    ) -> Any:
        value = self.raw(name, default)
        if value is default and default is not _MISSING:
            return value
        seconds = parse_duration(value)
        if seconds is None:
            raise self.error(
                name,
                "must be a duration",
                value=value,
                hint='write seconds as a number, or a string such as "500ms", "10s", "5m", "24h", "7d"',
            )
        self._check_range(name, seconds, minimum, maximum, unit=" seconds")
        return seconds

    def size(self, name: str, default: Any = _MISSING, *, minimum: int = 0, maximum: int | None = None) -> Any:
        value = self.raw(name, default)
        if value is default and default is not _MISSING:
            return value
        size = parse_size(value)
        if size is None:
            raise self.error(
                name,
                "must be a size in bytes",
                value=value,
                hint='write bytes as a number, or a string such as "512KiB", "64MiB", "1GB"',
            )
        self._check_range(name, size, minimum, maximum, unit=" bytes")
        return size

    def path_value(self, name: str, default: Any = _MISSING) -> Any:
        value = self.string(name, default)
        if value is default and default is not _MISSING:
            return value
        path = Path(value).expanduser()
        return path if path.is_absolute() else (self.base_dir / path)

    def endpoint(self, name: str, *, default_port: int | None = None) -> tuple[str, int]:
        """``host:port``, ``[v6]:port``, or a bare host when a default port exists."""
        value = self.string(name)
        hint = f'write {name} = "siem.example.com:{default_port or 514}" (IPv6: "[::1]:514")'
        host, port_text = value, ""
        if value.startswith("["):
            close = value.find("]")
            if close == -1:
                raise self.error(name, "has an unclosed [ in the IPv6 address", value=value, hint=hint)
            host, rest = value[1:close], value[close + 1 :]
            port_text = rest[1:] if rest.startswith(":") else rest
        elif value.count(":") == 1:
            host, port_text = value.split(":")
        if not port_text:
            if default_port is None:
                raise self.error(name, "needs a port", value=value, hint=hint)
            return host, default_port
        if not port_text.isdigit() or not 1 <= int(port_text) <= 65535 or not host:
            raise self.error(name, "is not host:port with a port between 1 and 65535", value=value, hint=hint)
        return host, int(port_text)

    def string_list(self, name: str, default: Any = _MISSING, *, choices: Iterable[str] | None = None) -> Any:
        value = self.raw(name, default)
        if value is default and default is not _MISSING:
            return value
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise self.error(name, "must be a list of strings", value=value, hint=f'write {name} = ["a", "b"]')
        if choices is not None:
            allowed = list(choices)
            bad = [v for v in value if v not in allowed]
            if bad:
                raise self.error(
                    name,
                    "has values outside " + ", ".join(allowed),
                    value=bad,
                    hint="use only the listed values",
                )
        return tuple(value)

    def table(self, name: str, *, required: bool = False) -> Table:
        value = self.raw(name, _MISSING if required else {})
        if not isinstance(value, dict):
            raise self.error(name, "must be a table", value=value, hint=f"write it as a [{self.key(name)}] section")
        return Table(value, self.key(name), self.base_dir, secrets=self.secrets)

    def subtables(self) -> list[tuple[str, Table]]:
        """Every key of this table as a named sub-table (e.g. each ``[outputs.<name>]``)."""
        result = []
        for name, value in self.data.items():
            self._seen.add(name)
            if not isinstance(value, dict):
                raise self.error(
                    name,
                    "must be a table",
                    value=value,
                    hint=f"write it as a [{self.key(name)}] section with a type = … key",
                )
            result.append((name, Table(value, self.key(name), self.base_dir, secrets=self.secrets)))
        return result

    def finish(self, known: Iterable[str] = ()) -> None:
        """Reject keys nobody read: they are typos or options of another version.

        ``known`` adds valid keys that were not read this time (optional ones that were absent),
        so the hint can list and suggest them too.
        """
        valid = sorted(self._seen | set(known))
        unknown = sorted(set(self.data) - set(valid))
        if unknown:
            near = _close(unknown[0], valid)
            suggestion = f"did you mean `{near}`? " if near else ""
            what = "section" if isinstance(self.data[unknown[0]], dict) and not self.path else "setting"
            raise self.error(
                unknown[0],
                f"is not a known {what}",
                value=None,
                hint=f"{suggestion}remove it or correct the spelling; valid here: " + ", ".join(valid),
            )

    def _check_range(
        self, name: str, value: float, minimum: float | None, maximum: float | None, unit: str = ""
    ) -> None:
        if minimum is not None and value < minimum:
            raise self.error(
                name,
                f"must be at least {minimum:g}{unit}",
                value=value,
                hint=f"use a value of {minimum:g} or more",
            )
        if maximum is not None and value > maximum:
            raise self.error(
                name,
                f"must be at most {maximum:g}{unit}",
                value=value,
                hint=f"use a value of {maximum:g} or less",
            )
