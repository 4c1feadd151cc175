"""The HTTP root: ``/`` (what this is), ``/healthz``, ``/metrics``, and whatever is added later.

Portal, REST and SMS webhooks are added as children with
``root.add_child("api", resource)``. The root counts every answered request in
``callbackd_http_requests_total``, labelled by its top-level child (so the
label has as few values as the root has children).
"""

from __future__ import annotations

from typing import Any

from twisted.application import service, strports
from twisted.python.failure import Failure
from twisted.web import pages, resource, server

from callbackd.config import WebConfig
from callbackd.metrics import Metrics
from callbackd.web.ops import HealthRegistry, HealthResource, MetricsResource

__all__ = ["WebRootResource", "make_web_root", "make_web_service"]

#: seconds an idle HTTP connection is kept open
IDLE_TIMEOUT = 60

_ABOUT = (
    "callbackd: telecom callback daemon.\n"
    "\n"
    "/healthz  health check (JSON; 200 when healthy, 503 when not)\n"
    "/metrics  Prometheus metrics\n"
)


class WebRootResource(resource.Resource):
    """The root resource; children are added with :meth:`add_child`."""

    def __init__(self, metrics: Metrics | None = None) -> None:
        super().__init__()
        self._metrics = metrics
        #: where ``GET /`` sends a browser (:meth:`set_home`); None: ``/`` says what this is
        self.home: str | None = None

    def set_home(self, path: str) -> None:
        """Answer ``GET /`` with a redirect to ``path`` (the portal's pages)."""
        if not path.startswith("/") or path.startswith("//"):
            raise ValueError(f"bad home path {path!r}")
        self.home = path

    def add_child(self, name: str, child: resource.IResource) -> None:
        """Serve ``child`` at ``/name``."""
        if not name or "/" in name:
            raise ValueError(f"bad child name {name!r}")
        self.putChild(name.encode("utf-8"), child)

    def getChildWithDefault(self, path: bytes, request: server.Request) -> resource.IResource:
        if self._metrics is not None:
            self._count(path, request)
        if path == b"":
            return self
        return super().getChildWithDefault(path, request)

    def _count(self, path: bytes, request: server.Request) -> None:
        label = "/" + path.decode("utf-8") if path == b"" or path in self.children else "other"
        method = request.method.decode("ascii", "replace")
        if method not in ("GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS"):
            method = "other"
        counter = self._metrics.http_requests  # type: ignore[union-attr]

        def done(result: Any) -> None:
            code = "disconnected" if isinstance(result, Failure) else str(request.code)
            counter.labels(path=label, method=method, code=code).inc()

        request.notifyFinish().addBoth(done)

    def getChild(self, path: bytes, request: server.Request) -> resource.IResource:
        return pages.notFound("No such resource", "There is nothing at this path.")

    def render_GET(self, request: server.Request) -> bytes:
        if self.home is not None:
            request.setResponseCode(302)
            request.setHeader(b"location", self.home.encode("utf-8"))
            return b""
        request.setHeader(b"content-type", b"text/plain; charset=utf-8")
        names = sorted(n.decode() for n in self.children if n not in (b"healthz", b"metrics"))
        more = "".join(f"/{n}\n" for n in names)
        return (_ABOUT + more).encode("utf-8")


def make_web_root(health: HealthRegistry, metrics: Metrics) -> WebRootResource:
    """The root resource with ``/``, ``/healthz`` and ``/metrics``."""
    root = WebRootResource(metrics)
    root.add_child("healthz", HealthResource(health))
    root.add_child("metrics", MetricsResource(metrics.registry))
    return root


def make_web_service(
    config: WebConfig, root: resource.IResource, *, reactor: Any = None
) -> service.Service:
    """The HTTP service: a ``Site`` for ``root`` listening on ``config.listen`` (strports).

    ``reactor`` defaults to the global one.
    """
    if reactor is None:
        from twisted.internet import reactor as global_reactor

        reactor = global_reactor
    site = server.Site(root, timeout=IDLE_TIMEOUT, reactor=reactor)
    svc: service.Service = strports.service(config.listen, site, reactor=reactor)
    return svc
