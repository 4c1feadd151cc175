"""The web portal at ``/portal``: the users' and the operators' pages (docs/portal.rst).

Klein routes on twisted.web, Jinja2 templates (autoescaped), a little plain JavaScript
with EventSource for the live leg status, words from the gettext catalogue
(``web.*``), logins kept in the store (:meth:`IStore.create_web_session`).
"""

from __future__ import annotations

from typing import Any

from klein.resource import KleinResource
from twisted.internet.interfaces import IReactorTime
from twisted.web.iweb import IRequest

from callbackd.config import Config
from callbackd.web.portal.base import PREFIX
from callbackd.web.portal.forms import MAX_BODY
from callbackd.web.portal.operators import OperatorPages
from callbackd.web.portal.security import HSTS, SECURITY_HEADERS
from callbackd.web.portal.users import UserPages

__all__ = ["PREFIX", "Portal", "PortalResource", "make_portal"]


class Portal(UserPages, OperatorPages):
    """Every portal route, bound to one daemon's store, engine and configuration."""


class PortalResource(KleinResource):
    """The portal's routes, every answer with the security headers; a body over
    :data:`~callbackd.web.portal.forms.MAX_BODY` is refused (413) unread by the routes."""

    def render(self, request: IRequest) -> Any:
        for name, value in SECURITY_HEADERS.items():
            request.setHeader(name, value)
        if request.isSecure():
            request.setHeader(*HSTS)
        length = request.getHeader(b"content-length")
        if length is not None and (not length.isdigit() or int(length) > MAX_BODY):
            request.setResponseCode(413)
            request.setHeader(b"content-type", b"text/plain; charset=utf-8")
            return b"Request body too large.\n"
        return super().render(request)


def make_portal(store: Any, engine: Any, config: Config, clock: IReactorTime) -> PortalResource:
    """The portal's resource, to mount as the web root's child ``portal``."""
    return PortalResource(Portal(store, engine, config, clock).app)
