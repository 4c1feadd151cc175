"""The stanza handlers on a stub XML stream: what is answered, and what never is."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.internet import defer
from twisted.internet.task import Clock
from twisted.logger import globalLogPublisher
from twisted.words.xish import domish

import callbackd
from callbackd.core.chat import CommandError, parse_command
from callbackd.store.interface import StoreUnavailable
from callbackd.xmpp.handlers import (
    GREET_RETRY,
    MAX_BODY,
    NS_DISCO_INFO,
    NS_PING,
    NS_VERSION,
    MessageHandler,
    PresenceHandler,
    ServiceHandler,
    chat_message,
)

from wokkel.test.helpers import XmlStreamStub  # isort: skip

DOMAIN = "callback.example.test"
USER = "user@example.test/phone"


def connect(handler):
    """The handler on a stub stream; what it sends lands in ``stub.output``."""
    stub = XmlStreamStub()
    handler.parent = stub.xmlstream
    handler.makeConnection(stub.xmlstream)
    handler.connectionInitialized()
    return stub


def iq(kind: str, child: tuple[str, str] | None, sender: str = USER) -> domish.Element:
    element = domish.Element((None, "iq"))
    element["type"], element["id"], element["to"] = kind, "q1", DOMAIN
    if sender:
        element["from"] = sender
    if child is not None:
        element.addElement(child)
    return element


def message(body: str | None, kind: str | None = "chat", sender: str = USER) -> domish.Element:
    element = domish.Element((None, "message"))
    element["to"] = DOMAIN
    if sender:
        element["from"] = sender
    if kind is not None:
        element["type"] = kind
    if body is not None:
        element.addElement("body", content=body)
    return element


def presence(kind: str | None, sender: str = USER) -> domish.Element:
    element = domish.Element((None, "presence"))
    element["to"] = DOMAIN
    element["from"] = sender
    if kind is not None:
        element["type"] = kind
    return element


# --- IQs ---------------------------------------------------------------------------------


def test_disco_info_names_the_gateway_and_its_features():
    stub = connect(ServiceHandler(DOMAIN))
    stub.send(iq("get", (NS_DISCO_INFO, "query")))
    [answer] = stub.output
    assert answer["type"] == "result" and answer["to"] == USER and answer["id"] == "q1"
    identity = answer.query.identity
    assert (identity["category"], identity["type"]) == ("gateway", "pstn")
    features = {f["var"] for f in answer.query.elements(NS_DISCO_INFO, "feature")}
    assert NS_VERSION in features and NS_PING in features and NS_DISCO_INFO in features


def test_disco_info_of_a_node_is_item_not_found():
    stub = connect(ServiceHandler(DOMAIN))
    request = iq("get", (NS_DISCO_INFO, "query"))
    request.query["node"] = "x"
    stub.send(request)
    [answer] = stub.output
    assert answer["type"] == "error" and answer.error.firstChildElement().name == "item-not-found"


def test_version_and_ping():
    stub = connect(ServiceHandler(DOMAIN))
    stub.send(iq("get", (NS_VERSION, "query")))
    stub.send(iq("get", (NS_PING, "ping")))
    version, pong = stub.output
    fields = {e.name: str(e) for e in version.query.elements(NS_VERSION)}
    assert fields == {"name": "callbackd", "version": callbackd.__version__}
    assert pong["type"] == "result" and pong.firstChildElement() is None


@pytest.mark.parametrize("kind", ["get", "set"])
def test_unknown_iq_is_service_unavailable(kind):
    stub = connect(ServiceHandler(DOMAIN))
    stub.send(iq(kind, ("urn:example:unknown", "query")))
    [answer] = stub.output
    assert answer["type"] == "error"
    assert answer.error.firstChildElement().name == "service-unavailable"


@pytest.mark.parametrize(
    "stanza",
    [
        iq("result", (NS_PING, "ping")),
        iq("error", (NS_VERSION, "query")),
        iq("get", (NS_PING, "ping"), sender=DOMAIN),
        iq("get", (NS_PING, "ping"), sender="other." + DOMAIN),
        iq("get", ("urn:example:unknown", "query"), sender=""),
    ],
    ids=["result", "error", "own domain", "own subdomain", "no sender"],
)
def test_iqs_never_answered(stanza):
    stub = connect(ServiceHandler(DOMAIN))
    stub.send(stanza)
    assert stub.output == []


# --- presence ----------------------------------------------------------------------------


def sent(stub):
    return [(p.getAttribute("type"), p["to"], p.status and str(p.status)) for p in stub.output]


def presence_handler():
    """Status and invitation texts that say whom they are for."""
    return PresenceHandler(DOMAIN, lambda jid: f"status for {jid}", lambda jid: f"invite {jid}")


def test_subscribe_is_accepted_returned_and_shown_available():
    stub = connect(presence_handler())
    stub.send(presence("subscribe"))
    assert sent(stub) == [
        ("subscribed", "user@example.test", None),
        ("subscribe", "user@example.test", None),
        (None, "user@example.test", "status for user@example.test"),
    ]
    assert all(p["from"] == DOMAIN for p in stub.output)


def test_probe_and_available_are_answered_available():
    stub = connect(presence_handler())
    stub.send(presence("probe", sender="user@example.test"))
    stub.send(presence(None))
    assert sent(stub) == [
        (None, "user@example.test", "status for user@example.test"),
        (None, USER, "status for user@example.test"),
    ]


def test_every_connection_greets_the_linked_addresses():
    """Connected (first, or again after a server restart), the service tells every
    linked JID it is available: their clients do not probe again by themselves."""
    linked = ["bob@example.test", "carol@example.test"]
    handler = PresenceHandler(
        DOMAIN,
        lambda jid: f"status for {jid}",
        lambda jid: f"invite {jid}",
        linked=lambda: defer.succeed(linked),
    )
    stub = connect(handler)
    assert sent(stub) == [
        (None, "bob@example.test", "status for bob@example.test"),
        (None, "carol@example.test", "status for carol@example.test"),
    ]


def _greeter(linked, clock=None):
    return PresenceHandler(
        DOMAIN,
        lambda jid: f"status for {jid}",
        lambda jid: f"invite {jid}",
        linked=linked,
        clock=clock,
    )


def _connect_logged(handler):
    """Connect ``handler``; the stub and the log events it caused."""
    events = []
    globalLogPublisher.addObserver(events.append)
    try:
        stub = connect(handler)
    finally:
        globalLogPublisher.removeObserver(events.append)
    return stub, events


def test_a_store_that_cannot_list_the_links_greets_nobody():
    """A store failure that is not an outage is logged with its traceback."""
    stub, events = _connect_logged(_greeter(lambda: defer.fail(RuntimeError("bug"))))
    assert stub.output == []
    assert [type(e["log_failure"].value) for e in events if "log_failure" in e] == [RuntimeError]


def test_a_store_not_up_yet_is_a_warning_and_the_greeting_comes_once_it_is():
    """While the daemon starts the component may connect before the store answers: a
    warning without a traceback, and the linked addresses are greeted once it does."""
    clock = Clock()
    answers = [defer.fail(StoreUnavailable("not connected")), defer.succeed(["bob@example.test"])]
    stub, events = _connect_logged(_greeter(lambda: answers.pop(0), clock))
    assert stub.output == []
    assert not [e for e in events if "log_failure" in e]
    assert [e["log_level"].name for e in events if "greet" in e.get("log_format", "")] == ["warn"]
    clock.advance(GREET_RETRY)
    assert sent(stub) == [(None, "bob@example.test", "status for bob@example.test")]


def test_unsubscribe_is_acknowledged():
    stub = connect(presence_handler())
    stub.send(presence("unsubscribe"))
    assert sent(stub) == [
        ("unsubscribed", "user@example.test", None),
        ("unavailable", "user@example.test", None),
    ]


@pytest.mark.parametrize("kind", ["subscribed", "unsubscribed", "unavailable", "error"])
def test_presences_needing_no_answer(kind):
    stub = connect(presence_handler())
    stub.send(presence(kind))
    assert stub.output == []


def test_presence_from_our_own_domain_is_ignored():
    stub = connect(presence_handler())
    stub.send(presence("subscribe", sender=DOMAIN))
    stub.send(presence("probe", sender="x@" + DOMAIN))
    assert stub.output == []


def test_invite_sends_a_subscription_request_with_its_text_to_the_bare_jid():
    handler = presence_handler()
    stub = connect(handler)
    handler.invite("New@Example.test/laptop")
    assert sent(stub) == [("subscribe", "new@example.test", "invite new@example.test")]


# --- messages ----------------------------------------------------------------------------


class Recorder:
    """A dispatcher that records what it is given and answers nothing itself."""

    def __init__(self):
        self.calls = []

    def __call__(self, jid, text):
        self.calls.append((jid, text))
        return defer.succeed(None)


def message_handler():
    dispatch = Recorder()
    stub = connect(MessageHandler(DOMAIN, dispatch))
    return stub, dispatch


@pytest.mark.parametrize("kind", ["chat", "normal", None])
def test_a_message_body_is_dispatched_once_from_the_bare_jid(kind):
    stub, dispatch = message_handler()
    stub.send(message("  HELP \n", kind))
    assert dispatch.calls == [("user@example.test", "HELP")]
    assert stub.output == []  # the dispatcher answers, through chat_message stanzas


def test_chat_message_is_a_chat_from_the_domain():
    reply = chat_message(DOMAIN, "user@example.test", "Hello <you> & me")
    assert (reply["type"], reply["from"], reply["to"]) == ("chat", DOMAIN, "user@example.test")
    assert str(reply.body) == "Hello <you> & me"
    assert "&lt;you&gt; &amp; me" in reply.toXml()


@pytest.mark.parametrize(
    "stanza",
    [
        message("HELP", "error"),
        message("HELP", "groupchat"),
        message("HELP", "headline"),
        message("HELP", "weird"),
        message("HELP", sender=DOMAIN),
        message("HELP", sender="bot." + DOMAIN),
        message("HELP", sender=""),
        message("HELP", sender="@@bad"),
        message(None),
        message("   "),
    ],
    ids=[
        "error",
        "groupchat",
        "headline",
        "unknown type",
        "own domain",
        "own subdomain",
        "no sender",
        "bad sender",
        "no body",
        "blank body",
    ],
)
def test_messages_never_dispatched(stanza):
    stub, dispatch = message_handler()
    stub.send(stanza)
    assert stub.output == [] and dispatch.calls == []


def test_a_long_body_reaches_the_dispatcher_cut_to_one_character_too_many():
    """The grammar answers it "too long"; 100 kB never reach the parser."""
    stub, dispatch = message_handler()
    stub.send(message("x" * 100_000))
    stub.send(message(" " * 5000 + "x" * MAX_BODY + " " * 5000))
    assert dispatch.calls == [
        ("user@example.test", "x" * (MAX_BODY + 1)),
        ("user@example.test", "x" * MAX_BODY),
    ]


def test_a_long_body_cut_is_still_too_long_for_the_grammar():
    with pytest.raises(CommandError) as info:
        parse_command("x" * (MAX_BODY + 1))
    assert info.value.code == "too_long"


def test_a_failing_dispatcher_answers_nothing_and_logs():
    def broken(jid, text):
        raise RuntimeError("boom")

    stub = connect(MessageHandler(DOMAIN, broken))
    stub.send(message("HELP"))
    assert stub.output == []


@settings(max_examples=200, deadline=None)
@given(body=st.text(max_size=1200), kind=st.sampled_from(["chat", "normal", "error", "headline"]))
def test_any_body_is_dispatched_at_most_once(body, kind):
    stub, dispatch = message_handler()
    stub.send(message(body, kind))
    assert stub.output == []
    assert len(dispatch.calls) <= 1
    if dispatch.calls:
        assert len(dispatch.calls[0][1]) <= MAX_BODY + 1
    if kind in ("error", "headline"):
        assert dispatch.calls == []
