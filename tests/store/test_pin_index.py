"""The PIN index's pepper and entries (callbackd.store.hashing), and what a Redis dump
holds of a PIN."""

from __future__ import annotations

import stat

import pytest_twisted

from callbackd.core.model import Account
from callbackd.store.hashing import PIN_PEPPER_FILE, load_pin_pepper, pin_index
from tests.stores import redis_store


def test_the_configured_pepper_wins(tmp_path):
    assert load_pin_pepper("configured", tmp_path) == b"configured"
    assert not (tmp_path / PIN_PEPPER_FILE).exists()


def test_without_one_a_random_pepper_is_made_once_and_kept_private(tmp_path):
    first = load_pin_pepper("", tmp_path / "state")
    path = tmp_path / "state" / PIN_PEPPER_FILE
    assert len(first) == 32
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert load_pin_pepper("", tmp_path / "state") == first  # the next start: the same
    assert load_pin_pepper("", tmp_path / "other") != first


def test_entries_depend_on_the_pepper_and_the_pin():
    assert pin_index(b"a", "1234") == pin_index(b"a", "1234")
    assert pin_index(b"a", "1234") != pin_index(b"b", "1234")
    assert pin_index(b"a", "1234") != pin_index(b"a", "12345")


@pytest_twisted.ensureDeferred
async def test_a_redis_dump_holds_no_pin(clean_redis):
    """Every key and value in Redis after setting PINs: no PIN, no unkeyed hash of it."""
    import hashlib

    store = redis_store(clean_redis.port)
    await store.connect(timeout=5)
    try:
        await store.create_account(Account("alice"), "secret pw", "97531")
        await store.set_pin("alice", "86420")
        dump = []
        for key in await store._call("KEYS", "*"):
            kind = await store._call("TYPE", key)
            if kind == "hash":
                dump += await store._call("HGETALL", key)
            elif kind == "string":
                dump.append(await store._call("GET", key))
            dump.append(key)
        text = " ".join(str(item) for item in dump)
        for pin in ("97531", "86420"):
            assert pin not in text
            assert hashlib.sha256(pin.encode()).hexdigest() not in text
        assert pin_index(store.pin_pepper, "86420") in text  # the index is there
    finally:
        await store.disconnect()
