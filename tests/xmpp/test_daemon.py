"""The daemon under twistd with [xmpp] on: /healthz and /metrics follow the component."""

from __future__ import annotations

from tests.integration.daemon import Daemon, http_get

SECRET_ENV = "CALLBACKD_TEST_XMPP_SECRET"


def test_healthz_follows_prosody_going_away_and_coming_back(tmp_path, prosody, clean_redis):
    daemon = Daemon(
        tmp_path / "d",
        redis_port=clean_redis.port,
        extra=(
            f"\n[xmpp]\nenabled = yes\ndomain = {prosody.component}\n"
            f"port = {prosody.component_port}\nsecret_env = {SECRET_ENV}\n"
            "reconnect_max_delay = 1\n"
        ),
        env={SECRET_ENV: prosody.secret},
    ).start()
    try:
        body = daemon.wait_healthy()
        assert body["checks"]["xmpp"] == {
            "ok": True,
            "detail": f"connected to 127.0.0.1:{prosody.component_port} as {prosody.component}",
        }
        _, metrics = http_get(daemon.url("/metrics"))
        assert b"callbackd_xmpp_connected 1.0" in metrics

        prosody.stop()
        body = daemon.wait_healthy(False)
        assert body["checks"]["xmpp"]["detail"].startswith("not connected to 127.0.0.1:")
        assert body["checks"]["redis"]["ok"] and body["checks"]["ami"]["ok"]

        prosody.start()
        body = daemon.wait_healthy(timeout=20)
        assert body["checks"]["xmpp"]["ok"] is True
    finally:
        daemon.stop()
    assert prosody.secret not in daemon.log()
