"""``callbackd-admin``: accounts, money, vouchers and CDRs from the command line.

It works on the same Redis as the daemon, found through the same config file.
In embedded mode it uses the daemon's redis-server when one answers on the
socket in the state directory; otherwise it starts the embedded redis-server
itself for the duration of the command (same data directory, so the daemon sees
the changes when it starts).

Secrets never go on the command line: ``--password-file F``, ``--password-env V``
or ``--password`` (prompted for, or one line read from stdin when it is not a
terminal); the same for PINs. Exit status: 0 done, 1 the operation failed (one
line on stderr says why), 2 bad arguments (usage on stderr).

Examples::

    callbackd-admin -c etc/callbackd.ini create-account alice --password-env PW --pin-env PIN
    callbackd-admin -c etc/callbackd.ini topup alice 10.50
    callbackd-admin -c etc/callbackd.ini voucher-batch spring 100 5.00 -o spring.csv
    callbackd-admin -c etc/callbackd.ini list-cdrs alice --since 2025-01-01 > alice.csv
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import getpass
import json
import os
import sys
import traceback
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any, TextIO

from callbackd.config import Config, ConfigError, load_config
from callbackd.core.model import CDR, Account
from callbackd.core.money import format_amount, parse_amount

__all__ = ["build_parser", "main"]

PROG = "callbackd-admin"

Job = Callable[[Any], Awaitable[None]]


def _iso_time(text: str) -> float:
    """ISO 8601 date or date-time -> epoch seconds (a naive time is UTC)."""
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an ISO 8601 date or time: {text!r}") from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.timestamp()


def _count(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if not 1 <= value <= 100_000:
        raise argparse.ArgumentTypeError(f"COUNT must be a whole number from 1 to 100000: {text!r}")
    return value


def _secret_options(parser: argparse.ArgumentParser, what: str, required: bool) -> None:
    group = parser.add_mutually_exclusive_group(required=required)
    group.add_argument(f"--{what}-file", metavar="FILE", help=f"read the {what} from FILE")
    group.add_argument(
        f"--{what}-env", metavar="VAR", help=f"take the {what} from environment variable VAR"
    )
    group.add_argument(
        f"--{what}",
        action="store_true",
        help=f"prompt for the {what} (or read one line from stdin if it is not a terminal)",
    )


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``callbackd-admin``."""
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Administer callbackd accounts, balances, vouchers, CDRs and chat links.",
    )
    parser.add_argument(
        "-c",
        "--config",
        default=os.environ.get("CALLBACKD_CONFIG", "etc/callbackd.ini"),
        help="the daemon's INI file (default: $CALLBACKD_CONFIG or etc/callbackd.ini)",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def command(name: str, help: str) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help, description=help)
        p.set_defaults(parser=p)
        return p

    p = command("create-account", "create an account (balance 0)")
    p.add_argument("username")
    _secret_options(p, "password", required=True)
    _secret_options(p, "pin", required=False)
    p.add_argument("--language", default="en")
    p.add_argument("--tariff", default="default")
    p.add_argument("--credit-limit", default="0", metavar="AMOUNT", help="e.g. 5.00")
    p.add_argument("--max-sessions", type=int, default=2)
    p.add_argument("--default-number", default="", metavar="NUMBER", help="E.164, e.g. +4930...")

    p = command("set-password", "replace an account's password")
    p.add_argument("username")
    _secret_options(p, "password", required=True)

    p = command("set-pin", "replace an account's PIN")
    p.add_argument("username")
    _secret_options(p, "pin", required=True)

    p = command("topup", "credit an account")
    p.add_argument("username")
    p.add_argument("amount", help="in currency units, e.g. 10.50")
    p.add_argument("--key", help="idempotency key: re-running with the same key credits only once")

    p = command("balance", "show an account's balance")
    p.add_argument("username")

    p = command("voucher-batch", "create a batch of vouchers; CSV code,batch,value")
    p.add_argument("batch")
    p.add_argument("count", type=_count)
    p.add_argument("value", help="in currency units, e.g. 5.00")
    p.add_argument("-o", "--output", metavar="FILE", help="write the CSV to FILE (not stdout)")

    p = command("redeem", "redeem a voucher for an account")
    p.add_argument("code")
    p.add_argument("username")

    p = command("list-cdrs", "CDRs as CSV, oldest first")
    p.add_argument("username", nargs="?")
    p.add_argument("--since", type=_iso_time, default=0.0, metavar="ISO")
    p.add_argument("--until", type=_iso_time, default=None, metavar="ISO")

    command("list-accounts", "every account as CSV: username,status,balance")

    p = command("link-jid", "link an XMPP address to an account (as LINK does in chat)")
    p.add_argument("jid", help="user@domain (a resource is dropped)")
    p.add_argument("username")

    p = command("unlink-jid", "unlink an XMPP address (as UNLINK does in chat)")
    p.add_argument("jid")

    p = command("invite", "have the running daemons' chat service ask an XMPP address to add it")
    p.add_argument("jid")

    p = command("set-sms-progress", "how much call progress an account gets by SMS")
    p.add_argument("username")
    p.add_argument(
        "mode",
        choices=["all", "outcome", "none", "default"],
        help="every event, the outcome only, none, or the [sms] progress default",
    )

    # the REST API
    p = command("create-api-key", "make a REST API key for an account (its secret is shown once)")
    p.add_argument("username")
    p.add_argument("--label", default="", help="what the key is for (up to 64 characters)")

    p = command("list-api-keys", "an account's REST API keys as CSV: key_id,label,created_at")
    p.add_argument("username")

    p = command("revoke-api-key", "revoke one of an account's REST API keys")
    p.add_argument("username")
    p.add_argument("key_id")
    return parser


