"""``twistd callbackd``: command-line options and the root service.

This is the one module that touches the global reactor; everything below it
gets the reactor (or a clock, or an endpoint) passed in.
"""

from __future__ import annotations

import atexit
import os
import sys

from twisted.application import service
from twisted.logger import Logger
from twisted.python import usage

from callbackd import config as configmod
from callbackd.decks import load_decks

log = Logger(namespace="callbackd")


class Options(usage.Options):
    """Options of ``twistd callbackd``."""

    synopsis = "[options] -c <config.ini>"
    longdesc = (
        "Run the callbackd daemon: the AMI client (or the built-in simulated Asterisk), the "
        "session manager, the Redis store, HTTP (health check, metrics) and the SSH manhole, "
        "all configured by one INI file. Every configuration mistake is reported at once, "
        "before the daemon forks, every bad row of every rate deck included. --help-config "
        "lists every section and key."
    )
    optParameters = [
        ["config", "c", "etc/callbackd.ini", "The INI configuration file."],
    ]
    optFlags = [
        ["check", None, "Check the configuration and its rate decks, print the result, exit."],
        ["help-config", None, "List every configuration section and key, then exit."],
    ]

    def postOptions(self) -> None:
        if self["help-config"]:
            print(configmod.describe())
            sys.exit(0)
        try:
            self.loaded = configmod.load_config(self["config"])
            self.decks = load_decks(self.loaded)
        except configmod.ConfigError as e:
            raise usage.UsageError(
                f"{len(e.problems)} problem(s) in {self['config']}:\n  " + "\n  ".join(e.problems)
            ) from None
        if self["check"]:
            print(f"{self['config']}: ok")
            sys.exit(0)


def makeService(options: Options) -> service.IService:
    """Build the daemon's service tree from the loaded configuration."""
    from twisted.internet import reactor

    from callbackd.app import create_daemon

    try:
        root = create_daemon(options.loaded, reactor, options.decks)
    except configmod.ConfigError as e:
        sys.stderr.write(f"{len(e.problems)} problem(s) in {options['config']}:\n  ")
        sys.stderr.write("\n  ".join(e.problems) + "\n")
        sys.exit(1)
    root.started.addErrback(_fail_loudly, reactor)
    return root


def _fail_loudly(failure, reactor) -> None:
    """A service could not start: say so on stderr and the log, and exit non-zero."""
    message = failure.getErrorMessage()
    log.critical("callbackd cannot start: {message}", message=message)
    sys.stderr.write(f"callbackd cannot start: {message}\n")
    sys.stderr.flush()
    # twistd has no exit status of its own; leave with 1 once it has cleaned up.
    atexit.register(os._exit, 1)
    if reactor.running:
        reactor.stop()
    else:
        reactor.callWhenRunning(reactor.stop)
