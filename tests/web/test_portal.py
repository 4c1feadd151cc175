"""The portal's pages over a real socket: the daemon under twistd (embedded redis-server,
simulated Asterisk), a plain HTTP client with a cookie jar (tests/web/portal_client.py)."""

from __future__ import annotations

import csv
import io
import json
import re
import statistics
import time

import pytest
import requests
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.web.portal_client import PortalClient, running_portal, wait_for

PASSWORD = "demo-password"


@pytest.fixture(scope="module")
def daemon(tmp_path_factory, redis_server):
    redis_server.flush()
    with running_portal(
        tmp_path_factory.mktemp("portal"), time_scale=0.05, redis_port=redis_server.port
    ) as d:
        yield d


@pytest.fixture(scope="module")
def base(daemon):
    return f"http://127.0.0.1:{daemon.web_port}"


@pytest.fixture(scope="module")
def operator(base):
    return PortalClient(base).logged_in("operator", PASSWORD)


@pytest.fixture
def make_user(operator, base):
    """A fresh account (made on the operators' page) with credit, logged in."""
    made = []

    def make(name: str, credit: str = "5.00") -> PortalClient:
        operator.get("/ops/accounts")
        r = operator.post(
            "/ops/accounts",
            {"username": name, "password": "pass-" + name, "language": "en"},
        )
        assert r.status_code == 303, r.text
        page = operator.get("/ops/accounts").text
        pattern = (
            f'name="username" value="{re.escape(name)}">'
            r'\s*<input type="hidden" name="nonce" value="([^"]+)"'
        )
        nonce = re.search(pattern, page).group(1)
        r = operator.post(
            "/ops/accounts/topup", {"username": name, "amount": credit, "nonce": nonce}
        )
        assert r.status_code == 303, r.text
        made.append(name)
        return PortalClient(base).logged_in(name, "pass-" + name)

    return make


def sse_views(client: PortalClient, session_path: str, until, timeout: float = 20.0):
    """Read the call's event stream until ``until(view)``, where a view is each leg's
    status as the page shows it (``{"leg": ..., "status": ..., "provider": ...}`` per
    leg, by callbackd.web.portal.live.leg_status); every view read."""
    from callbackd.web.portal.live import leg_status

    views, legs, answered = [], {}, {}
    with client.session.get(
        client.url(session_path + "/events?after=0"), stream=True, timeout=timeout
    ) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        deadline = time.monotonic() + timeout
        for line in response.iter_lines(decode_unicode=True):
            if not line.startswith("data: "):
                continue
            event = json.loads(line[6:])
            if event.get("leg"):
                if event["state"] == "up":
                    answered.setdefault(event["leg"], event["at"])
                legs[event["leg"]] = {
                    "leg": event["leg"],
                    "provider": event["provider"],
                    "status": leg_status({**event, "answered_at": answered.get(event["leg"], 0.0)}),
                }
            view = {"legs": list(legs.values()), "kind": event["kind"]}
            views.append(view)
            if until(view):
                return views
            assert time.monotonic() < deadline, views
    raise AssertionError(f"stream closed before the condition: {views}")


def statuses(view) -> dict[str, str]:
    return {leg["leg"]: leg["status"] for leg in view["legs"]}


def no_inline_script(html: str) -> bool:
    """No <script> without src, no on*= handler attributes, no javascript: URLs."""
    scripts = re.findall(r"<script\b[^>]*>", html)
    return (
        all("src=" in s for s in scripts)
        and not re.search(r"\son[a-z]+\s*=", html)
        and "javascript:" not in html
    )


# -- log in, headers, cookies ---------------------------------------------------------------


def test_root_redirects_to_the_portal_which_asks_for_a_login(base):
    r = requests.get(base + "/", allow_redirects=False, timeout=5)
    assert (r.status_code, r.headers["location"]) == (302, "/portal/")
    r = requests.get(base + "/portal/", allow_redirects=False, timeout=5)
    assert (r.status_code, r.headers["location"]) == (303, "/portal/login")
    assert requests.get(base + "/portal", timeout=5).url == base + "/portal/login"
    assert requests.get(base + "/healthz", timeout=5).status_code == 200
    assert requests.get(base + "/metrics", timeout=5).status_code == 200


