"""The SMS front assembled from config: webhooks, the front, the outbound sender.

:class:`SmsService` is the service tree's ``sms`` child. It holds

* :attr:`~SmsService.resource`, served at ``/sms`` on the ``[web]`` port, with a
  :class:`~callbackd.sms.resources.GatewayResource` at ``/sms/NAME`` per
  ``[sms-gateway:NAME]``;
* :attr:`~SmsService.front`, the :class:`~callbackd.sms.front.SmsFront` handling each
  accepted message;
* its child ``sms-sender``, the :class:`~callbackd.sms.outbound.SmsSender` draining the
  store's outbound queue through the gateways that send (``send = kannel`` or
  ``http-post``); the queue's gateway ``""`` is ``[sms] default_gateway`` (or the only
  gateway that sends), so any part of the daemon can queue an SMS without knowing the
  gateways.

What is recorded when: a message is recorded in the store
(:meth:`IStore.record_inbound_sms`) before the gateway's request is answered, handled
after, and its record forgotten once handled (:meth:`IStore.inbound_sms_handled`).
At start the service handles what a previous run accepted and did not finish
(:meth:`IStore.pending_inbound_sms`), if younger than ``[sms] recover_max_age``; older
ones are logged and dropped (a callback an hour late would surprise its sender). The
replies' message ids derive from the inbound message's key, so one handled twice is
still answered once.
"""

from __future__ import annotations

from typing import Any, Final

from twisted.application import service
from twisted.internet import defer
from twisted.internet.interfaces import IDelayedCall
from twisted.logger import Logger
from zope.interface import implementer

from callbackd.config import Config, SmsGatewayConfig
from callbackd.core.model import OutboundSms
from callbackd.sms.front import SmsFront
from callbackd.sms.outbound import HttpPostGateway, IOutboundGateway, KannelSendSms, SmsSender
from callbackd.sms.resources import GatewayResource, SmsRootResource, sms_of
from callbackd.store.interface import StoreError

__all__ = ["RECOVER_DELAY", "LogGateway", "SmsService", "outbound_gateways"]

log = Logger(namespace="callbackd.sms")

#: seconds after start before the pending messages are handled (the engine recovers first)
RECOVER_DELAY: Final = 2.0
#: seconds between tries while the store is not reachable at start
RECOVER_RETRY: Final = 5.0


def outbound_gateways(config: Config, http: Any) -> dict[str, Any]:
    """The gateways that send, by name, and ``""`` for the default one."""
    gateways: dict[str, Any] = {}
    for g in config.sms_gateways:
        if g.send != "none":
            gateways[g.name] = _outbound(g, config.sms.max_segments, http)
    default = config.sms.default_gateway or (next(iter(gateways)) if len(gateways) == 1 else "")
    if default in gateways:
        gateways[""] = gateways[default]
    return gateways


@implementer(IOutboundGateway)
class LogGateway:
    """``send = log``: each SMS is written to the daemon's log instead of sent (demos)."""

    def __init__(self, name: str) -> None:
        self.name = name

    def send(self, msg: OutboundSms) -> defer.Deferred[None]:
        log.info(
            "SMS to {to} via [sms-gateway:{name}] (send = log, not sent): {text}",
            to=msg.to,
            name=self.name,
            text=msg.text,
        )
        return defer.succeed(None)


def _outbound(g: SmsGatewayConfig, max_parts: int, http: Any) -> Any:
    if g.send == "log":
        return LogGateway(g.name)
    if g.send == "kannel":
        return KannelSendSms(
            g.sendsms_url,
            g.sendsms_username,
            g.sendsms_password,
            http,
            sender=g.sendsms_from,
            max_parts=max_parts,
            timeout=g.timeout,
            name=g.name,
        )
    return HttpPostGateway(g.post_url, g.post_token, http, timeout=g.timeout, name=g.name)


#: connections kept open per sending gateway: one per message of a sender's batch
SEND_CONNECTIONS: Final = 20


