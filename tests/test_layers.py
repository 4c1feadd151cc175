"""The fronts stand apart: each adapter talks to the engine, the store and the shared
parts (``callbackd/fronts``), never to another adapter.

The adapters are ``callbackd/xmpp`` (chat), ``callbackd/sms``, ``callbackd/web`` (the
REST API and the portal) and ``callbackd/ivr`` with the FastAGI layer it stands on,
``callbackd/agi``. What two of them share lives in ``callbackd/fronts`` or below. The
wiring (``app.py``, ``admin.py``, ``config.py``, ``tap.py``, ``manhole.py``) may import
any of them; no other module imports an adapter. Every import statement counts, those
inside functions and under ``TYPE_CHECKING`` too, and relative ones are resolved. The
checker is tried on planted snippets as well, so one that stopped finding imports
would fail here.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "callbackd"

#: each adapter package, and the adapter packages it may import besides itself
ADAPTERS: dict[str, frozenset[str]] = {
    "xmpp": frozenset(),
    "sms": frozenset(),
    "web": frozenset(),
    "ivr": frozenset({"agi"}),  # the IVR's protocol layer
    "agi": frozenset(),
}
#: the modules that wire the adapters together
WIRING = frozenset({"app", "admin", "config", "tap", "manhole"})


def imported(module: str, source: str) -> set[str]:
    """The absolute names every import statement of ``module`` (dotted; a package's
    ``__init__`` named so, for its relative imports) imports."""
    package = module.split(".")
    names = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative to the module's package
                parent = package[: len(package) - node.level]
                base = ".".join([*parent, base] if base else parent)
            names.add(base)
            names.update(f"{base}.{alias.name}" for alias in node.names)
    return names


def forbidden(module: str, source: str) -> list[str]:
    """The adapters ``module`` (dotted, ``callbackd.…``) imports that it may not."""
    parts = module.split(".")
    if len(parts) == 2 and parts[1] in WIRING:
        return []
    own = parts[1] if len(parts) > 2 and parts[1] in ADAPTERS else None
    allowed = {own, *ADAPTERS.get(own or "", ())}
    found = set()
    for name in imported(module, source):
        target = name.split(".")
        if target[0] == "callbackd" and len(target) > 1 and target[1] in ADAPTERS:
            if target[1] not in allowed:
                found.add(".".join(target[:2]))
    return sorted(found)


def modules() -> list[tuple[str, Path]]:
    """Every module of the package, by dotted name (a package's own: ``….__init__``)."""
    found = []
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        found.append((".".join(parts), path))
    return found


def test_no_module_imports_an_adapter_it_may_not():
    """Adapters import no other adapter; the shared parts and the core import none."""
    broken = {}
    for module, path in modules():
        names = forbidden(module, path.read_text(encoding="utf-8"))
        if names:
            broken[module] = names
    assert broken == {}


def test_every_adapter_and_the_shared_package_is_scanned():
    """The scan sees each adapter's modules and the shared package (not a vacuous pass)."""
    packages = {module.split(".")[1] for module, _ in modules() if module.count(".") >= 1}
    assert {*ADAPTERS, "fronts", "core", "engine"} <= packages


@pytest.mark.parametrize(
    ("module", "source", "expected"),
    [
        ("callbackd.sms.front", "from callbackd.xmpp.chat import ChatFront", ["callbackd.xmpp"]),
        ("callbackd.sms.resources", "import callbackd.xmpp.chat", ["callbackd.xmpp"]),
        ("callbackd.web.portal.users", "from callbackd import sms", ["callbackd.sms"]),
        ("callbackd.xmpp.chat", "def f():\n    from callbackd.ivr import flow", ["callbackd.ivr"]),
        ("callbackd.xmpp.chat", "from callbackd.agi.server import AGIChannel", ["callbackd.agi"]),
        ("callbackd.web.api.app", "from ...sms.front import CODE_REPLY", ["callbackd.sms"]),
        (
            "callbackd.sms.front",
            "if TYPE_CHECKING:\n    from callbackd.web import root",
            ["callbackd.web"],
        ),
        ("callbackd.fronts.commands", "from callbackd.sms import front", ["callbackd.sms"]),
        ("callbackd.engine.manager", "from callbackd.web.sse import hub_of", ["callbackd.web"]),
        ("callbackd.fronts.__init__", "from . import xmpp", []),  # callbackd.fronts.xmpp
        ("callbackd.fronts.codes", "from . import xmpp", []),
        ("callbackd.fronts.codes", "from .. import xmpp", ["callbackd.xmpp"]),
        ("callbackd.ivr.service", "from callbackd.agi.server import AGIChannel", []),
        ("callbackd.web.portal.users", "from ..api import models", []),
        ("callbackd.sms.front", "from callbackd.fronts.commands import ChatCommands", []),
        ("callbackd.app", "from callbackd.xmpp.service import make_chat_service", []),
        ("callbackd.config", "from callbackd.sms.auth import AddressAllowList", []),
    ],
)
def test_the_checker_finds_planted_imports(module, source, expected):
    """Absolute, relative, nested and TYPE_CHECKING imports; the allowed ones pass."""
    assert forbidden(module, source) == expected