def test_security_headers_and_cookies(base):
    """Every answer has the CSP and the usual headers; cookies are HttpOnly, SameSite=Lax,
    not Secure over plain HTTP."""
    client = PortalClient(base)
    for path in ["/login", "/static/portal.css", "/no/such/page", "/"]:
        r = client.session.get(client.url(path), allow_redirects=False, timeout=5)
        csp = r.headers["content-security-policy"]
        assert "script-src 'self'" in csp and "unsafe-inline" not in csp, path
        assert "frame-ancestors 'none'" in csp
        assert r.headers["x-content-type-options"] == "nosniff"
        assert r.headers["x-frame-options"] == "DENY"
        assert r.headers["referrer-policy"] == "same-origin"
        assert "strict-transport-security" not in r.headers
    r = client.login("alice", PASSWORD)
    cookie = r.headers["set-cookie"]
    assert "callbackd_session=" in cookie and "HttpOnly" in cookie
    assert "SameSite=lax" in cookie and "Secure" not in cookie


def test_login_and_logout(base):
    client = PortalClient(base)
    assert client.login("alice", PASSWORD).headers["location"] == "/portal/"
    home = client.get("/")
    assert home.url.endswith("/portal/") and "alice" in home.text
    r = client.post("/logout")
    assert r.headers["location"] == "/portal/login"
    assert client.get("/").url.endswith("/portal/login")


def test_an_operator_lands_on_the_operators_pages(base):
    client = PortalClient(base)
    assert client.login("operator", PASSWORD).headers["location"] == "/portal/ops/"


def test_wrong_password_and_unknown_user_get_the_same_answer(base, make_user):
    """No account enumeration: the same status and page, and much the same time."""
    make_user("erin")
    answers, times = {}, {}
    for name in ("erin", "nobody-here", "no such name!"):
        took = []
        for _ in range(2):
            client = PortalClient(base)
            client.get("/login")
            start = time.monotonic()
            r = client.post("/login", {"username": name, "password": "wrong password"})
            took.append(time.monotonic() - start)
            answers[name] = (r.status_code, r.text.replace(client.csrf, "").replace(name, "N"))
        times[name] = statistics.median(took)
    assert answers["erin"] == answers["nobody-here"] == answers["no such name!"]
    assert answers["erin"][0] == 401
    assert "Wrong username or password." in answers["erin"][1]
    # both run the password KDF (the unknown name against a dummy hash)
    assert times["nobody-here"] > 0.4 * times["erin"], times
    assert times["no such name!"] > 0.4 * times["erin"], times


def test_logins_are_throttled_for_known_and_unknown_names_alike(base, make_user):
    """After three failures the right password is refused too, and an unknown name gets
    the very same answer."""
    make_user("frank")
    bodies = {}
    for name in ("frank", "ghost-user"):
        client = PortalClient(base)
        for _ in range(3):
            assert client.login(name, "wrong password").status_code == 401
        r = client.login(name, "pass-frank" if name == "frank" else "x")
        assert r.status_code == 429
        assert "callbackd_session" not in r.headers.get("set-cookie", "")
        bodies[name] = r.text.replace(client.csrf, "").replace(name, "N")
    assert bodies["frank"] == bodies["ghost-user"]
    assert "Too many failed attempts" in bodies["frank"]


