"""Fixtures of the XMPP tests: a real Prosody."""

from __future__ import annotations

import pytest

from tests.xmpp import prosody as prosody_module


@pytest.fixture
def start_prosody():
    """Start private Prosodys (``start_prosody(**options)``); each is removed afterwards."""
    prosody_module.require()
    started = []

    def start(**options):
        started.append(prosody_module.Prosody.start_new(**options))
        return started[-1]

    yield start
    for server in started:
        server.remove()


@pytest.fixture
def prosody(start_prosody):
    """A private Prosody for one test: c2s and component ports on loopback, no TLS."""
    return start_prosody()
