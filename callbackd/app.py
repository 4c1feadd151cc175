"""Wiring: build the daemon's service tree from a loaded configuration.

The only module that knows every adapter. Each ``_make_*`` function builds one
named child of the root service (see docs/architecture.rst); the root starts
them in order and stops them in reverse.
"""

from __future__ import annotations

import gc
import secrets
from typing import Any

from prometheus_client import CollectorRegistry
from twisted.application import service
from twisted.internet import defer
from twisted.internet.endpoints import TCP4ClientEndpoint
from twisted.internet.interfaces import IStreamClientEndpoint
from twisted.logger import Logger
from zope.interface import implementer

from callbackd.config import Config
from callbackd.decks import Decks
from callbackd.service import StagedMultiService

log = Logger(namespace="callbackd.app")


@implementer(IStreamClientEndpoint)
class _LateTCPEndpoint:
    """A TCP client endpoint whose port is known only once another service listens."""

    def __init__(self, reactor: Any, host: str, port_of: Any) -> None:
        self._reactor = reactor
        self._host = host
        self._port_of = port_of

    def connect(self, factory: Any) -> defer.Deferred[Any]:
        return TCP4ClientEndpoint(self._reactor, self._host, self._port_of(), timeout=5).connect(
            factory
        )


class Daemon:
    """The daemon's parts, for the manhole namespace and for tests."""

    def __init__(self, config: Config, reactor: Any) -> None:
        self.config = config
        self.reactor = reactor
        self.root = StagedMultiService()
        self.root.setName("callbackd")
        self.registry = CollectorRegistry()
        self.store: Any = None
        #: the first switch's AMI client, simulated Asterisk (or None) and AMISwitch
        self.ami: Any = None
        self.simulator: Any = None
        self.switch: Any = None
        #: every switch (:class:`~callbackd.switches.SwitchPool`), and the simulated
        #: Asterisks by switch name (mode = simulated)
        self.switches: Any = None
        self.simulators: dict[str, Any] = {}
        self.engine: Any = None
        self.metrics: Any = None
        self.health: Any = None
        self.web_root: Any = None
        self.xmpp: Any = None
        #: FastAGI: script name -> ``async handler(channel)``; the IVR registers its
        #: scripts here (``daemon.agi_router["ivr"] = ...``), read at each connection
        self.agi_router: dict[str, Any] = {}
        self.agi: Any = None
        self.ivr: Any = None
        self.api: Any = None
        self.sms: Any = None

    def add(self, name: str, child: service.IService) -> service.IService:
        child.setName(name)
        child.setServiceParent(self.root)
        return child


def create_daemon(config: Config, reactor: Any, decks: Decks | None = None) -> StagedMultiService:
    """The root service of a daemon configured by ``config``, running on ``reactor``.

    ``decks`` are the rate decks the check before forking loaded
    (:func:`callbackd.decks.load_decks`); without them the engine loads them itself
    (ConfigError naming every bad row).
    """
    from callbackd.metrics import Metrics
    from callbackd.web.ops import HealthRegistry
    from callbackd.web.root import make_web_root, make_web_service

    daemon = Daemon(config, reactor)
    metrics = Metrics(daemon.registry)
    health = HealthRegistry(reactor)
    daemon.metrics = metrics
    daemon.health = health

    _make_store(daemon, health, metrics)
    _make_switch(daemon, health, metrics)
    _make_engine(daemon, metrics, decks)
    _make_agi(daemon, health)
    _make_ivr(daemon)
    if config.xmpp.enabled:
        _make_xmpp(daemon, health)
    else:
        # the chat front is off: /healthz says so rather than leaving it out
        health.register("xmpp", lambda: (True, "off ([xmpp] enabled = no)"))
    web_root = make_web_root(health, metrics)
    daemon.web_root = web_root
    if config.api.enabled:
        _make_api(daemon, web_root)
    if config.sms.enabled:
        _make_sms(daemon, health)
    else:
        health.register("sms", lambda: (True, "off ([sms] enabled = no)"))
    if config.portal.enabled:
        _make_portal(daemon)
    daemon.add("web", make_web_service(config.web, web_root, reactor=reactor))
    if config.manhole.enabled:
        from callbackd.manhole import make_manhole_service

        daemon.add(
            "manhole",
            make_manhole_service(
                config.manhole,
                config.state_dir,
                lambda: namespace(daemon),
                base_dir=config.path.parent,
                reactor=reactor,
            ),
        )
    daemon.root.daemon = daemon  # type: ignore[attr-defined]
    daemon.root.started.addCallback(lambda _: tune_gc(config.daemon.gc_threshold))
    return daemon.root


