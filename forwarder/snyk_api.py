"""Snyk's v1 webhook management API: the one HTTP client behind ``snyk-forwarder snyk …``.

Facts (``shared/notes/snyk-webhooks.md`` §8): a webhook belongs to one org; five operations under
``/org/{orgId}/webhooks`` (create, list, get, delete, ping) and no update; the secret is never
returned; ``Authorization: token <API_TOKEN>``; errors are JSON ``{"code", "error", "message"}`` with
an ``x-error-reference`` header; 2,000 requests per minute, then 429.

Every answer other than 2xx, and every httpx / TLS / socket failure, becomes one
:class:`SnykApiError` whose text says what happened and what to do (it may name the CLI options
``--org``, ``--id``, ``--region``, ``--api-url`` and ``--cacert``: this client exists for that CLI).

=====  ==========================================================================================
2xx    success; create may answer 200 or 201 (a third-party guide says 201), both are accepted
400    the request was refused as invalid (Snyk's message is shown)
401    the token is wrong, expired or from another region; the message names where it came from
403    the token lacks a webhook permission: Org Admin or Group Admin is needed
404    org not found or not accessible with this token (or, for get/delete/ping, no such webhook)
422    unprocessable; on create, the unverified "one webhook per URL" refusal (notes §9)
429    retried: up to ``max_attempts`` requests in all, waiting ``Retry-After`` when Snyk sends it
       (it is undocumented) or else capped exponential backoff; a wait over ``max_wait`` fails at once
5xx    not retried: a create that failed half-way could otherwise be made twice
=====  ==========================================================================================

A 429 is safe to repeat even for create (the request was refused, not processed); nothing else is.
The token is sent only over HTTPS, or plain HTTP to a loopback host (tests, a local proxy), and every
outside text quoted in a message (Snyk's error text, a proxy's page, an exception) has it blanked.
"""

from __future__ import annotations

import ipaddress
import math
import ssl
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from types import TracebackType
from typing import Any, Final, Literal, Self
from urllib.parse import quote, urlsplit

import httpx

from forwarder import __version__
from forwarder.backoff import Backoff
from forwarder.config.secrets import Secret
from forwarder.errors import ForwarderError

RATE_LIMIT_TEXT: Final = "Snyk allows 2,000 API requests per minute"
ROLES_TEXT: Final = (
    "webhook management needs View Organization and View/Create/Remove Outbound Webhooks, which the "
    "Org Admin and Group Admin roles hold"
)


@dataclass(frozen=True, slots=True)
class Region:
    """A Snyk multi-tenant region that has webhooks (SNYK-GOV-01 has none)."""

    name: str
    api_url: str  # v1 base URL, with trailing slash
    app_url: str


REGIONS: Final[Mapping[str, Region]] = {
    "us": Region("SNYK-US-01", "https://api.snyk.io/v1/", "https://app.snyk.io"),
    "us2": Region("SNYK-US-02", "https://api.us.snyk.io/v1/", "https://app.us.snyk.io"),
    "eu": Region("SNYK-EU-01", "https://api.eu.snyk.io/v1/", "https://app.eu.snyk.io"),
    "au": Region("SNYK-AU-01", "https://api.au.snyk.io/v1/", "https://app.au.snyk.io"),
}

ErrorKind = Literal[
    "invalid",
    "auth",
    "permission",
    "not_found",
    "unprocessable",
    "rate_limited",
    "server",
    "unexpected",
    "timeout",
    "tls",
    "network",
]


class SnykApiError(ForwarderError):
    """Snyk refused a call, or could not be reached. ``str()`` is the operator-readable message.

    ``kind`` classifies it for tests and callers, ``status`` is the HTTP status (None when no answer
    came), ``reference`` Snyk's ``x-error-reference`` to quote to Snyk support.
    """

    exit_code = 1

    def __init__(self, message: str, *, kind: ErrorKind, status: int | None = None, reference: str | None = None):
        self.kind: ErrorKind = kind
        self.status = status
        self.reference = reference
        super().__init__(message)


@dataclass(frozen=True, slots=True)
class SnykWebhook:
    id: str
    url: str


