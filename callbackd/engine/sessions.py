"""The sessions in flight: their states by id, indexed by account.

One owner (:class:`~callbackd.engine.manager.SessionManager`) puts and drops states;
the account book, the recovery and the writer read them.
"""

from __future__ import annotations

import string
from collections.abc import Iterator

from callbackd.core import session as machine

__all__ = ["SessionTable"]

_BASE36 = string.digits + string.ascii_lowercase
#: counter values per millisecond (4 base-36 digits)
_COUNTER_SPAN = 36**4


def _base36(number: int) -> str:
    digits = []
    while True:
        number, digit = divmod(number, 36)
        digits.append(_BASE36[digit])
        if not number:
            return "".join(reversed(digits))


class SessionTable:
    """The states of the sessions in flight, and per account its session ids."""

    def __init__(self, node_id: str) -> None:
        self.node_id = node_id
        self._states: dict[str, machine.SessionState] = {}
        #: per account its session ids, oldest first
        self._by_account: dict[str, dict[str, None]] = {}
        #: per switch the number of sessions tracked (the pool's placement load)
        self._on_switch: dict[str, int] = {}
        self._counter = 0

    def new_id(self, now: float) -> str:
        """A session id unique to this node: node id, milliseconds, a counter."""
        self._counter = (self._counter + 1) % _COUNTER_SPAN
        return f"{self.node_id}{_base36(int(now * 1000))}{_base36(self._counter)}"

    def __contains__(self, session_id: object) -> bool:
        return session_id in self._states

    def __len__(self) -> int:
        return len(self._states)

    def __iter__(self) -> Iterator[str]:
        return iter(list(self._states))

    def get(self, session_id: str) -> machine.SessionState | None:
        """The session's state (finished or not), or None."""
        return self._states.get(session_id)

    def put(self, session_id: str, state: machine.SessionState) -> None:
        """Track a session's (new) state."""
        if session_id not in self._states:
            self._by_account.setdefault(state.username, {})[session_id] = None
            self._on_switch[state.switch] = self._on_switch.get(state.switch, 0) + 1
        self._states[session_id] = state

    def drop(self, session_id: str) -> machine.SessionState | None:
        """Stop tracking a session; its last state, or None if it was not tracked."""
        state = self._states.pop(session_id, None)
        if state is not None:
            mine = self._by_account.get(state.username)
            if mine is not None:
                mine.pop(session_id, None)
                if not mine:
                    del self._by_account[state.username]
            self._on_switch[state.switch] -= 1
        return state

    def accounts(self) -> list[str]:
        """The accounts with sessions tracked."""
        return list(self._by_account)

    def live(self, username: str) -> list[tuple[str, machine.SessionState]]:
        """The account's unfinished sessions (id, state), oldest first."""
        states = self._states
        return [
            (sid, states[sid])
            for sid in self._by_account.get(username, ())
            if not states[sid].finished
        ]

    def ids_of(self, username: str) -> list[str]:
        """The ids of the account's unfinished sessions, oldest first."""
        states = self._states
        return [sid for sid in self._by_account.get(username, ()) if not states[sid].finished]

    # -- switches ------------------------------------------------------------------

    def count_on(self, switch: str) -> int:
        """The number of sessions tracked on the switch called ``switch``."""
        return self._on_switch.get(switch, 0)

    def ids_on(self, switch: str) -> list[str]:
        """The ids of the sessions tracked on the switch called ``switch``."""
        states = self._states
        return [sid for sid in list(states) if states[sid].switch == switch]