def _read_secret(args: argparse.Namespace, what: str) -> str | None:
    """The secret from --WHAT-file, --WHAT-env or a prompt; None if none was asked for."""
    usage = args.parser
    file_name = getattr(args, f"{what}_file")
    env_name = getattr(args, f"{what}_env")
    if file_name is not None:
        try:
            with open(file_name, encoding="utf-8") as f:
                return f.readline().rstrip("\r\n")
        except OSError as e:
            usage.error(f"cannot read --{what}-file {file_name}: {e.strerror or e}")
    if env_name is not None:
        if env_name not in os.environ:
            usage.error(f"--{what}-env: environment variable {env_name} is not set")
        return os.environ[env_name]
    if getattr(args, what):
        if not sys.stdin.isatty():
            return sys.stdin.readline().rstrip("\r\n")
        first = getpass.getpass(f"{what}: ")
        if getpass.getpass(f"{what} again: ") != first:
            usage.error(f"the two {what}s differ")
        return first
    return None


def _amount(args: argparse.Namespace, text: str, name: str, config: Config) -> int:
    try:
        return parse_amount(text, config.billing.decimals)
    except ValueError as e:
        args.parser.error(f"{name}: {e}")
        raise  # pragma: no cover - error() exits


def _money(minor: int, config: Config) -> str:
    return f"{format_amount(minor, config.billing.decimals)} {config.billing.currency}"


def _iso(seconds: float) -> str:
    return datetime.fromtimestamp(seconds, UTC).isoformat() if seconds else ""


