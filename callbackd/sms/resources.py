"""The SMS gateways' webhooks: ``/sms/NAME`` on the daemon's web port, one per gateway.

Each request goes through, in order (the first that fails answers):

1. the method: ``GET`` for ``format = kannel`` (smsbox's get-url), ``POST`` for the
   others (405 otherwise);
2. the source address against ``allow`` (403), the shared ``token`` from
   ``token_header``, ``Authorization: Bearer`` or the ``token_field`` query field, and
   the HMAC-SHA256 ``signature_secret`` of the body (401);
3. parsing by the gateway's format (:mod:`callbackd.sms.inbound`; 400, 413 for a body
   over :data:`MAX_REQUEST`), the reason in the body as plain text;
4. the gateway's rate limit, ``[sms] gateway_limit`` per ``gateway_period``, counted in
   this process (it protects this process's CPU; each daemon has its own): 503 with
   ``Retry-After``, which a gateway retries, so nothing is lost;
5. recording (:meth:`IStore.record_inbound_sms`) under the message's dedupe keys: the
   gateway's message id, else the sender and text within ``[sms] dedupe_window`` (this
   window's bucket and, for a retry that straddles a bucket's edge, the previous one);
   the store down: 503;
6. the answer, 200, the same for a new message and a retry of one: an empty body for
   Kannel (smsbox sends the answer's body back to the phone as an SMS unless the
   service has ``max-messages = 0``; replies go through ``sendsms``, durably),
   ``accepted`` for a form, ``{"accepted": true}`` for JSON. A new message is handled
   once the answer is written (:meth:`SmsFront.handle
   <callbackd.sms.front.SmsFront.handle>`), in the same reactor turn: the gateway never
   waits for the engine.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from typing import Any, Final

from twisted.internet import defer
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger
from twisted.web import pages, resource, server

from callbackd.config import SmsConfig, SmsGatewayConfig
from callbackd.fronts.throttle import Throttle
from callbackd.i18n import translator
from callbackd.sms.auth import AddressAllowList, AuthError, check_signature, check_token
from callbackd.sms.inbound import (
    MAX_BODY,
    FieldNames,
    InboundError,
    InboundSms,
    dedupe_key,
    parse_form,
    parse_forwarder,
    parse_json,
    parse_kannel,
    parse_kannel_post,
    text_keys,
)
from callbackd.store.interface import StoreError

__all__ = ["MAX_REQUEST", "GatewayResource", "SmsRootResource", "record_of", "sms_of"]

log = Logger(namespace="callbackd.sms")

#: the largest request body read, in bytes (a form holds a text of MAX_BODY and more)
MAX_REQUEST: Final = 2 * MAX_BODY
_STATUS = {
    "bad_token": 401,
    "missing_signature": 401,
    "bad_signature": 401,
    "forbidden_address": 403,
}
_KANNEL = ("kannel", "kannel-post")
_JSON = ("json", "forwarder")


def record_of(sms: InboundSms) -> dict[str, Any]:
    """What the store keeps of an accepted message (JSON-able)."""
    return dataclasses.asdict(sms)


def sms_of(record: dict[str, Any]) -> InboundSms:
    """The message a :func:`record_of` record holds."""
    return InboundSms(**record)


class _Answer(Exception):
    """Ends a request with ``code`` and the English catalogue text ``msgid``."""

    def __init__(self, code: int, msgid: str, **params: str) -> None:
        super().__init__(msgid)
        self.code = code
        self.text = translator("en").text(msgid, **params)


class GatewayResource(resource.Resource):
    """The webhook of one ``[sms-gateway:NAME]``."""

    isLeaf = True

    def __init__(
        self,
        gateway: SmsGatewayConfig,
        config: SmsConfig,
        store: Any,
        clock: IReactorTime,
        accepted: Callable[[InboundSms, str, Any], object],
        prepare: Callable[[InboundSms], Any] = lambda sms: None,
    ) -> None:
        super().__init__()
        self.gateway = gateway
        self.config = config
        self.store = store
        self.clock = clock
        #: told each new message once it is answered: (message, dedupe key, prepared)
        self.accepted = accepted
        #: called with each message as it is recorded; what it returns goes to accepted
        self.prepare = prepare
        self.allow = AddressAllowList.parse(gateway.allowed) if gateway.allowed else None
        self.throttle = Throttle(clock, config.gateway_limit, config.gateway_period)
        self.fields = FieldNames(
            sender=gateway.field_from,
            recipient=gateway.field_to or None,
            text=gateway.field_text,
            message_id=gateway.field_id or None,
            received_at=gateway.field_timestamp or None,
        )
        self._token_header = gateway.token_header.encode("ascii")
        self._signature_header = gateway.signature_header.encode("ascii")
        self._token_field = gateway.token_field.encode("utf-8")
        self._method = b"GET" if gateway.format == "kannel" else b"POST"

    def render(self, request: server.Request) -> Any:
        _no_delay(request)
        # the query holds the token and the text (a password, a code): the access log,
        # which writes request.uri when the answer is finished, gets the path alone
        request.query_args = _query_args(request)  # type: ignore[attr-defined]
        request.uri = request.path
        if request.method != self._method:
            request.setHeader(b"allow", self._method)
            self._written(request, 405, f"use {self._method.decode()}\n")
            return server.NOT_DONE_YET
        d = defer.ensureDeferred(self._accept(request))
        d.addCallbacks(self._ok, self._refused, (request,), errbackArgs=(request,))
        return server.NOT_DONE_YET

    # -- the steps ----------------------------------------------------------------------

    async def _accept(self, request: server.Request) -> tuple[InboundSms, str, Any] | None:
        """The new message to handle, with its key and what ``prepare`` gave; None for a
        retry; raises _Answer for a refusal."""
        body = request.content.read(MAX_REQUEST + 1) if request.content is not None else b""
        self._authenticate(request, body)
        if len(body) > MAX_REQUEST:
            raise _Answer(413, "sms.inbound.too_long", field="body")
        sms = self._parse(request, body)
        if not self.throttle.hit(None):
            raise _Answer(503, "sms.http.busy")
        keys = self._keys(sms)
        recorded = self.store.record_inbound_sms(
            keys, record_of(sms), self.clock.seconds(), self.config.dedupe_window
        )
        prepared = self.prepare(sms)
        try:
            new = await recorded
        except StoreError as e:
            _discard(prepared)
            log.warn("SMS from {sender} not recorded: {error}", sender=sms.sender, error=str(e))
            raise _Answer(503, "sms.http.unavailable") from None
        if not new:
            _discard(prepared)
            return None
        return sms, keys[0], prepared

    def _authenticate(self, request: server.Request, body: bytes) -> None:
        try:
            if self.allow is not None:
                self.allow.check(getattr(request.getClientAddress(), "host", ""))
            if self.gateway.token:
                check_token(self._token(request), self.gateway.token.reveal())
            if self.gateway.signature_secret:
                secret = self.gateway.signature_secret.reveal().encode("utf-8")
                check_signature(body, request.getHeader(self._signature_header), secret)
        except AuthError as e:
            raise _Answer(_STATUS[e.code], f"sms.auth.{e.code}") from None

    def _token(self, request: server.Request) -> bytes | None:
        given = request.getHeader(self._token_header)
        if given is not None and self._token_header.lower() == b"authorization":
            given = given.removeprefix(b"Bearer ").strip()
        if given is None:
            bearer = request.getHeader(b"authorization") or b""
            if bearer.startswith(b"Bearer "):
                given = bearer[7:].strip()
        if given is None:
            values = (request.args or {}).get(self._token_field)
            given = values[0] if values else None
        return given

    def _parse(self, request: server.Request, body: bytes) -> InboundSms:
        name, fmt = self.gateway.name, self.gateway.format
        try:
            if fmt == "kannel":
                return parse_kannel(text_keys(request.args or {}), gateway=name)
            if fmt == "kannel-post":
                query = text_keys(request.query_args)  # type: ignore[attr-defined]
                headers = {
                    name.decode("latin-1"): values[0]
                    for name, values in request.requestHeaders.getAllRawHeaders()
                    if values
                }
                return parse_kannel_post(query, body, headers, gateway=name)
            if fmt == "form":
                return parse_form(text_keys(request.args or {}), self.fields, gateway=name)
            if fmt == "json":
                return parse_json(body, self.fields, gateway=name)
            return parse_forwarder(body, recipient=self.gateway.recipient, gateway=name)
        except InboundError as e:
            raise _Answer(400, f"sms.inbound.{e.code}", **e.params) from None

    def _keys(self, sms: InboundSms) -> list[str]:
        """The message's dedupe key and, for a text-based one, the previous bucket's."""
        window = self.config.dedupe_window
        if sms.message_id is not None:
            return [dedupe_key(sms, window)]
        stamped = dataclasses.replace(sms, received_at=sms.received_at or self.clock.seconds())
        before = dataclasses.replace(stamped, received_at=stamped.received_at - window)  # type: ignore[operator]
        return [dedupe_key(stamped, window), dedupe_key(before, window)]

    # -- answers ------------------------------------------------------------------------

    def _ok(self, new: tuple[InboundSms, str, Any] | None, request: server.Request) -> None:
        self._answer_ok(request)
        if new is not None:
            # the answer is written: the handling does not hold the gateway up
            self.accepted(*new)

    def _answer_ok(self, request: server.Request) -> None:
        fmt = self.gateway.format
        if fmt in _KANNEL:
            self._written(request, 200, "")
        elif fmt in _JSON:
            request.setHeader(b"content-type", b"application/json")
            self._finish(request, 200, b'{"accepted": true}\n')
        else:
            self._written(request, 200, "accepted\n")

    def _refused(self, failure: Any, request: server.Request) -> None:
        error = failure.value
        if isinstance(error, _Answer):
            if error.code == 503:
                request.setHeader(b"retry-after", str(math.ceil(self.config.gateway_period)))
            self._written(request, error.code, error.text + "\n")
            return
        log.failure("SMS webhook {name} failed", failure, name=self.gateway.name)
        self._written(request, 500, "internal error\n")

    def _written(self, request: server.Request, code: int, text: str) -> None:
        request.setHeader(b"content-type", b"text/plain; charset=utf-8")
        self._finish(request, code, text.encode("utf-8"))

    def _finish(self, request: server.Request, code: int, body: bytes) -> None:
        if request.finished or getattr(request, "_disconnected", False):
            return
        request.setResponseCode(code)
        request.setHeader(b"content-length", str(len(body)).encode())
        request.write(body)
        request.finish()


def _discard(prepared: Any) -> None:
    """What ``prepare`` started for a message that will not be handled, dropped."""
    discard = getattr(prepared, "discard", None)
    if discard is not None:
        discard()


def _no_delay(request: server.Request) -> None:
    """Answer without Nagle's delay: the answer's head and body are separate writes, and
    a gateway waiting for the second behind a delayed ACK waits 40 ms."""
    channel = request.channel
    if channel is not None and not getattr(channel, "_callbackd_no_delay", False):
        transport = getattr(channel, "transport", None)
        if transport is not None and hasattr(transport, "setTcpNoDelay"):
            transport.setTcpNoDelay(True)
        channel._callbackd_no_delay = True  # type: ignore[attr-defined]


def _query_args(request: server.Request) -> dict[bytes, list[bytes]]:
    """The fields of the URL's query alone (a post-url body is text, not a form)."""
    from urllib.parse import parse_qs

    _, _, query = request.uri.partition(b"?")
    return parse_qs(query, keep_blank_values=True)


class SmsRootResource(resource.Resource):
    """``/sms``: a child per gateway; nothing of its own."""

    def getChild(self, path: bytes, request: server.Request) -> resource.IResource:
        return pages.notFound("No such SMS gateway", "No gateway is configured at this path.")
