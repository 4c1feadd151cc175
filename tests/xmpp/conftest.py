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
def prosody():
    """A private Prosody for one test: c2s and component ports on loopback, no TLS."""
    _skip_without_prosody()
    server = prosody_module.Prosody.start_new()
    yield server
    server.remove()
