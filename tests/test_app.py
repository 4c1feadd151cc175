"""The wiring: the service tree create_daemon builds, and the document that draws it."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from twisted.internet.testing import MemoryReactorClock
from twisted.python import usage
from twisted.python.failure import Failure
from twisted.web.test.requesthelper import DummyRequest

from callbackd.ami.message import Message
from callbackd.app import create_daemon
from callbackd.config import ConfigError, load_config, parse_config
from callbackd.tap import Options

ROOT = Path(__file__).resolve().parent.parent


class _Reactor(MemoryReactorClock):
    """A memory reactor: building the tree must do no I/O (it records any)."""


def _documented_children() -> list[str]:
    text = (ROOT / "docs" / "architecture.rst").read_text()
    return re.findall(r"^    [├└]── (\w+)", text, re.MULTILINE)


def test_demo_config_builds_every_child_in_order(tmp_path):
    """The demo config's tree has the children docs/architecture.rst draws, in that order.

    The chat front (``xmpp``) and the FastAGI server (``agi``) are drawn too; they are
    off in the demo config.
    """
    path = ROOT / "etc" / "callbackd.ini"
    root = create_daemon(load_config(path), _Reactor())
    names = [child.name for child in root]
    assert names == [name for name in _documented_children() if name not in ("xmpp", "agi")]
    with_chat = path.read_text() + (
        "\n[xmpp]\nenabled = yes\ndomain = callback.example.test\nsecret_env = S\n"
        "\n[agi]\nenabled = yes\nlisten = tcp:0:interface=127.0.0.1\n"
    )
    root = create_daemon(parse_config(with_chat, path, {"S": "x"}), _Reactor())
    assert [child.name for child in root] == _documented_children()


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
    assert [child.name for child in root] == ["store", "ami", "engine", "api", "web"]


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


def _bad_deck_config(tmp_path: Path) -> Path:
    (tmp_path / "sell.csv").write_text("49,0.02\n1x,1\n44,0.01,0,1\n")
    path = tmp_path / "callbackd.ini"
    path.write_text("[daemon]\nnode_id = t1\n[billing]\ntariff = sell.csv\n")
    return path


def test_a_bad_deck_stops_the_daemon_with_its_rows_named(tmp_path):
    """create_daemon given no checked decks refuses a bad one with a ConfigError, no traceback."""
    config = load_config(_bad_deck_config(tmp_path))
    with pytest.raises(ConfigError) as info:
        create_daemon(config, _Reactor())
    assert [p.split(": ", 1)[1] for p in info.value.problems] == [
        "line 2: bad prefix '1x': 1-15 digits, not starting with 0",
        "line 3: expected prefix,price_per_minute[,connect_fee[,initial_increment,increment]],"
        " got 4 fields",
    ]


def test_the_check_before_forking_names_every_bad_row(tmp_path):
    """twistd callbackd's options (--check or not) refuse a bad deck, naming each row."""
    path = _bad_deck_config(tmp_path)
    for extra in ([], ["--check"]):
        with pytest.raises(usage.UsageError) as info:
            Options().parseOptions(["-c", str(path), *extra])
        text = str(info.value)
        assert "2 problem(s)" in text
        assert f"{tmp_path / 'sell.csv'}: line 2: bad prefix" in text
        assert f"{tmp_path / 'sell.csv'}: line 3: expected prefix" in text


def test_the_checked_decks_are_the_ones_the_engine_uses(tmp_path):
    """The decks the options loaded go to the engine: the files are read once."""
    options = Options()
    options.parseOptions(["-c", str(ROOT / "etc" / "callbackd.ini")])
    root = create_daemon(options.loaded, _Reactor(), options.decks)
    assert root.daemon.engine.legs.sell_deck is options.decks.sell


def test_the_ami_reconnect_cap_is_configured(tmp_path):
    """[ami] reconnect_max_delay reaches the AMI client (default 2 s)."""
    path = tmp_path / "callbackd.ini"
    path.write_text("[manhole]\nenabled = no\n")
    assert create_daemon(load_config(path), _Reactor()).daemon.ami.max_retry == 2.0
    path.write_text("[manhole]\nenabled = no\n[ami]\nreconnect_max_delay = 7.5\n")
    assert create_daemon(load_config(path), _Reactor()).daemon.ami.max_retry == 7.5


