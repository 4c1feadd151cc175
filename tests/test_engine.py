"""The session manager over a FakeSwitch, a MemoryStore and a task.Clock."""

from __future__ import annotations

import re

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from twisted.internet.task import Clock
from twisted.python.failure import Failure

from callbackd.config import GatewaysConfig
from callbackd.core.model import CDR, Account, AccountStatus
from callbackd.core.rating import Deck, Rate
from callbackd.engine import CallbackRefused, Provider, SessionManager
from callbackd.fakeswitch import FakeSwitch
from callbackd.i18n import LANGUAGES, progress, translator
from callbackd.store.hashing import BcryptHasher
from callbackd.store.memory import MemoryStore
from callbackd.switch import ChannelInfo, LegHungUp

START = 1_700_000_000.0
SOURCE = "+4930123456"
DESTINATION = "+923001234567"
EXTRA = "+4989123456"
SELL_49 = Rate("49", 1400)
SELL_92 = Rate("92", 1204)
SIP_GATEWAY = GatewaysConfig(sip="PJSIP/callbackd-sip/sip:{user}@{host}")


def result(d):
    """The result of a Deferred that has fired (raising its failure)."""
    out = []
    d.addBoth(out.append)
    assert out, "the Deferred has not fired"
    if isinstance(out[0], Failure):
        out[0].raiseException()
    return out[0]


class World:
    """A manager with its fakes, and alice's account."""

    def __init__(
        self,
        balance=10_000_000,
        store=None,
        clock=None,
        channels=(),
        switch=None,
        manager=None,
        **account,
    ):
        self.clock = clock or Clock()
        if clock is None:
            self.clock.advance(START)
        self.switch = switch or FakeSwitch()
        self.switch.channels = list(channels)
        self.store = store or MemoryStore(self.clock, BcryptHasher(rounds=4, run_in_thread=False))
        if store is None:
            result(self.store.create_account(Account("alice", **account), "secret-pw"))
            if balance:
                result(self.store.credit("alice", balance, "initial"))
        self.manager = self.new_manager(**(manager or {}))
        self.events = []
        self.manager.subscribe(self.events.append)

    def new_manager(self, **kw):
        providers = [
            Provider("PROXICOM", "PJSIP/{number}@proxicom", Deck([Rate("49", 500)])),
            Provider("MKS", "PJSIP/{number}@mks", Deck([Rate("49", 600)])),
            Provider("PAKLINE", "PJSIP/{number}@pakline", Deck([Rate("92", 800)])),
        ]
        manager = SessionManager(
            self.clock,
            getattr(self, "pool", None) or self.switch,
            self.store,
            sell_deck=Deck([SELL_49, SELL_92, Rate("1900", 9000)]),
            providers=providers,
            node_id=kw.pop("node_id", "t1"),
            blocked_prefixes=("1900",),
            **kw,
        )
        result(manager.start())
        return manager

    def callback(self, source=SOURCE, destination=DESTINATION, via=()):
        return result(self.manager.start_callback("alice", source, destination, via))

    def now(self):
        return self.clock.seconds()

    def talking(self):
        sid = self.callback()
        self.switch.answer(f"{sid}-a1", self.now())
        self.switch.answer(f"{sid}-b1", self.now())
        return sid

    def balance(self):
        return result(self.store.get_balance("alice"))

    def cdrs(self):
        return {c.leg or "session": c for c in result(self.store.list_cdrs("alice"))}

    def texts(self):
        return [progress.render(e, translator("en"), 5) for e in self.events]


# -- the whole call -----------------------------------------------------------------


def test_source_is_originated_first_into_the_waiting_role():
    """start_callback originates the source with ringback, over the cheapest provider."""
    world = World()
    sid = world.callback()
    [request] = world.switch.originated
    assert (request.channel_id, request.role, request.channel) == (
        f"{sid}-a1",
        "wait",
        "PJSIP/4930123456@proxicom",
    )


def test_two_leg_callback_is_billed_per_leg():
    """A two-leg call: each leg billed from its own answer, CDRs written, balance debited."""
    world = World()
    sid = world.callback()
    world.switch.answer(f"{sid}-a1", START + 5)
    assert world.switch.originated[1].channel_id == f"{sid}-b1"
    world.switch.answer(f"{sid}-b1", START + 10)
    assert world.switch.joined == [(f"{sid}-a1", sid)]
    result(world.manager.hangup(sid))
    world.switch.hang_up(f"{sid}-a1", START + 38)
    world.switch.hang_up(f"{sid}-b1", START + 38)
    cdrs = world.cdrs()
    assert (cdrs["source"].billed_seconds, cdrs["source"].cost) == (33, SELL_49.cost(33))
    assert (cdrs["destination"].billed_seconds, cdrs["destination"].cost) == (
        28,
        SELL_92.cost(28),
    )
    assert cdrs["session"].cost == SELL_49.cost(33) + SELL_92.cost(28)
    assert world.balance() == 10_000_000 - cdrs["session"].cost


def test_finished_session_is_forgotten():
    """After the end the session is neither in memory nor in the store."""
    world = World()
    sid = world.talking()
    result(world.manager.hangup(sid))
    world.switch.hang_up(f"{sid}-a1", world.now())
    world.switch.hang_up(f"{sid}-b1", world.now())
    assert world.manager.sessions_of("alice") == []
    assert result(world.store.list_sessions()) == []


def test_progress_is_published_in_the_seed_words():
    """Subscribers get GTalk2VoIP's progress lines."""
    world = World()
    sid = world.talking()
    result(world.manager.hangup(sid))
    world.switch.hang_up(f"{sid}-a1", world.now() + 5)
    world.switch.hang_up(f"{sid}-b1", world.now() + 5)
    texts = world.texts()
    for line in (
        "Calling source: phone:+4930123456, cost = 0.014 via PROXICOM",
        "Calling destination: phone:+923001234567, cost = 0.01204 via PAKLINE",
        "Remote answered. Now talking. Cost = 0.02604",
        "Call aborted! Thank you!\nCharged time: 5 secs. Reason = EndedByHangup",
    ):
        assert line in texts


def test_a_raising_subscriber_does_not_break_the_session():
    """A subscriber that raises is logged; the others still hear and the call goes on."""
    world = World()

    def broken(event):
        raise RuntimeError("subscriber bug")

    world.manager.subscribe(broken)
    sid = world.talking()
    assert world.switch.joined == [(f"{sid}-a1", sid)]
    assert "Remote answered. Now talking. Cost = 0.02604" in world.texts()


