"""The IStore contract, run against MemoryStore and RedisStore on a real redis-server."""

from __future__ import annotations

import dataclasses

import pytest
import pytest_twisted
from twisted.internet import defer
from twisted.internet.task import Clock
from zope.interface.verify import verifyObject

from callbackd.core.model import CDR, Account, AccountStatus, CallerID, PhonebookEntry
from callbackd.store.interface import (
    AccountExists,
    InsufficientFunds,
    InvalidArgument,
    IStore,
    NoSuchAccount,
    NoSuchVoucher,
    VoucherUsed,
)
from callbackd.store.memory import MemoryStore


async def make_account(store, username="alice", password="secret pw", pin="", **fields):
    """Create an account and return it; its PIN "1234" for alice, else one of its own
    (a PIN is one account's: it names the account to the IVR)."""
    if pin == "":
        pin = "1234" if username == "alice" else str(int.from_bytes(username.encode()))[-8:]
    return await store.create_account(Account(username, **fields), password, pin)


async def fails(d, exc):
    """Await ``d`` (or the coroutine) and assert it fails with ``exc``; return the error."""
    with pytest.raises(exc) as info:
        await d
    return info.value


# -- basics --------------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_provides_the_interface(store):
    """Both implementations provide IStore fully."""
    assert verifyObject(IStore, store)


@pytest_twisted.ensureDeferred
async def test_ping(store):
    """ping fires True when the backend answers."""
    assert await store.ping() is True


# -- accounts -------------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_create_then_get_account(store):
    """A created account reads back with its fields and a creation time."""
    await make_account(store, language="de", credit_limit=500, default_number="+4930123456")
    account = await store.get_account("alice")
    assert account.username == "alice"
    assert account.language == "de"
    assert account.credit_limit == 500
    assert account.default_number == "+4930123456"
    assert account.status is AccountStatus.ACTIVE


@pytest_twisted.ensureDeferred
async def test_created_account_has_zero_balance(store):
    """A new account starts at balance 0."""
    await make_account(store)
    assert await store.get_balance("alice") == 0


@pytest_twisted.ensureDeferred
async def test_create_account_twice_is_refused(store):
    """A taken username errbacks AccountExists and leaves the first account alone."""
    await make_account(store, language="de")
    await fails(make_account(store, password="other", language="fr"), AccountExists)
    assert (await store.get_account("alice")).language == "de"
    assert await store.check_password("alice", "secret pw") is True


@pytest_twisted.ensureDeferred
async def test_concurrent_creates_make_one_account(store):
    """Creating the same username concurrently succeeds once."""
    results = await defer.DeferredList(
        [store.create_account(Account("bob"), f"pw{i}") for i in range(5)], consumeErrors=True
    )
    assert sum(ok for ok, _ in results) == 1
    assert all(r.check(AccountExists) for ok, r in results if not ok)
    assert await store.list_accounts() == ["bob"]


@pytest.mark.parametrize(
    "account",
    [
        Account("bad name"),
        Account("x:y"),
        Account(""),
        Account("ok", credit_limit=-1),
        Account("ok", default_number="030123"),
        Account("ok", language="english!"),
        Account("ok", max_sessions=-2),
    ],
)
@pytest_twisted.ensureDeferred
async def test_create_account_rejects_bad_fields(store, account):
    """Malformed accounts errback InvalidArgument and create nothing."""
    await fails(store.create_account(account, "pw"), InvalidArgument)
    assert await store.list_accounts() == []


@pytest.mark.parametrize(("password", "pin"), [("", None), ("pw", "12"), ("pw", "12ab")])
@pytest_twisted.ensureDeferred
async def test_create_account_rejects_bad_secrets(store, password, pin):
    """An empty password or a malformed PIN errbacks InvalidArgument."""
    await fails(store.create_account(Account("carol"), password, pin), InvalidArgument)
    assert await store.get_account("carol") is None


@pytest_twisted.ensureDeferred
async def test_get_missing_account_is_none(store):
    """An unknown username reads as None."""
    assert await store.get_account("nobody") is None


@pytest_twisted.ensureDeferred
async def test_update_account_changes_fields(store):
    """update_account changes the named fields and fires with the new Account."""
    await make_account(store)
    new = await store.update_account("alice", status=AccountStatus.BLOCKED, max_sessions=5)
    assert new.status is AccountStatus.BLOCKED
    assert new.max_sessions == 5
    assert await store.get_account("alice") == new