def test_forms_without_the_csrf_token_are_refused(base, operator):
    """A POST without (or with another's) CSRF token changes nothing: no call placed."""
    client = PortalClient(base).logged_in("bob", PASSWORD)
    for data in ({}, {"csrf": "0" * 64}, {"csrf": operator.csrf}):
        body = dict(data, source="+15550014444", destination="+15550015555")
        r = client.post("/call", body, csrf=False)
        assert r.status_code == 403
        assert "This form has expired" in r.text
    assert "Calls in progress" not in client.get("/").text
    assert "bob" not in operator.get("/ops/sessions").text
    # the login form too
    anonymous = PortalClient(base)
    anonymous.get("/login")
    r = anonymous.post("/login", {"username": "bob", "password": PASSWORD}, csrf=False)
    assert r.status_code == 403


def test_a_huge_body_is_refused(base):
    client = PortalClient(base).logged_in("bob", PASSWORD)
    r = client.post("/phonebook", {"name": "x" * 1_000_000, "index": "1", "address": "+1555"})
    assert r.status_code == 413


# -- the users' pages -----------------------------------------------------------------------


def test_every_page_answers_without_inline_script(base, operator):
    client = PortalClient(base).logged_in("bob", PASSWORD)
    for path, text in [
        ("/", "Connect two numbers"),
        ("/history", "Call history"),
        ("/phonebook", "Phonebook"),
        ("/callerids", "Caller IDs"),
        ("/account", "Top up by voucher"),
        ("/login", ""),
    ]:
        r = client.get(path)
        assert r.status_code == 200, path
        assert text in r.text
        assert no_inline_script(r.text), path
    for path, text in [
        ("/ops/sessions", "Calls in progress"),
        ("/ops/accounts", "Accounts"),
        ("/ops/vouchers", "Vouchers"),
        ("/ops/providers", "PROXICOM"),
    ]:
        assert client.get(path).status_code == 403, path
        r = operator.get(path)
        assert r.status_code == 200 and text in r.text, path
        assert no_inline_script(r.text), path
    assert client.get("/static/portal.js").headers["content-type"] == "text/javascript"
    assert client.get("/static/" + "..%2F" * 2 + "etc%2Fpasswd").status_code == 404


def test_connect_two_with_live_status_add_drop_hang_up(base, make_user):
    """The whole call from the page: live statuses, a third leg added and dropped, the
    CDRs and the balance after."""
    client = make_user("hanna", "5.00")
    r = client.post(
        "/call", {"source": "+15550011111", "destination": "+15550012222", "source_via": "MKS"}
    )
    assert r.status_code == 303
    path = r.headers["location"].removeprefix("/portal")
    page = client.get(path)
    assert page.status_code == 200 and "+15550011111" in page.text
    views = sse_views(
        client, path, lambda v: statuses(v) == {"source": "connected", "destination": "connected"}
    )
    assert views[-1]["legs"][0]["provider"] == "MKS"
    r = client.post(
        path + "/legs", {"address": "+15550013333"}, headers={"Accept": "application/json"}
    )
    assert r.status_code == 200 and r.json()["ok"] is True
    views = sse_views(client, path, lambda v: statuses(v).get("additional-1") == "connected")
    r = client.post(path + "/drop", {"leg": "additional-1"})
    assert (r.status_code, r.headers["location"]) == (303, "/portal" + path)
    sse_views(client, path, lambda v: statuses(v).get("additional-1") == "ended")
    r = client.post(path + "/hangup", headers={"Accept": "application/json"})
    assert r.json() == {"ok": True, "message": "Hanging up."}
    wait_for(lambda: client.get(path).status_code == 404, what="the call ended")

    def history():
        text = client.get("/history").text
        return text if text.count('class="cdr"') == 3 else None

    text = wait_for(history, what="three leg CDRs")
    assert "+15550013333" in text
    balance = re.search(r'id="balance">([^<]+)<', text).group(1)
    assert balance != "5.00 EUR"
    rows = list(csv.DictReader(io.StringIO(client.get("/history.csv").text)))
    assert {row["leg"] for row in rows if row["kind"] == "leg"} == {
        "source",
        "destination",
        "additional-1",
    }
    assert all(not row["address"].startswith("'") for row in rows)


