"""callbackd-admin run as a subprocess against real redis-servers."""

from __future__ import annotations

import csv
import io
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
import pytest_twisted
from twisted.internet import defer, reactor, threads
from twisted.internet.task import deferLater

from callbackd.core.model import CDR
from callbackd.store.embedded import EmbeddedRedisService, redis_command, socket_path
from callbackd.store.hashing import BcryptHasher
from callbackd.store.interface import INVITE_ORIGIN
from tests.stores import redis_store

ROOT = Path(__file__).resolve().parent.parent


def admin(config: Path, *args: str, env: dict[str, str] | None = None, stdin: str = ""):
    """Run ``python -m callbackd.admin -c config args...``; the CompletedProcess."""
    return subprocess.run(
        [sys.executable, "-m", "callbackd.admin", "-c", str(config), *args],
        cwd=ROOT,
        env={**os.environ, **(env or {})},
        input=stdin,
        capture_output=True,
        text=True,
        timeout=60,
    )


def redis_cli(port: int, *args: str) -> str:
    """One redis-cli command against the test server; its output."""
    out = subprocess.run(
        ["redis-cli", "-p", str(port), *args], capture_output=True, text=True, check=True
    )
    return out.stdout.strip()


@pytest.fixture
def config(clean_redis, tmp_path):
    """A config file for an external redis-server, two decimals of EUR."""
    path = tmp_path / "callbackd.ini"
    path.write_text(
        f"[redis]\nmode = external\nport = {clean_redis.port}\ntimeout = 2\n"
        "[billing]\ncurrency = EUR\ndecimals = 2\n"
    )
    return path