@pytest_twisted.ensureDeferred
async def test_update_account_accepts_status_string(store):
    """A status may be given by its value."""
    await make_account(store)
    assert (await store.update_account("alice", status="blocked")).status is AccountStatus.BLOCKED


@pytest.mark.parametrize("fields", [{"colour": "red"}, {"credit_limit": "lots"}, {"status": "x"}])
@pytest_twisted.ensureDeferred
async def test_update_account_rejects_bad_fields(store, fields):
    """Unknown fields, the username and ill-typed values errback InvalidArgument."""
    before = await make_account(store)
    await fails(store.update_account("alice", **fields), InvalidArgument)
    assert await store.get_account("alice") == before


@pytest_twisted.ensureDeferred
async def test_update_missing_account(store):
    """Updating an unknown account errbacks NoSuchAccount."""
    await fails(store.update_account("nobody", language="de"), NoSuchAccount)


@pytest_twisted.ensureDeferred
async def test_list_accounts_sorted(store):
    """list_accounts fires with every username, sorted."""
    for name in ("mallory", "bob", "alice"):
        await make_account(store, name)
    assert await store.list_accounts() == ["alice", "bob", "mallory"]


@pytest_twisted.ensureDeferred
async def test_check_password(store):
    """The right password checks True, a wrong one False."""
    await make_account(store)
    assert await store.check_password("alice", "secret pw") is True
    assert await store.check_password("alice", "secret pW") is False


@pytest_twisted.ensureDeferred
async def test_check_password_of_missing_account_is_false(store):
    """No account means no password matches."""
    assert await store.check_password("nobody", "x") is False


@pytest_twisted.ensureDeferred
async def test_long_passwords_are_not_truncated(store):
    """Passwords longer than bcrypt's 72 bytes still differ in their tail."""
    long = "p" * 100
    await make_account(store, password=long + "A")
    assert await store.check_password("alice", long + "A") is True
    assert await store.check_password("alice", long + "B") is False


@pytest_twisted.ensureDeferred
async def test_set_password(store):
    """set_password replaces the password."""
    await make_account(store)
    await store.set_password("alice", "new one")
    assert await store.check_password("alice", "new one") is True
    assert await store.check_password("alice", "secret pw") is False


@pytest_twisted.ensureDeferred
async def test_set_password_of_missing_account(store):
    """set_password on an unknown account errbacks NoSuchAccount."""
    await fails(store.set_password("nobody", "pw"), NoSuchAccount)


@pytest_twisted.ensureDeferred
async def test_check_and_set_pin(store):
    """The PIN checks, and set_pin replaces it."""
    await make_account(store, pin="4321")
    assert await store.check_pin("alice", "4321") is True
    assert await store.check_pin("alice", "1234") is False
    await store.set_pin("alice", "98765")
    assert await store.check_pin("alice", "98765") is True
    assert await store.check_pin("alice", "4321") is False


@pytest_twisted.ensureDeferred
async def test_account_without_pin_matches_no_pin(store):
    """An account created without a PIN matches no PIN."""
    await make_account(store, pin=None)
    assert await store.check_pin("alice", "0000") is False


@pytest_twisted.ensureDeferred
async def test_set_pin_rejects_bad_pin(store):
    """A malformed PIN errbacks InvalidArgument."""
    await make_account(store)
    await fails(store.set_pin("alice", "12"), InvalidArgument)
    assert await store.check_pin("alice", "1234") is True


# -- money -----------------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_credit_then_debit(store):
    """Credits add, debits subtract, both fire with the new balance."""
    await make_account(store)
    assert await store.credit("alice", 1000, "c1") == 1000
    assert await store.debit("alice", 300, "d1") == 700
    assert await store.get_balance("alice") == 700


@pytest_twisted.ensureDeferred
async def test_same_debit_key_charges_once(store):
    """A debit key applied twice charges once."""
    await make_account(store)
    await store.credit("alice", 1000, "c1")
    assert await store.debit("alice", 300, "call-1") == 700
    assert await store.debit("alice", 300, "call-1") == 700
    assert await store.get_balance("alice") == 700