def test_an_account_sees_only_its_own_calls(base, make_user, operator):
    owner = make_user("ivan", "5.00")
    other = make_user("judy", "5.00")
    r = owner.post("/call", {"source": "+15550011111", "destination": "+15550012222"})
    path = r.headers["location"].removeprefix("/portal")
    other.get("/")
    assert other.get(path).status_code == 404
    assert other.session.get(other.url(path + "/events"), timeout=5).status_code == 404
    assert other.post(path + "/hangup").status_code == 404
    assert other.post(path + "/legs", {"address": "+15550013333"}).status_code == 404
    assert owner.get(path).status_code == 200  # still up
    # the operator sees it, and hangs it up
    assert path.split("/")[-1] in operator.get("/ops/sessions").text
    r = operator.post(f"/ops/sessions/{path.split('/')[-1]}/hangup")
    assert r.status_code == 303
    wait_for(lambda: owner.get(path).status_code == 404, what="the call ended")
    wait_for(lambda: 'class="cdr"' in owner.get("/history").text, what="CDRs")
    assert 'class="cdr"' not in other.get("/history").text


def test_bad_inputs_give_a_form_message(base, operator):
    client = PortalClient(base).logged_in("bob", PASSWORD)
    client.get("/")
    for path, data, message in [
        ("/call", {"source": "abc", "destination": "+15550012222"}, "abc"),
        ("/call", {"source": "+15550014444", "destination": ""}, "Please fill in Destination"),
        ("/call", {"source": "+15550014444", "destination": "+15550014444"}, "same"),
        (
            "/call",
            {"source": "+1555", "destination": "+1556", "source_via": "NOPE"},
            "Please check",
        ),
        (
            "/phonebook",
            {"index": "x", "name": "Mum", "address": "+15550011111"},
            "Please check Index",
        ),
        (
            "/phonebook",
            {"index": "1", "name": "Mum", "address": "not a number"},
            "not a number is not",
        ),
        ("/phonebook", {"index": "1", "name": "Mum", "address": "+1\u202e"}, "Please check"),
        ("/phonebook", {"index": "1", "name": "Mum", "address": "+1"}, "+1 is not a phone"),
        ("/topup", {"pin": "0000-0000"}, "No voucher has that PIN."),
        ("/invite", {"jid": "not a jid"}, "A value is not valid."),
        ("/callerids/verify", {"number": "+15550014444", "code": "12"}, "Please check Code"),
    ]:
        r = client.post(path, data)
        assert r.status_code == 400, (path, data, r.status_code)
        assert message in r.text, (path, data)
    r = operator.post(
        "/ops/accounts/topup", {"username": "bob", "amount": "lots", "nonce": "n" * 20}
    )
    assert r.status_code == 400 and "Please check Amount" in r.text


@settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    path=st.sampled_from(["/call", "/phonebook", "/topup", "/callerids", "/invite", "/language"]),
    fields=st.dictionaries(
        st.sampled_from(
            [
                "source",
                "destination",
                "source_via",
                "index",
                "name",
                "address",
                "pin",
                "number",
                "jid",
                "language",
                "x",
            ]
        ),
        st.text(max_size=300),
        max_size=6,
    ),
)
def test_any_form_body_gets_an_answer_not_an_error(base, fields, path):
    """Whatever the body, the answer is a redirect or a 4xx page, never a 500."""
    client = _hypothesis_client(base)
    r = client.post(path, fields)
    assert r.status_code in (303, 400, 403, 429, 503), (path, fields, r.status_code)


_clients: dict[str, PortalClient] = {}


def _hypothesis_client(base: str) -> PortalClient:
    if base not in _clients:
        _clients[base] = PortalClient(base).logged_in("bob", PASSWORD)
    return _clients[base]


def test_phonebook_add_and_delete(base):
    client = PortalClient(base).logged_in("alice", PASSWORD)
    r = client.post(
        "/phonebook", {"index": "7", "name": "Mum & Dad <3", "address": "+1 555 001 4444"}
    )
    assert r.headers["location"] == "/portal/phonebook?done=added"
    page = client.get("/phonebook").text
    assert "Mum &amp; Dad &lt;3" in page and "+15550014444" in page
    r = client.post("/phonebook/delete", {"index": "7"})
    assert r.status_code == 303
    assert "Mum &amp; Dad" not in client.get("/phonebook").text


