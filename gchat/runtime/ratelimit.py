"""Named token-bucket limits, per node or shared by every node through Redis.

A limit is a bucket per key (a device id, an address): ``capacity`` tokens,
refilled at ``rate`` per second. An over-limit call gets a ServiceError with
``retry_after`` so the client knows when to try again.

``RateLimiter`` is what services depend on. ``LocalRateLimiter`` keeps the
buckets in this process (a single node). ``RedisRateLimiter`` keeps them in
Redis, updated by one Lua script (read, refill, take, write: atomic, and
timed by the Redis server's clock so nodes' clocks need not agree), so a
limit holds across all nodes, the checks of one loop turn in one call;
when Redis cannot be reached it answers from local buckets instead (each
node then enforces the limit on its own) and tries Redis again a moment
later.

A ``cost`` of 0 is a peek: it takes nothing but is refused while the
bucket holds less than one token (auth checks "may this address try at
all?" before spending a token only on failure).
"""

import asyncio
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from enum import Enum
from typing import Any, Protocol

from gchat.errors import ServiceError
from gchat.runtime.metrics import NodeMetrics
from protocol.errors import ErrorCode

log = logging.getLogger("gchat.runtime.ratelimit")


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
    SEARCHES = Limit(60, 5)  # per device: each is a directory query
    # Per connection, in the connection itself (gchat.transport.admission):
    # frames of any kind, checked before decoding.
    FRAMES = Limit(300, 100)
    # Per (requester official, target official): each fetch may spend one of
    # the target's one-time prekeys, so one official cannot empty another's
    # stock (50) however many fetches the per-device limit would allow.
    BUNDLE_FETCHES_PER_TARGET = Limit(20, 1 / 120)


LimitTable = Mapping[Limits, Limit]


def parse_overrides(text: str) -> dict[Limits, Limit]:
    """Read ``"messages=2000/500, bundle_fetches=300/5"`` (capacity/refill per second).

    For deployments whose officials legitimately need other limits, and for
    load tests, which must measure the server rather than its throttles.
    """
    table = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        name, _, spec = part.partition("=")
        capacity, _, rate = spec.partition("/")
        try:
            table[Limits[name.strip().upper()]] = Limit(float(capacity), float(rate))
        except (KeyError, ValueError):
            raise ValueError(f"bad rate limit {part!r}: want NAME=CAPACITY/PER_SECOND") from None
    return table


def _spec(table: LimitTable, limit: Limits) -> Limit:
    """The limit in force: the deployment's override, else the built-in value."""
    return table.get(limit, limit.value)


class RateLimiter(Protocol):
    async def check(self, limit: Limits, key: str, cost: float = 1.0) -> None:
        """Take ``cost`` tokens or raise ``rate_limited`` with a retry-after."""
        ...


def _refused(retry_after: float) -> ServiceError:
    return ServiceError(ErrorCode.RATE_LIMITED, "too many requests", retry_after=retry_after)