@pytest_twisted.ensureDeferred
async def test_same_credit_key_credits_once(store):
    """A credit key applied twice credits once."""
    await make_account(store)
    await store.credit("alice", 500, "topup-1")
    assert await store.credit("alice", 500, "topup-1") == 500


@pytest_twisted.ensureDeferred
async def test_debit_below_floor_is_refused(store):
    """A debit past -credit_limit errbacks InsufficientFunds and changes nothing."""
    await make_account(store, credit_limit=100)
    await store.credit("alice", 200, "c")
    await fails(store.debit("alice", 301, "d"), InsufficientFunds)
    assert await store.get_balance("alice") == 200
    assert await store.debit("alice", 300, "d") == -100


@pytest_twisted.ensureDeferred
async def test_refused_debit_key_can_be_retried(store):
    """A refused debit does not burn its key."""
    await make_account(store)
    await fails(store.debit("alice", 50, "d"), InsufficientFunds)
    await store.credit("alice", 50, "c")
    assert await store.debit("alice", 50, "d") == 0


@pytest_twisted.ensureDeferred
async def test_forced_debit_goes_below_floor(store):
    """force=True settles a call even below the floor."""
    await make_account(store)
    assert await store.debit("alice", 250, "settle", force=True) == -250


@pytest_twisted.ensureDeferred
async def test_zero_debit_is_allowed(store):
    """A debit of 0 is valid."""
    await make_account(store)
    assert await store.debit("alice", 0, "free") == 0


@pytest.mark.parametrize("amount", [-1, 1.5, "10", True, 10**16])
@pytest_twisted.ensureDeferred
async def test_bad_amounts_are_refused(store, amount):
    """Negative, non-integer and absurd amounts errback InvalidArgument."""
    await make_account(store)
    await fails(store.debit("alice", amount, "k"), InvalidArgument)
    await fails(store.credit("alice", amount, "k"), InvalidArgument)
    assert await store.get_balance("alice") == 0


@pytest_twisted.ensureDeferred
async def test_zero_credit_is_refused(store):
    """A credit must be positive."""
    await make_account(store)
    await fails(store.credit("alice", 0, "k"), InvalidArgument)


@pytest_twisted.ensureDeferred
async def test_empty_key_is_refused(store):
    """An idempotency key is required."""
    await make_account(store)
    await fails(store.credit("alice", 1, ""), InvalidArgument)


@pytest_twisted.ensureDeferred
async def test_money_on_missing_account(store):
    """Balance, credit and debit of an unknown account errback NoSuchAccount."""
    await fails(store.get_balance("nobody"), NoSuchAccount)
    await fails(store.credit("nobody", 1, "k"), NoSuchAccount)
    await fails(store.debit("nobody", 1, "k"), NoSuchAccount)


# -- caller IDs ---------------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_caller_id_lifecycle(store):
    """A number is added unverified, found only when verified, and removed."""
    await make_account(store)
    added = await store.add_caller_id("alice", "+4930123456")
    assert added.number == "+4930123456" and added.verified is False
    assert await store.account_for_caller_id("+4930123456") is None
    assert await store.account_for_caller_id("+4930123456", verified_only=False) == "alice"
    await store.verify_caller_id("alice", "+4930123456")
    assert await store.account_for_caller_id("+4930123456") == "alice"
    await store.remove_caller_id("alice", "+4930123456")
    assert await store.account_for_caller_id("+4930123456", verified_only=False) is None
    assert await store.list_caller_ids("alice") == []


@pytest_twisted.ensureDeferred
async def test_list_caller_ids(store):
    """list_caller_ids fires with CallerIDs sorted by number."""
    await make_account(store)
    await store.add_caller_id("alice", "+4930222", verified=True)
    await store.add_caller_id("alice", "+4930111")
    found = await store.list_caller_ids("alice")
    assert [(c.number, c.verified) for c in found] == [("+4930111", False), ("+4930222", True)]
    assert all(isinstance(c, CallerID) for c in found)


@pytest_twisted.ensureDeferred
async def test_caller_id_belongs_to_one_account(store):
    """A number registered to one account cannot be added to another."""
    await make_account(store, "alice")
    await make_account(store, "bob")
    await store.add_caller_id("alice", "+4930123456", verified=True)
    await fails(store.add_caller_id("bob", "+4930123456"), InvalidArgument)
    assert await store.account_for_caller_id("+4930123456") == "alice"