def test_subscription_to_one_session_hears_only_it():
    """subscribe(session_id=...) filters the events."""
    world = World(max_sessions=2)
    first = world.callback()
    heard = []
    world.manager.subscribe(heard.append, first)
    world.callback(EXTRA, DESTINATION)
    world.switch.answer(f"{first}-a1", world.now())
    assert heard and {e.session_id for e in heard} == {first}


def test_session_ids_are_unique_and_short():
    """Session ids are node id + base36 time + counter, alphanumeric, at most 24 chars."""
    world = World(max_sessions=2)
    ids = [world.callback(), world.callback(EXTRA, DESTINATION)]
    assert len(set(ids)) == 2
    assert all(re.fullmatch(r"t1[a-z0-9]+", sid) and len(sid) <= 24 for sid in ids)


# -- failover -----------------------------------------------------------------------


def test_congestion_fails_over_to_the_next_provider():
    """A congested source attempt is retried over MKS as attempt 2."""
    world = World()
    sid = world.callback()
    world.switch.fail(f"{sid}-a1", "congestion", world.now())
    retry = world.switch.originated[-1]
    assert (retry.channel_id, retry.channel) == (f"{sid}-a2", "PJSIP/4930123456@mks")
    assert "Source congestion, trying MKS..." in world.texts()


def test_busy_does_not_fail_over():
    """A busy source ends the session: no second attempt, a zero-cost CDR."""
    world = World()
    sid = world.callback()
    world.switch.fail(f"{sid}-a1", "busy", world.now())
    assert len(world.switch.originated) == 1
    cdrs = world.cdrs()
    assert (cdrs["source"].cost, cdrs["source"].cause, cdrs["session"].cause) == (
        0,
        "busy",
        "SourceBusy",
    )
    assert world.balance() == 10_000_000


def test_refused_originate_fails_over():
    """An originate the switch refuses counts as a failed attempt: the next provider is tried."""
    world = World()
    world.switch.refuse_next()
    sid = world.callback()
    assert [r.channel_id for r in world.switch.originated] == [f"{sid}-a2"]


def test_attempts_are_recorded_for_provider_statistics():
    """Each ended attempt is stored with its provider."""
    world = World()
    sid = world.callback()
    world.switch.fail(f"{sid}-a1", "congestion", world.now())
    [attempt] = result(world.store.provider_attempts("PROXICOM", 0))
    assert (attempt["answered"], attempt["cause"]) == (False, "congestion")


def test_via_forces_the_provider():
    """``via MKS`` dials the source over MKS only."""
    world = World()
    sid = world.callback(via=("MKS",))
    world.switch.fail(f"{sid}-a1", "congestion", world.now())
    assert [r.channel for r in world.switch.originated] == ["PJSIP/4930123456@mks"]


# -- conference legs ----------------------------------------------------------------


def test_add_and_del_an_additional_leg():
    """ADD dials a third party into the room; DEL hangs it up and bills it; the call goes on."""
    world = World()
    sid = world.talking()
    result(world.manager.add_leg(sid, EXTRA))
    assert world.switch.originated[-1].channel_id == f"{sid}-c1"
    world.switch.answer(f"{sid}-c1", world.now())
    world.clock.advance(12)
    result(world.manager.drop_leg(sid, EXTRA))
    assert (f"{sid}-c1", 16) in world.switch.hung_up
    world.switch.hang_up(f"{sid}-c1", world.now())
    cdr = world.cdrs()["additional-1"]
    assert (cdr.cause, cdr.billed_seconds) == ("kicked", 12)
    assert world.manager.sessions_of("alice") == [sid]


def test_list_legs_names_the_connected_legs():
    """LIST gives GTalk2VoIP's list."""
    world = World()
    sid = world.talking()
    assert world.manager.list_legs(sid) == (
        "List of connected legs: 1. Source: phone:+4930123456 Via: PROXICOM, "
        "2. Destination: phone:+923001234567 Via: PAKLINE"
    )


def test_del_of_the_source_is_refused():
    """DEL source errbacks CallbackRefused."""
    world = World()
    sid = world.talking()
    with pytest.raises(CallbackRefused):
        result(world.manager.drop_leg(sid, "source"))


def test_add_before_connected_is_refused():
    """ADD while the destination rings errbacks CallbackRefused."""
    world = World()
    sid = world.callback()
    with pytest.raises(CallbackRefused):
        result(world.manager.add_leg(sid, EXTRA))


def test_source_hangup_releases_every_other_leg():
    """When the source hangs up, destination and additional legs are hung up."""
    world = World()
    sid = world.talking()
    result(world.manager.add_leg(sid, EXTRA))
    world.switch.hang_up(f"{sid}-a1", world.now())
    assert {c for c, _ in world.switch.hung_up} == {f"{sid}-b1", f"{sid}-c1"}


def test_unconfirmed_hangups_finish_after_the_release_timer():
    """When the switch never confirms the hangups the session still ends, billed to the request."""
    world = World()
    sid = world.talking()
    world.clock.advance(20)
    result(world.manager.hangup(sid))
    world.clock.advance(60)
    cdrs = world.cdrs()
    assert cdrs["source"].billed_seconds == 20
    assert world.manager.sessions_of("alice") == []


# -- credit -------------------------------------------------------------------------


def credit_for(seconds):
    return SELL_49.cost(seconds) + SELL_92.cost(seconds)


def test_out_of_credit_cuts_the_billed_legs_at_the_right_second():
    """With credit for 60 s the legs are hung up 60 s after they answer, AbsoluteTimeout set."""
    world = World(balance=credit_for(60))
    sid = world.talking()
    assert (f"{sid}-b1", 60) in world.switch.timeouts
    world.clock.advance(59)
    assert world.switch.hung_up == []
    world.clock.advance(1)
    assert {c for c, _ in world.switch.hung_up} == {f"{sid}-a1", f"{sid}-b1"}
    world.switch.hang_up(f"{sid}-a1", world.now())
    world.switch.hang_up(f"{sid}-b1", world.now())
    assert world.cdrs()["session"].cause == "OutOfCredit"
    assert world.balance() == 0


def test_top_up_extends_the_call():
    """A top-up during the call moves the cut further away."""
    world = World(balance=credit_for(60))
    world.talking()
    world.clock.advance(30)
    result(world.store.credit("alice", credit_for(60), "voucher-1"))
    result(world.manager.balance_changed("alice"))
    world.clock.advance(40)
    assert world.switch.hung_up == []
    world.clock.advance(50)
    assert len(world.switch.hung_up) == 2


