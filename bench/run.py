"""Run the benchmarks: ``python bench/run.py [--quick] [--only NAME]``.

Every ``bench/bench_*.py`` module exposes ``run(quick: bool) -> Iterable[dict]``;
each dict is printed as one JSON line with at least ``bench``, ``value`` and
``unit`` (and ``peer``, ``peer_value`` where there is something to compare with).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import sys
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from types import ModuleType

BENCH_DIR = Path(__file__).resolve().parent
ROOT = BENCH_DIR.parent
REQUIRED = ("bench", "value", "unit")


def discover(only: str | None = None) -> Iterator[tuple[str, Path]]:
    """``(name, path)`` of every benchmark module, sorted; ``only`` picks one by name."""
    for path in sorted(BENCH_DIR.glob("bench_*.py")):
        name = path.stem.removeprefix("bench_")
        if only is None or only in (name, path.stem):
            yield name, path


def load(name: str, path: Path) -> ModuleType:
    """Import one benchmark module from its file."""
    spec = importlib.util.spec_from_file_location(f"bench.bench_{name}", path)
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot load {path}")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def check(result: dict, source: str) -> dict:
    """Refuse a result without the required keys (a benchmark bug, not a slow run)."""
    missing = [key for key in REQUIRED if key not in result]
    if missing:
        raise ValueError(f"{source}: result {result!r} lacks {missing}")
    return result


def main(argv: Iterable[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="short runs (whole suite < 1 min)")
    parser.add_argument("--only", metavar="NAME", help="run one benchmark (e.g. ami_parse)")
    args = parser.parse_args(list(argv) if argv is not None else None)
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
    found = list(discover(args.only))
    if not found:
        print(f"no benchmark called {args.only!r}", file=sys.stderr)
        return 2
    failed = 0
    for name, path in found:
        started = time.perf_counter()
        try:
            for result in load(name, path).run(args.quick):
                print(json.dumps(check(dict(result), path.name)), flush=True)
        except Exception as e:
            failed += 1
            print(f"{path.name} failed: {type(e).__name__}: {e}", file=sys.stderr)
        print(f"{path.name}: {time.perf_counter() - started:.1f}s", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
