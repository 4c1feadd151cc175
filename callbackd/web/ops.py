"""Operations over HTTP: the health check (``/healthz``) and Prometheus metrics (``/metrics``).

Components register named health checks with a :class:`HealthRegistry`; a check
is a callable returning ``(ok, detail)`` or a Deferred of that. ``/healthz`` runs
every check at once, each under a timeout, and answers 200 when all are ok and
503 otherwise; a check registered with ``counted=False`` (one switch of several) is
reported (``"counted": false``) but does not make the daemon unhealthy. A check that
raises, fails, returns nonsense or is too slow is simply not ok: the request is always
answered, and never blocks the reactor.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Union

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from twisted.internet import defer
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web import resource, server

__all__ = [
    "CheckResult",
    "HealthCheck",
    "HealthRegistry",
    "HealthReport",
    "HealthResource",
    "MetricsResource",
]

log = Logger(namespace="callbackd.web.ops")

CheckOutcome = tuple[bool, str]
#: a health check: ``(ok, detail)`` now, or a fresh Deferred of it (cancelled on timeout)
HealthCheck = Callable[[], Union[CheckOutcome, "defer.Deferred[CheckOutcome]"]]


@dataclass(frozen=True)
class CheckResult:
    """The outcome of one health check."""

    ok: bool
    detail: str


@dataclass(frozen=True)
class HealthReport:
    """The outcome of every health check: ok only if each one counted is."""

    checks: dict[str, CheckResult]
    #: the checks reported but not counted
    uncounted: frozenset[str] = frozenset()

    @property
    def ok(self) -> bool:
        """True when every counted check is ok (also when there are none)."""
        return all(c.ok for name, c in self.checks.items() if name not in self.uncounted)

    def to_json(self) -> dict[str, Any]:
        """``{"status": "ok"|"unhealthy", "checks": {name: {"ok": ..., "detail": ...}}}``
        (and ``"counted": false`` in a check not counted)."""
        checks: dict[str, Any] = {}
        for name, c in sorted(self.checks.items()):
            checks[name] = {"ok": c.ok, "detail": c.detail}
            if name in self.uncounted:
                checks[name]["counted"] = False
        return {"status": "ok" if self.ok else "unhealthy", "checks": checks}


class HealthRegistry:
    """Named health checks that components register, run together under a timeout."""

    def __init__(self, clock: IReactorTime, timeout: float = 5.0) -> None:
        self._clock = clock
        self.timeout = timeout
        self._checks: dict[str, HealthCheck] = {}
        self._uncounted: set[str] = set()

    def register(self, name: str, check: HealthCheck, *, counted: bool = True) -> None:
        """Add the check ``name``; a name can be registered once. A check not
        ``counted`` is reported but leaves the daemon healthy when it fails."""
        if name in self._checks:
            raise ValueError(f"health check {name!r} is already registered")
        self._checks[name] = check
        if not counted:
            self._uncounted.add(name)

    def unregister(self, name: str) -> None:
        """Remove the check ``name`` (nothing happens if there is none)."""
        self._checks.pop(name, None)
        self._uncounted.discard(name)

    @property
    def names(self) -> list[str]:
        """The registered checks' names, sorted."""
        return sorted(self._checks)

    def run(self) -> defer.Deferred[HealthReport]:
        """Run every check at once; fires with the report, never errbacks."""
        names = list(self._checks)
        runs = [self._run_one(name, self._checks[name]) for name in names]

        def report(results: list[CheckResult]) -> HealthReport:
            return HealthReport(dict(zip(names, results)), frozenset(self._uncounted))

        return defer.gatherResults(runs).addCallback(report)

    def _run_one(self, name: str, check: HealthCheck) -> defer.Deferred[CheckResult]:
        d: defer.Deferred[Any] = defer.maybeDeferred(check)
        d.addTimeout(self.timeout, self._clock)
        d.addCallback(_to_result)
        d.addErrback(self._failed, name)
        return d

    def _failed(self, failure: Failure, name: str) -> CheckResult:
        if failure.check(defer.TimeoutError):
            return CheckResult(False, f"no answer within {self.timeout:g}s")
        log.failure("health check {check} failed", failure, check=name)
        return CheckResult(False, f"check failed: {_describe(failure.value)}")


def _to_result(value: object) -> CheckResult:
    if (
        isinstance(value, tuple)
        and len(value) == 2
        and isinstance(value[0], bool)
        and isinstance(value[1], str)
    ):
        return CheckResult(value[0], value[1])
    raise TypeError(f"a health check returned {type(value).__name__}, not (bool, str)")


def _describe(e: BaseException | None) -> str:
    if e is None:
        return "unknown error"
    text = str(e)
    return f"{type(e).__name__}: {text}" if text else type(e).__name__


class HealthResource(resource.Resource):
    """``/healthz``: the health report as JSON; 200 when healthy, else 503."""

    isLeaf = True

    def __init__(self, registry: HealthRegistry) -> None:
        super().__init__()
        self._registry = registry

    def render_GET(self, request: server.Request) -> int:
        gone: list[object] = []  # non-empty once the request is finished or the client left
        request.notifyFinish().addBoth(gone.append)

        def answer(report: HealthReport) -> None:
            if gone:
                return
            request.setResponseCode(200 if report.ok else 503)
            request.setHeader(b"content-type", b"application/json")
            request.setHeader(b"cache-control", b"no-store")
            request.write(json.dumps(report.to_json(), sort_keys=True).encode() + b"\n")
            request.finish()

        def broken(failure: Failure) -> None:
            log.failure("/healthz could not answer", failure)
            if gone:
                return
            request.setResponseCode(500)
            request.setHeader(b"content-type", b"application/json")
            request.write(b'{"status": "unhealthy", "checks": {}}\n')
            request.finish()

        self._registry.run().addCallback(answer).addErrback(broken)
        return server.NOT_DONE_YET


class MetricsResource(resource.Resource):
    """``/metrics``: Prometheus text exposition of one (private) registry."""

    isLeaf = True

    def __init__(self, registry: CollectorRegistry) -> None:
        super().__init__()
        self._registry = registry

    def render_GET(self, request: server.Request) -> bytes:
        request.setHeader(b"content-type", CONTENT_TYPE_LATEST.encode("ascii"))
        request.setHeader(b"cache-control", b"no-store")
        return generate_latest(self._registry)
