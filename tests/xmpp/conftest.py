"""Fixtures of the XMPP tests: a real Prosody."""

from __future__ import annotations

import os

import pytest

from tests.xmpp import prosody as prosody_module


def _skip_without_prosody() -> None:
    """Skip when Debian's prosody is missing, except in CI (CI=true), where it must run."""
    if prosody_module.available():
        return
    if os.environ.get("CI", "").lower() in ("true", "1", "yes"):
        pytest.fail("prosody is not installed (scripts/bootstrap.sh installs it)")
    pytest.skip("prosody is not installed (apt-get install prosody)")


@pytest.fixture
def start_prosody():
    """Start private Prosodys (``start_prosody(**options)``); each is removed afterwards."""
    _skip_without_prosody()
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
