"""The daemon's configuration: one INI file loaded into frozen, typed objects.

Every section is a frozen dataclass whose fields are the allowed keys. The loader
checks the whole file and reports every mistake at once (section, key, what is
wrong), so an operator fixes a config in one pass. Secrets are never read from the
INI itself: a ``*_file`` key names a file and a ``*_env`` key an environment
variable; the value is held in a :class:`Secret`, whose ``repr`` hides it.
"""

from __future__ import annotations

import configparser
import dataclasses
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, get_type_hints

from twisted.internet.endpoints import serverFromString

from callbackd.amievents import MANAGER_EVENTS, parse_event_filter

__all__ = [
    "AMIConfig",
    "ApiConfig",
    "BillingConfig",
    "ClusterConfig",
    "Config",
    "ConfigError",
    "DaemonConfig",
    "GatewaysConfig",
    "IvrConfig",
    "ManholeConfig",
    "PortalConfig",
    "ProviderConfig",
    "RedisConfig",
    "RoutingConfig",
    "Secret",
    "SimulatorConfig",
    "SmsConfig",
    "SmsGatewayConfig",
    "SwitchConfig",
    "WebConfig",
    "XMPPConfig",
    "load_config",
    "parse_config",
]


class ConfigError(Exception):
    """The configuration has one or more mistakes; ``problems`` lists them all."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("\n".join(problems))
        self.problems = problems


class Secret:
    """A secret value that never shows itself in logs, reprs or tracebacks."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        """The secret itself: call only where it is sent to its one consumer."""
        return self._value

    def __bool__(self) -> bool:
        return bool(self._value)

    def __repr__(self) -> str:
        return "Secret('********')" if self._value else "Secret('')"

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(("Secret", self._value))


_NODE_ID = re.compile(r"^[A-Za-z0-9]{1,12}$")
_PROVIDER_NAME = re.compile(r"^[A-Za-z0-9_-]{1,32}$")


def _choice(*allowed: str) -> dict[str, Any]:
    return {"choices": allowed}


def _meta(doc: str, **extra: Any) -> dict[str, Any]:
    return {"doc": doc, **extra}


@dataclass(frozen=True)
class DaemonConfig:
    """[daemon]: identity and local state of this daemon."""

    node_id: str = field(
        default="cb1",
        metadata=_meta(
            "short id of this daemon, part of session ids and AMI ActionIDs", pattern=_NODE_ID
        ),
    )
    state_dir: Path = field(
        default=Path("var"),
        metadata=_meta(
            "directory for the embedded redis, host keys and other local state; "
            "relative paths are relative to the config file"
        ),
    )
    demo_data: bool = field(
        default=False,
        metadata=_meta("create demo accounts (alice/bob) with credit at start if missing"),
    )
    gc_threshold: int = field(
        default=20000,
        metadata=_meta(
            "Python's cyclic garbage collector runs after this many container objects were"
            " allocated and not freed (Python's default, 700, made it a tenth of the CPU at"
            " hundreds of calls a second; 0 keeps Python's default)",
            min=0,
        ),
    )


@dataclass(frozen=True)
class RedisConfig:
    """[redis]: where state lives."""

    mode: str = field(
        default="embedded",
        metadata=_meta(
            "embedded: start a private redis-server on a unix socket in state_dir; "
            "external: connect to host/port or unix_socket; "
            "sentinel: follow the primary named master_name by the sentinels",
            **_choice("embedded", "external", "sentinel"),
        ),
    )
    host: str = field(default="127.0.0.1", metadata=_meta("external redis host"))
    port: int = field(default=6379, metadata=_meta("external redis port", min=1, max=65535))
    unix_socket: str = field(
        default="", metadata=_meta("external redis unix socket (overrides host/port)")
    )
    db: int = field(default=0, metadata=_meta("redis database number", min=0, max=15))
    password: Secret = field(default=Secret(""), metadata=_meta("redis password", secret=True))
    timeout: float = field(
        default=5.0, metadata=_meta("seconds before a redis command is given up", min=0.1)
    )
    redis_server: str = field(
        default="redis-server", metadata=_meta("redis-server binary for embedded mode")
    )
    # -- Sentinel and replicated writes (docs/operations.rst, "Redis")
    sentinels: str = field(
        default="", metadata=_meta("sentinel mode: the sentinels, host:port, comma-separated")
    )
    master_name: str = field(
        default="", metadata=_meta("sentinel mode: the name the sentinels monitor the primary by")
    )
    sentinel_password: Secret = field(
        default=Secret(""), metadata=_meta("the sentinels' own password, if any", secret=True)
    )
    wait_replicas: int = field(
        default=0,
        metadata=_meta(
            "charges, CDRs and voucher redemptions are acknowledged only once this many "
            "replicas have them (WAIT); 0: once the primary has them",
            min=0,
            max=16,
        ),
    )
    wait_timeout: float = field(
        default=1.0,
        metadata=_meta("seconds WAIT waits for the replicas (less than timeout)", min=0.01),
    )

    @property
    def sentinel_addresses(self) -> list[tuple[str, int]]:
        """``sentinels`` as (host, port) pairs; ValueError naming a bad one."""
        return [_host_port(item) for item in self.sentinels.split(",") if item.strip()]


def _host_port(text: str) -> tuple[str, int]:
    """``host:port`` (``[v6]:port`` too) as a pair; ValueError for anything else."""
    host, sep, port = text.strip().rpartition(":")
    host = host.removeprefix("[").removesuffix("]")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"{text.strip()!r} is not host:port")
    return host, int(port)


def _check_redis(redis: RedisConfig | None, problems: list[str]) -> None:
    """Sentinel mode's keys, and a WAIT that ends before the command's reply timeout."""
    if redis is None:
        return
    if redis.mode == "sentinel":
        try:
            if not redis.sentinel_addresses:
                problems.append("[redis] sentinels: required when mode = sentinel")
        except ValueError as e:
            problems.append(f"[redis] sentinels: {e}")
        if not redis.master_name:
            problems.append("[redis] master_name: required when mode = sentinel")
    if redis.wait_replicas and redis.wait_timeout >= redis.timeout:
        problems.append(
            f"[redis] wait_timeout: must be less than timeout ({redis.timeout:g}), "
            f"got {redis.wait_timeout:g}"
        )


@dataclass(frozen=True)
class AMIConfig:
    """[ami]: the switch. ``simulated`` runs the built-in simulated Asterisk."""

    mode: str = field(
        default="simulated",
        metadata=_meta(
            "simulated: the built-in simulated Asterisk on a loopback port; "
            "asterisk: a real Asterisk at host/port",
            **_choice("simulated", "asterisk"),
        ),
    )
    host: str = field(default="127.0.0.1", metadata=_meta("Asterisk AMI host"))
    port: int = field(default=5038, metadata=_meta("Asterisk AMI port", min=1, max=65535))
    username: str = field(default="callbackd", metadata=_meta("manager.conf user"))
    secret: Secret = field(
        default=Secret(""),
        metadata=_meta(
            "manager.conf secret (required in asterisk mode; random per run when simulated)",
            secret=True,
        ),
    )
    auth: str = field(default="md5", metadata=_meta("login method", **_choice("md5", "plain")))
    action_timeout: float = field(
        default=10.0, metadata=_meta("seconds to wait for any action's response", min=0.1)
    )
    ping_interval: float = field(
        default=15.0, metadata=_meta("seconds between keepalive Pings", min=1.0)
    )
    ping_timeout: float = field(
        default=5.0, metadata=_meta("seconds without a Ping response before reconnecting", min=0.1)
    )
    reconnect_max_delay: float = field(
        default=2.0,
        metadata=_meta(
            "longest wait in seconds between reconnect attempts (the back-off starts at"
            " 0.5 s and doubles up to this, jitter included)",
            min=0.5,
        ),
    )
    context: str = field(
        default="cb-conf", metadata=_meta("dialplan context the legs are originated into")
    )
    caller_id: str = field(
        default="Callback <+15551000>", metadata=_meta("CallerID presented on originated legs")
    )
    ring_timeout: int = field(
        default=45,
        metadata=_meta("seconds a leg may ring before it counts as no answer", min=1, max=600),
    )
    log_actions: bool = field(
        default=False,
        metadata=_meta("log every Originate (at debug level); off costs nothing per call"),
    )


# -- several Asterisk servers ([switch:NAME]) -------------------------------------------


@dataclass(frozen=True)
class SwitchConfig(AMIConfig):
    """[switch:NAME]: one of several Asterisk servers (docs/operations.rst).

    Every [ami] key but ``ring_timeout`` (which holds for every switch), each
    defaulting to [ami]'s value; with any [switch:NAME] section [ami] configures no
    switch of its own. Without one, [ami] is the one switch, named ``default``.
    """

    name: str = field(default="", metadata=_meta("(from the section name)", internal=True))
    ring_timeout: int = field(
        default=45, metadata=_meta("[ami]'s: it holds for every switch", internal=True)
    )
    weight: int = field(
        default=1,
        metadata=_meta(
            "share of the new sessions placed on this switch (0: none, it keeps its own)",
            min=0,
            max=1000,
        ),
    )
    listen: str = field(
        default="tcp:0:interface=127.0.0.1",
        metadata=_meta("mode = simulated: strports endpoint of its simulated Asterisk's AMI"),
    )


#: the [ami] keys a [switch:NAME] section may not set (they hold for every switch)
_SWITCH_WIDE = ("ring_timeout",)


@dataclass(frozen=True)
class SimulatorConfig:
    """[simulator]: the built-in simulated Asterisk (used when [ami] mode = simulated, and
    by every [switch:NAME] with mode = simulated, each listening on its own listen)."""

    listen: str = field(
        default="tcp:0:interface=127.0.0.1", metadata=_meta("strports endpoint of its AMI server")
    )
    time_scale: float = field(
        default=1.0, metadata=_meta("multiply every simulated delay (tests use < 1)", min=0.0)
    )
    rules: str = field(
        default="",
        metadata=_meta(
            "callee rules, whitespace separated, e.g. '1555002=busy @pakline=congestion'"
            " (see docs/simulator.rst)"
        ),
    )
    event_filter: str = field(
        default=",".join(MANAGER_EVENTS),
        metadata=_meta(
            "comma-separated AMI event names its sessions get, like manager.conf's"
            " eventfilter(name(X)) lines (default: those of etc/asterisk/manager.conf);"
            " empty = every event",
            pattern=re.compile(r"^[A-Za-z0-9_,\s-]*$"),
        ),
    )

    @property
    def event_names(self) -> frozenset[str] | None:
        """The event filter as a set of names; None = no filter."""
        return parse_event_filter(self.event_filter)


@dataclass(frozen=True)
class WebConfig:
    """[web]: HTTP (health check, metrics, the web portal, REST and SMS hooks)."""

    listen: str = field(default="tcp:8080:interface=127.0.0.1", metadata=_meta("strports endpoint"))


@dataclass(frozen=True)
class ManholeConfig:
    """[manhole]: an SSH Python shell for operators, loopback only by default."""

    enabled: bool = field(default=True, metadata=_meta("run the manhole"))
    listen: str = field(default="tcp:2222:interface=127.0.0.1", metadata=_meta("strports endpoint"))
    authorized_keys: str = field(
        default="", metadata=_meta("file of SSH public keys allowed in (user = any)")
    )
    passwords: str = field(
        default="", metadata=_meta("file of 'user:bcrypt-hash' lines allowed in")
    )
    host_key: str = field(
        default="", metadata=_meta("SSH host private key; generated in state_dir if empty")
    )


@dataclass(frozen=True)
class BillingConfig:
    """[billing]: money and rating."""

    currency: str = field(
        default="EUR",
        metadata=_meta("ISO currency code shown to users", pattern=re.compile(r"^[A-Z]{3}$")),
    )
    decimals: int = field(
        default=5, metadata=_meta("money is integer minor units of 10**-decimals", min=0, max=8)
    )
    default_region: str = field(
        default="DE",
        metadata=_meta("region for national phone numbers", pattern=re.compile(r"^[A-Z]{2}$")),
    )
    tariff: str = field(
        default="",
        metadata=_meta(
            "sell tariff CSV: prefix,price_per_minute[,connect_fee,initial_increment,increment]"
        ),
    )


@dataclass(frozen=True)
class RoutingConfig:
    """[routing]: how providers are ranked."""

    window: int = field(
        default=3600,
        metadata=_meta("seconds of history that ASR/ACD/PDD are computed over", min=60),
    )
    min_attempts: int = field(
        default=5, metadata=_meta("attempts before a provider's quality counts", min=0)
    )
    blocked_prefixes: str = field(
        default="",
        metadata=_meta(
            "comma-separated E.164 prefixes never dialled (premium ranges), e.g. 1900,44870"
        ),
    )

    @property
    def blocked(self) -> tuple[str, ...]:
        """The blocked prefixes as digit strings."""
        return tuple(p.strip().lstrip("+") for p in self.blocked_prefixes.split(",") if p.strip())


@dataclass(frozen=True)
class GatewaysConfig:
    """[gateways]: dial templates for legs that are not phone numbers (empty = not offered)."""

    sip: str = field(
        default="",
        metadata=_meta(
            "template for sip:user@host legs ({user}, {host}), e.g. "
            "PJSIP/callbackd-sip/sip:{user}@{host}"
        ),
    )
    xmpp: str = field(
        default="",
        metadata=_meta(
            "template for xmpp: and gtalk: legs (chan_motif), e.g. "
            "Motif/callbackd-xmpp/{user}@{host}"
        ),
    )
    msn: str = field(
        default="", metadata=_meta("template for msn: legs (needs an operator gateway)")
    )
    yahoo: str = field(
        default="", metadata=_meta("template for yahoo: legs (needs an operator gateway)")
    )


@dataclass(frozen=True)
class ProviderConfig:
    """[provider:NAME]: one VoIP provider."""

    name: str = field(default="", metadata=_meta("(from the section name)", internal=True))
    dial: str = field(
        default="",
        metadata=_meta("dial template with {number}, e.g. PJSIP/{number}@trunk", required=True),
    )
    rates: str = field(
        default="",
        metadata=_meta(
            "buy-rate CSV: prefix,price_per_minute; the prefixes this provider reaches",
            required=True,
        ),
    )
    channels: int = field(default=30, metadata=_meta("concurrent legs this provider takes", min=1))


_DOMAIN = re.compile(r"^[a-z0-9]([a-z0-9.-]{0,251}[a-z0-9])?$")


@dataclass(frozen=True)
class XMPPConfig:
    """[xmpp]: the chat front, an XMPP server component (XEP-0114), e.g. of Prosody."""

    enabled: bool = field(
        default=False,
        metadata=_meta("connect to the XMPP server as a component (needs domain and secret)"),
    )
    domain: str = field(
        default="",
        metadata=_meta(
            "the component's domain, as in the server's Component line, e.g. callback.example.org",
            pattern=re.compile(r"^$|" + _DOMAIN.pattern),
        ),
    )
    host: str = field(
        default="127.0.0.1", metadata=_meta("the XMPP server's component listener host")
    )
    port: int = field(
        default=5347, metadata=_meta("the XMPP server's component port", min=1, max=65535)
    )
    secret: Secret = field(
        default=Secret(""),
        metadata=_meta("the component secret (component_secret in Prosody)", secret=True),
    )
    reconnect_max_delay: float = field(
        default=10.0,
        metadata=_meta(
            "longest wait in seconds between reconnect attempts (the back-off starts at"
            " 0.5 s and doubles up to this, jitter included)",
            min=0.5,
        ),
    )


# --- FastAGI (the IVR) -------------------------------------------------------------


@dataclass(frozen=True)
class AGIConfig:
    """[agi]: the FastAGI server Asterisk hands IVR calls to (``AGI(agi://host:4573/ivr)``)."""

    enabled: bool = field(default=False, metadata=_meta("run the FastAGI server"))
    listen: str = field(
        default="tcp:4573:interface=127.0.0.1",
        metadata=_meta("strports endpoint; FastAGI has no authentication: keep it on loopback"),
    )
    max_connections: int = field(
        default=1000,
        metadata=_meta("FastAGI connections open at once; more are closed at once", min=1),
    )
    command_timeout: float = field(
        default=30.0,
        metadata=_meta(
            "seconds Asterisk may take to answer a command, beyond the command's own"
            " waiting time (a timed-out session is closed)",
            min=0.1,
        ),
    )


# -- [ivr]: the phone callback (FastAGI IVR) ----------------------------------------------

_IVR_LANGUAGE = "(?:en|es|fr|vi|zh)"
_ACCESS_NUMBERS = re.compile(
    rf"^\s*$|^\s*[0-9]{{3,15}}(?::{_IVR_LANGUAGE})?\s*(?:,\s*[0-9]{{3,15}}(?::{_IVR_LANGUAGE})?\s*)*$"
)
_DIDS = re.compile(
    r"^\s*$|^\s*[0-9]{3,15}:[A-Za-z0-9_.-]{1,64}\s*(?:,\s*[0-9]{3,15}:[A-Za-z0-9_.-]{1,64}\s*)*$"
)
_KEY_CODE = re.compile(r"^[0-9*#]{1,4}$")


@dataclass(frozen=True)
class IvrConfig:
    """[ivr]: the phone callback: access numbers and DIDs answered by the FastAGI IVR."""

    enabled: bool = field(
        default=False,
        metadata=_meta("answer the access numbers and DIDs (needs the FastAGI server, [agi])"),
    )
    access_numbers: str = field(
        default="",
        metadata=_meta(
            "comma-separated access numbers as the dialplan passes them (digits), each with"
            " an optional language, e.g. 4930555000, 4930555001:fr",
            pattern=_ACCESS_NUMBERS,
        ),
    )
    dids: str = field(
        default="",
        metadata=_meta(
            "comma-separated DID:username pairs: a call to a user's own DID calls back the"
            " account's predefined number, e.g. 4930555099:alice",
            pattern=_DIDS,
        ),
    )
    ring_delay: float = field(
        default=4.0,
        metadata=_meta(
            "seconds a call to an access number rings (one or two rings) before it is"
            " rejected unanswered, so that the caller pays nothing",
            min=0.0,
            max=30.0,
        ),
    )
    callback_delay: float = field(
        default=3.0,
        metadata=_meta("seconds after the rejection before the caller is called back", min=0.0),
    )
    end_code: str = field(
        default="#11",
        metadata=_meta("keys that end the destination and return to the IVR", pattern=_KEY_CODE),
    )
    balance_code: str = field(
        default="111",
        metadata=_meta("keys that announce the balance at any prompt", pattern=_KEY_CODE),
    )
    announce_balance: bool = field(
        default=True, metadata=_meta("announce the balance when the callback is answered")
    )
    language_menu: bool = field(
        default=True,
        metadata=_meta(
            "let the caller choose the language when neither the access number nor the"
            " account names one (else English)"
        ),
    )
    pin_attempts: int = field(
        default=3,
        metadata=_meta(
            "wrong PINs (per account and per caller ID) that lock PIN entry", min=1, max=20
        ),
    )
    pin_lockout: float = field(
        default=900.0,
        metadata=_meta("seconds PIN entry stays locked after too many wrong PINs", min=1.0),
    )
    # -- unknown callers: the PIN names the account (docs/ivr.rst) --
    unknown_callers: str = field(
        default="pin",
        metadata=_meta(
            "a caller ID registered to no account: pin (called back and asked for the PIN,"
            " which names the account) or refuse (no callback)",
            **_choice("pin", "refuse"),
        ),
    )
    unknown_account: str = field(
        default="",
        metadata=_meta(
            "the operator's account the PIN leg of an unknown caller runs under and is"
            " billed to (empty: unknown callers get no callback)"
        ),
    )
    unknown_pin_timeout: float = field(
        default=60.0,
        metadata=_meta(
            "seconds the PIN leg of an unknown caller may last before it is hung up",
            min=10.0,
            max=600.0,
        ),
    )
    unknown_per_caller: int = field(
        default=3,
        metadata=_meta("callbacks to one unknown caller ID per unknown_period", min=1),
    )
    unknown_total: int = field(
        default=100,
        metadata=_meta("callbacks to unknown caller IDs in all per unknown_period", min=1),
    )
    unknown_period: float = field(
        default=3600.0,
        metadata=_meta("the window of unknown_per_caller and unknown_total (s)", min=60.0),
    )
    pin_pepper: Secret = field(
        default=Secret(""),
        metadata=_meta(
            "key of the PIN index (HMAC-SHA256) that finds an account by its PIN; the same"
            " on every daemon of one Redis (empty: a random one kept in state_dir/pin-pepper)",
            secret=True,
        ),
    )

    @property
    def access(self) -> dict[str, str]:
        """Access number -> its language ("" for none)."""
        found = {}
        for item in filter(None, (p.strip() for p in self.access_numbers.split(","))):
            number, _, language = item.partition(":")
            found[number] = language
        return found

    @property
    def did_accounts(self) -> dict[str, str]:
        """DID -> the username of the account it belongs to."""
        found = {}
        for item in filter(None, (p.strip() for p in self.dids.split(","))):
            number, _, username = item.partition(":")
            found[number] = username
        return found


@dataclass(frozen=True)
class ApiConfig:
    """[api]: the REST API under /api/v1, its event streams and its webhooks."""

    enabled: bool = field(default=True, metadata=_meta("serve the REST API at /api"))
    idempotency_ttl: float = field(
        default=86400.0,
        metadata=_meta("seconds an Idempotency-Key's answer is kept for retries", min=60.0),
    )
    max_body: int = field(
        default=1048576,
        metadata=_meta("the largest request body in bytes (larger: 413)", min=1024),
    )
    ended_visible: float = field(
        default=86400.0,
        metadata=_meta("seconds an ended session stays readable (from its CDRs)", min=0.0),
    )
    sse_buffer: int = field(
        default=64,
        metadata=_meta("events kept per session for Last-Event-ID", min=1, max=10000),
    )
    sse_heartbeat: float = field(
        default=15.0, metadata=_meta("seconds between an event stream's heartbeats", min=1.0)
    )
    webhook_timeout: float = field(
        default=10.0, metadata=_meta("seconds a webhook POST may take", min=1.0)
    )
    webhook_retry_initial: float = field(
        default=5.0, metadata=_meta("seconds before a failed webhook is retried", min=0.1)
    )
    webhook_retry_max: float = field(
        default=3600.0,
        metadata=_meta("the longest wait between retries (the wait doubles)", min=1.0),
    )
    webhook_max_attempts: int = field(
        default=15,
        metadata=_meta("attempts before a webhook goes to the dead letters", min=1),
    )


# -- SMS ------------------------------------------------------------------------------------

_FIELD_NAME = re.compile(r"^[A-Za-z0-9_.\-\[\]]{0,64}$")
_HEADER_NAME = re.compile(r"^[A-Za-z0-9-]{1,64}$")


@dataclass(frozen=True)
class SmsConfig:
    """[sms]: the SMS front: commands by SMS through the ``[sms-gateway:NAME]`` sections."""

    enabled: bool = field(
        default=False, metadata=_meta("serve the SMS gateways' webhooks at /sms/NAME and reply")
    )
    default_gateway: str = field(
        default="",
        metadata=_meta(
            "the [sms-gateway:NAME] that sends replies when the gateway a message came in"
            " through sends none (and verification codes queued by other parts); empty: the"
            " only gateway that sends",
            pattern=re.compile(r"^$|" + _PROVIDER_NAME.pattern),
        ),
    )
    progress: str = field(
        default="outcome",
        metadata=_meta(
            "progress replies of an account that chose none: all (every event), outcome"
            " (answered, failed, ended with its charge) or none",
            **_choice("all", "outcome", "none"),
        ),
    )
    max_segments: int = field(
        default=3,
        metadata=_meta("the most SMS parts a reply takes; a longer one is trimmed", min=1, max=10),
    )
    sender_limit: int = field(
        default=10, metadata=_meta("messages handled per sender per sender_period", min=1)
    )
    sender_period: float = field(
        default=600.0, metadata=_meta("seconds of the per-sender rate limit's window", min=1.0)
    )
    gateway_limit: int = field(
        default=500,
        metadata=_meta(
            "messages accepted per gateway per gateway_period; more are answered 503 (the"
            " gateway retries later)",
            min=1,
        ),
    )
    gateway_period: float = field(
        default=1.0, metadata=_meta("seconds of the per-gateway rate limit's window", min=0.01)
    )
    lockout_failures: int = field(
        default=5,
        metadata=_meta(
            "wrong passwords per account and per sender within lockout_period before"
            " passwords are not even checked",
            min=1,
        ),
    )
    lockout_period: float = field(
        default=900.0, metadata=_meta("seconds a wrong password is counted", min=1.0)
    )
    unknown_reply_period: float = field(
        default=86400.0,
        metadata=_meta(
            "a sender not authorised (no verified caller ID, no right password) gets at most"
            " one reply per this many seconds",
            min=1.0,
        ),
    )
    dedupe_window: float = field(
        default=600.0,
        metadata=_meta(
            "seconds within which a gateway's retry (same message id, or same sender and"
            " text) is answered again and not handled again",
            min=1.0,
        ),
    )
    code_ttl: float = field(
        default=900.0, metadata=_meta("seconds a caller-ID verification code is good", min=10.0)
    )
    code_attempts: int = field(
        default=5, metadata=_meta("wrong guesses before a verification code is void", min=1)
    )
    recover_max_age: float = field(
        default=900.0,
        metadata=_meta(
            "at start, accepted messages not yet handled are handled if younger than this"
            " (in seconds); older ones are only logged",
            min=0.0,
        ),
    )


@dataclass(frozen=True)
class SmsGatewayConfig:
    """[sms-gateway:NAME]: one SMS gateway; its webhook is /sms/NAME on the [web] port."""

    name: str = field(default="", metadata=_meta("(from the section name)", internal=True))
    format: str = field(
        default="",
        metadata=_meta(
            "what the gateway posts: kannel (smsbox get-url), kannel-post (post-url), form,"
            " json, forwarder (the SMS forwarder app)",
            required=True,
            **_choice("kannel", "kannel-post", "form", "json", "forwarder"),
        ),
    )
    token: Secret = field(
        default=Secret(""),
        metadata=_meta(
            "shared token the gateway sends in token_header or the token_field query field",
            secret=True,
        ),
    )
    token_header: str = field(
        default="X-Callbackd-Token",
        metadata=_meta(
            "header carrying the token (also read: Authorization: Bearer TOKEN)",
            pattern=_HEADER_NAME,
        ),
    )
    token_field: str = field(
        default="token",
        metadata=_meta("query field carrying the token (Kannel's get-url)", pattern=_FIELD_NAME),
    )
    signature_secret: Secret = field(
        default=Secret(""),
        metadata=_meta(
            "HMAC-SHA256 key: the request body's signature must come in signature_header"
            " (hex or base64, optionally sha256=...); not for format = kannel (no body)",
            secret=True,
        ),
    )
    signature_header: str = field(
        default="X-Signature", metadata=_meta("header carrying the signature", pattern=_HEADER_NAME)
    )
    allow: str = field(
        default="",
        metadata=_meta(
            "comma-separated addresses or networks the gateway's requests may come from,"
            " e.g. 127.0.0.1, 10.0.0.0/8, ::1 (empty: any)"
        ),
    )
    field_from: str = field(
        default="from", metadata=_meta("form/json: the sender's field", pattern=_FIELD_NAME)
    )
    field_to: str = field(
        default="to",
        metadata=_meta("form/json: the recipient's field (empty: not sent)", pattern=_FIELD_NAME),
    )
    field_text: str = field(
        default="text", metadata=_meta("form/json: the text's field", pattern=_FIELD_NAME)
    )
    field_id: str = field(
        default="id",
        metadata=_meta("form/json: the message id's field (empty: not sent)", pattern=_FIELD_NAME),
    )
    field_timestamp: str = field(
        default="timestamp",
        metadata=_meta(
            "form/json: the field of the time received, epoch seconds (empty: not sent)",
            pattern=_FIELD_NAME,
        ),
    )
    recipient: str = field(
        default="",
        metadata=_meta("forwarder: the phone's number (the app does not send it)"),
    )
    send: str = field(
        default="none",
        metadata=_meta(
            "how replies go out through this gateway: kannel (smsbox sendsms), http-post"
            " (JSON POST), log (written to the daemon's log, not sent: demos), none",
            **_choice("kannel", "http-post", "log", "none"),
        ),
    )
    sendsms_url: str = field(
        default="",
        metadata=_meta("send = kannel: smsbox's sendsms base URL, e.g. http://127.0.0.1:13013"),
    )
    sendsms_username: str = field(
        default="", metadata=_meta("send = kannel: the sendsms-user's username")
    )
    sendsms_password: Secret = field(
        default=Secret(""), metadata=_meta("send = kannel: its password", secret=True)
    )
    sendsms_from: str = field(
        default="", metadata=_meta("send = kannel: the sender number of replies (from=)")
    )
    post_url: str = field(
        default="",
        metadata=_meta('send = http-post: the URL posted {"id", "to", "text"} as JSON'),
    )
    post_token: Secret = field(
        default=Secret(""),
        metadata=_meta("send = http-post: sent as Authorization: Bearer TOKEN", secret=True),
    )
    timeout: float = field(
        default=10.0, metadata=_meta("seconds an outbound request may take", min=0.1)
    )

    @property
    def allowed(self) -> tuple[str, ...]:
        """The allow-list's entries."""
        return tuple(entry.strip() for entry in self.allow.split(",") if entry.strip())


def _check_sms(
    sms: SmsConfig | None, gateways: list[SmsGatewayConfig], problems: list[str]
) -> None:
    """What no single [sms] or [sms-gateway:NAME] key can check alone."""
    from callbackd.sms.auth import AddressAllowList

    names = [g.name for g in gateways]
    senders = [g.name for g in gateways if g.send != "none"]
    for g in gateways:
        where = f"[sms-gateway:{g.name}]"
        if not (g.token or g.signature_secret or g.allowed):
            problems.append(f"{where}: needs token, signature_secret or allow (none is open)")
        if g.signature_secret and g.format == "kannel":
            problems.append(f"{where} signature_secret: a get-url request has no body to sign")
        try:
            AddressAllowList.parse(g.allowed)
        except ValueError as e:
            problems.append(f"{where} allow: {e}")
        if g.send == "kannel" and not (g.sendsms_url and g.sendsms_username):
            problems.append(f"{where}: send = kannel needs sendsms_url and sendsms_username")
        if g.send == "http-post" and not g.post_url:
            problems.append(f"{where}: send = http-post needs post_url")
        for url in (g.sendsms_url, g.post_url):
            if url and not re.match(r"^https?://", url):
                problems.append(f"{where}: {url!r} is not an http:// or https:// URL")
        if g.format in ("form", "json") and not (g.field_from and g.field_text):
            problems.append(f"{where}: field_from and field_text must not be empty")
        if g.recipient and not re.fullmatch(
            r"\+?[0-9]{1,20}", re.sub(r"[\s\-.()/]", "", g.recipient)
        ):
            problems.append(f"{where} recipient: {g.recipient!r} is not a phone number")
    if sms is None or not sms.enabled:
        return
    if sms.default_gateway and sms.default_gateway not in names:
        problems.append(f"[sms] default_gateway: no [sms-gateway:{sms.default_gateway}]")
    elif sms.default_gateway and sms.default_gateway not in senders:
        problems.append(f"[sms] default_gateway: [sms-gateway:{sms.default_gateway}] sends none")
    elif not sms.default_gateway and len(senders) > 1:
        problems.append("[sms] default_gateway: required when several gateways send")
    if not senders:
        problems.append("[sms]: enabled, but no [sms-gateway:NAME] sends replies (send = ...)")


@dataclass(frozen=True)
class PortalConfig:
    """[portal]: the web portal at /portal (users' and operators' pages)."""

    enabled: bool = field(default=True, metadata=_meta("serve the portal at /portal"))
    operators: str = field(
        default="",
        metadata=_meta(
            "usernames (comma separated) who log in to the operators' pages",
            pattern=re.compile(r"^[A-Za-z0-9._@+,\s-]*$"),
        ),
    )
    session_ttl: int = field(
        default=28800,
        metadata=_meta("seconds a portal login lasts", min=60, max=86400),
    )
    login_attempts: int = field(
        default=5,
        metadata=_meta(
            "failed logins per username (ten times as many per client address) within"
            " login_window before further logins are refused until the window passes",
            min=1,
        ),
    )
    login_window: float = field(
        default=300.0, metadata=_meta("seconds the failed logins are counted over", min=1.0)
    )
    secure_cookies: bool = field(
        default=False,
        metadata=_meta(
            "mark cookies Secure also over plain HTTP (behind a TLS proxy);"
            " over an ssl: endpoint they always are"
        ),
    )

    @property
    def operator_names(self) -> frozenset[str]:
        """The operators' usernames."""
        return frozenset(n.strip() for n in self.operators.split(",") if n.strip())


@dataclass(frozen=True)
class ClusterConfig:
    """[cluster]: several daemons sharing one Redis (docs/operations.rst, "Several daemons")."""

    enabled: bool = field(
        default=False,
        metadata=_meta(
            "this daemon is one of several on the same Redis: sessions have an owner with"
            " a lease, commands are forwarded to it and events published through Redis"
        ),
    )
    renew_interval: float = field(
        default=2.0,
        metadata=_meta("seconds between renewals of this daemon's lease", min=0.05),
    )
    lease: float = field(
        default=6.0,
        metadata=_meta(
            "seconds the lease holds unrenewed; then another daemon takes the sessions over"
            " (at least twice renew_interval)",
            min=0.1,
        ),
    )
    poll_interval: float = field(
        default=0.05,
        metadata=_meta("seconds between reads of forwarded commands, replies and events", min=0.01),
    )
    reply_timeout: float = field(
        default=3.0,
        metadata=_meta("seconds a forwarded command waits for the owner's answer", min=0.1),
    )


@dataclass(frozen=True)
class Config:
    """The whole configuration."""

    path: Path
    daemon: DaemonConfig
    redis: RedisConfig
    ami: AMIConfig
    simulator: SimulatorConfig
    web: WebConfig
    manhole: ManholeConfig
    billing: BillingConfig
    routing: RoutingConfig
    gateways: GatewaysConfig
    xmpp: XMPPConfig
    agi: AGIConfig
    ivr: IvrConfig
    providers: tuple[ProviderConfig, ...]
    sms: SmsConfig = SmsConfig()
    sms_gateways: tuple[SmsGatewayConfig, ...] = ()
    portal: PortalConfig = field(default_factory=PortalConfig)
    #: the REST API ([api])
    api: ApiConfig = field(default_factory=ApiConfig)
    #: several daemons ([cluster])
    cluster: ClusterConfig = field(default_factory=ClusterConfig)
    #: the Asterisk servers of [switch:NAME] sections (none: [ami] is the one switch)
    switches: tuple[SwitchConfig, ...] = ()

    @property
    def switch_list(self) -> tuple[SwitchConfig, ...]:
        """Every switch: the [switch:NAME] sections, else [ami] as ``default``."""
        if self.switches:
            return self.switches
        values = {f.name: getattr(self.ami, f.name) for f in dataclasses.fields(AMIConfig)}
        return (SwitchConfig(name="default", listen=self.simulator.listen, **values),)

    def resolve(self, name: str | Path) -> Path:
        """A path from the config, relative to the config file's directory."""
        p = Path(name)
        return p if p.is_absolute() else (self.path.parent / p)

    @property
    def state_dir(self) -> Path:
        """The daemon's state directory, resolved."""
        return self.resolve(self.daemon.state_dir)


SECTIONS: dict[str, type] = {
    "daemon": DaemonConfig,
    "redis": RedisConfig,
    "ami": AMIConfig,
    "simulator": SimulatorConfig,
    "web": WebConfig,
    "manhole": ManholeConfig,
    "billing": BillingConfig,
    "routing": RoutingConfig,
    "gateways": GatewaysConfig,
    "xmpp": XMPPConfig,
    "agi": AGIConfig,
    "ivr": IvrConfig,
    "api": ApiConfig,
    "sms": SmsConfig,
    "portal": PortalConfig,
    "cluster": ClusterConfig,
}
PATTERN_SECTIONS: dict[str, type] = {
    "provider": ProviderConfig,
    "sms-gateway": SmsGatewayConfig,
    "switch": SwitchConfig,
}

_TRUE = {"yes", "true", "on", "1"}
_FALSE = {"no", "false", "off", "0"}


def _convert(raw: str, typ: Any, meta: Mapping[str, Any]) -> Any:
    """Convert one raw INI value; raise ValueError with a reason."""
    raw = raw.strip()
    if typ is bool:
        low = raw.lower()
        if low in _TRUE:
            return True
        if low in _FALSE:
            return False
        raise ValueError(f"expected yes or no, got {raw!r}")
    if typ is int or typ is float:
        try:
            value = typ(raw)
        except ValueError:
            raise ValueError(
                f"expected {'an integer' if typ is int else 'a number'}, got {raw!r}"
            ) from None
        if "min" in meta and value < meta["min"]:
            raise ValueError(f"must be at least {meta['min']}, got {raw}")
        if "max" in meta and value > meta["max"]:
            raise ValueError(f"must be at most {meta['max']}, got {raw}")
        return value
    if typ is Path:
        if not raw:
            raise ValueError("must not be empty")
        return Path(raw)
    if typ is str:
        if "choices" in meta and raw not in meta["choices"]:
            raise ValueError(f"must be one of {', '.join(meta['choices'])}, got {raw!r}")
        if "pattern" in meta and not meta["pattern"].match(raw):
            raise ValueError(f"{raw!r} does not match {meta['pattern'].pattern}")
        return raw
    raise TypeError(f"unsupported config type {typ!r}")  # pragma: no cover - schema bug


def _read_secret(
    section: str,
    key: str,
    items: dict[str, str],
    base: Path,
    environ: Mapping[str, str],
    problems: list[str],
) -> Secret | None:
    """A secret from ``key_file`` or ``key_env``; None if neither is given."""
    file_key, env_key = f"{key}_file", f"{key}_env"
    file_name = items.pop(file_key, None)
    env_name = items.pop(env_key, None)
    if key in items:
        items.pop(key)
        problems.append(
            f"[{section}] {key}: secrets are not written in the config; use {file_key} or {env_key}"
        )
        return None
    if file_name is not None and env_name is not None:
        problems.append(f"[{section}] {key}: give {file_key} or {env_key}, not both")
        return None
    if file_name is not None:
        path = Path(file_name.strip())
        path = path if path.is_absolute() else base / path
        try:
            return Secret(path.read_text(encoding="utf-8").strip())
        except OSError as e:
            problems.append(f"[{section}] {file_key}: cannot read {path}: {e.strerror or e}")
            return None
    if env_name is not None:
        env_name = env_name.strip()
        if env_name not in environ:
            problems.append(f"[{section}] {env_key}: environment variable {env_name} is not set")
            return None
        return Secret(environ[env_name])
    return None


def _build_section(
    section: str,
    cls: type,
    items: dict[str, str],
    base: Path,
    environ: Mapping[str, str],
    problems: list[str],
    extra: dict[str, Any] | None = None,
) -> Any:
    hints = get_type_hints(cls)
    values: dict[str, Any] = dict(extra or {})
    items = dict(items)
    for f in dataclasses.fields(cls):
        if f.metadata.get("internal"):
            continue
        typ = hints[f.name]
        if typ is Secret:
            secret = _read_secret(section, f.name, items, base, environ, problems)
            if secret is not None:
                values[f.name] = secret
            continue
        if f.name not in items:
            if f.metadata.get("required"):
                problems.append(f"[{section}] {f.name}: required")
            continue
        raw = items.pop(f.name)
        try:
            values[f.name] = _convert(raw, typ, f.metadata)
        except ValueError as e:
            problems.append(f"[{section}] {f.name}: {e}")
    for unknown in sorted(items):
        problems.append(f"[{section}] {unknown}: unknown key")
    try:
        return cls(**values)
    except TypeError as e:  # pragma: no cover - schema bug
        problems.append(f"[{section}]: {e}")
        return cls()


def _check_readable(where: str, name: str, base: Path, problems: list[str]) -> None:
    path = Path(name)
    path = path if path.is_absolute() else base / path
    try:
        with path.open("rb"):
            pass
    except OSError as e:
        problems.append(f"{where}: cannot read {path}: {e.strerror or e}")


class _NotListening:
    """Stands in for the reactor while an endpoint is parsed: nothing listens on it."""


#: the keys holding a strports server endpoint description
_SERVER_ENDPOINTS = (
    ("web", "listen"),
    ("manhole", "listen"),
    ("simulator", "listen"),
    ("agi", "listen"),
)


def _check_endpoint(where: str, description: str, problems: list[str]) -> None:
    """Parse a strports server description as ``twistd`` will, without listening."""
    try:
        serverFromString(_NotListening(), description)
    except (ValueError, TypeError, KeyError, IndexError, OSError) as e:
        reason = e.strerror if isinstance(e, OSError) and e.strerror else e
        problems.append(f"{where}: {description!r} is not a strports endpoint: {reason}")


def parse_config(text: str, path: Path, environ: Mapping[str, str] | None = None) -> Config:
    """Parse INI text; raise :class:`ConfigError` listing every problem."""
    environ = os.environ if environ is None else environ
    problems: list[str] = []
    parser = configparser.ConfigParser(interpolation=None, strict=False, default_section="\x00none")
    parser.optionxform = str  # type: ignore[assignment,method-assign]  # keys are case-sensitive
    try:
        parser.read_string(text, source=str(path))
    except configparser.Error as e:
        raise ConfigError([f"{path}: cannot parse: {e}"]) from None
    base = path.parent
    built: dict[str, Any] = {}
    providers: list[ProviderConfig] = []
    sms_gateways: list[SmsGatewayConfig] = []
    switch_sections: list[tuple[str, str, dict[str, str]]] = []
    for section in parser.sections():
        items = dict(parser.items(section))
        if section in SECTIONS:
            built[section] = _build_section(
                section, SECTIONS[section], items, base, environ, problems
            )
            continue
        kind, sep, name = section.partition(":")
        if sep and kind == "switch":
            switch_sections.append((section, name, items))  # built on [ami], once read
            continue
        if sep and kind in PATTERN_SECTIONS:
            if not _PROVIDER_NAME.match(name):
                problems.append(f"[{section}]: name must match {_PROVIDER_NAME.pattern}")
                continue
            built_section = _build_section(
                section, PATTERN_SECTIONS[kind], items, base, environ, problems, {"name": name}
            )
            (sms_gateways if kind == "sms-gateway" else providers).append(built_section)
            continue
        problems.append(f"[{section}]: unknown section")
    ami = built.get("ami")
    switches = _build_switches(switch_sections, ami or AMIConfig(), base, environ, problems)
    if ami is not None and ami.mode == "asterisk" and not ami.secret and not switches:
        problems.append("[ami] secret: required when mode = asterisk (secret_file or secret_env)")
    xmpp = built.get("xmpp")
    if xmpp is not None and xmpp.enabled:
        if not xmpp.domain:
            problems.append("[xmpp] domain: required when enabled")
        if not xmpp.secret:
            problems.append("[xmpp] secret: required when enabled (secret_file or secret_env)")
    billing = built.get("billing")
    if billing is not None and billing.tariff:
        _check_readable("[billing] tariff", billing.tariff, base, problems)
    for p in providers:
        if p.rates:
            _check_readable(f"[provider:{p.name}] rates", p.rates, base, problems)
        if p.dial and "{number}" not in p.dial and "{e164}" not in p.dial:
            problems.append(f"[provider:{p.name}] dial: must contain {{number}} or {{e164}}")
    _check_sms(built.get("sms"), sms_gateways, problems)
    cluster = built.get("cluster")
    if cluster is not None and cluster.lease < 2 * cluster.renew_interval:
        problems.append("[cluster] lease: at least twice renew_interval")
    _check_redis(built.get("redis"), problems)
    for section, key in _SERVER_ENDPOINTS:
        parsed = built.get(section) or SECTIONS[section]()
        _check_endpoint(f"[{section}] {key}", getattr(parsed, key), problems)
    if problems:
        raise ConfigError(problems)
    return Config(
        path=path,
        providers=tuple(providers),
        sms_gateways=tuple(sms_gateways),
        switches=tuple(switches),
        **{name: built.get(name) or cls() for name, cls in SECTIONS.items()},
    )


def _build_switches(
    sections: list[tuple[str, str, dict[str, str]]],
    ami: AMIConfig,
    base: Path,
    environ: Mapping[str, str],
    problems: list[str],
) -> list[SwitchConfig]:
    """The [switch:NAME] sections, each key not given taking [ami]'s value."""
    inherited = {f.name: getattr(ami, f.name) for f in dataclasses.fields(AMIConfig)}
    switches: list[SwitchConfig] = []
    for section, name, items in sections:
        if not _PROVIDER_NAME.match(name):
            problems.append(f"[{section}]: name must match {_PROVIDER_NAME.pattern}")
            continue
        for key in _SWITCH_WIDE:
            if items.pop(key, None) is not None:
                problems.append(f"[{section}] {key}: set in [ami]; it holds for every switch")
        switch = _build_section(
            section, SwitchConfig, items, base, environ, problems, {**inherited, "name": name}
        )
        if switch.mode == "asterisk" and not switch.secret:
            problems.append(
                f"[{section}] secret: required when mode = asterisk (secret_file or"
                " secret_env, here or in [ami])"
            )
        _check_endpoint(f"[{section}] listen", switch.listen, problems)
        switches.append(switch)
    if switches and not any(switch.weight for switch in switches):
        problems.append("[switch:NAME] weight: at least one switch needs a weight above 0")
    return switches


def load_config(path: str | Path, environ: Mapping[str, str] | None = None) -> Config:
    """Read and parse the config file at ``path``."""
    path = Path(path).absolute()
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as e:
        raise ConfigError([f"{path}: cannot read: {e.strerror or e}"]) from None
    return parse_config(text, path, environ)


def describe() -> str:
    """Every section and key with its default and meaning (for ``--help`` and docs)."""
    lines = []
    for name, cls in [*SECTIONS.items(), *[(f"{k}:NAME", v) for k, v in PATTERN_SECTIONS.items()]]:
        lines.append(f"[{name}]")
        hints = get_type_hints(cls)
        for f in dataclasses.fields(cls):
            if f.metadata.get("internal"):
                continue
            doc = f.metadata.get("doc", "")
            if hints[f.name] is Secret:
                lines.append(f"  {f.name}_file / {f.name}_env: {doc}")
            else:
                default = "(required)" if f.metadata.get("required") else repr(f.default)
                lines.append(f"  {f.name} = {default}: {doc}")
    return "\n".join(lines)
