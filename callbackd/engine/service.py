"""The engine as a service of the daemon: loads the decks, starts and stops the manager."""

from __future__ import annotations

from typing import Any

from twisted.application import service
from twisted.internet import defer
from twisted.internet.interfaces import IReactorTime

from callbackd.config import Config
from callbackd.decks import Decks, load_decks
from callbackd.engine.manager import SessionManager
from callbackd.engine.providers import Provider
from callbackd.store.interface import IStore
from callbackd.switch import ISwitch
from callbackd.switches import SwitchPool

__all__ = ["EngineService"]


class EngineService(service.Service):
    """The session manager as a service: the decks ``--check`` validated, loaded."""

    def __init__(
        self,
        config: Config,
        reactor: IReactorTime,
        switch: ISwitch | SwitchPool,
        store: IStore,
        metrics: Any,
        decks: Decks | None = None,
    ) -> None:
        self.config = config
        self.metrics = metrics
        decks = load_decks(config) if decks is None else decks
        providers = [
            Provider(p.name, p.dial, decks.providers[p.name], p.channels) for p in config.providers
        ]
        self.manager = SessionManager.from_config(
            config, reactor, switch, store, sell_deck=decks.sell, providers=providers
        )

    def startService(self) -> None:
        super().startService()
        self.manager.start()

    def stopService(self) -> defer.Deferred[None] | None:
        self.manager.stop()
        return super().stopService()
