"""Resident memory of the daemon with 1,000 sessions talking, and per active session.

The daemon's real parts run in a fresh child process (see :mod:`bench._harness`:
``create_daemon`` against a private ``redis-server`` and the simulated Asterisk, both
in other processes), so the resident set measured is that of a process holding the
daemon and the small driver only, not the garbage of the benches run before.

* **idle**: the daemon started, AMI logged in, Redis connected, the accounts created,
  and one warm-up round of 20 sessions set up and hung up (so code paths, caches and
  the AMI parser's header cache are in place before counting);
* **with N**: N = 1,000 sessions set up 250 at a time and all talking (both legs answered and in
  their room), their store writes settled;
* ``memory_1000_sessions`` = RSS with N (MB of 2**20 bytes); ``memory_per_session`` =
  (RSS with N - RSS idle) / N (KB of 1024 bytes). ``gc.collect()`` runs before each
  reading. The sessions are then hung up, billed and removed from the store.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterator
from typing import Any

SESSIONS = 1000
WARMUP = 20
#: sessions are set up 250 at a time (bench_setup measures bursts; this counts bytes)
BATCH = 250


def run(quick: bool) -> Iterator[dict[str, Any]]:
    """Run the child process and pass its result lines on (quick changes nothing)."""
    from bench._harness import run_child

    yield from run_child("bench.bench_memory", [], timeout=120 if quick else 300)


async def measure(reactor: Any, bench: Any) -> None:
    """The child's work: idle reading, 1,000 talking, second reading."""
    import gc
    import json

    from bench._harness import resident_bytes

    await bench.create_accounts(SESSIONS)
    warmup = await bench.setup_round(WARMUP)
    await bench.hangup_round(warmup.session_ids)
    await bench.sleep(0.5)
    gc.collect()
    idle = resident_bytes()
    session_ids: list[str] = []
    for first in range(0, SESSIONS, BATCH):
        batch = await bench.setup_round(BATCH, first=first)
        session_ids += batch.session_ids
    # the last sessions' store writes (persisted state, attempts) settle meanwhile
    await bench.sleep(1.0)
    talking = sum(1 for sid in session_ids if sid not in bench.ended)
    gc.collect()
    loaded = resident_bytes()
    await bench.hangup_round(session_ids, timeout=120)
    await bench.check_billing()
    for line in (
        {
            "bench": "memory_1000_sessions",
            "value": round(loaded / 2**20, 1),
            "unit": "MB",
            "sessions": talking,
            "idle_mb": round(idle / 2**20, 1),
        },
        {
            "bench": "memory_per_session",
            "value": round((loaded - idle) / SESSIONS / 1024, 1),
            "unit": "KB",
            "sessions": talking,
        },
    ):
        print(json.dumps(line), flush=True)
    if talking != SESSIONS:
        raise RuntimeError(f"only {talking} of {SESSIONS} sessions were talking when measured")


def main(argv: list[str]) -> None:
    """``--child``: the measuring process."""
    from bench._harness import child_main

    parser = argparse.ArgumentParser()
    parser.add_argument("--child", action="store_true", required=True)
    parser.parse_args(argv)
    child_main(measure)


if __name__ == "__main__":
    main(sys.argv[1:])
