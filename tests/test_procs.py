"""The test processes' helpers: ports handed out once each, outside the ephemeral range."""

from __future__ import annotations

import socket

import pytest

from tests import procs
from tests.procs import PORT_RANGE, free_port


def test_free_ports_are_distinct_bindable_and_below_the_ephemeral_range() -> None:
    ports = [free_port() for _ in range(200)]
    assert len(set(ports)) == len(ports)
    assert all(p in PORT_RANGE for p in ports)
    with socket.socket() as s:
        s.bind(("127.0.0.1", ports[-1]))


def test_a_port_in_use_or_already_given_is_skipped(monkeypatch: pytest.MonkeyPatch) -> None:
    given = free_port()
    with socket.socket() as held:
        held.bind(("127.0.0.1", 0))
        taken = held.getsockname()[1]
        draws = iter([given, taken, given + 1 if given + 1 != taken else given + 2])
        monkeypatch.setattr(procs._pick, "choice", lambda _seq: next(draws))
        assert free_port() not in (given, taken)
