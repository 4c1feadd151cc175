"""The wiring: the service tree create_daemon builds, and the document that draws it."""

from __future__ import annotations

import json
import re
from pathlib import Path

from twisted.internet.testing import MemoryReactorClock
from twisted.web.test.requesthelper import DummyRequest

from callbackd.ami.message import Message
from callbackd.app import create_daemon
from callbackd.config import load_config

ROOT = Path(__file__).resolve().parent.parent


class _Reactor(MemoryReactorClock):
    """A memory reactor: building the tree must do no I/O (it records any)."""


def _documented_children() -> list[str]:
    text = (ROOT / "docs" / "architecture.rst").read_text()
    return re.findall(r"^    [├└]── (\w+)", text, re.MULTILINE)


def test_demo_config_builds_every_child_in_order(tmp_path):
    """The demo config's tree has the children docs/architecture.rst draws, in that order."""
    config = load_config(ROOT / "etc" / "callbackd.ini")
    root = create_daemon(config, _Reactor())
    names = [child.name for child in root]
    assert names == _documented_children()


def test_building_the_tree_opens_nothing(tmp_path):
    """create_daemon does no I/O: nothing is started, so nothing is running."""
    config = load_config(ROOT / "etc" / "callbackd.ini")
    reactor = _Reactor()
    root = create_daemon(config, reactor)
    assert not root.running
    assert all(not child.running for child in root)
    assert reactor.tcpServers == [] and reactor.tcpClients == [] and reactor.unixClients == []


def test_external_redis_and_real_asterisk_leave_out_embedded_parts(tmp_path):
    """With an external Redis and a real Asterisk there is no embedded redis or simulator."""
    secret = tmp_path / "ami.secret"
    secret.write_text("s3cret\n")
    ini = tmp_path / "c.ini"
    ini.write_text(
        "[redis]\nmode = external\n[ami]\nmode = asterisk\nsecret_file = ami.secret\n"
        "[manhole]\nenabled = no\n"
    )
    root = create_daemon(load_config(ini, environ={}), _Reactor())
    assert [child.name for child in root] == ["store", "ami", "engine", "web"]


def test_tune_gc_freezes_the_startup_objects_and_spaces_collections():
    """After start, what is alive is frozen out of collections and the threshold is set."""
    import gc

    from callbackd.app import tune_gc

    before = gc.get_threshold()
    try:
        tune_gc(12345)
        assert gc.get_threshold()[0] == 12345
        assert gc.get_freeze_count() > 0
    finally:
        gc.unfreeze()
        gc.set_threshold(*before)


def test_tune_gc_zero_keeps_pythons_threshold():
    """gc_threshold = 0 leaves Python's own thresholds alone."""
    import gc

    from callbackd.app import tune_gc

    before = gc.get_threshold()
    try:
        tune_gc(0)
        assert gc.get_threshold() == before
    finally:
        gc.unfreeze()


def _ami_health(root) -> tuple[bool, str]:
    """The "ami" check of the /healthz the built tree serves."""
    site = root.getServiceNamed("web").factory
    request = DummyRequest([b"healthz"])
    site.resource.children[b"healthz"].render(request)
    check = json.loads(b"".join(request.written))["checks"]["ami"]
    return check["ok"], check["detail"]


def test_healthz_says_the_switch_restarts_until_it_is_fully_booted():
    """After the switch's Shutdown /healthz's ami check says so, until FullyBooted."""
    config = load_config(ROOT / "etc" / "callbackd.ini")
    root = create_daemon(config, _Reactor())
    ami = root.getServiceNamed("ami")
    assert _ami_health(root) == (False, "not connected")
    ami.events.dispatch(
        Message([("Event", "Shutdown"), ("Shutdown", "Cleanly"), ("Restart", "True")])
    )
    assert _ami_health(root) == (False, "switch restarting")
    ami.events.dispatch(Message([("Event", "FullyBooted"), ("Uptime", "0")]))
    assert _ami_health(root) == (False, "not connected")
