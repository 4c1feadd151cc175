"""Beyond one machine, all at once: a real Redis primary, one replica and three real
Sentinels; two simulated Asterisk servers (each its own process, a user for each daemon);
two daemons under twistd (``[redis] mode = sentinel`` with ``wait_replicas = 1``,
``[cluster] enabled = yes``, ``[switch:a]`` and ``[switch:b]``).

Calls are placed through both daemons on both switches (daemon A's from a chat user through
a real Prosody, where A's component holds the domain and B's stands by, and from an SMS
posted to A; B's through its REST API); a session owned by daemon A is
steered through daemon B's REST API and its events read from B's SSE stream; the Redis
primary is SIGKILLed in the middle of calls (the Sentinels promote the replica, the calls
go on, every acknowledged charge is there afterwards); daemon A is SIGKILLed (B takes its
sessions over after the lease, and B's component the chat domain: the chat user and the
SMS sender hear the end of their calls from B); switch b restarts (its sessions are
reconciled). At the end
every leg has exactly one CDR, billed by the per-second rule from the answer and hangup
times the CDR records, and the balance went down by exactly the sum of those charges.
"""

from __future__ import annotations

import json
import math
import os
import signal
import time

import pytest

from callbackd.core.model import CDR
from callbackd.demo import DEMO_PASSWORD
from callbackd.store.records import cdr_from_json
from tests.integration.daemon import Daemon, Simulator
from tests.integration.test_callbacks import expected_cost
from tests.integration.test_cluster import _legs, kinds, wait_for
from tests.procs import RedisServer, redis_command
from tests.sms.test_daemon import Outbox, post_sms, sms_config
from tests.store.test_sentinel import NAME, role, sentinel_topology
from tests.web.api_client import Api, EventStream
from tests.xmpp import prosody as prosody_module
from tests.xmpp.userproc import BlockingUser

pytestmark = pytest.mark.integration

SECRET_ENV = "CALLBACKD_TEST_SWITCH_SECRET"
XMPP_SECRET_ENV = "CALLBACKD_TEST_XMPP_SECRET"
#: the SMS user's phone, and the chat user's account at the XMPP server
SMS_SENDER = "+15550019999"
CHAT_USER, CHAT_PASSWORD = "carol", "carols-xmpp-password"
#: Sentinels judge a primary down after this: short enough for a quick failover, long
#: enough that a busy machine's slow answer does not fail the new primary over again
DOWN_AFTER_MS = 2000
#: the daemons' lease, longer than the failover's gap (a lease running out in the gap
#: would be a takeover between live daemons, not what is tested here)
LEASE = 8
CLUSTER = f"""
[cluster]
enabled = yes
renew_interval = 0.5
lease = {LEASE}
poll_interval = 0.05
reply_timeout = 2
"""
#: (daemon, AMI user, its secret) -- each daemon logs in to each switch as its own user
USERS = (("na", "callbackd", "s3cret"), ("nb", "cbb", "cbb-secret"))
SOURCES = iter(f"+155500140{i:02d}" for i in range(100))
DESTINATION, EXTRA = "+15550012222", "+15550013333"


def sentinel_config(sentinels) -> str:
    addresses = ", ".join(f"127.0.0.1:{s.port}" for s in sentinels)
    return (
        f"\n[redis]\nmode = sentinel\nsentinels = {addresses}\nmaster_name = {NAME}\n"
        "timeout = 2\nwait_replicas = 1\nwait_timeout = 0.5\n"
    )


def switches_config(simulators: dict[str, Simulator], user: str) -> str:
    return "".join(
        f"\n[switch:{name}]\nmode = asterisk\nport = {sim.port}\nusername = {user}\n"
        f"secret_env = {SECRET_ENV}\n"
        for name, sim in simulators.items()
    )


def primary_port(servers: list[RedisServer]) -> int:
    """The port of the server that is the primary now."""
    return wait_for(
        lambda: next((s.port for s in servers if role(s) == "master"), None), "a primary"
    )


