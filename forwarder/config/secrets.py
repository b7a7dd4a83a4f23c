"""Secrets from inline text, an environment variable, a file, or a systemd credential.

A secret is resolved once, when the configuration is loaded, so a missing variable or an
unreadable file stops the daemon at start with the key that names it — never later, and never
by falling back to an empty key: HMAC with an empty key "works", which would let anyone who
computes HMAC("", body) through (acceptance case C-03).

The value is wrapped so that ``repr``/``str`` print ``***``; only :meth:`Secret.reveal` returns it.
"""

from __future__ import annotations

import os
import secrets as _random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from forwarder.config.reader import Table
from forwarder.errors import ConfigError

CREDENTIALS_ENV = "CREDENTIALS_DIRECTORY"
"""Set by systemd for units with LoadCredential=/SetCredential=; files there are readable only by the unit."""

_FORMS = (
    'an inline string (secret = "…"), or a table: { env = "VAR" }, { file = "/path" }, '
    '{ file = "/path", generate = true } or { credential = "name" } (systemd LoadCredential=)'
)


@dataclass(frozen=True, slots=True)
class Secret:
    """A resolved secret; ``source`` says where it came from without saying what it is."""

    source: str
    _value: str = field(repr=False)

    def reveal(self) -> str:
        return self._value

    def __str__(self) -> str:
        return "***"

    def __repr__(self) -> str:
        return f"Secret(source={self.source!r}, value=***)"


def generate_secret() -> str:
    """A new webhook secret: 32 random bytes as URL-safe base64 (ASCII, so Snyk's handling of
    non-ASCII secrets — undocumented — never matters)."""
    return _random.token_urlsafe(32)


def resolve_secret(table: Table, name: str, spec: Any) -> Secret:
    """Turn one secret spec (the value found at ``table.name``) into a :class:`Secret`."""
    key = table.key(name)
    if isinstance(spec, str):
        return _checked(
            key,
            "inline",
            spec,
            hint="write the secret the Snyk webhook was created with (a new one: openssl rand -hex 32), "
            'or read it with { env = "VAR" } / { file = "/path" }',
        )
    if not isinstance(spec, dict) or len({"env", "file", "credential"} & spec.keys()) != 1:
        raise ConfigError(key, "must name exactly one secret source", value=_redacted(spec), hint="write " + _FORMS)
    unknown = set(spec) - {"env", "file", "credential", "generate"}
    if unknown:
        raise ConfigError(key, f"has unknown keys {sorted(unknown)}", hint="write " + _FORMS)
    if "env" in spec:
        var = spec["env"]
        if not isinstance(var, str) or not var:
            raise ConfigError(key + ".env", "must be the name of an environment variable", value=var)
        if var not in os.environ:
            raise ConfigError(
                key + ".env",
                f"environment variable {var} is not set",
                hint=f"export {var}=… in the service's environment (systemd: EnvironmentFile=) "
                "or use { file = … } instead",
            )
        return _checked(key, f"env {var}", os.environ[var], hint=f"give {var} a non-empty value")
    if "credential" in spec:
        cred = spec["credential"]
        if not isinstance(cred, str) or not cred or "/" in cred:
            raise ConfigError(key + ".credential", "must be a credential name without '/'", value=cred)
        directory = os.environ.get(CREDENTIALS_ENV)
        if not directory:
            raise ConfigError(
                key + ".credential",
                f"${CREDENTIALS_ENV} is not set, so systemd passed no credentials",
                hint=f"add LoadCredential={cred}:/path/to/file to the unit, or use {{ file = … }}",
            )
        return _from_file(key, Path(directory) / cred, f"credential {cred}", generate=False)
    path_text = spec["file"]
    if not isinstance(path_text, str) or not path_text:
        raise ConfigError(key + ".file", "must be a file path", value=path_text)
    generate = spec.get("generate", False)
    if not isinstance(generate, bool):
        raise ConfigError(key + ".generate", "must be true or false", value=generate)
    path = Path(path_text).expanduser()
    if not path.is_absolute():
        path = table.base_dir / path
    if generate and not table.create and not path.exists():
        raise ConfigError(
            key,
            f"secret file {path} does not exist yet: the daemon creates it on its first start",
            hint="start the daemon (snyk-forwarder serve) with this configuration first",
        )
    return _from_file(key, path, f"file {path}", generate=generate)


def _from_file(key: str, path: Path, source: str, *, generate: bool) -> Secret:
    if generate and not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write(generate_secret() + "\n")
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(
            key,
            f"secret file {path} does not exist",
            hint="create it (one line, the secret), or add generate = true to create one",
        ) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(
            key,
            f"secret file {path} cannot be read: {exc.__class__.__name__}",
            hint="check the path and that the service user may read it",
        ) from exc
    # A trailing newline is how editors and `echo` write files; it is never part of the secret.
    return _checked(key, source, text.rstrip("\r\n"), hint=f"write the secret into {path}")


def _checked(key: str, source: str, value: str, *, hint: str) -> Secret:
    if not value.strip():
        raise ConfigError(
            key,
            f"secret from {source} is empty or only whitespace; an empty HMAC key would accept forged webhooks",
            hint=hint,
        )
    return Secret(source, value)


def _redacted(spec: Any) -> Any:
    if isinstance(spec, dict):
        return {k: ("***" if k not in ("env", "file", "credential", "generate") else v) for k, v in spec.items()}
    return "***" if isinstance(spec, str) else type(spec).__name__
