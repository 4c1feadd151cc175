"""The package build compiles the catalogues; an installed package reads the .mo files."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

from babel.messages import mofile

from callbackd.i18n import LANGUAGES
from callbackd.i18n import catalogue as module

ROOT = Path(__file__).resolve().parents[2]
#: what the build reads
SOURCES = ["setup.py", "setup.cfg", "pyproject.toml", "README.rst", "callbackd", "twisted"]


def build(tmp_path: Path) -> Path:
    """``setup.py build_py`` (the step ``pip install .`` and ``pip wheel`` run) of a copy
    of the checkout; the build's directory."""
    tree = tmp_path / "src"
    for name in SOURCES:
        source = ROOT / name
        if source.is_dir():
            ignore = shutil.ignore_patterns("__pycache__", "*.pyc", "*.mo")
            shutil.copytree(source, tree / name, ignore=ignore)
        else:
            tree.mkdir(exist_ok=True)
            shutil.copy(source, tree / name)
    out = tmp_path / "build"
    result = subprocess.run(
        [sys.executable, "setup.py", "-q", "build_py", "--build-lib", str(out)],
        cwd=tree,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return out


def test_the_build_compiles_every_catalogue_and_reads_them(tmp_path, monkeypatch):
    """Every language gets a .mo beside its .po; a translator of the built package reads
    it, with the same texts as the .po of the checkout."""
    locale = build(tmp_path) / "callbackd" / "i18n" / "locale"
    assert (locale / "callbackd.pot").exists()
    for language in LANGUAGES:
        assert (locale / language / "LC_MESSAGES" / "callbackd.po").exists()
        assert (locale / language / "LC_MESSAGES" / "callbackd.mo").exists()
    from_po = {language: module.load_messages(language) for language in LANGUAGES}
    assert not list((module.LOCALE_DIR).glob("*/LC_MESSAGES/*.mo")), "a .mo in the checkout"

    read = []
    real_read_mo = mofile.read_mo

    def read_mo(f):
        read.append(f.name)
        return real_read_mo(f)

    monkeypatch.setattr(module, "LOCALE_DIR", locale)
    monkeypatch.setattr(module, "read_mo", read_mo)
    for language in LANGUAGES:
        assert module.load_messages(language) == from_po[language]
    assert len(read) == len(LANGUAGES)


def test_a_stale_mo_is_not_read(tmp_path, monkeypatch):
    """A .mo older than its .po (a .po edited after a build in place) is passed over."""
    locale = build(tmp_path) / "callbackd" / "i18n" / "locale"
    source = locale / "es" / "LC_MESSAGES" / "callbackd.po"
    text = source.read_text(encoding="utf-8")
    source.write_text(text.replace("Su saldo: {balance}", "Saldo actual: {balance}"), "utf-8")
    compiled = locale / "es" / "LC_MESSAGES" / "callbackd.mo"
    stamp = source.stat().st_mtime - 10

    os.utime(compiled, (stamp, stamp))
    monkeypatch.setattr(module, "LOCALE_DIR", locale)
    assert module.load_messages("es")["chat.balance"] == "Saldo actual: {balance}"
