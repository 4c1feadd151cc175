"""HTTP: the root resource, the health check and metrics (portal, REST and SMS come later)."""

from callbackd.web.ops import HealthRegistry, HealthReport, HealthResource, MetricsResource
from callbackd.web.root import WebRootResource, make_web_root, make_web_service

__all__ = [
    "HealthRegistry",
    "HealthReport",
    "HealthResource",
    "MetricsResource",
    "WebRootResource",
    "make_web_root",
    "make_web_service",
]
