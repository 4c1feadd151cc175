"""The REST API under ``/api/v1``: Klein routes over the engine's public API and the store.

Every route is declared once as an :class:`~callbackd.web.api.openapi.Operation`, which
both registers it with Klein and describes it in ``/api/v1/openapi.json``. Every
answer is JSON (CSV or an event stream where asked for); every failure is a JSON
``{"error": {"code", "message"}}`` with its 4xx status (503 when the store or the
switch is away), never a traceback: an unexpected exception is logged and answered
500 with the same body.

Requests are authorised by ``Authorization: Bearer <API key>`` (the store keeps the
keys hashed, :meth:`IStore.account_for_api_key`); an account sees only its own
sessions: another account's session id is a 404, as an unknown one is. A body is
read only up to ``max_body`` bytes (413 past it), must be JSON (400), and must fit
its model exactly (422: strict types, no unknown fields); what makes an address
callable is then the engine's to say (422 with its refusal's catalogue code).
``POST /api/v1/sessions`` with an ``Idempotency-Key`` is answered once: a retry with
the same body gets the first answer again (``Idempotent-Replayed: true``), with
another body 422 ``idempotency_key_reused``, while the first is still running 409.
"""

from __future__ import annotations

import base64
import binascii
import csv
import hashlib
import io
import json
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from klein import Klein
from pydantic import BaseModel, ValidationError
from twisted.internet import defer
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web import resource, server
from werkzeug.exceptions import MethodNotAllowed, NotFound

from callbackd.core.model import CDR
from callbackd.core.session import summary
from callbackd.engine.errors import CallbackRefused
from callbackd.store.interface import InvalidArgument, StoreUnavailable
from callbackd.web.api.models import (
    AddLeg,
    Balance,
    Cdr,
    CdrPage,
    CreateSession,
    Error,
    ErrorBody,
    Leg,
    Session,
    SetWebhook,
    WebhookOut,
)
from callbackd.web.api.openapi import Operation, Parameter, openapi_document
from callbackd.web.sse import stream_session_events

__all__ = ["API_VERSION", "ApiApp", "ApiError", "ApiSettings", "refusal_status"]

log = Logger(namespace="callbackd.web.api")

API_VERSION = "1.0.0"
M = TypeVar("M", bound=BaseModel)
Handler = Callable[..., Awaitable[Any]]

_SESSION_ID = re.compile(r"[A-Za-z0-9]{1,64}")
_JSON = b"application/json"
_CSV_COLUMNS = tuple(Cdr.model_fields)

#: the status of each engine refusal that is not 422
_REFUSAL_STATUS = {
    "refusal.no_credit": 402,
    "refusal.daily_limit": 402,
    "refusal.account_blocked": 403,
    "refusal.unknown_account": 403,
    "refusal.unknown_session": 404,
    "refusal.too_many_sessions": 429,
    "refusal.switch_unreachable": 503,
    "refusal.owner_unreachable": 503,
    "refusal.restarting": 503,
    "refusal.call_over": 409,
}


def refusal_status(code: str) -> int:
    """The HTTP status of an engine refusal (:class:`CallbackRefused` ``code``)."""
    return _REFUSAL_STATUS.get(code, 422)


class ApiError(Exception):
    """An answer other than success: status, stable code, English message."""

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        details: list[dict[str, Any]] | None = None,
        headers: dict[bytes, bytes] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.details = details
        self.headers = headers or {}

    def body(self) -> bytes:
        return _dump(
            Error(error=ErrorBody(code=self.code, message=self.message, details=self.details))
        )


@dataclass(frozen=True)
class ApiSettings:
    """What the API needs from the configuration."""

    currency: str = "EUR"
    decimals: int = 5
    #: seconds a stored Idempotency-Key answer is kept
    idempotency_ttl: float = 86400.0
    #: the largest request body, in bytes
    max_body: int = 1024 * 1024
    #: seconds an ended session stays readable (from its CDRs)
    ended_visible: float = 86400.0


def _dump(model: BaseModel) -> bytes:
    return model.model_dump_json(exclude_none=False).encode("utf-8")


def _header(request: server.Request, name: bytes) -> str | None:
    value = request.getHeader(name)
    if value is None:
        return None
    return value.decode("latin-1") if isinstance(value, bytes) else str(value)


