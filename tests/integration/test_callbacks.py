"""Callbacks end to end: the daemon under twistd, a real redis-server, the simulated
Asterisk as its own process over TCP, driven through the manhole by the real ssh client.

Timing: every time is real (the simulator stamps its events with the wall clock, and
the daemon bills from those stamps), so the test's own ``time.time()`` readings
bracket each answer and hangup: a leg's ``answered_at`` lies between the request and
the moment the test saw "Now talking" in the log, its ``ended_at`` between the
HANGUP request and the moment the test saw the session end. ``SLACK`` covers the
log being written a little after the event it reports and float rounding.
"""

from __future__ import annotations

import contextlib
import csv
import io
import math
import re
import time
from collections.abc import Callable, Iterator
from decimal import Decimal
from pathlib import Path

import pytest

from tests.integration.daemon import ROOT, Daemon, ManholeClient, Simulator, redis_command
from tests.procs import RedisServer

pytestmark = pytest.mark.integration

#: seconds of tolerance between the test's clock readings and the switch's timestamps
SLACK = 0.25
DECIMALS = 5


def sell_price(prefix: str) -> int:
    """The sell deck's per-minute price for ``prefix``, in minor units, read from the CSV."""
    for line in (ROOT / "etc" / "rates" / "sell.csv").read_text().splitlines():
        fields = line.split(",")
        if fields[0] == prefix:
            return int(Decimal(fields[1]) * 10**DECIMALS)
    raise KeyError(prefix)


def minor(text: str) -> int:
    """An amount as printed ("9.99853 EUR"), in minor units."""
    value = Decimal(text.split()[0]) * 10**DECIMALS
    assert value == int(value), text
    return int(value)


