"""The systemd unit in etc/systemd: runs twistd in the foreground, hardened, and verifies."""

from __future__ import annotations

import configparser
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

UNIT = Path(__file__).resolve().parent.parent / "etc" / "systemd" / "callbackd.service"


def read_unit() -> configparser.RawConfigParser:
    parser = configparser.RawConfigParser(strict=False, interpolation=None)
    parser.optionxform = str  # type: ignore[assignment,method-assign]
    parser.read_string(UNIT.read_text())
    return parser


def test_unit_runs_twistd_in_the_foreground_with_the_etc_config():
    """ExecStart is twistd --nodaemon --pidfile= callbackd -c /etc/callbackd/callbackd.ini."""
    service = read_unit()["Service"]
    args = service["ExecStart"].split()
    assert Path(args[0]).name == "twistd"
    assert args[1:] == [
        "--nodaemon",
        "--pidfile=",
        "callbackd",
        "-c",
        "/etc/callbackd/callbackd.ini",
    ]
    assert service["Type"] == "simple"
    assert service["Restart"] == "on-failure"


def test_unit_runs_as_a_dedicated_user_with_hardening():
    """A non-root user, no new privileges, a read-only system but for its state directory."""
    service = read_unit()["Service"]
    assert service["User"] not in ("", "root")
    assert service["NoNewPrivileges"] == "yes"
    assert service["ProtectSystem"] == "strict"
    assert service["StateDirectory"] == "callbackd"
    assert service["PrivateTmp"] == "yes"


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="no systemd-analyze")
def test_unit_passes_systemd_analyze_verify(tmp_path):
    """systemd-analyze verify accepts the unit (twistd pointed at this virtualenv)."""
    venv = str(Path(sys.executable).parent.parent)
    unit = tmp_path / "callbackd.service"
    unit.write_text(UNIT.read_text().replace("/opt/callbackd/venv", venv))
    result = subprocess.run(
        ["systemd-analyze", "verify", str(unit)], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "callbackd.service" not in result.stderr
