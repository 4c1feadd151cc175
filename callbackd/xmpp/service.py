"""The chat front assembled: the component, its handlers and :class:`ChatFront`, from config.

Chat messages reach :meth:`ChatFront.handle <callbackd.xmpp.chat.ChatFront.handle>`
through the :class:`~callbackd.xmpp.handlers.MessageHandler`; the front's replies and
progress messages leave through :meth:`ChatService.say` as ``chat`` messages from the
service's domain, or are dropped while the component is not connected (a progress
message queued for minutes would arrive about a call long over). The links of JIDs to
accounts are read through a :class:`~callbackd.xmpp.links.LinkCache`, watching the
store's change feed while the service runs.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from prometheus_client import CollectorRegistry
from twisted.internet import defer

from callbackd.config import BillingConfig, XMPPConfig
from callbackd.store.interface import INVITE_ORIGIN
from callbackd.xmpp.chat import ChatFront
from callbackd.xmpp.component import XMPPComponent, XMPPMetrics
from callbackd.xmpp.handlers import (
    MessageHandler,
    PresenceHandler,
    ServiceHandler,
    chat_message,
)
from callbackd.xmpp.links import LinkCache

__all__ = ["ChatService", "make_chat_service"]


class ChatService(XMPPComponent):
    """The component with the service's handlers and chat front; :meth:`invite` for operators."""

    presence: PresenceHandler
    front: ChatFront
    links: LinkCache
    store: Any
    #: stops hearing operators' invitations (set while the service runs)
    _stop_invites: Callable[[], None] | None = None

    def invite(self, jid: str) -> None:
        """Send ``jid`` a subscription request from the service (queued while disconnected)."""
        self.presence.invite(jid)

    def say(self, jid: str, text: str) -> None:
        """Send ``text`` to ``jid`` in a chat message; dropped while not connected."""
        if self.connected:
            self.send(chat_message(self.domain, jid, text))

    def startService(self) -> None:
        self.links.start()
        self.front.start()
        # an operator's invitation from elsewhere (callbackd-admin invite) comes on the
        # store's change feed
        self._stop_invites = self.store.watch(self._feed_word, lambda live: None)
        super().startService()

    def stopService(self) -> defer.Deferred[None]:
        if self._stop_invites is not None:
            self._stop_invites()
            self._stop_invites = None
        self.front.stop()
        self.links.stop()
        return super().stopService()

    def _feed_word(self, key: str, origin: str) -> None:
        if origin == INVITE_ORIGIN:
            self.invite(key)


def make_chat_service(
    config: XMPPConfig,
    billing: BillingConfig,
    store: Any,
    engine: Any,
    reactor: Any,
    registry: CollectorRegistry | None = None,
    **component_options: Any,
) -> ChatService:
    """The component of ``config.domain`` with the chat front on ``store`` and ``engine``.

    Money is shown with ``billing``'s decimals and currency; ``component_options`` go to
    :class:`XMPPComponent` (``standby=True`` with several daemons).
    """
    chat = ChatService(
        config.domain,
        config.host,
        config.port,
        config.secret.reveal(),
        reactor=reactor,
        max_retry=config.reconnect_max_delay,
        metrics=XMPPMetrics(registry) if registry is not None else None,
        **component_options,
    )
    chat.store = store
    chat.links = LinkCache(store)
    chat.front = ChatFront(
        engine,
        store,
        chat.links,
        reactor,
        chat.say,
        decimals=billing.decimals,
        currency=billing.currency,
        domain=config.domain,
    )
    chat.presence = PresenceHandler(
        config.domain,
        status=lambda jid: chat.front.text_for(jid, "chat.presence_status"),
        invitation=lambda jid: chat.front.text_for(jid, "chat.invite"),
        linked=store.linked_jids,
        clock=reactor,
    )
    ServiceHandler(config.domain).setHandlerParent(chat)
    chat.presence.setHandlerParent(chat)
    MessageHandler(config.domain, chat.front.handle).setHandlerParent(chat)
    return chat
