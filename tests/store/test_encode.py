"""The store's command encoder (callbackd.store.client.encode_command), as txredisapi sends it."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from callbackd.store.client import CommandEncodeError, encode_command


def reference_encode(*args) -> bytes:
    """The RESP of a command, built the plain way, to check the fast encoder against."""
    parts = []
    for arg in args:
        if isinstance(arg, str):
            data = arg.encode()
        elif isinstance(arg, bytes):
            data = arg
        elif isinstance(arg, int):
            data = str(arg).encode()
        else:
            data = repr(arg).encode()
        parts.append(b"$" + str(len(data)).encode() + b"\r\n" + data + b"\r\n")
    return b"*" + str(len(args)).encode() + b"\r\n" + b"".join(parts)


ARGS = st.lists(
    st.one_of(
        st.text(st.characters(codec="utf-8")),
        st.binary(),
        st.integers(),
        st.floats(allow_nan=False),
    ),
    max_size=8,
)


@given(args=ARGS)
def test_encode_matches_the_reference(args):
    """Any mix of str, bytes, int and float encodes as the plain RESP construction does."""
    assert encode_command(*args) == reference_encode(*args)


def test_encode_counts_utf8_bytes_not_characters():
    """A non-ASCII argument's length is its UTF-8 byte count."""
    assert (
        encode_command("SET", "k", "é€")
        == b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$5\r\n\xc3\xa9\xe2\x82\xac\r\n"
    )


@pytest.mark.parametrize("bad", [None, True, [1], {"a": 1}, object()])
def test_encode_refuses_other_types(bad):
    """None, bools, containers and other objects raise CommandEncodeError naming the type."""
    with pytest.raises(CommandEncodeError, match=type(bad).__name__):
        encode_command("SET", "k", bad)


def test_encode_refuses_lone_surrogates():
    """Text that is not encodable as UTF-8 raises CommandEncodeError."""
    with pytest.raises(CommandEncodeError, match="UTF-8"):
        encode_command("SET", "k", "a\ud800b")
