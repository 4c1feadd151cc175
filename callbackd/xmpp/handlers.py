"""The component's stanza handlers, on :class:`wokkel.subprotocols.XMPPHandler`.

- :class:`ServiceHandler`: service discovery (XEP-0030 ``disco#info`` and an empty
  ``disco#items``), software version (XEP-0092) and ping (XEP-0199); any other
  ``get`` or ``set`` IQ is answered ``service-unavailable``.
- :class:`PresenceHandler`: a ``subscribe`` is accepted and returned, probes and
  available presences are answered with the service's available presence and
  status text, ``unsubscribe`` is acknowledged; :meth:`PresenceHandler.invite`
  sends a subscription request with the invitation text.
- :class:`MessageHandler`: the bodies of chat and normal messages go to a
  dispatcher (a callable ``(bare JID, text) -> Deferred[None]``, in the daemon
  :meth:`callbackd.xmpp.chat.ChatFront.handle`), which answers on its own through
  :func:`chat_message` stanzas.

Nothing here answers an ``error`` or ``result`` stanza, a ``groupchat`` or
``headline`` message, or any stanza from the component's own domain (or one
without a sender): those are how two automatons end up answering each other for ever.
"""

from __future__ import annotations

from collections.abc import Callable

from twisted.internet import defer
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.words.protocols.jabber import error
from twisted.words.protocols.jabber.jid import JID, InvalidFormat
from twisted.words.protocols.jabber.xmlstream import toResponse
from twisted.words.xish import domish

import callbackd
import callbackd.xmpp  # noqa: F401  (filters wokkel's DeprecationWarnings first)
from callbackd.core.chat import MAX_MESSAGE
from callbackd.store.interface import StoreUnavailable

from wokkel.subprotocols import XMPPHandler  # isort: skip

__all__ = [
    "MAX_BODY",
    "NS_DISCO_INFO",
    "NS_DISCO_ITEMS",
    "NS_PING",
    "NS_VERSION",
    "MessageHandler",
    "PresenceHandler",
    "ServiceHandler",
    "chat_message",
]

log = Logger(namespace="callbackd.xmpp")

NS_DISCO_INFO = "http://jabber.org/protocol/disco#info"
NS_DISCO_ITEMS = "http://jabber.org/protocol/disco#items"
NS_VERSION = "jabber:iq:version"
NS_PING = "urn:xmpp:ping"

#: the longest message body the grammar takes, in characters after stripping; longer
#: bodies reach the dispatcher cut to one character more, so that it answers "too long"
MAX_BODY = MAX_MESSAGE

#: a dispatcher: ``(sender's bare JID, body text) -> Deferred[None]``
Dispatcher = Callable[[str, str], "defer.Deferred[None]"]
#: a text for a bare JID (in the language of its account)
TextFor = Callable[[str], str]


def sender(stanza: domish.Element, own_domain: str) -> JID | None:
    """The stanza's sender, or None if it has none, a bad one, or is from our own domain.

    Stanzas from our own domain (or a subdomain of it) are never answered: they are
    our own echoes, or another instance of the component.
    """
    raw = stanza.getAttribute("from")
    if not raw:
        return None
    try:
        jid = JID(raw)
    except (InvalidFormat, UnicodeError, ValueError):
        return None
    if jid.host == own_domain or jid.host.endswith("." + own_domain):
        return None
    return jid


def chat_message(domain: str, to: str, text: str) -> domish.Element:
    """A ``chat`` message from the service's ``domain`` to ``to`` with body ``text``."""
    message = domish.Element((None, "message"))
    message["to"] = to
    message["from"] = domain
    message["type"] = "chat"
    message.addElement("body", content=text)
    return message


