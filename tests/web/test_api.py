"""The REST API end to end: the daemon under twistd (simulated Asterisk, a real
redis-server), every endpoint over a real loopback socket, the SSE stream with
resumption, a signed webhook received by a local HTTP server, and the bad inputs."""

from __future__ import annotations

import csv
import http.server
import io
import json
import re
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis import GenerationMode
from schemathesis.checks import (
    content_type_conformance,
    not_a_server_error,
    response_schema_conformance,
    status_code_conformance,
)

from callbackd.web.webhooks import SIGNATURE_HEADER, verify_signature
from tests.integration.daemon import Daemon, redis_command
from tests.web.api_client import Api, EventStream

pytestmark = pytest.mark.integration

SOURCE = "+4930123456"
DESTINATION = "+4989123456"
EXTRA = "+4940123456"


class Running:
    """The daemon, and an API key of alice and of bob."""

    def __init__(self, daemon: Daemon, redis_port: int) -> None:
        self.daemon = daemon
        self.redis_port = redis_port
        self.port = daemon.web_port
        self.alice = self.new_key("alice")
        self.bob = self.new_key("bob")

    def new_key(self, username: str) -> str:
        return self.daemon.admin("create-api-key", username, "--label", "tests").stdout.strip()

    def api(self, key: str | None = "alice") -> Api:
        secret = {"alice": self.alice, "bob": self.bob}.get(key or "", key)
        return Api(self.port, secret)

    def stream(self, session_id: str, last: str | None = None) -> EventStream:
        return EventStream(self.port, f"/api/v1/sessions/{session_id}/events", self.alice, last)


@pytest.fixture(scope="module")
def running(tmp_path_factory, redis_server) -> Iterator[Running]:
    redis_server.flush()
    workdir: Path = tmp_path_factory.mktemp("api")
    daemon = Daemon(
        workdir,
        redis_port=redis_server.port,
        extra="\n[api]\nsse_heartbeat = 1\nwebhook_retry_initial = 0.2\nwebhook_retry_max = 1\n",
    )
    daemon.start()
    try:
        daemon.wait_healthy()
        deadline = time.monotonic() + 20
        while redis_command(redis_server.port, "GET", "cb:acct:bob:balance") in (None, b"0"):
            assert time.monotonic() < deadline, "demo accounts never appeared"
            time.sleep(0.1)
        yield Running(daemon, redis_server.port)
    finally:
        daemon.stop()
    assert "Traceback" not in daemon.log(), daemon.log()


def wait_ended(running: Running, session_id: str, timeout: float = 20.0) -> dict:
    """Poll GET until the session reads as ended; its body."""
    api = running.api()
    deadline = time.monotonic() + timeout
    while True:
        answer = api.get(f"/api/v1/sessions/{session_id}")
        assert answer.status == 200, answer
        if answer.json["phase"] == "ended":
            return answer.json
        assert time.monotonic() < deadline, answer.json
        time.sleep(0.1)


def start(running: Running, **body) -> str:
    answer = running.api().post(
        "/api/v1/sessions", {"source": SOURCE, "destination": DESTINATION, **body}
    )
    assert answer.status == 201, answer
    return str(answer.json["id"])


# -- the contract ---------------------------------------------------------------------


def test_openapi_document_is_served_without_a_key(running):
    answer = running.api(None).get("/api/v1/openapi.json")
    assert answer.status == 200 and answer.headers["content-type"] == "application/json"
    doc = answer.json
    assert doc["openapi"] == "3.1.0"
    assert set(doc["paths"]) == {
        "/api/v1/sessions",
        "/api/v1/sessions/{session_id}",
        "/api/v1/sessions/{session_id}/legs",
        "/api/v1/sessions/{session_id}/legs/{leg}",
        "/api/v1/sessions/{session_id}/events",
        "/api/v1/balance",
        "/api/v1/cdrs",
        "/api/v1/webhook",
        "/api/v1/openapi.json",
    }
    create = doc["paths"]["/api/v1/sessions"]["post"]
    schema = create["requestBody"]["content"]["application/json"]["schema"]
    body = doc["components"]["schemas"][schema["$ref"].rpartition("/")[2]]
    assert body["additionalProperties"] is False
    assert set(body["required"]) == {"source", "destination"}