def test_a_balance_read_in_a_store_gap_is_read_again():
    """A top-up told while the store cannot answer the read (a failover: the feed is back
    before the commands): the balance is read again a moment later, and the call extended."""
    from twisted.internet import defer

    from callbackd.engine.manager import BALANCE_RETRY
    from callbackd.store.interface import StoreUnavailable

    world = World(balance=credit_for(60))
    world.talking()
    world.clock.advance(30)
    original, failures = world.store.get_balance, []

    def in_the_gap(username):
        if not failures:
            failures.append(username)
            return defer.fail(StoreUnavailable("redis unavailable: failover"))
        return original(username)

    world.store.get_balance = in_the_gap
    result(world.store.credit("alice", credit_for(60), "voucher-1"))  # the feed tells
    assert failures == ["alice"]
    world.clock.advance(BALANCE_RETRY)
    world.clock.advance(40)
    assert world.switch.hung_up == []
    world.clock.advance(50)
    assert len(world.switch.hung_up) == 2


# -- refusals -----------------------------------------------------------------------

#: refusals whose English message is the parser's own, more detailed than the catalogue's
DETAILED = {"refusal.bad_address", "refusal.unknown_provider"}


def assert_catalogued(error: CallbackRefused, code: str) -> None:
    """The refusal names its catalogue text (``code``), whose English is its message and
    which every language fills with its parameters."""
    assert error.code == code
    if code not in DETAILED:
        assert translator("en").text(error.code, **error.params) == str(error)
    for language in LANGUAGES:
        text = translator(language).text(error.code, **error.params)
        assert text != error.code and "{" not in text


@pytest.mark.parametrize(
    "setup,source,destination,via,words,code",
    [
        ({"username": "bob"}, SOURCE, DESTINATION, (), "Unknown account", "unknown_account"),
        ({"status": AccountStatus.BLOCKED}, SOURCE, DESTINATION, (), "blocked", "account_blocked"),
        ({}, "sip:nonsense", DESTINATION, (), "not a phone number", "bad_address"),
        ({}, SOURCE, "+19005551234", (), "not allowed", "blocked_destination"),
        ({}, SOURCE, "+33123456789", (), "no rate", "no_rate"),
        ({}, SOURCE, DESTINATION, ("NOSUCH",), "unknown provider", "unknown_provider"),
        ({}, SOURCE, DESTINATION, ("PAKLINE",), "does not reach", "provider_not_reaching"),
        ({}, SOURCE, DESTINATION, ("A", "B", "C"), "at most two providers", "too_many_providers"),
        ({"balance": 0}, SOURCE, DESTINATION, (), "Not enough credit", "no_credit"),
        (
            {},
            SOURCE,
            "sip:bob@example.org",
            (),
            "sip network is not available",
            "network_unavailable",
        ),
        (
            {},
            "xmpp:bob@example.org",
            DESTINATION,
            (),
            "xmpp network is not available",
            "network_unavailable",
        ),
        ({}, SOURCE, SOURCE, (), "Source and destination are the same number", "same_number"),
        ({}, SOURCE, "030 123456", (), "Source and destination are the same number", "same_number"),
    ],
)
def test_refusals_say_why(setup, source, destination, via, words, code):
    """Each refusal errbacks CallbackRefused with a message for the user, and the id of
    its text in the message catalogue for the other languages."""
    setup = dict(setup)
    username = setup.pop("username", "alice")
    world = World(balance=setup.pop("balance", 10_000_000), **setup)
    with pytest.raises(CallbackRefused, match=f"(?i){words}") as info:
        result(world.manager.start_callback(username, source, destination, via))
    assert world.switch.originated == []
    assert_catalogued(info.value, f"refusal.{code}")


def test_rate_of_is_the_sell_price_per_minute_of_a_leg():
    """RATE: the sell deck's price per minute (the one a callback's progress tells), 0 for
    a gateway leg; what a callback would refuse is refused with the same text."""
    world = World(manager={"gateways": SIP_GATEWAY})
    assert world.manager.rate_of(SOURCE) == SELL_49.price_per_minute
    assert world.manager.rate_of("0092 300 1234567") == SELL_92.price_per_minute
    assert world.manager.rate_of("sip:bob@example.org") == 0
    for address, code in (
        ("+33123456789", "no_rate"),
        ("+19005551234", "blocked_destination"),
        ("sip:nonsense", "bad_address"),
        ("xmpp:bob@example.org", "network_unavailable"),
    ):
        with pytest.raises(CallbackRefused) as info:
            world.manager.rate_of(address)
        assert_catalogued(info.value, f"refusal.{code}")


def test_refusals_of_session_commands_name_their_catalogue_text():
    """The session machine's refusals (DEL, ADD, an unknown or ended session) carry the
    catalogue id of their text too."""
    world = World()
    sid = world.callback()
    with pytest.raises(CallbackRefused) as info:
        result(world.manager.add_leg(sid, EXTRA))
    assert_catalogued(info.value, "refusal.not_connected")
    world.switch.answer(f"{sid}-a1", world.now())
    world.switch.answer(f"{sid}-b1", world.now())
    with pytest.raises(CallbackRefused) as info:
        result(world.manager.drop_leg(sid, "source"))
    assert_catalogued(info.value, "refusal.drop_main_leg")
    with pytest.raises(CallbackRefused) as info:
        result(world.manager.drop_leg(sid, HAMBURG))
    assert_catalogued(info.value, "refusal.not_additional")
    result(world.manager.add_leg(sid, EXTRA))
    with pytest.raises(CallbackRefused) as info:
        result(world.manager.add_leg(sid, EXTRA))
    assert_catalogued(info.value, "refusal.already_in_call")
    with pytest.raises(CallbackRefused) as info:
        world.manager.list_legs("nosuch")
    assert_catalogued(info.value, "refusal.unknown_session")


def test_concurrent_session_limit():
    """A second session beyond max_sessions is refused."""
    world = World(max_sessions=1)
    world.callback()
    with pytest.raises(CallbackRefused, match="in progress") as info:
        world.callback(EXTRA, DESTINATION)
    assert_catalogued(info.value, "refusal.too_many_sessions")


def test_free_legs_need_no_credit():
    """A SIP-to-SIP callback starts with a zero balance."""
    world = World(balance=0, manager={"gateways": SIP_GATEWAY})
    sid = world.callback("sip:alice@example.org", "sip:bob@example.org")
    assert world.switch.originated[0].channel == "PJSIP/callbackd-sip/sip:alice@example.org"
    assert sid in world.manager.sessions_of("alice")


