"""A real XMPP user for the tests: slixmpp in its own process, steered over stdin/stdout.

Run as ``python -m tests.xmpp.client JID PASSWORD HOST PORT``. It logs in (no TLS:
the test's Prosody is on loopback), then reads one JSON request per line from
stdin and writes one JSON event per line to stdout:

- requests: ``{"op": "subscribe"|"presence"|"message"|"disco_info"|"disco_items"|
  "version"|"ping"|"iq", "to": JID, ...}`` (``body`` for messages, ``namespace``
  for a raw ``iq`` get), ``{"op": "quit"}``;
- events: ``{"event": "ready"}``, ``{"event": "presence", "type", "from",
  "status"}``, ``{"event": "message", "type", "from", "body"}``, ``{"event":
  "result", "op", ...}`` (the answer to a request, ``error`` set when it failed).

slixmpp runs on asyncio, hence its own process rather than a thread of the
Twisted test.
"""

from __future__ import annotations

import asyncio
import json
import sys
import threading
from typing import Any

import slixmpp
from slixmpp.exceptions import IqError, IqTimeout
from slixmpp.xmlstream import ET


class TestUser(slixmpp.ClientXMPP):
    """The user's client: prints what arrives, does what stdin asks."""

    def __init__(self, jid: str, password: str) -> None:
        super().__init__(jid, password)
        self.enable_starttls = False
        self.enable_direct_tls = False
        self.enable_plaintext = True
        self["feature_mechanisms"].unencrypted_plain = True
        self["feature_mechanisms"].unencrypted_scram = True
        for plugin in ("xep_0030", "xep_0092", "xep_0199"):
            self.register_plugin(plugin)
        self.add_event_handler("session_start", self.on_start)
        self.add_event_handler("presence", self.on_presence)
        self.add_event_handler("message", self.on_message)
        self.add_event_handler("disconnected", lambda _: emit({"event": "disconnected"}))

    async def on_start(self, _: Any) -> None:
        self.send_presence()
        await self.get_roster()
        emit({"event": "ready"})

    def on_presence(self, presence: Any) -> None:
        emit(
            {
                "event": "presence",
                "type": presence["type"],
                "from": str(presence["from"]),
                "status": presence["status"],
            }
        )

    def on_message(self, message: Any) -> None:
        emit(
            {
                "event": "message",
                "type": message["type"],
                "from": str(message["from"]),
                "body": message["body"],
            }
        )

    async def handle(self, request: dict[str, Any]) -> None:
        op, to = request["op"], request.get("to", "")
        try:
            result = await self._do(op, to, request)
        except (IqError, IqTimeout) as e:
            error = e.iq["error"]["condition"] if isinstance(e, IqError) else "timeout"
            emit({"event": "result", "op": op, "error": error})
        else:
            emit({"event": "result", "op": op, **result})

    async def _do(self, op: str, to: str, request: dict[str, Any]) -> dict[str, Any]:
        if op == "subscribe":
            self.send_presence(pto=to, ptype="subscribe")
            return {}
        if op == "message":
            self.send_message(mto=to, mbody=request["body"], mtype=request.get("type", "chat"))
            return {}
        if op == "disco_info":
            info = await self["xep_0030"].get_info(jid=to, timeout=10)
            query = info["disco_info"]
            return {
                "identities": [[i[0], i[1], i[3]] for i in query["identities"]],
                "features": sorted(query["features"]),
            }
        if op == "disco_items":
            items = await self["xep_0030"].get_items(jid=to, timeout=10)
            return {"items": [list(i) for i in items["disco_items"]["items"]]}
        if op == "version":
            version = await self["xep_0092"].get_version(to, timeout=10)
            return {
                "name": version["software_version"]["name"],
                "version": version["software_version"]["version"],
            }
        if op == "ping":
            rtt = await self["xep_0199"].ping(to, timeout=10)
            return {"rtt": rtt}
        if op == "iq":
            iq = self.make_iq_get(ito=to)
            iq.append(ET.Element(f"{{{request['namespace']}}}query"))
            await iq.send(timeout=10)
            return {}
        raise ValueError(f"unknown op {op!r}")


def emit(event: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(event) + "\n")
    sys.stdout.flush()


def main() -> None:
    jid, password, host, port = sys.argv[1:5]
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    user = TestUser(jid, password)
    done = loop.create_future()

    def read_stdin() -> None:
        for line in sys.stdin:
            request = json.loads(line)
            if request["op"] == "quit":
                break
            loop.call_soon_threadsafe(lambda r=request: loop.create_task(user.handle(r)))
        loop.call_soon_threadsafe(lambda: done.done() or done.set_result(None))

    user.connect(host, int(port))
    threading.Thread(target=read_stdin, daemon=True).start()
    loop.run_until_complete(done)
    user.disconnect()
    loop.run_until_complete(asyncio.sleep(0.2))


if __name__ == "__main__":
    main()
