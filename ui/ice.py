"""Which local addresses the WebRTC media sockets use: those the app serves on.

Contract:
- ``media_addresses(host)``: ``None`` for a wildcard ``--host`` (``0.0.0.0``, ``::``, empty:
  every interface, aioice's own gathering); a loopback host (``127.0.0.1``, ``::1``,
  ``localhost``) gives the loopback addresses; an IP gives itself; a name its addresses.
- ``restrict_media(host)`` makes aioice (aiortc's ICE) bind its UDP sockets and advertise
  host candidates on those addresses only, and, when they are all loopback, never open its
  wildcard mDNS socket (a remote ``.local`` candidate cannot reach loopback anyway). It
  changes aioice for the whole process (this app serves one host); calling it again
  replaces the previous choice; ``None`` restores aioice's behaviour.
- Why: aioice gathers on every non-loopback interface and leaves loopback out, so the
  default ``--host 127.0.0.1`` still opened media sockets on the LAN.
"""
from __future__ import annotations

import ipaddress
import socket

WILDCARDS = {"", "0.0.0.0", "::", "[::]"}


def media_addresses(host: str) -> list[str] | None:
    host = host.strip().strip("[]")
    if host in WILDCARDS:
        return None
    if host.lower() == "localhost":
        return ["127.0.0.1", "::1"]
    try:
        return [str(ipaddress.ip_address(host))]
    except ValueError:
        pass
    found = []
    for *_, addr in socket.getaddrinfo(host, None, proto=socket.IPPROTO_UDP):
        if addr[0] not in found:
            found.append(addr[0])
    return found


class _NoMdns:
    """Stands in for aioice's mDNS resolver when media is loopback only: resolves nothing."""

    async def resolve(self, name: str, timeout: float = 1.0) -> None:
        return None


_original: dict = {}


def restrict_media(host: str | None) -> list[str] | None:
    """Apply ``media_addresses(host)`` to aioice; returns the addresses (None = all)."""
    import aioice.ice as ice
    if not _original:
        _original.update(gather=ice.get_host_addresses, mdns=ice.get_or_create_mdns_protocol)
    addresses = None if host is None else media_addresses(host)
    if addresses is None:
        ice.get_host_addresses = _original["gather"]
        ice.get_or_create_mdns_protocol = _original["mdns"]
        return None
    v4 = [a for a in addresses if ipaddress.ip_address(a).version == 4]
    v6 = [a for a in addresses if ipaddress.ip_address(a).version == 6]

    def host_addresses(use_ipv4: bool, use_ipv6: bool) -> list[str]:
        return (v4 if use_ipv4 else []) + (v6 if use_ipv6 else [])

    ice.get_host_addresses = host_addresses
    if all(ipaddress.ip_address(a).is_loopback for a in addresses):
        async def no_mdns(subscriber: object) -> _NoMdns:
            return _NoMdns()
        ice.get_or_create_mdns_protocol = no_mdns
    else:
        ice.get_or_create_mdns_protocol = _original["mdns"]
    return addresses