def redis_get(servers: list[RedisServer], *args: str):
    """One command to whichever server is the primary now."""
    return redis_command(primary_port(servers), *args)


def stored_cdrs(port: int) -> list[CDR]:
    """Every CDR on the Redis at ``port``."""
    ids = redis_command(port, "ZRANGE", "cb:cdrs", 0, -1)
    return [cdr_from_json(redis_command(port, "GET", f"cb:cdr:{i}")) for i in ids]


def session_record(servers: list[RedisServer], sid: str) -> dict:
    text = redis_get(servers, "GET", f"cb:session:{sid}")
    return json.loads(text) if text else {}


def xmpp_config(prosody: prosody_module.Prosody) -> str:
    """Chat through ``prosody`` (both daemons' components for one domain)."""
    return f"""
[xmpp]
enabled = yes
domain = {prosody.component}
port = {prosody.component_port}
secret_env = {XMPP_SECRET_ENV}
reconnect_max_delay = 1
"""


@pytest.fixture
def stack(tmp_path):
    prosody_module.require()
    prosody = prosody_module.Prosody.start_new()
    outbox = Outbox()
    try:
        with sentinel_topology(tmp_path, down_after_ms=DOWN_AFTER_MS) as servers:
            for parts in _stack(tmp_path, *servers, prosody, outbox):
                yield (*parts, prosody, outbox)
    finally:
        outbox.close()
        prosody.remove()


def _stack(tmp_path, primary, replica, sentinels, prosody, outbox):
    users = "".join(f"{u}:{s}," for _, u, s in USERS[1:]).rstrip(",")
    simulators = {
        name: Simulator(
            tmp_path / f"sim-{name}", time_scale=0.2, extra_args=("--user", users)
        ).start()
        for name in "ab"
    }
    fronts = xmpp_config(prosody) + sms_config(tmp_path, outbox)
    daemons = [
        Daemon(
            tmp_path / node,
            node_id=node,
            extra=sentinel_config(sentinels) + CLUSTER + switches_config(simulators, user) + fronts,
            env={SECRET_ENV: secret, XMPP_SECRET_ENV: prosody.secret},
        )
        for node, user, secret in USERS
    ]
    a, b = daemons
    try:
        a.start()
        a.wait_healthy()
        wait_for(
            lambda: primary.command("GET", "cb:acct:alice:balance") not in (None, "0"),
            "the demo account alice",
        )
        b.start()
        for daemon in daemons:
            wait_for(
                lambda d=daemon: all(d.wait_healthy()["checks"][f"ami:{n}"]["ok"] for n in "ab"),
                "both switches logged in",
            )
        yield primary, replica, sentinels, simulators, a, b
    finally:
        for daemon in daemons:
            daemon.stop()
        for sim in simulators.values():
            sim.stop()


def phase_on(api: Api, sid: str) -> str:
    answer = api.get(f"/api/v1/sessions/{sid}")
    return answer.json["phase"] if answer.status == 200 else f"{answer.status} {answer.body!r}"


def xmpp_check(daemon: Daemon) -> str:
    return daemon.wait_healthy()["checks"]["xmpp"]["detail"]


def test_scale_out(stack, tmp_path):
    primary, replica, sentinels, simulators, a, b, prosody, outbox = stack
    servers = [primary, replica]
    key = a.admin("create-api-key", "alice", "--label", "tests").stdout.strip()
    on_a, on_b = Api(a.web_port, key), Api(b.web_port, key)
    before = int(primary.command("GET", "cb:acct:alice:balance"))
    # A's component holds the chat domain, B's stands by (and B is healthy)
    assert xmpp_check(a).startswith("connected to")
    assert xmpp_check(b).startswith("standing by: another daemon's component holds")
    prosody.register(CHAT_USER, CHAT_PASSWORD)
    chat = BlockingUser(f"{CHAT_USER}@{prosody.host}", CHAT_PASSWORD, "127.0.0.1", prosody.c2s_port)
    try:
        _scale_out(
            servers, sentinels, simulators, a, b, on_a, on_b, key, before, chat, prosody, outbox
        )
    finally:
        chat.quit()


