"""The HEC output's only I/O: event POSTs, acknowledgement polls and the health check.

One ``httpx.AsyncClient`` per output keeps a TLS connection alive between batches. Every
httpx exception is caught here and re-raised as :class:`~forwarder.errors.OutputError`
(``ConnectFailed``, ``SendTimeout``, ``ProtocolViolation``); ``send`` turns those, and every HEC
answer, into one :data:`~forwarder.types.Outcome` (:func:`~forwarder.outputs.splunk_hec.status.classify`).

Indexer acknowledgement (notes §7): with ``ack = true`` every event and ack POST carries
``X-Splunk-Request-Channel`` with one GUID for the output's life. A reply ``{"code":0,"ackId":N}``
only means "received"; ``send`` then polls ``/services/collector/ack`` on the same channel, at
growing intervals up to ``ack_poll_interval``, and answers Delivered once Splunk says ``true``,
or Retry after ``ack_timeout`` (the batch is sent again: at-least-once, with the same record ids,
so ``dedup event.id`` removes the copy if Splunk had it after all). Polling happens inside the one
``send`` call — the shipper waits for each batch anyway — and is bounded by ``ack_timeout``.
Without ack, code 0 means only that HEC received the batch, not that it was indexed.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
import uuid
from collections.abc import Sequence

import httpx

from forwarder import __version__, telemetry
from forwarder.errors import ConnectFailed, OutputError, ProtocolViolation, SendTimeout
from forwarder.outputs.splunk_hec.config import ACK_PATH, EVENT_PATH, HecSettings
from forwarder.outputs.splunk_hec.encode import HecEncoder, gzip
from forwarder.outputs.splunk_hec.status import HecReply, classify
from forwarder.outputs.tls import client_context
from forwarder.types import Delivered, Message, Outcome, Pause, Record, Reject, Retry, Split

MAX_REPLY_BYTES = 64 * 1024  # HEC replies are tiny; a proxy's error page is cut here
FIRST_ACK_POLL = 1.0  # then doubling up to ack_poll_interval: most batches are indexed within seconds
# Compressing a body this large takes milliseconds: do it off the event loop, which also serves webhooks.
THREAD_COMPRESS_BYTES = 256 * 1024


class HecOutput:
    def __init__(self, name: str, settings: HecSettings, *, transport: httpx.AsyncBaseTransport | None = None) -> None:
        self.name = name
        self.settings = settings
        self.key = f"outputs.{name}"
        self.encoder = HecEncoder(settings)
        # One GUID for the sender's life (C-15): Splunk counts ack ids per channel.
        self.channel = settings.channel or str(uuid.uuid4())
        self.log = logging.getLogger(f"forwarder.shipper.{name}")
        self._ack_warned = False
        headers = {
            "Authorization": f"Splunk {settings.token.reveal()}",
            "Content-Type": "application/json",
            "User-Agent": f"snyk-forwarder/{__version__}",
        }
        if settings.ack:
            headers["X-Splunk-Request-Channel"] = self.channel
        verify: ssl.SSLContext | bool = True
        if settings.tls:
            verify = client_context(
                ca_file=settings.tls_ca_file,
                verify=settings.tls_verify,
                client_cert=settings.tls_client_cert,
                client_key=settings.tls_client_key,
                key=self.key,
            )
        self._client = httpx.AsyncClient(
            base_url=settings.url,
            headers=headers,
            verify=verify,
            timeout=httpx.Timeout(settings.request_timeout),
            limits=httpx.Limits(max_connections=4, max_keepalive_connections=2),
            follow_redirects=False,
            # Proxies and CA bundles come from this output's settings, not from the environment.
            trust_env=False,
            transport=transport,
        )

    def message_budget(self, record: Record) -> int:
        return self.encoder.budget(record)

    async def send(self, batch: Sequence[Message]) -> Outcome:
        if not batch:  # never an empty POST (C-14: Splunk answers "No data", code 5)
            return Delivered()
        blank = tuple(i for i, m in enumerate(batch) if self.encoder.blank(m))
        if blank:
            return Reject(
                "the record renders to an empty event, which Splunk refuses (code 13); it is kept in the "
                "dead-letter store: please report it as a bug",
                indices=blank,
            )
        body = self.encoder.body(batch)
        limit = self.settings.max_request_bytes
        if len(body) > limit and len(batch) > 1:
            # Not sent: the shipper halves the batch. A single record over the limit is still sent once,
            # since the limit is ours; if HEC answers 413 it is dead-lettered ("exceeds max request size").
            return Split(f"exceeds max request size: {len(body)} bytes over {self.key}.max_request_bytes ({limit})")
        content, headers = await self._compress(body)
        try:
            reply = await self._exchange("POST", EVENT_PATH, content=content, headers=headers)
        except OutputError as exc:
            return _unreachable(exc, self.key)
        outcome = classify(reply, batch_size=len(batch), key=self.key)
        if not self.settings.ack or not isinstance(outcome, Delivered):
            return outcome
        if reply.ack_id is None:
            self._ack_unavailable("Splunk accepted the batch without an ackId")
            return outcome
        return await self._acknowledged(reply.ack_id)

    async def healthcheck(self) -> None:
        """``GET /services/collector/health`` with the token (so a bad token shows, codes 21/22);
        with ack on, also one ack query on a throw-away channel (code 14 = useACK off)."""
        s = self.settings
        where = f"{s.url}{s.health_check_path}"
        reply = await self._exchange("GET", s.health_check_path)
        what = reply.describe()
        if reply.status == 200:
            pass
        elif reply.code in (21, 22) or reply.status in (401, 403):
            raise OutputError(
                f"Splunk HEC at {where} refused the token: {what}; set {self.key}.token to an enabled HEC token"
            )
        elif reply.status == 503:
            raise OutputError(
                f"Splunk HEC at {where} is unhealthy: {what}; its queues are full or its ack service is down. "
                "Records stay buffered until it recovers; check the indexers' health in Splunk"
            )
        elif reply.status == 404:
            raise OutputError(
                f"no HEC health endpoint at {where}: {what}; check {self.key}.endpoint (the base URL of HEC, "
                f"port 8088 by default), that HEC is enabled, and {self.key}.health_check_path"
            )
        else:
            raise OutputError(f"Splunk HEC health check at {where} answered {what}")
        if s.ack:
            await self._ack_probe()

    async def aclose(self) -> None:
        await self._client.aclose()

    # --- acknowledgement -----------------------------------------------------------------------------

    async def _acknowledged(self, ack_id: int) -> Outcome:
        loop = asyncio.get_running_loop()
        s = self.settings
        deadline = loop.time() + s.ack_timeout
        query = b'{"acks":[%d]}' % ack_id
        delay = min(FIRST_ACK_POLL, s.ack_poll_interval)
        last = "not yet acknowledged"
        while (remaining := deadline - loop.time()) > 0:
            await asyncio.sleep(min(delay, remaining))
            delay = min(delay * 2, s.ack_poll_interval)
            try:
                reply = await self._exchange("POST", ACK_PATH, content=query)
            except OutputError as exc:
                last = str(exc)
                continue
            if reply.status == 200 and reply.acks is not None:
                if reply.acks.get(str(ack_id)) is True:
                    return Delivered()
                last = "Splunk still reports the ack as false (pending, or lost in an indexer restart)"
                continue
            if reply.code == 14:
                self._ack_unavailable("Splunk answered the ack query with code 14 (ACK is disabled)")
                return Delivered()
            outcome = classify(reply, batch_size=1, key=self.key)
            if isinstance(outcome, Pause):
                return outcome
            last = reply.describe()
        return Retry(
            f"no indexer acknowledgement for ackId {ack_id} on channel {self.channel} within "
            f"{s.ack_timeout:g} s (last: {last}); sending the batch again. Splunk may already hold it: "
            "the copy has the same event.id (search with `dedup event.id`)"
        )

    async def _ack_probe(self) -> None:
        probe = {"X-Splunk-Request-Channel": str(uuid.uuid4())}  # never consume a real ack
        reply = await self._exchange("POST", ACK_PATH, content=b'{"acks":[0]}', headers=probe)
        if reply.status == 200:
            return
        if reply.code == 14:
            raise OutputError(
                f"{self.key}.ack is true but the HEC token has indexer acknowledgement off ({reply.describe()}); "
                "turn on useACK for the token, or set ack = false (Splunk Cloud supports acks only for Firehose)"
            )
        raise OutputError(f"Splunk HEC refused an acknowledgement query: {reply.describe()}")

    def _ack_unavailable(self, what: str) -> None:
        if not self._ack_warned:
            self._ack_warned = True
            telemetry.hec_ack_unavailable(self.log, self.name, what)

    # --- HTTP ----------------------------------------------------------------------------------------

    async def _compress(self, body: bytes) -> tuple[bytes, dict[str, str]]:
        s = self.settings
        if s.compression != "gzip":
            return body, {}
        if len(body) >= THREAD_COMPRESS_BYTES:
            content = await asyncio.to_thread(gzip, body, s.compression_level)
        else:
            content = gzip(body, s.compression_level)
        return content, {"Content-Encoding": "gzip"}

    async def _exchange(
        self, method: str, path: str, *, content: bytes = b"", headers: dict[str, str] | None = None
    ) -> HecReply:
        """One request and its (size-limited) reply. httpx exceptions are mapped here, and only here."""
        s = self.settings
        url = f"{s.url}{path}"
        try:
            async with (
                asyncio.timeout(s.request_timeout),
                self._client.stream(method, path, content=content, headers=headers) as response,
            ):
                body = bytearray()
                async for chunk in response.aiter_bytes():
                    body += chunk
                    if len(body) > MAX_REPLY_BYTES:
                        break
                return HecReply.parse(response.status_code, bytes(body), response.headers.get("Retry-After"))
        except (TimeoutError, httpx.TimeoutException) as exc:
            raise SendTimeout(
                f"no answer from Splunk HEC at {url} within {s.request_timeout:g} s (raise "
                f"{self.key}.request_timeout if Splunk is just slow)"
            ) from exc
        except httpx.ConnectError as exc:
            if (problem := _certificate_problem(exc)) is not None:
                raise ConnectFailed(
                    f"TLS certificate of {url} is not trusted ({problem}); fix: set {self.key}.tls_ca_file to "
                    "the CA that signed HEC's certificate (Splunk's default one is self-signed), or give HEC a "
                    "trusted certificate for this host name"
                ) from exc
            raise ConnectFailed(f"cannot connect to Splunk HEC at {url}: {_reason(exc)}") from exc
        except (httpx.RemoteProtocolError, httpx.DecodingError) as exc:
            raise ProtocolViolation(f"Splunk HEC at {url} broke HTTP: {_reason(exc)}") from exc
        except httpx.HTTPError as exc:  # ReadError, WriteError, CloseError, ProxyError, …
            raise ConnectFailed(f"connection to Splunk HEC at {url} failed: {_reason(exc)}") from exc


def _unreachable(exc: OutputError, key: str) -> Outcome:
    """A transport failure: retry, except an untrusted certificate, which no retry can fix."""
    if _certificate_problem(exc) is not None:
        return Pause(str(exc))
    return Retry(f"{exc}; retrying with backoff (check {key}.endpoint, the port and firewalls if it persists)")


def _certificate_problem(exc: BaseException) -> str | None:
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, ssl.SSLCertVerificationError):
            return getattr(current, "verify_message", None) or str(current)
        current = current.__cause__ or current.__context__
    return None


def _reason(exc: BaseException) -> str:
    return str(exc) or exc.__class__.__name__