@pytest_twisted.ensureDeferred
async def test_readding_keeps_verification(store):
    """Adding a number again does not unverify it."""
    await make_account(store)
    await store.add_caller_id("alice", "+4930123456", verified=True)
    again = await store.add_caller_id("alice", "+4930123456")
    assert again.verified is True


@pytest_twisted.ensureDeferred
async def test_caller_id_errors(store):
    """Bad numbers, unknown accounts and unregistered numbers are errors."""
    await make_account(store)
    await fails(store.add_caller_id("alice", "030123"), InvalidArgument)
    await fails(store.add_caller_id("nobody", "+4930123456"), NoSuchAccount)
    await fails(store.verify_caller_id("alice", "+4930999"), InvalidArgument)
    await fails(store.list_caller_ids("nobody"), NoSuchAccount)


# -- chat addresses (JIDs) --------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_jid_link_lifecycle(store):
    """A JID is linked, found by its bare form in any case, and unlinked once."""
    await make_account(store)
    assert await store.account_for_jid("alice@example.test") is None
    await store.link_jid("Alice@Example.TEST/phone", "alice")
    assert await store.account_for_jid("alice@example.test") == "alice"
    assert await store.account_for_jid("ALICE@example.test/laptop") == "alice"
    assert await store.unlink_jid("alice@EXAMPLE.test/any") is True
    assert await store.account_for_jid("alice@example.test") is None
    assert await store.unlink_jid("alice@example.test") is False


@pytest_twisted.ensureDeferred
async def test_jid_relink_moves_it(store):
    """A JID belongs to one account: linking it again moves it; an account has many JIDs."""
    await make_account(store, "alice")
    await make_account(store, "bob")
    await store.link_jid("me@example.test", "alice")
    await store.link_jid("work@example.test", "alice")
    await store.link_jid("me@example.test", "bob")
    assert await store.account_for_jid("me@example.test") == "bob"
    assert await store.account_for_jid("work@example.test") == "alice"


@pytest_twisted.ensureDeferred
async def test_linked_jids_lists_every_link_once(store):
    """linked_jids: every linked bare JID once, sorted; an unlinked one is gone, a moved one
    stays, a refused link adds nothing."""
    await make_account(store, "alice")
    await make_account(store, "bob")
    assert await store.linked_jids() == []
    await store.link_jid("Me@Example.test/phone", "alice")
    await store.link_jid("work@example.test", "alice")
    await store.link_jid("me@example.test", "bob")
    await fails(store.link_jid("ghost@example.test", "nobody"), NoSuchAccount)
    assert await store.linked_jids() == ["me@example.test", "work@example.test"]
    await store.unlink_jid("work@example.test")
    assert await store.linked_jids() == ["me@example.test"]


@pytest.mark.parametrize(
    "jid", ["", "example.test", "@example.test", "a@", "a b@example.test", "a@b@c", "a\x00@b", 7]
)
@pytest_twisted.ensureDeferred
async def test_bad_jids_are_refused(store, jid):
    """Only user@domain JIDs (with or without a resource) are accepted."""
    await make_account(store)
    await fails(store.link_jid(jid, "alice"), InvalidArgument)
    await fails(store.account_for_jid(jid), InvalidArgument)
    await fails(store.unlink_jid(jid), InvalidArgument)


@pytest_twisted.ensureDeferred
async def test_link_jid_to_missing_account(store):
    """Linking to an account that does not exist links nothing."""
    await fails(store.link_jid("ghost@example.test", "nobody"), NoSuchAccount)
    await fails(store.link_jid("ghost@example.test", "bad:name"), InvalidArgument)
    assert await store.account_for_jid("ghost@example.test") is None


# -- phonebook ------------------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_phonebook_sorted_by_index(store):
    """Entries come back sorted by index."""
    await make_account(store)
    await store.set_phonebook_entry("alice", PhonebookEntry(2, "mum", "+4930222"))
    await store.set_phonebook_entry("alice", PhonebookEntry(1, "office", "sip:me@example.org"))
    book = await store.get_phonebook("alice")
    assert [(e.index, e.name) for e in book] == [(1, "office"), (2, "mum")]