def tune_gc(threshold: int) -> None:
    """Once the daemon runs: keep the garbage collector off the call path.

    What is alive now (rate decks of hundreds of thousands of prefixes, the
    configuration, the services) lives as long as the daemon: ``gc.freeze`` moves
    it out of every later collection. ``threshold`` (``[daemon] gc_threshold``)
    spaces the collections out; reference counting frees the per-call garbage
    anyway, the collector is only for cycles.
    """
    gc.collect()
    gc.freeze()
    if threshold:
        _, second, third = gc.get_threshold()
        gc.set_threshold(threshold, second, third)
    log.info(
        "garbage collector: {frozen} objects frozen, thresholds {thresholds}",
        frozen=gc.get_freeze_count(),
        thresholds=gc.get_threshold(),
    )


def _make_store(daemon: Daemon, health: Any, metrics: Any) -> None:
    from callbackd.store.embedded import EmbeddedRedisService
    from callbackd.store.redis import StoreService

    config = daemon.config
    if config.redis.mode == "embedded":
        daemon.add("redis", EmbeddedRedisService(config.redis, config.state_dir, daemon.reactor))
    store_service = StoreService(config, daemon.reactor)
    daemon.add("store", store_service)
    daemon.store = store_service.store

    def redis_health() -> defer.Deferred[tuple[bool, str]]:
        def report(result: dict[str, Any]) -> tuple[bool, str]:
            metrics.redis_up.set(1 if result["ok"] else 0)
            return bool(result["ok"]), result.get("error", "answers PING")

        return store_service.health().addCallback(report)

    health.register("redis", redis_health)
    if config.daemon.demo_data:
        from callbackd.demo import DemoDataService

        daemon.add("demo", DemoDataService(daemon.store, config.billing.decimals, daemon.reactor))


def _make_switch(daemon: Daemon, health: Any, metrics: Any) -> None:
    """The switches: [ami] alone (children ``simulator``, ``ami``; health ``ami``), or one
    AMI connection per [switch:NAME] (children ``simulator:NAME``, ``ami:NAME``; health
    ``ami`` while one is usable, and ``ami:NAME`` each, reported but not counted)."""
    from callbackd.switches import SwitchPool

    config = daemon.config
    several = bool(config.switches)
    switches: dict[str, Any] = {}
    for switch_config in config.switch_list:
        name = switch_config.name
        switch = _make_one_switch(daemon, switch_config, f":{name}" if several else "")
        switches[name] = switch
        metrics.ami_switch_connected.labels(name).set_function(
            lambda switch=switch: 1 if switch.connected else 0
        )
        if several:
            health.register(f"ami:{name}", switch.health, counted=False)
    pool = SwitchPool(switches, {c.name: c.weight for c in config.switch_list})
    daemon.switches = pool
    daemon.switch = pool[pool.default]
    metrics.ami_connected.set_function(
        lambda: 1 if all(switch.connected for switch in switches.values()) else 0
    )
    # logged in, and not shutting down or restarting (until the switch is fully booted)
    health.register("ami", daemon.switch.health if not several else _pool_health(pool))


