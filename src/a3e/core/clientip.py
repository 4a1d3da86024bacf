"""The client's address: the peer's, or — only when the peer is a proxy trusted by configuration
(A3E_TRUSTED_PROXIES) — the nearest untrusted address in its X-Forwarded-For."""

from __future__ import annotations

import functools
import ipaddress
from collections.abc import Sequence

from starlette.requests import Request

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


@functools.lru_cache(maxsize=32)
def _networks(trusted: tuple[str, ...]) -> tuple[Network, ...]:
    return tuple(ipaddress.ip_network(entry, strict=False) for entry in trusted)


def _is_trusted(address: str, networks: Sequence[Network]) -> bool:
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    return any(ip in network for network in networks)


def client_ip(request: Request) -> str:
    peer = request.client.host if request.client else "unknown"
    trusted = tuple(request.app.state.settings.trusted_proxies)
    if not trusted:
        return peer
    networks = _networks(trusted)
    if not _is_trusted(peer, networks):
        return peer
    forwarded = [part.strip() for part in request.headers.get("x-forwarded-for", "").split(",") if part.strip()]
    # Walk from the nearest hop outwards; the first address we don't trust is the client.
    for address in reversed(forwarded):
        if not _is_trusted(address, networks):
            try:
                return str(ipaddress.ip_address(address))
            except ValueError:
                return peer  # a malformed header is not believed
    return forwarded[0] if forwarded else peer