@pytest_twisted.ensureDeferred
async def test_phonebook_replaces_same_index(store):
    """An entry with an existing index replaces it."""
    await make_account(store)
    await store.set_phonebook_entry("alice", PhonebookEntry(1, "mum", "+4930222"))
    await store.set_phonebook_entry("alice", PhonebookEntry(1, "dad", "+4930333"))
    assert await store.get_phonebook("alice") == [PhonebookEntry(1, "dad", "+4930333")]


@pytest_twisted.ensureDeferred
async def test_phonebook_replaces_same_name(store):
    """An entry with an existing name replaces the old one at its old index."""
    await make_account(store)
    await store.set_phonebook_entry("alice", PhonebookEntry(1, "mum", "+4930222"))
    await store.set_phonebook_entry("alice", PhonebookEntry(5, "mum", "+4930555"))
    assert await store.get_phonebook("alice") == [PhonebookEntry(5, "mum", "+4930555")]


@pytest_twisted.ensureDeferred
async def test_phonebook_delete(store):
    """delete_phonebook_entry removes one entry; deleting a missing index is harmless."""
    await make_account(store)
    await store.set_phonebook_entry("alice", PhonebookEntry(1, "mum", "+4930222"))
    await store.set_phonebook_entry("alice", PhonebookEntry(2, "dad", "+4930333"))
    await store.delete_phonebook_entry("alice", 1)
    await store.delete_phonebook_entry("alice", 9)
    assert await store.get_phonebook("alice") == [PhonebookEntry(2, "dad", "+4930333")]
    await store.set_phonebook_entry("alice", PhonebookEntry(3, "mum", "+4930444"))
    assert [e.name for e in await store.get_phonebook("alice")] == ["dad", "mum"]


@pytest_twisted.ensureDeferred
async def test_phonebook_unicode_names(store):
    """Names outside ASCII round-trip and are matched for replacement."""
    await make_account(store)
    await store.set_phonebook_entry("alice", PhonebookEntry(1, "Müller 😀", "+4930222"))
    await store.set_phonebook_entry("alice", PhonebookEntry(2, "Müller 😀", "+4930333"))
    assert await store.get_phonebook("alice") == [PhonebookEntry(2, "Müller 😀", "+4930333")]


@pytest_twisted.ensureDeferred
async def test_phonebook_errors(store):
    """Bad entries and unknown accounts are errors."""
    await make_account(store)
    await fails(store.set_phonebook_entry("alice", PhonebookEntry(-1, "x", "y")), InvalidArgument)
    await fails(store.set_phonebook_entry("alice", PhonebookEntry(1, "", "y")), InvalidArgument)
    await fails(store.set_phonebook_entry("nobody", PhonebookEntry(1, "x", "y")), NoSuchAccount)
    await fails(store.get_phonebook("nobody"), NoSuchAccount)


# -- vouchers ---------------------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_create_vouchers(store):
    """create_vouchers makes distinct 12-digit codes of the value in the batch."""
    made = await store.create_vouchers("b1", 1000, 20)
    assert len({v.code for v in made}) == 20
    assert all(len(v.code) == 12 and v.code.isdigit() for v in made)
    assert all(v.value == 1000 and v.batch == "b1" and not v.used_by for v in made)
    listed = await store.list_vouchers("b1")
    assert sorted(v.code for v in listed) == sorted(v.code for v in made)


@pytest_twisted.ensureDeferred
async def test_get_voucher(store):
    """get_voucher reads one back; an unknown code is None."""
    (voucher,) = await store.create_vouchers("b1", 500, 1)
    assert await store.get_voucher(voucher.code) == voucher
    assert await store.get_voucher("000000000000") is None or voucher.code == "000000000000"


@pytest_twisted.ensureDeferred
async def test_redeem_voucher(store):
    """Redeeming credits the value and marks the voucher used by the account."""
    await make_account(store)
    (voucher,) = await store.create_vouchers("b1", 500, 1)
    assert await store.redeem_voucher(voucher.code, "alice") == 500
    assert await store.get_balance("alice") == 500
    used = await store.get_voucher(voucher.code)
    assert used.used_by == "alice"


