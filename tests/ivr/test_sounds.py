"""make-sounds: every file each language needs, reproducibly, in a format Asterisk plays."""

from __future__ import annotations

import struct
import subprocess
import sys
from pathlib import Path

import pytest

from callbackd.ivr import sounds
from callbackd.ivr.sounds import RATE, SoundError, make_sounds, sound_texts
from callbackd.ivr.speech import LANGUAGES, PROMPT_FILES
from callbackd.simulator.say import NEEDED_FILES

ROOT = Path(__file__).resolve().parent.parent.parent


@pytest.mark.parametrize("language", LANGUAGES)
def test_every_file_the_ivr_plays_has_a_text(language):
    """The say engine's needed files and speech's prompts all get a text: a catalogue
    text, or a numeral espeak-ng reads."""
    texts, skipped = sound_texts(language)
    assert set(texts) >= NEEDED_FILES[language] | PROMPT_FILES
    assert skipped == []
    assert all(texts.values())


def test_texts_come_from_the_catalogue():
    es, _ = sound_texts("es")
    assert es["digits/thousand"] == "mil"
    assert es["digits/1M"] == "un"
    assert es["digits/21"] == "21"  # espeak-ng says "veintiuno"
    assert es["callbackd/euro_cents"] == "céntimos"
    zh, _ = sound_texts("zh")
    assert zh["digits/wan"] == "万" and zh["callbackd/liang"] == "两"


def test_a_text_that_cannot_be_recorded_is_left_out(monkeypatch):
    """A prompt with a placeholder, or whose name is no file name, is listed, not made."""
    messages = {"ivr.welcome": "Welcome", "ivr.balance": "You have {balance}", "ivr.a/b": "x"}
    monkeypatch.setattr(sounds, "load_messages", lambda language: messages)
    monkeypatch.setattr(sounds, "NEEDED_FILES", {"en": frozenset({"digits/1"})})
    texts, skipped = sound_texts("en")
    assert texts == {"digits/1": "1", "callbackd/welcome": "Welcome"}
    assert skipped == ["ivr.a/b", "ivr.balance"]


def wav_format(data: bytes) -> tuple:
    """The RIFF header's fields: what Asterisk's format_wav checks."""
    riff, size, wave, fmt, fmt_size, tag, channels, rate, byte_rate, align, bits = struct.unpack(
        "<4sI4s4sIHHIIHH", data[:36]
    )
    data_id, data_size = struct.unpack("<4sI", data[36:44])
    assert size == len(data) - 8 and data_size == len(data) - 44
    return riff, wave, fmt, fmt_size, tag, channels, rate, bits, data_id


def test_the_files_are_reproducible_8khz_mono_16_bit_wav(tmp_path):
    """One language made twice gives the same bytes, in Asterisk's layout and format."""
    first = make_sounds(tmp_path / "a", ["fr"])
    second = make_sounds(tmp_path / "b", ["fr"])
    texts, _ = sound_texts("fr")
    assert len(first.written) == len(texts) == len(second.written)
    for path in first.written:
        name = path.relative_to(tmp_path / "a")
        data = path.read_bytes()
        assert data == (tmp_path / "b" / name).read_bytes(), name
        assert wav_format(data) == (b"RIFF", b"WAVE", b"fmt ", 16, 1, 1, RATE, 16, b"data")
        assert len(data) > 44 + RATE // 10, name  # at least a tenth of a second of speech
    assert (tmp_path / "a/fr/digits/80.wav").exists()  # <sounds>/<language>/digits/80
    assert (tmp_path / "a/fr/callbackd/minutes.wav").exists()
    assert {p.suffix for p in (tmp_path / "a").rglob("*") if p.is_file()} == {".wav"}


def test_only_the_names_asked_for(tmp_path):
    made = make_sounds(tmp_path, ["es", "zh"], names={"digits/wan", "callbackd/and"})
    assert sorted(p.relative_to(tmp_path).as_posix() for p in made.written) == [
        "es/callbackd/and.wav",
        "zh/callbackd/and.wav",
        "zh/digits/wan.wav",
    ]


def test_a_missing_program_is_said(monkeypatch, tmp_path):
    monkeypatch.setattr(sounds.shutil, "which", lambda tool: None)
    with pytest.raises(SoundError, match="espeak-ng is not installed"):
        make_sounds(tmp_path, ["en"])


def admin(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "callbackd.admin", "-c", "/nonexistent.ini", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_the_command_makes_a_language_s_files(tmp_path):
    """callbackd-admin make-sounds needs no config file."""
    result = admin("make-sounds", "--out", str(tmp_path), "--lang", "vi")
    assert result.returncode == 0, result.stderr
    texts, _ = sound_texts("vi")
    made = sorted(p.relative_to(tmp_path / "vi").as_posix() for p in tmp_path.rglob("*.wav"))
    assert made == sorted(f"{name}.wav" for name in texts)
    assert result.stdout == f"{len(texts)} sound files in {tmp_path}\n"


def test_the_command_refuses_an_unknown_language(tmp_path):
    result = admin("make-sounds", "--out", str(tmp_path), "--lang", "de")
    assert result.returncode == 2
    assert "invalid choice: 'de'" in result.stderr
    assert not any(tmp_path.iterdir())
