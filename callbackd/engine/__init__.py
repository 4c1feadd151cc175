"""The engine: runs callback sessions by carrying out the core machine's effects.

Its parts, each with one owner (drawn in ``docs/architecture.rst``):

- :mod:`~callbackd.engine.manager`: :class:`SessionManager`, the public API and the
  step loop with its effect table and switch-event table;
- :mod:`~callbackd.engine.sessions`: the sessions in flight, by id and by account;
- :mod:`~callbackd.engine.timers`: the sessions' named timers on the clock;
- :mod:`~callbackd.engine.legs`: leg resolution (addresses, blocked prefixes,
  gateways, dial strings, provider names);
- :mod:`~callbackd.engine.providers`: :class:`Provider` and the provider statistics
  (attempt windows, channels in use);
- :mod:`~callbackd.engine.accounts`: the account book (cached accounts, ledgers, the
  change feed's generations, pending charges, the midnight roll, shared credit);
- :mod:`~callbackd.engine.writer`: the session writer (per-turn saves, ordered writes,
  charges, CDRs, end of session);
- :mod:`~callbackd.engine.recovery`: the sessions in flight taken back after a restart
  or a switch reconnect;
- :mod:`~callbackd.engine.service`: :class:`EngineService`, the daemon's service.
"""

from callbackd.engine.errors import CallbackRefused, UnknownSession
from callbackd.engine.manager import SessionManager
from callbackd.engine.providers import Provider
from callbackd.engine.service import EngineService

__all__ = [
    "CallbackRefused",
    "EngineService",
    "Provider",
    "SessionManager",
    "UnknownSession",
]
