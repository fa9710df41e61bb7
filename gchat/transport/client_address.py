"""Whose address a connection is: the peer's, or the client's behind a trusted proxy.

Failed logins and enrolments are limited and audited per remote address
(``gchat.identity.auth``). Behind a reverse proxy every connection comes
from the proxy, so one attacker's failures would throttle every official
at once and the audit log would name only the proxy. The proxy says who
the client is in ``X-Forwarded-For`` (nginx appends the address it saw);
the node believes that header only from the proxies listed in
``trusted_proxies``, and takes the rightmost hop that is not one of them:
everything left of it was written by the client and may be forged.
"""

import ipaddress
from collections.abc import Iterable, Sequence

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def parse_trusted(text: str) -> tuple[Network, ...]:
    """``"10.0.0.5, 10.1.0.0/24"`` as networks; ValueError names a bad entry."""
    networks = []
    for part in text.split(","):
        if part.strip():
            try:
                networks.append(ipaddress.ip_network(part.strip(), strict=False))
            except ValueError as error:
                raise ValueError(f"trusted_proxies: {part.strip()!r} is not an address") from error
    return tuple(networks)


def _trusted(address: str, trusted: Sequence[Network]) -> bool:
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    return any(ip in network for network in trusted)


def client_address(peer: str, forwarded_for: Iterable[str], trusted: Sequence[Network]) -> str:
    """The address to limit and audit for a connection from ``peer``."""
    if not _trusted(peer, trusted):
        return peer  # a client talking to us directly: its header means nothing
    hops = [hop.strip() for header in forwarded_for for hop in header.split(",")]
    address = peer
    for hop in reversed(hops):
        try:
            address = str(ipaddress.ip_address(hop))
        except ValueError:
            return address  # garbage left of a trusted hop: stop at what we trust
        if not _trusted(address, trusted):
            return address
    return address