def api_url_problem(url: str) -> str | None:
    """Why ``url`` may not carry an API token, or None: HTTPS anywhere, plain HTTP only to loopback."""
    parts = urlsplit(url)
    if parts.scheme not in ("https", "http") or not parts.hostname:
        return "must be an absolute https:// URL such as https://api.eu.snyk.io/v1/"
    if parts.scheme == "http" and not is_loopback(parts.hostname):
        return "is plain http to a non-loopback host, which would send the API token unencrypted; use https://"
    return None


def is_loopback(host: str) -> bool:
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def parse_retry_after(value: str | None, *, now: float | None = None) -> float | None:
    """Seconds to wait from a ``Retry-After`` header (delta-seconds or an HTTP date), or None."""
    if value is None or not value.strip():
        return None
    text = value.strip()
    try:
        seconds = float(text)
    except ValueError:
        try:
            when = parsedate_to_datetime(text)
        except (TypeError, ValueError):
            return None
        seconds = when.timestamp() - (time.time() if now is None else now)
    return max(0.0, seconds) if math.isfinite(seconds) else None


class SnykClient:
    """Synchronous client for one Snyk v1 base URL and one API token. Use as a context manager.

    ``verify`` is True (system CAs) or an SSL context (``--cacert``); ``transport`` replaces the network
    in tests; ``sleep`` and ``notice`` (told about each 429 wait) are seams for tests and the CLI.
    """

    def __init__(
        self,
        base_url: str,
        token: Secret,
        *,
        verify: ssl.SSLContext | bool = True,
        timeout: float = 30.0,
        max_attempts: int = 4,
        max_wait: float = 60.0,
        backoff: Backoff | None = None,
        sleep: Callable[[float], None] = time.sleep,
        notice: Callable[[str], None] | None = None,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        problem = api_url_problem(base_url)
        if problem is not None:
            raise ValueError(f"Snyk API URL {base_url!r} {problem}")
        if max_attempts < 1:
            raise ValueError("max_attempts must be at least 1")
        self.base_url = base_url if base_url.endswith("/") else base_url + "/"
        self.token = token
        self.timeout = timeout
        self.max_attempts = max_attempts
        self.max_wait = max_wait
        self.backoff = backoff or Backoff(base=1.0, cap=16.0)
        self._sleep = sleep
        self._notice = notice
        self._client = httpx.Client(
            base_url=self.base_url,
            headers={
                "Authorization": f"token {token.reveal()}",
                "Accept": "application/json",
                "User-Agent": f"snyk-forwarder/{__version__}",
            },
            verify=verify,
            timeout=httpx.Timeout(timeout),
            # A redirect would be a wrong --api-url; never carry the token elsewhere.
            follow_redirects=False,
            transport=transport,
        )

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def close(self) -> None:
        self._client.close()

    # -- the five operations ---------------------------------------------------------------------------

    def list_webhooks(self, org_id: str) -> list[SnykWebhook]:
        what = f"listing the webhooks of org {org_id}"
        data = self._json(self._call("GET", _hooks(org_id), what, org_id), what)
        results = data.get("results")
        if not isinstance(results, list):
            raise self._unexpected(what, "no results list")
        return [self._webhook(item, what) for item in results]

    def get_webhook(self, org_id: str, webhook_id: str) -> SnykWebhook:
        what = f"reading webhook {webhook_id} of org {org_id}"
        response = self._call("GET", _hook(org_id, webhook_id), what, org_id, webhook_id)
        return self._webhook(self._json(response, what), what)

    def create_webhook(self, org_id: str, url: str, secret: Secret) -> SnykWebhook:
        what = f"creating a webhook for {url} in org {org_id}"
        body = {"url": url, "secret": secret.reveal()}
        response = self._call("POST", _hooks(org_id), what, org_id, json=body, target_url=url)
        return self._webhook(self._json(response, what), what)

    def delete_webhook(self, org_id: str, webhook_id: str) -> None:
        what = f"deleting webhook {webhook_id} of org {org_id}"
        self._call("DELETE", _hook(org_id, webhook_id), what, org_id, webhook_id)

    def ping_webhook(self, org_id: str, webhook_id: str) -> None:
        what = f"pinging webhook {webhook_id} of org {org_id}"
        self._call("POST", _hook(org_id, webhook_id) + "/ping", what, org_id, webhook_id)

    # -- one request, with the 429 retry ---------------------------------------------------------------

    def _call(
        self,
        method: str,
        path: str,
        what: str,
        org_id: str,
        webhook_id: str | None = None,
        *,
        json: object = None,
        target_url: str | None = None,
    ) -> httpx.Response:
        for attempt in range(1, self.max_attempts + 1):
            response = self._send(method, path, what, json)
            if response.status_code != 429:
                if response.is_success:
                    return response
                raise self._refused(response, what, org_id, webhook_id, target_url)
            retry_after = parse_retry_after(response.headers.get("Retry-After"))
            if attempt == self.max_attempts:
                raise self._error(
                    f"Snyk kept answering 429 Too Many Requests while {what} ({self.max_attempts} attempts); fix: "
                    f"{RATE_LIMIT_TEXT} per token, shared with every other script using it: wait a minute and "
                    "run the command again",
                    "rate_limited",
                    response,
                )
            delay = retry_after if retry_after is not None else self.backoff.delay(attempt)
            if delay > self.max_wait:
                raise self._error(
                    f"Snyk answered 429 Too Many Requests while {what} and asks to wait {delay:.0f} s; fix: "
                    f"{RATE_LIMIT_TEXT}: run the command again after that",
                    "rate_limited",
                    response,
                )
            if self._notice is not None:
                self._notice(
                    f"Snyk rate limit (429) while {what}; retrying in {delay:.1f} s "
                    f"(attempt {attempt + 1} of {self.max_attempts})"
                )
            self._sleep(delay)
        raise AssertionError("unreachable")  # pragma: no cover - the loop returns or raises

    def _send(self, method: str, path: str, what: str, json: object) -> httpx.Response:
        where = f"{self.base_url} while {what}"
        try:
            return self._client.request(method, path, json=json)
        except httpx.TimeoutException as exc:
            raise self._error(
                f"no answer from {where} within {self.timeout:g} s ({type(exc).__name__}); fix: check the network "
                "path to Snyk (firewall, HTTPS_PROXY) and try again; --timeout allows longer",
                "timeout",
            ) from exc
        except httpx.ConnectError as exc:
            said = self._redact(str(exc))
            if _ssl_cause(exc) is not None:
                raise self._error(
                    f"TLS failed with {where}: {said}; fix: if a proxy re-signs HTTPS, pass its CA with --cacert; "
                    "check the system clock and that --api-url names the right host",
                    "tls",
                ) from exc
            raise self._error(
                f"cannot connect to {where}: {said}; fix: check DNS, firewall and HTTPS_PROXY, and that --region "
                "or --api-url is right",
                "network",
            ) from exc
        except httpx.HTTPError as exc:
            # ReadError, WriteError, RemoteProtocolError, ProxyError, UnsupportedProtocol, DecodingError, …
            raise self._error(
                f"talking to {where} failed: {type(exc).__name__}: {self._redact(str(exc))}; fix: check the network "
                "path to Snyk (proxies, TLS inspection) and try again",
                "network",
            ) from exc

    # -- answers → SnykApiError --------------------------------------------------------------------------

    def _refused(
        self, response: httpx.Response, what: str, org_id: str, webhook_id: str | None, target_url: str | None
    ) -> SnykApiError:
        status = response.status_code
        said = self._redact(_snyk_message(response))
        head = f"Snyk answered {status} {said} while {what}"
        if status == 401:
            return self._error(
                f"Snyk refused the API token from {self.token.source} (401 {said}) while {what}; fix: give a valid, "
                f"unexpired Snyk API token (a service account's, or Account settings › API token) of the region "
                f"that hosts the org ({self.base_url}); tokens of other regions are not valid here",
                "auth",
                response,
            )
        if status == 403:
            return self._error(
                f"{head}: the API token from {self.token.source} lacks a permission for this; fix: {ROLES_TEXT}: use "
                "the token of an Org Admin (or Group Admin) of this org, or of a service account with that role",
                "permission",
                response,
            )
        if status == 404:
            fix = (
                "check --org (the organization ID, a UUID shown in the org's Settings › General, not its name or "
                "slug), that the token's user or service account belongs to that org, and --region (the org may be "
                f"hosted in another region: {', '.join(REGIONS)})"
            )
            if webhook_id is not None:
                fix += f"; check --id too: `snyk-forwarder snyk list --org {org_id}` shows the org's webhooks"
            return self._error(
                f"{head}: org or webhook not found, or not accessible; fix: {fix}", "not_found", response
            )
        if status == 422 and target_url is not None:
            other = target_url + ("&" if "?" in target_url else "?") + "rotation=2"
            return self._error(
                f"{head}; fix: Snyk may refuse a second webhook with a URL the org already uses (reported by a "
                f"third party, not documented): give the new webhook a distinct URL, e.g. {other} — the forwarder "
                "ignores the query string",
                "unprocessable",
                response,
            )
        if status == 422:
            return self._error(f"{head}; fix: correct the request as Snyk's message says", "unprocessable", response)
        if status == 400:
            return self._error(f"{head}; fix: correct the request as Snyk's message says", "invalid", response)
        if status >= 500:
            return self._error(
                f"{head}: a failure on Snyk's side; fix: try again later, and check https://status.snyk.io",
                "server",
                response,
            )
        return self._error(
            f"{head}, which this client does not expect; fix: check that --api-url / --region points at Snyk's "
            "v1 API (https://api.snyk.io/v1/ or a regional one)",
            "unexpected",
            response,
        )

    def _error(self, message: str, kind: ErrorKind, response: httpx.Response | None = None) -> SnykApiError:
        reference = None if response is None else response.headers.get("x-error-reference")
        if reference:
            message += f" [Snyk error reference {reference}]"
        status = None if response is None else response.status_code
        return SnykApiError(message, kind=kind, status=status, reference=reference)

    def _redact(self, text: str) -> str:
        """Text from outside (Snyk's error message, a proxy's page, an exception) without the token."""
        token = self.token.reveal()
        return text.replace(token, "***") if token else text

    def _json(self, response: httpx.Response, what: str) -> dict[str, Any]:
        try:
            data = response.json()
        except ValueError:
            raise self._unexpected(what, f"a body that is not JSON ({self._redact(response.text[:80])!r})") from None
        if not isinstance(data, dict):
            raise self._unexpected(what, "JSON that is not an object")
        return data

    def _webhook(self, item: object, what: str) -> SnykWebhook:
        if isinstance(item, dict) and isinstance(item.get("id"), str) and isinstance(item.get("url"), str):
            return SnykWebhook(item["id"], item["url"])
        raise self._unexpected(what, "a webhook without a string id and url")

    def _unexpected(self, what: str, detail: str) -> SnykApiError:
        return self._error(
            f"Snyk's answer while {what} holds {detail}; fix: check that --api-url / --region points at Snyk's v1 "
            "API and not at a proxy's error page",
            "unexpected",
        )


def _hooks(org_id: str) -> str:
    return f"org/{quote(org_id, safe='')}/webhooks"


def _hook(org_id: str, webhook_id: str) -> str:
    return f"{_hooks(org_id)}/{quote(webhook_id, safe='')}"


def _snyk_message(response: httpx.Response) -> str:
    """Snyk's own error text, in parentheses, or the reason phrase."""
    text = ""
    try:
        data = response.json()
    except ValueError:
        data = None
    if isinstance(data, dict):
        for key in ("message", "error"):
            value = data.get(key)
            if isinstance(value, str) and value.strip():
                text = value.strip()
                break
    phrase = response.reason_phrase or ""
    if not text:
        return phrase
    return f"{phrase} ({text[:300]})" if phrase and phrase.lower() != text.lower() else f"({text[:300]})"


def _ssl_cause(exc: BaseException) -> ssl.SSLError | None:
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        if isinstance(current, ssl.SSLError):
            return current
        seen.add(id(current))
        current = current.__cause__ or current.__context__
    return None
