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

import csv
import io
import math
import re
import time
from decimal import Decimal
from pathlib import Path

import pytest

from tests.integration.daemon import ROOT, Daemon, ManholeClient, Simulator, redis_command

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

    def __init__(self, workdir: Path, redis_port: int, simulator: Simulator) -> None:
        self.redis_port = redis_port
        self.simulator = simulator
        self.daemon = Daemon(
            workdir / "daemon",
            redis_port=redis_port,
            ami_port=simulator.port,
            ami_username=simulator.username,
            ami_secret=simulator.secret,
        )
        self._manhole: ManholeClient | None = None

    def start(self) -> Rig:
        self.daemon.start()
        self.daemon.wait_healthy()
        # demo data (alice) is created once the store answers
        deadline = time.monotonic() + 20
        while self.daemon.admin("balance", "alice", check=False).returncode != 0:
            assert time.monotonic() < deadline, "demo account alice never appeared"
            time.sleep(0.2)
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

    def cdrs(self, session_id: str) -> list[dict]:
        """The session's CDRs straight from the store (exact floats), legs by letter."""
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


@pytest.fixture
def rig_factory(tmp_path, redis_server):
    """Make rigs (a simulator process and a daemon); everything is stopped afterwards."""
    redis_server.flush()
    made: list[Rig] = []
    simulators: list[Simulator] = []

    def make(*rules: str, time_scale: float = 0.2) -> Rig:
        simulator = Simulator(tmp_path / "sim", rules=rules, time_scale=time_scale).start()
        simulators.append(simulator)
        rig = Rig(tmp_path, redis_server.port, simulator)
        made.append(rig)
        return rig.start()

    yield make
    for rig in made:
        rig.stop()
    for simulator in simulators:
        simulator.stop()


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
    """A two-leg callback plus an added leg: progress in the seed's words, exact CDRs and money."""
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
