"""The OpenAPI 3.1 document, built from the API's operations and their pydantic models.

Each route of :class:`callbackd.web.api.app.ApiApp` is declared once as an
:class:`Operation` (method, path, models, statuses); the router and this document both
read that declaration, and the schemas are pydantic's JSON Schemas (2020-12, which
OpenAPI 3.1 uses as is) of the very models that validate the requests.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel
from pydantic.json_schema import models_json_schema

from callbackd.web.api.models import Error

__all__ = ["Operation", "Parameter", "openapi_document"]

_PATH_PARAM = re.compile(r"\{(\w+)\}")
_REF = "#/components/schemas/{model}"


@dataclass(frozen=True)
class Parameter:
    """A query or header parameter."""

    name: str
    where: str  # "query" or "header"
    schema: dict[str, Any]
    description: str = ""
    required: bool = False


@dataclass(frozen=True)
class Operation:
    """One API operation: what it takes, what it answers."""

    method: str
    #: the path under the API's root, OpenAPI style: ``/v1/sessions/{session_id}``
    path: str
    summary: str
    status: int
    #: the body of the success answer (None: no body)
    response: type[BaseModel] | None = None
    body: type[BaseModel] | None = None
    parameters: tuple[Parameter, ...] = ()
    #: other media types of the success answer, with their schema
    media: dict[str, dict[str, Any]] = field(default_factory=dict)
    #: the error statuses it may answer (documented with the Error body)
    errors: tuple[int, ...] = ()
    auth: bool = True

    @property
    def klein_path(self) -> str:
        """The path in Klein's (werkzeug's) syntax."""
        return _PATH_PARAM.sub(r"<\1>", self.path)

    @property
    def operation_id(self) -> str:
        words = [w for w in re.split(r"[/{}_-]+", self.path) if w and w != "v1"]
        return self.method.lower() + "".join(w.capitalize() for w in words)


_REASONS = {
    400: "Malformed request (not JSON, a bad header)",
    401: "No valid API key",
    402: "Not enough credit",
    403: "The account is blocked",
    404: "No such session (or not this account's)",
    409: "Conflicting state (the session ended; an idempotent request still running)",
    413: "Body larger than the limit",
    415: "Body not application/json",
    422: "The body or a parameter is invalid, or the engine refused the request",
    429: "Too many sessions in flight",
    503: "The switch or the store is unavailable; try again",
}


def openapi_document(
    operations: Iterable[Operation], *, prefix: str, title: str, version: str
) -> dict[str, Any]:
    """The OpenAPI 3.1 document of ``operations`` served under ``prefix`` (e.g. ``/api``)."""
    operations = list(operations)
    models: list[tuple[type[BaseModel], Any]] = [(Error, "serialization")]
    for op in operations:
        if op.body is not None:
            models.append((op.body, "validation"))
        if op.response is not None:
            models.append((op.response, "serialization"))
    refs, defs = models_json_schema(models, ref_template=_REF)
    paths: dict[str, dict[str, Any]] = {}
    for op in operations:
        paths.setdefault(prefix + op.path, {})[op.method.lower()] = _operation(op, refs)
    return {
        "openapi": "3.1.0",
        "info": {"title": title, "version": version},
        "paths": paths,
        "components": {
            "schemas": defs.get("$defs", {}),
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        },
    }


def _operation(op: Operation, refs: dict[Any, Any]) -> dict[str, Any]:
    error = {"application/json": {"schema": refs[(Error, "serialization")]}}
    success: dict[str, Any] = {"description": op.summary}
    content = {}
    if op.response is not None:
        content["application/json"] = {"schema": refs[(op.response, "serialization")]}
    content.update({media: {"schema": schema} for media, schema in op.media.items()})
    if content:
        success["content"] = content
    responses: dict[str, Any] = {str(op.status): success}
    for status in sorted({*op.errors, 400, 413} | ({401} if op.auth else set())):
        responses[str(status)] = {"description": _REASONS[status], "content": error}
    responses["default"] = {"description": "An error", "content": error}
    parameters = [
        {"name": name, "in": "path", "required": True, "schema": {"type": "string"}}
        for name in _PATH_PARAM.findall(op.path)
    ]
    parameters += [
        {
            "name": p.name,
            "in": p.where,
            "required": p.required,
            "schema": p.schema,
            **({"description": p.description} if p.description else {}),
        }
        for p in op.parameters
    ]
    out: dict[str, Any] = {
        "operationId": op.operation_id,
        "summary": op.summary,
        "responses": responses,
        "security": [{"bearer": []}] if op.auth else [],
    }
    if parameters:
        out["parameters"] = parameters
    if op.body is not None:
        out["requestBody"] = {
            "required": True,
            "content": {"application/json": {"schema": refs[(op.body, "validation")]}},
        }
    return out
