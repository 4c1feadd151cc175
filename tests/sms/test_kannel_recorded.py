"""What a real Kannel sent and fakesmsc printed (tests/fixtures/kannel/), parsed."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from callbackd.sms.inbound import InboundSms, dedupe_key, parse_kannel
from tests.sms.kannel import (
    Outgoing,
    join_parts,
    mo_line,
    parse_mt,
    query_of,
    read_request,
    take_mt,
)

RECORDED = Path(__file__).resolve().parent.parent / "fixtures" / "kannel"


def recorded(name: str) -> InboundSms:
    target, _ = read_request(RECORDED / name)
    return parse_kannel(query_of(target))


def test_a_gsm_get_url_request():
    sms = recorded("get-url-gsm.http")
    assert (sms.gateway, sms.sender, sms.recipient) == ("kannel", "+15550011111", "15550000000")
    assert sms.text == "U.alice P.pa+ss%&x D.+15550012222 señor"
    assert sms.message_id is not None and len(sms.message_id) == 36
    assert sms.received_at is not None and sms.received_at > 1.7e9
    _, headers = read_request(RECORDED / "get-url-gsm.http")
    assert headers["User-Agent"].startswith("Kannel/")


def test_a_ucs2_get_url_request_recoded_by_kannel():
    target, _ = read_request(RECORDED / "get-url-ucs2.http")
    query = query_of(target)
    assert (query["coding"], query["charset"]) == ([b"0"], [b"UTF-8"])
    assert recorded("get-url-ucs2.http").text == "Привет, señor € 你好"


def test_kannels_retry_is_the_same_message_for_dedupe():
    first, retry = recorded("get-url-retry-1.http"), recorded("get-url-retry-2.http")
    assert first == retry
    assert dedupe_key(first, 600) == dedupe_key(retry, 600)
    assert dedupe_key(first, 600).startswith("id:kannel:")


def test_what_fakesmsc_printed_for_mt():
    outgoing: list[Outgoing] = []
    for line in (RECORDED / "fakesmsc-mt.log").read_text().splitlines():
        take_mt(outgoing, line)
    plain, unicode, part1, part2, split, ucs1, ucs2, ucs3, progress = outgoing
    assert plain == Outgoing("15550000000", "+15550011111", "text", "Your balance is 10.00 USD.")
    assert (unicode.kind, unicode.text) == ("ucs-2", "Su saldo: 10,00 €. Привет")
    assert (part1.concatenated, part2.concatenated) == ((2, 2, 1), (2, 2, 2))
    [joined] = join_parts([part1, part2])
    assert joined.text == "Callback 42: " + "we call you, then the destination. " * 8
    assert join_parts([part2]) == []  # a message is whole only once every part came
    assert (split.receiver, split.text) == ("+123", "line1\nline2 € end")
    # a UCS-2 reply in three parts (its date has Babel's narrow no-break space)
    [reply] = join_parts([ucs3, ucs1, ucs2])
    balance, *history = reply.text.split("\n")
    assert balance == "Your balance: 9.99646 EUR"
    assert history[0] == "12/2/26, 1:50\u202fAM UTC to phone:+15550012222: 1 sec, cost 0.00048 EUR"
    assert history[-1].endswith("…")
    assert progress.text.splitlines()[1:] == [
        "Charged time: 1 secs. Reason = EndedByHangup",
        "Cost: 0.00048 EUR",
    ]


def test_lines_that_are_no_mt_are_ignored():
    outgoing: list[Outgoing] = []
    take_mt(outgoing, "2026-12-02 01:44:15 [1] [0] DEBUG: fakesmsc: sent message 1")
    take_mt(outgoing, "2026-12-02 01:44:15 [1] [0] DEBUG: Got message 1: <no header>")
    assert outgoing == []


@given(st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=20))
def test_a_ucs2_mo_line_is_percent_encoded_utf16(text):
    """What inject writes for a UCS-2 message decodes back as fakesmsc prints UCS-2."""
    if "\n" in text or "\r" in text:
        with pytest.raises(ValueError):
            mo_line("+1", "2", text, "ucs2")
        return
    line = mo_line("+1", "2", text, "ucs2")
    assert line.endswith(b"\n") and line.count(b"\n") == 1
    printed = line.decode().rstrip("\n").replace(" ucs2 ", " ucs-2 ")
    assert parse_mt(printed) == Outgoing("+1", "2", "ucs-2", text)


def test_a_mo_line_must_fit_fakesmsc():
    with pytest.raises(ValueError):
        mo_line("+1", "2", "x" * 300)
    with pytest.raises(ValueError):
        mo_line("+1", "2", "x", "binary")
