"""The Redis store's txredisapi protocol: pipelined replies parsed in the turn they arrive."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st
from twisted.internet.testing import StringTransport

from callbackd.store.redis import _RedisProtocol


def connected_protocol():
    """A protocol on a StringTransport, as if connected."""
    protocol = _RedisProtocol("utf-8", convertNumbers=False)
    protocol.transport = StringTransport()
    protocol.connected = 1
    return protocol


def encode(value):
    """One RESP reply: None (nil), a string (bulk) or a list of strings (multi-bulk)."""
    if value is None:
        return b"$-1\r\n"
    if isinstance(value, list):
        return b"*%d\r\n" % len(value) + b"".join(encode(v) for v in value)
    data = value.encode()
    return b"$%d\r\n%s\r\n" % (len(data), data)


def test_pipelined_bulk_replies_are_parsed_at_once():
    """Several bulk and multi-bulk replies in one read answer their commands at once."""
    protocol = connected_protocol()
    answers = []
    for i in range(3):
        protocol.execute_command("GET", f"k{i}").addBoth(answers.append)
    protocol.dataReceived(encode("a") + encode(None) + encode(["b", "cd"]))
    assert answers == ["a", None, ["b", "cd"]]


REPLIES = st.lists(
    st.one_of(
        st.none(),
        st.text(st.characters(codec="utf-8"), max_size=20),
        st.lists(st.text(st.characters(codec="utf-8"), max_size=5), max_size=4),
    ),
    max_size=30,
)


@given(replies=REPLIES, cuts=st.lists(st.integers(0, 2000), max_size=5))
def test_replies_cut_anywhere_answer_in_order(replies, cuts):
    """Pipelined replies cut into reads at arbitrary places answer every command, in order."""
    protocol = connected_protocol()
    answers = []
    for _ in replies:
        protocol.execute_command("GET", "k").addBoth(answers.append)
    data = b"".join(encode(r) for r in replies)
    bounds = sorted({0, len(data), *(c % (len(data) + 1) for c in cuts)})
    for start, end in zip(bounds, bounds[1:]):
        protocol.dataReceived(data[start:end])
    assert answers == replies