@pytest_twisted.ensureDeferred
async def test_redeem_twice_is_refused(store):
    """A voucher is single use."""
    await make_account(store, "alice")
    await make_account(store, "bob")
    (voucher,) = await store.create_vouchers("b1", 500, 1)
    await store.redeem_voucher(voucher.code, "alice")
    await fails(store.redeem_voucher(voucher.code, "bob"), VoucherUsed)
    assert await store.get_balance("bob") == 0


@pytest_twisted.ensureDeferred
async def test_redeem_errors(store):
    """Unknown codes and accounts are errors, and leave the voucher unused."""
    await make_account(store)
    (voucher,) = await store.create_vouchers("b1", 500, 1)
    await fails(store.redeem_voucher("not-a-code", "alice"), NoSuchVoucher)
    await fails(store.redeem_voucher(voucher.code, "nobody"), NoSuchAccount)
    assert (await store.get_voucher(voucher.code)).used_by == ""


@pytest.mark.parametrize(("batch", "value", "count"), [("b 1", 1, 1), ("b", 0, 1), ("b", 1, 0)])
@pytest_twisted.ensureDeferred
async def test_create_vouchers_rejects_bad_arguments(store, batch, value, count):
    """Bad batch names, values and counts errback InvalidArgument."""
    await fails(store.create_vouchers(batch, value, count), InvalidArgument)


# -- CDRs ----------------------------------------------------------------------------------


def cdr(cdr_id: str, username: str, ended_at: float, **kw) -> CDR:
    """A leg CDR."""
    return CDR(cdr_id, username, "s1", "leg", "source", ended_at=ended_at, **kw)


@pytest_twisted.ensureDeferred
async def test_cdrs_listed_oldest_first(store):
    """list_cdrs fires with every CDR, oldest first, ties by id."""
    await store.append_cdr(cdr("c3", "alice", 30.0))
    await store.append_cdr(cdr("c1", "bob", 10.0, extra={"k": "v"}, cost=120))
    await store.append_cdr(cdr("c2b", "alice", 20.0))
    await store.append_cdr(cdr("c2a", "bob", 20.0))
    found = await store.list_cdrs()
    assert [c.cdr_id for c in found] == ["c1", "c2a", "c2b", "c3"]
    assert found[0] == cdr("c1", "bob", 10.0, extra={"k": "v"}, cost=120)


@pytest_twisted.ensureDeferred
async def test_cdrs_by_account_and_range(store):
    """list_cdrs filters by account and by an inclusive time range."""
    for i, user in enumerate(["alice", "bob", "alice", "alice"]):
        await store.append_cdr(cdr(f"c{i}", user, 100.0 + i))
    assert [c.cdr_id for c in await store.list_cdrs("alice")] == ["c0", "c2", "c3"]
    assert [c.cdr_id for c in await store.list_cdrs("alice", since=101, until=102)] == ["c2"]
    assert [c.cdr_id for c in await store.list_cdrs(since=101.0)] == ["c1", "c2", "c3"]
    assert await store.list_cdrs("nobody") == []


@pytest_twisted.ensureDeferred
async def test_duplicate_cdr_is_ignored(store):
    """A second CDR with the same id changes nothing."""
    await store.append_cdr(cdr("c1", "alice", 10.0, cost=5))
    await store.append_cdr(cdr("c1", "alice", 99.0, cost=7))
    assert await store.list_cdrs() == [cdr("c1", "alice", 10.0, cost=5)]


@pytest_twisted.ensureDeferred
async def test_bad_cdr_is_refused(store):
    """A CDR without an id errbacks InvalidArgument."""
    await fails(store.append_cdr(cdr("", "alice", 1.0)), InvalidArgument)


# -- sessions ---------------------------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_session_lifecycle(store):
    """Sessions are saved, listed, loaded, overwritten and deleted."""
    data = {"state": "ringing", "legs": [{"n": "+4930"}], "cost": 12}
    await store.save_session("cb1-2", data)
    await store.save_session("cb1-1", {"state": "new"})
    assert await store.list_sessions() == ["cb1-1", "cb1-2"]
    assert await store.load_session("cb1-2") == data
    await store.save_session("cb1-2", {"state": "up"})
    assert await store.load_session("cb1-2") == {"state": "up"}
    await store.delete_session("cb1-2")
    assert await store.load_session("cb1-2") is None
    assert await store.list_sessions() == ["cb1-1"]


