"""WebRTC media sockets follow ``--host`` (ui/ice.py), checked with aioice's real gathering.

Guards issue 13 item 7: with the default ``--host 127.0.0.1`` the live session's UDP
sockets were bound to the machine's LAN addresses and advertised as ICE candidates.
"""
from __future__ import annotations

import asyncio
import ipaddress

import pytest

from ui.ice import media_addresses, restrict_media


@pytest.fixture
def restore():
    yield
    restrict_media(None)


def _udp_sockets() -> set[str]:
    import psutil
    return {f"{c.laddr.ip}:{c.laddr.port}" for c in psutil.Process().net_connections(kind="udp")}


def _gather() -> tuple[list[str], list[str]]:
    """One ICE agent's advertised candidate hosts, and the UDP sockets it opened."""
    import aioice
    before = _udp_sockets()

    async def run():
        conn = aioice.Connection(ice_controlling=False)
        await conn.gather_candidates()
        hosts = [c.host for c in conn.local_candidates]
        opened = sorted(_udp_sockets() - before)
        await conn.close()
        return hosts, opened
    return asyncio.run(run())


def test_host_names_map_to_addresses():
    assert media_addresses("127.0.0.1") == ["127.0.0.1"]
    assert media_addresses("::1") == ["::1"]
    assert media_addresses("localhost") == ["127.0.0.1", "::1"]
    assert media_addresses("192.168.1.20") == ["192.168.1.20"]
    assert media_addresses("0.0.0.0") is None and media_addresses("::") is None


def test_loopback_host_gathers_and_binds_loopback_only(restore):
    restrict_media("127.0.0.1")
    hosts, sockets = _gather()
    assert hosts, "no candidate at all: a local browser could not connect"
    assert set(hosts) == {"127.0.0.1"}, hosts
    assert sockets and all(s.startswith("127.0.0.1:") for s in sockets), sockets


def test_wildcard_host_keeps_every_interface(restore):
    """--host 0.0.0.0 serves the LAN: aioice's own gathering (non-loopback interfaces)."""
    restrict_media("0.0.0.0")
    hosts, sockets = _gather()
    assert hosts and not any(ipaddress.ip_address(h.split("%")[0]).is_loopback for h in hosts), hosts
    assert len(sockets) == len(hosts), (hosts, sockets)


def test_loopback_media_never_opens_the_wildcard_mdns_socket(restore):
    """A remote ``.local`` candidate would make aioice bind 0.0.0.0:5353; on loopback it is
    left unresolved instead."""
    import aioice
    restrict_media("127.0.0.1")

    async def run():
        conn = aioice.Connection(ice_controlling=True)
        await conn.gather_candidates()
        await conn.add_remote_candidate(aioice.Candidate(
            foundation="1", component=1, transport="udp", priority=1,
            host="0b4c3e5f-aura.local", port=9, type="host"))
        remote = conn.remote_candidates
        await conn.close()
        return remote
    assert asyncio.run(run()) == []
    import aioice.ice as ice
    assert getattr(getattr(ice, "_mdns", None), "protocol", None) is None
