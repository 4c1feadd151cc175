"""The health registry, /healthz and /metrics: unit tests on a Clock, then real HTTP on loopback."""

from __future__ import annotations

import json

import pytest
import pytest_twisted
import treq
from prometheus_client import REGISTRY
from twisted.internet import defer, task
from twisted.internet.error import ConnectionDone
from twisted.python.failure import Failure
from twisted.web import resource, server
from twisted.web.test.requesthelper import DummyRequest

from callbackd.config import WebConfig
from callbackd.metrics import Metrics
from callbackd.web.ops import CheckResult, HealthRegistry, HealthResource
from callbackd.web.root import make_web_root, make_web_service
from tests.procs import free_port


def ok_check():
    return (True, "fine")


def failing_check():
    return (False, "down since 12:00")


def raising_check():
    raise RuntimeError("boom")


def report_of(registry: HealthRegistry):
    results = []
    registry.run().addBoth(results.append)
    return results


# --- HealthRegistry on a task.Clock ---------------------------------------------------------


def test_all_checks_ok_makes_the_report_ok():
    """A report whose checks all pass is ok and says status ok."""
    registry = HealthRegistry(task.Clock())
    registry.register("redis", ok_check)
    registry.register("ami", lambda: defer.succeed((True, "logged in")))
    (report,) = report_of(registry)
    assert report.ok
    assert report.to_json() == {
        "status": "ok",
        "checks": {
            "ami": {"ok": True, "detail": "logged in"},
            "redis": {"ok": True, "detail": "fine"},
        },
    }


def test_one_failing_check_makes_the_report_unhealthy():
    """One check answering not-ok makes the whole report unhealthy, keeping its detail."""
    registry = HealthRegistry(task.Clock())
    registry.register("redis", ok_check)
    registry.register("ami", failing_check)
    (report,) = report_of(registry)
    assert not report.ok
    assert report.to_json()["status"] == "unhealthy"
    assert report.checks["ami"] == CheckResult(False, "down since 12:00")
    assert report.checks["redis"].ok


def test_a_raising_check_counts_as_not_ok():
    """A check that raises is reported not ok with the exception, not as an error."""
    registry = HealthRegistry(task.Clock())
    registry.register("ami", raising_check)
    (report,) = report_of(registry)
    assert report.checks["ami"].ok is False
    assert "RuntimeError: boom" in report.checks["ami"].detail


def test_a_failed_deferred_counts_as_not_ok():
    """A check whose Deferred errbacks is reported not ok."""
    registry = HealthRegistry(task.Clock())
    registry.register("redis", lambda: defer.fail(ConnectionError("refused")))
    (report,) = report_of(registry)
    assert report.checks["redis"].ok is False
    assert "refused" in report.checks["redis"].detail


def test_a_check_returning_nonsense_counts_as_not_ok():
    """A check returning something other than (bool, str) is not ok."""
    registry = HealthRegistry(task.Clock())
    registry.register("odd", lambda: "yes")
    (report,) = report_of(registry)
    assert report.checks["odd"].ok is False


def test_a_slow_check_times_out_and_is_cancelled():
    """A check not answering within the timeout is not ok, and its Deferred is cancelled."""
    clock = task.Clock()
    registry = HealthRegistry(clock, timeout=2.0)
    pending: list[defer.Deferred] = []

    def slow():
        d = defer.Deferred()
        pending.append(d)
        return d

    registry.register("slow", slow)
    registry.register("fast", ok_check)
    results = report_of(registry)
    clock.advance(1.9)
    assert results == []
    clock.advance(0.2)
    (report,) = results
    assert report.checks["slow"] == CheckResult(False, "no answer within 2s")
    assert report.checks["fast"].ok
    assert pending[0].called  # cancelled, so the check's owner can clean up


def test_no_checks_is_ok():
    """With nothing registered the report is ok and empty."""
    (report,) = report_of(HealthRegistry(task.Clock()))
    assert report.ok and report.checks == {}


def test_a_name_registers_once():
    """Registering the same check name twice is an error; unregistering frees it."""
    registry = HealthRegistry(task.Clock())
    registry.register("redis", ok_check)
    with pytest.raises(ValueError):
        registry.register("redis", ok_check)
    registry.unregister("redis")
    registry.register("redis", failing_check)
    assert registry.names == ["redis"]


def test_healthz_writes_nothing_to_a_client_that_left():
    """A slow /healthz whose client went away meanwhile neither writes nor finishes."""
    clock = task.Clock()
    registry = HealthRegistry(clock, timeout=1.0)
    registry.register("slow", lambda: defer.Deferred())
    request = DummyRequest([b"healthz"])
    assert HealthResource(registry).render(request) == server.NOT_DONE_YET
    request.processingFailed(Failure(ConnectionDone("client left")))
    clock.advance(2)
    assert request.written == []
    assert request.finished == 0


def test_healthz_finishes_the_request_on_a_clock():
    """/healthz answers once the slowest check timed out: 503, JSON, finished."""
    clock = task.Clock()
    registry = HealthRegistry(clock, timeout=1.0)
    registry.register("slow", lambda: defer.Deferred())
    request = DummyRequest([b"healthz"])
    HealthResource(registry).render(request)
    assert request.finished == 0
    clock.advance(1)
    assert request.finished == 1
    assert request.responseCode == 503
    assert json.loads(b"".join(request.written))["checks"]["slow"]["ok"] is False


# --- real HTTP over loopback ----------------------------------------------------------------