# -- recovery -----------------------------------------------------------------------


def restart(world, channels):
    """A new manager and switch on the same store and clock (the old one crashed)."""
    world.manager.stop()
    return World(store=world.store, clock=world.clock, channels=channels)


def test_recovery_keeps_live_legs_and_re_arms_credit():
    """After a restart live legs stay tracked and the credit cut still comes on time."""
    world = World(balance=credit_for(100))
    sid = world.talking()
    world.clock.advance(30)
    after = restart(
        world,
        [ChannelInfo(f"{sid}-a1", "PJSIP/a", "up"), ChannelInfo(f"{sid}-b1", "PJSIP/b", "up")],
    )
    assert after.manager.sessions_of("alice") == [sid]
    after.clock.advance(69)
    assert after.switch.hung_up == []
    after.clock.advance(1)
    assert len(after.switch.hung_up) == 2


def test_recovery_bills_vanished_legs_to_the_last_heartbeat_once():
    """Legs gone during the outage are billed up to the last heartbeat, and only once."""
    world = World()
    sid = world.talking()
    world.clock.pump([10, 10, 5])  # heartbeats at 10 and 20 s
    after = restart(world, [])
    world.clock.advance(100)
    cdrs = after.cdrs()
    assert (cdrs["source"].billed_seconds, cdrs["destination"].billed_seconds) == (20, 20)
    balance = after.balance()
    assert balance == 10_000_000 - SELL_49.cost(20) - SELL_92.cost(20)
    again = restart(after, [])
    assert again.balance() == balance
    assert result(again.store.list_sessions()) == []
    assert sid not in again.manager.sessions_of("alice")


def test_another_daemons_sessions_are_left_alone():
    """A second daemon on the same store does not recover (and end) the first one's calls."""
    world = World()
    sid = world.talking()
    world.clock.advance(5)
    other = world.new_manager(node_id="t2")  # its switch lists none of t1's channels
    assert other.sessions_of("alice") == []
    assert result(world.store.list_sessions()) == [sid]
    assert world.manager.status(sid)["phase"] == "talking"
    assert world.switch.hung_up == []


def test_a_restarted_daemon_recovers_its_own_sessions():
    """The same node_id after a restart takes its sessions back."""
    world = World()
    sid = world.talking()
    after = restart(world, [])
    after.clock.advance(100)
    assert result(after.store.list_sessions()) == []
    assert after.cdrs()["session"].session_id == sid


def test_recovery_on_switch_reconnect_closes_legs_that_ended():
    """A SwitchConnected reconciles: a destination gone meanwhile ends the session."""
    world = World()
    sid = world.talking()
    world.clock.pump([10, 5])
    world.switch.disconnect(world.now())
    world.clock.advance(30)
    world.switch.channels = [ChannelInfo(f"{sid}-a1", "PJSIP/a", "up")]
    world.switch.connect(world.now())
    assert (f"{sid}-a1", 16) in world.switch.hung_up
    world.switch.hang_up(f"{sid}-a1", world.now())
    cdrs = world.cdrs()
    assert cdrs["destination"].billed_seconds == 15
    assert cdrs["source"].billed_seconds == 45


# -- #11 and the switch going away ---------------------------------------------------


def test_hash11_ends_the_destination_and_keeps_the_source():
    """#11 keyed in the room hangs up the destination only; the call goes on, billed per leg."""
    world = World()
    sid = world.talking()
    world.clock.advance(10)
    world.switch.key(sid, "endb", world.now(), f"{sid}-a1")
    assert world.switch.hung_up == [(f"{sid}-b1", 16)]
    assert "Destination disconnected by #11." in world.texts()
    world.switch.hang_up(f"{sid}-b1", world.now())
    assert world.manager.status(sid)["phase"] == "talking"
    assert world.cdrs()["destination"].billed_seconds == 10
    world.clock.advance(5)
    result(world.manager.add_leg(sid, EXTRA))
    assert world.switch.originated[-1].channel_id == f"{sid}-c1"


def test_hash11_of_an_unknown_room_is_ignored():
    """A room command for a room that is no session of ours changes nothing."""
    world = World()
    sid = world.talking()
    world.switch.key("nosuchroom", "endb", world.now())
    assert world.switch.hung_up == []
    assert world.manager.status(sid)["phase"] == "talking"


def test_switch_restart_ends_sessions_as_switch_lost_and_hangs_up_nothing():
    """A switch shutting down ends each session as SwitchLost, every leg lost, no Hangup."""
    world = World()
    sid = world.talking()
    world.clock.advance(20)
    world.switch.hang_up(f"{sid}-a1", world.now())  # the switch's own hangups come first
    world.switch.shut_down(world.now() + 0.5)
    world.switch.hang_up(f"{sid}-b1", world.now())
    cdrs = world.cdrs()
    assert cdrs["session"].cause == "SwitchLost"
    assert cdrs["destination"].cause == "lost"
    assert (cdrs["source"].billed_seconds, cdrs["destination"].billed_seconds) == (20, 20)
    assert world.switch.hung_up == [(f"{sid}-b1", 16)]  # sent before it was known


def test_switch_crash_is_found_by_the_recovery():
    """Connection lost with no Shutdown, the switch back without the channels: SwitchLost."""
    world = World()
    sid = world.talking()
    world.clock.advance(25)
    world.switch.disconnect(world.now())  # the last moment the legs were known up
    world.clock.advance(10)
    world.switch.restart(world.now())
    assert world.manager.sessions_of("alice") == []
    assert result(world.store.list_sessions()) == []
    assert world.cdrs()["session"].session_id == sid
    cdrs = world.cdrs()
    assert cdrs["session"].cause == "SwitchLost"
    assert (cdrs["source"].cause, cdrs["destination"].cause) == ("lost", "lost")
    assert (cdrs["source"].billed_seconds, cdrs["destination"].billed_seconds) == (25, 25)
    assert world.switch.hung_up == []


def reconnect_listing_later(world):
    """Drop and restore the switch; its channel list is answered when the test fires it."""
    from twisted.internet.defer import Deferred

    world.switch.disconnect(world.now())
    listing: Deferred = Deferred()
    world.switch.list_channels = lambda: listing
    world.switch.connect(world.now())
    return listing