def _make_one_switch(daemon: Daemon, switch_config: Any, suffix: str) -> Any:
    """One switch's AMI client (child ``ami`` + suffix), and its simulated Asterisk
    (``simulator`` + suffix) in mode = simulated; its AMISwitch."""
    from callbackd.ami.client import AMIClientService
    from callbackd.amiswitch import AMISwitch

    config = daemon.config
    reactor = daemon.reactor
    endpoint: Any
    if switch_config.mode == "simulated":
        from callbackd.simulator import SimulatorService

        secret = secrets.token_hex(16)
        simulator = SimulatorService(
            switch_config.listen,
            switch_config.username,
            secret,
            clock=reactor,
            reactor=reactor,
            rules=config.simulator.rules,
            time_scale=config.simulator.time_scale,
            event_filter=config.simulator.event_names,
        )
        daemon.add("simulator" + suffix, simulator)
        daemon.simulators[switch_config.name] = simulator
        if daemon.simulator is None:
            daemon.simulator = simulator
        endpoint = _LateTCPEndpoint(reactor, "127.0.0.1", lambda: simulator.port)
    else:
        secret = switch_config.secret.reveal()
        endpoint = TCP4ClientEndpoint(reactor, switch_config.host, switch_config.port, timeout=10)
    ami = AMIClientService(
        endpoint,
        switch_config.username,
        secret,
        md5=switch_config.auth == "md5",
        clock=reactor,
        node_id=config.daemon.node_id,
        action_timeout=switch_config.action_timeout,
        ping_interval=switch_config.ping_interval,
        ping_timeout=switch_config.ping_timeout,
        max_retry=switch_config.reconnect_max_delay,
        section=f"[switch{suffix}]" if suffix else "[ami]",
    )
    daemon.add("ami" + suffix, ami)
    if daemon.ami is None:
        daemon.ami = ami
    return AMISwitch(
        ami,
        clock=reactor,
        context=switch_config.context,
        caller_id=switch_config.caller_id,
        log_actions=switch_config.log_actions,
    )


def _pool_health(pool: Any) -> Any:
    """The ``ami`` check of several switches: ok while a new session can be placed."""

    def check() -> tuple[bool, str]:
        details = []
        for name, switch in pool.items():
            ok, detail = switch.health()
            details.append(f"{name}: {detail}")
        usable = [name for name in pool if pool.usable(name)]
        return bool(usable), f"{len(usable)} of {len(pool)} switches usable; " + "; ".join(details)

    return check


def _make_engine(daemon: Daemon, metrics: Any, decks: Decks | None) -> None:
    from callbackd.engine import EngineService
    from callbackd.operator import progress_logger

    config = daemon.config
    engine_service = EngineService(
        config, daemon.reactor, daemon.switches, daemon.store, metrics, decks=decks
    )
    daemon.add("engine", engine_service)
    daemon.engine = engine_service.manager
    daemon.engine.subscribe(
        progress_logger(
            Logger(namespace="callbackd.progress"),
            config.billing.decimals,
            config.billing.currency,
            clock=daemon.reactor,
        )
    )
    daemon.engine.subscribe(_session_metrics(metrics, config.billing.currency))
    sessions = daemon.engine.sessions
    for name in daemon.switches:
        metrics.switch_sessions.labels(name).set_function(lambda name=name: sessions.count_on(name))


def _make_agi(daemon: Daemon, health: Any) -> None:
    """The FastAGI server (``[agi]``), routing scripts through ``daemon.agi_router``."""
    config = daemon.config.agi
    if not config.enabled:
        health.register("agi", lambda: (True, "off ([agi] enabled = no)"))
        return
    from callbackd.agi.server import FastAGIService

    agi = FastAGIService(
        config.listen,
        daemon.agi_router,
        reactor=daemon.reactor,
        command_timeout=config.command_timeout,
        max_connections=config.max_connections,
    )
    daemon.agi = daemon.add("agi", agi)
    health.register("agi", agi.health)
    for simulator in daemon.simulators.values():
        # the simulated switch's agi:// URLs reach this server, wherever it listens
        simulator.agi_address = lambda host, port: ("127.0.0.1", agi.port or port)


