"""Several daemons on one Redis: session owners, leases, forwarded commands, events.

Each session has an owner daemon (its ``[daemon] node_id``), recorded in the store with
an *epoch* when the session opens (:meth:`IStore.open_session`, which also counts it
among its account's sessions in flight on every daemon). The owner keeps a lease
(:meth:`IStore.renew_node`) every ``renew_interval`` seconds; when a daemon's lease has
run out (``lease`` seconds unrenewed) another one claims its sessions
(:meth:`IStore.claim_session`, atomic: a live owner keeps its session, a new owner gets
the next epoch) and reconciles them with the switch as a restart does
(:class:`~callbackd.engine.recovery.Recovery`). Every write of a session's state and its
end is *fenced* by the epoch (:meth:`IStore.save_session_as`,
:meth:`IStore.end_session_as`): a stale owner that wakes up finds its writes refused
and lets the session go; charges are keyed by CDR id, so a leg settled by both is
billed once.

Messages go through the store's message boxes (Redis Streams), read every
``poll_interval`` seconds: ``inbox:NODE`` (commands forwarded to a node),
``replies:NODE`` (their answers) and ``events`` (every session event with its
session's state, posted by the owner in the order of its steps). A daemon keeps the
states of the other daemons' sessions it heard of (:attr:`Cluster.mirror`) for
:meth:`~callbackd.engine.manager.SessionManager.state_of`, ``status`` and ``LIST``, and
hands their events to its subscribers once each, by the per-session ``seq``.
"""

from __future__ import annotations

import dataclasses
import json
import uuid
from collections.abc import Callable
from typing import Any, Protocol

from twisted.internet import defer
from twisted.internet.interfaces import IReactorTime
from twisted.internet.task import LoopingCall
from twisted.logger import Logger
from twisted.python.failure import Failure

from callbackd.config import ClusterConfig
from callbackd.core import session as machine
from callbackd.core.model import CDR
from callbackd.engine.errors import CallbackRefused, UnknownSession
from callbackd.store.interface import IStore

__all__ = ["EVENTS_BOX", "Cluster", "ClusterEngine"]

log = Logger(namespace="callbackd.engine")

#: the message box every session event goes to
EVENTS_BOX = "events"
#: about how many messages a box keeps (events: the last of every daemon's sessions)
_KEEP_EVENTS = 10000
_KEEP_COMMANDS = 1000
#: messages read per box per poll
_READ = 1000


class ClusterEngine(Protocol):
    """What the cluster needs of its session manager."""

    node_id: str

    def state_of(self, session_id: str) -> machine.SessionState | None: ...

    def is_local(self, session_id: str) -> bool: ...

    def run_command(self, op: str, session_id: str, args: list[Any]) -> defer.Deferred[Any]: ...

    def deliver_remote(self, event: machine.SessionEvent, username: str) -> None: ...

    def disown(self, session_id: str) -> None: ...

    def recover(self) -> defer.Deferred[None]: ...


def _inbox(node_id: str) -> str:
    return f"inbox:{node_id}"


def _replies(node_id: str) -> str:
    return f"replies:{node_id}"


