"""The sample Kannel wiring of etc/kannel/ cannot rot.

The Kannel tests run the sample's files with only their ports, paths and secrets
replaced (:meth:`tests.sms.kannel.Kannel.values`); these tests check that nothing else
changes, and that Kannel's side (kannel.conf, smsbox.conf) and callbackd's side
(callbackd-sms.ini) agree with each other and with callbackd's defaults.
"""

from __future__ import annotations

import configparser
import urllib.parse
from pathlib import Path

import pytest

from callbackd import config as cfg
from callbackd.sms.inbound import KANNEL_FIELDS
from tests.sms.kannel import (
    INI_SECTION,
    SAMPLE,
    Kannel,
    fill_get_url,
    parse_groups,
    render,
    unquote,
)

#: the escape smsbox fills in for each field callbackd's format = kannel reads
ESCAPES = {
    KANNEL_FIELDS.sender: "%p",
    KANNEL_FIELDS.recipient: "%P",
    KANNEL_FIELDS.text: "%a",
    KANNEL_FIELDS.message_id: "%I",
    KANNEL_FIELDS.coding: "%c",
    KANNEL_FIELDS.charset: "%C",
    KANNEL_FIELDS.received_at: "%T",
}


def groups(name: str) -> dict[str, dict[str, str]]:
    """The sample file's groups by name (each appears once in the sample)."""
    found = parse_groups((SAMPLE / name).read_text())
    assert len({g for g, _ in found}) == len(found), f"{name} repeats a group"
    return {g: settings for g, settings in found}


def callbackd_side() -> configparser.ConfigParser:
    parser = configparser.ConfigParser(inline_comment_prefixes=None)
    parser.read_string((SAMPLE / "callbackd-sms.ini").read_text())
    return parser


@pytest.fixture
def kannel(tmp_path):
    """A Kannel object (not started): its config written, as the tests run it."""
    return Kannel(tmp_path, "http://127.0.0.1:9/sms/kannel")


@pytest.mark.parametrize("name", ["kannel.conf", "smsbox.conf"])
def test_the_tests_run_the_sample_with_only_ports_paths_and_secrets_changed(kannel, name):
    sample = parse_groups((SAMPLE / name).read_text())
    rendered = parse_groups((kannel.dir / name).read_text())
    changed = kannel.values()[name]
    assert [g for g, _ in rendered] == [g for g, _ in sample]
    for (group, before), (_, after) in zip(sample, rendered, strict=True):
        assert list(after) == list(before)
        for key in before:
            if key not in changed.get(group, {}):
                assert after[key] == before[key], (group, key)
    assert {line.strip() for line in (kannel.dir / name).read_text().splitlines()} >= {
        line.strip()
        for line in (SAMPLE / name).read_text().splitlines()
        if line.lstrip().startswith("#")
    }


def test_the_include_is_replaced_too(kannel):
    text = (kannel.dir / "kannel.conf").read_text()
    assert f'include = "{kannel.dir / "smsbox.conf"}"' in text
    assert 'include = "/etc/kannel/smsbox.conf"' in (SAMPLE / "kannel.conf").read_text()


def test_render_refuses_a_key_the_sample_lost():
    with pytest.raises(KeyError, match="sendsms-port"):
        render("group = smsbox\nbearerbox-port = 1\n", {"smsbox": {"sendsms-port": "2"}})
    with pytest.raises(KeyError, match="sendsms_url"):
        render(
            "[sms-gateway:kannel]\nsend = kannel\n",
            {"sms-gateway:kannel": {"sendsms_url": "x"}},
            group_line=INI_SECTION,
        )


def test_the_get_url_sends_every_field_callbackd_reads():
    service = groups("smsbox.conf")["sms-service"]
    url = urllib.parse.urlsplit(unquote(service["get-url"]))
    fields = dict(part.split("=", 1) for part in url.query.split("&"))
    gateway = callbackd_side()["sms-gateway:kannel"]
    token_field = gateway.get("token_field", cfg.SmsGatewayConfig.token_field)
    assert fields.pop(token_field)
    assert fields == ESCAPES
    # it points at the gateway's webhook on callbackd's default [web] listen
    assert url.path == "/sms/kannel"
    port = cfg.WebConfig().listen.split(":")[1]
    assert url.netloc == f"127.0.0.1:{port}"


def test_the_get_url_is_filled_in_as_smsbox_does():
    url = fill_get_url(
        "http://h/sms/kannel?from=%p&to=%P&text=%a&id=%I&coding=%c&charset=%C&ts=%T",
        sender="+1555",
        receiver="1666",
        text="U.a P.b+c&d",
        message_id="x",
        time="17",
    )
    assert url == (
        "http://h/sms/kannel?from=%2B1555&to=1666&text=U.a%20P.b%2Bc%26d&id=x"
        "&coding=0&charset=UTF-8&ts=17"
    )


def test_smsbox_settings_callbackd_relies_on():
    smsbox = groups("smsbox.conf")
    # UCS-2 arrives as UTF-8; a failed delivery is retried (the same %I), not dropped
    assert smsbox["smsbox"]["mo-recode"] == "true"
    assert int(smsbox["smsbox"]["http-request-retry"]) > 0
    # callbackd's answer is never sent back as an SMS (its replies go through sendsms)
    assert smsbox["sms-service"]["max-messages"] == "0"
    assert smsbox["smsbox"]["bearerbox-port"] == groups("kannel.conf")["core"]["smsbox-port"]


def test_both_sides_agree_on_sendsms():
    smsbox = groups("smsbox.conf")
    gateway = callbackd_side()["sms-gateway:kannel"]
    assert gateway["format"] == "kannel"
    assert gateway["send"] == "kannel"
    assert gateway["sendsms_url"] == f"http://127.0.0.1:{smsbox['smsbox']['sendsms-port']}"
    assert gateway["sendsms_username"] == unquote(smsbox["sendsms-user"]["username"])
    # every part of a reply callbackd sends fits what the sendsms-user may send
    max_segments = int(callbackd_side()["sms"]["max_segments"])
    assert int(smsbox["sendsms-user"]["max-messages"]) >= max_segments


def test_the_callbackd_side_is_a_valid_config(kannel):
    config = cfg.parse_config(kannel.callbackd_config(), Path(kannel.dir / "callbackd.ini"), {})
    [gateway] = config.sms_gateways
    assert config.sms.enabled
    assert (gateway.name, gateway.format, gateway.send) == ("kannel", "kannel", "kannel")
    assert gateway.token.reveal() == kannel.token
    assert gateway.sendsms_password.reveal() == kannel.password
    assert gateway.sendsms_url == kannel.sendsms_url
