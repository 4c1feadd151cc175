"""The portal over TLS: ``[web] listen = ssl:...`` (a self-signed certificate made by
openssl for the test). Cookies are Secure, and browsers are told to keep to HTTPS."""

from __future__ import annotations

import subprocess
import time

import pytest
import requests
import urllib3

from tests.web.portal_client import PortalClient, portal_daemon


@pytest.fixture(scope="module")
def tls_daemon(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("tls")
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "1",
            "-subj",
            "/CN=127.0.0.1",
            "-addext",
            "subjectAltName=IP:127.0.0.1",
            "-keyout",
            str(workdir / "key.pem"),
            "-out",
            str(workdir / "cert.pem"),
        ],
        check=True,
        capture_output=True,
    )
    d = portal_daemon(workdir)
    d.extra += (
        f"\n[web]\nlisten = ssl:{d.web_port}:interface=127.0.0.1"
        ":privateKey=key.pem:certKey=cert.pem\n"
    )
    d.write_config()
    d.start(wait=False)
    base = f"https://127.0.0.1:{d.web_port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                requests.get(base + "/healthz", verify=str(workdir / "cert.pem"), timeout=2)
                break
            except requests.ConnectionError:
                assert time.monotonic() < deadline, d.log()
                time.sleep(0.2)
        d.wait_for_log("demo accounts created")
        yield d, base, workdir / "cert.pem"
    finally:
        d.stop()


def test_over_tls_cookies_are_secure_and_hsts_is_sent(tls_daemon):
    d, base, cert = tls_daemon
    client = PortalClient(base)
    page = client.get("/login", verify=str(cert))
    assert page.status_code == 200
    assert page.headers["strict-transport-security"] == "max-age=31536000"
    assert "Secure" in page.headers["set-cookie"]  # the pre-login cookie
    r = client.post("/login", {"username": "alice", "password": "demo-password"}, verify=str(cert))
    assert r.status_code == 303
    cookie = r.headers["set-cookie"]
    assert "callbackd_session=" in cookie
    assert "Secure" in cookie and "HttpOnly" in cookie and "SameSite=lax" in cookie
    assert "alice" in client.get("/", verify=str(cert)).text


def test_plain_http_is_not_served_on_the_tls_port(tls_daemon):
    d, base, cert = tls_daemon
    urllib3.disable_warnings()
    with pytest.raises(requests.ConnectionError):
        requests.get(base.replace("https", "http") + "/portal/login", timeout=3)