class Hello(resource.Resource):
    isLeaf = True

    def render_GET(self, request):
        return b"hello from api"


class Web:
    """The web service for a registry and metrics, listening on a free loopback port."""

    def __init__(self, health: HealthRegistry, metrics: Metrics) -> None:
        from twisted.internet import reactor

        self.port = free_port()
        self.root = make_web_root(health, metrics)
        self.service = make_web_service(
            WebConfig(listen=f"tcp:{self.port}:interface=127.0.0.1"), self.root, reactor=reactor
        )
        self.service.startService()

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def get(self, path: str):
        return treq.get(self.url(path), timeout=10, persistent=False)


@pytest.fixture
def web():
    from twisted.internet import reactor

    servers = []

    def make(*checks, timeout=5.0, metrics=None):
        health = HealthRegistry(reactor, timeout=timeout)
        for name, check in checks:
            health.register(name, check)
        server = Web(health, metrics or Metrics())
        servers.append(server)
        return server

    yield make
    for running in servers:
        pytest_twisted.blockon(running.service.stopService())


@pytest_twisted.inlineCallbacks
def test_healthz_answers_200_when_all_ok(web):
    """GET /healthz answers 200 and status ok when every check passes."""
    server = web(("redis", ok_check), ("ami", ok_check))
    response = yield server.get("/healthz")
    body = json.loads((yield response.content()))
    assert response.code == 200
    assert response.headers.getRawHeaders("content-type") == ["application/json"]
    assert body["status"] == "ok"
    assert body["checks"]["redis"] == {"ok": True, "detail": "fine"}


@pytest_twisted.inlineCallbacks
def test_healthz_answers_503_when_a_check_fails(web):
    """GET /healthz answers 503 and names the failing check."""
    server = web(("redis", ok_check), ("ami", failing_check))
    response = yield server.get("/healthz")
    body = json.loads((yield response.content()))
    assert response.code == 503
    assert body["status"] == "unhealthy"
    assert body["checks"]["ami"] == {"ok": False, "detail": "down since 12:00"}


@pytest_twisted.inlineCallbacks
def test_healthz_answers_503_when_a_check_raises(web):
    """A raising check still gets an answer: 503 with the error in its detail."""
    server = web(("redis", raising_check))
    response = yield server.get("/healthz")
    body = json.loads((yield response.content()))
    assert response.code == 503
    assert "boom" in body["checks"]["redis"]["detail"]


@pytest_twisted.inlineCallbacks
def test_healthz_answers_503_when_a_check_hangs(web):
    """A check that never answers times out: /healthz still answers, 503."""
    server = web(("stuck", lambda: defer.Deferred()), ("redis", ok_check), timeout=0.2)
    response = yield server.get("/healthz")
    body = json.loads((yield response.content()))
    assert response.code == 503
    assert body["checks"]["stuck"]["ok"] is False
    assert body["checks"]["redis"]["ok"] is True


@pytest_twisted.inlineCallbacks
def test_metrics_serves_the_daemons_registry(web):
    """GET /metrics serves Prometheus text with the values set on the daemon's Metrics."""
    metrics = Metrics()
    metrics.ami_connected.set(1)
    metrics.legs_originated.labels(provider="MKS", outcome="answered").inc(3)
    metrics.billed_amount.labels(currency="EUR").inc(1204)
    server = web(metrics=metrics)
    response = yield server.get("/metrics")
    text = yield response.text()
    assert response.code == 200
    assert response.headers.getRawHeaders("content-type")[0].startswith("text/plain")
    assert "callbackd_ami_connected 1.0" in text
    assert 'callbackd_legs_originated_total{outcome="answered",provider="MKS"} 3.0' in text
    assert 'callbackd_billed_amount_minor_units_total{currency="EUR"} 1204.0' in text


@pytest_twisted.inlineCallbacks
def test_metrics_counts_http_requests(web):
    """Answered requests are counted by top-level path, method and status code."""
    metrics = Metrics()
    server = web(("ami", failing_check), metrics=metrics)
    for path in ("/healthz", "/healthz", "/nowhere/deep"):
        response = yield server.get(path)
        yield response.content()
    response = yield server.get("/metrics")
    text = yield response.text()
    assert 'callbackd_http_requests_total{code="503",method="GET",path="/healthz"} 2.0' in text
    assert 'callbackd_http_requests_total{code="404",method="GET",path="other"} 1.0' in text


@pytest_twisted.inlineCallbacks
def test_root_says_what_this_is(web):
    """GET / answers plain text naming the daemon and its endpoints."""
    server = web()
    response = yield server.get("/")
    text = yield response.text()
    assert response.code == 200
    assert "callbackd" in text and "/healthz" in text and "/metrics" in text


@pytest_twisted.inlineCallbacks
def test_a_child_added_later_is_served(web):
    """A resource added with add_child is served at its path (as portal/REST will be)."""
    server = web()
    server.root.add_child("api", Hello())
    response = yield server.get("/api")
    assert (yield response.content()) == b"hello from api"
    index = yield (yield server.get("/")).text()
    assert "/api" in index


def test_metrics_stay_off_the_global_registry():
    """Two Metrics objects coexist and neither touches prometheus_client's global registry."""
    first, second = Metrics(), Metrics()
    first.sessions_started.inc()
    assert first.registry is not second.registry
    assert first.registry.get_sample_value("callbackd_sessions_started_total") == 1.0
    assert second.registry.get_sample_value("callbackd_sessions_started_total") == 0.0
    assert REGISTRY.get_sample_value("callbackd_sessions_started_total") is None
