"""The portal's plumbing: the Klein app, who is logged in, languages, pages and answers.

Every route of :mod:`~callbackd.web.portal.users` and
:mod:`~callbackd.web.portal.operators` starts with :meth:`PortalBase.page`, which reads
the login from the store (the session cookie), the language (cookie, else the account's,
else the browser's) and the CSRF basis; a POST then passes :meth:`PortalBase.form`, which
refuses a body without the right CSRF token before anything happens.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from jinja2 import Environment, FileSystemLoader
from klein import Klein
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger
from twisted.web.server import Request

from callbackd.config import Config
from callbackd.core.model import AccountStatus
from callbackd.i18n import DEFAULT_LANGUAGE, LANGUAGES, Translator, progress, translator
from callbackd.web.portal import forms
from callbackd.web.portal.live import address_text, leg_text
from callbackd.web.portal.security import (
    ANON_COOKIE,
    SESSION_COOKIE,
    LoginThrottle,
    csrf_matches,
    csrf_token,
    new_anon_key,
)

__all__ = ["PREFIX", "Page", "PortalBase", "app"]

log = Logger(namespace="callbackd.web.portal")

#: where the portal is mounted (the web root's child ``portal``)
PREFIX: Final = "/portal"
#: the language cookie
LANG_COOKIE: Final = b"callbackd_lang"
TEMPLATES: Final = Path(__file__).parent / "templates"
STATIC: Final = Path(__file__).parent / "static"
#: the static files served, with their content types
STATIC_TYPES: Final = {
    "portal.css": b"text/css; charset=utf-8",
    "portal.js": b"text/javascript",
    "favicon.svg": b"image/svg+xml",
}

#: the routes of every portal page (users' and operators'), bound to a Portal per instance
app = Klein()


class Refused(Exception):
    """Answer the request with ``status`` and the form message ``msgid`` (no 500)."""

    def __init__(self, status: int, msgid: str, **params: Any) -> None:
        super().__init__(msgid)
        self.status = status
        self.msgid = msgid
        self.params = params


@dataclass
class Page:
    """What every page knows of its request: the login, language and CSRF token."""

    username: str
    role: str
    language: str
    t: Translator
    csrf: str
    token: str

    @property
    def operator(self) -> bool:
        return self.role == "operator"


class PortalBase:
    """The state every portal route shares; see :class:`callbackd.web.portal.Portal`."""

    app = app

    def __init__(self, store: Any, engine: Any, config: Config, clock: IReactorTime) -> None:
        self.store = store
        self.engine = engine
        self.config = config
        self.clock = clock
        portal = config.portal
        self.operators = portal.operator_names
        self.throttle = LoginThrottle(clock, portal.login_attempts, portal.login_window)
        #: failed voucher PINs and caller ID codes, per account (a guesser is slowed down)
        self.guesses = LoginThrottle(clock, 10, portal.login_window)
        self.decimals = config.billing.decimals
        self.currency = config.billing.currency
        self.templates = Environment(
            loader=FileSystemLoader(TEMPLATES), autoescape=True, auto_reload=False
        )
        self.templates.filters["addr"] = address_text

    # -- who and in which language ------------------------------------------------------

    async def page(self, request: Request, role: str | None = "user") -> Page:
        """The request's Page; Refused (to the login page) when ``role`` needs a login
        the request lacks (``"operator"``: an operator's)."""
        token = _cookie(request, SESSION_COOKIE)
        username, session_role, language = "", "", DEFAULT_LANGUAGE
        if token:
            found = await self.store.get_web_session(token)
            if found is not None:
                account = await self.engine.account(found["username"])
                if account is not None and account.status is AccountStatus.ACTIVE:
                    username = found["username"]
                    operator = found["role"] == "operator" and username in self.operators
                    session_role = "operator" if operator else "user"
                    language = account.language
        if role is not None and not username:
            raise Refused(303, "")
        if role == "operator" and session_role != "operator":
            raise Refused(403, "web.error.forbidden")
        basis = token if username else self._anon_key(request)
        chosen = _cookie(request, LANG_COOKIE)
        if chosen not in LANGUAGES:
            chosen = language if username else _browser_language(request)
        t = translator(chosen)
        return Page(username, session_role, t.language, t, csrf_token(basis), token)

    def _anon_key(self, request: Request) -> str:
        basis = _cookie(request, ANON_COOKIE)
        if not basis or len(basis) != 43:
            basis = new_anon_key()
            self.set_cookie(request, ANON_COOKIE, basis)
            # the cookie is seen by the next request; this one checks against it too
            request.received_cookies[ANON_COOKIE] = basis.encode()
        return basis

    def set_cookie(self, request: Request, name: bytes, value: str, max_age: int = 0) -> None:
        """Set a portal cookie: HttpOnly, SameSite=Lax, Secure over TLS (and when told)."""
        secure = request.isSecure() or self.config.portal.secure_cookies
        request.addCookie(
            name,
            value.encode(),
            path=PREFIX,
            max_age=str(max_age) if max_age else None,
            httpOnly=True,
            secure=secure,
            sameSite="lax",
        )

    def form(self, request: Request, page: Page) -> dict[str, str]:
        """The POST's fields, once its CSRF token is checked (Refused 403 if wrong)."""
        fields = forms.decode_form(request.args)
        basis = page.token if page.username else _cookie(request, ANON_COOKIE)
        if not csrf_matches(basis, fields.get("csrf")):
            raise Refused(403, "web.error.csrf")
        return fields

    # -- answers ------------------------------------------------------------------------

    def render(
        self, request: Request, page: Page, template: str, status: int = 200, **context: Any
    ) -> bytes:
        """The template filled in (autoescaped), as a page in the user's language."""
        request.setResponseCode(status)
        request.setHeader(b"content-type", b"text/html; charset=utf-8")
        t = page.t
        body = self.templates.get_template(template).render(
            page=page,
            t=t.text,
            leg_name=lambda leg: leg_text(t, leg),
            cause=lambda text: progress.cause_text(t, text) if text else "",
            reason=lambda text: progress.reason_text(t, text) if text else "",
            money=lambda minor: t.money(minor, self.decimals, self.currency),
            base=PREFIX,
            languages=[(code, translator(code).language_name(code)) for code in LANGUAGES],
            **context,
        )
        return body.encode("utf-8")

    def redirect(self, request: Request, path: str, done: str = "") -> bytes:
        """303 See Other to ``PREFIX + path`` (with ``?done=`` a success message's key)."""
        request.setResponseCode(303)
        location = PREFIX + path + (f"?done={done}" if done else "")
        request.setHeader(b"location", location.encode())
        return b""

    def json(self, request: Request, status: int, value: Any) -> bytes:
        """A JSON answer (to the pages' script)."""
        request.setResponseCode(status)
        request.setHeader(b"content-type", b"application/json")
        return json.dumps(value).encode()

    def done(self, request: Request, page: Page, known: dict[str, str]) -> str:
        """The success message of ``?done=KEY``, when KEY is one of this page's."""
        key = request.args.get(b"done", [b""])[0].decode("ascii", "replace")
        return page.t.text(known[key]) if key in known else ""


def wants_json(request: Request) -> bool:
    """Whether the page's script (fetch) asked, rather than a plain form."""
    return b"application/json" in (request.getHeader(b"accept") or b"")


def client_address(request: Request) -> str:
    """The client's address (for throttling)."""
    peer = request.getClientAddress()
    return str(getattr(peer, "host", "") or "unknown")


def _cookie(request: Request, name: bytes) -> str:
    value = request.getCookie(name)
    if not value:
        return ""
    try:
        return str(value.decode("ascii"))
    except UnicodeDecodeError:
        return ""


def _browser_language(request: Request) -> str:
    """The first of the browser's Accept-Language that the catalogue has, else English."""
    header = (request.getHeader(b"accept-language") or b"").decode("latin-1")
    for part in header.split(",")[:10]:
        code = part.split(";")[0].strip().lower().replace("_", "-").split("-")[0]
        if code in LANGUAGES:
            return code
    return DEFAULT_LANGUAGE