def _prepare(args: argparse.Namespace, config: Config) -> Job:
    """Check the arguments against the config and read secrets; the job to run on a store."""
    cmd = args.command
    user = getattr(args, "username", None)
    if cmd == "create-account":
        password = _read_secret(args, "password")
        pin = _read_secret(args, "pin")
        limit = _amount(args, args.credit_limit, "--credit-limit", config)
        if limit < 0:
            args.parser.error("--credit-limit must not be negative")
        account = Account(
            args.username,
            language=args.language,
            tariff=args.tariff,
            credit_limit=limit,
            max_sessions=args.max_sessions,
            default_number=args.default_number,
        )

        async def create(store: Any) -> None:
            await store.create_account(account, password, pin)
            print(f"created account {user}")

        return create
    if cmd in ("set-password", "set-pin"):
        what = cmd.removeprefix("set-")
        secret = _read_secret(args, what)

        async def set_secret(store: Any) -> None:
            await getattr(store, f"set_{what}")(user, secret)
            print(f"{what} of {user} changed")

        return set_secret
    if cmd == "topup":
        amount = _amount(args, args.amount, "AMOUNT", config)
        if amount <= 0:
            args.parser.error("AMOUNT must be positive")
        key = args.key or f"admin-topup-{uuid.uuid4()}"

        async def topup(store: Any) -> None:
            balance = await store.credit(user, amount, key)
            print(f"{user}: +{_money(amount, config)}, balance {_money(balance, config)}")

        return topup
    if cmd == "balance":

        async def balance(store: Any) -> None:
            print(_money(await store.get_balance(user), config))

        return balance
    if cmd == "voucher-batch":
        value = _amount(args, args.value, "VALUE", config)
        if value <= 0:
            args.parser.error("VALUE must be positive")
        if args.output and os.path.exists(args.output):
            args.parser.error(f"{args.output} exists; not overwriting voucher codes")

        async def vouchers(store: Any) -> None:
            made = await store.create_vouchers(args.batch, value, args.count)
            if args.output:
                fd = os.open(args.output, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
                with os.fdopen(fd, "w", newline="", encoding="utf-8") as out:
                    _write_vouchers(out, made, config)
                print(f"wrote {len(made)} vouchers to {args.output}", file=sys.stderr)
            else:
                _write_vouchers(sys.stdout, made, config)

        return vouchers
    if cmd == "redeem":

        async def redeem(store: Any) -> None:
            value = await store.redeem_voucher(args.code, user)
            balance = await store.get_balance(user)
            print(f"redeemed {_money(value, config)} for {user}, balance {_money(balance, config)}")

        return redeem
    if cmd == "list-cdrs":

        async def cdrs(store: Any) -> None:
            found = await store.list_cdrs(user, since=args.since, until=args.until)
            _write_cdrs(sys.stdout, found, config)

        return cdrs
    if cmd == "link-jid":

        async def link(store: Any) -> None:
            await store.link_jid(args.jid, user)
            print(f"{args.jid} linked to {user}")

        return link
    if cmd == "unlink-jid":

        async def unlink(store: Any) -> None:
            was = await store.unlink_jid(args.jid)
            print(f"{args.jid} unlinked" if was else f"{args.jid} was not linked")

        return unlink
    if cmd == "set-sms-progress":
        mode = "" if args.mode == "default" else args.mode

        async def set_progress(store: Any) -> None:
            await store.update_account(user, sms_progress=mode)
            print(f"SMS progress of {user}: {args.mode}")

        return set_progress
    if cmd == "invite":

        async def invite(store: Any) -> None:
            from callbackd.store.interface import StoreError

            heard = await store.request_invite(args.jid)
            if not heard:
                raise StoreError("no daemon is running on this store: nobody to send it")
            print(f"invitation to {args.jid} handed to {heard} daemon(s) listening")

        return invite
    if cmd in ("create-api-key", "list-api-keys", "revoke-api-key"):
        return _api_key_job(args)
    assert cmd == "list-accounts", cmd

    async def accounts(store: Any) -> None:
        out = csv.writer(sys.stdout, lineterminator="\n")
        out.writerow(["username", "status", "balance"])
        for name in await store.list_accounts():
            account = await store.get_account(name)
            if account is None:  # deleted meanwhile
                continue
            minor = await store.get_balance(name)
            out.writerow(
                [name, account.status.value, format_amount(minor, config.billing.decimals)]
            )

    return accounts


def _api_key_job(args: argparse.Namespace) -> Job:
    """The REST API key commands."""
    user = args.username

    async def create(store: Any) -> None:
        key_id, secret = await store.create_api_key(user, args.label)
        print(f"API key {key_id} of {user} (shown once, keep it secret):", file=sys.stderr)
        print(secret)

    async def list_(store: Any) -> None:
        out = csv.writer(sys.stdout, lineterminator="\n")
        out.writerow(["key_id", "label", "created_at"])
        for key in await store.list_api_keys(user):
            out.writerow([key.key_id, key.label, _iso(key.created_at)])

    async def revoke(store: Any) -> None:
        from callbackd.store.interface import StoreError

        if not await store.revoke_api_key(user, args.key_id):
            raise StoreError(f"{user} has no API key {args.key_id}")
        print(f"API key {args.key_id} of {user} revoked")

    jobs = {"create-api-key": create, "list-api-keys": list_, "revoke-api-key": revoke}
    return jobs[args.command]


def _write_vouchers(out: TextIO, vouchers: list[Any], config: Config) -> None:
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["code", "batch", "value"])
    for v in vouchers:
        writer.writerow([v.code, v.batch, format_amount(v.value, config.billing.decimals)])