# -- a whole call -------------------------------------------------------------------


def test_a_callback_through_the_api(running):
    """Create, watch the legs ring and connect, add a leg, drop it, hang up; then the
    ended session, its CDRs (JSON, CSV, pages) and the balance after."""
    api = running.api()
    before = api.get("/api/v1/balance").json
    assert before["currency"] == "EUR" and before["decimals"] == 5 and before["balance"] > 0
    created = api.post("/api/v1/sessions", {"source": SOURCE, "destination": DESTINATION})
    assert created.status == 201, created
    session = created.json
    sid = session["id"]
    assert created.headers["location"] == f"/api/v1/sessions/{sid}"
    assert [leg["role"] for leg in session["legs"]] == ["source", "destination"]
    assert session["legs"][0]["address"] == "phone:" + SOURCE  # the engine's canonical form

    stream = running.stream(sid)
    stream.read_until(lambda s: s.has("talking"))
    assert stream.status == 200
    assert stream.has("leg_ringing", role="source") and stream.has("leg_answered", role="source")
    assert stream.has("leg_ringing", role="destination")  # then "talking": both are up
    assert stream.ids == [str(e["seq"]) for e in stream.events]

    live = api.get(f"/api/v1/sessions/{sid}").json
    assert live["phase"] == "talking"
    assert [leg["state"] for leg in live["legs"]] == ["up", "up"]
    assert all(leg["answered_at"] for leg in live["legs"])

    added = api.post(f"/api/v1/sessions/{sid}/legs", {"address": EXTRA})
    assert added.status == 202, added
    assert added.json["legs"][-1]["role"] == "additional"
    leg_id = added.json["legs"][-1]["id"]
    stream.read_until(lambda s: s.has("party_answered", role="additional"))
    dropped = api.delete(f"/api/v1/sessions/{sid}/legs/{leg_id}")
    assert dropped.status == 202, dropped
    stream.read_until(lambda s: s.has("leg_ended", leg=leg_id))

    time.sleep(1.1)  # a billed second or so
    hung = api.delete(f"/api/v1/sessions/{sid}")
    assert hung.status == 202, hung
    stream.read_to_end()
    assert stream.kinds()[-1] == "session_ended"

    ended = wait_ended(running, sid)
    assert [leg["id"] for leg in ended["legs"]] == ["source", "destination", leg_id]
    assert all(leg["state"] == "ended" and leg["ended_at"] for leg in ended["legs"])
    assert ended["cost"] == sum(leg["cost"] for leg in ended["legs"]) > 0
    after = api.get("/api/v1/balance").json
    assert after["balance"] == before["balance"] - ended["cost"]

    # commands on an ended session: 409; its stream: 204
    assert api.delete(f"/api/v1/sessions/{sid}").status == 409
    assert api.post(f"/api/v1/sessions/{sid}/legs", {"address": EXTRA}).error == "session_ended"
    done = running.stream(sid, last=stream.ids[-1])
    done.read_to_end()
    assert done.status == 204

    cdrs = api.get("/api/v1/cdrs").json
    mine = [c for c in cdrs["cdrs"] if c["session_id"] == sid]
    assert {c["leg"] for c in mine} == {"", "source", "destination", leg_id}
    assert sum(c["cost"] for c in mine if c["kind"] == "leg") == ended["cost"]
    as_csv = api.get("/api/v1/cdrs?format=csv")
    assert as_csv.headers["content-type"].startswith("text/csv")
    rows = list(csv.DictReader(io.StringIO(as_csv.body.decode())))
    assert {r["leg"] for r in rows if r["session_id"] == sid} == {
        "",
        "source",
        "destination",
        leg_id,
    }
    by_accept = api.get("/api/v1/cdrs", headers={"Accept": "text/csv"})
    assert by_accept.body == as_csv.body

    # a page at a time
    seen, cursor = [], None
    while True:
        page = api.get("/api/v1/cdrs?limit=1" + (f"&cursor={cursor}" if cursor else "")).json
        seen += [c["cdr_id"] for c in page["cdrs"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == [c["cdr_id"] for c in cdrs["cdrs"]]


def test_the_event_stream_resumes_after_last_event_id(running):
    sid = start(running)
    first = running.stream(sid)
    first.read_until(lambda s: s.has("talking"))
    first.close()
    cut = first.ids[2]
    again = running.stream(sid, last=cut)
    again.read_until(lambda s: s.has("talking"))
    assert again.ids == first.ids[3 : len(again.ids) + 3]
    assert again.events[0]["seq"] == int(cut) + 1
    again.read_until(lambda s: s.comments >= 1, timeout=5)  # heartbeats while idle
    running.api().delete(f"/api/v1/sessions/{sid}")
    again.read_to_end()
    assert again.kinds()[-1] == "session_ended"


def test_idempotency_key(running):
    """A retry with the key gets the first answer; another body with it is refused."""
    api = running.api()
    body = {"source": SOURCE, "destination": "+4930999888"}
    headers = {"Idempotency-Key": "order-42"}
    first = api.post("/api/v1/sessions", body, headers=headers)
    assert first.status == 201
    again = api.post("/api/v1/sessions", body, headers=headers)
    assert again.status == 201 and again.json == first.json
    assert again.headers.get("idempotent-replayed") == "true"
    other = api.post("/api/v1/sessions", {**body, "destination": "+4930999777"}, headers=headers)
    assert other.status == 422 and other.error == "idempotency_key_reused"
    # the key is per account: bob may use it too
    bob = running.api("bob").post("/api/v1/sessions", body, headers=headers)
    assert bob.status == 201 and bob.json["id"] != first.json["id"]
    sessions = [first.json["id"], bob.json["id"]]
    assert running.api().delete(f"/api/v1/sessions/{sessions[0]}").status == 202
    assert running.api("bob").delete(f"/api/v1/sessions/{sessions[1]}").status == 202
    bad = api.post("/api/v1/sessions", body, headers={"Idempotency-Key": "x" * 300})
    assert bad.status == 400


# -- webhooks -----------------------------------------------------------------------


class _Receiver(http.server.BaseHTTPRequestHandler):
    received: list[tuple[dict, bytes]] = []
    fail_first = True

    def do_POST(self):  # noqa: N802 (http.server's name)
        body = self.rfile.read(int(self.headers["Content-Length"]))
        if _Receiver.fail_first:  # the first delivery fails: it is retried
            _Receiver.fail_first = False
            self.send_response(503)
            self.end_headers()
            return
        _Receiver.received.append(({k.lower(): v for k, v in self.headers.items()}, body))
        self.send_response(204)
        self.end_headers()

    def log_message(self, *args):
        pass


def test_signed_webhooks_reach_a_local_server(running):
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Receiver)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        api = running.api("bob")
        url = f"http://127.0.0.1:{server.server_address[1]}/hook"
        assert api.get("/api/v1/webhook").status == 404
        hook = api.request("PUT", "/api/v1/webhook", {"url": url})
        assert hook.status == 200 and hook.json["url"] == url
        secret = hook.json["secret"]
        assert api.get("/api/v1/webhook").json == hook.json
        sid = (
            running.api("bob")
            .post("/api/v1/sessions", {"source": SOURCE, "destination": DESTINATION})
            .json["id"]
        )
        deadline = time.monotonic() + 20
        while not any(json.loads(b)["type"] == "talking" for _, b in _Receiver.received):
            assert time.monotonic() < deadline, _Receiver.received
            time.sleep(0.05)
        api.delete(f"/api/v1/sessions/{sid}")
        while not any(json.loads(b)["type"] == "session_ended" for _, b in _Receiver.received):
            assert time.monotonic() < deadline, _Receiver.received
            time.sleep(0.05)
        for headers, body in _Receiver.received:
            assert verify_signature(secret, headers[SIGNATURE_HEADER.lower()], body)
            assert not verify_signature("whsec_wrong", headers[SIGNATURE_HEADER.lower()], body)
            assert not verify_signature(secret, headers[SIGNATURE_HEADER.lower()], body + b" ")
            event = json.loads(body)
            assert event["data"]["session_id"] == sid
            assert headers["x-callbackd-delivery"] == event["id"]
        seqs = sorted(json.loads(b)["data"]["seq"] for _, b in _Receiver.received)
        assert seqs == list(range(1, len(seqs) + 1))  # every event, once (one retried)
        assert api.delete("/api/v1/webhook").status == 204
        assert api.get("/api/v1/webhook").status == 404
    finally:
        server.shutdown()
        server.server_close()


# -- bad input ---------------------------------------------------------------------


@pytest.mark.parametrize(
    "authorization",
    [
        None,
        "",
        "Bearer",
        "Bearer nonsense",
        "Basic YWxpY2U6cHc=",
        "Bearer cbk_000000000000_" + "a" * 40,
    ],
)
def test_wrong_credentials_are_401(running, authorization):
    headers = {} if authorization is None else {"Authorization": authorization}
    api = Api(running.port)
    for method, path in [("GET", "/api/v1/balance"), ("POST", "/api/v1/sessions")]:
        answer = api.request(
            method, path, {"source": SOURCE, "destination": DESTINATION}, headers=headers
        )
        assert answer.status == 401 and answer.error == "unauthorized"
        assert answer.headers["www-authenticate"].startswith("Bearer")


def test_a_revoked_key_opens_nothing(running):
    secret = running.new_key("alice")
    assert Api(running.port, secret).get("/api/v1/balance").status == 200
    listed = running.daemon.admin("list-api-keys", "alice").stdout
    key_id = secret.split("_")[1]
    assert key_id in listed and secret not in listed
    running.daemon.admin("revoke-api-key", "alice", key_id)
    assert Api(running.port, secret).get("/api/v1/balance").status == 401


@pytest.mark.parametrize(
    ("raw", "content_type", "status", "code"),
    [
        (b"{not json", "application/json", 400, "malformed_json"),
        (b"", "application/json", 400, "malformed_json"),
        (b"[" * 100_000, "application/json", 400, "malformed_json"),
        (b'{"source": "+4930123456"}', "application/json", 422, "invalid_request"),
        (
            b'{"source": "+4930123456", "destination": "+4989123456", "x": 1}',
            None,
            422,
            "invalid_request",
        ),
        (b'{"source": 4930123456, "destination": "+4989123456"}', None, 422, "invalid_request"),
        (
            b'{"source": "+4930123456", "destination": "+4989123456", "via": "PROXICOM"}',
            None,
            422,
            "invalid_request",
        ),
        (
            b'{"source": "+4930123456", "destination": "+4989123456"}',
            "text/plain",
            415,
            "unsupported_media_type",
        ),
        (
            b'{"source": "not a number", "destination": "+4989123456"}',
            None,
            422,
            "refusal.bad_address",
        ),
        (
            b'{"source": "+4930123456", "destination": "+4930123456"}',
            None,
            422,
            "refusal.same_number",
        ),
        (
            b'{"source": "+4930123456", "destination": "+8613800138000"}',
            None,
            422,
            "refusal.no_rate",
        ),
        (
            b'{"source": "+4930123456", "destination": "+4989123456", "via": ["NOPE"]}',
            None,
            422,
            "refusal.unknown_provider",
        ),
    ],
)
def test_bad_bodies_are_refused_and_nothing_is_called(running, raw, content_type, status, code):
    api = running.api()
    headers = {"Content-Type": content_type or "application/json"}
    mark = running.daemon.log_mark()
    answer = api.post("/api/v1/sessions", raw=raw, headers=headers)
    assert (answer.status, answer.error) == (status, code), answer
    assert answer.headers["content-type"] == "application/json"
    assert not re.search(r"session \w+ of alice", running.daemon.log()[mark:])


def test_a_1mb_body_is_413(running):
    api = running.api()
    big = b'{"source": "' + b"1" * (1024 * 1024) + b'", "destination": "+4989123456"}'
    answer = api.post("/api/v1/sessions", raw=big, headers={"Content-Type": "application/json"})
    assert (answer.status, answer.error) == (413, "body_too_large")


def test_another_accounts_session_is_404(running):
    sid = start(running)
    bob = running.api("bob")
    for method, path, body in [
        ("GET", f"/api/v1/sessions/{sid}", None),
        ("DELETE", f"/api/v1/sessions/{sid}", None),
        ("POST", f"/api/v1/sessions/{sid}/legs", {"address": EXTRA}),
        ("DELETE", f"/api/v1/sessions/{sid}/legs/source", None),
        ("GET", f"/api/v1/sessions/{sid}/events", None),
        ("GET", "/api/v1/sessions/nosuchsession", None),
        ("GET", "/api/v1/sessions/..%2f..", None),
    ]:
        answer = bob.request(method, path, body)
        assert (answer.status, answer.error) == (404, "not_found"), (method, path, answer)
    assert running.api().get(f"/api/v1/sessions/{sid}").status == 200
    assert running.api().delete(f"/api/v1/sessions/{sid}").status == 202
    assert sid not in json.dumps(bob.get("/api/v1/cdrs").json)


def test_unknown_paths_and_methods_are_json(running):
    api = running.api()
    assert (api.get("/api/v1/nothing").status, api.get("/api/v1/nothing").error) == (
        404,
        "not_found",
    )
    answer = api.request("PATCH", "/api/v1/balance")
    assert (answer.status, answer.error) == (405, "method_not_allowed")
    assert "GET" in answer.headers["allow"]
    assert api.get("/api/v1/cdrs?limit=0").status == 422
    assert api.get("/api/v1/cdrs?since=nan").status == 422
    assert api.get("/api/v1/cdrs?cursor=!!!").status == 422


def test_a_slow_client_holds_nothing_up(running):
    """A client that sends half a request and stalls does not delay anyone else."""
    slow = socket.create_connection(("127.0.0.1", running.port))
    slow.sendall(b'POST /api/v1/sessions HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{"sou')
    try:
        started = time.monotonic()
        for _ in range(20):
            assert running.api().get("/api/v1/balance").status == 200
        assert time.monotonic() - started < 5
        slow.sendall(b'rce": 1}' + b" " * 87)
        slow.settimeout(10)
        answer = slow.recv(65536)
        assert answer.startswith(b"HTTP/1.1 401")  # no key: refused before the body counts
    finally:
        slow.close()


# -- the OpenAPI document against the implementation (last: it leaves calls up) -----


@pytest.fixture(scope="module")
def carol(running) -> str:
    """A third account for schemathesis, whose random requests may start calls."""
    running.daemon.env["CAROL_PW"] = "carol's password"
    running.daemon.admin("create-account", "carol", "--password-env", "CAROL_PW")
    running.daemon.admin("topup", "carol", "5.00")
    return running.new_key("carol")


CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
]


@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE])
def test_the_implementation_matches_its_openapi_document(running, carol, mode):
    """schemathesis on the served document: no 5xx, every status, media type and body as
    documented, for valid requests and for invalid ones (a few examples per operation).

    (Each operation's strategy is run by hand: schemathesis' own pytest loader does not
    work with this pytest.)
    """
    schema = schemathesis.openapi.from_url(running.daemon.url("/api/v1/openapi.json"))
    headers = {"Authorization": f"Bearer {carol}"}
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) == 11

    for operation in operations:

        @given(case=operation.as_strategy(generation_mode=mode))
        @settings(
            max_examples=8, deadline=None, database=None, suppress_health_check=list(HealthCheck)
        )
        def check(case):
            case.call_and_validate(
                base_url=running.daemon.url(""), headers=headers, checks=CHECKS, timeout=10
            )

        check()
