"""Tests for callbackd.config: typed sections, every error at once, secrets."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from callbackd import config as cfg

ROOT = Path(__file__).resolve().parent.parent


def parse(text: str, environ: dict[str, str] | None = None, path: Path | None = None) -> cfg.Config:
    return cfg.parse_config(text, path or Path("/nonexistent/callbackd.ini"), environ or {})


def problems(
    text: str, environ: dict[str, str] | None = None, path: Path | None = None
) -> list[str]:
    with pytest.raises(cfg.ConfigError) as info:
        parse(text, environ, path)
    return info.value.problems


def test_empty_file_gives_defaults():
    """An empty file is a valid config with every default."""
    c = parse("")
    assert c.daemon.node_id == "cb1"
    assert c.redis.mode == "embedded"
    assert c.ami.mode == "simulated"
    assert c.providers == ()


def test_no_gateway_is_offered_unless_configured():
    """The [gateways] templates default to empty: no sip: or xmpp: leg without a gateway."""
    c = parse("")
    assert (c.gateways.sip, c.gateways.xmpp, c.gateways.msn, c.gateways.yahoo) == ("",) * 4


def test_values_are_typed():
    """Integers, floats, booleans and paths arrive converted."""
    c = parse(
        "[redis]\nport = 6380\ntimeout = 2.5\n[daemon]\ndemo_data = yes\nstate_dir = /srv/cb\n"
    )
    assert c.redis.port == 6380
    assert c.redis.timeout == 2.5
    assert c.daemon.demo_data is True
    assert c.daemon.state_dir == Path("/srv/cb")


def test_sections_are_frozen():
    """A loaded config cannot be changed by accident."""
    c = parse("")
    with pytest.raises(dataclasses.FrozenInstanceError):
        c.redis.port = 1  # type: ignore[misc]


def test_five_mistakes_are_all_named():
    """A config with five mistakes names all five, each with section and key."""
    text = (
        "[daemon]\nnode_id = not valid!\ncolour = blue\n"
        "[redis]\nport = seventy\n"
        "[ami]\nmode = pbx\n"
        "[nonsense]\nx = 1\n"
    )
    found = problems(text)
    assert len(found) == 5
    assert any(p.startswith("[daemon] node_id:") for p in found)
    assert any(p.startswith("[daemon] colour: unknown key") for p in found)
    assert any(p.startswith("[redis] port: expected an integer") for p in found)
    assert any(p.startswith("[ami] mode: must be one of") for p in found)
    assert any(p.startswith("[nonsense]: unknown section") for p in found)


def test_out_of_range_number_is_refused():
    """Bounds are checked and reported with the offending value."""
    assert problems("[redis]\nport = 70000\n") == ["[redis] port: must be at most 65535, got 70000"]


def test_bad_boolean_is_refused():
    """A boolean must be yes/no (or true/false, on/off, 1/0)."""
    assert problems("[daemon]\ndemo_data = maybe\n") == [
        "[daemon] demo_data: expected yes or no, got 'maybe'"
    ]


def test_secret_in_plain_text_is_refused():
    """Secrets may not be written into the config file itself."""
    found = problems("[redis]\npassword = hunter2\n")
    assert found == [
        "[redis] password: secrets are not written in the config; use password_file or password_env"
    ]
    assert "hunter2" not in "".join(found)


def test_secret_from_file(tmp_path):
    """A *_file key reads the secret from that file, relative to the config."""
    (tmp_path / "redis.pw").write_text("s3cret\n")
    c = parse("[redis]\npassword_file = redis.pw\n", path=tmp_path / "c.ini")
    assert c.redis.password.reveal() == "s3cret"


def test_secret_from_environment():
    """A *_env key reads the secret from the named environment variable."""
    c = parse("[ami]\nsecret_env = AMI_SECRET\n", environ={"AMI_SECRET": "xyzzy"})
    assert c.ami.secret.reveal() == "xyzzy"


def test_unreadable_secret_file_is_reported(tmp_path):
    """A secret file that cannot be read is an error naming section and key."""
    found = problems("[redis]\npassword_file = missing.pw\n", path=tmp_path / "c.ini")
    assert len(found) == 1
    assert found[0].startswith("[redis] password_file: cannot read ")


def test_missing_environment_variable_is_reported():
    """A secret from an unset environment variable is an error."""
    assert problems("[ami]\nsecret_env = NOPE\n") == [
        "[ami] secret_env: environment variable NOPE is not set"
    ]


def test_secret_never_shows_in_repr():
    """Printing a config (or a secret) never prints the secret."""
    c = parse("[ami]\nsecret_env = S\n", environ={"S": "topsecret"})
    assert "topsecret" not in repr(c)
    assert "topsecret" not in str(c.ami.secret)


def test_asterisk_mode_requires_secret():
    """Talking to a real Asterisk needs an AMI secret."""
    assert problems("[ami]\nmode = asterisk\n") == [
        "[ami] secret: required when mode = asterisk (secret_file or secret_env)"
    ]


def test_providers_are_loaded_in_order(tmp_path):
    """[provider:NAME] sections become ProviderConfigs with their names."""
    (tmp_path / "p.csv").write_text("49,0.01\n")
    (tmp_path / "m.csv").write_text("49,0.01\n")
    c = parse(
        "[provider:PROXICOM]\ndial = PJSIP/{number}@proxicom\nrates = p.csv\nchannels = 5\n"
        "[provider:MKS]\ndial = PJSIP/{number}@mks\nrates = m.csv\n",
        path=tmp_path / "c.ini",
    )
    assert [p.name for p in c.providers] == ["PROXICOM", "MKS"]
    assert c.providers[0].channels == 5


def test_provider_needs_dial_and_rates():
    """A provider without a dial template or rates is an error."""
    found = problems("[provider:X]\nchannels = 2\n")
    assert sorted(found) == ["[provider:X] dial: required", "[provider:X] rates: required"]


def test_provider_dial_needs_number_placeholder(tmp_path):
    """A dial template must say where the number goes."""
    (tmp_path / "r.csv").write_text("")
    found = problems("[provider:X]\ndial = PJSIP/trunk\nrates = r.csv\n", path=tmp_path / "c.ini")
    assert found == ["[provider:X] dial: must contain {number} or {e164}"]


def test_missing_rate_files_are_reported(tmp_path):
    """Tariff and provider rate files that cannot be read are named with section and key."""
    found = problems(
        "[billing]\ntariff = nope.csv\n[provider:X]\ndial = PJSIP/{number}@x\nrates = none.csv\n",
        path=tmp_path / "c.ini",
    )
    assert len(found) == 2
    assert found[0].startswith("[billing] tariff: cannot read ")
    assert found[1].startswith("[provider:X] rates: cannot read ")


@pytest.mark.parametrize(
    ("section", "description", "reason"),
    [
        ("web", "notanendpoint:::", "Unknown endpoint type"),
        ("web", "tcp:lots", "invalid literal"),
        ("manhole", "tcp:2222:colour=blue", "unexpected keyword"),
        ("simulator", "unix:/tmp/x.sock:mode=rw", "invalid literal"),
        ("web", "tcp:0:interface=::1", "multiple values"),
    ],
)
def test_a_malformed_strports_endpoint_is_refused(section, description, reason):
    """Every listen key is parsed as twistd will (nothing listens): a bad one is named."""
    [found] = problems(f"[{section}]\nlisten = {description}\n")
    assert found.startswith(f"[{section}] listen: {description!r} is not a strports endpoint: ")
    assert reason in found


def test_every_bad_endpoint_is_named_at_once():
    """The web, manhole and simulator endpoints are each checked."""
    found = problems("[web]\nlisten = a:b\n[manhole]\nlisten = b:c\n[simulator]\nlisten = tcp:x\n")
    assert [f.split(":")[0] for f in found] == [
        "[web] listen",
        "[manhole] listen",
        "[simulator] listen",
    ]


@pytest.mark.parametrize(
    "description",
    ["tcp:8080:interface=127.0.0.1", "tcp6:8080:interface=\\:\\:1", "unix:/run/cb.sock:mode=660"],
)
def test_good_strports_endpoints_pass(description):
    """Well-formed endpoints of the usual kinds are accepted as they are."""
    assert parse(f"[web]\nlisten = {description}\n").web.listen == description


def test_unparseable_file_is_one_clear_error():
    """Text that is not INI at all is reported, not a traceback."""
    found = problems("this is not ini\n")
    assert len(found) == 1 and "cannot parse" in found[0]


def test_relative_paths_resolve_against_config_dir(tmp_path):
    """state_dir and other paths are relative to the config file."""
    c = parse("[daemon]\nstate_dir = ../var\n", path=tmp_path / "etc" / "c.ini")
    assert c.state_dir == tmp_path / "etc" / ".." / "var"


def test_blocked_prefixes_are_split():
    """blocked_prefixes is a comma list of digit prefixes."""
    c = parse("[routing]\nblocked_prefixes = +1900, 44870 ,\n")
    assert c.routing.blocked == ("1900", "44870")


@given(st.text(max_size=200))
def test_arbitrary_text_never_crashes(text):
    """Any text either parses or raises ConfigError, nothing else."""
    try:
        parse(text)
    except cfg.ConfigError as e:
        assert e.problems


def _schema_keys() -> set[tuple[str, str]]:
    keys = set()
    for section, cls in cfg.SECTIONS.items():
        for f in dataclasses.fields(cls):
            name = f.name + ("_file" if f.type in ("Secret", cfg.Secret) else "")
            keys.add((section, name))
    for kind, cls in cfg.PATTERN_SECTIONS.items():
        for f in dataclasses.fields(cls):
            if not f.metadata.get("internal"):
                name = f.name + ("_file" if f.type in ("Secret", cfg.Secret) else "")
                keys.add((f"{kind}:NAME", name))
    return keys


def test_example_documents_every_key():
    """etc/callbackd.ini.example mentions every section and key of the schema (a section
    commented out, as [switch:NAME] is, too)."""
    text = (ROOT / "etc" / "callbackd.ini.example").read_text()
    section = None
    seen: set[tuple[str, str]] = set()
    for line in text.splitlines():
        m = re.match(r"^(?:; )?\[([\w-]+)(:\w+)?\]", line)
        if m:
            section = m.group(1) + (":NAME" if m.group(2) else "")
            continue
        m = re.match(r"^;?\s*(\w+)\s*=", line)
        if m and section:
            seen.add((section, m.group(1)))
    assert _schema_keys() - seen == set()


def test_example_and_demo_configs_load(tmp_path, monkeypatch):
    """The shipped example and demo configs load without a single problem."""
    for name in ("callbackd.ini.example", "callbackd.ini"):
        c = cfg.load_config(ROOT / "etc" / name, environ={})
        assert c.daemon.node_id == "cb1"


def test_describe_lists_every_section():
    """--help-config output names every section."""
    text = cfg.describe()
    for section in cfg.SECTIONS:
        assert f"[{section}]" in text
    assert "[provider:NAME]" in text


def test_sms_gateways_are_checked(tmp_path):
    """An [sms-gateway:NAME] open to anyone, a signed GET, a bad network or recipient,
    a sending gateway without its URL, and [sms] without a gateway that sends: each named."""
    text = """
