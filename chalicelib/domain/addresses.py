"""What a per-address limit counts: a caller's network, not its address string.

An IPv4 address stands for itself; an IPv6 address for its /64, the prefix
one subscriber or host is handed (a client owns every address in it, so
counting addresses would let it multiply identities, leases and votes at
will). Every per-address limit and check keys on this one value."""

from __future__ import annotations

import ipaddress


def network(address: str) -> str:
    """The per-address key of `address` (as API Gateway saw it); anything not an IP address stays as it is."""
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return address
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:  # ::ffff:a.b.c.d is the IPv4 client a.b.c.d
            return str(ip.ipv4_mapped)
        return str(ipaddress.IPv6Network((ip, 64), strict=False))
    return str(ip)


def client(volunteer_id: str, address: str, by_address: bool) -> str:
    """Who a vote or a report counts as: its source address where addresses
    count (`@` + the key `network` gave it), else its identity (the local
    stack, where every volunteer is 127.0.0.1, or a record without one)."""
    return f"@{address}" if by_address and address else volunteer_id
