"""The sliding-window throttle the chat and SMS fronts count hits with."""

from __future__ import annotations

from twisted.internet.task import Clock

from callbackd.fronts.throttle import Throttle


def test_a_key_gets_limit_hits_per_window():
    """The hits past the limit are refused until the first ones leave the window."""
    clock = Clock()
    throttle = Throttle(clock, 2, 10.0)
    assert [throttle.hit("a"), throttle.hit("a"), throttle.hit("a")] == [True, True, False]
    assert throttle.hit("b")
    clock.advance(10)
    assert throttle.hit("a")


def test_a_cleared_key_starts_again():
    """clear forgets a key's hits; full counts recorded hits without adding one."""
    throttle = Throttle(Clock(), 1, 10.0)
    throttle.record("a")
    assert throttle.full("a") and throttle.full("a")
    throttle.clear("a")
    assert not throttle.full("a")


def test_throttle_forgets_keys_whose_window_passed():
    """The throttle's memory stays bounded: old keys are swept."""
    clock = Clock()
    throttle = Throttle(clock, 2, 1.0)
    for n in range(Throttle.SWEEP_EVERY - 1):
        throttle.hit(n)
    clock.advance(2)
    throttle.hit("new")
    assert len(throttle) == 1