[sms]
enabled = yes
[sms-gateway:open]
format = form
[sms-gateway:k]
format = kannel
signature_secret_env = S
allow = 10.0.0.x
[sms-gateway:fw]
format = forwarder
allow = 127.0.0.1
recipient = our phone
send = kannel
"""
    with pytest.raises(cfg.ConfigError) as e:
        cfg.parse_config(text, tmp_path / "c.ini", {"S": "x"})
    problems = "\\n".join(e.value.problems)
    assert "[sms-gateway:open]: needs token, signature_secret or allow" in problems
    assert "[sms-gateway:k] signature_secret: a get-url request has no body" in problems
    assert "[sms-gateway:k] allow: not an address or network: '10.0.0.x'" in problems
    assert "[sms-gateway:fw] recipient: 'our phone' is not a phone number" in problems
    assert "[sms-gateway:fw]: send = kannel needs sendsms_url and sendsms_username" in problems


def test_sms_default_gateway_must_send(tmp_path):
    base = "[sms]\nenabled = yes\n{default}\n[sms-gateway:in]\nformat = form\nallow = ::1\n"
    with pytest.raises(cfg.ConfigError) as e:
        cfg.parse_config(base.format(default=""), tmp_path / "c.ini", {})
    assert "no [sms-gateway:NAME] sends replies" in str(e.value)
    with pytest.raises(cfg.ConfigError) as e:
        cfg.parse_config(base.format(default="default_gateway = in"), tmp_path / "c.ini", {})
    assert "[sms] default_gateway: [sms-gateway:in] sends none" in str(e.value)
    config = cfg.parse_config(base.format(default="") + "send = log\n", tmp_path / "c.ini", {})
    assert [g.name for g in config.sms_gateways] == ["in"] and config.sms.enabled


# -- several daemons ([cluster]) ---------------------------------------------------------


def test_cluster_is_off_by_default_and_its_lease_outlives_two_renewals():
    assert parse("").cluster.enabled is False
    config = parse("[cluster]\nenabled = yes\nrenew_interval = 1\nlease = 3\n")
    assert (config.cluster.enabled, config.cluster.renew_interval, config.cluster.lease) == (
        True,
        1.0,
        3.0,
    )
    with pytest.raises(cfg.ConfigError) as e:
        parse("[cluster]\nrenew_interval = 2\nlease = 3\n")
    assert "[cluster] lease: at least twice renew_interval" in str(e.value)


# -- [redis] sentinel mode and replicated writes -------------------------------------------


def test_redis_sentinel_mode(tmp_path):
    """mode = sentinel with its sentinels (IPv6 too), master name and password file."""
    (tmp_path / "sentinel.pw").write_text("s3cret\n")
    c = parse(
        "[redis]\nmode = sentinel\nsentinels = 10.0.0.1:26379, [::1]:26380 ,s3.example:26381\n"
        "master_name = callbackd\nsentinel_password_file = sentinel.pw\n"
        "wait_replicas = 1\nwait_timeout = 0.5\n",
        path=tmp_path / "callbackd.ini",
    )
    assert c.redis.sentinel_addresses == [
        ("10.0.0.1", 26379),
        ("::1", 26380),
        ("s3.example", 26381),
    ]
    assert (c.redis.master_name, c.redis.wait_replicas, c.redis.wait_timeout) == (
        "callbackd",
        1,
        0.5,
    )
    assert c.redis.sentinel_password.reveal() == "s3cret"


def test_redis_sentinel_mode_needs_its_keys():
    """Sentinel mode without sentinels or master name, a bad address, a WAIT that would
    outlast the reply timeout: each reported."""
    assert problems("[redis]\nmode = sentinel\n") == [
        "[redis] sentinels: required when mode = sentinel",
        "[redis] master_name: required when mode = sentinel",
    ]
    found = problems(
        "[redis]\nmode = sentinel\nsentinels = a:1, b\nmaster_name = m\n"
        "timeout = 2\nwait_replicas = 1\nwait_timeout = 2\n"
    )
    assert found == [
        "[redis] sentinels: 'b' is not host:port",
        "[redis] wait_timeout: must be less than timeout (2), got 2",
    ]


@given(st.text(max_size=40))
def test_sentinel_addresses_parse_or_raise_value_error(text):
    """Any sentinels text gives (host, port) pairs with ports in range, or ValueError."""
    redis = cfg.RedisConfig(mode="sentinel", sentinels=text, master_name="m")
    try:
        pairs = redis.sentinel_addresses
    except ValueError:
        return
    assert all(host and 0 < port < 65536 for host, port in pairs)


def test_switch_sections_take_amis_keys_as_defaults(tmp_path):
    """[switch:NAME]: every key not given is [ami]'s; without any, [ami] is "default"."""
    text = (
        "[ami]\nusername = cb\ncontext = my-conf\nsecret_env = S\n"
        "[switch:a]\nmode = asterisk\nhost = 10.0.0.11\n"
        "[switch:b]\nweight = 0\nlisten = tcp:0:interface=127.0.0.1\n"
    )
    c = cfg.parse_config(text, tmp_path / "c.ini", {"S": "x"})
    a, b = c.switches
    assert (a.name, a.mode, a.host, a.username, a.context, a.weight) == (
        "a",
        "asterisk",
        "10.0.0.11",
        "cb",
        "my-conf",
        1,
    )
    assert a.secret.reveal() == "x"
    assert (b.name, b.mode, b.weight) == ("b", "simulated", 0)
    assert c.switch_list == c.switches
    alone = cfg.parse_config("[ami]\nusername = cb\n", tmp_path / "c.ini", {})
    [default] = alone.switch_list
    assert (default.name, default.username, default.weight) == ("default", "cb", 1)


@pytest.mark.parametrize(
    "text, problem",
    [
        ("[switch:a b]\n", "[switch:a b]: name must match"),
        ("[switch:a]\nring_timeout = 30\n", "[switch:a] ring_timeout: set in [ami]"),
        ("[switch:a]\nmode = asterisk\n", "[switch:a] secret: required when mode = asterisk"),
        ("[switch:a]\nweight = -1\n", "[switch:a] weight: must be at least 0"),
        ("[switch:a]\nweight = 0\n", "at least one switch needs a weight above 0"),
        ("[switch:a]\nlisten = nonsense:1\n", "[switch:a] listen: 'nonsense:1' is not"),
        ("[switch:a]\nsecret = x\n", "[switch:a] secret: secrets are not written"),
    ],
)
def test_bad_switch_sections_are_named(tmp_path, text, problem):
    with pytest.raises(cfg.ConfigError) as info:
        cfg.parse_config(text, tmp_path / "c.ini", {})
    assert any(p.startswith(problem) or problem in p for p in info.value.problems), info.value
