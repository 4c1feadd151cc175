"""The daemon's Prometheus metrics, on a registry the daemon owns.

Every metric lives on a private ``CollectorRegistry`` (never prometheus_client's
global one), so several daemons in one process, or many tests, do not collide.
Components get the :class:`Metrics` object and update its attributes directly,
for example ``metrics.legs_originated.labels(provider="MKS", outcome="answered").inc()``.
"""

from __future__ import annotations

from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

__all__ = ["ORIGINATE_BUCKETS", "Metrics"]

#: seconds from Originate to its OriginateResponse: includes ringing, up to the ring timeout
ORIGINATE_BUCKETS = (0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 20.0, 30.0, 45.0, 60.0, 120.0)


class Metrics:
    """The daemon's metrics, created on ``registry`` (a new private one by default).

    Attributes, with their labels:

    - ``sessions_started``: callback sessions started
    - ``sessions_ended`` (outcome): sessions finished, e.g. completed, failed, no_credit
    - ``sessions_active``: sessions running now
    - ``legs_originated`` (provider, outcome): legs originated, e.g. answered, busy, failed
    - ``originate_latency`` (provider): seconds from Originate to OriginateResponse
    - ``ami_connected``: 1 while logged in to the AMI (of every switch), else 0
    - ``ami_switch_connected`` (switch): 1 while logged in to that switch's AMI, else 0
    - ``switch_sessions`` (switch): sessions in flight placed on that switch
    - ``ami_events`` (event): AMI events received, by event name
    - ``redis_up``: 1 while Redis answers, else 0
    - ``billed_amount`` (currency): money charged, in integer minor units
    - ``http_requests`` (path, method, code): HTTP requests answered
    """

    def __init__(self, registry: CollectorRegistry | None = None, namespace: str = "callbackd"):
        self.registry = registry if registry is not None else CollectorRegistry(auto_describe=True)
        common: dict[str, Any] = {"namespace": namespace, "registry": self.registry}
        self.sessions_started = Counter("sessions_started", "Callback sessions started", **common)
        self.sessions_ended = Counter(
            "sessions_ended", "Callback sessions ended, by outcome", ["outcome"], **common
        )
        self.sessions_active = Gauge("sessions_active", "Callback sessions running now", **common)
        self.legs_originated = Counter(
            "legs_originated",
            "Call legs originated, by provider and outcome",
            ["provider", "outcome"],
            **common,
        )
        self.originate_latency = Histogram(
            "originate_latency_seconds",
            "Seconds from Originate to its OriginateResponse, by provider",
            ["provider"],
            buckets=ORIGINATE_BUCKETS,
            **common,
        )
        self.ami_connected = Gauge(
            "ami_connected", "1 while logged in to the Asterisk manager interface", **common
        )
        self.ami_switch_connected = Gauge(
            "ami_switch_connected",
            "1 while logged in to that switch's Asterisk manager interface, by switch",
            ["switch"],
            **common,
        )
        self.switch_sessions = Gauge(
            "switch_sessions",
            "Callback sessions in flight, by the switch they run on",
            ["switch"],
            **common,
        )
        self.ami_events = Counter(
            "ami_events", "AMI events received, by event name", ["event"], **common
        )
        self.redis_up = Gauge("redis_up", "1 while Redis answers", **common)
        self.billed_amount = Counter(
            "billed_amount_minor_units",
            "Money charged to accounts, in integer minor units of the billing currency",
            ["currency"],
            **common,
        )
        self.http_requests = Counter(
            "http_requests",
            "HTTP requests answered, by top-level path, method and status code",
            ["path", "method", "code"],
            **common,
        )
