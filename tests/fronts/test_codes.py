"""Caller-ID codes: what the SMS front and the web portal send, the store accepts."""

from __future__ import annotations

from callbackd.fronts.codes import CODE_DIGITS, new_caller_id_code
from callbackd.sms.front import CODE_REPLY
from callbackd.store.records import check_code


def test_a_code_is_its_digits_and_the_store_takes_it():
    """CODE_DIGITS decimal digits, leading zeros kept; records.check_code accepts it."""
    codes = {new_caller_id_code() for _ in range(200)}
    for code in codes:
        assert len(code) == CODE_DIGITS and code.isdigit()
        assert check_code(code) == code
    assert len(codes) > 190  # random, not a counter or a constant


def test_the_sms_front_reads_a_code_back():
    """The SMS that brings a code back is read as that code, alone or after R."""
    code = new_caller_id_code()
    for text in (code, f"R {code}", f" r.{code} "):
        match = CODE_REPLY.fullmatch(text)
        assert match is not None and match.group(1) == code
    assert CODE_REPLY.fullmatch(code[:-1]) is None
    assert CODE_REPLY.fullmatch(code + "0") is None
