"""The one back-off of the daemon's reconnects and restarts: Twisted's, with a cap that holds.

:func:`twisted.application.internet.backoffPolicy` grows the delay by ``factor`` up to
``maxDelay`` and then *adds* ``jitter()``, so its delays can pass ``maxDelay``.
:func:`capped_backoff` gives it a jitter of at most a quarter of the first delay and a
``maxDelay`` lowered by that much, so no delay, jitter included, exceeds ``cap``. Used
by the AMI client's reconnect, the Redis client's reconnect and the embedded
redis-server's restart.
"""

from __future__ import annotations

import random
from collections.abc import Callable

from twisted.application.internet import backoffPolicy

__all__ = ["JITTER_SHARE", "capped_backoff"]

#: the jitter's largest share of the first delay
JITTER_SHARE = 0.25


def capped_backoff(
    initial: float,
    cap: float,
    *,
    factor: float = 2.0,
    jitter: Callable[[], float] = random.random,
) -> Callable[[int], float]:
    """Seconds to wait after ``failures`` failed attempts in a row (1, 2, ...).

    ``initial`` after the first failure, ``factor`` times more after each further one,
    never more than ``cap`` (jitter included); ``jitter`` returns a number in [0, 1)
    and adds up to :data:`JITTER_SHARE` of the first delay, so that clients that lost
    the same server do not all come back at the same instant.
    """
    if cap <= 0 or initial <= 0:
        raise ValueError(f"back-off delays must be positive (initial {initial}, cap {cap})")
    spread = JITTER_SHARE * min(initial, cap)
    ceiling = cap - spread
    policy = backoffPolicy(
        initialDelay=min(initial, ceiling),
        maxDelay=ceiling,
        factor=factor,
        jitter=lambda: spread * jitter(),
    )

    def delay(failures: int) -> float:
        # backoffPolicy's first delay (attempt 0) is initialDelay itself
        return policy(max(0, failures - 1))

    return delay
