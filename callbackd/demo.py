"""Demo data: the accounts ``alice`` and ``bob`` with some credit, and ``operator`` (for the
portal's operators' pages, with ``[portal] operators = operator``), each with the password
:data:`DEMO_PASSWORD` ([daemon] demo_data = yes)."""

from __future__ import annotations

from typing import Any

from twisted.application import service
from twisted.internet import defer
from twisted.logger import Logger

from callbackd.core.model import Account
from callbackd.store.interface import AccountExists, StoreError

__all__ = ["DEMO_ACCOUNTS", "DEMO_PASSWORD", "DemoDataService", "ensure_demo_accounts"]

log = Logger(namespace="callbackd.demo")

#: username, default callback number, credit in currency units (as text, exact)
DEMO_ACCOUNTS = (
    ("alice", "+15550011111", "10.00"),
    ("bob", "+15550014444", "5.00"),
    ("operator", "", "0"),
)
#: the demo accounts' password, to log in to the portal (README.rst, "Web portal"); a
#: demo account whose password differs (made before there was one) gets it at start
DEMO_PASSWORD = "demo-password"


async def ensure_demo_accounts(store: Any, decimals: int) -> list[str]:
    """Create the demo accounts that are missing; return the names created."""
    from callbackd.core.money import parse_amount

    created = []
    for username, number, credit in DEMO_ACCOUNTS:
        if await store.get_account(username) is not None:
            if not await store.check_password(username, DEMO_PASSWORD):
                await store.set_password(username, DEMO_PASSWORD)
            continue
        account = Account(username=username, default_number=number, max_sessions=5)
        try:
            await store.create_account(account, DEMO_PASSWORD)
        except AccountExists:
            continue
        amount = parse_amount(credit, decimals)
        if amount:
            await store.credit(username, amount, f"demo-{username}")
        created.append(username)
    return created


class DemoDataService(service.Service):
    """Creates the demo accounts once the store answers; never blocks the start."""

    def __init__(self, store: Any, decimals: int, clock: Any, retry: float = 1.0) -> None:
        self.store = store
        self.decimals = decimals
        self.clock = clock
        self.retry = retry
        self._call: Any = None

    def startService(self) -> None:
        super().startService()
        self._attempt()

    def _attempt(self) -> None:
        self._call = None
        d = defer.ensureDeferred(ensure_demo_accounts(self.store, self.decimals))
        d.addCallbacks(self._done, self._failed)

    def _done(self, created: list[str]) -> None:
        if created:
            log.info("demo accounts created: {names}", names=", ".join(created))

    def _failed(self, failure: Any) -> None:
        failure.trap(StoreError)
        if self.running:
            self._call = self.clock.callLater(self.retry, self._attempt)

    def stopService(self) -> None:
        super().stopService()
        if self._call is not None and self._call.active():
            self._call.cancel()