def _secure(request: server.Request) -> None:
    request.setHeader(b"cache-control", b"no-store")
    request.setHeader(b"x-content-type-options", b"nosniff")


def _answer(request: server.Request, status: int, body: bytes, media: bytes = _JSON) -> bytes:
    request.setResponseCode(status)
    _secure(request)
    if status != 204:
        request.setHeader(b"content-type", media)
        # the length up front: no chunked encoding of a body that is whole already
        request.setHeader(b"content-length", b"%d" % len(body))
    return body


def _failed(request: server.Request, error: ApiError) -> bytes:
    for name, value in error.headers.items():
        request.setHeader(name, value)
    return _answer(request, error.status, error.body())


OPERATIONS: list[Operation] = []


def _route(app: Klein, op: Operation) -> Callable[[Handler], Any]:
    """Register ``op`` with Klein and the OpenAPI document; answer its errors as JSON."""
    OPERATIONS.append(op)

    def decorate(handler: Handler) -> Any:
        async def run(self: ApiApp, request: server.Request, **kwargs: Any) -> Any:
            try:
                return await handler(self, request, **kwargs)
            except ApiError as e:
                return _failed(request, e)
            except CallbackRefused as e:
                return _failed(
                    request, ApiError(refusal_status(e.code), e.code or "refused", str(e))
                )
            except StoreUnavailable:
                return _failed(request, ApiError(503, "unavailable", "The store is unavailable."))
            except InvalidArgument as e:
                return _failed(request, ApiError(422, "invalid_argument", str(e)))
            except Exception:
                log.failure("{method} {path} failed", method=op.method, path=op.path)
                return _failed(request, ApiError(500, "internal", "Internal error."))

        def endpoint(self: ApiApp, request: server.Request, **kwargs: Any) -> Any:
            return defer.ensureDeferred(run(self, request, **kwargs))

        endpoint.__name__ = handler.__name__
        return app.route(op.klein_path, methods=[op.method], strict_slashes=True)(endpoint)

    return decorate


_SESSION_ERRORS = (404, 422)
_LAST_EVENT_ID = Parameter(
    "Last-Event-ID",
    "header",
    {"type": "string", "maxLength": 32},
    "resume after this event id (the SessionEvent seq)",
)
_CDR_PARAMETERS = (
    Parameter("since", "query", {"type": "number", "minimum": 0}, "ended at or after (epoch s)"),
    Parameter("until", "query", {"type": "number", "minimum": 0}, "ended at or before (epoch s)"),
    Parameter("limit", "query", {"type": "integer", "minimum": 1, "maximum": 1000}),
    Parameter("cursor", "query", {"type": "string", "maxLength": 512}, "next_cursor of a page"),
    Parameter("format", "query", {"type": "string", "enum": ["json", "csv"]}),
)
_IDEMPOTENCY_KEY = Parameter(
    "Idempotency-Key",
    "header",
    {"type": "string", "minLength": 1, "maxLength": 255, "pattern": "^[\\x21-\\x7e]+$"},
    "makes a retry safe: the same key and body get the first answer again",
)