def test_invite_links_the_chat_address(base, make_user):
    client = make_user("kate")
    r = client.post("/invite", {"jid": "kate@example.org/phone"})
    assert r.headers["location"] == "/portal/account?done=invited"
    assert "Invitation sent" in client.get("/account?done=invited").text
    other = make_user("liam")
    r = other.post("/invite", {"jid": "Kate@Example.org"})
    assert r.status_code == 400 and "belongs to another account" in r.text


def test_language_choice_in_vietnamese(base, make_user):
    client = make_user("minh")
    r = client.post("/language", {"language": "vi", "back": "/history"})
    assert r.headers["location"] == "/portal/history"
    assert "callbackd_lang=vi" in r.headers["set-cookie"]
    page = client.get("/history").text
    assert '<html lang="vi">' in page and "Lịch sử cuộc gọi" in page and "Số dư" in page
    # the choice is the account's: a new login without the cookie speaks it too
    again = PortalClient(base).logged_in("minh", "pass-minh")
    assert "Lịch sử cuộc gọi" in again.get("/history").text
    r = client.post("/language", {"language": "xx"})
    assert r.status_code == 400


# -- the operators' pages -----------------------------------------------------------------------


def test_a_voucher_batch_generated_by_an_operator_is_redeemed_by_a_user(base, operator, make_user):
    user = make_user("nina", "1.00")
    operator.get("/ops/vouchers")
    r = operator.post("/ops/vouchers", {"batch": "promo-1", "value": "2.50", "count": "3"})
    assert r.status_code == 200
    codes = re.findall(r'<td class="code"><code>([^<]+)</code>', r.text)
    assert len(codes) == 3
    sheet = list(csv.DictReader(io.StringIO(operator.get("/ops/vouchers/promo-1.csv").text)))
    assert sorted(row["code"] for row in sheet) == sorted(codes)
    assert {row["value"] for row in sheet} == {"2.50"}
    # the same batch twice: refused
    r = operator.post("/ops/vouchers", {"batch": "promo-1", "value": "2.50", "count": "3"})
    assert r.status_code == 400 and "exists already" in r.text
    user.get("/account")
    r = user.post("/topup", {"pin": codes[0]})
    assert r.headers["location"] == "/portal/account?done=topup"
    page = user.get("/account?done=topup").text
    assert "3.50 EUR" in page and "Your balance was topped up." in page
    r = user.post("/topup", {"pin": codes[0]})
    assert r.status_code == 400 and "used already" in r.text
    sheet = list(csv.DictReader(io.StringIO(operator.get("/ops/vouchers/promo-1.csv").text)))
    assert [row["used_by"] for row in sheet if row["code"] == codes[0]] == ["nina"]


def test_operator_blocks_tops_up_and_limits_an_account(base, operator, make_user):
    user = make_user("oscar", "1.00")
    operator.get("/ops/accounts")
    r = operator.post("/ops/accounts/status", {"username": "oscar", "status": "blocked"})
    assert r.status_code == 303
    assert user.get("/").url.endswith("/portal/login")  # the login no longer works
    assert PortalClient(base).login("oscar", "pass-oscar").status_code == 401
    operator.post("/ops/accounts/status", {"username": "oscar", "status": "active"})
    user = PortalClient(base).logged_in("oscar", "pass-oscar")
    # a top-up form sent twice credits once
    for _ in range(2):
        r = operator.post(
            "/ops/accounts/topup", {"username": "oscar", "amount": "1.25", "nonce": "x" * 20}
        )
        assert r.status_code == 303
    assert "2.25 EUR" in user.get("/").text
    r = operator.post(
        "/ops/accounts/limits",
        {"username": "oscar", "credit_limit": "0.50", "daily_spend_cap": "3", "max_sessions": "1"},
    )
    assert r.status_code == 303
    row = re.search(
        r'<tr data-account="oscar">(.*?)</tr>', operator.get("/ops/accounts").text, re.S
    )
    assert 'name="credit_limit" value="0.50' in row.group(1)
    assert 'name="max_sessions" value="1"' in row.group(1)
    r = operator.post("/ops/accounts", {"username": "oscar", "password": "long enough"})
    assert r.status_code == 400 and "taken" in r.text