class LocalRateLimiter:
    """In-process buckets; the clock is injectable for tests.

    Buckets are keyed by the limit's name and the key. Each limit's spec
    (the deployment's override, else the built-in value) is looked up once,
    here, by name: a send checks one limit, and ``Enum.name``, ``.value``
    and an enum member's hash are each a Python call (``check_now`` took
    2.0 us with them, 0.7 us without: docs/PERFORMANCE.md).
    """

    def __init__(
        self,
        clock: Callable[[], float] = time.monotonic,
        max_keys: int = 100_000,
        table: LimitTable | None = None,
    ) -> None:
        self._clock = clock
        self._table = dict(table or {})
        #: (capacity, rate) of every limit, by its name.
        self._specs: dict[str, tuple[float, float]] = {}
        for limit in Limits:
            spec = _spec(self._table, limit)
            self._specs[limit.name] = (spec.capacity, spec.rate)
        self._buckets: dict[tuple[str, str], tuple[float, float]] = {}
        self._max_keys = max_keys

    def __len__(self) -> int:
        """Buckets held: what ``max_keys`` bounds (memory under a flood of keys)."""
        return len(self._buckets)

    async def check(self, limit: Limits, key: str, cost: float = 1.0) -> None:
        """Take ``cost`` tokens or raise ``rate_limited`` with a retry-after."""
        self.check_now(limit, key, cost)

    def check_now(self, limit: Limits, key: str, cost: float = 1.0) -> None:
        """``check`` without the coroutine (it never waits)."""
        now = self._clock()
        name = limit._name_  # the documented sunder name: ``.name`` is a descriptor call
        capacity, rate = self._specs[name]
        bucket = (name, key)
        held = self._buckets.get(bucket)
        if held is None:
            tokens = capacity
        else:
            tokens, last = held
            if now > last:
                tokens += (now - last) * rate
                if tokens > capacity:
                    tokens = capacity
        need = cost if cost > 0 else 1.0
        if tokens < need:
            raise _refused((need - tokens) / rate)
        if held is None and len(self._buckets) >= self._max_keys:
            self._evict(now)
        self._buckets[bucket] = (tokens - cost, now)

    def _evict(self, now: float) -> None:
        """Bound memory under a flood of keys without forgiving anyone.

        A bucket that has refilled is the same as no bucket, so those go
        first; if live throttles alone fill the table, the least recently
        touched half goes (they have refilled the most).
        """
        live = {}
        for (name, key), (tokens, last) in self._buckets.items():
            capacity, rate = self._specs[name]
            if tokens + (now - last) * rate < capacity:
                live[(name, key)] = (tokens, last)
        if len(live) >= self._max_keys:
            newest = sorted(live.items(), key=lambda item: item[1][1])[len(live) // 2 :]
            live = dict(newest)
        self._buckets = live


# KEYS[i]: a bucket. ARGV[3i-2..3i]: its capacity, rate per second, cost.
# Returns {taken_1, retry_1, taken_2, retry_2, ...} in the keys' order:
# taken 1 with retry "", or 0 with retry_after seconds (a string: Lua numbers
# become integers in Redis replies). Each bucket is read and written in turn,
# so two checks of one key in a call see each other's take, as two calls do.
_TAKE = """
local clock = redis.call('TIME')
local now = tonumber(clock[1]) + tonumber(clock[2]) / 1000000
local out = {}
for i, key in ipairs(KEYS) do
  local capacity = tonumber(ARGV[3 * i - 2])
  local rate = tonumber(ARGV[3 * i - 1])
  local cost = tonumber(ARGV[3 * i])
  local state = redis.call('HMGET', key, 'tokens', 'at')
  local tokens = tonumber(state[1])
  local at = tonumber(state[2])
  if tokens == nil or at == nil then
    tokens = capacity
    at = now
  end
  tokens = math.min(capacity, tokens + math.max(0, now - at) * rate)
  local need = cost
  if need <= 0 then need = 1 end
  if tokens < need then
    out[2 * i - 1] = 0
    out[2 * i] = tostring((need - tokens) / rate)
  else
    tokens = tokens - cost
    redis.call('HSET', key, 'tokens', tostring(tokens), 'at', tostring(now))
    redis.call('PEXPIRE', key, math.ceil((capacity - tokens) / rate * 1000) + 1000)
    out[2 * i - 1] = 1
    out[2 * i] = ''
  end
end
return out
"""


@dataclass(slots=True)
class _Pending:
    """One caller's check, waiting for the script call its loop turn's checks share."""

    limit: Limits
    key: str
    cost: float
    bucket: str
    args: tuple[str, str, str]
    verdict: "asyncio.Future[None]"


class RedisRateLimiter:
    """Buckets in Redis shared by every node; local buckets while Redis is down.

    Checks made in one loop turn go to Redis in one script call: the first
    schedules a flush for the next turn, the others join it, and each caller
    awaits its own verdict. A check per round trip cost the senders' node of
    a two-node cluster 14% of its CPU (its socket write alone as much), one
    ``EVALSHA`` per send: docs/PERFORMANCE.md.
    """

    def __init__(
        self,
        redis: Any,
        prefix: str,
        fallback: LocalRateLimiter | None = None,
        metrics: NodeMetrics | None = None,
        retry_interval: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
        table: LimitTable | None = None,
    ) -> None:
        self._script = redis.register_script(_TAKE)
        self._table = dict(table or {})
        #: Each limit's capacity and rate as the script's arguments, by name.
        self._args: dict[str, tuple[str, str]] = {}
        for limit in Limits:
            spec = _spec(self._table, limit)
            self._args[limit.name] = (repr(float(spec.capacity)), repr(float(spec.rate)))
        self._prefix = f"{prefix}rl:"
        self._fallback = fallback or LocalRateLimiter()
        self._metrics = metrics
        self._retry_interval = retry_interval
        self._clock = clock
        self._down_until = 0.0
        self._down = False
        #: Checks of this loop turn, not yet sent; a flush is scheduled while non-empty.
        self._pending: list[_Pending] = []
        #: Flushes in flight, held so they are not collected before they finish.
        self._flushes: set[asyncio.Task[None]] = set()

    @property
    def shared(self) -> bool:
        """True while the limits are enforced in Redis (across nodes)."""
        return not self._down

    async def check(self, limit: Limits, key: str, cost: float = 1.0) -> None:
        """Take ``cost`` tokens or raise ``rate_limited`` with a retry-after."""
        if self._down and self._clock() < self._down_until:
            return self._local(limit, key, cost)
        name = limit._name_  # the documented sunder name: ``.name`` is a descriptor call
        capacity, rate = self._args[name]
        loop = asyncio.get_running_loop()
        pending = _Pending(
            limit,
            key,
            cost,
            f"{self._prefix}{name}:{key}",
            (capacity, rate, repr(float(cost))),
            loop.create_future(),
        )
        if not self._pending:
            loop.call_soon(self._flush, loop)
        self._pending.append(pending)
        # The flush's task answers every future it took, whatever happens to
        # this caller: a caller cancelled while waiting cancels only its wait.
        await pending.verdict
        return None

    def _flush(self, loop: asyncio.AbstractEventLoop) -> None:
        """Send this turn's checks in one script call (a task, so no caller owns it)."""
        batch, self._pending = self._pending, []
        task = loop.create_task(self._send(batch))
        self._flushes.add(task)
        task.add_done_callback(self._flushes.discard)

    async def _send(self, batch: list[_Pending]) -> None:
        try:
            await self._take(batch)
        finally:
            for p in batch:  # never leave a caller waiting (a bad reply, the task cancelled)
                if not p.verdict.done():
                    p.verdict.cancel()

    async def _take(self, batch: list[_Pending]) -> None:
        keys = [p.bucket for p in batch]
        args = [arg for p in batch for arg in p.args]
        try:
            try:
                reply = await self._script(keys=keys, args=args)
            except Exception:
                # Once more on a fresh connection, as the broker does: after
                # a Redis restart the pool's idle connections are dead and
                # the first use of each fails (redis-py drops it).
                reply = await self._script(keys=keys, args=args)
            verdicts = [
                None if int(reply[2 * i]) else _refused(float(reply[2 * i + 1]))
                for i in range(len(batch))
            ]
        except Exception as error:  # redis errors, timeouts, OSError, a reply not as
            # the script writes it (a bug): all mean "not now", answered locally
            if not self._down:
                log.warning(
                    "rate limits fall back to local buckets: redis %s", type(error).__name__
                )
            self._down = True
            self._down_until = self._clock() + self._retry_interval
            for p in batch:
                try:
                    self._local(p.limit, p.key, p.cost)
                except ServiceError as refusal:
                    _answer(p.verdict, refusal)
                else:
                    _answer(p.verdict, None)
            return
        if self._down:
            self._down = False
            log.warning("rate limits shared through redis again")
        for p, verdict in zip(batch, verdicts, strict=True):
            _answer(p.verdict, verdict)

    def _local(self, limit: Limits, key: str, cost: float) -> None:
        if self._metrics is not None:
            self._metrics.ratelimit_fallbacks.inc()
        self._fallback.check_now(limit, key, cost)


def _answer(verdict: "asyncio.Future[None]", refusal: ServiceError | None) -> None:
    """Give one caller its verdict, unless it stopped waiting (cancelled)."""
    if verdict.done():
        return
    if refusal is None:
        verdict.set_result(None)
    else:
        verdict.set_exception(refusal)
