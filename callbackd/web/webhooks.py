"""Webhooks: every session event of an account POSTed, signed, to the account's URL.

:class:`WebhookSender` subscribes to the engine's session events; for each event of a
session whose account has a webhook (``IStore.set_webhook``) it queues a delivery in the
store (``IStore.enqueue_webhook``, idempotent by ``<session id>-<seq>``), and drains the
queue as :class:`callbackd.queue.QueueSender` drains any: claimed with a lease, retried
with a capped, doubling back-off, dead-lettered after ``max_attempts``. A delivery is a
``POST`` with treq of the JSON body::

    {"id": "<session id>-<seq>", "type": "<event kind>", "created_at": <epoch s>,
     "data": {<the SessionEvent: session_id, seq, leg, role, state, cause, cost, ...>}}

with the headers ``Content-Type: application/json``, ``X-Callbackd-Delivery: <id>``
and ``X-Callbackd-Signature: t=<unix time>,v1=<hex>``, where ``<hex>`` is
HMAC-SHA256, keyed with the webhook's secret, of ``"<unix time>." + body`` (the exact
bytes of the body). A receiver recomputes it (:func:`verify_signature`), compares in
constant time and refuses a time too far from its own clock, so a captured request
cannot be replayed later. A 2xx answer is a delivery; 410 Gone gives up at once;
anything else (another status, a timeout, a refused connection) is retried. Deliveries
may arrive out of order and, rarely, twice: ``data.seq`` orders a session's events and
``id`` tells a repeat.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import time
from collections.abc import Callable
from typing import Any

from twisted.internet import defer
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure

from callbackd.core.model import Webhook, WebhookDelivery
from callbackd.core.session import SessionEvent
from callbackd.queue import PermanentError, QueueMethods, QueueSender

__all__ = [
    "DELIVERY_HEADER",
    "SIGNATURE_HEADER",
    "WebhookSender",
    "parse_signature",
    "sign",
    "verify_signature",
    "webhook_body",
]

log = Logger(namespace="callbackd.web.webhooks")

SIGNATURE_HEADER = "X-Callbackd-Signature"
DELIVERY_HEADER = "X-Callbackd-Delivery"
#: seconds a receiver accepts between the signature's time and its own clock
DEFAULT_TOLERANCE = 300
#: seconds an account's webhook (or its absence) is remembered between store reads
_HOOK_CACHE = 5.0


def sign(secret: str, timestamp: int, body: bytes) -> str:
    """The ``X-Callbackd-Signature`` value of ``body`` sent at ``timestamp``."""
    mac = hmac.new(secret.encode("utf-8"), b"%d." % timestamp + body, hashlib.sha256)
    return f"t={timestamp},v1={mac.hexdigest()}"


def parse_signature(header: str) -> tuple[int, list[str]] | None:
    """``(timestamp, [v1 signatures])`` of a signature header; None when malformed."""
    timestamp = None
    signatures = []
    for part in header.split(","):
        name, sep, value = part.strip().partition("=")
        if not sep:
            return None
        if name == "t":
            if not (value.isascii() and value.isdigit()) or len(value) > 12:
                return None
            timestamp = int(value)
        elif name == "v1":
            signatures.append(value)
    if timestamp is None or not signatures:
        return None
    return timestamp, signatures


def verify_signature(
    secret: str,
    header: str,
    body: bytes,
    now: float | None = None,
    tolerance: float = DEFAULT_TOLERANCE,
) -> bool:
    """Whether ``header`` signs ``body`` with ``secret``, at a time within ``tolerance``."""
    parsed = parse_signature(header)
    if parsed is None:
        return False
    timestamp, signatures = parsed
    if abs((time.time() if now is None else now) - timestamp) > tolerance:
        return False
    expected = sign(secret, timestamp, body).partition(",v1=")[2]
    return any(hmac.compare_digest(expected, s) for s in signatures)


def webhook_body(event: SessionEvent) -> tuple[str, str]:
    """``(delivery id, JSON body)`` of one event."""
    delivery_id = f"{event.session_id}-{event.seq:06d}"
    body = {"id": delivery_id, "type": event.kind, "created_at": event.at, "data": event.to_dict()}
    return delivery_id, json.dumps(body, separators=(",", ":"))


class WebhookError(Exception):
    """The receiver did not take the delivery (worth retrying)."""


class WebhookSender(QueueSender):
    """Queues the session events of accounts with a webhook and POSTs them, signed.

    ``http`` is treq (or a ``treq.client.HTTPClient``); ``timeout`` bounds each POST.
    While running it is subscribed to ``engine``'s session events.
    """

    name = "webhooks"
    what = "webhook"
    methods = QueueMethods(
        "due_webhooks", "next_webhook_due", "webhook_sent", "webhook_retry", "webhook_failed"
    )

    def __init__(
        self,
        store: Any,
        engine: Any,
        clock: IReactorTime,
        http: Any,
        *,
        timeout: float = 10.0,
        backoff: Callable[[int], float] | None = None,
        max_attempts: int = 15,
        batch: int = 20,
    ) -> None:
        super().__init__(
            store,
            clock,
            batch=batch,
            lease=timeout + 30.0,
            backoff=backoff,
            max_attempts=max_attempts,
        )
        self.engine = engine
        self.http = http
        self.timeout = timeout
        self._unsubscribe: Callable[[], None] | None = None
        #: session id -> username, for the events after the engine forgot the session
        self._owners: dict[str, str] = {}
        #: username -> (until, Webhook or None)
        self._hooks: dict[str, tuple[float, Webhook | None]] = {}

    def startService(self) -> None:
        """Hear the engine's events; send what is due."""
        # once per event: the session owner's daemon sends it (several daemons)
        self._unsubscribe = self.engine.subscribe(self.publish, owned=True)
        super().startService()

    def stopService(self) -> defer.Deferred[None]:  # type: ignore[override]
        """Stop hearing events; fire once the deliveries in flight are recorded."""
        if self._unsubscribe is not None:
            self._unsubscribe()
            self._unsubscribe = None
        return super().stopService()

    def forget(self, username: str) -> None:
        """The account's webhook changed: read it again at its next event."""
        self._hooks.pop(username, None)

    # -- queueing -------------------------------------------------------------------------

    def publish(self, event: SessionEvent) -> None:
        """Queue the event for its account's webhook, if it has one."""
        session_id = event.session_id
        username = self._owners.get(session_id)
        if username is None:
            state = self.engine.state_of(session_id)
            if state is None:
                return
            username = self._owners[session_id] = state.username
        if event.kind == "session_ended":
            del self._owners[session_id]
        cached = self._hooks.get(username)
        if cached is not None and cached[1] is None and cached[0] > self.clock.seconds():
            return  # no webhook (the common case): nothing to queue
        d = defer.ensureDeferred(self._queue(username, event))
        d.addErrback(self._not_queued, event)

    async def _queue(self, username: str, event: SessionEvent) -> None:
        if await self._hook_of(username) is None:
            return
        delivery_id, body = webhook_body(event)
        if await self.store.enqueue_webhook(delivery_id, username, body, self.clock.seconds()):
            self.kick()

    async def _hook_of(self, username: str) -> Webhook | None:
        now = self.clock.seconds()
        cached = self._hooks.get(username)
        if cached is not None and cached[0] > now:
            return cached[1]
        hook: Webhook | None = await self.store.get_webhook(username)
        self._hooks[username] = (now + _HOOK_CACHE, hook)
        return hook

    def _not_queued(self, failure: Failure, event: SessionEvent) -> None:
        log.warn(
            "webhook of {session_id} #{seq} not queued: {error}",
            session_id=event.session_id,
            seq=event.seq,
            error=failure.getErrorMessage(),
        )

    # -- delivering -----------------------------------------------------------------------

    def describe(self, item: WebhookDelivery) -> str:
        return f"webhook {item.id} of {item.username}"

    async def deliver(self, item: WebhookDelivery) -> None:
        """POST the delivery, signed, to the account's URL now (read afresh)."""
        hook: Webhook | None = await self.store.get_webhook(item.username)
        if hook is None:
            raise PermanentError("the account has no webhook any more")
        body = item.body.encode("utf-8")
        headers = {
            b"Content-Type": [b"application/json"],
            b"User-Agent": [b"callbackd-webhooks"],
            DELIVERY_HEADER.encode(): [item.id.encode("ascii", "replace")],
            SIGNATURE_HEADER.encode(): [
                sign(hook.secret, int(self.clock.seconds()), body).encode()
            ],
        }
        try:
            response = await self.http.post(
                hook.url, data=body, headers=headers, timeout=self.timeout
            )
            await response.content()
        except defer.CancelledError:
            raise WebhookError("timed out") from None
        except Exception as e:
            raise WebhookError(type(e).__name__) from None
        if response.code == 410:
            raise PermanentError("HTTP 410 Gone")
        if not 200 <= response.code < 300:
            raise WebhookError(f"HTTP {response.code}")