def test_recovery_leaves_sessions_started_while_the_channels_are_listed():
    """A session started after the channel list was asked for is not found gone from it."""
    world = World()
    old = world.talking()
    world.clock.advance(5)
    listing = reconnect_listing_later(world)
    new = world.callback()
    listing.callback([ChannelInfo(f"{old}-a1", "PJSIP/a", "up")])
    assert (f"{old}-b1", 16) not in world.switch.hung_up
    assert (f"{old}-a1", 16) in world.switch.hung_up
    assert world.manager.sessions_of("alice") == [old, new]
    assert not any(channel.startswith(new) for channel, _ in world.switch.hung_up)


def test_recovery_leaves_legs_dialled_after_the_list_was_asked_for():
    """A leg of a known session dialled while the list is made is not judged by it."""
    world = World()
    sid = world.callback()
    world.clock.advance(5)
    listing = reconnect_listing_later(world)
    world.clock.advance(0.2)
    world.switch.answer(f"{sid}-a1", world.now())  # the destination is dialled now
    assert world.switch.originated[-1].channel_id == f"{sid}-b1"
    listing.callback([ChannelInfo(f"{sid}-a1", "PJSIP/a", "up")])
    assert world.switch.hung_up == []
    world.switch.answer(f"{sid}-b1", world.now())
    assert world.manager.status(sid)["phase"] == "talking"


def test_recovery_gives_a_just_dialled_leg_time_to_show():
    """A leg still calling, dialled a moment before the list was asked for, is not lost."""
    world = World()
    sid = world.callback()
    world.clock.advance(0.5)
    world.switch.disconnect(world.now())
    world.switch.channels = []
    world.switch.connect(world.now())
    assert world.switch.hung_up == []
    assert world.manager.status(sid)["phase"] != "ended"
    world.clock.advance(45 + 15)  # its ring timer (ring timeout + guard) still runs
    assert world.manager.sessions_of("alice") == []


# -- account-level credit ------------------------------------------------------------

HAMBURG = "+4940123456"
SOURCES = (SOURCE, EXTRA, HAMBURG)


def talking_from(world, source):
    """A session from ``source`` to DESTINATION, both legs answered now."""
    sid = world.callback(source, DESTINATION)
    world.switch.answer(f"{sid}-a1", world.now())
    world.switch.answer(f"{sid}-b1", world.now())
    return sid


def confirm_hangups(world):
    """The switch confirms every hangup the daemon asked for (once each)."""
    done = {e.channel_id for e in world.switch.emitted if isinstance(e, LegHungUp)}
    for channel, _ in list(world.switch.hung_up):
        if channel not in done:
            done.add(channel)
            world.switch.hang_up(channel, world.now())


def hung_up_channels(world):
    return {channel for channel, _ in world.switch.hung_up}


def legs_of(*sids):
    return {f"{sid}-{letter}1" for sid in sids for letter in "ab"}


def session_causes(world):
    return sorted(c.cause for c in result(world.store.list_cdrs("alice")) if c.kind == "session")


def test_two_sessions_share_the_balance_and_are_cut_together():
    """Two sessions on credit for 60 s of one: both cut after 30 s, balance exactly spent."""
    world = World(balance=credit_for(60), max_sessions=3)
    first, second = talking_from(world, SOURCE), talking_from(world, EXTRA)
    world.clock.advance(29)
    assert world.switch.hung_up == []
    world.clock.advance(1)
    assert hung_up_channels(world) == legs_of(first, second)
    confirm_hangups(world)
    assert session_causes(world) == ["OutOfCredit", "OutOfCredit"]
    assert world.balance() == 0


def test_absolute_timeouts_follow_the_shared_deadline():
    """The second session re-sets the first one's AbsoluteTimeouts to the common deadline."""
    world = World(balance=credit_for(60), max_sessions=3)
    first = talking_from(world, SOURCE)
    assert (f"{first}-a1", 60) in world.switch.timeouts
    talking_from(world, EXTRA)
    last = {channel: seconds for channel, seconds in world.switch.timeouts}
    assert (last[f"{first}-a1"], last[f"{first}-b1"]) == (30, 30)


def test_three_staggered_sessions_never_go_below_the_floor():
    """Sessions joining at 0, 15 and 30 s: all cut together at 45 s, floor reached, not passed."""
    limit = credit_for(30)
    world = World(balance=credit_for(60), max_sessions=3, credit_limit=limit)
    sids = [talking_from(world, SOURCE)]
    world.clock.advance(15)
    sids.append(talking_from(world, EXTRA))
    world.clock.advance(15)
    sids.append(talking_from(world, HAMBURG))
    # 45 + 30 + 15 session-seconds at 45 s = what balance + credit limit pay for
    world.clock.advance(14)
    assert world.switch.hung_up == []
    world.clock.advance(1)
    assert hung_up_channels(world) == legs_of(*sids)
    confirm_hangups(world)
    assert world.balance() == -limit
    assert session_causes(world) == ["OutOfCredit"] * 3


def test_top_up_extends_every_session_of_the_account():
    """A top-up during two sessions moves the common cut for both."""
    world = World(balance=credit_for(60), max_sessions=3)
    first, second = talking_from(world, SOURCE), talking_from(world, EXTRA)
    world.clock.advance(15)
    result(world.store.credit("alice", credit_for(60), "voucher-1"))
    result(world.manager.balance_changed("alice"))
    world.clock.advance(44)
    assert world.switch.hung_up == []
    world.clock.advance(1)
    assert hung_up_channels(world) == legs_of(first, second)
    confirm_hangups(world)
    assert world.balance() == 0


def test_a_session_ending_frees_its_budget_for_the_others():
    """When one session hangs up, the other may use what it leaves."""
    world = World(balance=credit_for(60), max_sessions=3)
    first, second = talking_from(world, SOURCE), talking_from(world, EXTRA)
    world.clock.advance(15)
    result(world.manager.hangup(first))
    confirm_hangups(world)
    world.clock.advance(29)
    assert hung_up_channels(world) == legs_of(first)
    world.clock.advance(1)
    assert hung_up_channels(world) == legs_of(first, second)
    confirm_hangups(world)
    assert world.balance() == 0


def test_adding_a_leg_in_one_session_shortens_the_other():
    """An additional billed leg in one session moves the other session's cut earlier."""
    world = World(balance=credit_for(120), max_sessions=3)
    first, second = talking_from(world, SOURCE), talking_from(world, EXTRA)
    world.clock.advance(10)
    before = len(world.switch.timeouts)
    result(world.manager.add_leg(first, HAMBURG))
    changed = dict(world.switch.timeouts[before:])
    # 120 session-seconds paid, 20 used: without the new leg both had 50 s more
    assert changed[f"{second}-a1"] < 50


