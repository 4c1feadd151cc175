"""The REST API under ``/api/v1`` (see :mod:`callbackd.web.api.app` and docs/api.rst)."""

from callbackd.web.api.app import API_VERSION, ApiApp, ApiError, ApiSettings, refusal_status

__all__ = ["API_VERSION", "ApiApp", "ApiError", "ApiSettings", "refusal_status"]