@pytest_twisted.ensureDeferred
async def test_loaded_session_is_a_copy(store):
    """Changing a loaded dict does not change the stored session."""
    await store.save_session("s", {"a": [1]})
    loaded = await store.load_session("s")
    loaded["a"].append(2)
    assert await store.load_session("s") == {"a": [1]}


@pytest_twisted.ensureDeferred
async def test_unjsonable_session_is_refused(store):
    """Session data must be a JSON-able dict."""
    await fails(store.save_session("s", {"x": object()}), InvalidArgument)
    await fails(store.save_session("s", ["not", "a", "dict"]), InvalidArgument)
    assert await store.list_sessions() == []


# -- provider statistics ------------------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_provider_attempts(store):
    """Attempts come back since a time, oldest first, with their fields."""
    await store.record_provider_attempt("MKS", 100.0, True, 2.5, 60, "answered")
    await store.record_provider_attempt("MKS", 90.0, False, 0.0, 0, "busy")
    await store.record_provider_attempt("MKS", 100.0, True, 2.5, 60, "answered")
    await store.record_provider_attempt("PAKLINE", 95.0, False, 1.0, 0, "congestion")
    found = await store.provider_attempts("MKS", 0)
    assert [a["at"] for a in found] == [90.0, 100.0, 100.0]
    assert found[1] == {
        "at": 100.0,
        "answered": True,
        "pdd": 2.5,
        "duration": 60,
        "cause": "answered",
    }
    assert len(await store.provider_attempts("MKS", 95.0)) == 2


@pytest_twisted.ensureDeferred
async def test_provider_attempts_trimmed_to_window(store):
    """Attempts older than the window before the newest are dropped."""
    window = store.provider_window
    await store.record_provider_attempt("MKS", 1000.0, False, 0.0, 0, "busy")
    await store.record_provider_attempt("MKS", 1000.0 + window + 1, True, 1.0, 5, "answered")
    assert [a["cause"] for a in await store.provider_attempts("MKS", 0)] == ["answered"]


@pytest_twisted.ensureDeferred
async def test_provider_attempt_errors(store):
    """Bad provider names and values errback InvalidArgument."""
    await fails(store.record_provider_attempt("no such!", 1.0, True, 1, 1, ""), InvalidArgument)
    await fails(store.record_provider_attempt("MKS", "soon", True, 1, 1, ""), InvalidArgument)


# -- the fake's own switches ------------------------------------------------------------


def test_memory_store_stamps_with_its_clock():
    """MemoryStore stamps creation times with the injected clock."""
    clock = Clock()
    clock.advance(1234.5)
    store = MemoryStore(clock)
    created = store.create_account(Account("alice"), "pw")
    assert created.result.created_at == 1234.5
    vouchers = store.create_vouchers("b", 1, 1).result
    assert vouchers[0].created_at == 1234.5


def test_memory_store_can_be_unavailable():
    """Clearing MemoryStore.available makes calls errback StoreUnavailable."""
    from callbackd.store.interface import StoreUnavailable

    store = MemoryStore(Clock())
    store.available = False
    failure = store.ping()
    failure.addErrback(lambda f: f.trap(StoreUnavailable) and "down")
    assert failure.result == "down"


def test_account_dataclass_round_trips_through_fields():
    """The Redis hash encoding of an Account reads back equal."""
    from callbackd.store import records

    account = Account("a.b", "de", "gold", AccountStatus.BLOCKED, 5, 3, "+4930", 7, 1.25)
    assert records.account_from_fields(records.account_to_fields(account)) == account
    assert dataclasses.asdict(account)["status"] is AccountStatus.BLOCKED


# -- IVR PIN lockout (phone callback) -------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_pin_failures_lock_the_account_and_the_caller_id(store):
    """The third wrong PIN in the window locks PIN entry for the period, for the account
    (from any caller ID) and for the caller ID (for any account)."""
    assert await store.pin_locked_until("alice", "+4930123456", 1000.0) == 0.0
    assert await store.pin_failed("alice", "+4930123456", 1000.0, 3, 600) == 0.0
    assert await store.pin_failed("alice", "+4930123456", 1010.0, 3, 600) == 0.0
    assert await store.pin_failed("alice", "+4930123456", 1020.0, 3, 600) == 1620.0
    assert await store.pin_locked_until("alice", "+4930999999", 1100.0) == 1620.0
    assert await store.pin_locked_until("bob", "+4930123456", 1100.0) == 1620.0
    assert await store.pin_locked_until("bob", "+4930999999", 1100.0) == 0.0
    assert await store.pin_locked_until("alice", "+4930123456", 1620.5) == 0.0