def _ami_health(root, name: str = "ami") -> tuple[bool, str]:
    """A check ("ami" unless named) of the /healthz the built tree serves."""
    site = root.getServiceNamed("web").factory
    request = DummyRequest([b"healthz"])
    site.resource.children[b"healthz"].render(request)
    check = json.loads(b"".join(request.written))["checks"][name]
    return check["ok"], check["detail"]


def test_healthz_says_the_sms_front_is_off_or_names_its_webhooks():
    """[sms] off: /healthz says so; on (the demo config): it names the webhooks."""
    path = ROOT / "etc" / "callbackd.ini"
    off = path.read_text().replace("[sms]\nenabled = yes", "[sms]\nenabled = no")
    config = parse_config(off, path, {})
    assert not config.sms.enabled
    root = create_daemon(config, _Reactor())
    assert _ami_health(root, "sms") == (True, "off ([sms] enabled = no)")
    root = create_daemon(load_config(ROOT / "etc" / "callbackd.ini"), _Reactor())
    root.getServiceNamed("sms").startService()
    assert _ami_health(root, "sms") == (True, "/sms/demo")


def test_healthz_says_the_chat_front_is_off():
    """With [xmpp] off (the README's run command) /healthz says so, and counts it ok."""
    config = load_config(ROOT / "etc" / "callbackd.ini")
    assert not config.xmpp.enabled
    root = create_daemon(config, _Reactor())
    assert _ami_health(root, "xmpp") == (True, "off ([xmpp] enabled = no)")


def test_healthz_says_the_agi_server_is_off_and_routes_through_the_daemon():
    """With [agi] off /healthz says so; on, the service routes through daemon.agi_router."""
    config = load_config(ROOT / "etc" / "callbackd.ini")
    assert not config.agi.enabled
    root = create_daemon(config, _Reactor())
    assert _ami_health(root, "agi") == (True, "off ([agi] enabled = no)")
    text = (ROOT / "etc" / "callbackd.ini").read_text() + "\n[agi]\nenabled = yes\n"
    root = create_daemon(parse_config(text, ROOT / "etc" / "callbackd.ini"), _Reactor())
    agi = root.getServiceNamed("agi")
    assert agi.factory.router is root.daemon.agi_router
    assert agi.listen == "tcp:4573:interface=127.0.0.1"
    assert _ami_health(root, "agi") == (False, "not listening")
    # the simulated switch's agi:// URLs go to wherever the server listens
    agi._port.port = 40123  # as once listening there
    assert root.daemon.simulator.agi_address("127.0.0.1", 4573) == ("127.0.0.1", 40123)


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


def test_the_ivr_registers_its_scripts_on_the_agi_router():
    """[ivr] on: the access numbers' and the callback leg's scripts are routed, and the
    simulated switch runs the callback leg's IVR at cb-conf,ivr-a."""
    path = ROOT / "etc" / "callbackd.ini"
    root = create_daemon(load_config(path), _Reactor())
    assert root.daemon.ivr is None and root.daemon.agi_router == {}
    text = path.read_text() + "\n[agi]\nenabled = yes\n\n[ivr]\nenabled = yes\n"
    root = create_daemon(parse_config(text, path), _Reactor())
    ivr = root.daemon.ivr
    assert set(root.daemon.agi_router) == {"ivr", "ivr-callback"}
    assert root.daemon.agi_router["ivr-callback"] == ivr.callback
    assert ivr.engine is root.daemon.engine and ivr.store is root.daemon.store
    assert [url for (_, exten, url), _ in root.daemon.simulator._agi_extensions] == [
        "agi://127.0.0.1:4573/ivr-callback?session=${CB_ROOM}"
    ]


# -- several Asterisk servers ([switch:NAME]) ------------------------------------------

TWO_SWITCHES = (
    "[manhole]\nenabled = no\n[ami]\nusername = cb\n"
    "[switch:a]\nweight = 2\n"
    "[switch:b]\nmode = asterisk\nhost = 10.0.0.12\nsecret_env = B\n"
)


