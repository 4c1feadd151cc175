"""The simulator's behaviours matched to the real Asterisk 22 (besides the replays).

Ringing's DialState, spread Timestamps, ``Login Already In Use``, the restart, a leg
keying ``#11``, the far end hanging up, and the dialplan's priorities against
``etc/asterisk/extensions.conf``.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from callbackd.simulator.asterisk import DIALPLAN, SHUTDOWN_SECONDS
from tests.simulator.harness import SECRET, USERNAME, Session

ROOT = Path(__file__).resolve().parents[2]


def _originate(session, n, exten="leg-b", number=None, room="r1"):
    number = number or f"1555001{n:04d}"
    session.send(("Action", "Originate"), ("ActionID", f"o-{n}"),
                 ("Channel", f"Local/{number}@sim-pstn/n"), ("Context", "cb-conf"),
                 ("Exten", exten), ("Priority", "1"), ("Variable", f"CB_ROOM={room}"),
                 ("ChannelId", f"id-{n}"), ("OtherChannelId", f"id-{n}-2"),
                 ("Async", "true"))  # fmt: skip


def _call(session: Session, room: str = "r1") -> None:
    """A source (id-1) and a destination (id-2) talking in ``room``."""
    _originate(session, 1, "wait-a", room=room)
    session.run(1.5)
    _originate(session, 2, room=room)
    session.run(1.5)
    session.send(("Action", "Redirect"), ("Channel", "id-1"), ("Context", "cb-conf"),
                 ("Exten", "leg-a"), ("Priority", "1"))  # fmt: skip
    session.run(0.5)


def test_ringing_sends_dial_state_after_newstate_5():
    """Every Newstate 5 of a ringing leg is followed by DialState RINGING (DestUniqueid)."""
    session = Session()
    session.login()
    _originate(session, 1)
    msgs = session.run(0.5)
    names = [m.name for m in msgs if m.name in ("Newstate", "DialState")]
    assert names == ["Newstate", "DialState"]
    dial_state = next(m for m in msgs if m.name == "DialState")
    assert (dial_state["DestUniqueid"], dial_state["DestChannelState"]) == ("id-1", "5")
    assert dial_state["DialStatus"] == "RINGING"


def test_a_callee_that_does_not_ring_sends_no_dial_state():
    """1555004 answers at once (Answer() first): no Newstate 5, no DialState."""
    session = Session()
    session.login()
    _originate(session, 1, number="15550041111")
    assert not any(m.name == "DialState" for m in session.run(1.0))


def test_timestamps_are_spread_when_the_clock_stands_still():
    """Events of one instant get distinct, increasing Timestamps."""
    session = Session()
    session.login()
    _originate(session, 1, number="15550021111")  # busy: a burst of events at once
    stamps = [float(m["Timestamp"]) for m in session.run(0.001) if m.get("Timestamp")]
    assert len(stamps) >= 5
    assert stamps == sorted(stamps) and len(set(stamps)) == len(stamps)
    assert stamps[-1] - stamps[0] < 0.001


def _login(session: Session) -> None:
    session.send(("Action", "Login"), ("ActionID", "l"), ("Username", USERNAME),
                 ("Secret", SECRET))  # fmt: skip


def test_second_login_of_the_user_is_login_already_in_use():
    """allowmultiplelogin = no: the second session is refused after 1 s and closed."""
    first = Session()
    first.login()
    second = first.another()
    _login(second)
    assert second.run(0.9) == []
    msgs = second.run(0.2)
    assert [(m.name, m.get("Message")) for m in msgs] == [("Error", "Login Already In Use")]
    assert second.transport.disconnecting
    assert not second.protocol.authenticated


def test_another_user_logs_in_beside_the_first():
    """Several daemons on one switch: each its own user, each logged in once; a wrong
    secret of the second user is refused."""
    first = Session()
    first.factory.users["cb2"] = "other-secret"
    first.login()
    second = first.another()
    second.send(("Action", "Login"), ("ActionID", "l"), ("Username", "cb2"),
                ("Secret", "other-secret"))  # fmt: skip
    assert second.read()[0]["Message"] == "Authentication accepted"
    assert second.protocol.username == "cb2"
    third = first.another()
    third.send(("Action", "Login"), ("ActionID", "l"), ("Username", "cb2"),
               ("Secret", SECRET))  # fmt: skip
    msgs = third.run(1.1)
    assert [(m.name, m.get("Message")) for m in msgs] == [("Error", "Login Already In Use")]


def test_a_second_users_wrong_secret_is_refused():
    first = Session()
    first.factory.users["cb2"] = "other-secret"
    second = first.another()
    second.send(("Action", "Login"), ("ActionID", "l"), ("Username", "cb2"),
                ("Secret", SECRET))  # fmt: skip
    msgs = second.run(1.1)
    assert [(m.name, m.get("Message")) for m in msgs] == [("Error", "Authentication failed")]


def test_login_works_again_once_the_first_session_is_gone():
    """A re-login after the old session closed succeeds at once."""
    first = Session()
    first.login()
    first.protocol.connectionLost(None)
    second = first.another()
    _login(second)
    assert second.read()[0]["Message"] == "Authentication accepted"


def test_allow_multiple_login_accepts_a_second_session():
    """With allowmultiplelogin = yes both sessions log in."""
    first = Session()
    first.factory.allow_multiple_login = True
    first.login()
    second = first.another()
    _login(second)
    assert second.read()[0]["Message"] == "Authentication accepted"


def test_restart_hangs_up_then_shuts_down_and_closes():
    """core restart now: ;2 halves (0) then ;1 halves (16), Shutdown, the session closed."""
    session = Session()
    session.login()
    _call(session)
    session.switch.restart()
    msgs = session.run(SHUTDOWN_SECONDS + 0.1)
    hangups = [(m["Uniqueid"], m["Cause"]) for m in msgs if m.name == "Hangup"]
    assert hangups == [("id-2-2", "0"), ("id-1-2", "0"), ("id-1", "16"), ("id-2", "16")]
    shutdown = [m for m in msgs if m.name == "Shutdown"]
    assert [(m["Shutdown"], m["Restart"]) for m in shutdown] == [("Cleanly", "True")]
    assert msgs[-1].name == "Shutdown"
    assert session.transport.disconnecting
    assert session.switch.channels() == [] and session.switch.rooms() == {}


def test_actions_during_the_shutdown_are_refused():
    """Between core restart now and Shutdown every action gets 'Asterisk is shutting down'."""
    session = Session()
    session.login()
    _call(session)
    session.switch.restart()
    session.send(("Action", "Hangup"), ("ActionID", "h"), ("Channel", "id-2"), ("Cause", "16"))
    answer = next(m for m in session.read() if m.is_response)
    assert (answer.name, answer["ActionID"], answer["Message"]) == (
        "Error",
        "h",
        "Asterisk is shutting down",
    )


def test_restarted_switch_refuses_connections_until_it_is_up():
    """While down a connection is closed without a banner; then banner, login, Uptime 0."""
    session = Session()
    session.login()
    session.switch.restart(down=5.0)
    session.run(SHUTDOWN_SECONDS + 1.0)
    early = session.another()
    assert early.transport.value() == b"" and early.transport.disconnecting
    session.run(4.5)
    later = session.another()
    assert later.transport.value() == b"Asterisk Call Manager/11.0.0\r\n"
    msgs = later.login()
    assert [m.name for m in msgs] == ["Success", "FullyBooted"]
    assert msgs[1]["Uptime"] == "0"


def test_key_dtmf_hash11_in_the_source_room_sends_cb_dtmf():
    """The source's far end keys #11: UserEvent CbDtmf from cb-dtmf,endb,1; nothing hangs up."""
    session = Session()
    session.login()
    _call(session, room="room7")
    two = session.switch.find_channel("id-1-2")
    assert two is not None
    session.switch.key_dtmf(two, "#11")
    msgs = session.run(1.0)
    events = [m for m in msgs if m.name in ("UserEvent", "Hangup")]
    assert [m.name for m in events] == ["UserEvent"]
    event = events[0]
    assert (event["UserEvent"], event["CbRoom"], event["CbCmd"]) == ("CbDtmf", "room7", "endb")
    assert (event["Uniqueid"], event["Context"], event["Exten"], event["Priority"]) == (
        "id-1",
        "cb-dtmf",
        "endb",
        "1",
    )
    assert event["Privilege"] == "user,all"
    assert session.switch.find_channel("id-1").context == "cb-conf"  # back in the room


