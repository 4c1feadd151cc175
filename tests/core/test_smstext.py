"""SMS text: the GSM 03.38 alphabet, segment counting, splitting and trimming."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from callbackd.core.smstext import (
    GSM7_BASIC,
    GSM7_EXTENSION,
    count_segments,
    encoding,
    fit,
    is_gsm7,
    kannel_coding,
    segments,
    septets,
    units,
)

# The tables as 3GPP TS 23.038 (and Unicode's GSM0338 mapping) give them, written as
# code points so they are not a copy of the module's: where the default alphabet is not
# ASCII, septet -> Unicode code point; every other septet is its ASCII character.
NOT_ASCII = {
    0x00: 0x0040, 0x01: 0x00A3, 0x02: 0x0024, 0x03: 0x00A5, 0x04: 0x00E8, 0x05: 0x00E9,
    0x06: 0x00F9, 0x07: 0x00EC, 0x08: 0x00F2, 0x09: 0x00C7, 0x0B: 0x00D8, 0x0C: 0x00F8,
    0x0E: 0x00C5, 0x0F: 0x00E5, 0x10: 0x0394, 0x11: 0x005F, 0x12: 0x03A6, 0x13: 0x0393,
    0x14: 0x039B, 0x15: 0x03A9, 0x16: 0x03A0, 0x17: 0x03A8, 0x18: 0x03A3, 0x19: 0x0398,
    0x1A: 0x039E, 0x1C: 0x00C6, 0x1D: 0x00E6, 0x1E: 0x00DF, 0x1F: 0x00C9, 0x24: 0x00A4,
    0x40: 0x00A1, 0x5B: 0x00C4, 0x5C: 0x00D6, 0x5D: 0x00D1, 0x5E: 0x00DC, 0x5F: 0x00A7,
    0x60: 0x00BF, 0x7B: 0x00E4, 0x7C: 0x00F6, 0x7D: 0x00F1, 0x7E: 0x00FC, 0x7F: 0x00E0,
}  # fmt: skip
ESCAPE = 0x1B
EXTENSION = {
    0x0A: 0x000C, 0x14: 0x005E, 0x28: 0x007B, 0x29: 0x007D, 0x2F: 0x005C,
    0x3C: 0x005B, 0x3D: 0x007E, 0x3E: 0x005D, 0x40: 0x007C, 0x65: 0x20AC,
}  # fmt: skip
BASIC_CHARS = {chr(NOT_ASCII.get(code, code)) for code in range(128) if code != ESCAPE}
EXTENSION_CHARS = {chr(point) for point in EXTENSION.values()}

#: limits (one SMS, each part of a longer one) written out again, per encoding
LIMITS = {"gsm7": (160, 153), "ucs2": (70, 67)}


def reference_encoding(text: str) -> str:
    """The encoding a text needs, from the reference tables."""
    return "gsm7" if set(text) <= BASIC_CHARS | EXTENSION_CHARS else "ucs2"


def reference_size(text: str, coding: str) -> int:
    """Septets (extension characters two) or UTF-16 code units, computed independently."""
    if coding == "gsm7":
        return sum(2 if char in EXTENSION_CHARS else 1 for char in text)
    return len(text.encode("utf-16-le", "surrogatepass")) // 2


def assert_parts_fit(parts: list[str]) -> None:
    """Every part fits an SMS in the encoding of the whole message."""
    coding = reference_encoding("".join(parts))
    single, part = LIMITS[coding]
    limit = single if len(parts) == 1 else part
    assert all(reference_size(segment, coding) <= limit for segment in parts)
    assert all(segment for segment in parts)


# --- the alphabet --------------------------------------------------------------------


def test_basic_table_is_the_standard_one():
    """All 128 septets of the default alphabet map to the standard characters."""
    assert len(GSM7_BASIC) == 128
    for code in range(128):
        if code != ESCAPE:
            assert GSM7_BASIC[code] == chr(NOT_ASCII.get(code, code)), hex(code)


def test_extension_table_is_the_standard_one():
    """The extension table holds exactly the ten standard characters."""
    assert {code: ord(char) for code, char in GSM7_EXTENSION.items()} == EXTENSION


@pytest.mark.parametrize(
    ("text", "gsm7"),
    [
        ("", True),
        ("Your callback to +4930123456 is ringing.", True),
        ("@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ ¤¡ÄÖÑÜ¿äöñüà", True),
        ("^{}\\[~]|€\f", True),
        ("Saldo: 10,50 € ¿Qué tal?", True),
        ("`", False),
        ("ç", False),
        ("\t", False),
        ("\x1b", False),
        ("Saldo: 10,50 € ¿algo más?", False),
        ("Cuộc gọi của bạn đã kết thúc", False),
        ("您的余额是 10.50", False),
        ("ok 😀", False),
    ],
)
def test_is_gsm7_and_encoding(text, gsm7):
    """A text is GSM-7 when each character is in either table, else UCS-2."""
    assert is_gsm7(text) is gsm7
    assert encoding(text) == ("gsm7" if gsm7 else "ucs2")


@pytest.mark.parametrize(
    ("text", "count"),
    [("", 0), ("abc", 3), ("€", 2), ("{a}", 5), ("\f\n", 3), ("£" * 160, 160)],
)
def test_septets(text, count):
    """Extension characters cost two septets, everything else one."""
    assert septets(text) == count


def test_septets_refuses_text_outside_the_alphabet():
    """Septets of a UCS-2 text make no sense: ValueError."""
    with pytest.raises(ValueError, match="GSM 7-bit"):
        septets("中")


@pytest.mark.parametrize(("text", "count"), [("", 0), ("中文", 2), ("😀", 2), ("a😀b", 4)])
def test_units(text, count):
    """UCS-2 counts UTF-16 code units: a character beyond the BMP is two."""
    assert units(text) == count


# --- segments ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "lengths"),
    [
        ("", []),
        ("Callback placed.", [16]),
        ("a" * 160, [160]),
        ("a" * 161, [153, 8]),
        ("a" * 306, [153, 153]),
        ("a" * 307, [153, 153, 1]),
        ("€" * 80, [80]),  # 160 septets
        ("€" * 80 + "a", [76, 5]),  # 161: 76 euros are 152 septets, a 77th would split
        ("a" * 152 + "€" + "a" * 10, [152, 11]),  # the escape pair is not split
        ("中" * 70, [70]),
        ("中" * 71, [67, 4]),
        ("中" * 134, [67, 67]),
        ("中" * 135, [67, 67, 1]),
        ("😀" * 35, [35]),  # 70 units
        ("中" * 66 + "😀" + "中" * 10, [66, 11]),  # the surrogate pair is not split
        ("a" * 100 + " " + "b" * 200, [153, 148]),  # no whitespace near the limit
        ("a" * 140 + " " + "b" * 100, [141, 100]),  # cut after the space
        ("a" * 153 + " " + "b" * 100, [153, 101]),  # the space begins the next part
    ],
)
def test_segments_table(text, lengths):
    """Texts split at the standard limits, never inside a character."""
    parts = segments(text)
    assert [len(part) for part in parts] == lengths
    assert "".join(parts) == text
    assert count_segments(text) == len(lengths)


def test_segments_prefer_whitespace():
    """A long text of words is cut between words."""
    text = "Your callback is ringing now. " * 12
    parts = segments(text)
    assert len(parts) == 3
    assert all(part.endswith(" ") for part in parts)


def test_one_character_outside_the_alphabet_makes_the_whole_text_ucs2():
    """A single non-GSM character turns 100 septets (one SMS) into 100 units (two)."""
    assert count_segments("a" * 100) == 1
    assert count_segments("a" * 99 + "ệ") == 2


# --- fit -----------------------------------------------------------------------------


def test_fit_leaves_a_fitting_text_alone():
    """A text within the limit comes back whole."""
    assert fit("Balance: 10.50 EUR", 1) == ["Balance: 10.50 EUR"]
    assert fit("a" * 300, 2) == ["a" * 153, "a" * 147]


def test_fit_trims_gsm7_with_three_dots():
    """A GSM-7 text is trimmed with "..." so it stays GSM-7 and one SMS."""
    parts = fit("a" * 400, 1)
    assert parts == ["a" * 157 + "..."]
    assert encoding(parts[0]) == "gsm7"


def test_fit_trims_ucs2_with_the_ellipsis():
    """A UCS-2 text keeps the one-character ellipsis."""
    assert fit("中" * 200, 1) == ["中" * 69 + "…"]
    assert fit("中" * 200, 2) == ["中" * 67, "中" * 66 + "…"]


def test_fit_trims_at_a_word():
    """The trimmed text ends at a whole word."""
    text = "Your callback is ringing now. " * 10
    (part,) = fit(text, 1)
    head = part.removesuffix("...")
    assert len(head) == 154
    assert text.startswith(head)
    assert text[len(head)] == " "


def test_fit_uses_gsm7_when_the_other_characters_were_cut_off():
    """The character that made the text UCS-2 is trimmed away: the rest is GSM-7."""
    (part,) = fit("a" * 200 + "中", 1)
    assert part == "a" * 157 + "..."


def test_fit_custom_ellipsis():
    """The caller's ellipsis is used when it is in the text's alphabet."""
    assert fit("a" * 400, 1, ellipsis=" (more)") == ["a" * 153 + " (more)"]
    assert fit("a" * 400, 1, ellipsis="[more]") == ["a" * 152 + "[more]"]  # [ ] cost two


def test_fit_refuses_no_segments():
    """Fitting into no SMS at all is an error."""
    with pytest.raises(ValueError, match="max_segments"):
        fit("hello", 0)


def test_fit_refuses_an_ellipsis_that_cannot_fit():
    """An ellipsis longer than the SMS allowed cannot end any text."""
    with pytest.raises(ValueError, match="ellipsis"):
        fit("a" * 400, 1, ellipsis="." * 200)


# --- Kannel --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "coding"),
    [
        ("Callback placed.", 0),
        ("Saldo: 10,50 €", 0),
        ("Cuộc gọi đã kết thúc", 2),
        ("您的余额", 2),
        ("😀", 2),
    ],
)
def test_kannel_coding(text, coding):
    """7-bit (0) for GSM-7 texts, UCS-2 (2) otherwise; the text always goes as UTF-8."""
    assert kannel_coding(text) == (coding, "UTF-8")


# --- properties ----------------------------------------------------------------------

#: arbitrary text, and texts dense in what is hard at a boundary
TEXTS = st.one_of(
    st.text(max_size=700),
    st.text(alphabet="a €{\\中😀é\nç", max_size=700),
    st.text(alphabet="ab €[]|^~", max_size=700),
)


@given(TEXTS)
def test_segments_join_back_and_fit(text):
    """Parts join back to the text, each fits, and their number is count_segments."""
    parts = segments(text)
    assert "".join(parts) == text
    assert_parts_fit(parts)
    assert count_segments(text) == len(parts)


@given(TEXTS)
def test_segments_never_split_a_character(text):
    """No part ends inside a surrogate pair, nor between an escape and its character."""
    parts = segments(text)
    coding = reference_encoding(text)
    for part in parts:
        part.encode("utf-16-le")  # a lone surrogate would raise
    assert sum(reference_size(part, coding) for part in parts) == reference_size(text, coding)


@given(TEXTS, st.integers(min_value=1, max_value=4))
def test_fit_property(text, max_segments):
    """fit returns at most max_segments fitting parts; a text that fits is unchanged."""
    parts = fit(text, max_segments)
    assert len(parts) <= max_segments
    assert_parts_fit(parts)
    joined = "".join(parts)
    if len(segments(text)) <= max_segments:
        assert joined == text
    else:
        marker = "..." if joined.endswith("...") else "…"
        assert joined.endswith(marker)
        assert text.startswith(joined[: -len(marker)])
        assert reference_encoding(text) == "ucs2" or reference_encoding(joined) == "gsm7"
