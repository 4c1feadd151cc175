"""The habits that keep the code healthy, enforced by the test command (and so by CI)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
#: the whole package: the core and the interfaces are what the issue asks for; the
#: adapters are held to the same standard
TYPED = ["callbackd", "twisted/plugins/callbackd_plugin.py"]


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", *args], cwd=ROOT, capture_output=True, text=True)


def test_ruff_lint():
    """ruff finds nothing to complain about."""
    result = run("ruff", "check", "--no-cache", ".")
    assert result.returncode == 0, result.stdout + result.stderr


def test_ruff_format():
    """The code is formatted as ruff formats it."""
    result = run("ruff", "format", "--check", "--no-cache", ".")
    assert result.returncode == 0, result.stdout + result.stderr


def test_mypy():
    """mypy accepts the package: the core, the interfaces and the adapters."""
    result = run("mypy", "--no-incremental", *TYPED)
    assert result.returncode == 0, result.stdout + result.stderr
