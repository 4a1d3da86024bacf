"""The address guard: webhook deliveries go only to public internet addresses.

An endpoint's URL is checked when it is registered (a clear 422) and again at every attempt,
because DNS can change between the two (a host that resolved to a public address may later
resolve to 169.254.169.254). The attempt then connects to the very address that was vetted, not
to whatever a second lookup returns, so that a rebinding DNS server cannot slip a private address
in between the check and the connection.

Refused unless `A3E_WEBHOOKS_ALLOW_PRIVATE=true`: loopback, private (RFC 1918, unique local),
link-local, shared (CGNAT), multicast, reserved, unspecified and documentation ranges — anything
Python's `ipaddress` does not call global — in IPv4 and IPv6, including IPv4 addresses carried
inside IPv6 ones (IPv4-mapped, 6to4, NAT64, Teredo).
"""

from __future__ import annotations

import ipaddress
import socket
from dataclasses import dataclass
from urllib.parse import urlsplit

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
_NAT64 = ipaddress.IPv6Network("64:ff9b::/96")


class UnsafeAddress(ValueError):
    """The URL may not receive webhooks; the message says why, for people."""


@dataclass(frozen=True)
class Target:
    """Where an attempt connects: the URL's host and port, and the vetted address to dial."""

    scheme: str
    host: str
    port: int
    address: str


def _embedded_ipv4(address: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    if address.ipv4_mapped is not None:
        return address.ipv4_mapped
    if address.sixtofour is not None:
        return address.sixtofour
    if address.teredo is not None:
        return address.teredo[1]  # the client's address
    if address in _NAT64:
        return ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    return None


def non_public_reason(address: IPAddress) -> str | None:
    """Why `address` is not a public internet address, or None when it is."""
    if isinstance(address, ipaddress.IPv6Address):
        inner = _embedded_ipv4(address)
        if inner is not None:
            reason = non_public_reason(inner)
            return f"{reason} (inside the IPv6 address {address})" if reason else None
    for kind, flag in (
        ("unspecified", address.is_unspecified),
        ("loopback", address.is_loopback),
        ("link-local", address.is_link_local),
        ("multicast", address.is_multicast),
        ("private", address.is_private),
        ("reserved", address.is_reserved),
    ):
        if flag:
            return f"{address} is a {kind} address"
    if not address.is_global:
        return f"{address} is not a public internet address"
    return None


def check_url(url: str, *, allow_http: bool) -> tuple[str, str, int]:
    """The URL's scheme, host and port, or UnsafeAddress saying what is wrong with it."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        raise UnsafeAddress("is not a valid URL (check the host and port)") from None
    scheme = parts.scheme.lower()
    if scheme not in ("http", "https"):
        raise UnsafeAddress("must be an http:// or https:// URL")
    if scheme == "http" and not allow_http:
        raise UnsafeAddress("must use https:// (plain http is refused here; see A3E_WEBHOOKS_ALLOW_HTTP)")
    if not parts.hostname:
        raise UnsafeAddress("has no host")
    if parts.username or parts.password:
        raise UnsafeAddress("must not hold credentials; the signature authenticates each delivery")
    if parts.fragment:
        raise UnsafeAddress("must not have a #fragment")
    return scheme, parts.hostname, port or (443 if scheme == "https" else 80)


def resolve(host: str, port: int) -> list[IPAddress]:
    """Every address `host` resolves to (an IP literal is itself), or UnsafeAddress."""
    try:
        return [ipaddress.ip_address(host)]
    except ValueError:
        pass
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError) as exc:
        raise UnsafeAddress(f"host {host!r} does not resolve ({getattr(exc, 'strerror', None) or exc})") from None
    addresses: list[IPAddress] = []
    for info in infos:
        address = ipaddress.ip_address(str(info[4][0]).split("%", 1)[0])  # drop an IPv6 zone id
        if address not in addresses:
            addresses.append(address)
    if not addresses:
        raise UnsafeAddress(f"host {host!r} does not resolve")
    return addresses


def _is_literal(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def vet(url: str, *, allow_http: bool, allow_private: bool) -> Target:
    """Check `url` and resolve its host; refuse it when any address it resolves to is not public
    (unless private ones are allowed). Returns the address to connect to."""
    scheme, host, port = check_url(url, allow_http=allow_http)
    addresses = resolve(host, port)
    if not allow_private:
        for address in addresses:
            reason = non_public_reason(address)
            if reason:
                shown = "" if _is_literal(host) else f"{host} resolves to "
                raise UnsafeAddress(
                    f"points at a non-public address ({shown}{reason}); webhooks go only to public internet "
                    "addresses unless A3E_WEBHOOKS_ALLOW_PRIVATE=true"
                )
    return Target(scheme=scheme, host=host, port=port, address=str(addresses[0]))