def test_providers_page_shows_quality_and_channels(base, operator, make_user):
    user = make_user("paula")
    r = user.post(
        "/call",
        {
            "source": "+15550011111",
            "destination": "+15550012222",
            "source_via": "PAKLINE",
            "destination_via": "PAKLINE",
        },
    )
    path = r.headers["location"].removeprefix("/portal")
    sse_views(
        user, path, lambda v: statuses(v) == {"source": "connected", "destination": "connected"}
    )
    row = re.search(
        r'<tr data-provider="PAKLINE">(.*?)</tr>', operator.get("/ops/providers").text, re.S
    )
    assert '<td class="channels">2 / 30</td>' in row.group(1)
    user.post(path + "/hangup")
    wait_for(lambda: user.get(path).status_code == 404, what="the call ended")


def test_caller_id_verified_by_the_code_sent_by_sms(base, make_user, redis_server):
    """The code goes out by the SMS queue; a wrong one is refused, the right one verifies."""
    from tests.integration.daemon import redis_command

    client = make_user("quinn")
    client.get("/callerids")
    r = client.post("/callerids", {"number": "+1 555 002 7777"})
    assert r.headers["location"] == "/portal/callerids?done=code"
    assert "+15550027777" in client.get("/callerids").text
    queued = []
    for key in redis_command(redis_server.port, "KEYS", "cb:sms:msg:cid-*"):
        fields = redis_command(redis_server.port, "HGETALL", key.decode())
        message = dict(zip(fields[::2], fields[1::2]))
        if message[b"to"] == b"+15550027777":
            queued.append(message[b"text"].decode())
    assert len(queued) == 1
    code = re.search(r"\b(\d{6})\b", queued[0]).group(1)
    wrong = "000000" if code != "000000" else "111111"
    r = client.post("/callerids/verify", {"number": "+15550027777", "code": wrong})
    assert r.status_code == 400 and "That code is not right" in r.text
    r = client.post("/callerids/verify", {"number": "+15550027777", "code": code})
    assert r.headers["location"] == "/portal/callerids?done=verified"
    page = client.get("/callerids").text
    assert re.search(r"\+15550027777</td><td>verified<", page)
    # another account cannot take the number
    other = make_user("rita")
    other.get("/callerids")
    r = other.post("/callerids", {"number": "+15550027777"})
    assert r.status_code == 400 and "+15550027777" in r.text


def test_api_keys_created_shown_once_and_revoked(base, make_user):
    client = make_user("sam")
    client.get("/account")
    r = client.post("/keys", {"label": "my <script> app"})
    assert r.status_code == 200
    secret = re.search(r'id="new-key">[^<]*<code>([^<]+)</code>', r.text).group(1)
    assert len(secret) >= 20
    page = client.get("/account").text
    assert "my &lt;script&gt; app" in page and secret not in page
    key_id = re.search(r'name="key_id" value="([^"]+)"', page).group(1)
    other = make_user("tina")
    other.get("/account")
    assert other.post("/keys/revoke", {"key_id": key_id}).status_code == 303
    assert key_id in client.get("/account").text  # not another account's to revoke
    r = client.post("/keys/revoke", {"key_id": key_id})
    assert r.headers["location"] == "/portal/account?done=revoked"
    assert key_id not in client.get("/account").text
    r = client.post("/keys", {"label": ""})
    assert r.status_code == 400 and "Please fill in Name of the key" in r.text
