"""The package build: setup.cfg holds the metadata; this compiles the message catalogues.

``build_py`` copies the gettext sources (``callbackd/i18n/locale/*/LC_MESSAGES/*.po``,
package data) into the build and writes each one's compiled ``.mo`` beside it with
Babel, so that an installed package reads compiled catalogues. The ``.mo`` files are
build products, never committed (a checkout reads the ``.po`` files, see
callbackd/i18n/catalogue.py).
"""

from __future__ import annotations

from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

CATALOGUES = "callbackd/i18n/locale"


def compile_catalogues(root: Path) -> list[Path]:
    """Write a ``.mo`` beside every ``.po`` under ``root``; return the files written."""
    from babel.messages.mofile import write_mo
    from babel.messages.pofile import read_po

    written = []
    for source in sorted(root.glob("*/LC_MESSAGES/*.po")):
        with source.open("rb") as f:
            catalog = read_po(f, locale=source.parent.parent.name)
        target = source.with_suffix(".mo")
        with target.open("wb") as f:
            write_mo(f, catalog)
        written.append(target)
    return written


class BuildPyWithCatalogues(build_py):
    """``build_py`` that also compiles the gettext catalogues into the build."""

    def run(self) -> None:
        super().run()
        self.compiled = compile_catalogues(Path(self.build_lib, CATALOGUES))

    def get_outputs(self, include_bytecode: bool = True) -> list[str]:
        outputs = super().get_outputs(include_bytecode)
        return outputs + [str(path) for path in getattr(self, "compiled", [])]


setup(cmdclass={"build_py": BuildPyWithCatalogues})
