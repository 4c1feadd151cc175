"""WebhookSender over a Clock, the engine (FakeSwitch, MemoryStore) and a recording HTTP
client; the end-to-end delivery over treq is in tests/web/test_api.py."""

from __future__ import annotations

import json

from twisted.internet import defer

from callbackd.web.webhooks import SIGNATURE_HEADER, WebhookSender, verify_signature
from tests.test_engine import World, result


class Response:
    def __init__(self, code: int) -> None:
        self.code = code

    def content(self):
        return defer.succeed(b"")


class Http:
    """Answers each POST with the next code (the last one repeats); records them."""

    def __init__(self, *codes: int) -> None:
        self.codes = list(codes)
        self.posts: list[tuple[str, bytes, dict]] = []

    def post(self, url, data, headers, timeout):
        self.posts.append((url, data, headers))
        code = self.codes.pop(0) if len(self.codes) > 1 else self.codes[0]
        if code == 0:
            return defer.fail(ConnectionRefusedError())
        return defer.succeed(Response(code))


def sender_for(*codes: int, url: str | None = "https://hooks.example.test/x"):
    world = World()
    http = Http(*codes)
    hook = result(world.store.set_webhook("alice", url)) if url else None
    sender = WebhookSender(
        world.store, world.manager, world.clock, http, backoff=lambda n: 10.0, max_attempts=3
    )
    sender.startService()
    return world, sender, http, hook


def kinds(http: Http) -> list[str]:
    return [json.loads(body)["type"] for _, body, _ in http.posts]


def test_every_event_is_posted_signed():
    world, sender, http, hook = sender_for(204)
    sid = world.talking()
    assert kinds(http)[:2] == ["session_started", "leg_calling"] and "talking" in kinds(http)
    for url, body, headers in http.posts:
        assert url == hook.url
        signature = headers[SIGNATURE_HEADER.encode()][0].decode()
        assert verify_signature(hook.secret, signature, body, now=world.now())
        event = json.loads(body)
        assert event["data"]["session_id"] == sid
        assert headers[b"X-Callbackd-Delivery"] == [event["id"].encode()]
    assert result(world.store.next_webhook_due()) is None  # every one confirmed


def test_failures_are_retried_with_backoff_then_dead_lettered():
    world, sender, http, _ = sender_for(503, 0, 204)
    result(world.manager.start_callback("alice", "+4930123456", "+923001234567"))
    first = len(http.posts)
    assert first >= 1
    world.clock.advance(10)  # the first failed one again (a refused connection)
    world.clock.advance(10)  # and again: 204
    assert result(world.store.dead_webhooks()) == []
    world2, sender2, http2, _ = sender_for(503)
    result(world2.manager.start_callback("alice", "+4930123456", "+923001234567"))
    world2.clock.advance(10)
    world2.clock.advance(10)
    dead = result(world2.store.dead_webhooks())
    assert dead and all("HTTP 503" in d.last_error for d in dead)


def test_gone_gives_up_at_once_and_no_webhook_queues_nothing():
    world, sender, http, _ = sender_for(410)
    result(world.manager.start_callback("alice", "+4930123456", "+923001234567"))
    assert result(world.store.dead_webhooks())
    world, sender, http, _ = sender_for(204, url=None)
    world.talking()
    assert http.posts == [] and result(world.store.next_webhook_due()) is None


def test_a_changed_webhook_is_read_again_and_stop_unsubscribes():
    world, sender, http, _ = sender_for(204, url=None)
    first = world.callback()
    assert http.posts == []
    result(world.store.set_webhook("alice", "https://new.example.test/"))
    sender.forget("alice")
    world.callback()
    assert http.posts and http.posts[-1][0] == "https://new.example.test/"
    count = len(http.posts)
    result(sender.stopService())
    world.switch.answer(f"{first}-a1", world.now())
    assert len(http.posts) == count


class Enqueues:
    """A store whose webhook enqueues are counted."""

    def __init__(self, store) -> None:
        self.store = store
        self.enqueued: list[str] = []

    def __getattr__(self, name):
        return getattr(self.store, name)

    def enqueue_webhook(self, delivery_id, *args):
        self.enqueued.append(delivery_id)
        return self.store.enqueue_webhook(delivery_id, *args)


def test_with_several_daemons_only_the_owner_enqueues_a_sessions_webhooks():
    """Daemon b hears a's session events (for its SSE streams) but enqueues none of
    them: each event is enqueued once, by a, and delivered once."""
    from tests.test_engine_cluster import pair, settle

    a, b = pair()
    result(a.store.set_webhook("alice", "https://hooks.example.test/x"))
    stores, posts = [], []
    for world in (a, b):
        store, http = Enqueues(world.store), Http(204)
        sender = WebhookSender(store, world.manager, world.clock, http, backoff=lambda n: 10.0)
        sender.startService()
        stores.append(store)
        posts.append(http)
    a.talking()
    settle(a)
    assert b.events and len(stores[0].enqueued) == len(a.events)
    assert stores[1].enqueued == []
    assert kinds(posts[0]) + kinds(posts[1]) == [e.kind for e in a.events]
