"""Durable SMS replies: the sender draining the store's outbound queue, and its gateways.

A reply is queued in the store first (:meth:`SmsSender.send`, idempotent by message
id), then handed to its gateway. :class:`SmsSender` never polls in a tight loop: it
wakes when this process queues a message (:meth:`SmsSender.kick`) and on one timer set
for the earliest ``not_before`` in the queue. Each wake claims the due messages in small
batches (``IStore.due_sms``: a lease, so two daemons never send the same one at once),
sends them, and confirms each (``sms_sent``) or puts it back for a retry with
:func:`callbackd.backoff.capped_backoff` (``sms_retry``); after ``max_attempts``
transient failures, or at the first permanent one, it goes to the dead letters
(``sms_failed``). On start it claims whatever is due, so a restarted daemon resends
what the last one never confirmed: a message is sent once unless the daemon dies
between the gateway's acceptance and the confirmation.

Gateways provide :class:`IOutboundGateway`: :class:`KannelSendSms` (Kannel's
``sendsms`` HTTP interface) and :class:`HttpPostGateway` (a JSON POST with a bearer
token). Both take a treq-like HTTP client (``get``/``post`` returning a response with
``code`` and ``content()``); treq verifies TLS certificates by default, with
service-identity. Passwords and tokens never reach the log: errors name the gateway and
the HTTP status only.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from typing import Any, Protocol
from urllib.parse import quote, urlencode

from twisted.application import service
from twisted.internet import defer
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger
from zope.interface import Interface, implementer

from callbackd.backoff import capped_backoff
from callbackd.config import Secret
from callbackd.core.model import OutboundSms
from callbackd.core.smstext import fit, kannel_coding

__all__ = [
    "HttpPostGateway",
    "IOutboundGateway",
    "KannelSendSms",
    "PermanentSmsError",
    "SmsGatewayError",
    "SmsSender",
    "TransientSmsError",
]

log = Logger()

#: HTTP statuses of a refusal that may pass (credentials being fixed, throttling)
_TRANSIENT_4XX = frozenset({401, 403, 408, 425, 429})


class SmsGatewayError(Exception):
    """The gateway did not take the SMS; the message is fit to log (no secrets)."""


class TransientSmsError(SmsGatewayError):
    """Worth retrying later: the gateway is down, busy or answered 5xx."""


class PermanentSmsError(SmsGatewayError):
    """Retrying will not help (a malformed number, a refused request)."""


class IOutboundGateway(Interface):
    """Something that sends an SMS."""

    def send(msg):
        """Send the OutboundSms; fire with None once the gateway took it.

        Errback TransientSmsError (try again later) or PermanentSmsError (never).
        """


class HttpClient(Protocol):
    """What the gateways need of treq (the module, or a ``treq.client.HTTPClient``)."""

    def get(self, url: str, **kwargs: Any) -> defer.Deferred[Any]: ...

    def post(self, url: str, **kwargs: Any) -> defer.Deferred[Any]: ...


async def _answer(name: str, request: defer.Deferred[Any]) -> None:
    """Await an HTTP request; raise the gateway error its failure or status means."""
    try:
        response = await request
        await response.content()
    except defer.CancelledError as e:
        raise TransientSmsError(f"{name}: timed out") from e
    except Exception as e:
        raise TransientSmsError(f"{name}: {type(e).__name__}") from e
    code = response.code
    if 200 <= code < 300:
        return
    if code >= 500 or code in _TRANSIENT_4XX:
        raise TransientSmsError(f"{name}: HTTP {code}")
    raise PermanentSmsError(f"{name}: HTTP {code}")


@implementer(IOutboundGateway)
class KannelSendSms:
    """Kannel smsbox's ``sendsms`` HTTP interface (``GET /cgi-bin/sendsms``).

    ``base_url`` is the smsbox's ``http://host:sendsms-port``; ``username`` and
    ``password`` those of a ``sendsms-user`` group. ``coding`` and ``charset`` come from
    :func:`~callbackd.core.smstext.kannel_coding`, so a text outside the GSM alphabet
    goes out as UCS-2 instead of question marks. A long text goes in one request and
    Kannel splits it into a concatenated message of at most ``max_parts`` parts (set
    the sendsms-user's ``max-messages`` to the same number); it is first trimmed with
    :func:`~callbackd.core.smstext.fit` to what ``max_parts`` hold, so nothing is cut
    silently and a retry never resends half of it. ``sender`` fills ``from`` when set;
    ``dlr_mask``/``dlr_url`` ask for delivery reports.
    """

    def __init__(
        self,
        base_url: str,
        username: str,
        password: Secret,
        http: HttpClient,
        *,
        sender: str = "",
        max_parts: int = 3,
        dlr_mask: int = 0,
        dlr_url: str = "",
        timeout: float = 10.0,
        name: str = "kannel",
    ) -> None:
        self.url = base_url.rstrip("/") + "/cgi-bin/sendsms"
        self.username = username
        self._password = password
        self.http = http
        self.sender = sender
        self.max_parts = max_parts
        self.dlr_mask = dlr_mask
        self.dlr_url = dlr_url
        self.timeout = timeout
        self.name = name

    def query(self, msg: OutboundSms) -> dict[str, str]:
        """The sendsms request's fields for ``msg`` (the password among them)."""
        text = "".join(fit(msg.text, self.max_parts))
        coding, charset = kannel_coding(text)
        fields = {
            "username": self.username,
            "password": self._password.reveal(),
            "to": msg.to,
            "text": text,
            "coding": str(coding),
            "charset": charset,
        }
        if self.sender:
            fields["from"] = self.sender
        if self.dlr_mask:
            fields["dlr-mask"] = str(self.dlr_mask)
            fields["dlr-url"] = self.dlr_url
        return fields

    def send(self, msg: OutboundSms) -> defer.Deferred[None]:
        """GET sendsms with the message; 2xx (202 "Accepted"/"Queued") is success."""
        url = self.url + "?" + urlencode(self.query(msg), quote_via=quote)
        return defer.ensureDeferred(_answer(self.name, self.http.get(url, timeout=self.timeout)))


@implementer(IOutboundGateway)
class HttpPostGateway:
    """A generic HTTP gateway: ``POST url`` with JSON ``{"id", "to", "text"}``.

    The request carries ``Authorization: Bearer <token>``; a 2xx answer is success.
    The message id lets the receiving gateway drop a resend it already took.
    """

    def __init__(
        self,
        url: str,
        token: Secret,
        http: HttpClient,
        *,
        timeout: float = 10.0,
        name: str = "http",
    ) -> None:
        self.url = url
        self._token = token
        self.http = http
        self.timeout = timeout
        self.name = name

    def send(self, msg: OutboundSms) -> defer.Deferred[None]:
        """POST the message as JSON with the bearer token."""
        body = json.dumps({"id": msg.id, "to": msg.to, "text": msg.text}).encode()
        headers = {
            b"Content-Type": [b"application/json"],
            b"Authorization": [b"Bearer " + self._token.reveal().encode()],
        }
        request = self.http.post(self.url, data=body, headers=headers, timeout=self.timeout)
        return defer.ensureDeferred(_answer(self.name, request))


class SmsSender(service.Service):
    """Sends the store's queued SMS through their gateways, retrying with back-off.

    ``gateways`` maps a gateway name (``OutboundSms.gateway``) to an
    :class:`IOutboundGateway`; a message for an unknown one is dead-lettered.
    ``batch`` messages are claimed at a time for ``lease`` seconds (longer than a
    gateway's timeout); after a failure the next try is ``backoff(attempts)`` seconds
    later; ``max_attempts`` failures make a dead letter. When the store is down it
    tries again ``store_retry`` seconds later.
    """

    name = "sms-sender"

    def __init__(
        self,
        store: Any,
        gateways: Mapping[str, Any],
        clock: IReactorTime,
        *,
        batch: int = 20,
        lease: float = 60.0,
        backoff: Callable[[int], float] | None = None,
        max_attempts: int = 20,
        store_retry: float = 5.0,
    ) -> None:
        self.store = store
        self.gateways = dict(gateways)
        self.clock = clock
        self.batch = batch
        self.lease = lease
        self.backoff = backoff or capped_backoff(5.0, 600.0)
        self.max_attempts = max_attempts
        self.store_retry = store_retry
        self._timer: IDelayedCall | None = None
        self._draining: defer.Deferred[None] | None = None
        self._again = False

    def startService(self) -> None:
        """Claim and send whatever is due (what a previous run left unconfirmed)."""
        super().startService()
        self.kick()

    def stopService(self) -> defer.Deferred[None]:  # type: ignore[override]
        """Stop the timer; fire once the batch in flight is sent and recorded."""
        super().stopService()
        self._cancel_timer()
        return defer.Deferred.fromCoroutine(self._await_drain())

    async def _await_drain(self) -> None:
        while self._draining is not None:
            await self._draining

    def send(self, message_id: str, to: str, text: str, gateway: str) -> defer.Deferred[bool]:
        """Queue an SMS to send now and wake the sender; fire with False for a known id."""
        d = self.store.enqueue_sms(message_id, to, text, gateway, self.clock.seconds())
        return d.addCallback(self._kicked)

    def _kicked(self, queued: bool) -> bool:
        self.kick()
        return queued

    def kick(self) -> None:
        """Look at the queue now (something was queued); a drain in progress looks again."""
        if not self.running:
            return
        if self._draining is not None:
            self._again = True
            return
        self._cancel_timer()
        self._draining = defer.Deferred.fromCoroutine(self._drain())
        self._draining.addBoth(self._drained)

    def _drained(self, result: object) -> None:
        self._draining = None
        if self._again:
            self._again = False
            self.kick()

    def _cancel_timer(self) -> None:
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = None

    def _arm(self, delay: float) -> None:
        self._cancel_timer()
        if self.running:
            self._timer = self.clock.callLater(max(0.0, delay), self.kick)

    async def _drain(self) -> None:
        try:
            while self.running:
                due = await self.store.due_sms(self.clock.seconds(), self.batch, self.lease)
                sends = [defer.ensureDeferred(self._send(m)) for m in due]
                await defer.gatherResults(sends, consumeErrors=True)
                if len(due) < self.batch:
                    break
            next_due = await self.store.next_sms_due()
        except Exception as e:
            log.warn("outbound SMS queue unavailable: {error}", error=str(e))
            self._arm(self.store_retry)
            return
        if next_due is not None and not self._again:
            self._arm(next_due - self.clock.seconds())

    async def _send(self, msg: OutboundSms) -> None:
        gateway = self.gateways.get(msg.gateway)
        if gateway is None:
            await self._give_up(msg, f"no outbound gateway {msg.gateway!r}")
            return
        try:
            await gateway.send(msg)
        except PermanentSmsError as e:
            await self._give_up(msg, str(e))
            return
        except Exception as e:
            await self._retry(msg, str(e) or type(e).__name__)
            return
        await self.store.sms_sent(msg.id)
        log.debug("sms {id} sent to {to} via {gateway}", id=msg.id, to=msg.to, gateway=msg.gateway)

    async def _retry(self, msg: OutboundSms, error: str) -> None:
        attempts = msg.attempts + 1
        if attempts >= self.max_attempts:
            await self._give_up(msg, f"{attempts} attempts, the last: {error}")
            return
        not_before = self.clock.seconds() + self.backoff(attempts)
        log.info(
            "sms {id} not sent ({error}); attempt {n} at {at:.0f}",
            id=msg.id,
            error=error,
            n=attempts + 1,
            at=not_before,
        )
        await self.store.sms_retry(msg.id, not_before, attempts, error)

    async def _give_up(self, msg: OutboundSms, error: str) -> None:
        log.warn("sms {id} to {to} given up: {error}", id=msg.id, to=msg.to, error=error)
        await self.store.sms_failed(msg.id, error)
