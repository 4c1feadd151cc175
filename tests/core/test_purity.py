"""The core is pure in fact: it imports only itself and pure standard modules, and no
module of it names a way to reach files, sockets, the clock, randomness or the reactor.

The check reads every module's syntax tree, so it sees what is used, not only the
import lines: a builtin such as ``open``, a clock read such as ``datetime.now()`` or a
``reactor`` passed in from outside are all found. It is tried on planted snippets too,
so a checker that stopped finding things would fail here.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

CORE = Path(__file__).resolve().parents[2] / "callbackd" / "core"

#: standard modules with no I/O, clock or randomness in them
PURE_STDLIB = frozenset(
    {
        "__future__",
        "abc",
        "bisect",
        "collections",
        "collections.abc",
        "dataclasses",
        "decimal",
        "enum",
        "fractions",
        "functools",
        "heapq",
        "itertools",
        "math",
        "numbers",
        "operator",
        "re",
        "string",
        "types",
        "typing",
    }
)
#: outside packages the core may use: pure computation on values, no I/O
#: (``phonenumbers``: the numbering plan metadata, imported as Python modules)
PURE_THIRD_PARTY = frozenset({"phonenumbers"})
#: names that reach the world outside the process, the clock or randomness
DENIED_NAMES = frozenset(
    {
        # builtins that do I/O or run code
        "open",
        "input",
        "print",
        "exec",
        "eval",
        "compile",
        "__import__",
        "breakpoint",
        # modules and objects of I/O, clocks, randomness, the event loop
        "os",
        "sys",
        "io",
        "gc",
        "time",
        "datetime",
        "socket",
        "select",
        "pathlib",
        "Path",
        "random",
        "secrets",
        "uuid",
        "subprocess",
        "threading",
        "asyncio",
        "signal",
        "reactor",
        "twisted",
    }
)
#: methods whose call reads a clock or a file, draws randomness or schedules on a loop
#: (as plain attributes they may be values: a step's ``now`` is its input)
DENIED_CALLS = frozenset(
    {
        "open",
        "now",
        "utcnow",
        "today",
        "time",
        "time_ns",
        "monotonic",
        "perf_counter",
        "process_time",
        "seconds",
        "callLater",
        "urandom",
        "getrandbits",
        "read_text",
        "read_bytes",
        "write_text",
        "write_bytes",
    }
)


def _module_allowed(name: str) -> bool:
    top = name.split(".")[0]
    return (
        name in PURE_STDLIB
        or name == "callbackd.core"
        or name.startswith("callbackd.core.")
        or top in PURE_THIRD_PARTY
    )


def impurities(source: str, filename: str = "<snippet>") -> list[str]:
    """What in ``source`` breaks the core's purity, as ``file:line: what`` lines."""
    found: list[str] = []

    def offend(node: ast.AST, what: str) -> None:
        found.append(f"{filename}:{getattr(node, 'lineno', 0)}: {what}")

    for node in ast.walk(ast.parse(source, filename)):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if not _module_allowed(alias.name):
                    offend(node, f"import {alias.name}")
        elif isinstance(node, ast.ImportFrom):
            module = "." * node.level + (node.module or "")
            if node.level or not _module_allowed(module):
                offend(node, f"from {module} import ...")
        elif isinstance(node, ast.Name) and node.id in DENIED_NAMES:
            offend(node, f"name {node.id}")
        elif (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute)
            and node.func.attr in DENIED_CALLS
        ):
            offend(node, f"call .{node.func.attr}()")
        elif isinstance(node, ast.arg) and node.arg in DENIED_NAMES:
            offend(node, f"parameter {node.arg}")
    return found


def core_modules() -> list[Path]:
    modules = sorted(CORE.rglob("*.py"))
    assert len(modules) > 5, f"no core modules under {CORE}"
    return modules


@pytest.mark.parametrize("path", core_modules(), ids=lambda p: p.name)
def test_core_module_is_pure(path):
    """The module imports only the core and pure modules and names no I/O, clock or loop."""
    assert impurities(path.read_text(encoding="utf-8"), path.name) == []


@pytest.mark.parametrize(
    "snippet",
    [
        "import os",
        "import gc",
        "import time",
        "import socket",
        "import random",
        "import twisted.internet.reactor",
        "from twisted.internet import reactor",
        "from datetime import datetime",
        "from pathlib import Path",
        "from callbackd.switch import LegFailed",
        "from callbackd.store.redis import RedisStore",
        "from . import money",
        "import callbackd.engine",
        "import txredisapi",
        "data = open('rates.csv').read()",
        "print('debug')",
        "def at(clock):\n    return clock.seconds()",
        "def stamp(dt):\n    return dt.now()",
        "def stamp(date):\n    return date.today()",
        "def tick(t):\n    return t.monotonic()",
        "def later(loop, f):\n    loop.callLater(1, f)",
        "def load(p):\n    return p.read_text()",
        "def load(p):\n    with p.open() as f:\n        return f",
        "def run(reactor):\n    pass",
        "x = reactor",
        "gc.disable()",
        "y = os.environ['HOME']",
        "eval('1 + 1')",
        "t = time",
    ],
)
def test_the_checker_finds_a_planted_offence(snippet):
    """Each way out of purity is found in a snippet planted for it."""
    assert impurities(snippet) != []


def test_the_checker_passes_pure_code():
    """Pure code with the allowed imports, and names that merely resemble denied ones."""
    snippet = (
        "from __future__ import annotations\n"
        "import math\n"
        "from collections.abc import Mapping\n"
        "from dataclasses import dataclass\n"
        "from callbackd.core.money import parse_amount\n"
        "import phonenumbers\n"
        "def cost(rates: Mapping[str, int], at: float, step: object) -> int:\n"
        "    timeout = math.ceil(at) + step.now + step.seconds\n"
        "    return rates.get('49', 0) * timeout\n"
    )
    assert impurities(snippet) == []


def test_offences_name_file_and_line():
    """A report says where the offence is."""
    assert impurities("import re\n\nx = open('f')\n", "m.py") == ["m.py:3: name open"]
