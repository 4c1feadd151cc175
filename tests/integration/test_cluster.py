"""Two daemons under twistd on one real redis-server and one simulated Asterisk (its own
process, a user for each daemon): a session owned by daemon A steered through daemon B's
REST API, its events read from B's SSE stream, then A killed with SIGKILL (a command
sent to B for A's session meanwhile refused with a clear error) and its session taken
over by B after the lease, each leg billed exactly once."""

from __future__ import annotations

import csv
import io
import time
from pathlib import Path

import pytest

from tests.integration.daemon import Daemon, Simulator, redis_command
from tests.integration.test_callbacks import expected_cost, minor, sell_price
from tests.web.api_client import Api, EventStream

pytestmark = pytest.mark.integration

CLUSTER = """
[cluster]
enabled = yes
renew_interval = 0.5
lease = 2
poll_interval = 0.05
reply_timeout = 1
"""
SOURCE, DESTINATION, EXTRA = "+15550011111", "+15550012222", "+15550013333"


def daemon(workdir: Path, redis_port: int, simulator: Simulator, node_id: str, user: str):
    secret = simulator.secret if user == simulator.username else f"{user}-secret"
    return Daemon(
        workdir / node_id,
        redis_port=redis_port,
        ami_port=simulator.port,
        ami_username=user,
        ami_secret=secret,
        node_id=node_id,
        extra=CLUSTER,
    )


def wait_for(predicate, what: str, timeout: float = 20.0):
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        assert time.monotonic() < deadline, f"{what}: timed out"
        time.sleep(0.05)


def kinds(stream: EventStream) -> list[str]:
    return [e["kind"] for e in stream.events]


@pytest.fixture
def cluster(tmp_path, redis_server):
    redis_server.flush()
    simulator = Simulator(
        tmp_path / "sim", time_scale=0.2, extra_args=("--user", "cbb:cbb-secret")
    ).start()
    a = daemon(tmp_path, redis_server.port, simulator, "na", simulator.username)
    b = daemon(tmp_path, redis_server.port, simulator, "nb", "cbb")
    try:
        a.start()
        a.wait_healthy()
        wait_for(
            lambda: (
                redis_command(redis_server.port, "GET", "cb:acct:alice:balance") not in (None, b"0")
            ),
            "the demo account alice",
        )
        b.start()
        b.wait_healthy()
        yield a, b, redis_server.port
    finally:
        a.stop()
        b.stop()
        simulator.stop()


def test_a_session_of_a_steered_through_b_then_taken_over_by_b(cluster):
    a, b, redis_port = cluster
    key = a.admin("create-api-key", "alice", "--label", "tests").stdout.strip()
    price = sell_price("1555")
    before = int(redis_command(redis_port, "GET", "cb:acct:alice:balance"))
    on_a, on_b = Api(a.web_port, key), Api(b.web_port, key)

    t_created = time.time()
    created = on_a.post("/api/v1/sessions", {"source": SOURCE, "destination": DESTINATION})
    assert created.status == 201, created.body
    sid = created.json["id"]
    assert sid.startswith("na")
    # b learns of a's session from its events
    wait_for(lambda: on_b.get(f"/api/v1/sessions/{sid}").status == 200, "b knows the session")
    stream = EventStream(b.web_port, f"/api/v1/sessions/{sid}/events", key)
    stream.read_until(lambda s: "talking" in kinds(s))
    t_talking = time.time()
    assert stream.status == 200

    # ADD and DEL through b, run by a
    mark = a.log_mark()
    added = on_b.post(f"/api/v1/sessions/{sid}/legs", {"address": EXTRA})
    assert added.status == 202, added.body
    assert len(added.json["legs"]) == 3
    a.wait_for_log(rf"session {sid}: Calling .*{EXTRA[1:]}", since=mark)
    stream.read_until(lambda s: "party_answered" in kinds(s))
    time.sleep(1.0)
    dropped = on_b.delete(f"/api/v1/sessions/{sid}/legs/{EXTRA}")
    assert dropped.status == 202, dropped.body
    stream.read_until(lambda s: ("leg_ended", "additional") in _legs(s))

    # a dies: a command sent on meanwhile is refused clearly; b takes the session over
    # after the lease, and the stream goes on
    a.kill()
    killed = time.monotonic()
    orphaned = on_b.post(f"/api/v1/sessions/{sid}/legs", {"address": EXTRA})
    assert (orphaned.status, orphaned.error) == (503, "refusal.owner_unreachable"), orphaned.body
    assert "did not answer" in orphaned.json["error"]["message"]
    b.wait_for_log(rf"session {sid}: taken over from na", timeout=15)
    assert time.monotonic() - killed >= 1.5  # not before the lease ran out
    time.sleep(1.0)
    t_hangup = time.time()
    ended = on_b.delete(f"/api/v1/sessions/{sid}")
    assert ended.status == 202, ended.body
    stream.read_until(lambda s: "session_ended" in kinds(s))
    t_ended = time.time()
    seqs = [int(i) for i in stream.ids]
    assert seqs == list(range(seqs[0], seqs[0] + len(seqs))), seqs  # in order, once each

    wait_for(lambda: not redis_command(redis_port, "SMEMBERS", "cb:sessions"), "the session's end")
    rows = list(csv.DictReader(io.StringIO(b.admin("list-cdrs", "alice").stdout)))
    legs = [r for r in rows if r["session_id"] == sid and r["kind"] == "leg"]
    assert sorted(r["cdr_id"] for r in legs) == [f"{sid}-a", f"{sid}-b", f"{sid}-c"]
    for row in legs:
        assert int(row["billed_seconds"]) > 0, row
        assert minor(row["cost"]) == expected_cost(price, int(row["billed_seconds"])), row
        if row["leg"] in ("source", "destination"):
            # up from before "talking" to the hangup, through a's death and the takeover:
            # every second billed, once (per-second billing rounds up)
            seconds = int(row["billed_seconds"])
            assert int(t_hangup - t_talking) <= seconds <= int(t_ended - t_created) + 1, row
    charged = sum(expected_cost(price, int(r["billed_seconds"])) for r in legs)
    after = int(redis_command(redis_port, "GET", "cb:acct:alice:balance"))
    assert after == before - charged
    log = b.log()
    assert "Traceback" not in log


def _legs(stream: EventStream) -> list[tuple[str, str]]:
    return [(e["kind"], e.get("role", "")) for e in stream.events]
