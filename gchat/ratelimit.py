"""Named token-bucket limits (this node's memory; shared via Redis later).

A limit is a bucket per key (a device id, an address): ``capacity`` tokens,
refilled at ``rate`` per second. An over-limit call gets a ServiceError with
``retry_after`` so the client knows when to try again.
"""

import time
from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum

from gchat.errors import ServiceError
from protocol.errors import ErrorCode


@dataclass(frozen=True)
class Limit:
    capacity: float
    rate: float  # tokens per second


class Limits(Enum):
    """The table of limits; values are (capacity, refill per second)."""

    ENROLMENT_ATTEMPTS = Limit(10, 10 / 3600)  # per remote address
    AUTH_FAILURES = Limit(20, 20 / 600)  # per remote address
    MESSAGES = Limit(200, 50)  # per device
    BUNDLE_FETCHES = Limit(100, 2)  # per device


class LocalRateLimiter:
    """In-process buckets; the clock is injectable for tests."""

    def __init__(
        self, clock: Callable[[], float] = time.monotonic, max_keys: int = 100_000
    ) -> None:
        self._clock = clock
        self._buckets: dict[tuple[str, str], tuple[float, float]] = {}
        self._max_keys = max_keys

    def check(self, limit: Limits, key: str, cost: float = 1.0) -> None:
        """Take ``cost`` tokens or raise ``rate_limited`` with a retry-after."""
        now = self._clock()
        spec = limit.value
        tokens, last = self._buckets.get((limit.name, key), (spec.capacity, now))
        tokens = min(spec.capacity, tokens + (now - last) * spec.rate)
        if tokens < cost:
            retry = (cost - tokens) / spec.rate
            raise ServiceError(ErrorCode.RATE_LIMITED, "too many requests", retry_after=retry)
        if len(self._buckets) >= self._max_keys:
            self._buckets.clear()  # bounded memory under a flood of keys
        self._buckets[(limit.name, key)] = (tokens - cost, now)