def expected_cost(price_per_minute: int, seconds: int) -> int:
    """Per-second billing: ceil(price * seconds / 60)."""
    return -(-price_per_minute * seconds // 60)


class Rig:
    """One daemon on an external redis, against a simulator process; helpers on top."""

    def __init__(
        self, workdir: Path, redis_port: int, simulator: Simulator, node_id: str = "t1"
    ) -> None:
        self.redis_port = redis_port
        self.simulator = simulator
        self.daemon = Daemon(
            workdir / "daemon",
            redis_port=redis_port,
            ami_port=simulator.port,
            ami_username=simulator.username,
            ami_secret=simulator.secret,
            node_id=node_id,
        )
        self._manhole: ManholeClient | None = None

    def start(self) -> Rig:
        self.daemon.start()
        self.daemon.wait_healthy()
        # the demo account alice (with its credit) is made once the store answers
        deadline = time.monotonic() + 20
        while redis_command(self.redis_port, "GET", "cb:acct:alice:balance") in (None, b"0"):
            assert time.monotonic() < deadline, "demo account alice never appeared"
            time.sleep(0.1)
        return self

    @property
    def manhole(self) -> ManholeClient:
        if self._manhole is None:
            self._manhole = self.daemon.manhole()
        return self._manhole

    def close_manhole(self) -> None:
        if self._manhole is not None:
            self._manhole.close()
            self._manhole = None

    def stop(self) -> None:
        self.close_manhole()
        self.daemon.stop()

    def balance(self, username: str) -> int:
        """The balance through the admin CLI, in minor units."""
        return minor(self.daemon.admin("balance", username).stdout)

    def cdr_rows(self, username: str) -> list[dict[str, str]]:
        """``list-cdrs`` through the admin CLI, as CSV rows."""
        out = self.daemon.admin("list-cdrs", username).stdout
        return list(csv.DictReader(io.StringIO(out)))

    def cdrs(self, session_id: str, timeout: float = 10.0) -> list[dict]:
        """The ended session's CDRs straight from the store (exact floats), by id.

        The log says "ended" when the session finishes; the store writes (leg CDRs,
        debits, session CDR, deleting the session: in that order) follow, so this
        waits until the session is gone from Redis.
        """
        deadline = time.monotonic() + timeout
        while f"cb:session:{session_id}" in self.sessions_in_redis():
            assert time.monotonic() < deadline, f"session {session_id} never left Redis"
            time.sleep(0.05)
        records = self.manhole.value(
            f"store.list_cdrs(None).addCallback(lambda cs: "
            f"[__import__('dataclasses').asdict(c) for c in cs if c.session_id == {session_id!r}])"
        )
        assert isinstance(records, list)
        return sorted(records, key=lambda c: c["cdr_id"])

    def sessions_in_redis(self) -> list[str]:
        members = redis_command(self.redis_port, "SMEMBERS", "cb:sessions")
        keys = redis_command(self.redis_port, "KEYS", "cb:session:*")
        assert isinstance(members, list) and isinstance(keys, list)
        return sorted(m.decode() for m in members + keys)

    def wait_no_channels(self, timeout: float = 10.0) -> list:
        """Poll the simulator's channel list through the daemon until it is empty."""
        deadline = time.monotonic() + timeout
        while True:
            channels = self.manhole.value("switch.list_channels()")
            if channels == [] or time.monotonic() > deadline:
                return channels  # type: ignore[return-value]
            time.sleep(0.1)


@contextlib.contextmanager
def rigs(workdir: Path, redis_server: RedisServer) -> Iterator[Callable[..., Rig]]:
    """Make rigs (a simulator process and a daemon) on an emptied Redis; stop them after."""
    redis_server.flush()
    made: list[Rig] = []

    def make(*rules: str, time_scale: float = 0.2, node_id: str = "t1") -> Rig:
        # a second rig (another node id) gets directories of its own
        base = workdir if node_id == "t1" else workdir / node_id
        simulator = Simulator(base / "sim", rules=rules, time_scale=time_scale).start()
        rig = Rig(base, redis_server.port, simulator, node_id)
        made.append(rig)
        return rig.start()

    try:
        yield make
    finally:
        for rig in made:
            rig.stop()
            rig.simulator.stop()


@pytest.fixture
def rig_factory(tmp_path, redis_server):
    """A maker of rigs for one test."""
    with rigs(tmp_path, redis_server) as make:
        yield make


@pytest.fixture(scope="class")
def shared_rig(tmp_path_factory, redis_server):
    """One rig for a class of tests that leave nothing behind (each asserts so)."""
    with rigs(tmp_path_factory.mktemp("shared"), redis_server) as make:
        yield make()


def progress(sid: str, text: str) -> str:
    """A regex for one progress line of session ``sid`` (``text`` is literal)."""
    return rf"session {re.escape(sid)}: {re.escape(text)}"


def check_leg(cdr: dict, price: int) -> None:
    """A leg CDR bills its own up-time, rounded up to seconds, at ``price`` per minute."""
    if cdr["answered_at"]:
        seconds = math.ceil(cdr["ended_at"] - cdr["answered_at"] - 1e-6)
        assert cdr["billed_seconds"] == seconds, cdr
    else:
        assert cdr["billed_seconds"] == 0, cdr
    assert cdr["rate"] == price, cdr
    assert cdr["cost"] == expected_cost(price, cdr["billed_seconds"]), cdr


def test_two_legs_then_a_third_then_hangup(rig_factory):
    """A two-leg callback plus an added leg: GTalk2VoIP's progress words, exact CDRs and money."""
    rig = rig_factory()
    m = rig.manhole
    price = sell_price("1555")
    before = rig.balance("alice")
    mark = rig.daemon.log_mark()
    t_request = time.time()
    m.execute('d = callback("alice", "+15550011111", "+15550012222")')
    sid = m.value("d")
    assert isinstance(sid, str)
    log = rig.daemon.wait_for_log
    log(progress(sid, "Calling source: phone:+15550011111, cost = 0.014 via PROXICOM"), since=mark)
    log(progress(sid, "Source answered."), since=mark)
    log(progress(sid, "Calling destination: phone:+15550012222, cost = 0.014 via "), since=mark)
    log(progress(sid, "Remote answered. Now talking. Cost = 0.028"), since=mark)
    t_talking = time.time()

    assert m.value('add(d, "+15550013333")') is None
    log(progress(sid, "Calling additional: phone:+15550013333, cost = 0.014 via "), since=mark)
    log(progress(sid, "Party answered. Now talking. Cost = 0.014"), since=mark)
    t_party = time.time()
    listing = m.value("legs(d)")
    assert isinstance(listing, str)
    for number in ("+15550011111", "+15550012222", "+15550013333"):
        assert number in listing
    assert m.value("sessions('alice')") == [sid]

    time.sleep(2.0)  # the call itself: three legs up for a couple of seconds
    t_hangup = time.time()
    assert m.value("hangup(d)") is None
    ended = log(progress(sid, "Call aborted! Thank you!"), since=mark)
    charged = log(r"Charged time: (\d+) secs\. Reason = EndedByHangup", since=ended.start())
    log(rf"session {re.escape(sid)} ended: EndedByHangup", since=mark)
    t_ended = time.time()

    cdrs = rig.cdrs(sid)
    legs = {c["leg"]: c for c in cdrs if c["kind"] == "leg"}
    (record,) = [c for c in cdrs if c["kind"] == "session"]
    assert sorted(legs) == ["additional-1", "destination", "source"]
    for name, up_before in (
        ("source", t_talking),
        ("destination", t_talking),
        ("additional-1", t_party),
    ):
        cdr = legs[name]
        check_leg(cdr, price)
        assert t_request - SLACK <= cdr["answered_at"] <= up_before + SLACK, cdr
        assert t_hangup - SLACK <= cdr["ended_at"] <= t_ended + SLACK, cdr
        assert cdr["billed_seconds"] >= 2, cdr
        assert cdr["cause"] == "hung up", cdr
    assert legs["source"]["address"] == "phone:+15550011111"
    assert legs["additional-1"]["address"] == "phone:+15550013333"
    total = sum(c["cost"] for c in legs.values())
    assert record["cost"] == total
    assert record["cause"] == "EndedByHangup"
    assert record["billed_seconds"] == int(charged.group(1))
    assert record["billed_seconds"] == max(c["billed_seconds"] for c in legs.values())

    assert rig.balance("alice") == before - total
    assert total > 0
    rows = rig.cdr_rows("alice")
    assert sorted(r["cdr_id"] for r in rows) == [c["cdr_id"] for c in cdrs]
    assert sum(minor(r["cost"]) for r in rows if r["kind"] == "leg") == total
    assert m.value("sessions('alice')") == []
    assert rig.sessions_in_redis() == []
    assert rig.wait_no_channels() == []


def start_and_talk(rig: Rig, username: str, source: str, destination: str) -> tuple[str, float]:
    """Place a callback through the manhole (as ``d``); its id once both legs talk."""
    mark = rig.daemon.log_mark()
    rig.manhole.execute(f"d = callback({username!r}, {source!r}, {destination!r})")
    sid = rig.manhole.value("d")
    assert isinstance(sid, str)
    rig.daemon.wait_for_log(progress(sid, "Remote answered. Now talking."), since=mark)
    return sid, time.time()


def test_a_congested_provider_fails_over_to_the_next(rig_factory):
    """PROXICOM congested: each leg goes out over the next provider, and says so."""
    rig = rig_factory("@proxicom=congestion")
    price = sell_price("1555")
    before = rig.balance("alice")
    mark = rig.daemon.log_mark()
    sid, _ = start_and_talk(rig, "alice", "+15550011111", "+15550012222")
    log = rig.daemon.wait_for_log
    log(progress(sid, "Calling source: phone:+15550011111, cost = 0.014 via PROXICOM"), since=mark)
    source_next = log(rf"session {sid}: Source congestion, trying (\w+)\.\.\.", since=mark)
    dest_next = log(rf"session {sid}: Destination congestion, trying (\w+)\.\.\.", since=mark)
    assert source_next.group(1) != "PROXICOM"
    assert rig.manhole.value("hangup(d)") is None
    log(rf"session {sid} ended: EndedByHangup", since=mark)

    legs = {c["leg"]: c for c in rig.cdrs(sid) if c["kind"] == "leg"}
    assert legs["source"]["provider"] == source_next.group(1)
    assert legs["destination"]["provider"] == dest_next.group(1)
    for cdr in legs.values():
        check_leg(cdr, price)
        assert "PROXICOM:" in cdr["extra"]["failed_attempts"], cdr
        assert cdr["extra"]["channel_id"].endswith("2"), cdr  # the second attempt
    assert rig.balance("alice") == before - sum(c["cost"] for c in legs.values())
    assert rig.sessions_in_redis() == []
    assert rig.wait_no_channels() == []


def test_a_busy_destination_ends_the_session_without_failover(rig_factory):
    """Busy is the callee's answer: no other provider is tried, the session ends with CDRs."""
    rig = rig_factory()
    price = sell_price("1555")
    before = rig.balance("alice")
    mark = rig.daemon.log_mark()
    rig.manhole.execute('d = callback("alice", "+15550011111", "+15550022222")')
    sid = rig.manhole.value("d")
    log = rig.daemon.wait_for_log
    log(progress(sid, "Destination busy. Call aborted!"), since=mark)
    log(r"Charged time: \d+ secs\. Reason = DestinationBusy", since=mark)
    log(rf"session {sid} ended: DestinationBusy", since=mark)
    assert re.search(rf"session {sid}: .*trying", rig.daemon.log()[mark:]) is None
    assert f"originate {sid}-b2" not in rig.daemon.log()[mark:]

    cdrs = rig.cdrs(sid)
    legs = {c["leg"]: c for c in cdrs if c["kind"] == "leg"}
    (record,) = [c for c in cdrs if c["kind"] == "session"]
    assert sorted(legs) == ["destination", "source"]
    assert legs["destination"]["answered_at"] == 0.0
    assert legs["destination"]["cost"] == 0
    assert legs["destination"]["cause"] == "busy"
    for cdr in legs.values():
        check_leg(cdr, price)
    assert legs["source"]["billed_seconds"] >= 1  # up while the destination was dialled
    assert record["cause"] == "DestinationBusy"
    assert record["cost"] == legs["source"]["cost"]
    assert rig.balance("alice") == before - legs["source"]["cost"]
    assert rig.manhole.value("sessions('alice')") == []
    assert rig.sessions_in_redis() == []
    assert rig.wait_no_channels() == []


def test_out_of_credit_cuts_the_call_at_the_computed_second(rig_factory):
    """A tiny balance: legs cut with OutOfCredit, the balance lands on the floor, never below."""
    # time_scale 1: the simulator scales AbsoluteTimeout too, and the switch's backstop
    # (1 s after the daemon's cut, in real seconds on a real Asterisk) must not come first
    rig = rig_factory(time_scale=1.0)
    rig.daemon.env["CB_TEST_PASSWORD"] = "a long test password"
    rig.daemon.admin("create-account", "carol", "--password-env", "CB_TEST_PASSWORD")
    rig.daemon.admin("topup", "carol", "0.002")
    credit = rig.balance("carol")
    assert credit == 200
    price = sell_price("1555")
    mark = rig.daemon.log_mark()
    sid, _ = start_and_talk(rig, "carol", "+15550011111", "+15550012222")
    log = rig.daemon.wait_for_log
    log(r"Charged time: \d+ secs\. Reason = OutOfCredit", since=mark)
    log(rf"session {sid} ended: OutOfCredit", since=mark)

    legs = {c["leg"]: c for c in rig.cdrs(sid) if c["kind"] == "leg"}
    total = sum(c["cost"] for c in legs.values())
    for cdr in legs.values():
        check_leg(cdr, price)
        assert cdr["cause"] == "out of credit", cdr  # the daemon's cut, not the switch's
    assert rig.balance("carol") == credit - total
    assert credit - total >= 0  # credit_limit 0: the floor is 0
    # cut within the last second that fits: the daemon cuts a quarter second before the
    # earliest backstop (whole seconds from its sending, so at or up to a second before
    # the paid end), which may leave each leg's last paid second unstarted (not billed
    # either); two more seconds on every leg would not fit
    assert sum(expected_cost(price, c["billed_seconds"] + 2) for c in legs.values()) > credit
    assert rig.sessions_in_redis() == []
    assert rig.wait_no_channels() == []


def test_a_top_up_by_the_admin_cli_extends_a_call_in_progress(rig_factory):
    """Another process credits the account mid-call: the daemon hears it and cuts later."""
    rig = rig_factory(time_scale=1.0)
    rig.daemon.env["CB_TEST_PASSWORD"] = "a long test password"
    rig.daemon.admin("create-account", "dave", "--password-env", "CB_TEST_PASSWORD")
    rig.daemon.admin("topup", "dave", "0.002")  # about 4 s of two legs at 0.014/min
    mark = rig.daemon.log_mark()
    sid, talking = start_and_talk(rig, "dave", "+15550011111", "+15550012222")
    rig.daemon.admin("topup", "dave", "0.05")  # about 100 s more
    while time.time() < talking + 7:  # well past the first cut
        assert rig.manhole.value("sessions('dave')") == [sid]
        time.sleep(0.5)
    assert rig.manhole.value("hangup(d)") is None
    rig.daemon.wait_for_log(r"Charged time: \d+ secs\. Reason = EndedByHangup", since=mark)
    legs = [c for c in rig.cdrs(sid) if c["kind"] == "leg"]
    assert all(c["billed_seconds"] >= 7 for c in legs), legs
    assert rig.balance("dave") == 200 + 5000 - sum(c["cost"] for c in legs)


def test_two_daemons_on_one_redis_keep_to_their_own_calls(rig_factory):
    """A second daemon (own node id and Asterisk) leaves the first one's call alone at its
    start, and each daemon's view of a shared account follows the other's charges."""
    a = rig_factory()
    sid, _ = start_and_talk(a, "alice", "+15550011111", "+15550012222")
    b = rig_factory(node_id="t2")  # its recovery sees sid in Redis, its switch does not
    deadline = time.monotonic() + 10
    while not b.manhole.value("engine.recovery.recovered"):
        assert time.monotonic() < deadline, "b's recovery never ran"
        time.sleep(0.1)
    time.sleep(0.5)  # what a recovery that took sid would do next: end it, bill it
    assert sid in a.sessions_in_redis()
    assert a.manhole.value("sessions('alice')") == [sid]
    assert b.manhole.value("sessions('alice')") == []
    other, _ = start_and_talk(b, "alice", "+15550011111", "+15550013333")
    assert b.manhole.value("hangup(d)") is None
    b.cdrs(other)  # b's charges are in the store
    balance = a.balance("alice")
    deadline = time.monotonic() + 10
    while a.manhole.value("engine.book.balance('alice')") != balance:
        assert time.monotonic() < deadline, "a's ledger did not follow b's charges"
        time.sleep(0.1)
    assert a.manhole.value("hangup(d)") is None
    assert {c["kind"] for c in a.cdrs(sid)} == {"leg", "session"}
    assert a.balance("alice") < balance


def session_json(rig: Rig, sid: str) -> dict:
    """The session as the daemon last persisted it in Redis."""
    import json

    raw = redis_command(rig.redis_port, "GET", f"cb:session:{sid}")
    assert isinstance(raw, bytes), raw
    return json.loads(raw)


def test_kill_9_and_restart_in_the_middle_of_a_call(rig_factory):
    """kill -9 while talking: the new daemon recovers the session, bills all up-time once."""
    rig = rig_factory()
    price = sell_price("1555")
    before = rig.balance("alice")
    t_request = time.time()
    sid, t_talking = start_and_talk(rig, "alice", "+15550011111", "+15550012222")
    time.sleep(0.5)
    rig.close_manhole()
    rig.daemon.kill()
    time.sleep(3.0)  # the calls go on at the switch while no daemon watches
    assert sid in rig.sessions_in_redis()
    mark = rig.daemon.log_mark()
    rig.start()
    rig.daemon.wait_for_log(rf"recovered session {sid}", since=mark)
    m = rig.manhole
    assert m.value("sessions('alice')") == [sid]
    listing = m.value(f"legs({sid!r})")
    assert "+15550011111" in listing and "+15550012222" in listing
    t_query = time.time()
    channels = m.value(
        "switch.list_channels().addCallback(lambda cs: "
        "{c.channel_id: (c.state, c.seconds) for c in cs})"
    )
    assert isinstance(channels, dict)
    t_hangup = time.time()
    assert m.value(f"hangup({sid!r})") is None
    rig.daemon.wait_for_log(rf"session {sid} ended: EndedByHangup", since=mark)
    t_ended = time.time()

    cdrs = rig.cdrs(sid)
    legs = {c["leg"]: c for c in cdrs if c["kind"] == "leg"}
    assert sorted(c["cdr_id"] for c in cdrs) == [sid, f"{sid}-a", f"{sid}-b"]
    for cdr in legs.values():
        check_leg(cdr, price)
        assert t_request - SLACK <= cdr["answered_at"] <= t_talking + SLACK, cdr
        assert t_hangup - SLACK <= cdr["ended_at"] <= t_ended + SLACK, cdr
        assert cdr["billed_seconds"] >= 4, cdr  # 0.5 s + 3 s down + restart, all billed
        # The switch's own count: CoreShowChannels' whole seconds since the channel was
        # made (its 0.2 s of ringing included), asked at or just after t_query; the leg
        # then stayed up until its end. Billing rounds the up-time up and Duration
        # rounds the age down, so each bound may be off by one second, the upper one
        # by one more for the ringing and rounding together.
        state, seconds = channels[cdr["extra"]["channel_id"]]
        assert state == "up"
        up_after_query = cdr["ended_at"] - t_query
        assert seconds - 1 <= cdr["billed_seconds"] <= seconds + up_after_query + 2, cdr
    log = rig.daemon.log()
    for role in ("source", "destination"):
        # the leg's end, with its billed seconds and cost, logged once over both daemons
        ended = rf"session {sid}: \(leg ended: {role}, .*, \d+ s, \d+\.\d+\)"
        assert len(re.findall(ended, log)) == 1, role
    assert rig.balance("alice") == before - sum(c["cost"] for c in legs.values())
    assert m.value("store.list_sessions()") == []
    assert rig.sessions_in_redis() == []
    assert rig.wait_no_channels() == []


def test_a_leg_that_ends_while_the_daemon_is_down_is_billed_to_the_last_heartbeat(rig_factory):
    """The destination hangs up during the outage: after restart it is billed up to seen_at."""
    rig = rig_factory(time_scale=0.4)  # 1555004: answers after 0.4 s, hangs up 2 s later
    price = sell_price("1555")
    before = rig.balance("alice")
    sid, t_talking = start_and_talk(rig, "alice", "+15550011111", "+15550042222")
    rig.close_manhole()
    rig.daemon.kill()
    saved = session_json(rig, sid)
    seen_at = saved["seen_at"]
    time.sleep(max(0.0, t_talking + 2.5 - time.time()))  # the destination hangs up meanwhile
    mark = rig.daemon.log_mark()
    rig.start()
    log = rig.daemon.wait_for_log
    log(rf"recovered session {sid}", since=mark)
    log(r"Charged time: \d+ secs\. Reason = DestinationHangup", since=mark)
    log(rf"session {sid} ended: DestinationHangup", since=mark)

    cdrs = rig.cdrs(sid)
    legs = {c["leg"]: c for c in cdrs if c["kind"] == "leg"}
    assert sorted(c["cdr_id"] for c in cdrs) == [sid, f"{sid}-a", f"{sid}-b"]
    destination, source = legs["destination"], legs["source"]
    for cdr in legs.values():
        check_leg(cdr, price)
    # the documented rule: the vanished leg ends at the last moment the daemon knew it up
    assert destination["cause"] == "lost"
    assert destination["ended_at"] == pytest.approx(max(destination["answered_at"], seen_at))
    # the source was still up after the restart, and is billed until it was hung up
    assert source["ended_at"] > t_talking + 2.0
    assert rig.balance("alice") == before - sum(c["cost"] for c in legs.values())
    assert rig.manhole.value("store.list_sessions()") == []
    assert rig.sessions_in_redis() == []
    assert rig.wait_no_channels() == []


class TestRefusals:
    """Requests the daemon will not carry out, on one shared daemon."""

    @pytest.mark.parametrize(
        ("args", "message"),
        [
            (
                ("+15550011111", "+15550012222", "NOSUCH"),
                "unknown provider 'NOSUCH': choose one of MKS, PAKLINE, PROXICOM",
            ),
            (("+15550011111", "+1555-abc"), "+1555-abc"),
            (("+15550011111", "+886212345678"), "There is no rate for +886212345678."),
        ],
        ids=["unknown-provider", "malformed-leg", "no-rate"],
    )
    def test_bad_requests_are_refused_with_a_reason(self, shared_rig, args, message):
        """A request the daemon cannot carry out fails with the reason; nothing is created."""
        rig = shared_rig
        before = rig.balance("alice")
        ok, error = rig.manhole.call(f"callback('alice', *{args!r})")
        assert not ok
        assert error.startswith("CallbackRefused: ")
        assert message in error
        assert rig.sessions_in_redis() == []
        assert rig.manhole.value("cdrs('alice')") == []
        assert rig.balance("alice") == before
        assert rig.manhole.value("switch.list_channels()") == []

    def test_no_credit_is_refused(self, shared_rig):
        """An account with nothing on it is refused before anything is dialled."""
        rig = shared_rig
        rig.daemon.env["CB_TEST_PASSWORD"] = "a long test password"
        rig.daemon.admin("create-account", "dave", "--password-env", "CB_TEST_PASSWORD")
        assert rig.balance("dave") == 0
        ok, error = rig.manhole.call("callback('dave', '+15550011111', '+15550012222')")
        assert not ok
        assert error == "CallbackRefused: Not enough credit for this call. Please top up."
        assert rig.sessions_in_redis() == []
        assert rig.manhole.value("cdrs('dave')") == []
        assert rig.balance("dave") == 0
        assert rig.manhole.value("switch.list_channels()") == []


def test_asterisk_down_then_back(rig_factory):
    """AMI server gone: unhealthy, a callback is refused, nothing left; back: calls work again."""
    rig = rig_factory()
    before = rig.balance("alice")
    rig.simulator.stop()
    body = rig.daemon.wait_healthy(healthy=False)
    assert body["checks"]["ami"]["ok"] is False
    mark = rig.daemon.log_mark()
    ok, error = rig.manhole.call("callback('alice', '+15550011111', '+15550012222')")
    assert not ok
    assert error == (
        "CallbackRefused: The phone switch is not reachable right now; try again soon."
    )
    assert rig.manhole.value("sessions('alice')") == []
    assert rig.sessions_in_redis() == []
    assert rig.manhole.value("cdrs('alice')") == []
    assert rig.balance("alice") == before
    assert "originate" not in rig.daemon.log()[mark:]

    rig.simulator.start()
    rig.daemon.wait_healthy(timeout=30)
    sid, _ = start_and_talk(rig, "alice", "+15550011111", "+15550012222")
    assert rig.manhole.value("hangup(d)") is None
    rig.daemon.wait_for_log(rf"session {sid} ended: EndedByHangup", since=mark)
    legs = [c for c in rig.cdrs(sid) if c["kind"] == "leg"]
    assert rig.balance("alice") == before - sum(c["cost"] for c in legs)
    assert rig.sessions_in_redis() == []
    assert rig.wait_no_channels() == []


def test_source_hanging_up_while_talking_ends_as_source_hangup(rig_factory):
    """The source's far end hangs up: the simulator (as the real switch, 8 runs of 8 in
    real-source_hangs_up.log) ends the source's channels before the destination it
    drags out of the room, so the session ends SourceHangup, not DestinationHangup."""
    rig = rig_factory("1555008=answer:1,hangup:3")  # the source hangs up 3 s after answering
    mark = rig.daemon.log_mark()
    sid, _ = start_and_talk(rig, "alice", "+15550081111", "+15550012222")
    rig.daemon.wait_for_log(rf"session {sid} ended: SourceHangup", since=mark)
    assert rig.wait_no_channels() == []
