"""aioice leaves 127.0.0.1 out of its host candidates; a gateway and a client on one machine (tests,
a demo without a network) need it. Shared by the gateway and the Python client (the client library
imports nothing from the server)."""

from __future__ import annotations


def allow_loopback_candidates() -> None:
    """Make aioice gather 127.0.0.1 as well (process-wide, idempotent: the patched function is marked)."""
    import aioice.ice

    if getattr(aioice.ice.get_host_addresses, "_f2f_loopback", False):
        return
    original = aioice.ice.get_host_addresses

    def with_loopback(use_ipv4: bool, use_ipv6: bool) -> list[str]:
        addresses = original(use_ipv4, use_ipv6)
        if use_ipv4 and "127.0.0.1" not in addresses:
            addresses.append("127.0.0.1")
        return addresses

    with_loopback._f2f_loopback = True
    aioice.ice.get_host_addresses = with_loopback
