"""The daemon's root service: named children started in order, stopped in reverse.

Twisted's ``MultiService`` starts every child at once and ignores Deferreds a
child's start may return. Our children depend on each other (the store needs
the embedded redis-server, the AMI client needs the simulated Asterisk's port),
so :class:`StagedMultiService` starts them one after the other, waiting for each
to be ready. If one cannot start, the ones already started are stopped again,
the failure is logged with the child's name, and ``started`` errbacks: the
daemon fails loudly instead of half-starting.
"""

from __future__ import annotations

from typing import Any

from twisted.application import service
from twisted.internet import defer
from twisted.internet.endpoints import serverFromString
from twisted.logger import Logger
from twisted.python.failure import Failure

__all__ = ["ChildFailedToStart", "ListeningPort", "StagedMultiService"]


class ChildFailedToStart(Exception):
    """A child service could not start; the message names it and says why."""


class StagedMultiService(service.MultiService):
    """A MultiService whose children start sequentially and may start asynchronously.

    A child's ``startService`` may return a Deferred; the next child starts when
    it fires. ``started`` fires when every child runs, or errbacks with
    :class:`ChildFailedToStart` after the started ones were stopped again.
    """

    log = Logger()

    def __init__(self) -> None:
        super().__init__()
        self.started: defer.Deferred[None] = defer.Deferred()
        self._started_children: list[service.IService] = []
        self._starting: defer.Deferred[None] | None = None

    def privilegedStartService(self) -> None:
        # Children do everything (listening included) in their turn, in
        # startService: a listener must not open before what it serves is ready.
        service.Service.privilegedStartService(self)

    def startService(self) -> defer.Deferred[None]:  # type: ignore[override]
        service.Service.startService(self)
        self._starting = defer.ensureDeferred(self._start_children())
        return self._starting

    async def _start_children(self) -> None:
        for child in list(self):
            name = child.name or repr(child)
            self.log.info("starting {child}", child=name)
            try:
                await defer.maybeDeferred(child.startService)
            except Exception as e:
                failure = Failure()
                self.log.failure("{child} cannot start", failure, child=name)
                await self._stop_started()
                err = ChildFailedToStart(f"{name} cannot start: {_describe(e)}")
                self.started.errback(err)
                return
            self._started_children.append(child)
        self.log.info("all services running")
        self.started.callback(None)

    async def _stop_started(self) -> None:
        while self._started_children:
            child = self._started_children.pop()
            try:
                await defer.maybeDeferred(child.stopService)
            except Exception:
                self.log.failure("{child} failed to stop", child=child.name)

    def stopService(self) -> defer.Deferred[None]:  # type: ignore[override]
        service.Service.stopService(self)
        return defer.ensureDeferred(self._stop())

    async def _stop(self) -> None:
        if self._starting is not None and not self._starting.called:
            # Stopping while still starting: let the start finish first so that
            # nothing keeps running behind our back.
            await self._starting
        await self._stop_started()


class ListeningPort:
    """A service's listener on a strports endpoint: its bound port, once known.

    :meth:`listen` starts listening and fires :attr:`ready` with the bound port (or
    its failure); :meth:`stop` stops listening, if it was.
    """

    def __init__(self, log: Logger, what: str) -> None:
        self._log = log
        self._what = what
        self.port: int | None = None
        self.ready: defer.Deferred[int] = defer.Deferred()
        self._listening: Any = None

    def listen(self, reactor: Any, description: str, factory: Any) -> None:
        """Listen on ``description`` with ``factory``; :attr:`ready` fires with the port."""
        d = serverFromString(reactor, description).listen(factory)
        d.addCallback(self._listened)
        d.chainDeferred(self.ready)

    def _listened(self, listening: Any) -> int:
        self._listening = listening
        self.port = listening.getHost().port
        self._log.info("{what} listening on port {port}", what=self._what, port=self.port)
        return self.port

    def stop(self) -> defer.Deferred[Any]:
        """Stop listening; fire when the port is closed (at once when it was not open)."""
        listening, self._listening = self._listening, None
        if listening is None:
            return defer.succeed(None)
        return defer.maybeDeferred(listening.stopListening)


def _describe(e: BaseException) -> str:
    text = str(e)
    return f"{type(e).__name__}: {text}" if text else type(e).__name__