def _make_ivr(daemon: Daemon) -> None:
    """The phone callback's IVR (``[ivr]``): its scripts on the FastAGI server's router."""
    config = daemon.config
    if not config.ivr.enabled:
        return
    from callbackd.ivr.service import PhoneCallback

    ivr = PhoneCallback(
        config.ivr,
        daemon.engine,
        daemon.store,
        daemon.reactor,
        decimals=config.billing.decimals,
        currency=config.billing.currency,
    )
    daemon.ivr = ivr
    daemon.agi_router.update(ivr.router)
    from callbackd.ivr.service import CALLBACK_URL

    for simulator in daemon.simulators.values():
        # the simulated switch runs the callback leg's IVR as the dialplan's ivr-a does
        simulator.add_agi_extension("cb-conf", "ivr-a", CALLBACK_URL)


def _make_xmpp(daemon: Daemon, health: Any) -> None:
    from callbackd.xmpp.service import make_chat_service

    chat = make_chat_service(
        daemon.config.xmpp,
        daemon.config.billing,
        daemon.store,
        daemon.engine,
        daemon.reactor,
        daemon.registry,
        # several daemons: one component holds the domain, the others stand by
        standby=daemon.config.cluster.enabled,
    )
    daemon.xmpp = daemon.add("xmpp", chat)
    # connected to the XMPP server as its component (and why not: refused secret ...)
    health.register("xmpp", chat.health)


def _make_sms(daemon: Daemon, health: Any) -> None:
    from callbackd.sms.service import SmsService

    sms = SmsService(daemon.config, daemon.store, daemon.engine, daemon.reactor)
    daemon.sms = daemon.add("sms", sms)
    daemon.web_root.add_child("sms", sms.resource)
    # running, with the webhooks it serves
    health.register("sms", sms.health)


def _make_portal(daemon: Daemon) -> None:
    """The web portal at ``/portal`` (``/`` redirects there): users' and operators' pages."""
    from callbackd.web.portal import PREFIX, make_portal
    from callbackd.web.sse import hub_of

    # the call pages' live status: the session events' hub, buffering from the start
    hub_of(daemon.engine)
    portal = make_portal(daemon.store, daemon.engine, daemon.config, daemon.reactor)
    daemon.web_root.add_child(PREFIX.strip("/"), portal)
    daemon.web_root.set_home(PREFIX + "/")


def _make_api(daemon: Daemon, web_root: Any) -> None:
    """The REST API at /api, and its ``api`` child (event hub, webhook sender)."""
    import treq

    from callbackd.web.api.service import make_api

    running, api = make_api(daemon.config, daemon.store, daemon.engine, daemon.reactor, treq)
    daemon.api = daemon.add("api", running)
    web_root.add_child("api", api.resource())


def _session_metrics(metrics: Any, currency: str) -> Any:
    """A session subscriber that keeps the session and leg metrics."""

    def count(event: Any) -> None:
        if event.kind == "session_started":
            metrics.sessions_started.inc()
            metrics.sessions_active.inc()
        elif event.kind == "session_ended":
            metrics.sessions_active.dec()
            metrics.sessions_ended.labels(event.reason or "unknown").inc()
            if event.cost:
                metrics.billed_amount.labels(currency).inc(event.cost)
        elif event.kind in ("leg_answered", "leg_failed"):
            outcome = "answered" if event.kind == "leg_answered" else event.cause or "failed"
            metrics.legs_originated.labels(event.provider or "-", outcome).inc()

    return count


def namespace(daemon: Daemon) -> dict[str, Any]:
    """The manhole's namespace: the daemon's parts and a few operator helpers."""
    from callbackd.operator import operator_helpers

    ns: dict[str, Any] = {
        "daemon": daemon,
        "root": daemon.root,
        "config": daemon.config,
        "store": daemon.store,
        "ami": daemon.ami,
        "switch": daemon.switch,
        "switches": daemon.switches,
        "engine": daemon.engine,
        "simulator": daemon.simulator,
        "reactor": daemon.reactor,
        "xmpp": daemon.xmpp,
        "agi": daemon.agi,
        "sms": daemon.sms,
    }
    if daemon.xmpp is not None:
        ns["invite"] = daemon.xmpp.invite
    ns.update(operator_helpers(daemon))
    return ns