class ApiApp:
    """The API's Klein application; :meth:`resource` is what ``/api`` serves."""

    app = Klein()

    def __init__(
        self,
        engine: Any,
        store: Any,
        clock: Any,
        settings: ApiSettings,
        *,
        on_webhook_changed: Callable[[str], None] | None = None,
    ) -> None:
        self.engine = engine
        self.store = store
        self.clock = clock
        self.settings = settings
        #: told the username when its webhook changes (the webhook sender's cache)
        self.on_webhook_changed = on_webhook_changed or (lambda username: None)
        self._document = json.dumps(
            openapi_document(OPERATIONS, prefix="/api", title="callbackd", version=API_VERSION),
            indent=1,
        ).encode("utf-8")

    def resource(self) -> resource.IResource:
        """The resource to mount at ``/api``."""
        res: resource.IResource = self.app.resource()
        return res

    # -- requests -------------------------------------------------------------------

    async def _account(self, request: server.Request) -> str:
        """The account of the request's API key; 401 without a valid one."""
        scheme, _, token = (_header(request, b"authorization") or "").partition(" ")
        username = None
        if scheme.lower() == "bearer" and token.strip():
            username = await self.store.account_for_api_key(token.strip())
        if username is None:
            raise ApiError(
                401,
                "unauthorized",
                "A valid API key is needed: Authorization: Bearer <key>.",
                headers={b"www-authenticate": b'Bearer realm="callbackd"'},
            )
        return str(username)

    def _raw_body(self, request: server.Request) -> bytes:
        limit = self.settings.max_body
        too_large = ApiError(413, "body_too_large", f"The body is larger than {limit} bytes.")
        length = _header(request, b"content-length")
        if length is not None and length.strip().isdigit() and int(length) > limit:
            raise too_large
        content = request.content
        data = content.read(limit + 1) if content is not None else b""
        if len(data) > limit:
            raise too_large
        return data

    def _body(self, request: server.Request, model: type[M]) -> M:
        """The request's JSON body as ``model``: 413, 415, 400 or 422 when it is not one."""
        data = self._raw_body(request)
        media = (_header(request, b"content-type") or "application/json").split(";")[0]
        if media.strip().lower() != "application/json":
            raise ApiError(415, "unsupported_media_type", "The body must be application/json.")
        try:
            parsed = json.loads(data)
        except (ValueError, RecursionError):
            raise ApiError(400, "malformed_json", "The body is not valid JSON.") from None
        try:
            return model.model_validate(parsed)
        except ValidationError as e:
            details = [
                {"loc": [str(part) for part in err["loc"]], "msg": err["msg"], "type": err["type"]}
                for err in e.errors(include_url=False, include_input=False)
            ]
            raise ApiError(422, "invalid_request", "The body is invalid.", details) from None

    # -- sessions ---------------------------------------------------------------------

    def _live(self, username: str, session_id: str) -> Session | None:
        state = self.engine.state_of(session_id)
        if state is None or state.finished or state.username != username:
            return None
        return _session_view(summary(state))

    async def _session(self, username: str, session_id: str) -> tuple[Session, bool]:
        """The account's session, live or ended; 404 when it has none of that id."""
        if _SESSION_ID.fullmatch(session_id):
            live = self._live(username, session_id)
            if live is not None:
                return live, True
            since = self.clock.seconds() - self.settings.ended_visible
            cdrs = [
                c for c in await self.store.list_cdrs(username, since) if c.session_id == session_id
            ]
            if cdrs:
                return _ended_view(session_id, cdrs), False
        raise ApiError(404, "not_found", "No such session.")

    async def _live_session(self, username: str, session_id: str) -> None:
        """404 unless the account has the session; 409 when it has ended."""
        _, live = await self._session(username, session_id)
        if not live:
            raise ApiError(409, "session_ended", "The session has ended.")

    async def _now(
        self, request: server.Request, status: int, username: str, session_id: str
    ) -> bytes:
        """Answer with the session as it is now (live, or ended)."""
        view, _ = await self._session(username, session_id)
        return _answer(request, status, _dump(view))

    @_route(
        app,
        Operation(
            "POST",
            "/v1/sessions",
            "Start a callback: call the source, then connect the destination",
            201,
            Session,
            CreateSession,
            parameters=(_IDEMPOTENCY_KEY,),
            errors=(402, 403, 409, 415, 422, 429, 503),
        ),
    )
    async def create_session(self, request: server.Request) -> bytes:
        username = await self._account(request)
        body = self._body(request, CreateSession)
        key = _header(request, b"idempotency-key")
        if key is None:
            status, payload = await self._create(username, body)
        else:
            status, payload, replayed = await self._idempotent(username, key, body)
            if replayed:
                request.setHeader(b"idempotent-replayed", b"true")
        if status == 201:
            request.setHeader(
                b"location", b"/api/v1/sessions/" + json.loads(payload)["id"].encode()
            )
        return _answer(request, status, payload)

    async def _create(self, username: str, body: CreateSession) -> tuple[int, bytes]:
        try:
            session_id = await self.engine.start_callback(
                username, body.source, body.destination, body.via, origin="api"
            )
        except CallbackRefused as e:
            error = ApiError(refusal_status(e.code), e.code or "refused", str(e))
            return error.status, error.body()
        state = self.engine.state_of(session_id)
        view = _session_view(summary(state)) if state is not None else None
        if view is None:  # pragma: no cover - a session ends within its first step only if refused
            raise ApiError(503, "unavailable", "The session ended at once.")
        return 201, _dump(view)

    async def _idempotent(
        self, username: str, key: str, body: CreateSession
    ) -> tuple[int, bytes, bool]:
        """The answer to a request with an Idempotency-Key, and whether it is a replay."""
        if not re.fullmatch(r"[\x21-\x7e]{1,255}", key):
            raise ApiError(
                400, "bad_idempotency_key", "Idempotency-Key: 1-255 visible ASCII characters."
            )
        fingerprint = hashlib.sha256(body.model_dump_json().encode()).hexdigest()
        ttl = self.settings.idempotency_ttl
        held = await self.store.claim_idempotency_key(username, key, fingerprint, ttl)
        if held is not None:
            if held["fingerprint"] != fingerprint:
                raise ApiError(
                    422,
                    "idempotency_key_reused",
                    "This Idempotency-Key was used with another request body.",
                )
            if held["response"] is None:
                raise ApiError(
                    409,
                    "request_in_progress",
                    "The first request with this key is still being answered.",
                )
            stored = json.loads(held["response"])
            return int(stored["status"]), stored["body"].encode("utf-8"), True
        try:
            status, payload = await self._create(username, body)
        except BaseException:
            await self.store.release_idempotency_key(username, key)
            raise
        if status >= 500:
            await self.store.release_idempotency_key(username, key)
        else:
            stored_text = json.dumps({"status": status, "body": payload.decode("utf-8")})
            await self.store.settle_idempotency_key(username, key, fingerprint, stored_text, ttl)
        return status, payload, False

    @_route(
        app,
        Operation(
            "GET",
            "/v1/sessions/{session_id}",
            "A session with its legs",
            200,
            Session,
            errors=(404,),
        ),
    )
    async def get_session(self, request: server.Request, session_id: str) -> bytes:
        username = await self._account(request)
        view, _ = await self._session(username, session_id)
        return _answer(request, 200, _dump(view))

    @_route(
        app,
        Operation(
            "DELETE",
            "/v1/sessions/{session_id}",
            "Hang up: end the session and every leg",
            202,
            Session,
            errors=(404, 409),
        ),
    )
    async def hang_up(self, request: server.Request, session_id: str) -> bytes:
        username = await self._account(request)
        await self._live_session(username, session_id)
        await self.engine.hangup(session_id)
        return await self._now(request, 202, username, session_id)

    @_route(
        app,
        Operation(
            "POST",
            "/v1/sessions/{session_id}/legs",
            "Call one more party into a connected session",
            202,
            Session,
            AddLeg,
            errors=(404, 409, 415, 422, 503),
        ),
    )
    async def add_leg(self, request: server.Request, session_id: str) -> bytes:
        username = await self._account(request)
        body = self._body(request, AddLeg)
        await self._live_session(username, session_id)
        await self.engine.add_leg(session_id, body.address, body.via)
        return await self._now(request, 202, username, session_id)

    @_route(
        app,
        Operation(
            "DELETE",
            "/v1/sessions/{session_id}/legs/{leg}",
            "Hang up an additional leg (by id, letter or address)",
            202,
            Session,
            errors=(404, 409, 422),
        ),
    )
    async def drop_leg(self, request: server.Request, session_id: str, leg: str) -> bytes:
        username = await self._account(request)
        await self._live_session(username, session_id)
        await self.engine.drop_leg(session_id, leg)
        return await self._now(request, 202, username, session_id)

    @_route(
        app,
        Operation(
            "GET",
            "/v1/sessions/{session_id}/events",
            "The session's events as Server-Sent Events (id: the event's seq)",
            200,
            parameters=(_LAST_EVENT_ID,),
            media={"text/event-stream": {"type": "string"}},
            errors=(404,),
        ),
    )
    async def events(self, request: server.Request, session_id: str) -> Any:
        username = await self._account(request)
        await self._session(username, session_id)
        last = request.getHeader(b"last-event-id")
        if last is None and b"last_event_id" in request.args:
            last = request.args[b"last_event_id"][0]
        return _EventStream(self.engine, session_id, last)

    # -- money --------------------------------------------------------------------------

    @_route(app, Operation("GET", "/v1/balance", "The account's balance", 200, Balance))
    async def balance(self, request: server.Request) -> bytes:
        username = await self._account(request)
        account = await self.engine.account(username)
        balance = await self.store.get_balance(username)
        out = Balance(
            balance=balance,
            credit_limit=account.credit_limit if account is not None else 0,
            currency=self.settings.currency,
            decimals=self.settings.decimals,
        )
        return _answer(request, 200, _dump(out))

    @_route(
        app,
        Operation(
            "GET",
            "/v1/cdrs",
            "The account's CDRs, oldest first, a page at a time (JSON or CSV)",
            200,
            CdrPage,
            parameters=_CDR_PARAMETERS,
            media={"text/csv": {"type": "string"}},
            errors=(422,),
        ),
    )
    async def cdrs(self, request: server.Request) -> bytes:
        username = await self._account(request)
        query = _CdrQuery.parse(request)
        after = query.cursor
        since = max(query.since, after[0] if after else 0.0)
        found = await self.store.list_cdrs(username, since, query.until)
        found.sort(key=lambda c: (c.ended_at, c.cdr_id))
        if after is not None:
            found = [c for c in found if (c.ended_at, c.cdr_id) > after]
        page, more = found[: query.limit], len(found) > query.limit
        cursor = _cursor(page[-1]) if more else None
        if query.csv or _wants_csv(request):
            if cursor is not None:
                request.setHeader(b"x-next-cursor", cursor.encode("ascii"))
            return _answer(request, 200, _csv(page), b"text/csv; charset=utf-8")
        out = CdrPage(cdrs=[Cdr.of(c) for c in page], next_cursor=cursor)
        return _answer(request, 200, _dump(out))

    # -- webhooks --------------------------------------------------------------------

    @_route(
        app,
        Operation("GET", "/v1/webhook", "The account's webhook", 200, WebhookOut, errors=(404,)),
    )
    async def get_webhook(self, request: server.Request) -> bytes:
        username = await self._account(request)
        hook = await self.store.get_webhook(username)
        if hook is None:
            raise ApiError(404, "not_found", "No webhook is set.")
        return _answer(request, 200, _dump(WebhookOut(url=hook.url, secret=hook.secret)))

    @_route(
        app,
        Operation(
            "PUT",
            "/v1/webhook",
            "Set the webhook URL (its signing secret is kept when the URL changes)",
            200,
            WebhookOut,
            SetWebhook,
            errors=(415, 422),
        ),
    )
    async def set_webhook(self, request: server.Request) -> bytes:
        username = await self._account(request)
        body = self._body(request, SetWebhook)
        hook = await self.store.set_webhook(username, body.url)
        self.on_webhook_changed(username)
        return _answer(request, 200, _dump(WebhookOut(url=hook.url, secret=hook.secret)))

    @_route(app, Operation("DELETE", "/v1/webhook", "Remove the webhook", 204))
    async def delete_webhook(self, request: server.Request) -> bytes:
        username = await self._account(request)
        await self.store.set_webhook(username, "")
        self.on_webhook_changed(username)
        return _answer(request, 204, b"")

    # -- the document ----------------------------------------------------------------

    @_route(
        app,
        Operation(
            "GET",
            "/v1/openapi.json",
            "This API's OpenAPI 3.1 document",
            200,
            media={"application/json": {"type": "object"}},
            auth=False,
        ),
    )
    async def openapi(self, request: server.Request) -> bytes:
        return _answer(request, 200, self._document)

    # -- Klein's own errors, as JSON ----------------------------------------------------

    @app.handle_errors(NotFound)
    def _not_found(self, request: Any, failure: Failure) -> bytes:
        return _failed(request, ApiError(404, "not_found", "There is nothing at this path."))

    @app.handle_errors(MethodNotAllowed)
    def _not_allowed(self, request: Any, failure: Failure) -> bytes:
        allowed = ", ".join(getattr(failure.value, "valid_methods", None) or ())
        error = ApiError(
            405, "method_not_allowed", "Method not allowed.", headers={b"allow": allowed.encode()}
        )
        return _failed(request, error)