def _http_client(reactor: Any) -> tuple[Any, Any]:
    """treq's client on a connection pool of our own, and the pool.

    treq's shared pool keeps two connections per host: a batch of twenty SMS opened
    eighteen new ones and closed them again (with two log lines each), at every batch.
    This pool keeps :data:`SEND_CONNECTIONS`, and its connections' factory logs nothing.
    TLS is verified as treq's default agent verifies it (``Agent``'s browser-like
    policy).
    """
    from treq.client import HTTPClient
    from twisted.web import client

    class QuietFactory(client._HTTP11ClientFactory):  # type: ignore[misc]
        noisy = False

    pool = client.HTTPConnectionPool(reactor, persistent=True)
    pool.maxPersistentPerHost = SEND_CONNECTIONS
    pool._factory = QuietFactory
    return HTTPClient(client.Agent(reactor, pool=pool)), pool


class SmsService(service.MultiService):
    """The ``sms`` child of the service tree (see the module's doc)."""

    def __init__(
        self, config: Config, store: Any, engine: Any, reactor: Any, http: Any = None
    ) -> None:
        super().__init__()
        #: the connections to the sending gateways, kept between messages (when ``http``
        #: is not given)
        self.pool: Any = None
        if http is None:
            http, self.pool = _http_client(reactor)
        self.config = config
        self.store = store
        self.reactor = reactor
        gateways = outbound_gateways(config, http)
        self.sender = SmsSender(store, gateways, reactor)
        self.sender.setName("sms-sender")
        self.sender.setServiceParent(self)
        self.front = SmsFront(
            engine,
            store,
            reactor,
            self.sender.send,
            config.sms,
            decimals=config.billing.decimals,
            currency=config.billing.currency,
            region=config.billing.default_region,
            sends=lambda name: bool(name) and name in gateways,
        )
        self.resource = SmsRootResource()
        self.gateways: dict[str, GatewayResource] = {}
        for g in config.sms_gateways:
            child = GatewayResource(
                g, config.sms, store, reactor, self.front.handle, self.front.prepare
            )
            self.gateways[g.name] = child
            self.resource.putChild(g.name.encode("utf-8"), child)
        self._recovery: IDelayedCall | None = None
        self.recovered: defer.Deferred[int] = defer.Deferred()

    def startService(self) -> None:
        super().startService()
        self.front.start()
        self._recovery = self.reactor.callLater(RECOVER_DELAY, self._recover)

    def stopService(self) -> defer.Deferred[None]:  # type: ignore[override]
        if self._recovery is not None and self._recovery.active():
            self._recovery.cancel()
        self.front.stop()
        d = defer.maybeDeferred(super().stopService)
        if self.pool is not None:
            pool = self.pool
            d.addCallback(lambda _: pool.closeCachedConnections())
        return d

    def health(self) -> tuple[bool, str]:
        """Up while running; names the webhooks."""
        paths = ", ".join(f"/sms/{name}" for name in self.gateways) or "no gateway"
        return bool(self.running), paths

    def _recover(self) -> None:
        self._recovery = None
        d = defer.ensureDeferred(self._handle_pending())
        d.addCallback(self._recovered)
        d.addErrback(self._not_yet)

    def _recovered(self, count: int) -> None:
        if not self.recovered.called:
            self.recovered.callback(count)

    def _not_yet(self, failure: Any) -> None:
        failure.trap(StoreError)
        log.warn("pending SMS not read yet: {error}", error=failure.getErrorMessage())
        if self.running:
            self._recovery = self.reactor.callLater(RECOVER_RETRY, self._recover)

    async def _handle_pending(self) -> int:
        """Handle the messages accepted and not handled; fire with how many were."""
        handled = 0
        now = self.reactor.seconds()
        for key, record, recorded_at in await self.store.pending_inbound_sms():
            if key in self.front.handling:
                continue
            if now - recorded_at > self.config.sms.recover_max_age:
                log.warn("SMS {key} accepted at {at:.0f} dropped: too old", key=key, at=recorded_at)
                await self.store.inbound_sms_handled(key)
                continue
            log.info("SMS {key} accepted by a previous run: handled now", key=key)
            await self.front.handle(sms_of(record), key)
            handled += 1
        return handled
