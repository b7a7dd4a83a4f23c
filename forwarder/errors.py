"""Every exception the forwarder raises on purpose, in one tree.

::

    ForwarderError
    ├── ConfigError            exit code 78 (EX_CONFIG); names file, key, value and the fix
    ├── ReceiveError           an HTTP answer to a webhook: status_code, code, message
    │   ├── BadRequest         400 (malformed JSON, missing X-Snyk-Event, non-object body)
    │   ├── BadSignature       401 (missing, malformed or wrong X-Hub-Signature)
    │   ├── BodyTimeout        408 (client too slow to send its body)
    │   ├── PayloadTooLarge    413 (body over listen.max_body_bytes)
    │   ├── UnsupportedEncoding 415 (a compressed body: Content-Encoding other than identity)
    │   └── Unavailable        503 with retry_after (buffer full, storage failed, overloaded)
    ├── StorageError           the durable buffer could not do what was asked
    │   └── DiskFull           ENOSPC / SQLITE_FULL: nothing was stored
    └── OutputError            talking to a destination failed (raised inside outputs only)
        ├── ConnectFailed
        ├── SendTimeout
        └── ProtocolViolation  the peer answered something the protocol does not allow

Third-party exceptions (sqlite3, ssl, OSError, httpx) are caught in the one module that calls
them and re-raised ``from exc`` as the most specific class here, so callers handle one tree.
"""

from __future__ import annotations

EX_CONFIG = 78  # sysexits.h: configuration error; systemd will not restart-loop on it (RestartPreventExitStatus)
EX_UNAVAILABLE = 69  # sysexits.h: a needed service (port, disk) is unavailable at start


class ForwarderError(Exception):
    """Base of all deliberate errors."""


class ConfigError(ForwarderError):
    """A configuration mistake, reported with everything needed to fix it."""

    exit_code = EX_CONFIG

    def __init__(self, key: str, message: str, *, hint: str = "", value: object = None, file: str = "") -> None:
        self.key = key
        self.message = message
        self.hint = hint
        self.value = value
        self.file = file
        super().__init__(self.render())

    def render(self) -> str:
        where = f"{self.file}: " if self.file else ""
        text = f"{where}{self.key}: {self.message}"
        if self.value is not None:
            text += f" (got {self.value!r})"
        if self.hint:
            text += f"; fix: {self.hint}"
        return text

    def in_file(self, file: str) -> ConfigError:
        return ConfigError(self.key, self.message, hint=self.hint, value=self.value, file=file)


class ReceiveError(ForwarderError):
    """Turns into one HTTP response; the message is meant for the operator reading the sender's log."""

    status_code = 400
    code = "bad_request"

    def __init__(self, message: str, *, code: str | None = None) -> None:
        self.message = message
        if code is not None:
            self.code = code
        super().__init__(message)

    def headers(self) -> list[tuple[bytes, bytes]]:
        return []


class BadRequest(ReceiveError):
    status_code = 400


class BadSignature(ReceiveError):
    status_code = 401
    code = "bad_signature"


class BodyTimeout(ReceiveError):
    status_code = 408
    code = "body_timeout"


class PayloadTooLarge(ReceiveError):
    status_code = 413
    code = "payload_too_large"


class UnsupportedEncoding(ReceiveError):
    status_code = 415
    code = "unsupported_content_encoding"


class Unavailable(ReceiveError):
    status_code = 503
    code = "unavailable"

    def __init__(self, message: str, *, retry_after: int, code: str | None = None) -> None:
        self.retry_after = retry_after
        super().__init__(message, code=code)

    def headers(self) -> list[tuple[bytes, bytes]]:
        return [(b"retry-after", str(self.retry_after).encode())]


class StorageError(ForwarderError):
    """The buffer failed; nothing that this call was asked to store is on disk."""


class DiskFull(StorageError):
    """The filesystem under the buffer is full."""


class OutputError(ForwarderError):
    """A destination could not be reached or answered out of protocol."""


class ConnectFailed(OutputError):
    pass


class SendTimeout(OutputError):
    pass


class ProtocolViolation(OutputError):
    pass