def _write_cdrs(out: TextIO, cdrs: list[CDR], config: Config) -> None:
    names = [f.name for f in dataclasses.fields(CDR)]
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(names)
    decimals = config.billing.decimals
    for c in cdrs:
        row = []
        for name in names:
            value = getattr(c, name)
            if name.endswith("_at"):
                value = _iso(value)
            elif name in ("rate", "cost"):
                value = format_amount(value, decimals)
            elif name == "extra":
                value = json.dumps(value, sort_keys=True) if value else ""
            row.append(value)
        writer.writerow(row)


async def _session(reactor: Any, config: Config, job: Job, usage: str) -> None:
    """Reach the configured Redis (starting the embedded one if needed), run ``job``."""
    from callbackd.store.embedded import EmbeddedRedisError, EmbeddedRedisService, redis_command
    from callbackd.store.embedded import socket_path as embedded_socket
    from callbackd.store.interface import InvalidArgument, StoreError
    from callbackd.store.redis import make_store

    embedded = None
    try:
        if config.redis.mode == "embedded":
            path = embedded_socket(config.state_dir)
            if await redis_command(reactor, path, "PING") is None:
                embedded = EmbeddedRedisService(config.redis, config.state_dir, reactor)
                await embedded.startService()
        store = make_store(config, reactor)
        try:
            await store.connect()
            await job(store)
        finally:
            await store.disconnect()
    except InvalidArgument as e:
        # refused by the store's checks (a malformed username, PIN...): a usage error
        sys.stdout.flush()
        print(f"{usage.rstrip()}\n{PROG}: error: {e}", file=sys.stderr)
        raise SystemExit(2) from None
    except (StoreError, EmbeddedRedisError, OSError) as e:
        _fail(str(e) or type(e).__name__)
    except SystemExit:
        raise
    except Exception as e:
        traceback.print_exc()
        _fail(f"internal error: {e!r}")
    finally:
        if embedded is not None:
            await embedded.stopService()


def _fail(message: str) -> None:
    sys.stdout.flush()
    print(f"{PROG}: {message}", file=sys.stderr)
    raise SystemExit(1)


def main(argv: list[str] | None = None) -> int:
    """Run ``callbackd-admin`` with ``argv``; the exit status."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
        try:
            config = load_config(args.config)
        except ConfigError as e:
            for problem in e.problems:
                print(f"{PROG}: {problem}", file=sys.stderr)
            return 1
        job = _prepare(args, config)
    except SystemExit as e:
        return e.code if isinstance(e.code, int) else 2

    from twisted.internet import defer, task

    try:
        task.react(
            lambda reactor: defer.ensureDeferred(
                _session(reactor, config, job, args.parser.format_usage())
            )
        )
    except SystemExit as e:
        return e.code if isinstance(e.code, int) else 1
    return 0  # pragma: no cover - react always exits


if __name__ == "__main__":
    sys.exit(main())
