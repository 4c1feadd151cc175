"""The users' pages: log in, connect two, the call's live legs, history, phonebook,
caller IDs, top-up, API keys, the XMPP invitation, language.

Every POST carries the CSRF token (:meth:`PortalBase.form`); every session id in a URL
is checked to be the logged-in account's (another account's is "not found").
"""

from __future__ import annotations

import csv
import io
import json
import re
import secrets
from typing import Any, cast

from twisted.internet import defer
from twisted.python.failure import Failure
from twisted.web.iweb import IRequest
from twisted.web.server import NOT_DONE_YET, Request

from callbackd.core.model import PhonebookEntry
from callbackd.engine.errors import CallbackRefused
from callbackd.fronts.codes import new_caller_id_code
from callbackd.i18n import LANGUAGES, progress
from callbackd.store.interface import (
    AccountExists,
    InvalidArgument,
    NoSuchAccount,
    NoSuchVoucher,
    StoreError,
    StoreUnavailable,
    VoucherUsed,
)
from callbackd.web.portal import forms
from callbackd.web.portal.base import (
    LANG_COOKIE,
    STATIC,
    STATIC_TYPES,
    Page,
    PortalBase,
    Refused,
    app,
    client_address,
    wants_json,
)
from callbackd.web.portal.forms import FormError
from callbackd.web.portal.live import LEG_STATUSES, address_text, session_view
from callbackd.web.portal.security import ANON_COOKIE, SESSION_COOKIE
from callbackd.web.sse import stream_session_events

__all__ = ["UserPages"]

_CODE = re.compile(r"[0-9]{4,8}")
_PIN = re.compile(r"[A-Za-z0-9-]{4,64}")
_LEG = re.compile(r"[A-Za-z0-9+@._:()/ -]{1,128}")
_KEY_ID = re.compile(r"[A-Za-z0-9_-]{1,64}")

#: the store's refusals, in the catalogue
_STORE_ERRORS: dict[type, str] = {
    NoSuchVoucher: "web.error.voucher_unknown",
    VoucherUsed: "web.error.voucher_used",
    AccountExists: "web.error.account_exists",
    NoSuchAccount: "web.error.no_account",
    StoreUnavailable: "web.error.unavailable",
    InvalidArgument: "web.error.invalid_value",
}


def message(page: Page, error: Exception) -> str:
    """What to tell the user about ``error`` (a form's, the engine's or the store's)."""
    t = page.t
    if isinstance(error, FormError):
        params = dict(error.params)
        if "field" in params:
            params["field"] = t.text("web.label." + params["field"])
        return t.text(error.msgid, **params)
    if isinstance(error, Refused):
        return t.text(error.msgid, **error.params)
    if isinstance(error, CallbackRefused):
        return t.text(error.code, **error.params) if error.code else str(error)
    for kind, msgid in _STORE_ERRORS.items():
        if isinstance(error, kind):
            return t.text(msgid)
    return t.text("web.error.failed")


#: a well-formed username no one is given, to check a password against in vain
NO_ACCOUNT = "0" * 64
#: the roles of a session's legs
ROLES = ("source", "destination", "additional")
#: what a page may say went well (``?done=KEY``)
DONE = {
    "added": "web.done.added",
    "deleted": "web.done.deleted",
    "topup": "web.done.topup",
    "code": "web.done.code_sent",
    "verified": "web.done.verified",
    "invited": "web.done.invited",
    "revoked": "web.done.revoked",
    "language": "web.done.language",
    "saved": "web.done.saved",
}
#: what a request may fail with and still get its page back with a message
EXPECTED = (FormError, CallbackRefused, StoreError)