@pytest_twisted.ensureDeferred
async def test_pin_failures_count_in_a_window_and_a_success_forgets_them(store):
    await store.pin_failed("alice", "+4930123456", 1000.0, 3, 600)
    await store.pin_failed("alice", "+4930123456", 1010.0, 3, 600)
    # the window of the first failure is over: counting starts again
    assert await store.pin_failed("alice", "+4930123456", 1700.0, 3, 600) == 0.0
    assert await store.pin_failed("alice", "+4930123456", 1710.0, 3, 600) == 0.0
    await store.pin_succeeded("alice", "+4930123456")
    assert await store.pin_failed("alice", "+4930123456", 1720.0, 3, 600) == 0.0
    assert await store.pin_failed("alice", "+4930123456", 1730.0, 3, 600) == 0.0
    assert await store.pin_locked_until("alice", "+4930123456", 1730.0) == 0.0


# -- IVR: the PIN index (unknown callers) -------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_a_pin_names_its_account(store):
    """account_for_pin finds the account by its PIN alone: set at creation, replaced by
    set_pin (the old PIN names no one then); a malformed PIN names no one."""
    await make_account(store, pin="24680")
    await make_account(store, "bob", pin="13579")
    assert await store.account_for_pin("24680") == "alice"
    assert await store.account_for_pin("13579") == "bob"
    assert await store.account_for_pin("11111") is None
    await store.set_pin("alice", "86420")
    assert await store.account_for_pin("86420") == "alice"
    assert await store.account_for_pin("24680") is None
    for bad in ("", "12", "abcd", "1" * 13, 1234, None):
        assert await store.account_for_pin(bad) is None


@pytest_twisted.ensureDeferred
async def test_a_pin_is_one_accounts(store):
    """Another account's PIN is refused by set_pin and create_account, and changes
    nothing; setting an account's own PIN again is fine."""
    await make_account(store, pin="24680")
    await make_account(store, "bob", pin="13579")
    await fails(store.set_pin("bob", "24680"), InvalidArgument)
    assert await store.check_pin("bob", "13579")
    assert not await store.check_pin("bob", "24680")
    assert await store.account_for_pin("24680") == "alice"
    await fails(make_account(store, "carol", pin="24680"), InvalidArgument)
    assert await store.get_account("carol") is None
    await store.set_pin("alice", "24680")
    assert await store.account_for_pin("24680") == "alice"


@pytest_twisted.ensureDeferred
async def test_the_pin_index_does_not_hold_the_pin(store):
    """The index keeps a keyed hash: neither the PIN nor its plain SHA-256 is stored."""
    import hashlib

    from callbackd.store.hashing import pin_index

    await make_account(store, pin="24680")
    entry = pin_index(store.pin_pepper, "24680")
    plain = hashlib.sha256(b"24680").hexdigest()
    assert entry != plain and "24680" not in entry
    assert pin_index(b"another pepper", "24680") != entry


@pytest_twisted.ensureDeferred
async def test_an_unknown_callers_pin_failures_lock_the_caller_id_alone(store):
    """username "": the caller ID's counter alone; no account is locked."""
    assert await store.pin_failed("", "+4930123456", 1000.0, 2, 600) == 0.0
    assert await store.pin_failed("", "+4930123456", 1010.0, 2, 600) == 1610.0
    assert await store.pin_locked_until("", "+4930123456", 1100.0) == 1610.0
    assert await store.pin_locked_until("alice", "+4930123456", 1100.0) == 1610.0
    assert await store.pin_locked_until("alice", "+4930999999", 1100.0) == 0.0
    assert await store.pin_locked_until("", "+4930999999", 1100.0) == 0.0
    await store.pin_succeeded("", "+4930123456")
    assert await store.pin_locked_until("", "+4930123456", 1100.0) == 1610.0