class _EventStream(resource.Resource):
    """A session's SSE stream, as Klein renders a resource."""

    isLeaf = True

    def __init__(self, engine: Any, session_id: str, last_event_id: object) -> None:
        super().__init__()
        self.engine = engine
        self.session_id = session_id
        self.last_event_id = last_event_id

    def render(self, request: server.Request) -> Any:
        _secure(request)
        return stream_session_events(request, self.engine, self.session_id, self.last_event_id)


@dataclass(frozen=True)
class _CdrQuery:
    since: float
    until: float | None
    limit: int
    cursor: tuple[float, str] | None
    csv: bool

    @classmethod
    def parse(cls, request: server.Request) -> _CdrQuery:
        args = {
            k.decode("latin-1"): v[-1].decode("latin-1", "replace") for k, v in request.args.items()
        }
        try:
            since = _number(args.get("since"), 0.0)
            until_text = args.get("until")
            until = None if until_text is None else _number(until_text, 0.0)
            limit = int(args.get("limit", "100"))
            if not 1 <= limit <= 1000:
                raise ValueError("limit")
            fmt = args.get("format", "json")
            if fmt not in ("json", "csv"):
                raise ValueError("format")
            cursor = _parse_cursor(args["cursor"]) if "cursor" in args else None
        except ValueError as e:
            raise ApiError(422, "invalid_request", f"Bad query parameter: {e}.") from None
        return cls(since, until, limit, cursor, fmt == "csv")