def _scale_out(
    servers, sentinels, simulators, a, b, on_a, on_b, key, before, chat, prosody, outbox
):
    primary, replica = servers
    service = prosody.component

    # calls through both daemons, on both switches: A's from a chat user and an SMS
    sessions: dict[str, str] = {}  # sid -> daemon placing it
    chat.send("message", to=service, body=f"LINK alice {DEMO_PASSWORD}")
    chat.expect_line("Linked to account alice.")
    chat.send("message", to=service, body=f"CALLBACK {next(SOURCES)} {DESTINATION}")
    sessions[chat.expect_line("Callback ").split()[1]] = "na"
    text = f"U.alice P.{DEMO_PASSWORD} D.{DESTINATION} O.{next(SOURCES)}"
    assert post_sms(a, SMS_SENDER, text, "scale-out-1") == (200, "accepted\n")
    started = outbox.expect(SMS_SENDER, "Callback ")
    sessions[next(line for line in started if line.startswith("Callback ")).split()[1][:-1]] = "na"
    for api, node in ((on_b, "nb"), (on_b, "nb")):
        created = api.post(
            "/api/v1/sessions", {"source": next(SOURCES), "destination": DESTINATION}
        )
        assert created.status == 201, created.body
        sessions[created.json["id"]] = node
    for sid in sessions:
        wait_for(lambda sid=sid: phase_on(on_b, sid) == "talking", f"{sid} talking")
    chat.expect_line("Remote answered.")  # told by A, whose component is connected
    outbox.expect(SMS_SENDER, "Remote answered.")  # queued by A, the session's owner
    placed = {sid: session_record(servers, sid)["switch"] for sid in sessions}
    by_place = {(node, placed[sid]): sid for sid, node in sessions.items()}
    assert sorted(by_place) == [("na", "a"), ("na", "b"), ("nb", "a"), ("nb", "b")]
    steered, taken_over = by_place["na", "a"], by_place["na", "b"]
    acknowledged, restarted = by_place["nb", "a"], by_place["nb", "b"]

    # a session of A steered through B (ADD, DEL), its events read from B
    stream = EventStream(b.web_port, f"/api/v1/sessions/{steered}/events", key)
    stream.read_until(lambda s: "talking" in kinds(s))
    mark = a.log_mark()
    added = on_b.post(f"/api/v1/sessions/{steered}/legs", {"address": EXTRA})
    assert added.status == 202, added.body
    a.wait_for_log(rf"session {steered}: Calling .*{EXTRA[1:]}", since=mark)
    stream.read_until(lambda s: "party_answered" in kinds(s))
    dropped = on_b.delete(f"/api/v1/sessions/{steered}/legs/{EXTRA}")
    assert dropped.status == 202, dropped.body
    stream.read_until(lambda s: ("leg_ended", "additional") in _legs(s))

    # one session hung up and charged (acknowledged once a replica has it), then the
    # primary SIGKILLed with three calls up: the replica is promoted, the calls go on
    assert on_b.delete(f"/api/v1/sessions/{acknowledged}").status == 202
    wait_for(
        lambda: sum(c.session_id == acknowledged for c in stored_cdrs(primary.port)) == 3,
        "the hung up session's CDRs stored",
    )
    charged = {c.cdr_id: c for c in stored_cdrs(primary.port)}
    primary.kill()
    wait_for(lambda: role(replica) == "master", "the replica promoted")
    # the old primary comes back (as the operator brings it back: a replica of the new
    # one) once every Sentinel names the new primary -- an empty server answering as a
    # primary where a lagging Sentinel still points would be a different test
    wait_for(
        lambda: all(
            s.command("SENTINEL", "GET-MASTER-ADDR-BY-NAME", NAME)[1] == str(replica.port)
            for s in sentinels
        ),
        "every Sentinel naming the new primary",
    )
    old = RedisServer.start_on(
        primary.data_dir, primary.port, extra=["--replicaof", "127.0.0.1", str(replica.port)]
    )
    try:
        wait_for(lambda: role(old) == "slave", "the old primary back as a replica")
        for daemon in (a, b):
            daemon.wait_healthy()
        for sid in (steered, taken_over, restarted):
            assert phase_on(on_b, sid) == "talking", sid
        kept = {c.cdr_id: c for c in stored_cdrs(replica.port)}
        assert {i: kept.get(i) for i in charged} == charged  # no acknowledged charge lost

        # A dies: B takes its two sessions over after the lease
        assert "Traceback" not in a.log()
        wait_for(
            lambda: redis_command(replica.port, "PTTL", "cb:node:na") > (LEASE - 1) * 1000,
            "A's lease renewed on the new primary",
        )
        a.kill()
        # B's component gets the chat domain once A's connection is gone
        wait_for(lambda: xmpp_check(b).startswith("connected to"), "B's component connected")
        killed = time.monotonic()
        for sid in (steered, taken_over):
            b.wait_for_log(rf"session {sid}: taken over from na", timeout=30)
        assert time.monotonic() - killed >= LEASE - 2  # not before the lease ran out

        # switch b restarts: its sessions (one B's own, one taken over) are reconciled
        assert simulators["b"].process is not None
        mark = b.log_mark()
        os.kill(simulators["b"].process.pid, signal.SIGUSR1)  # core restart now
        b.wait_for_log("switch b lost", since=mark)
        wait_for(lambda: b.wait_healthy()["checks"]["ami:b"]["ok"], "switch b back")
        for sid in (taken_over, restarted):
            wait_for(lambda sid=sid: phase_on(on_b, sid) == "ended", f"{sid} ended")
        time.sleep(1.0)
        assert phase_on(on_b, steered) == "talking"
        assert on_b.delete(f"/api/v1/sessions/{steered}").status == 202
        stream.read_until(lambda s: "session_ended" in kinds(s))
        seqs = [int(i) for i in stream.ids]
        assert seqs == list(range(seqs[0], seqs[0] + len(seqs))), seqs  # in order, once each
        wait_for(lambda: not redis_command(replica.port, "SMEMBERS", "cb:sessions"), "all ended")
        # the chat user and the SMS sender heard their calls end from B (A is dead)
        chat.expect_line("Charged time:")
        outbox.expect(SMS_SENDER, "Charged time:")

        # every leg billed once, by the per-second rule on its answer and hangup times
        cdrs = [c for c in stored_cdrs(replica.port) if c.session_id in sessions]
        legs = [c for c in cdrs if c.kind == "leg"]
        assert sorted((c.session_id, c.leg) for c in legs) == sorted(
            [(sid, leg) for sid in sessions for leg in ("destination", "source")]
            + [(steered, "additional-1")]
        )
        for c in legs:
            assert c.answered_at and c.ended_at > c.answered_at, c
            assert c.billed_seconds == math.ceil(c.ended_at - c.answered_at - 1e-6), c
            assert c.cost == expected_cost(c.rate, c.billed_seconds), c
        for sid in sessions:
            [record] = [c for c in cdrs if c.session_id == sid and c.kind == "session"]
            assert record.cost == sum(c.cost for c in legs if c.session_id == sid)
        # billed through A's death and the takeover, up to B's hangup
        source = next(c for c in legs if (c.session_id, c.leg) == (steered, "source"))
        assert source.ended_at - source.answered_at > 4
        after = int(redis_command(replica.port, "GET", "cb:acct:alice:balance"))
        assert after == before - sum(c.cost for c in legs)
        assert "Traceback" not in b.log()
    finally:
        old.stop()
