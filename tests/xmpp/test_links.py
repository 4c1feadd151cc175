"""The link cache over a MemoryStore (task.Clock): kept while the feed is live, never stale."""

from __future__ import annotations

import pytest
from twisted.internet import defer
from twisted.internet.task import Clock

from callbackd.core.model import Account
from callbackd.store.interface import StoreUnavailable
from callbackd.store.memory import MemoryStore
from callbackd.xmpp.links import LinkCache
from tests.test_engine import result

ME = "me@example.test"


class CountingStore(MemoryStore):
    """A MemoryStore counting link reads; ``hold`` makes the next reads wait for ``release``."""

    def __init__(self) -> None:
        super().__init__(Clock())
        self.reads = 0
        self.hold = False
        self.held: list[tuple[defer.Deferred, defer.Deferred]] = []

    def account_for_jid(self, jid):
        self.reads += 1
        d = super().account_for_jid(jid)
        if not self.hold:
            return d
        later: defer.Deferred = defer.Deferred()
        self.held.append((d, later))
        return later

    def release(self) -> None:
        """Fire the held reads with what the store said when they were made."""
        for d, later in self.held:
            d.chainDeferred(later)
        self.held.clear()


@pytest.fixture
def store():
    store = CountingStore()
    for username in ("alice", "bob"):
        result(store.create_account(Account(username), "secret pw"))
    return store


@pytest.fixture
def links(store):
    links = LinkCache(store)
    links.start()
    yield links
    links.stop()


def ask(links, jid=ME):
    return result(links.account_for(jid))


def test_a_link_is_read_once_while_the_feed_is_live(store, links):
    """The second command of a JID reads nothing; neither does one not linked."""
    result(store.link_jid(ME, "alice"))
    assert [ask(links), ask(links), ask(links, "Me@Example.TEST/phone")] == ["alice"] * 3
    assert ask(links, "you@example.test") is None
    assert ask(links, "you@example.test") is None
    assert store.reads == 2
    assert links.cached(ME) and len(links) == 2


def test_nothing_is_kept_without_the_feed(store):
    """Not started, or the feed lost: every command reads the store."""
    result(store.link_jid(ME, "alice"))
    links = LinkCache(store)
    assert [ask(links), ask(links)] == ["alice", "alice"]
    assert store.reads == 2 and not links.cached(ME)
    links.start()
    ask(links)
    assert links.cached(ME)
    store.available = False  # the feed is lost: changes meanwhile would not be told
    assert not links.cached(ME)
    with pytest.raises(StoreUnavailable):
        ask(links)
    store.available = True
    assert not links.cached(ME)
    assert ask(links) == "alice"
    links.stop()
    assert not links.cached(ME)


def test_an_unlink_elsewhere_takes_effect_at_once(store, links):
    """Another process unlinks (the admin CLI): the next command is not linked."""
    result(store.link_jid(ME, "alice"))
    assert ask(links) == "alice"
    assert result(store.unlink_jid(ME)) is True
    assert not links.cached(ME)
    assert ask(links) is None


def test_a_move_elsewhere_takes_effect_at_once(store, links):
    """A JID linked to another account: the old one is forgotten, the new one read."""
    result(store.link_jid(ME, "alice"))
    assert ask(links) == "alice"
    result(store.link_jid(ME, "bob"))
    assert ask(links) == "bob"


def test_a_link_elsewhere_of_a_jid_kept_as_unlinked(store, links):
    """The feed names the account, not the JID: any change forgets the unlinked JIDs."""
    assert ask(links) is None
    result(store.link_jid(ME, "alice"))
    assert ask(links) == "alice"


def test_changes_other_than_links_keep_them(store, links):
    """The engine's charges, top-ups, updates of the account itself: its links stay kept."""
    result(store.link_jid(ME, "alice"))
    ask(links)
    ask(links, "you@example.test")
    result(store.credit("alice", 100, "topup"))
    result(store.update_account("alice", language="es"))
    assert links.cached(ME) and links.cached("you@example.test")
    assert store.reads == 2


def test_other_accounts_links_keep_the_link(store, links):
    """A JID linked to bob leaves alice's JIDs kept."""
    result(store.link_jid(ME, "alice"))
    ask(links)
    result(store.link_jid("you@example.test", "bob"))
    assert links.cached(ME)


def test_a_read_overtaken_by_a_change_is_used_once(store, links):
    """The unlink told while the read was on its way: the read's answer is not kept."""
    result(store.link_jid(ME, "alice"))
    store.hold = True
    d = links.account_for(ME)
    result(store.unlink_jid(ME))
    store.release()
    assert result(d) == "alice"  # as the store said when asked
    assert not links.cached(ME)
    store.hold = False
    assert ask(links) is None


def test_a_read_overtaken_by_the_feed_going_down_is_not_kept(store, links):
    """Lost and back while a read was on its way: changes may have been missed."""
    result(store.link_jid(ME, "alice"))
    store.hold = True
    d = links.account_for(ME)
    store.available = False
    store.available = True
    store.release()
    assert result(d) == "alice"
    assert not links.cached(ME)


def test_a_read_overtaken_by_a_change_of_others_is_kept(store, links):
    """A change of another account does not make alice's read stale."""
    result(store.link_jid(ME, "alice"))
    store.hold = True
    d = links.account_for(ME)
    result(store.link_jid("you@example.test", "bob"))
    store.release()
    assert result(d) == "alice"
    assert links.cached(ME)


def test_our_own_link_and_unlink(store, links):
    """LINK and UNLINK through the cache are seen by the JID's next command."""
    assert ask(links) is None
    result(links.link(ME, "alice"))
    assert ask(links) == "alice"
    result(links.unlink(ME))
    assert ask(links) is None
    assert result(store.account_for_jid(ME)) is None


def test_a_read_overtaken_by_our_own_unlink_is_not_kept(store):
    """A store whose feed says nothing of links: our own unlink still wins over the read."""
    links = LinkCache(store)
    links._account_changed = lambda username, origin: None  # a feed that missed it
    links.start()
    result(store.link_jid(ME, "alice"))
    store.hold = True
    d = links.account_for(ME)
    store.hold = False
    result(links.unlink(ME))
    store.release()
    assert result(d) == "alice"
    assert not links.cached(ME)
    assert ask(links) is None


def test_bad_jids_are_not_linked_without_a_read(store, links):
    """What the store would refuse is not linked; nothing is asked."""
    assert ask(links, "example.test") is None
    assert ask(links, 7) is None
    assert store.reads == 0


def test_the_least_recent_go_first(store):
    """At most max_entries JIDs are kept."""
    links = LinkCache(store, max_entries=2)
    links.start()
    for jid in ("a@example.test", "b@example.test", "a@example.test", "c@example.test"):
        ask(links, jid)
    assert [links.cached(j) for j in ("a@example.test", "b@example.test")] == [True, False]
    assert links.cached("c@example.test")