class Cluster:
    """This daemon's part of several (see the module docstring)."""

    def __init__(
        self, clock: IReactorTime, store: IStore, node_id: str, settings: ClusterConfig
    ) -> None:
        self.clock = clock
        self.store = store
        self.node_id = node_id
        self.settings = settings
        self.engine: ClusterEngine | None = None
        #: the epoch this daemon holds each of its sessions at
        self.epochs: dict[str, int] = {}
        #: the last known state of the other daemons' sessions
        self.mirror: dict[str, machine.SessionState] = {}
        #: per other daemon's session, the seq of the last event handed on
        self.seen: dict[str, int] = {}
        self._pending: dict[str, defer.Deferred[dict[str, Any]]] = {}
        self._marks: dict[str, str] = {}
        self._loops: list[LoopingCall] = []
        self._polling = False
        self._renewing = False
        self._ready = False

    # -- life cycle ---------------------------------------------------------------------

    def start(self, engine: ClusterEngine) -> None:
        """Start renewing the lease and reading the boxes (the first renewal takes the
        lease, notes where the boxes are and learns the other daemons' sessions)."""
        self.engine = engine
        for interval, tick in (
            (self.settings.poll_interval, self._poll),
            (self.settings.renew_interval, self._renew),
        ):
            loop = LoopingCall(tick)
            loop.clock = self.clock
            loop.start(interval, now=tick == self._renew)
            self._loops.append(loop)

    @property
    def ready(self) -> bool:
        """Whether the lease was taken and the boxes' places noted once."""
        return self._ready

    async def _start(self) -> None:
        await self.store.renew_node(self.node_id, self.settings.lease)
        for box in (EVENTS_BOX, _inbox(self.node_id), _replies(self.node_id)):
            if box not in self._marks:
                # what was posted before this daemon started is not for it
                self._marks[box] = await self.store.last_message_id(box)
        await self._learn_sessions()
        self._ready = True

    def stop(self) -> None:
        """Stop polling and renewing (the lease runs out: the sessions are taken over)."""
        for loop in self._loops:
            if loop.running:
                loop.stop()
        self._loops = []
        pending, self._pending = self._pending, {}
        for d in pending.values():
            d.cancel()

    async def _learn_sessions(self) -> None:
        """Mirror the sessions of the other daemons in flight now."""
        for sid in await self.store.list_sessions():
            if self._engine.is_local(sid) or sid in self.mirror:
                continue
            owner = await self.store.session_owner(sid)
            if owner is None or owner[0] == self.node_id:
                continue
            data = await self.store.load_session(sid)
            if data is not None:
                state = machine.SessionState.from_dict(data)
                self.mirror[sid] = state
                self.seen[sid] = max(self.seen.get(sid, 0), state.seq)

    @property
    def _engine(self) -> ClusterEngine:
        assert self.engine is not None, "the cluster is not started"
        return self.engine

    # -- ownership ----------------------------------------------------------------------

    def open(self, session_id: str, username: str, limit: int) -> defer.Deferred[bool]:
        """Own a new session; False when its account has ``limit`` sessions in flight."""

        def opened(epoch: int) -> bool:
            if epoch:
                self.epochs[session_id] = epoch
            return bool(epoch)

        d = self.store.open_session(session_id, self.node_id, username, limit)
        return d.addCallback(opened)

    def claim(self, session_id: str) -> defer.Deferred[bool]:
        """Own a session loaded from the store, unless a live daemon holds it."""

        def claimed(epoch: int) -> bool:
            if not epoch:
                return False
            self.epochs[session_id] = epoch
            self.mirror.pop(session_id, None)
            return True

        return self.store.claim_session(session_id, self.node_id).addCallback(claimed)

    def save_session(self, session_id: str, data: dict[str, Any]) -> defer.Deferred[None]:
        """Save the session's state, fenced by its epoch; refused: the session goes."""
        epoch = self.epochs.get(session_id)
        if epoch is None:
            return defer.succeed(None)  # not ours (any more)
        d = self.store.save_session_as(session_id, data, self.node_id, epoch)
        return d.addCallback(self._fenced, session_id, "save")

    def end_session(self, session_id: str, cdr: CDR, origin: str) -> defer.Deferred[None]:
        """End the session in the store, fenced by its epoch."""
        epoch = self.epochs.pop(session_id, None)
        if epoch is None:
            return defer.succeed(None)
        d = self.store.end_session_as(session_id, cdr, origin, self.node_id, epoch)
        return d.addCallback(self._fenced, session_id, "end")

    def _fenced(self, done: bool, session_id: str, what: str) -> None:
        if done:
            return
        log.warn(
            "session {session_id}: {what} refused, another daemon owns it now; letting it go",
            session_id=session_id,
            what=what,
        )
        self.epochs.pop(session_id, None)
        if self._engine.is_local(session_id):
            self._engine.disown(session_id)

    def _renew(self) -> defer.Deferred[None] | None:
        if self._renewing:
            return None
        self._renewing = True

        def done(result: object) -> None:
            self._renewing = False

        def failed(failure: Failure) -> None:
            # at start (the store still connecting) that is routine, not a warning
            emit = log.warn if self._ready else log.info
            emit("cluster: lease renewal failed: {why}", why=failure.getErrorMessage())

        d = defer.ensureDeferred(self._renew_and_take_over())
        return d.addErrback(failed).addBoth(done)

    async def _renew_and_take_over(self) -> None:
        if not self._ready:
            await self._start()
            await self._take_over()
            return
        held = await self.store.renew_node(self.node_id, self.settings.lease)
        if not held:
            log.warn("cluster: this daemon's lease had run out; checking its sessions")
            await self._check_ownership()
        await self._take_over()

    async def _check_ownership(self) -> None:
        """After a lapse of the lease: let go of the sessions another daemon took."""
        for sid, epoch in list(self.epochs.items()):
            if await self.store.session_owner(sid) != (self.node_id, epoch):
                self._fenced(False, sid, "ownership check")

    async def _take_over(self) -> None:
        """Claim the sessions of the daemons whose lease ran out; reconcile them."""
        taken = 0
        for sid in await self.store.orphaned_sessions(self.node_id):
            if not await self.claim(sid):
                continue
            data = await self.store.load_session(sid)
            if data is None:
                continue
            state = machine.SessionState.from_dict(data)
            previous = state.owner
            # the events the old owner sent after its last save keep their numbers
            state = dataclasses.replace(
                state, owner=self.node_id, seq=max(state.seq, self.seen.pop(sid, 0))
            )
            await self.store.save_session_as(sid, state.to_dict(), self.node_id, self.epochs[sid])
            log.warn(
                "session {session_id}: taken over from {previous} (its lease ran out)",
                session_id=sid,
                previous=previous or "?",
            )
            taken += 1
        if taken:
            await self._engine.recover()

    # -- forwarded commands ---------------------------------------------------------------

    def forward(self, session_id: str, op: str, args: list[Any]) -> defer.Deferred[None]:
        """Have the session's owner run ``op``; CallbackRefused as the owner's, or
        ``refusal.owner_unreachable`` when it does not answer in ``reply_timeout``."""
        return defer.ensureDeferred(self._forward(session_id, op, args))

    async def _forward(self, session_id: str, op: str, args: list[Any]) -> None:
        owner = await self.store.session_owner(session_id)
        if owner is None or owner[0] == self.node_id:
            raise UnknownSession.of("refusal.unknown_session", session=session_id)
        request_id = uuid.uuid4().hex
        message: dict[str, Any] = {"id": request_id, "from": self.node_id, "op": op}
        message.update(sid=session_id, args=args)
        waiting: defer.Deferred[dict[str, Any]] = defer.Deferred()
        self._pending[request_id] = waiting
        try:
            await self.store.post_message(_inbox(owner[0]), json.dumps(message), _KEEP_COMMANDS)
            waiting.addTimeout(self.settings.reply_timeout, self.clock)
            reply = await waiting
        except (defer.TimeoutError, defer.CancelledError):
            log.warn(
                "session {session_id}: {op} forwarded to {owner}: no answer",
                session_id=session_id,
                op=op,
                owner=owner[0],
            )
            raise CallbackRefused.of("refusal.owner_unreachable") from None
        finally:
            self._pending.pop(request_id, None)
        if reply.get("state"):
            self._mirror(machine.SessionState.from_dict(reply["state"]))
        if reply.get("error") is not None:
            error = reply["error"]
            kind = UnknownSession if error["code"] == "refusal.unknown_session" else CallbackRefused
            raise kind(error["message"], error["code"], **error["params"])

    def _mirror(self, state: machine.SessionState) -> None:
        known = self.mirror.get(state.session_id)
        if state.finished:
            self.mirror.pop(state.session_id, None)
        elif known is None or state.seq >= known.seq:
            self.mirror[state.session_id] = state

    async def _serve(self, message: dict[str, Any]) -> None:
        """Run a command forwarded to this daemon; answer the requester."""
        sid = str(message["sid"])
        reply: dict[str, Any] = {"id": message["id"], "error": None}
        try:
            await self._engine.run_command(str(message["op"]), sid, list(message["args"]))
        except CallbackRefused as e:
            reply["error"] = {"code": e.code, "message": str(e), "params": e.params}
        except Exception:
            log.failure("cluster: forwarded {op} of {session_id}", op=message["op"], session_id=sid)
            reply["error"] = {"code": "", "message": "internal error", "params": {}}
        state = self._engine.state_of(sid) if self._engine.is_local(sid) else None
        reply["state"] = None if state is None else state.to_dict()
        box = _replies(str(message["from"]))
        await self.store.post_message(box, json.dumps(reply), _KEEP_COMMANDS)

    # -- events -------------------------------------------------------------------------

    def publish(self, event: machine.SessionEvent, state: machine.SessionState | None) -> None:
        """Post one of this daemon's session events (and the state it left) to the others."""
        body = {
            "node": self.node_id,
            "event": event.to_dict(),
            "state": None if state is None else state.to_dict(),
        }

        def failed(failure: Failure) -> None:
            log.warn(
                "session {session_id}: event {seq} not published: {why}",
                session_id=event.session_id,
                seq=event.seq,
                why=failure.getErrorMessage(),
            )

        self.store.post_message(EVENTS_BOX, json.dumps(body), _KEEP_EVENTS).addErrback(failed)

    def _heard(self, body: dict[str, Any]) -> None:
        """An event of the events box: hand it on once if it is another daemon's."""
        if body.get("node") == self.node_id:
            return
        event = machine.SessionEvent(**body["event"])
        sid = event.session_id
        if self._engine.is_local(sid) or event.seq <= self.seen.get(sid, 0):
            return
        self.seen[sid] = event.seq
        username = ""
        ended = event.kind == "session_ended"
        if body.get("state"):
            state = machine.SessionState.from_dict(body["state"])
            username = state.username
            if ended:
                # kept while the end is handed on: its subscribers read its watchers
                self.mirror[sid] = state
            else:
                self._mirror(state)
        try:
            self._engine.deliver_remote(event, username)
        finally:
            if ended:
                self.mirror.pop(sid, None)
                self.seen.pop(sid, None)

    # -- polling ------------------------------------------------------------------------

    def _poll(self) -> defer.Deferred[None] | None:
        if self._polling or not self._ready:
            return None
        self._polling = True

        def done(result: object) -> None:
            self._polling = False

        def failed(failure: Failure) -> None:
            log.debug("cluster: poll failed: {why}", why=failure.getErrorMessage())

        d = defer.ensureDeferred(self._read_all())
        return d.addErrback(failed).addBoth(done)

    async def _read_all(self) -> None:
        handlers: list[tuple[str, Callable[[dict[str, Any]], Any]]] = [
            (_replies(self.node_id), self._answered),
            (_inbox(self.node_id), self._request),
            (EVENTS_BOX, self._heard),
        ]
        for box, handle in handlers:
            for message_id, text in await self.store.read_messages(box, self._marks[box], _READ):
                self._marks[box] = message_id
                try:
                    handle(json.loads(text))
                except Exception:
                    log.failure("cluster: message {id} of {box}", id=message_id, box=box)

    def _answered(self, reply: dict[str, Any]) -> None:
        waiting = self._pending.pop(str(reply.get("id")), None)
        if waiting is not None and not waiting.called:
            waiting.callback(reply)

    def _request(self, message: dict[str, Any]) -> None:
        def failed(failure: Failure) -> None:
            log.failure("cluster: cannot answer {id}", failure, id=message.get("id"))

        defer.ensureDeferred(self._serve(message)).addErrback(failed)
