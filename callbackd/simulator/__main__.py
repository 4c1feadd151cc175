"""``python -m callbackd.simulator``: run the simulated Asterisk standalone.

``kill -USR1 <pid>`` restarts it like ``core restart now``.
"""

from __future__ import annotations

import argparse
import signal
import sys
from collections.abc import Callable, Sequence
from typing import Any

from twisted.internet.defer import Deferred
from twisted.internet.task import react
from twisted.logger import globalLogBeginner, textFileLogObserver

from callbackd.amievents import parse_event_filter
from callbackd.simulator.agi import SoundLibrary
from callbackd.simulator.rules import parse_rule
from callbackd.simulator.service import SimulatorService


def _checked_by(parse: Callable[[str], object]) -> Callable[[str], str]:
    """An argparse ``type`` keeping the text once ``parse`` accepts it (its error said)."""

    def check(text: str) -> str:
        try:
            parse(text)
        except ValueError as e:  # RuleError is one
            raise argparse.ArgumentTypeError(str(e)) from None
        return text

    return check


_rule = _checked_by(parse_rule)
_event_names = _checked_by(parse_event_filter)


def build_parser() -> argparse.ArgumentParser:
    """The command line options."""
    p = argparse.ArgumentParser(
        prog="python -m callbackd.simulator", description="Simulated Asterisk 22 AMI server."
    )
    p.add_argument("--port", type=int, default=5038, help="TCP port (0 = any free port)")
    p.add_argument("--interface", default="127.0.0.1", help="address to bind")
    p.add_argument("--username", required=True)
    p.add_argument("--secret", required=True)
    p.add_argument(
        "--user",
        action="append",
        default=[],
        type=_user,
        metavar="NAME:SECRET",
        help="one more AMI user (repeatable), e.g. one per daemon sharing the switch",
    )
    p.add_argument(
        "--rule", action="append", default=[], type=_rule, help="callee rule, e.g. 1555002=busy"
    )
    p.add_argument("--time-scale", type=float, default=1.0, help="multiply every delay")
    p.add_argument(
        "--event-filter",
        action="append",
        default=[],
        type=_event_names,
        metavar="NAMES",
        help="send only these events (comma list, repeatable), like manager.conf's"
        " eventfilter(name(X)) lines; default: every event",
    )
    p.add_argument(
        "--agi-address",
        metavar="HOST:PORT",
        help="connect every agi:// URL here instead (the FastAGI server under test)",
    )
    for flag, parse, metavar, text in (
        ("--agi-extension", _agi_extension, "CONTEXT,EXTEN,URL", "channels answered into"
         " CONTEXT,EXTEN run AGI(URL)"),
        ("--sound", _sound, "NAME=SECONDS", "a sound file and how long it plays (others"
         " play 1 s, digits/ 0.5 s)"),
        ("--missing-sounds", str, "PREFIX", "sound files starting with PREFIX are not"
         " installed"),
    ):  # fmt: skip
        p.add_argument(flag, action="append", default=[], type=parse, metavar=metavar, help=text)
    return p


def _agi_extension(text: str) -> tuple[str, str, str]:
    context, exten, url = (text.split(",", 2) + ["", ""])[:3]
    if not (context and exten and url.startswith("agi://")):
        raise argparse.ArgumentTypeError(f"not CONTEXT,EXTEN,agi://...: {text!r}")
    return context, exten, url


def _user(text: str) -> tuple[str, str]:
    name, _, secret = text.partition(":")
    if not (name and secret):
        raise argparse.ArgumentTypeError(f"not NAME:SECRET: {text!r}")
    return name, secret


def _sound(text: str) -> tuple[str, float]:
    name, _, seconds = text.partition("=")
    try:
        return name, float(seconds)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not NAME=SECONDS: {text!r}") from None


def _address(text: str | None) -> Callable[[str, int], tuple[str, int]] | None:
    if not text:
        return None
    host, _, port = text.rpartition(":")
    return lambda _host, _port: (host or "127.0.0.1", int(port))


def build_service(args: argparse.Namespace, reactor: Any) -> SimulatorService:
    """The service the parsed options describe (not started: no I/O)."""
    service = SimulatorService(
        f"tcp:{args.port}:interface={args.interface}",
        args.username,
        args.secret,
        clock=reactor,
        reactor=reactor,
        rules=args.rule,
        time_scale=args.time_scale,
        event_filter=parse_event_filter(args.event_filter),
        sounds=SoundLibrary(dict(args.sound), missing=tuple(args.missing_sounds)),
        agi_address=_address(args.agi_address),
        users=dict(args.user),
    )
    for context, exten, url in args.agi_extension:
        service.add_agi_extension(context, exten, url)
    return service


def main(reactor: Any, argv: Sequence[str]) -> Deferred[None]:
    """Start the service and run until interrupted."""
    args = build_parser().parse_args(argv)
    globalLogBeginner.beginLoggingTo([textFileLogObserver(sys.stderr)])
    service = build_service(args, reactor)
    service.startService()
    service.ready.addCallback(
        lambda port: print(f"listening on {args.interface}:{port}", flush=True)
    )
    reactor.addSystemEventTrigger("before", "shutdown", service.stopService)
    # SIGUSR1: "core restart now" (the legs' Hangups, Shutdown, the sessions closed).
    signal.signal(signal.SIGUSR1, lambda *_: reactor.callFromThread(service.restart))
    return Deferred()


if __name__ == "__main__":
    react(main, (sys.argv[1:],))
