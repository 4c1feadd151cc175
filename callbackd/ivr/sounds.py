"""The IVR's sound files, made from the catalogue with espeak-ng and sox.

``callbackd-admin make-sounds --out DIR`` writes, for each language, every file the
IVR can play there, in Asterisk's sounds layout (Asterisk looks a file up as
``<sounds dir>/<channel language>/<name>``)::

    DIR/es/digits/1.wav ... DIR/es/digits/1M.wav, DIR/es/digits/thousand.wav, ...
    DIR/es/callbackd/euros.wav, DIR/es/callbackd/minutes.wav, ...

* ``digits/*``: the say engine's files the language needs
  (:data:`callbackd.simulator.say.NEEDED_FILES`); ``digits/<name>`` is spoken from the
  catalogue text ``digits.<name>`` (``digits.thousand`` is "mil" in Spanish), and a
  plain numeral with no such text from the numeral itself, which espeak-ng reads in
  the language ("21" is "veintiuno");
* ``callbackd/*``: every catalogue text ``ivr.<name>`` is spoken to
  ``callbackd/<name>`` (units from :mod:`callbackd.ivr.speech`, and the IVR's prompts).
  A text with ``{placeholders}`` cannot be recorded and is left out (and listed), and
  so is a name that is not a plain file name.

The format is 8 kHz, mono, 16-bit signed PCM in a WAV file (the 44-byte RIFF header,
nothing else): Asterisk's ``format_wav`` reads it as signed linear, its own internal
format, so nothing is transcoded before a channel's codec. The voices are espeak-ng's
``en-us``, ``es``, ``fr``, ``vi`` and, for ``zh``, ``cmn-latn-pinyin`` (Mandarin; the
plain ``cmn`` voice reads the pinyin of the characters it looks up as English: 万 is
"wan four"). The output is reproducible: espeak-ng renders the same text the same way,
and sox resamples without dither (``-D``) and writes no date, so the same catalogue
gives the same bytes (a test makes the files twice and compares them).
"""

from __future__ import annotations

import io
import os
import re
import shutil
import subprocess
import tempfile
import wave
from collections.abc import Collection, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

from callbackd.i18n.catalogue import load_messages
from callbackd.ivr.speech import LANGUAGES
from callbackd.simulator.say import NEEDED_FILES

__all__ = [
    "FORMAT",
    "RATE",
    "VOICES",
    "MadeSounds",
    "SoundError",
    "make_sounds",
    "sound_texts",
]

#: espeak-ng's voice for each language
VOICES: Final = {"en": "en-us", "es": "es", "fr": "fr", "vi": "vi", "zh": "cmn-latn-pinyin"}
#: the files' extension: Asterisk picks the format by it
FORMAT: Final = "wav"
#: the sample rate, Hz: Asterisk's signed linear
RATE: Final = 8000
#: espeak-ng's speed, words per minute (its default is 175): a little slower for phones
SPEED: Final = 150

#: sox effects: espeak-ng's silence cut at both ends (below -45 dB), then a short pause
#: kept, so that files played one after another ("veinte" "y" "uno") run together
TRIM: Final = "silence 1 0.01 -45d reverse silence 1 0.01 -45d reverse pad 0.02 0.08".split()

_NAME = re.compile(r"[A-Za-z0-9_-]+")
_PLACEHOLDER = re.compile(r"\{[^{}]*\}")


class SoundError(Exception):
    """A sound could not be made (a program missing or failing)."""


@dataclass
class MadeSounds:
    """What :func:`make_sounds` did: the files written and the texts left out."""

    written: list[Path] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)


def sound_texts(language: str) -> tuple[dict[str, str], list[str]]:
    """``(name -> text, skipped)``: what to speak for each file of ``language``
    (``digits/1`` -> ``"1"``, ``callbackd/euros`` -> ``"euros"``) and the catalogue ids
    that cannot be recorded."""
    if language not in LANGUAGES:
        raise ValueError(f"no sounds for language {language!r}; one of {LANGUAGES}")
    messages = load_messages(language)
    texts: dict[str, str] = {}
    for name in sorted(NEEDED_FILES[language]):
        word = name.removeprefix("digits/")
        text = messages.get(f"digits.{word}") or (word if word.isdigit() else "")
        if not text:
            raise SoundError(f"{language}: no catalogue text digits.{word} for {name}")
        texts[name] = text
    skipped = []
    for msgid, text in sorted(messages.items()):
        if not msgid.startswith("ivr."):
            continue
        stem = msgid.removeprefix("ivr.")
        if not _NAME.fullmatch(stem) or _PLACEHOLDER.search(text):
            skipped.append(msgid)
            continue
        texts[f"callbackd/{stem}"] = text
    return texts, skipped


def make_sounds(
    out: Path, languages: Iterable[str] = LANGUAGES, names: Collection[str] | None = None
) -> MadeSounds:
    """Write ``out/<language>/<name>.wav`` for every sound of each language (only
    ``names`` when given); existing files are replaced."""
    for tool in ("espeak-ng", "sox"):
        if shutil.which(tool) is None:
            raise SoundError(f"{tool} is not installed (Debian: apt install {tool})")
    made = MadeSounds()
    for language in languages:
        texts, skipped = sound_texts(language)
        made.skipped += [f"{language}: {msgid}" for msgid in skipped]
        for name, text in texts.items():
            if names is not None and name not in names:
                continue
            path = out / language / f"{name}.{FORMAT}"
            _write(path, _render(text, VOICES[language]))
            made.written.append(path)
    return made


def _render(text: str, voice: str) -> bytes:
    """``text`` spoken by espeak-ng's ``voice``, as a WAV file: 8 kHz, mono, 16-bit."""
    speech = _run(["espeak-ng", "-v", voice, "-s", str(SPEED), "--stdout"], text.encode())
    samples = _run(
        # -D: no dither, so the same input gives the same samples; -V1: errors only.
        # Raw samples out: sox cannot fix up a WAV header on a pipe, so wave writes it.
        ["sox", "-D", "-V1", "-t", "wav", "-", "-t", "raw"]
        + ["-r", str(RATE), "-c", "1", "-b", "16", "-e", "signed-integer", "-L", "-"]
        + TRIM,
        speech,
    )
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(RATE)
        w.writeframes(samples)
    return buffer.getvalue()


def _run(command: list[str], data: bytes) -> bytes:
    result = subprocess.run(command, input=data, capture_output=True, check=False)
    if result.returncode != 0 or not result.stdout:
        problem = result.stderr.decode(errors="replace").strip()
        raise SoundError(f"{command[0]} failed ({result.returncode}): {problem}")
    return result.stdout


def _write(path: Path, data: bytes) -> None:
    """Replace ``path`` with ``data`` in one step (a reader sees the old or the new)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, temporary = tempfile.mkstemp(dir=path.parent, prefix=".", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.chmod(temporary, 0o644)
        os.replace(temporary, path)
    except BaseException:
        os.unlink(temporary)
        raise