class UserPages(PortalBase):
    """The routes every logged-in account has."""

    # -- errors, static files -----------------------------------------------------------

    @app.handle_errors(Refused, FormError)
    def refused(self, request: IRequest, failure: Failure) -> Any:
        """A Refused or FormError raised by a route: its message (or the login page)."""
        return defer.ensureDeferred(self._refused(cast(Request, request), failure.value))

    async def _refused(self, request: Request, error: Any) -> bytes:
        status = error.status if isinstance(error, Refused) else 400
        if status == 303:
            return self.redirect(request, "/login")
        page = await self.page(request, role=None)
        if wants_json(request):
            return self.json(request, status, {"ok": False, "message": message(page, error)})
        return self.render(request, page, "problem.html", status=status, error=message(page, error))

    @app.route("/static/<string:name>")
    def static(self, request: Request, name: str) -> bytes:
        if name not in STATIC_TYPES:
            raise Refused(404, "web.error.not_found")
        request.setHeader(b"content-type", STATIC_TYPES[name])
        return (STATIC / name).read_bytes()

    # -- log in and out, language ----------------------------------------------------------

    @app.route("/login", methods=["GET"])
    async def login_page(self, request: Request) -> bytes:
        page = await self.page(request, role=None)
        if page.username:
            return self.redirect(request, "/")
        return self.render(request, page, "login.html")

    @app.route("/login", methods=["POST"])
    async def login(self, request: Request) -> bytes:
        page = await self.page(request, role=None)
        fields = self.form(request, page)
        username = fields.get("username", "").strip()[:64]
        password = fields.get("password", "")[:256]
        address = client_address(request)
        if not self.throttle.allowed(username, address):
            return self.render(
                request, page, "login.html", status=429, error=page.t.text("web.error.throttled")
            )
        try:
            ok = bool(username and password) and await self.store.check_password(username, password)
        except InvalidArgument:
            # a malformed username is no account either: spend the KDF's time all the same
            await self.store.check_password(NO_ACCOUNT, password)
            ok = False
        account = await self.engine.account(username) if ok else None
        if account is None or account.status.value != "active":
            self.throttle.failed(username, address)
            return self.render(
                request, page, "login.html", status=401, error=page.t.text("web.error.login")
            )
        role = "operator" if username in self.operators else "user"
        token = await self.store.create_web_session(username, role, self.config.portal.session_ttl)
        self.set_cookie(request, SESSION_COOKIE, token)
        self.set_cookie(request, ANON_COOKIE, "", max_age=1)
        return self.redirect(request, "/ops/" if role == "operator" else "/")

    @app.route("/logout", methods=["POST"])
    async def logout(self, request: Request) -> bytes:
        page = await self.page(request)
        self.form(request, page)
        await self.store.delete_web_session(page.token)
        self.set_cookie(request, SESSION_COOKIE, "", max_age=1)
        return self.redirect(request, "/login")

    @app.route("/language", methods=["POST"])
    async def language(self, request: Request) -> bytes:
        page = await self.page(request, role=None)
        fields = self.form(request, page)
        language = forms.choice(fields, "language", LANGUAGES)
        self.set_cookie(request, LANG_COOKIE, language, max_age=365 * 86400)
        if page.username:
            await self.store.update_account(page.username, language=language)
            self.engine.account_changed(page.username)
        back = fields.get("back", "/")
        if not re.fullmatch(r"/[A-Za-z0-9/_.-]{0,100}", back) or back.startswith("//"):
            back = "/"
        return self.redirect(request, back if page.username else "/login")

    # -- home: connect two -----------------------------------------------------------------

    @app.route("/", methods=["GET"])
    async def home(self, request: Request) -> bytes:
        page = await self.page(request)
        return await self._home(request, page)

    async def _home(
        self, request: Request, page: Page, error: str = "", status: int = 200
    ) -> bytes:
        balance = await self.store.get_balance(page.username)
        sessions = []
        for sid in self.engine.sessions_of(page.username):
            try:
                sessions.append(self.engine.status(sid))
            except CallbackRefused:
                continue
        account = await self.engine.account(page.username)
        return self.render(
            request,
            page,
            "home.html",
            status=status,
            error=error,
            balance=balance,
            sessions=sessions,
            providers=sorted(self.engine.providers),
            default_number=account.default_number if account else "",
            phonebook=await self.store.get_phonebook(page.username),
        )

    @app.route("/call", methods=["POST"])
    async def call(self, request: Request) -> bytes:
        page = await self.page(request)
        fields = self.form(request, page)
        try:
            source = forms.text(fields, "source", pattern=_LEG)
            destination = forms.text(fields, "destination", pattern=_LEG)
            providers = sorted(self.engine.providers)
            via = [
                forms.choice(fields, name, providers, required=False)
                for name in ("source_via", "destination_via")
            ]
            if not via[0] and via[1]:
                raise FormError("web.error.via_order")
            sid = await self.engine.start_callback(
                page.username, source, destination, [v for v in via if v], origin="web"
            )
        except EXPECTED as e:
            return await self._home(request, page, message(page, e), 400)
        return self.redirect(request, f"/call/{sid}")

    # -- a call's page, its live status, its commands --------------------------------------

    def _own_session(self, page: Page, sid: str) -> dict[str, Any]:
        """The summary of the account's session ``sid`` (an operator's: any session)."""
        state = self.engine.state_of(sid)
        if (
            state is None
            or state.finished
            or (state.username != page.username and not page.operator)
        ):
            raise Refused(404, "web.error.no_session")
        return dict(self.engine.status(sid), seq=state.seq)

    @app.route("/call/<string:sid>", methods=["GET"])
    async def call_page(self, request: Request, sid: str) -> bytes:
        page = await self.page(request)
        return self._call_page(request, page, sid)

    def _call_page(
        self, request: Request, page: Page, sid: str, error: str = "", status: int = 200
    ) -> bytes:
        view = session_view(
            self._own_session(page, sid), self.clock.seconds(), page.t, self.decimals, self.currency
        )
        return self.render(
            request,
            page,
            "call.html",
            status=status,
            error=error,
            view=view,
            words=json.dumps({s: page.t.text("web.status." + s) for s in LEG_STATUSES}),
            roles=json.dumps({r: progress.role_text(page.t, r, title=True) for r in ROLES}),
            providers=sorted(self.engine.providers),
        )

    @app.route("/call/<string:sid>/events", methods=["GET"])
    async def events(self, request: Request, sid: str) -> Any:
        """The session's events as Server-Sent Events (:mod:`callbackd.web.sse`), for the
        call page's script; only to the session's account (or an operator)."""
        page = await self.page(request)
        self._own_session(page, sid)
        # the page asks for the events after the state it was rendered in (?after=SEQ);
        # a reconnecting EventSource says where it stopped (Last-Event-ID)
        last = request.getHeader(b"last-event-id") or request.args.get(b"after", [None])[0]
        answer = stream_session_events(request, self.engine, sid, last)
        if answer is not NOT_DONE_YET:
            return answer
        # the stream writes to the request until it ends: Klein waits for that
        streaming: defer.Deferred[None] = defer.Deferred()
        request.notifyFinish().addBoth(lambda _: streaming.callback(None))
        return streaming

    async def _command(self, request: Request, sid: str, what: str, run: Any) -> bytes:
        page = await self.page(request)
        fields = self.form(request, page)
        self._own_session(page, sid)
        try:
            await run(fields)
        except EXPECTED as e:
            if wants_json(request):
                return self.json(request, 400, {"ok": False, "message": message(page, e)})
            return self._call_page(request, page, sid, message(page, e), 400)
        if wants_json(request):
            return self.json(request, 200, {"ok": True, "message": page.t.text(what)})
        return self.redirect(request, f"/call/{sid}")

    @app.route("/call/<string:sid>/legs", methods=["POST"])
    async def add_leg(self, request: Request, sid: str) -> bytes:
        async def add(fields: dict[str, str]) -> None:
            address = forms.text(fields, "address", pattern=_LEG)
            via = forms.choice(fields, "via", self.engine.providers, required=False)
            await self.engine.add_leg(sid, address, via or None)

        return await self._command(request, sid, "web.done.calling", add)

    @app.route("/call/<string:sid>/drop", methods=["POST"])
    async def drop_leg(self, request: Request, sid: str) -> bytes:
        async def drop(fields: dict[str, str]) -> None:
            await self.engine.drop_leg(sid, forms.text(fields, "leg", pattern=_LEG))

        return await self._command(request, sid, "web.done.dropped", drop)

    @app.route("/call/<string:sid>/hangup", methods=["POST"])
    async def hangup(self, request: Request, sid: str) -> bytes:
        async def hang_up(fields: dict[str, str]) -> None:
            await self.engine.hangup(sid)

        return await self._command(request, sid, "web.done.hung_up", hang_up)

    # -- call history -------------------------------------------------------------------------

    @app.route("/history", methods=["GET"])
    async def history(self, request: Request) -> bytes:
        page = await self.page(request)
        cdrs = await self.store.list_cdrs(page.username)
        calls: dict[str, dict[str, Any]] = {}
        for cdr in reversed(cdrs):
            call = calls.setdefault(cdr.session_id, {"session": None, "legs": []})
            if cdr.kind == "session":
                call["session"] = cdr
            else:
                call["legs"].append(cdr)
        return self.render(
            request,
            page,
            "history.html",
            calls=list(calls.items())[:200],
            balance=await self.store.get_balance(page.username),
            when=_when,
        )

    @app.route("/history.csv", methods=["GET"])
    async def history_csv(self, request: Request) -> bytes:
        page = await self.page(request)
        from callbackd.core.money import format_amount

        out = io.StringIO()
        writer = csv.writer(out, lineterminator="\r\n")
        writer.writerow(
            [
                "session_id",
                "kind",
                "leg",
                "address",
                "provider",
                "started_at",
                "answered_at",
                "ended_at",
                "billed_seconds",
                "rate",
                "cost",
                "cause",
            ]
        )
        for c in await self.store.list_cdrs(page.username):
            writer.writerow(
                [
                    c.session_id,
                    c.kind,
                    c.leg,
                    _cell(address_text(c.address)),
                    c.provider,
                    _when(c.started_at),
                    _when(c.answered_at),
                    _when(c.ended_at),
                    c.billed_seconds,
                    format_amount(c.rate, self.decimals),
                    format_amount(c.cost, self.decimals),
                    c.cause,
                ]
            )
        request.setHeader(b"content-type", b"text/csv; charset=utf-8")
        request.setHeader(b"content-disposition", b'attachment; filename="calls.csv"')
        return out.getvalue().encode("utf-8")

    # -- phonebook -------------------------------------------------------------------------------

    @app.route("/phonebook", methods=["GET"])
    async def phonebook(self, request: Request) -> bytes:
        page = await self.page(request)
        return await self._phonebook(request, page)

    async def _phonebook(
        self, request: Request, page: Page, error: str = "", status: int = 200
    ) -> bytes:
        return self.render(
            request,
            page,
            "phonebook.html",
            status=status,
            error=error,
            done=self.done(request, page, DONE),
            entries=await self.store.get_phonebook(page.username),
        )

    @app.route("/phonebook", methods=["POST"])
    async def phonebook_add(self, request: Request) -> bytes:
        page = await self.page(request)
        fields = self.form(request, page)
        try:
            index = forms.integer(fields, "index", minimum=0, maximum=999)
            name = forms.text(fields, "name", max_length=64)
            typed = forms.text(fields, "address", pattern=_LEG)
            address = address_text(str(self.engine.legs.address(typed)))
            await self.store.set_phonebook_entry(
                page.username, PhonebookEntry(index, name, address)
            )
        except EXPECTED as e:
            return await self._phonebook(request, page, message(page, e), 400)
        return self.redirect(request, "/phonebook", "added")

    @app.route("/phonebook/delete", methods=["POST"])
    async def phonebook_delete(self, request: Request) -> bytes:
        page = await self.page(request)
        fields = self.form(request, page)
        try:
            index = forms.integer(fields, "index", minimum=0, maximum=999)
            await self.store.delete_phonebook_entry(page.username, index)
        except EXPECTED as e:
            return await self._phonebook(request, page, message(page, e), 400)
        return self.redirect(request, "/phonebook", "deleted")

    # -- caller IDs ------------------------------------------------------------------------------

    @app.route("/callerids", methods=["GET"])
    async def callerids(self, request: Request) -> bytes:
        page = await self.page(request)
        return await self._callerids(request, page)

    async def _callerids(
        self, request: Request, page: Page, error: str = "", status: int = 200
    ) -> bytes:
        return self.render(
            request,
            page,
            "callerids.html",
            status=status,
            error=error,
            done=self.done(request, page, DONE),
            numbers=await self.store.list_caller_ids(page.username),
        )

    def _number(self, fields: dict[str, str]) -> str:
        address = self.engine.legs.address(forms.text(fields, "number", pattern=_LEG))
        if address.kind != "phone":
            raise FormError("web.error.invalid", field="number")
        return address.value

    @app.route("/callerids", methods=["POST"])
    async def callerid_add(self, request: Request) -> bytes:
        page = await self.page(request)
        fields = self.form(request, page)
        try:
            number = self._number(fields)
            sms = self.config.sms
            code = new_caller_id_code()
            try:
                # adds the number, unverified, with the code (the SMS front's way)
                await self.store.issue_caller_id_code(
                    page.username, number, code, sms.code_ttl, sms.code_attempts
                )
            except InvalidArgument:
                raise Refused(400, "sms.number_taken", number=number) from None
            t = page.t
            text = t.text("sms.code_text", code=code, valid=t.duration(int(sms.code_ttl)))
            message_id = f"cid-{secrets.token_hex(8)}"
            await self.store.enqueue_sms(message_id, number, text, "", self.clock.seconds())
        except (*EXPECTED, Refused) as e:
            return await self._callerids(request, page, message(page, e), 400)
        return self.redirect(request, "/callerids", "code")

    @app.route("/callerids/verify", methods=["POST"])
    async def callerid_verify(self, request: Request) -> bytes:
        page = await self.page(request)
        fields = self.form(request, page)
        address = client_address(request)
        try:
            number = self._number(fields)
            code = forms.text(fields, "code", pattern=_CODE)
            if not self.guesses.allowed(page.username, address):
                raise Refused(429, "web.error.throttled")
            owner = await self.store.confirm_caller_id_code(number, code)
            if owner != page.username:
                self.guesses.failed(page.username, address)
                raise Refused(400, "web.error.wrong_code")
            self.engine.account_changed(page.username)
        except (*EXPECTED, Refused) as e:
            return await self._callerids(request, page, message(page, e), 400)
        return self.redirect(request, "/callerids", "verified")

    @app.route("/callerids/delete", methods=["POST"])
    async def callerid_delete(self, request: Request) -> bytes:
        page = await self.page(request)
        fields = self.form(request, page)
        try:
            number = self._number(fields)
            await self.store.remove_caller_id(page.username, number)
            self.engine.account_changed(page.username)
        except EXPECTED as e:
            return await self._callerids(request, page, message(page, e), 400)
        return self.redirect(request, "/callerids", "deleted")

    # -- account: balance, top-up, API keys, XMPP invitation, language --------------------------

    @app.route("/account", methods=["GET"])
    async def account(self, request: Request) -> bytes:
        page = await self.page(request)
        return await self._account(request, page)

    async def _account(
        self, request: Request, page: Page, error: str = "", status: int = 200, **extra: Any
    ) -> bytes:
        keys = await self.store.list_api_keys(page.username)
        return self.render(
            request,
            page,
            "account.html",
            status=status,
            error=error,
            done=self.done(request, page, DONE),
            balance=await self.store.get_balance(page.username),
            keys=keys,
            **extra,
        )

    @app.route("/topup", methods=["POST"])
    async def topup(self, request: Request) -> bytes:
        page = await self.page(request)
        fields = self.form(request, page)
        address = client_address(request)
        try:
            pin = forms.text(fields, "pin", pattern=_PIN)
            if not self.guesses.allowed(page.username, address):
                raise Refused(429, "web.error.throttled")
            try:
                await self.store.redeem_voucher(pin, page.username)
            except (NoSuchVoucher, VoucherUsed):
                self.guesses.failed(page.username, address)
                raise
            await self.engine.balance_changed(page.username)
        except (*EXPECTED, Refused) as e:
            return await self._account(request, page, message(page, e), 400)
        return self.redirect(request, "/account", "topup")

    @app.route("/keys", methods=["POST"])
    async def key_create(self, request: Request) -> bytes:
        page = await self.page(request)
        fields = self.form(request, page)
        try:
            label = forms.text(fields, "label", max_length=64)
            key_id, secret = await self.store.create_api_key(page.username, label)
        except (*EXPECTED, Refused) as e:
            return await self._account(request, page, message(page, e), 400)
        return await self._account(request, page, new_key={"key_id": key_id, "secret": secret})

    @app.route("/keys/revoke", methods=["POST"])
    async def key_revoke(self, request: Request) -> bytes:
        page = await self.page(request)
        fields = self.form(request, page)
        try:
            key_id = forms.text(fields, "key_id", pattern=_KEY_ID)
            await self.store.revoke_api_key(page.username, key_id)
        except (*EXPECTED, Refused) as e:
            return await self._account(request, page, message(page, e), 400)
        return self.redirect(request, "/account", "revoked")

    @app.route("/invite", methods=["POST"])
    async def invite(self, request: Request) -> bytes:
        page = await self.page(request)
        fields = self.form(request, page)
        try:
            jid = forms.text(fields, "jid", max_length=200)
            owner = await self.store.account_for_jid(jid)
            if owner is not None and owner != page.username:
                raise Refused(400, "web.error.jid_taken")
            await self.store.link_jid(jid, page.username)
            if not await self.store.request_invite(jid):
                raise Refused(503, "web.error.no_chat")
        except (*EXPECTED, Refused) as e:
            return await self._account(request, page, message(page, e), 400)
        return self.redirect(request, "/account", "invited")


def _when(at: float) -> str:
    """A time as ``2026-12-02 01:35:07`` UTC ("" for none)."""
    if not at:
        return ""
    import time

    return time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(at))


def _cell(value: str) -> str:
    """A CSV cell a spreadsheet will not run as a formula (a number like ``+1555`` stays)."""
    if value[:1] in ("=", "+", "-", "@") and not value[1:].isdigit():
        return "'" + value
    return value
