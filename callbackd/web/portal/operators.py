"""The operators' pages (role ``operator``: the usernames of ``[portal] operators``):
accounts (create, block, top up, limits), voucher batches (generate, CSV), providers
with their live quality and channels in use, and the sessions in flight (hang up)."""

from __future__ import annotations

import csv
import io
import re
import secrets
from typing import Any

from twisted.web.server import Request

from callbackd.core.model import Account, AccountStatus
from callbackd.core.money import format_amount
from callbackd.engine.errors import CallbackRefused
from callbackd.i18n import LANGUAGES
from callbackd.web.portal import forms
from callbackd.web.portal.base import Page, PortalBase, Refused, app
from callbackd.web.portal.users import EXPECTED, message

__all__ = ["OperatorPages"]

_USERNAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._@+-]{0,63}")
_BATCH = re.compile(r"[A-Za-z0-9._-]{1,64}")
_NONCE = re.compile(r"[A-Za-z0-9_-]{16,64}")
#: the most accounts listed on one page
MAX_LISTED = 500
#: the most vouchers generated at once
MAX_VOUCHERS = 1000

OPS_DONE = {
    "created": "web.done.account_created",
    "saved": "web.done.saved",
    "topup": "web.done.topup",
    "hung_up": "web.done.hung_up",
}


