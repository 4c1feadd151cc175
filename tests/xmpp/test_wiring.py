"""[xmpp] in the configuration, and the component in the daemon's service tree."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from twisted.internet.testing import MemoryReactorClock

from callbackd.app import create_daemon, namespace
from callbackd.config import ConfigError, Secret, XMPPConfig, load_config, parse_config
from callbackd.i18n import translator
from callbackd.store.memory import MemoryStore

ROOT = Path(__file__).resolve().parents[2]


def parse(text: str, environ=None, path: Path = Path("/etc/callbackd/c.ini")):
    return parse_config(text, path, environ or {})


def test_xmpp_is_off_by_default():
    assert parse("").xmpp == XMPPConfig()
    assert XMPPConfig().enabled is False
    assert load_config(ROOT / "etc" / "callbackd.ini").xmpp.enabled is False


def test_xmpp_section_with_the_secret_from_the_environment():
    config = parse(
        "[xmpp]\nenabled = yes\ndomain = callback.example.org\nhost = xmpp.example.org\n"
        "port = 5275\nsecret_env = XMPP_SECRET\nreconnect_max_delay = 3\n",
        environ={"XMPP_SECRET": "s3cret"},
    ).xmpp
    assert (config.domain, config.host, config.port) == (
        "callback.example.org",
        "xmpp.example.org",
        5275,
    )
    assert config.secret == Secret("s3cret") and config.reconnect_max_delay == 3.0
    assert "s3cret" not in repr(config)


def test_xmpp_secret_from_a_file(tmp_path):
    (tmp_path / "xmpp.secret").write_text("from-file\n")
    config = parse(
        "[xmpp]\nenabled = yes\ndomain = cb.example.org\nsecret_file = xmpp.secret\n",
        path=tmp_path / "c.ini",
    ).xmpp
    assert config.secret.reveal() == "from-file"


@pytest.mark.parametrize(
    "text, problem",
    [
        ("[xmpp]\nenabled = yes\nsecret_env = S\n", "[xmpp] domain: required when enabled"),
        (
            "[xmpp]\nenabled = yes\ndomain = cb.example.org\n",
            "[xmpp] secret: required when enabled (secret_file or secret_env)",
        ),
        ("[xmpp]\nsecret = plain\n", "[xmpp] secret: secrets are not written in the config"),
        ("[xmpp]\ndomain = Not A Domain\n", "[xmpp] domain: "),
        ("[xmpp]\nport = 0\n", "[xmpp] port: must be at least 1"),
        ("[xmpp]\nresource = x\n", "[xmpp] resource: unknown key"),
    ],
)
def test_xmpp_mistakes_are_reported(text, problem):
    with pytest.raises(ConfigError) as info:
        parse(text, environ={"S": "x"})
    assert any(p.startswith(problem) for p in info.value.problems), info.value.problems


def _enabled_config(tmp_path):
    (tmp_path / "xmpp.secret").write_text("s3cret\n")
    ini = tmp_path / "c.ini"
    ini.write_text(
        "[manhole]\nenabled = no\n"
        "[xmpp]\nenabled = yes\ndomain = callback.example.test\nsecret_file = xmpp.secret\n"
    )
    return load_config(ini, environ={})


def test_the_component_is_a_child_after_the_engine_with_a_health_check(tmp_path):
    reactor = MemoryReactorClock()
    root = create_daemon(_enabled_config(tmp_path), reactor)
    names = [child.name for child in root]
    assert names[names.index("engine") + 1] == "xmpp"
    daemon = root.daemon
    assert "xmpp" in daemon.health.names
    assert reactor.tcpClients == []  # nothing connects before the daemon starts
    ns = namespace(daemon)
    assert ns["xmpp"] is daemon.xmpp and ns["invite"] == daemon.xmpp.invite
    assert "s3cret" not in repr(daemon.xmpp)


def test_started_it_connects_to_the_configured_server(tmp_path):
    reactor = MemoryReactorClock()
    chat = create_daemon(_enabled_config(tmp_path), reactor).daemon.xmpp
    chat.startService()
    [(host, port, _factory, _timeout, _bind)] = reactor.tcpClients
    assert (host, port) == ("127.0.0.1", 5347)
    assert chat.health() == (False, "connecting (127.0.0.1:5347)")
    chat.stopService()


def test_the_chat_front_takes_billing_and_follows_the_component(tmp_path):
    """Money as [billing] says; the front hears the engine while the component runs."""
    reactor = MemoryReactorClock()
    daemon = create_daemon(_enabled_config(tmp_path), reactor).daemon
    chat, config = daemon.xmpp, daemon.config
    assert (chat.front.decimals, chat.front.currency) == (
        config.billing.decimals,
        config.billing.currency,
    )
    assert chat.front.engine is daemon.engine and chat.front.send == chat.say
    assert not chat.front.progress.listening
    chat.startService()
    assert chat.front.progress.listening
    chat.stopService()
    assert not chat.front.progress.listening


def test_an_operators_invitation_on_the_change_feed_is_sent_while_running(tmp_path):
    """callbackd-admin invite asks through the store's feed; the running service invites."""
    reactor = MemoryReactorClock()
    daemon = create_daemon(_enabled_config(tmp_path), reactor).daemon
    chat = daemon.xmpp
    store = MemoryStore(reactor)
    chat.store = store
    invited = []
    chat.invite = invited.append
    chat.startService()
    store.request_invite("Carol@Example.test/laptop")
    store.request_invite("dave@example.test")
    chat.stopService()
    store.request_invite("erin@example.test")  # stopped: not heard
    assert invited == ["carol@example.test", "dave@example.test"]


def test_presence_status_and_invitation_come_from_the_catalogue(tmp_path):
    chat = create_daemon(_enabled_config(tmp_path), MemoryReactorClock()).daemon.xmpp
    en = translator("en")
    assert chat.presence.status("user@example.test") == en.text("chat.presence_status")
    assert chat.presence.invitation("user@example.test") == en.text("chat.invite")


def test_say_sends_a_chat_message_when_connected_and_drops_it_otherwise(tmp_path):
    chat = create_daemon(_enabled_config(tmp_path), MemoryReactorClock()).daemon.xmpp
    sent = []
    chat.send = sent.append
    chat.say("user@example.test", "dropped")
    assert sent == []
    chat.state = "connected"
    chat.say("user@example.test", "Hello")
    [message] = sent
    assert (message["to"], message["from"], message["type"], str(message.body)) == (
        "user@example.test",
        "callback.example.test",
        "chat",
        "Hello",
    )


def test_without_xmpp_there_is_no_component(tmp_path):
    root = create_daemon(load_config(ROOT / "etc" / "callbackd.ini"), MemoryReactorClock())
    assert "xmpp" not in [child.name for child in root]
    assert "invite" not in namespace(root.daemon)
    # /healthz says the chat front is off (test_app checks its words)
    assert "xmpp" in root.daemon.health.names


def test_wokkels_deprecation_warnings_are_filtered_at_import_and_only_theirs():
    """Importing the chat front under -W error::DeprecationWarning works; others still warn."""
    code = (
        "import warnings, callbackd.xmpp.service\n"
        "try:\n"
        "    warnings.warn('ours', DeprecationWarning)\n"
        "except DeprecationWarning:\n"
        "    print('others still raise')\n"
    )
    done = subprocess.run(
        [sys.executable, "-W", "error::DeprecationWarning", "-c", code],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "others still raise"
