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
between the gateway's acceptance and the confirmation. The draining is
:class:`callbackd.queue.QueueSender`'s, which the webhooks' sender shares.

Gateways provide :class:`IOutboundGateway`: :class:`KannelSendSms` (Kannel's
``sendsms`` HTTP interface) and :class:`HttpPostGateway` (a JSON POST with a bearer
token). Both take a treq-like HTTP client (``get``/``post`` returning a response with
``code`` and ``content()``); treq verifies TLS certificates by default, with
service-identity. Passwords and tokens never reach the log: errors name the gateway and
the HTTP status only.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any, Protocol
from urllib.parse import quote, urlencode

from twisted.internet import defer
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger
from zope.interface import Interface, implementer

from callbackd.config import Secret
from callbackd.core.model import OutboundSms
from callbackd.core.smstext import fit, kannel_coding
from callbackd.queue import PermanentError, QueueMethods, QueueSender

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


class PermanentSmsError(SmsGatewayError, PermanentError):
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


class SmsSender(QueueSender):
    """Sends the store's queued SMS through their gateways, retrying with back-off.

    ``gateways`` maps a gateway name (``OutboundSms.gateway``) to an
    :class:`IOutboundGateway`; a message for an unknown one is dead-lettered. The
    claiming, retries and dead letters are :class:`~callbackd.queue.QueueSender`'s,
    on the store's SMS queue.
    """

    name = "sms-sender"
    what = "sms"
    methods = QueueMethods("due_sms", "next_sms_due", "sms_sent", "sms_retry", "sms_failed")

    def __init__(
        self, store: Any, gateways: Mapping[str, Any], clock: IReactorTime, **options: Any
    ) -> None:
        """``options``: :class:`~callbackd.queue.QueueSender`'s (batch, lease, backoff,
        max_attempts, store_retry)."""
        super().__init__(store, clock, **options)
        self.gateways = dict(gateways)

    def send(self, message_id: str, to: str, text: str, gateway: str) -> defer.Deferred[bool]:
        """Queue an SMS to send now and wake the sender; fire with False for a known id."""
        d = self.store.enqueue_sms(message_id, to, text, gateway, self.clock.seconds())
        return d.addCallback(self._kicked)

    def describe(self, item: Any) -> str:
        return f"sms {item.id} to {item.to} via {item.gateway}"

    async def deliver(self, item: Any) -> None:
        """Hand the SMS to its gateway."""
        gateway = self.gateways.get(item.gateway)
        if gateway is None:
            raise PermanentSmsError(f"no outbound gateway {item.gateway!r}")
        await gateway.send(item)