class ServiceHandler(XMPPHandler):  # type: ignore[misc]
    """disco#info, disco#items, version and ping; ``service-unavailable`` for the rest."""

    def __init__(
        self,
        domain: str,
        *,
        name: str = "callbackd",
        version: str = callbackd.__version__,
        identity: tuple[str, str, str] = ("gateway", "pstn", "Callback"),
    ) -> None:
        super().__init__()
        self.domain = domain
        self.name = name
        self.version = version
        self.identity = identity
        self.features = (NS_DISCO_INFO, NS_DISCO_ITEMS, NS_VERSION, NS_PING)

    def connectionInitialized(self) -> None:
        xs = self.xmlstream
        xs.addObserver(f'/iq[@type="get"]/query[@xmlns="{NS_DISCO_INFO}"]', self._disco_info)
        xs.addObserver(f'/iq[@type="get"]/query[@xmlns="{NS_DISCO_ITEMS}"]', self._disco_items)
        xs.addObserver(f'/iq[@type="get"]/query[@xmlns="{NS_VERSION}"]', self._version)
        xs.addObserver(f'/iq[@type="get"]/ping[@xmlns="{NS_PING}"]', self._ping)
        # after every other handler: what nobody took
        xs.addObserver('/iq[@type="get"]', self._unhandled, priority=-100)
        xs.addObserver('/iq[@type="set"]', self._unhandled, priority=-100)

    def _answerable(self, iq: domish.Element) -> bool:
        if iq.handled:  # type: ignore[attr-defined]
            return False
        iq.handled = True  # type: ignore[attr-defined]
        return sender(iq, self.domain) is not None

    def _disco_info(self, iq: domish.Element) -> None:
        if not self._answerable(iq):
            return
        if iq.query.getAttribute("node"):
            self.send(error.StanzaError("item-not-found").toResponse(iq))
            return
        result = toResponse(iq, "result")
        query = result.addElement((NS_DISCO_INFO, "query"))
        category, kind, name = self.identity
        identity = query.addElement("identity")
        identity["category"], identity["type"], identity["name"] = category, kind, name
        for feature in self.features:
            query.addElement("feature")["var"] = feature
        self.send(result)

    def _disco_items(self, iq: domish.Element) -> None:
        if not self._answerable(iq):
            return
        result = toResponse(iq, "result")
        query = result.addElement((NS_DISCO_ITEMS, "query"))
        node = iq.query.getAttribute("node")
        if node:
            query["node"] = node
        self.send(result)

    def _version(self, iq: domish.Element) -> None:
        if not self._answerable(iq):
            return
        result = toResponse(iq, "result")
        query = result.addElement((NS_VERSION, "query"))
        query.addElement("name", content=self.name)
        query.addElement("version", content=self.version)
        self.send(result)

    def _ping(self, iq: domish.Element) -> None:
        if self._answerable(iq):
            self.send(toResponse(iq, "result"))

    def _unhandled(self, iq: domish.Element) -> None:
        if self._answerable(iq):
            self.send(error.StanzaError("service-unavailable").toResponse(iq))


#: seconds before the linked addresses are greeted again when the store was not up
GREET_RETRY = 5.0