def test_a_new_session_counts_what_the_others_are_about_to_consume():
    """A callback the balance alone would allow is refused when a running call needs the money."""
    world = World(balance=credit_for(60), max_sessions=3)
    talking_from(world, SOURCE)
    world.clock.advance(58.5)
    assert world.balance() >= credit_for(1)  # on its own the new call would be affordable
    with pytest.raises(CallbackRefused, match="Not enough credit"):
        world.callback(EXTRA, DESTINATION)


def test_recovered_sessions_share_the_budget_again():
    """After a restart the sessions of one account are held to one budget again."""
    world = World(balance=credit_for(120), max_sessions=3)
    first, second = talking_from(world, SOURCE), talking_from(world, EXTRA)
    world.clock.advance(15)
    after = restart(
        world,
        [ChannelInfo(channel, "PJSIP/x", "up") for channel in sorted(legs_of(first, second))],
    )
    after.clock.advance(44)
    assert after.switch.hung_up == []
    after.clock.advance(1)
    assert hung_up_channels(after) == legs_of(first, second)


# -- daily spend cap -----------------------------------------------------------------


def spent_earlier(world, cost, at):
    """A leg CDR of ``cost`` that ended at ``at``."""
    cdr = CDR("old-a", "alice", "old", "leg", "source", ended_at=at, cost=cost)
    result(world.store.append_cdr(cdr))


def test_daily_cap_refuses_new_callbacks_once_reached():
    """With today's spending at the cap a billed callback is refused with a clear message."""
    world = World(daily_spend_cap=credit_for(60))
    spent_earlier(world, credit_for(60), START - 10)
    with pytest.raises(CallbackRefused, match=r"Daily spending limit reached\.") as info:
        world.callback()
    assert_catalogued(info.value, "refusal.daily_limit")
    assert world.switch.originated == []


def test_spending_of_an_earlier_day_does_not_count():
    """The cap is per UTC day: yesterday's CDRs leave today's cap untouched."""
    world = World(daily_spend_cap=credit_for(60))
    midnight = START - START % 86400
    spent_earlier(world, credit_for(600), midnight - 1)
    assert world.callback() in world.manager.sessions_of("alice")


def test_the_cap_starts_again_at_midnight_for_a_call_in_progress():
    """At UTC midnight a running call's cut is recomputed with the new day's cap."""
    midnight = START - START % 86400 + 86400
    clock = Clock()
    clock.advance(midnight - 60)
    world = World(daily_spend_cap=credit_for(180), clock=clock)
    spent_earlier(world, credit_for(60), midnight - 100)
    world.talking()  # 120 s left today: the cut would come at 00:01:00
    world.clock.advance(61)
    assert world.switch.hung_up == []
    world.clock.advance(60)  # the new day's cap: 180 s for the whole call, so 00:02:00
    assert world.switch.hung_up == []
    world.clock.advance(60)
    assert len(world.switch.hung_up) == 2


def test_daily_cap_cuts_a_running_call_with_its_own_reason():
    """A call reaching the cap is cut like OutOfCredit, with Reason = DailyLimit."""
    world = World(daily_spend_cap=credit_for(60))
    spent_earlier(world, credit_for(30), START - 10)
    sid = world.talking()
    world.clock.advance(29)
    assert world.switch.hung_up == []
    world.clock.advance(1)
    assert hung_up_channels(world) == legs_of(sid)
    confirm_hangups(world)
    assert session_causes(world) == ["DailyLimit"]
    assert world.balance() == 10_000_000 - credit_for(30)
    assert "Thank you!\nCharged time: 30 secs. Reason = DailyLimit" in world.texts()


def test_daily_cap_is_shared_by_concurrent_sessions():
    """Two sessions under a cap for 60 s of one are both cut after 30 s."""
    world = World(daily_spend_cap=credit_for(60), max_sessions=3)
    first, second = talking_from(world, SOURCE), talking_from(world, EXTRA)
    world.clock.advance(30)
    assert hung_up_channels(world) == legs_of(first, second)
    confirm_hangups(world)
    assert session_causes(world) == ["DailyLimit", "DailyLimit"]


def test_charges_of_finished_calls_count_for_the_next_one():
    """A call ended today counts against the cap for a callback started after it."""
    world = World(daily_spend_cap=credit_for(60))
    sid = world.talking()
    world.clock.advance(60)
    confirm_hangups(world)
    assert sid not in world.manager.sessions_of("alice")
    with pytest.raises(CallbackRefused, match="Daily spending limit"):
        world.callback()


SESSION_PLANS = st.lists(
    st.tuples(
        st.integers(0, 60),  # start, seconds after the first
        st.floats(0.5, 20),  # source answers after
        st.floats(0.5, 20),  # destination answers after the source
        st.one_of(st.none(), st.integers(1, 200)),  # the user hangs up after
    ),
    min_size=2,
    max_size=3,
)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    balance=st.integers(0, credit_for(240)),
    credit_limit=st.integers(0, credit_for(60)),
    cap=st.sampled_from([0, credit_for(45), credit_for(150)]),
    plans=SESSION_PLANS,
)
def test_concurrent_sessions_never_pass_the_floor_or_the_cap(balance, credit_limit, cap, plans):
    """Random staggered sessions of one account: charges stay within balance+limit and cap."""
    world = World(balance=balance, credit_limit=credit_limit, daily_spend_cap=cap, max_sessions=3)
    switch, clock = world.switch, world.clock
    hangup = switch.hangup

    def confirming_hangup(channel_id, cause=16):
        # the switch confirms at the very instant it is asked
        clock.callLater(0, switch.hang_up, channel_id, clock.seconds())
        return hangup(channel_id, cause)

    switch.hangup = confirming_hangup
    originated = lambda channel: any(r.channel_id == channel for r in switch.originated)  # noqa: E731

    def answer(channel):
        if originated(channel):
            switch.answer(channel, clock.seconds())

    def start(source, source_after, destination_after, hangup_after):
        try:
            sid = world.callback(source, DESTINATION)
        except CallbackRefused:
            return
        clock.callLater(source_after, answer, f"{sid}-a1")
        clock.callLater(source_after + destination_after, answer, f"{sid}-b1")
        if hangup_after is not None:
            clock.callLater(
                hangup_after,
                lambda: sid in world.manager.sessions_of("alice") and world.manager.hangup(sid),
            )

    for source, (at, *rest) in zip(SOURCES, plans):
        clock.callLater(at, start, source, *rest)
    clock.pump([1] * 700)
    assert world.manager.sessions_of("alice") == []
    legs = [c for c in result(world.store.list_cdrs("alice")) if c.kind == "leg"]
    assert world.balance() == balance - sum(c.cost for c in legs)
    assert world.balance() >= -credit_limit
    if cap:
        assert sum(c.cost for c in legs) <= cap


