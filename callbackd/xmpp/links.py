"""The chat front's links (bare JID -> username), kept in the store, cached while that is safe.

Every chat command needs the account its JID is linked to. :class:`LinkCache` reads it
from the store (``account_for_jid``) and keeps the answer, linked or not, only while
the store's *change feed* (:meth:`IStore.watch <callbackd.store.interface.IStore.watch>`)
is live: the store tells every link and unlink on the feed under the accounts the JID
moved between (with the origin :data:`~callbackd.store.interface.LINK_ORIGIN`), so an
``UNLINK`` in chat or ``callbackd-admin unlink-jid`` in any process reaches every
daemon whose feed is live at once.

- A link change of an account drops the JIDs cached as linked to it, and the JIDs
  cached as not linked (the change may be their link: the feed names the account, not
  the JID). Other changes (the engine's charges, top-ups) leave the links kept.
- A read that a change, a link or unlink of its own, or the feed's loss or return
  overtook is used once, not kept (the change counter and the feed's *epoch*, as
  :class:`~callbackd.engine.accounts.AccountBook` does for accounts).
- While the feed is down nothing is kept: every command reads the store.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Final

from twisted.internet import defer
from twisted.python.failure import Failure

from callbackd.store import records
from callbackd.store.interface import LINK_ORIGIN, InvalidArgument

__all__ = ["LinkCache"]

#: where a read started: (the change counter, the feed's epoch)
_ReadMark = tuple[int, int]


class LinkCache:
    """The chat front's :class:`~callbackd.xmpp.chat.Links`, kept in the store.

    :meth:`start` watches the store's change feed (nothing is cached before); a JID the
    store would not take (not ``user@domain``) is not linked.
    """

    #: JIDs kept (the least recently used go first)
    MAX_ENTRIES: Final = 100_000

    def __init__(self, store: Any, max_entries: int = MAX_ENTRIES) -> None:
        self.store = store
        self.max_entries = max_entries
        #: bare JID -> the username it is linked to, None: not linked (LRU order)
        self._links: dict[str, str | None] = {}
        #: per username the JIDs kept as linked to it; under None, those kept as not linked
        self._jids: dict[str | None, set[str]] = {}
        #: counts every change told and every link or unlink of ours
        self._changes = 0
        #: per username the count at its last change, kept while reads are under way
        self._changed_at: dict[str, int] = {}
        #: per JID the count at our last link or unlink of it, kept as long
        self._moved_at: dict[str, int] = {}
        self._reading = 0
        self._epoch = 0
        self._live = False
        self._stop_watching: Callable[[], None] | None = None

    # -- life cycle ---------------------------------------------------------------------

    def start(self) -> None:
        """Watch the store's change feed: links are kept while it is live."""
        if self._stop_watching is None:
            self._stop_watching = self.store.watch(self._account_changed, self._feed_state)

    def stop(self) -> None:
        """Stop watching and forget every link kept."""
        if self._stop_watching is not None:
            self._stop_watching()
            self._stop_watching = None
        self._feed_state(False)

    # -- views --------------------------------------------------------------------------

    def cached(self, jid: str) -> bool:
        """Whether the link of ``jid`` is kept (no store read for its next command)."""
        return _bare(jid) in self._links

    def __len__(self) -> int:
        return len(self._links)

    # -- Links --------------------------------------------------------------------------

    def account_for(self, jid: str) -> defer.Deferred[str | None]:
        """The username ``jid`` is linked to, or None: kept, else read from the store."""
        bare = _bare(jid)
        if bare is None:
            return defer.succeed(None)
        if bare in self._links:
            username = self._links.pop(bare)
            self._links[bare] = username
            return defer.succeed(username)
        read = (self._changes, self._epoch)
        self._reading += 1
        d = defer.maybeDeferred(self.store.account_for_jid, bare)
        d.addBoth(self._read_done)
        d.addCallback(self._keep, bare, read)
        d.addErrback(_not_a_user)
        return d

    def link(self, jid: str, username: str) -> defer.Deferred[None]:
        """Link ``jid`` to ``username`` in the store; its next command reads it again."""
        self._moved(jid)
        d = defer.maybeDeferred(self.store.link_jid, jid, username)
        d.addBoth(self._moved_back, jid)
        return d

    def unlink(self, jid: str) -> defer.Deferred[None]:
        """Forget the link of ``jid`` in the store, and here."""
        self._moved(jid)
        d = defer.maybeDeferred(self.store.unlink_jid, jid)
        d.addBoth(self._moved_back, jid)
        d.addCallback(lambda _: None)
        return d

    # -- keeping ------------------------------------------------------------------------

    def _read_done(self, result: Any) -> Any:
        self._reading -= 1
        return result

    def _keep(self, username: str | None, bare: str, read: _ReadMark) -> str | None:
        """Keep what the store said if nothing that could change it happened meanwhile."""
        changes, epoch = read
        if not self._live or epoch != self._epoch:
            return username
        if username is None:
            overtaken = self._changes != changes  # any change may have been its link
        else:
            overtaken = self._changed_at.get(username, 0) > changes
        if not overtaken and self._moved_at.get(bare, 0) <= changes:
            self._links[bare] = username
            self._jids.setdefault(username, set()).add(bare)
            if len(self._links) > self.max_entries:
                self._forget_jid(next(iter(self._links)))
        self._tidy()
        return username

    def _tidy(self) -> None:
        """With no read under way, the counts of past changes serve nothing."""
        if not self._reading:
            self._changed_at.clear()
            self._moved_at.clear()

    def _forget_jid(self, bare: str) -> None:
        if bare not in self._links:
            return
        username = self._links.pop(bare)
        jids = self._jids.get(username)
        if jids is not None:
            jids.discard(bare)
            if not jids:
                del self._jids[username]

    def _forget_account(self, username: str | None) -> None:
        for bare in self._jids.pop(username, ()):
            self._links.pop(bare, None)

    def _moved(self, jid: str) -> None:
        """A link or unlink of ours: the JID's link is read again; no read under way is kept."""
        bare = _bare(jid)
        if bare is not None:
            self._changes += 1
            self._moved_at[bare] = self._changes
            self._forget_jid(bare)

    def _moved_back(self, result: Any, jid: str) -> Any:
        # the store has answered: a read that started meanwhile may have seen the old link
        self._moved(jid)
        self._tidy()
        return result

    # -- the change feed ----------------------------------------------------------------

    def _account_changed(self, username: str, origin: str) -> None:
        """The change feed: a JID was linked to the account or unlinked from it."""
        if origin != LINK_ORIGIN:
            return  # a charge, a top-up, an update: the links are as they were
        self._changes += 1
        if self._reading:
            self._changed_at[username] = self._changes
        self._forget_account(username)
        self._forget_account(None)  # the change may be the link of one of them

    def _feed_state(self, live: bool) -> None:
        """The feed came up or went down: changes may have been missed; forget everything."""
        self._epoch += 1
        self._live = live
        self._links.clear()
        self._jids.clear()


def _bare(jid: str) -> str | None:
    """The bare JID as the store keys it; None for one it would refuse."""
    try:
        return records.bare_jid(jid)
    except InvalidArgument:
        return None


def _not_a_user(failure: Failure) -> None:
    failure.trap(InvalidArgument)
    return None