@pytest.fixture
def alice(config):
    """Account alice, password 'hunter2 pw', PIN 4321, created through the CLI."""
    result = admin(
        config,
        "create-account", "alice", "--password-env", "PW", "--pin-env", "PIN",
        "--language", "de", "--credit-limit", "1.50",
        env={"PW": "hunter2 pw", "PIN": "4321"},
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    return "alice"


def test_create_account_stores_hashed_secrets(config, alice, clean_redis):
    """The account exists with its fields; password and PIN are stored as bcrypt hashes."""
    fields = redis_cli(clean_redis.port, "HGET", "cb:acct:alice", "credit_limit")
    assert fields == "150"
    password_hash = redis_cli(clean_redis.port, "HGET", "cb:acct:alice:secrets", "password")
    assert password_hash.startswith("$2b$") and "hunter2" not in password_hash
    hasher = BcryptHasher(run_in_thread=False)
    assert hasher.check("hunter2 pw", password_hash).result is True
    pin_hash = redis_cli(clean_redis.port, "HGET", "cb:acct:alice:secrets", "pin")
    assert hasher.check("4321", pin_hash).result is True


def test_create_existing_account_fails_with_one_line(config, alice):
    """A taken username exits 1 with one line on stderr."""
    result = admin(config, "create-account", "alice", "--password-env", "PW", env={"PW": "x"})
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == ["callbackd-admin: account 'alice' exists"]


def test_password_from_file_and_stdin(config, tmp_path, clean_redis):
    """Passwords come from a file or, with --password and no terminal, one stdin line."""
    secret = tmp_path / "pw"
    secret.write_text("from file\n")
    assert admin(config, "create-account", "bob", "--password-file", str(secret)).returncode == 0
    result = admin(config, "set-password", "bob", "--password", stdin="from stdin\n")
    assert result.returncode == 0, result.stderr
    stored = redis_cli(clean_redis.port, "HGET", "cb:acct:bob:secrets", "password")
    assert BcryptHasher(run_in_thread=False).check("from stdin", stored).result is True


def test_set_pin(config, alice, clean_redis):
    """set-pin replaces the PIN."""
    assert admin(config, "set-pin", "alice", "--pin-env", "P", env={"P": "98765"}).returncode == 0
    stored = redis_cli(clean_redis.port, "HGET", "cb:acct:alice:secrets", "pin")
    assert BcryptHasher(run_in_thread=False).check("98765", stored).result is True


@pytest.mark.parametrize(
    "args",
    [
        ["create-account", "alice"],  # no password source
        ["create-account", "alice", "--password-env", "PW", "--password-file", "f"],
        ["topup", "alice", "1.234"],  # more decimals than the currency has
        ["topup", "alice", "ten"],
        ["topup", "alice", "-5"],
        ["voucher-batch", "b", "0", "5"],
        ["list-cdrs", "--since", "yesterday"],
        ["create-account", "bad name", "--password-env", "PW"],
        ["set-pin", "alice", "--pin-env", "PW"],  # "x" is no PIN
        ["frobnicate"],
        [],
    ],
)
def test_bad_arguments_exit_2_with_usage(config, args):
    """Bad arguments print a usage message on stderr and exit 2."""
    result = admin(config, *args, env={"PW": "x"})
    assert result.returncode == 2
    assert "usage:" in result.stderr


def test_missing_password_env_is_a_usage_error(config):
    """--password-env naming an unset variable exits 2 and creates nothing."""
    result = admin(config, "create-account", "carol", "--password-env", "NO_SUCH_VAR_X")
    assert result.returncode == 2
    assert "NO_SUCH_VAR_X" in result.stderr


def test_topup_and_balance(config, alice):
    """topup credits exact minor units; balance shows them in currency units."""
    result = admin(config, "topup", "alice", "10.5")
    assert result.returncode == 0, result.stderr
    assert "balance 10.50 EUR" in result.stdout
    assert admin(config, "balance", "alice").stdout.strip() == "10.50 EUR"


def test_topup_with_same_key_credits_once(config, alice):
    """Re-running a topup with the same --key does not credit twice."""
    for _ in range(2):
        assert admin(config, "topup", "alice", "2", "--key", "invoice-7").returncode == 0
    assert admin(config, "balance", "alice").stdout.strip() == "2.00 EUR"


def test_unknown_account_fails(config):
    """Operations on an unknown account exit 1 with one line."""
    result = admin(config, "balance", "nobody")
    assert result.returncode == 1
    assert result.stderr.strip() == "callbackd-admin: no account 'nobody'"


def test_voucher_batch_redeem(config, alice, tmp_path):
    """A batch is written as CSV; a code redeems once and credits its value."""
    out = tmp_path / "batch.csv"
    result = admin(config, "voucher-batch", "spring", "3", "5.25", "-o", str(out))
    assert result.returncode == 0, result.stderr
    rows = list(csv.DictReader(out.open()))
    assert len(rows) == 3 and {r["batch"] for r in rows} == {"spring"}
    assert {r["value"] for r in rows} == {"5.25"}
    assert out.stat().st_mode & 0o077 == 0
    code = rows[0]["code"]
    result = admin(config, "redeem", code, "alice")
    assert result.returncode == 0, result.stderr
    assert "balance 5.25 EUR" in result.stdout
    again = admin(config, "redeem", code, "alice")
    assert again.returncode == 1
    assert "already used" in again.stderr


@pytest_twisted.ensureDeferred
async def test_set_sms_progress(config, alice, clean_redis):
    """set-sms-progress sets Account.sms_progress; "default" clears it."""
    store = await redis_store(clean_redis.port).connect(timeout=5)
    try:
        result = admin(config, "set-sms-progress", "alice", "all")
        assert (result.returncode, result.stdout.strip()) == (0, "SMS progress of alice: all")
        assert (await store.get_account("alice")).sms_progress == "all"
        admin(config, "set-sms-progress", "alice", "default")
        assert (await store.get_account("alice")).sms_progress == ""
        assert admin(config, "set-sms-progress", "alice", "loud").returncode == 2
    finally:
        await store.disconnect()


@pytest_twisted.ensureDeferred
async def test_link_and_unlink_a_jid(config, alice, clean_redis):
    """link-jid links a bare JID (resource dropped) to an account; unlink-jid undoes it."""
    store = await redis_store(clean_redis.port).connect(timeout=5)
    try:
        result = admin(config, "link-jid", "Bob@Example.org/phone", "alice")
        assert (result.returncode, result.stdout.strip()) == (
            0,
            "Bob@Example.org/phone linked to alice",
        )
        assert await store.account_for_jid("bob@example.org") == "alice"
        result = admin(config, "unlink-jid", "bob@example.org")
        assert result.stdout.strip() == "bob@example.org unlinked"
        assert await store.account_for_jid("bob@example.org") is None
        result = admin(config, "unlink-jid", "bob@example.org")
        assert result.stdout.strip() == "bob@example.org was not linked"
    finally:
        await store.disconnect()


@pytest_twisted.ensureDeferred
async def test_invite_is_handed_to_the_daemons_listening(config, clean_redis):
    """invite tells the watchers of the store's change feed (every running daemon); with
    none listening it says so and exits 1."""
    alone = admin(config, "invite", "carol@example.test")
    assert (alone.returncode, alone.stderr.strip()) == (
        1,
        "callbackd-admin: no daemon is running on this store: nobody to send it",
    )
    store = await redis_store(clean_redis.port).connect(timeout=5)
    heard, live = [], defer.Deferred()
    stop = store.watch(lambda key, origin: heard.append((key, origin)), live.callback)
    try:
        await live
        result = await threads.deferToThread(admin, config, "invite", "Carol@Example.test/pc")
        assert (result.returncode, result.stdout.strip()) == (
            0,
            "invitation to Carol@Example.test/pc handed to 1 daemon(s) listening",
        )
        for _ in range(100):
            if heard:
                break
            await deferLater(reactor, 0.02, lambda: None)
        assert heard == [("carol@example.test", INVITE_ORIGIN)]
    finally:
        stop()
        await store.disconnect()


def test_link_jid_refuses_what_it_cannot_link(config, alice):
    """An unknown account: exit 1 with one line; a malformed JID: usage and exit 2."""
    unknown = admin(config, "link-jid", "bob@example.org", "nobody")
    assert (unknown.returncode, unknown.stderr.strip()) == (
        1,
        "callbackd-admin: no account 'nobody'",
    )
    bad = admin(config, "link-jid", "not-a-jid", "alice")
    assert bad.returncode == 2
    assert bad.stderr.strip().endswith("error: bad JID 'not-a-jid': user@domain expected")


def test_voucher_batch_to_stdout(config):
    """Without -o the CSV goes to stdout."""
    result = admin(config, "voucher-batch", "b", "2", "1")
    rows = list(csv.reader(io.StringIO(result.stdout)))
    assert rows[0] == ["code", "batch", "value"]
    assert len(rows) == 3


@pytest_twisted.ensureDeferred
async def test_list_cdrs_as_csv(config, alice, clean_redis):
    """list-cdrs writes the account's CDRs in the range as CSV with amounts and ISO times."""
    store = await redis_store(clean_redis.port).connect(timeout=5)
    for i, user in enumerate(["alice", "bob", "alice"]):
        cdr = CDR(f"c{i}", user, "s1", "leg", "source", ended_at=1_700_000_000.0 + i, cost=1204)
        await store.append_cdr(cdr)
    await store.disconnect()
    result = admin(config, "list-cdrs", "alice", "--since", "2023-11-14T22:13:20+00:00")
    assert result.returncode == 0, result.stderr
    rows = list(csv.DictReader(io.StringIO(result.stdout)))
    assert [r["cdr_id"] for r in rows] == ["c0", "c2"]
    assert rows[0]["cost"] == "12.04"
    assert rows[0]["ended_at"] == "2023-11-14T22:13:20+00:00"
    everyone = admin(config, "list-cdrs", "--until", "2023-11-14T22:13:21Z")
    assert [r["cdr_id"] for r in csv.DictReader(io.StringIO(everyone.stdout))] == ["c0", "c1"]


def test_list_accounts(config, alice):
    """list-accounts lists every account with status and balance."""
    admin(config, "create-account", "bob", "--password-env", "PW", env={"PW": "x"})
    admin(config, "topup", "bob", "1")
    rows = list(csv.DictReader(io.StringIO(admin(config, "list-accounts").stdout)))
    assert [(r["username"], r["balance"]) for r in rows] == [("alice", "0.00"), ("bob", "1.00")]


def test_config_errors_exit_1(tmp_path):
    """A broken config is reported, exit 1."""
    bad = tmp_path / "bad.ini"
    bad.write_text("[redis]\nport = lots\n")
    result = admin(bad, "list-accounts")
    assert result.returncode == 1
    assert "[redis] port" in result.stderr


def test_redis_down_fails_quickly(tmp_path):
    """With the configured Redis down the command exits 1 saying so."""
    from tests.procs import free_port

    path = tmp_path / "c.ini"
    path.write_text(f"[redis]\nmode = external\nport = {free_port()}\ntimeout = 1\n")
    result = admin(path, "list-accounts")
    assert result.returncode == 1
    assert "redis unavailable" in result.stderr


@pytest.fixture
def embedded_config():
    """A config in embedded mode with a short state_dir of its own."""
    top = Path(tempfile.mkdtemp(prefix="cbad"))
    path = top / "c.ini"
    path.write_text("[daemon]\nstate_dir = st\n[redis]\nmode = embedded\n[billing]\ndecimals = 2\n")
    yield path
    shutil.rmtree(top, ignore_errors=True)


def test_embedded_mode_starts_and_stops_its_own_server(embedded_config):
    """With no daemon running the CLI runs the embedded redis itself; the data persists."""
    sock = socket_path(embedded_config.parent / "st")
    result = admin(
        embedded_config, "create-account", "alice", "--password-env", "PW", env={"PW": "x"}
    )
    assert result.returncode == 0, result.stderr
    assert admin(embedded_config, "topup", "alice", "3").returncode == 0
    assert admin(embedded_config, "balance", "alice").stdout.strip() == "3.00 EUR"
    assert not (sock.parent / "redis.pid").exists()  # the server it started has exited


@pytest_twisted.ensureDeferred
async def test_embedded_mode_uses_a_running_server(embedded_config):
    """When the daemon's embedded redis answers, the CLI uses it and leaves it running."""
    state = embedded_config.parent / "st"
    from callbackd.config import RedisConfig

    svc = EmbeddedRedisService(RedisConfig(), state, reactor)
    await svc.startService()
    try:
        result = await _in_thread(
            admin, embedded_config, "create-account", "bob", "--password-env", "PW", env={"PW": "x"}
        )
        assert result.returncode == 0, result.stderr
        assert await redis_command(reactor, svc.socket_path, "PING") == "+PONG"
        assert svc.process.running
        assert await redis_command(reactor, svc.socket_path, "EXISTS cb:acct:bob") == ":1"
    finally:
        await svc.stopService()


def _in_thread(f, *args, **kwargs):
    """Run a blocking call in a thread so the reactor keeps serving the redis child."""
    from twisted.internet import threads

    return threads.deferToThread(f, *args, **kwargs)


@pytest_twisted.ensureDeferred
async def test_unlink_jid_reaches_a_running_chat_front_at_once(config, alice, clean_redis):
    """A chat front caching links (its feed live) refuses the JID's next command after
    ``unlink-jid`` in another process."""
    from twisted.internet import task

    from callbackd.i18n import translator
    from callbackd.xmpp.chat import ChatFront
    from callbackd.xmpp.links import LinkCache
    from tests.store.test_charge_feed import Feed
    from tests.xmpp.test_component import NoEngine

    store = await redis_store(clean_redis.port).connect(timeout=5)
    links = LinkCache(store)
    links.start()
    feed = Feed()
    stop = store.watch(feed.on_change, feed.on_state)
    sent: list[tuple[str, str]] = []
    front = ChatFront(NoEngine(store), store, links, reactor, lambda *m: sent.append(m), decimals=2)

    async def say(body: str) -> str:
        await front.handle("bob@example.org", body)
        await task.deferLater(reactor, 0, lambda: None)
        [(_, text)] = sent
        sent.clear()
        return text

    not_linked = translator("en").text("chat.not_linked")
    try:
        await feed.until(states=1)
        assert admin(config, "link-jid", "bob@example.org", "alice").returncode == 0
        await feed.until(changes=1)
        assert await say("BALANCE") != not_linked
        assert links.cached("bob@example.org")
        assert admin(config, "unlink-jid", "bob@example.org").returncode == 0
        await feed.until(changes=2)
        assert await say("BALANCE") == not_linked
    finally:
        stop()
        links.stop()
        await store.disconnect()