def test_destination_keying_hash11_does_nothing():
    """Only the source's menu (cb_menu_a) has #11."""
    session = Session()
    session.login()
    _call(session)
    session.switch.key_dtmf(session.switch.find_channel("id-2"), "#11")
    assert not any(m.name == "UserEvent" for m in session.run(1.0))


def test_dtmf_rule_keys_once_in_the_room():
    """A ``dtmf:#11`` callee keys 2 s after its leg joined the room."""
    session = Session("1555007=answer:1,dtmf:#11")
    session.login()
    _originate(session, 1, "wait-a", number="15550071111")
    session.run(1.5)
    _originate(session, 2)
    session.run(1.5)
    session.send(("Action", "Redirect"), ("Channel", "id-1"), ("Context", "cb-conf"),
                 ("Exten", "leg-a"), ("Priority", "1"))  # fmt: skip
    assert not any(m.name == "UserEvent" for m in session.run(2.0))
    msgs = session.run(1.0)
    assert [m["CbCmd"] for m in msgs if m.name == "UserEvent"] == ["endb"]


def test_far_end_hangup_of_the_source_ends_it_before_the_destination():
    """Source ;2 (0), source ;1 (16), then the end_marked destination ;1, ;2 (16)."""
    session = Session()
    session.login()
    _call(session)
    session.switch.hangup_far_end(session.switch.find_channel("id-1"))
    msgs = session.run(0.1)
    hangups = [(m["Uniqueid"], m["Cause"], m["Priority"]) for m in msgs if m.name == "Hangup"]
    # the destination was kicked: it ran leg-b's Hangup() at priority 4
    assert hangups == [("id-1-2", "0", "4"), ("id-1", "16", "4"), ("id-2", "16", "4"),
                       ("id-2-2", "16", "4")]  # fmt: skip


