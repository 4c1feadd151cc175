"""The REST API's running parts, as the daemon's ``api`` child: the event hub and webhooks.

:func:`make_api` builds them from ``[api]`` and mounts the API at ``/api`` on the web
root; the ``api`` service starts the SSE hub (:func:`callbackd.web.sse.install_hub`) and
the webhook sender before the ``web`` child listens, and stops them after it.
"""

from __future__ import annotations

from typing import Any

from twisted.application import service
from twisted.internet import defer

from callbackd.backoff import capped_backoff
from callbackd.config import Config
from callbackd.web.api.app import ApiApp, ApiSettings
from callbackd.web.sse import SessionEventHub, install_hub
from callbackd.web.webhooks import WebhookSender

__all__ = ["ApiService", "make_api"]


class ApiService(service.MultiService):
    """Starts the engine's SSE hub and the webhook sender; stops them."""

    def __init__(self, engine: Any, webhooks: WebhookSender, **hub_settings: Any) -> None:
        super().__init__()
        self.engine = engine
        self.webhooks = webhooks
        self.hub_settings = hub_settings
        self.hub: SessionEventHub | None = None
        webhooks.setServiceParent(self)

    def startService(self) -> None:
        self.hub = install_hub(self.engine, **self.hub_settings)
        super().startService()

    def stopService(self) -> defer.Deferred[None]:  # type: ignore[override]
        if self.hub is not None:
            self.hub.stop()
        d: defer.Deferred[None] = defer.maybeDeferred(super().stopService)
        return d


def make_api(
    config: Config, store: Any, engine: Any, reactor: Any, http: Any
) -> tuple[ApiService, ApiApp]:
    """The ``api`` service and the Klein application to mount at ``/api``."""
    api = config.api
    webhooks = WebhookSender(
        store,
        engine,
        reactor,
        http,
        timeout=api.webhook_timeout,
        backoff=capped_backoff(api.webhook_retry_initial, api.webhook_retry_max),
        max_attempts=api.webhook_max_attempts,
    )
    settings = ApiSettings(
        currency=config.billing.currency,
        decimals=config.billing.decimals,
        idempotency_ttl=api.idempotency_ttl,
        max_body=api.max_body,
        ended_visible=api.ended_visible,
    )
    app = ApiApp(engine, store, reactor, settings, on_webhook_changed=webhooks.forget)
    running = ApiService(engine, webhooks, buffer_size=api.sse_buffer, heartbeat=api.sse_heartbeat)
    return running, app