class PresenceHandler(XMPPHandler):  # type: ignore[misc]
    """Subscriptions to the service, its available presence, and invitations.

    ``status(bare_jid)`` is the status text shown with the available presence and
    ``invitation(bare_jid)`` the text sent with an invitation (both from the catalogue).
    ``linked()`` fires with the JIDs linked to accounts: each connection (the first,
    and every one after the server restarted) tells them the service is available,
    since their clients do not ask again.
    """

    def __init__(
        self,
        domain: str,
        status: TextFor,
        invitation: TextFor,
        linked: Callable[[], defer.Deferred[list[str]]] | None = None,
        clock: IReactorTime | None = None,
    ) -> None:
        super().__init__()
        self.domain = domain
        self.status = status
        self.invitation = invitation
        self.linked = linked
        #: retries the greeting while the store is not up yet (None: no retry)
        self.clock = clock

    def connectionInitialized(self) -> None:
        self.xmlstream.addObserver("/presence", self._presence)
        self._greet_linked()

    def _greet_linked(self) -> None:
        if self.linked is not None and self.xmlstream is not None:
            d = self.linked()
            d.addCallbacks(self._greet, self._not_greeted)

    def _greet(self, jids: list[str]) -> None:
        for jid in jids:
            self._send_available(JID(jid))

    def _not_greeted(self, failure: Failure) -> None:
        if not failure.check(StoreUnavailable):
            log.failure("cannot greet the linked addresses", failure)
            return
        # the store is not up (yet: the component may connect first while the daemon
        # starts): greet once it answers
        again = "" if self.clock is None else f"; again in {GREET_RETRY:.0f} s"
        log.warn(
            "cannot greet the linked addresses yet: {error}{again}",
            error=failure.getErrorMessage(),
            again=again,
        )
        if self.clock is not None:
            self.clock.callLater(GREET_RETRY, self._greet_linked)

    def invite(self, jid: str) -> None:
        """Ask ``jid`` to let the service see its presence (it shows in the user's client).

        Sent at once when connected, else when the component is connected again.
        """
        bare = JID(jid).userhostJID()
        self._send_presence(bare, "subscribe", self.invitation(bare.full()))

    def _presence(self, presence: domish.Element) -> None:
        kind = presence.getAttribute("type") or "available"
        who = sender(presence, self.domain)
        if who is None:
            return
        presence.handled = True  # type: ignore[attr-defined]
        bare = who.userhostJID()
        if kind == "subscribe":
            log.info("{jid} subscribes to the service", jid=bare.full())
            self._send_presence(bare, "subscribed")
            self._send_presence(bare, "subscribe")
            self._send_available(bare)
        elif kind == "unsubscribe":
            log.info("{jid} unsubscribes from the service", jid=bare.full())
            self._send_presence(bare, "unsubscribed")
            self._send_presence(bare, "unavailable")
        elif kind == "unsubscribed":
            log.info("{jid} no longer shares its presence", jid=bare.full())
        elif kind in ("probe", "available"):
            self._send_available(who if kind == "available" else bare)
        # subscribed, unavailable, error: nothing to answer

    def _send_available(self, to: JID) -> None:
        presence = self._presence_to(to)
        presence.addElement("status", content=self.status(to.userhost()))
        self.send(presence)

    def _send_presence(self, to: JID, kind: str, status: str = "") -> None:
        presence = self._presence_to(to)
        presence["type"] = kind
        if status:
            presence.addElement("status", content=status)
        self.send(presence)

    def _presence_to(self, to: JID) -> domish.Element:
        presence = domish.Element((None, "presence"))
        presence["to"] = to.full()
        presence["from"] = self.domain
        return presence


class MessageHandler(XMPPHandler):  # type: ignore[misc]
    """The bodies of chat and normal messages to the dispatcher, from the sender's bare JID.

    A body longer than :data:`MAX_BODY` (after stripping) reaches the dispatcher cut
    to ``MAX_BODY + 1`` characters: the grammar answers it "too long" in the account's
    language, and a 100 kB body is never parsed.
    """

    def __init__(self, domain: str, dispatch: Dispatcher) -> None:
        super().__init__()
        self.domain = domain
        self.dispatch = dispatch

    def connectionInitialized(self) -> None:
        self.xmlstream.addObserver("/message", self._message)

    def _message(self, message: domish.Element) -> None:
        kind = message.getAttribute("type") or "normal"
        if kind not in ("chat", "normal"):
            return  # error, groupchat, headline, unknown: never answered
        who = sender(message, self.domain)
        if who is None or message.body is None:
            return  # no sender, our own domain, or no body (chat states, receipts)
        message.handled = True  # type: ignore[attr-defined]
        text = str(message.body).strip()
        if not text:
            return
        bare = who.userhost()
        d = defer.maybeDeferred(self.dispatch, bare, text[: MAX_BODY + 1])
        d.addErrback(self._failed, bare)

    def _failed(self, failure: Failure, jid: str) -> None:
        log.failure("chat message from {jid} failed", failure, jid=jid)