def test_callback_is_refused_while_the_switch_is_down():
    """With the switch disconnected a callback is refused at once: no session, no originate."""
    world = World()
    world.switch.connected = False
    with pytest.raises(CallbackRefused, match="switch is not reachable") as info:
        world.callback()
    assert_catalogued(info.value, "refusal.switch_unreachable")
    assert world.switch.originated == []
    assert result(world.store.list_sessions()) == []
    assert world.cdrs() == {}


def test_callback_is_refused_while_the_switch_is_shutting_down():
    """Between the switch's Shutdown and its return a callback would fail: refused at once."""
    world = World()
    world.switch.shut_down(world.now(), restart=True, gone=False)
    assert world.switch.connected  # the real switch closes the connection a second later
    with pytest.raises(
        CallbackRefused, match=r"^The switch is restarting; try again in a moment\.$"
    ) as info:
        world.callback()
    assert_catalogued(info.value, "refusal.restarting")
    assert world.switch.originated == []
    world.switch.restart(world.now() + 5)
    assert world.callback()


def test_add_is_refused_while_the_switch_is_shutting_down():
    """ADD while the switch says it is going away is refused before anything is dialled."""
    world = World()
    sid = world.talking()
    originated = len(world.switch.originated)
    world.switch.shutting_down = True
    with pytest.raises(CallbackRefused, match="The switch is restarting"):
        result(world.manager.add_leg(sid, HAMBURG))
    assert len(world.switch.originated) == originated


def assert_indexes_match(manager):
    """The manager's indexes say what a scan of every session in flight says."""
    sessions = {sid: manager.state_of(sid) for sid in manager.sessions}
    for name in manager.providers:
        scanned = sum(
            1
            for state in sessions.values()
            for leg in state.legs
            if leg.live and leg.attempt and leg.provider == name
        )
        assert manager.stats.in_use(name) == scanned
    assert manager.sessions_of("alice") == [
        sid for sid, state in sessions.items() if state.username == "alice" and not state.finished
    ]


SWITCH_STEPS = st.lists(
    st.tuples(
        st.sampled_from(["start", "answer", "congestion", "busy", "hang_up", "hangup", "wait"]),
        st.integers(0, 20),
    ),
    max_size=40,
)


@settings(max_examples=60, deadline=None)
@given(steps=SWITCH_STEPS)
def test_session_indexes_follow_every_change(steps):
    """Per-account sessions and per-provider channels in use match a full scan after any step."""
    world = World(max_sessions=3)
    switch, clock = world.switch, world.clock
    for what, k in steps:
        channels = [r.channel_id for r in switch.originated]
        channel = channels[k % len(channels)] if channels else None
        if what == "start":
            try:
                world.callback(SOURCES[k % 3], DESTINATION)
            except CallbackRefused:
                pass
        elif what == "wait":
            clock.advance(k)
        elif what == "hangup":
            live = world.manager.sessions_of("alice")
            if live:
                world.manager.hangup(live[k % len(live)])
        elif channel is not None and what == "answer":
            switch.answer(channel, world.now())
        elif channel is not None and what == "hang_up":
            switch.hang_up(channel, world.now())
        elif channel is not None:
            switch.fail(channel, what, world.now())
        assert_indexes_match(world.manager)
    clock.pump([10] * 30)
    assert_indexes_match(world.manager)


def recording_store_writes(world):
    """Record (call, session state or CDR kind) of the store writes the manager makes."""
    writes = []
    store = world.store
    for name in ("save_session", "append_cdr", "charge", "end_session"):
        original = getattr(store, name)

        def recorded(*args, _original=original, _name=name):
            writes.append((_name, args))
            return _original(*args)

        setattr(store, name, recorded)
    return writes


def test_state_changes_of_one_turn_are_saved_once_with_the_last_state():
    """Several steps in one reactor turn write the session once, at the turn's end."""
    world = World()
    writes = recording_store_writes(world)
    sid = world.callback()
    world.switch.answer(f"{sid}-a1", world.now())
    world.switch.answer(f"{sid}-b1", world.now())
    assert [w for w in writes if w[0] == "save_session"] == []
    world.clock.advance(0)
    [(_, (saved_sid, data))] = [w for w in writes if w[0] == "save_session"]
    assert saved_sid == sid
    assert data == world.manager.state_of(sid).to_dict()
    assert result(world.store.load_session(sid)) == data


def test_a_session_ending_in_the_turn_writes_no_state_only_its_end():
    """Charges and the end go out at once; the state the end deletes is not written first."""
    world = World()
    sid = world.talking()
    world.clock.advance(0)
    writes = recording_store_writes(world)
    result(world.manager.hangup(sid))
    world.switch.hang_up(f"{sid}-a1", world.now() + 3)
    world.switch.hang_up(f"{sid}-b1", world.now() + 3)
    world.clock.advance(0)
    assert [name for name, _ in writes] == ["charge", "charge", "end_session"]
    assert result(world.store.list_sessions()) == []


def crash(world, channels):
    """A new manager on the same store and clock; the old one died without a word."""
    world.manager.book.stop()
    for call in world.clock.getDelayedCalls():
        call.cancel()  # its end-of-turn save, heartbeat and timers die with it
    return World(store=world.store, clock=world.clock, channels=channels)


def test_a_charge_whose_state_was_never_saved_is_not_charged_again():
    """A crash after a charge went out but before the state saying so: settled once."""
    world = World()
    sid = world.talking()
    world.clock.advance(10)
    result(world.manager.hangup(sid))
    # the destination's end, confirmed: charged now, the state saved at the turn's end
    world.switch.hang_up(f"{sid}-b1", world.now())
    charged = world.balance()
    assert charged < 10_000_000
    after = crash(world, [])
    after.clock.advance(100)
    assert after.balance() == charged - SELL_49.cost(10)  # only the source is added
    cdrs = after.cdrs()
    assert cdrs["destination"].billed_seconds == 10
    assert result(after.store.list_sessions()) == []