def _number(text: str | None, default: float) -> float:
    if text is None:
        return default
    value = float(text)
    if not 0 <= value < 1e11:  # also refuses nan and inf
        raise ValueError("time out of range")
    return value


def _cursor(cdr: CDR) -> str:
    raw = json.dumps([cdr.ended_at, cdr.cdr_id], separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode("ascii").rstrip("=")


def _parse_cursor(text: str) -> tuple[float, str]:
    try:
        raw = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
        ended_at, cdr_id = json.loads(raw)
    except (binascii.Error, ValueError, TypeError, RecursionError):
        raise ValueError("cursor") from None
    if (
        not isinstance(cdr_id, str)
        or isinstance(ended_at, bool)
        or not isinstance(ended_at, int | float)
    ):
        raise ValueError("cursor")
    return float(ended_at), cdr_id


def _wants_csv(request: server.Request) -> bool:
    accept = (_header(request, b"accept") or "").lower()
    return "text/csv" in accept and "application/json" not in accept


def _csv(cdrs: list[CDR]) -> bytes:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(_CSV_COLUMNS)
    for cdr in cdrs:
        writer.writerow([getattr(cdr, name) for name in _CSV_COLUMNS])
    return out.getvalue().encode("utf-8")


def _time(value: float) -> float | None:
    return value or None


def _session_view(status: dict[str, Any]) -> Session:
    """The API's view of :func:`callbackd.core.session.summary`."""
    legs = [
        Leg(
            id=leg["leg"],
            role=leg["role"],
            address=leg["address"],
            provider=leg["provider"] or "",
            state=leg["state"],
            cause=leg["cause"] or "",
            rate=leg["rate"] or 0,
            answered_at=_time(leg["answered_at"]),
            ended_at=_time(leg["ended_at"]),
            billed_seconds=leg["billed_seconds"],
            cost=leg["cost"],
        )
        for leg in status["legs"]
    ]
    return Session(
        id=status["session_id"],
        phase=status["phase"],
        reason=status["reason"] or "",
        created_at=status["created_at"],
        talking_at=_time(status["talking_at"]),
        cost=sum(leg.cost for leg in legs),
        legs=legs,
    )


def _ended_view(session_id: str, cdrs: list[CDR]) -> Session:
    """An ended session's view, from its CDRs."""
    record = next((c for c in cdrs if c.kind == "session"), None)
    legs = sorted((c for c in cdrs if c.kind == "leg"), key=lambda c: (c.started_at, c.leg))
    views = [
        Leg(
            id=c.leg,
            role=c.leg.partition("-")[0],
            address=c.address,
            provider=c.provider,
            state="ended",
            cause=c.cause,
            rate=c.rate,
            answered_at=_time(c.answered_at),
            ended_at=_time(c.ended_at),
            billed_seconds=c.billed_seconds,
            cost=c.cost,
        )
        for c in legs
    ]
    started = min((c.started_at for c in cdrs if c.started_at), default=0.0)
    return Session(
        id=session_id,
        phase="ended",
        reason=record.cause if record is not None else "",
        created_at=record.started_at if record is not None and record.started_at else started,
        talking_at=_time(record.answered_at) if record is not None else None,
        cost=sum(c.cost for c in legs),
        legs=views,
    )
