"""Admission: how many WebSocket connections one address may hold, and how fast it may talk.

``ConnectionCap`` counts this node's open connections per remote address.
An upgrade request from an address already at ``max_per_address`` is
answered HTTP 429 before the upgrade (``gchat.transport.http``), so a
single client cannot exhaust the node's sockets, tasks and memory. Checking
before the upgrade is cheap but racy (many handshakes from one address can
pass the check together), so the connection also counts itself when it
starts and closes at once with 1013 (try again later) if it is over.
The address is the client's (``gchat.transport.client_address``: behind
a trusted reverse proxy, the address the proxy saw). Addresses in
``exempt`` (loopback by default: a proxy on the same host that is not
listed in ``trusted_proxies``, health checks) are not capped.

``FrameBucket`` is one connection's frame rate: a token bucket checked as
soon as a frame is decoded (an authenticated device's acks are not
counted: a client acks each envelope as it syncs a backlog). A frame over
the rate is answered ``rate_limited`` (with its rid) and not processed; a
client that goes on sending while refused (``max_refused`` refusals before
its bucket is half full again) is closed with 4429. One
connection's flood then costs the node a counter update per frame, and
other connections are not slowed beyond that.
"""

import ipaddress
import time
from collections import Counter
from collections.abc import Callable, Iterable

from gchat.runtime.ratelimit import Limit
from gchat.transport.client_address import Network

#: Exempt from the per-address cap unless the deployment says otherwise.
DEFAULT_EXEMPT = "127.0.0.0/8,::1/128"


def parse_networks(text: str) -> list[Network]:
    """``"10.0.0.0/8, 192.0.2.7"`` as networks; a bad entry is a ValueError."""
    networks = []
    for part in filter(None, (p.strip() for p in text.split(","))):
        try:
            networks.append(ipaddress.ip_network(part, strict=False))
        except ValueError:
            raise ValueError(f"not an address or network: {part!r}") from None
    return networks


class ConnectionCap:
    """Open connections per remote address on this node."""

    def __init__(self, max_per_address: int, exempt: Iterable[Network] = ()) -> None:
        self.max_per_address = max_per_address
        self._exempt = list(exempt)
        self._open: Counter[str] = Counter()

    def exempt(self, address: str) -> bool:
        try:
            ip = ipaddress.ip_address(address)
        except ValueError:
            return False
        if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
            ip = ip.ipv4_mapped
        return any(ip in network for network in self._exempt)

    def full(self, address: str) -> bool:
        """True when a new connection from ``address`` must be refused."""
        if self.max_per_address <= 0 or self.exempt(address):
            return False
        return self._open[address] >= self.max_per_address

    def opened(self, address: str) -> bool:
        """Count a connection that started; False when it is over the cap."""
        over = self.full(address)
        self._open[address] += 1
        return not over

    def closed(self, address: str) -> None:
        self._open[address] -= 1
        if self._open[address] <= 0:
            del self._open[address]

    def open_from(self, address: str) -> int:
        return self._open[address]


class FrameBucket:
    """One connection's frames per second (not shared: it is per connection).

    ``take`` runs for every frame a client sends (twice per message): the
    limit's numbers are kept as plain attributes and the refill capped by a
    comparison, not read through the ``Limit`` and ``min`` (0.7 against 0.3
    us a frame, timeit).
    """

    def __init__(
        self, limit: Limit, max_refused: int, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._capacity = limit.capacity
        self._rate = limit.rate
        self._max_refused = max_refused
        self._clock = clock
        self._tokens = limit.capacity
        self._at = clock()
        self.refused = 0

    def take(self) -> bool:
        """True when this frame may be processed."""
        now = self._clock()
        tokens = self._tokens + (now - self._at) * self._rate
        capacity = self._capacity
        if tokens > capacity:
            tokens = capacity
        self._at = now
        if tokens >= capacity / 2:
            self.refused = 0  # the client slowed down: forgiven
        if tokens >= 1:
            self._tokens = tokens - 1
            return True
        self._tokens = tokens
        self.refused += 1
        return False

    @property
    def retry_after(self) -> float:
        return (1 - self._tokens) / self._rate

    @property
    def exhausted(self) -> bool:
        """The client went on sending while refused: close the connection."""
        return self.refused > self._max_refused