def test_stop_writes_the_unsaved_states():
    """Stopping the manager writes what the turn left unsaved."""
    world = World()
    sid = world.callback()
    world.manager.stop()
    assert result(world.store.load_session(sid)) == world.manager.state_of(sid).to_dict()


# -- the account cache and the store's change feed ----------------------------------


def counting_reads(world):
    """Count the store reads of the account and its balance the manager makes."""
    reads = []
    store = world.store
    for name in ("get_account", "get_balance"):
        original = getattr(store, name)

        def counted(*args, _original=original, _name=name):
            reads.append(_name)
            return _original(*args)

        setattr(store, name, counted)
    return reads


def a_whole_call(world):
    """Place a callback, talk 10 s, hang up; return its id."""
    sid = world.talking()
    world.clock.advance(10)
    result(world.manager.hangup(sid))
    world.switch.hang_up(f"{sid}-a1", world.now())
    world.switch.hang_up(f"{sid}-b1", world.now())
    world.clock.advance(0)
    return sid


def test_the_next_call_of_an_account_reads_nothing_from_the_store():
    """Account and ledger are kept between calls: the manager's own charges are in it."""
    world = World()
    reads = counting_reads(world)
    a_whole_call(world)
    assert reads == ["get_account", "get_balance"]
    reads.clear()
    sid = world.callback()
    assert reads == []
    assert world.switch.originated[-1].channel_id == f"{sid}-a1"
    balance = world.balance()
    assert world.manager.book.balance("alice") == balance


def test_a_top_up_from_elsewhere_is_seen_by_the_next_call():
    """A credit written by another process (the feed tells) makes the next call read again."""
    world = World(balance=0)
    with pytest.raises(CallbackRefused, match="Not enough credit"):
        world.callback()
    result(world.store.credit("alice", credit_for(60), "voucher-1"))
    assert world.callback()


def test_a_top_up_from_elsewhere_extends_a_running_call():
    """The feed's change recomputes the credit of the account's sessions by itself."""
    world = World(balance=credit_for(60))
    world.talking()
    world.clock.advance(30)
    result(world.store.credit("alice", credit_for(60), "voucher-1"))
    world.clock.advance(40)
    assert world.switch.hung_up == []
    world.clock.advance(50)
    assert len(world.switch.hung_up) == 2


def test_blocking_an_account_elsewhere_refuses_its_next_call():
    """An account update told by the feed is not hidden by the cache."""
    world = World()
    a_whole_call(world)
    result(world.store.update_account("alice", status=AccountStatus.BLOCKED))
    with pytest.raises(CallbackRefused, match="blocked"):
        world.callback()


def test_nothing_is_kept_while_the_feed_is_down():
    """Without the feed a change could go unseen: every call reads the account again."""
    world = World()
    world.store.available = False
    world.store.available = True  # down and up: what was kept is gone
    reads = counting_reads(world)
    a_whole_call(world)
    world.manager.book.change_feed_state(False)
    a_whole_call(world)
    assert reads == ["get_account", "get_balance"] * 2


def test_a_change_told_while_the_account_is_read_is_not_cached():
    """A read that a change overtook is used once, not kept."""
    from twisted.internet import defer

    world = World()
    store, waiting = world.store, []
    original = store.get_account

    def slow_get_account(username):
        d = defer.Deferred()
        waiting.append((d, original(username)))
        return d

    store.get_account = slow_get_account
    d = world.manager.start_callback("alice", SOURCE, DESTINATION)
    result(store.credit("alice", 1, "meanwhile"))  # told by the feed during the read
    pending, account = waiting.pop()
    pending.callback(result(account))
    assert result(d)
    assert not world.manager.book.cached("alice")
    world.manager.start_callback("alice", SOURCE, DESTINATION)
    assert waiting, "the account was read again"


def test_account_answers_from_the_book_while_the_feed_is_live():
    """account() reads the store once; the account is kept for it and the next call."""
    world = World()
    reads = counting_reads(world)
    assert result(world.manager.account("alice")).username == "alice"
    assert result(world.manager.account("alice")).username == "alice"
    assert reads == ["get_account"]
    assert world.manager.book.cached("alice")
    a_whole_call(world)  # the callback reads only the balance (the ledger)
    assert reads == ["get_account", "get_balance"]
    assert result(world.manager.account("nobody")) is None


def test_account_sees_a_change_told_by_the_feed():
    """An update from anywhere (LANG in chat, the admin CLI) is seen by the next account()."""
    world = World()
    result(world.manager.account("alice"))
    result(world.store.update_account("alice", language="es"))
    assert result(world.manager.account("alice")).language == "es"


def test_chat_links_and_invitations_on_the_feed_keep_the_account():
    """A JID linked to the account, or an invitation, changes nothing the book keeps."""
    world = World()
    reads = counting_reads(world)
    result(world.manager.account("alice"))
    result(world.store.link_jid("alice@example.test", "alice"))
    result(world.store.request_invite("carol@example.test"))
    assert world.manager.book.cached("alice")
    result(world.manager.account("alice"))
    assert reads == ["get_account"]


def test_account_reads_every_time_without_the_feed():
    """Feed down: nothing is kept."""
    world = World()
    world.manager.book.change_feed_state(False)
    reads = counting_reads(world)
    result(world.manager.account("alice"))
    result(world.manager.account("alice"))
    assert reads == ["get_account"] * 2


def test_account_changed_forgets_before_the_feed_tells():
    """The caller's own change is seen by its next request even if the feed is slow."""
    world = World()
    result(world.manager.account("alice"))
    slow_feed = world.manager.book._stop_watching
    assert slow_feed is not None
    slow_feed()  # the feed's message is still on its way: the book hears nothing
    result(world.store.update_account("alice", language="fr"))
    assert result(world.manager.account("alice")).language == "en"
    world.manager.account_changed("alice")
    assert result(world.manager.account("alice")).language == "fr"


def test_a_call_that_cost_nothing_keeps_the_account():
    """An unanswered call's CDRs cost nothing and are still the manager's own change on the
    feed: the account's next call reads nothing from the store (and no session of the
    account is told its balance again)."""
    world = World()
    reads = counting_reads(world)
    sid = world.callback()
    world.switch.fail(f"{sid}-a1", "busy", world.now())
    world.clock.advance(0)
    assert world.manager.state_of(sid) is None
    assert {c.cost for c in result(world.store.list_cdrs("alice")) if c.kind == "leg"} == {0}
    reads.clear()
    world.callback()
    assert reads == []