def test_each_switch_gets_its_own_ami_connection_and_health(tmp_path):
    """[switch:a] (simulated) and [switch:b] (a real Asterisk): a simulated Asterisk for a,
    an AMI client each, a pool weighted 2:1, a health check each (reported, not counted)
    and the ami check ok while one switch is usable."""
    path = tmp_path / "c.ini"
    config = parse_config(TWO_SWITCHES, path, {"B": "b-secret"})
    root = create_daemon(config, _Reactor())
    daemon = root.daemon
    assert [child.name for child in root][1:5] == ["store", "simulator:a", "ami:a", "ami:b"]
    assert list(daemon.simulators) == ["a"]
    assert daemon.engine.switches.weights == {"a": 2, "b": 1}
    ami_b = root.getServiceNamed("ami:b")
    assert (ami_b.username, ami_b.section) == ("cb", "[switch:b]")
    assert _ami_health(root, "ami:b") == (False, "not connected")
    assert _ami_health(root, "ami") == (
        False,
        "0 of 2 switches usable; a: not connected; b: not connected",
    )
    # a logged in: the daemon is healthy, b reported as it is
    root.getServiceNamed("ami:a").protocol = object()
    assert _ami_health(root, "ami") == (
        True,
        "1 of 2 switches usable; a: logged in; b: not connected",
    )
    site = root.getServiceNamed("web").factory
    request = DummyRequest([b"healthz"])
    site.resource.children[b"healthz"].render(request)
    body = json.loads(b"".join(request.written))
    assert body["checks"]["ami:b"] == {"ok": False, "detail": "not connected", "counted": False}


def test_a_refused_login_is_named_in_the_switch_health(tmp_path):
    """A switch whose AMI login is refused says so in its health check."""
    from callbackd.ami.protocol import AMICommandFailure

    config = parse_config(TWO_SWITCHES, tmp_path / "c.ini", {"B": "b-secret"})
    root = create_daemon(config, _Reactor())
    ami_b = root.getServiceNamed("ami:b")
    ami_b.running = True

    class Protocol:
        def abort(self):
            pass

    failure = Failure(
        AMICommandFailure(Message([("Response", "Error"), ("Message", "Authentication failed")]))
    )
    ami_b._login_failed(Protocol(), failure)
    ok, detail = _ami_health(root, "ami:b")
    assert not ok and detail.startswith("not connected (login refused: ")
    assert "Authentication failed" in detail


def test_switch_metrics_are_labelled_by_switch(tmp_path):
    """ami_switch_connected and switch_sessions come per switch."""
    from prometheus_client import generate_latest

    config = parse_config(TWO_SWITCHES, tmp_path / "c.ini", {"B": "b-secret"})
    root = create_daemon(config, _Reactor())
    root.getServiceNamed("ami:a").protocol = object()
    text = generate_latest(root.daemon.registry).decode()
    assert 'callbackd_ami_switch_connected{switch="a"} 1.0' in text
    assert 'callbackd_ami_switch_connected{switch="b"} 0.0' in text
    assert 'callbackd_switch_sessions{switch="b"} 0.0' in text
    assert "callbackd_ami_connected 0.0" in text


def test_each_switch_presents_its_own_caller_id(tmp_path):
    """With [switch:NAME] sections the engine stamps no caller ID on a session: each
    switch presents its own ([ami]'s unless its section sets one)."""
    text = TWO_SWITCHES + "caller_id = Ast2 <+15552000>\n"
    root = create_daemon(parse_config(text, tmp_path / "c.ini", {"B": "b"}), _Reactor())
    switches = root.daemon.switches
    assert root.daemon.engine.caller_id == ""
    assert (switches["a"].caller_id, switches["b"].caller_id) == (
        "Callback <+15551000>",
        "Ast2 <+15552000>",
    )
    alone = create_daemon(load_config(ROOT / "etc" / "callbackd.ini"), _Reactor())
    assert alone.daemon.engine.caller_id == "Callback <+15551000>"
    assert list(alone.daemon.switches) == ["default"]
