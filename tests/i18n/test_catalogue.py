"""The catalogue is complete: every text in every language, with the same placeholders."""

from __future__ import annotations

import re
import string

import pytest
from babel.messages.pofile import read_po

from callbackd.i18n import LANGUAGES
from callbackd.i18n.catalogue import LOCALE_DIR, catalogue_path, load_messages


def read(path):
    with path.open("rb") as f:
        return read_po(f)


def placeholders(text: str) -> set[str]:
    """The ``{name}`` fields of a str.format template."""
    return {field for _, field, _, _ in string.Formatter().parse(text) if field is not None}


def missing_or_mismatched(template, catalog) -> list[str]:
    """What is wrong with ``catalog`` against the template: untranslated, fuzzy or
    unknown ids, and translations whose placeholders differ from the English ones."""
    english = {m.id: m.string for m in read(catalogue_path("en")) if m.id}
    problems = []
    ids = {m.id for m in template if m.id}
    for message in catalog:
        if not message.id:
            continue
        if message.id not in ids:
            problems.append(f"{message.id}: not in the template")
        elif not message.string:
            problems.append(f"{message.id}: not translated")
        elif message.fuzzy:
            problems.append(f"{message.id}: fuzzy")
        elif placeholders(message.string) != placeholders(english[message.id]):
            problems.append(
                f"{message.id}: placeholders {sorted(placeholders(message.string))}, "
                f"English has {sorted(placeholders(english[message.id]))}"
            )
    have = {m.id for m in catalog if m.id}
    problems += [f"{msgid}: missing" for msgid in sorted(ids - have)]
    return problems


TEMPLATE = LOCALE_DIR / "callbackd.pot"


@pytest.mark.parametrize("language", LANGUAGES)
def test_every_text_is_translated_with_the_english_placeholders(language):
    """Each language's .po has every id of the template, translated, with the same
    {placeholders} as the English text."""
    assert missing_or_mismatched(read(TEMPLATE), read(catalogue_path(language))) == []


def test_a_missing_translation_is_found(tmp_path):
    """The check fails on a text left out, left empty, or with a placeholder lost or
    added."""
    source = catalogue_path("es").read_text(encoding="utf-8")
    broken = (
        source.replace('msgstr "Su saldo: {balance}"', 'msgstr "Su saldo"')
        .replace('msgstr "Cuenta desconocida."', 'msgstr ""')
        .replace('msgstr "Uso: {usage}"', 'msgstr "Uso: {usage} {extra}"')
    )
    path = tmp_path / "es.po"
    path.write_text(broken, encoding="utf-8")
    problems = missing_or_mismatched(read(TEMPLATE), read(path))
    assert sorted(problems) == [
        "chat.balance: placeholders [], English has ['balance']",
        "chat.help_command: placeholders ['extra', 'usage'], English has ['usage']",
        "refusal.unknown_account: not translated",
    ]
    # and an id left out altogether
    without = source.replace('msgid "chat.invite"', 'msgid "chat.invite_gone"')
    path.write_text(without, encoding="utf-8")
    assert missing_or_mismatched(read(TEMPLATE), read(path)) == [
        "chat.invite_gone: not in the template",
        "chat.invite: missing",
    ]


def test_the_template_lists_every_english_text():
    """The .pot and the English catalogue have the same ids, and no English text is empty."""
    template = {m.id for m in read(TEMPLATE) if m.id}
    english = load_messages("en")
    assert set(english) == template
    assert all(english.values())


@pytest.mark.parametrize("language", LANGUAGES)
def test_every_template_fills_with_its_placeholders(language):
    """Every text formats with str.format given its own placeholders (no stray braces)."""
    for msgid, text in load_messages(language).items():
        params = {name: f"<{name}>" for name in placeholders(text)}
        filled = text.format(**params)
        assert "{" not in filled.replace("<", "").replace(">", ""), msgid


# the ids other parts of the product code against
REQUIRED = {
    "error.empty": set(),
    "error.unknown_command": {"command"},
    "error.missing_argument": {"command", "usage"},
    "error.too_many_arguments": {"command", "usage"},
    "error.bad_leg": {"leg"},
    "error.too_long": {"limit"},
    "error.bad_characters": set(),
    "error.bad_index": set(),
    "error.unknown_language": {"code", "choices"},
    "chat.not_linked": set(),
    "chat.linked": {"username"},
    "chat.unlinked": set(),
    "chat.link_failed": set(),
    "chat.link_throttled": set(),
    "chat.rate_limited": set(),
    "chat.no_session": set(),
    "chat.balance": {"balance"},
    "chat.rate": {"leg", "rate"},
    "chat.status_none": set(),
    "chat.status": {"sessions"},
    "chat.history_none": set(),
    "chat.history_line": {"when", "destination", "seconds", "cost"},
    "chat.language_set": {"language"},
    "chat.help": {"commands"},
    "chat.help_command": {"usage"},
    "chat.refused": {"reason"},
    "chat.session_started": {"session"},
    "chat.hangup_requested": set(),
    "chat.leg_added": {"leg"},
    "chat.leg_dropped": {"leg"},
    "chat.no_default_number": set(),
    "chat.failed": set(),
    "chat.presence_status": set(),
    "chat.invite": set(),
}


def test_the_ids_the_chat_front_uses_have_their_placeholders():
    """The chat replies and grammar errors exist with the placeholders promised."""
    english = load_messages("en")
    assert {msgid: placeholders(english.get(msgid, "?")) for msgid in REQUIRED} == REQUIRED


PACKAGE = LOCALE_DIR.parent.parent
#: a catalogue id written out in the code
WRITTEN_ID = re.compile(
    r"""["']((?:refusal|progress|list|chat|error|role|cause|reason)\.[a-z_.]+)["']"""
)


def test_every_id_the_code_names_is_in_the_catalogue():
    """No text the code asks for by name is missing from the template."""
    template = {m.id for m in read(TEMPLATE) if m.id}
    named = {
        match
        for path in PACKAGE.rglob("*.py")
        for match in WRITTEN_ID.findall(path.read_text(encoding="utf-8"))
    }
    assert "refusal.no_credit" in named
    assert named - template == set()


def test_every_refusal_is_raised_somewhere():
    """Each refusal text of the catalogue is one the engine or the session machine gives."""
    code = "\n".join(path.read_text(encoding="utf-8") for path in PACKAGE.rglob("*.py"))
    refusals = {m.id for m in read(TEMPLATE) if m.id and m.id.startswith("refusal.")}
    # the one raised through an f-string: refusal.same_{what}
    unused = {r for r in refusals if f'"{r}"' not in code} - {
        "refusal.same_number",
        "refusal.same_address",
    }
    assert unused == set()
