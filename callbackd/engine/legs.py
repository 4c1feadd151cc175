"""Leg resolution: from what a user typed to a leg the machine can dial.

An address (number, ``sip:``, ``xmpp:``) is parsed (the recent ones kept), checked
against the blocked prefixes, priced on the sell deck, and given its routes: the
providers that reach it, ranked on their statistics, each with its dial string; a
gateway address gets the gateway's dial string, when a gateway is configured.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from twisted.logger import Logger

from callbackd.config import GatewaysConfig
from callbackd.core import session as machine
from callbackd.core.address import AddressError, LegAddress
from callbackd.core.dialstring import DialStringError, build_channel
from callbackd.core.rating import Deck, Rate
from callbackd.core.routing import Candidate, UnknownProvider, rank_providers, resolve_provider
from callbackd.engine.errors import CallbackRefused
from callbackd.engine.providers import Provider, ProviderStats
from callbackd.numbers import parse_address

__all__ = ["LegResolver"]

log = Logger(namespace="callbackd.engine")

#: leg addresses kept parsed (the oldest go first)
_CACHED_ADDRESSES = 10_000


class LegResolver:
    """Turns addresses and provider names into :class:`~callbackd.core.session.LegSpec`."""

    def __init__(
        self,
        providers: Mapping[str, Provider],
        stats: ProviderStats,
        sell_deck: Deck,
        *,
        default_region: str = "DE",
        gateways: GatewaysConfig | None = None,
        blocked_prefixes: Sequence[str] = (),
    ) -> None:
        self.providers = providers
        self.stats = stats
        self.sell_deck = sell_deck
        self.default_region = default_region
        self.gateways = gateways if gateways is not None else GatewaysConfig()
        self.blocked_prefixes = tuple(blocked_prefixes)
        self._addresses: dict[str, LegAddress] = {}

    def address(self, text: str) -> LegAddress:
        """The parsed address; CallbackRefused when malformed or blocked."""
        address = self._addresses.get(text)
        if address is None:
            # parsing a number (phonenumbers) is a tenth of a callback's set-up: the
            # numbers people call are few, keep the recent ones
            try:
                address = parse_address(text, self.default_region)
            except AddressError as e:
                raise CallbackRefused(str(e), "refusal.bad_address", address=text) from None
            if len(self._addresses) >= _CACHED_ADDRESSES:
                del self._addresses[next(iter(self._addresses))]
            self._addresses[text] = address
        if address.kind == "phone":
            for prefix in self.blocked_prefixes:
                if address.digits.startswith(prefix):
                    raise CallbackRefused.of("refusal.blocked_destination", address=address.value)
        return address

    def leg_name(self, target: str) -> str:
        """A ``DEL`` target: an address in its canonical form, else a leg name or letter."""
        target = target.strip()
        try:
            return str(parse_address(target, self.default_region))
        except AddressError:
            return target

    def provider_name(self, name: str) -> str:
        """The configured provider ``name`` means; CallbackRefused when none."""
        try:
            return resolve_provider(name, self.providers)
        except UnknownProvider as e:
            choices = ", ".join(e.valid)
            raise CallbackRefused(
                str(e), "refusal.unknown_provider", provider=name, choices=choices
            ) from None

    async def leg_spec(self, address: LegAddress, forced: str | None) -> machine.LegSpec:
        """The routes and sell rate of a leg; CallbackRefused when it cannot be called."""
        if address.kind != "phone":
            template = getattr(self.gateways, address.kind, "")
            if not template:
                raise CallbackRefused.of("refusal.network_unavailable", network=address.kind)
            route = machine.Route("", self.channel(template, address))
            return machine.LegSpec(str(address), (route,), None)
        rate = self._sell_rate(address)
        routes: tuple[machine.Route, ...]
        if forced is not None:
            provider = self.providers[forced]
            if provider.deck.lookup(address.digits) is None:
                raise CallbackRefused.of(
                    "refusal.provider_not_reaching", provider=forced, address=address.value
                )
            routes = (machine.Route(forced, self.channel(provider.dial, address)),)
        else:
            stats = self.stats
            ranked = rank_providers(
                [
                    Candidate(p.name, p.deck, p.channels, stats.in_use(p.name))
                    for p in self.providers.values()
                ],
                await stats.stats(),
                address.digits,
            )
            routes = tuple(
                machine.Route(r.name, self.channel(self.providers[r.name].dial, address))
                for r in ranked
            )
            if not routes:
                raise CallbackRefused.of("refusal.no_provider", address=address.value)
        return machine.LegSpec(str(address), routes, rate)

    def rate_of(self, address: LegAddress) -> int:
        """The sell price per minute of calling ``address`` (0: a free gateway leg);
        CallbackRefused when it cannot be called at all."""
        if address.kind != "phone":
            if not getattr(self.gateways, address.kind, ""):
                raise CallbackRefused.of("refusal.network_unavailable", network=address.kind)
            return 0
        return self._sell_rate(address).price_per_minute

    def _sell_rate(self, address: LegAddress) -> Rate:
        """The sell deck's rate of a phone number; CallbackRefused when it has none."""
        rate = self.sell_deck.lookup(address.digits)
        if rate is None:
            raise CallbackRefused.of("refusal.no_rate", address=address.value)
        return rate

    @staticmethod
    def channel(template: str, address: LegAddress) -> str:
        """The dial string of ``address`` by ``template``; CallbackRefused when it cannot be."""
        try:
            return build_channel(template, address)
        except DialStringError as e:
            log.error("dial template {template!r}: {error}", template=template, error=str(e))
            raise CallbackRefused.of("refusal.cannot_dial", address=str(address)) from None