def test_hangup_action_on_both_legs_finds_both():
    """Hangup of the source then the destination at once: both 'Channel Hungup', no kick."""
    session = Session()
    session.login()
    _call(session)
    session.send(("Action", "Hangup"), ("ActionID", "h1"), ("Channel", "id-1"))
    session.send(("Action", "Hangup"), ("ActionID", "h2"), ("Channel", "id-2"))
    msgs = session.run(0.1)
    assert [m.get("Message") for m in msgs if m.is_response] == ["Channel Hungup"] * 2
    priorities = {m["Uniqueid"]: m["Priority"] for m in msgs if m.name == "Hangup"}
    assert priorities["id-2"] == "3"  # hung up in ConfBridge(), not kicked to Hangup()


def _dialplan(path: Path) -> dict[str, dict[str, tuple[str, ...]]]:
    """context -> exten -> applications by priority, from an extensions.conf."""
    plan: dict[str, dict[str, list[str]]] = {}
    context = exten = ""
    for raw in path.read_text().splitlines():
        line = raw.split(";", 1)[0].strip()
        if m := re.match(r"^\[([^\]]+)\]$", line):
            context = m.group(1)
            continue
        if m := re.match(r"^exten\s*=>\s*([^,]+),\s*1,\s*(\w+)", line):
            exten = m.group(1)
            plan.setdefault(context, {})[exten] = [m.group(2)]
        elif m := re.match(r"^same\s*=>\s*n,\s*(\w+)", line):
            plan[context][exten].append(m.group(1))
    return {c: {e: tuple(apps) for e, apps in es.items()} for c, es in plan.items()}


@pytest.mark.parametrize("context", sorted(DIALPLAN))
def test_dialplan_priorities_are_those_of_etc_asterisk(context):
    """DIALPLAN lists etc/asterisk/extensions.conf's applications priority by priority."""
    assert DIALPLAN[context] == _dialplan(ROOT / "etc" / "asterisk" / "extensions.conf")[context]


def test_priorities_in_events_follow_the_dialplan():
    """wait-a waits at 4, leg-a's ConfBridge is 4, leg-b's 3; the callee answers at 3."""
    session = Session()
    session.login()
    _originate(session, 1, "wait-a")
    msgs = session.run(1.5)
    up = next(m for m in msgs if m.name == "Newstate" and m["ChannelState"] == "6")
    assert (up["Uniqueid"], up["Priority"]) == ("id-1-2", "3")
    assert session.switch.find_channel("id-1").priority == 4
    _originate(session, 2)
    session.run(1.5)
    session.send(("Action", "Redirect"), ("Channel", "id-1"), ("Context", "cb-conf"),
                 ("Exten", "leg-a"), ("Priority", "1"))  # fmt: skip
    session.run(0.1)
    joins = [m for m in session.received if m.name == "ConfbridgeJoin"]
    assert [(m["Exten"], m["Priority"]) for m in joins] == [("leg-b", "3"), ("leg-a", "4")]