class OperatorPages(PortalBase):
    """The routes of the operators' role."""

    @app.route("/ops/", methods=["GET"])
    async def ops_home(self, request: Request) -> bytes:
        await self.page(request, "operator")
        return self.redirect(request, "/ops/sessions")

    # -- accounts --------------------------------------------------------------------------

    @app.route("/ops/accounts", methods=["GET"])
    async def ops_accounts(self, request: Request) -> bytes:
        page = await self.page(request, "operator")
        return await self._accounts(request, page)

    async def _accounts(
        self, request: Request, page: Page, error: str = "", status: int = 200
    ) -> bytes:
        rows = []
        for name in (await self.store.list_accounts())[:MAX_LISTED]:
            account = await self.store.get_account(name)
            if account is None:
                continue
            rows.append((account, await self.store.get_balance(name)))
        return self.render(
            request,
            page,
            "ops_accounts.html",
            status=status,
            error=error,
            done=self.done(request, page, OPS_DONE),
            rows=rows,
            nonce=secrets.token_urlsafe(16),
            amount=lambda minor: format_amount(minor, self.decimals),
        )

    @app.route("/ops/accounts", methods=["POST"])
    async def ops_account_create(self, request: Request) -> bytes:
        page = await self.page(request, "operator")
        fields = self.form(request, page)
        try:
            username = forms.text(fields, "username", pattern=_USERNAME, max_length=64)
            password = forms.text(fields, "password", max_length=256)
            if len(password) < 8:
                raise forms.FormError("web.error.short_password")
            language = forms.choice(fields, "language", LANGUAGES, required=False) or "en"
            number = fields.get("default_number", "").strip()
            if number:
                number = self.engine.legs.address(forms.text(fields, "default_number")).value
            account = Account(username, language=language, default_number=number)
            await self.store.create_account(account, password)
        except EXPECTED as e:
            return await self._accounts(request, page, message(page, e), 400)
        return self.redirect(request, "/ops/accounts", "created")

    def _username(self, fields: dict[str, str]) -> str:
        return forms.text(fields, "username", pattern=_USERNAME, max_length=64)

    @app.route("/ops/accounts/status", methods=["POST"])
    async def ops_account_status(self, request: Request) -> bytes:
        page = await self.page(request, "operator")
        fields = self.form(request, page)
        try:
            username = self._username(fields)
            status = forms.choice(fields, "status", [s.value for s in AccountStatus])
            await self.store.update_account(username, status=AccountStatus(status))
            self.engine.account_changed(username)
        except EXPECTED as e:
            return await self._accounts(request, page, message(page, e), 400)
        return self.redirect(request, "/ops/accounts", "saved")

    @app.route("/ops/accounts/topup", methods=["POST"])
    async def ops_account_topup(self, request: Request) -> bytes:
        page = await self.page(request, "operator")
        fields = self.form(request, page)
        try:
            username = self._username(fields)
            amount = forms.amount(fields, "amount", self.decimals)
            nonce = forms.text(fields, "nonce", pattern=_NONCE)
            # the form's nonce keys the credit: a form sent twice credits once
            await self.store.credit(username, amount, f"portal-topup-{nonce}")
            await self.engine.balance_changed(username)
        except EXPECTED as e:
            return await self._accounts(request, page, message(page, e), 400)
        return self.redirect(request, "/ops/accounts", "topup")

    @app.route("/ops/accounts/limits", methods=["POST"])
    async def ops_account_limits(self, request: Request) -> bytes:
        page = await self.page(request, "operator")
        fields = self.form(request, page)
        try:
            username = self._username(fields)
            changes: dict[str, Any] = {
                "credit_limit": forms.amount(fields, "credit_limit", self.decimals, positive=False),
                "daily_spend_cap": forms.amount(
                    fields, "daily_spend_cap", self.decimals, positive=False
                ),
                "max_sessions": forms.integer(fields, "max_sessions", minimum=1, maximum=100),
            }
            await self.store.update_account(username, **changes)
            self.engine.account_changed(username)
        except EXPECTED as e:
            return await self._accounts(request, page, message(page, e), 400)
        return self.redirect(request, "/ops/accounts", "saved")

    # -- vouchers ---------------------------------------------------------------------------

    @app.route("/ops/vouchers", methods=["GET"])
    async def ops_vouchers(self, request: Request) -> bytes:
        page = await self.page(request, "operator")
        batch = request.args.get(b"batch", [b""])[0].decode("utf-8", "replace")
        vouchers = await self.store.list_vouchers(batch) if _BATCH.fullmatch(batch) else []
        return self._vouchers(request, page, batch=batch, vouchers=vouchers)

    def _vouchers(
        self, request: Request, page: Page, error: str = "", status: int = 200, **extra: Any
    ) -> bytes:
        extra.setdefault("batch", "")
        extra.setdefault("vouchers", [])
        return self.render(
            request,
            page,
            "ops_vouchers.html",
            status=status,
            error=error,
            amount=lambda minor: format_amount(minor, self.decimals),
            **extra,
        )

    @app.route("/ops/vouchers", methods=["POST"])
    async def ops_vouchers_create(self, request: Request) -> bytes:
        page = await self.page(request, "operator")
        fields = self.form(request, page)
        try:
            batch = forms.text(fields, "batch", pattern=_BATCH)
            value = forms.amount(fields, "value", self.decimals)
            count = forms.integer(fields, "count", minimum=1, maximum=MAX_VOUCHERS)
            if await self.store.list_vouchers(batch):
                raise Refused(400, "web.error.batch_exists")
            vouchers = await self.store.create_vouchers(batch, value, count)
        except (*EXPECTED, Refused) as e:
            return self._vouchers(request, page, message(page, e), 400)
        return self._vouchers(request, page, batch=batch, vouchers=vouchers, created=True)

    @app.route("/ops/vouchers/<string:batch>.csv", methods=["GET"])
    async def ops_vouchers_csv(self, request: Request, batch: str) -> bytes:
        await self.page(request, "operator")
        if not _BATCH.fullmatch(batch):
            raise Refused(404, "web.error.not_found")
        out = io.StringIO()
        writer = csv.writer(out, lineterminator="\r\n")
        writer.writerow(["code", "batch", "value", "used_by"])
        for v in await self.store.list_vouchers(batch):
            writer.writerow([v.code, v.batch, format_amount(v.value, self.decimals), v.used_by])
        request.setHeader(b"content-type", b"text/csv; charset=utf-8")
        request.setHeader(
            b"content-disposition", f'attachment; filename="vouchers-{batch}.csv"'.encode()
        )
        return out.getvalue().encode("utf-8")

    # -- providers ----------------------------------------------------------------------------

    @app.route("/ops/providers", methods=["GET"])
    async def ops_providers(self, request: Request) -> bytes:
        page = await self.page(request, "operator")
        stats = await self.engine.stats.stats()
        rows = []
        for name, provider in sorted(self.engine.providers.items()):
            quality = stats.get(name)
            rows.append(
                {
                    "name": name,
                    "attempts": quality.attempts if quality else 0,
                    "asr": quality.asr if quality else None,
                    "acd": quality.acd if quality else None,
                    "pdd": quality.pdd if quality else None,
                    "in_use": self.engine.stats.in_use(name),
                    "channels": provider.channels,
                }
            )
        return self.render(request, page, "ops_providers.html", rows=rows)

    # -- sessions in flight -------------------------------------------------------------------

    @app.route("/ops/sessions", methods=["GET"])
    async def ops_sessions(self, request: Request) -> bytes:
        page = await self.page(request, "operator")
        return self._sessions(request, page)

    def _sessions(self, request: Request, page: Page, error: str = "", status: int = 200) -> bytes:
        sessions = []
        for sid in list(self.engine.sessions):
            try:
                sessions.append(self.engine.status(sid))
            except CallbackRefused:
                continue
        return self.render(
            request,
            page,
            "ops_sessions.html",
            status=status,
            error=error,
            done=self.done(request, page, OPS_DONE),
            sessions=sessions,
        )

    @app.route("/ops/sessions/<string:sid>/hangup", methods=["POST"])
    async def ops_hangup(self, request: Request, sid: str) -> bytes:
        page = await self.page(request, "operator")
        self.form(request, page)
        try:
            await self.engine.hangup(sid)
        except EXPECTED as e:
            return self._sessions(request, page, message(page, e), 400)
        return self.redirect(request, "/ops/sessions", "hung_up")
