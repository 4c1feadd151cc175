"""The chat front assembled: the component with its handlers, from ``[xmpp]``."""

from __future__ import annotations

from typing import Any

from prometheus_client import CollectorRegistry

from callbackd.config import XMPPConfig
from callbackd.xmpp.commands import ChatDispatcher
from callbackd.xmpp.component import XMPPComponent, XMPPMetrics
from callbackd.xmpp.handlers import MessageHandler, PresenceHandler, ServiceHandler

__all__ = ["ChatService", "make_chat_service"]


class ChatService(XMPPComponent):
    """The component with the service's handlers; :meth:`invite` for operators."""

    presence: PresenceHandler
    dispatcher: ChatDispatcher

    def invite(self, jid: str) -> None:
        """Send ``jid`` a subscription request from the service (queued while disconnected)."""
        self.presence.invite(jid)


def make_chat_service(
    config: XMPPConfig,
    store: Any,
    engine: Any,
    reactor: Any,
    registry: CollectorRegistry | None = None,
    **component_options: Any,
) -> ChatService:
    """The component of ``config.domain`` answering from ``store`` and ``engine``."""
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
    chat.dispatcher = ChatDispatcher(store, engine, clock=reactor)
    chat.presence = PresenceHandler(config.domain, config.status)
    ServiceHandler(config.domain).setHandlerParent(chat)
    chat.presence.setHandlerParent(chat)
    MessageHandler(config.domain, chat.dispatcher, chat.dispatcher.too_long).setHandlerParent(chat)
    return chat
