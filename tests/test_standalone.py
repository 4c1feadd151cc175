"""The repository stands alone: nothing in it points outside it, and a lone clone collects.

The project was written next to background documents and recordings kept outside the
repository; everything it needs of them now lives in ``docs/`` and ``tests/fixtures/``.
These tests keep it that way: every tracked file is scanned for references to what is
not in the repository, and a fresh clone of the commit checked out, with nothing beside
it, must collect the whole test suite without an error (the collection is where a test
module that reads a file from outside fails first).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from functools import cache
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

# The patterns are written so that this file does not match them itself.
#: references that can only mean something outside the repository
OUTSIDE = {
    # the background documents the project was written from
    "an outside document": re.compile(r"\b(?:ASTERISK|DESIGN|STYLE|FEATURES|KANNEL)\.md\b"),
    # section references into those documents ("(\u00a72.4)")
    "a section sign": re.compile("\u00a7"),
    # the folder those documents, recordings and product descriptions were kept in
    "the shared folder": re.compile(r"\bshare[d]/"),
    "the work folder": re.compile(r"/wor[k]/"),
    # the product descriptions the project was created from
    "the product descriptions": re.compile(r"\b[Ss]eeds?\b"),
}
#: a relative path that climbs: followed from the file's folder it must reach a tracked
#: file or folder, or a place the repository keeps out of git (``var/``)
CLIMBING = re.compile(r"(?:\.\./)+[A-Za-z0-9_.\-/]*")


@cache
def tracked_files() -> tuple[str, ...]:
    """Every file git tracks in the checkout (CI always runs in a git clone)."""
    result = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True)
    names = tuple(name for name in result.stdout.decode("utf-8").split("\0") if name)
    assert names, "git ls-files listed nothing"
    return names


@cache
def tracked_paths() -> frozenset[str]:
    """The tracked files and every folder that holds one, relative to the root."""
    paths = {""}
    for name in tracked_files():
        parts = name.split("/")
        paths.update("/".join(parts[:i]) for i in range(1, len(parts) + 1))
    return frozenset(paths)


def inside(target: Path) -> bool:
    """Whether ``target`` is provably in the repository: tracked, or ignored by it."""
    resolved = Path(os.path.normpath(target))
    if not resolved.is_relative_to(ROOT):
        return False
    relative = resolved.relative_to(ROOT).as_posix().rstrip("/")
    if relative in tracked_paths():
        return True
    # as a file or, for a folder not made yet (``var``), as a folder
    return any(
        subprocess.run(["git", "check-ignore", "-q", path], cwd=ROOT).returncode == 0
        for path in (relative, relative + "/")
    )


def outside_references(name: str, text: str) -> list[str]:
    """``name:line: what`` for every reference outside the repository in ``text``."""
    found = []
    for number, line in enumerate(text.splitlines(), 1):
        for what, pattern in OUTSIDE.items():
            if pattern.search(line):
                found.append(f"{name}:{number}: {what}: {line.strip()[:120]}")
        for m in CLIMBING.finditer(line):
            if not inside((ROOT / name).parent / m.group(0)):
                found.append(f"{name}:{number}: a path out of the repository: {m.group(0)}")
    return found


def test_the_scan_finds_what_it_is_for():
    """Each kind of outside reference is found; paths that stay inside are not."""
    doc = "ASTERISK" + ".md"
    for text in (
        f"see {doc} for details",
        "as described in (\u00a72.4)",
        "read .." + "/share" + "d/fixtures/asterisk22",
        "/wor" + "k/main/.venv",
        "in the s" + "eed's words",
        "the configs in " + "/".join([".."] * 3) + "/asterisk/callbackd-run/",
    ):
        assert outside_references("tests/fixtures/asterisk22/callbackd/README.md", text), text
    for text in (
        "state_dir = ../var",
        "docs/asterisk.rst, the seeded deck, SEED = 1, test_the_seed_words",
        "see ../README.rst and ../tests/fixtures/",
    ):
        assert outside_references("etc/callbackd.ini", text) == [], text


def test_no_file_refers_outside_the_repository():
    """No tracked file (code, docs, configs, recordings) names anything outside it."""
    found = []
    for name in tracked_files():
        path = ROOT / name
        if path.is_symlink():
            if not inside(path.parent / os.readlink(path)):
                found.append(f"{name}: a symlink out of the repository")
            continue
        if not path.is_file():
            continue  # deleted in the working tree; the clone test sees the commit
        data = path.read_bytes()
        if b"\0" in data:
            continue  # binary
        found += outside_references(name, data.decode("utf-8", "replace"))
    assert found == []


def test_scripts_test_runs_pytest_on_the_checkout():
    """The README's test command ends in pytest with the checkout on PYTHONPATH.

    That is what the clone test below runs (without the bootstrap, which installs
    system packages).
    """
    readme = (ROOT / "README.rst").read_text()
    assert "sh scripts/test.sh" in readme
    script = (ROOT / "scripts" / "test.sh").read_text()
    assert re.search(r"^PYTHONPATH=\$\(pwd\) exec \S*python -m pytest", script, re.MULTILINE)


def test_a_lone_clone_collects_every_test(tmp_path):
    """A clone of the commit checked out, alone in an empty folder, collects with no error.

    Uncommitted files are not in the clone: a test that needs one fails here.
    """
    git = shutil.which("git")
    assert git is not None, "git is needed to test a clone"
    head = subprocess.run(
        [git, "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout.strip()
    clone = tmp_path / "callbackd"
    # nothing of this checkout's environment: no git, pytest or callbackd settings
    env = {
        k: v for k, v in os.environ.items() if not k.startswith(("GIT_", "PYTEST_", "CALLBACKD_"))
    }
    subprocess.run(
        [git, "clone", "--quiet", "--no-checkout", str(ROOT), str(clone)],
        env=env,
        check=True,
        capture_output=True,
    )
    subprocess.run(
        [git, "checkout", "--quiet", "--detach", head],
        cwd=clone,
        env=env,
        check=True,
        capture_output=True,
    )
    assert sorted(p.name for p in tmp_path.iterdir()) == ["callbackd"]
    env["PYTHONPATH"] = str(clone)
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "--collect-only", "-q", "-p", "no:cacheprovider"],
        cwd=clone,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-4000:]
    summary = output.strip().splitlines()[-1]
    m = re.fullmatch(r"(\d+) tests? collected in [0-9.]+s", summary)
    assert m is not None, output[-4000:]
    assert int(m.group(1)) > 0
