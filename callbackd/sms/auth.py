"""Authenticating an SMS gateway's requests: shared token, body signature, source address.

Pure functions and values; each check raises :class:`AuthError` with a ``code``
(``bad_token``, ``missing_signature``, ``bad_signature``, ``forbidden_address``) and
never says which part of a secret was wrong. Comparisons of secrets use
:func:`hmac.compare_digest`.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import ipaddress
import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Final

__all__ = [
    "AddressAllowList",
    "AuthError",
    "check_signature",
    "check_token",
    "parse_signature",
    "sign",
]

_HEX: Final = re.compile(r"[0-9a-fA-F]{64}")
_BASE64: Final = re.compile(r"[A-Za-z0-9+/\-_]{43}=?")


class AuthError(Exception):
    """A request that is not from the configured gateway: ``code`` says which check."""

    def __init__(self, code: str) -> None:
        super().__init__(code)
        self.code = code


def check_token(given: bytes | str | None, expected: str) -> None:
    """The shared token ``given`` (a header or query value) is ``expected``."""
    if given is None:
        raise AuthError("bad_token")
    if isinstance(given, str):
        given = given.encode("utf-8", "surrogatepass")
    if not expected or not hmac.compare_digest(given, expected.encode("utf-8")):
        raise AuthError("bad_token")


def sign(body: bytes, secret: bytes) -> bytes:
    """The HMAC-SHA256 of ``body`` under ``secret`` (32 raw bytes)."""
    return hmac.new(secret, body, hashlib.sha256).digest()


def parse_signature(header: bytes | str | None) -> bytes:
    """The 32 bytes of a signature header: hex or base64, optionally ``sha256=``-prefixed."""
    if header is None:
        raise AuthError("missing_signature")
    if isinstance(header, bytes):
        header = header.decode("latin-1")
    value = header.strip()
    if value[:7].lower() == "sha256=":
        value = value[7:].strip()
    if not value:
        raise AuthError("missing_signature")
    try:
        if _HEX.fullmatch(value):
            return bytes.fromhex(value)
        if _BASE64.fullmatch(value):
            padded = value.rstrip("=") + "="
            return base64.b64decode(padded.replace("-", "+").replace("_", "/"), validate=True)
    except (binascii.Error, ValueError):
        pass
    raise AuthError("bad_signature")


def check_signature(body: bytes, header: bytes | str | None, secret: bytes) -> None:
    """``header`` carries the HMAC-SHA256 of ``body`` under ``secret``."""
    if not secret:
        raise AuthError("bad_signature")
    if not hmac.compare_digest(parse_signature(header), sign(body, secret)):
        raise AuthError("bad_signature")


@dataclass(frozen=True)
class AddressAllowList:
    """The networks a gateway's requests may come from (IPv4 and IPv6, CIDR)."""

    networks: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]

    @classmethod
    def parse(cls, entries: Iterable[str]) -> AddressAllowList:
        """The list from strings like ``127.0.0.1``, ``10.0.0.0/8``, ``::1``, ``2001:db8::/32``.

        Raises :class:`ValueError` naming the first entry that is not a network.
        """
        networks = []
        for entry in entries:
            try:
                networks.append(ipaddress.ip_network(entry.strip(), strict=False))
            except ValueError:
                raise ValueError(f"not an address or network: {entry!r}") from None
        return cls(tuple(networks))

    def allows(self, address: str) -> bool:
        """Whether ``address`` (IPv4-mapped IPv6 read as IPv4) is in one of the networks."""
        try:
            ip = ipaddress.ip_address(address.split("%", 1)[0])
        except ValueError:
            return False
        if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
            ip = ip.ipv4_mapped
        return any(ip.version == network.version and ip in network for network in self.networks)

    def check(self, address: str) -> None:
        """``address`` is allowed; :class:`AuthError` ``forbidden_address`` otherwise."""
        if not self.allows(address):
            raise AuthError("forbidden_address")
