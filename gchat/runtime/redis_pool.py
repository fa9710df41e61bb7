"""The node's Redis connections: at most a fixed number, and fewer again when idle.

Why: redis-py's default asyncio pool opens a connection for every command
in flight and keeps every one it ever opened.  A reconnect storm (a
thousand devices authenticating at once, each with a rate-limit check)
left a node holding hundreds of idle Redis connections for the rest of its
life, per node, against Redis's ``maxclients``.

:class:`IdlePool` is redis-py's :class:`BlockingConnectionPool` (at most
``max_connections``; a command beyond that waits up to ``timeout`` for a
free one, then fails like an unreachable Redis -- which the broker and the
rate limiter already survive) plus a reaper: :meth:`IdlePool.reap` closes
the connections that sat idle through a whole interval, keeping
``min_idle``.  The pool hands out the most recently released connection
first (a stack), so the ones at the bottom of the stack are exactly those
nobody needed: the fewest idle connections seen since the last reap is how
many of them can go.  The pub/sub connection is taken from the pool and
held, so it is never idle here.
"""

import asyncio
import logging
from typing import Any, SupportsIndex

from redis.asyncio import BlockingConnectionPool
from redis.asyncio.connection import AbstractConnection

log = logging.getLogger("gchat.runtime.redis_pool")


class _IdleStack(list[AbstractConnection]):
    """The pool's idle connections (a stack), remembering its lowest height."""

    low = 0

    def pop(self, index: SupportsIndex = -1) -> AbstractConnection:
        connection = super().pop(index)
        self.low = min(self.low, len(self))
        return connection


class IdlePool(BlockingConnectionPool):
    """A bounded pool whose connections idle for a whole reap interval are closed."""

    def __init__(self, *, min_idle: int = 1, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.min_idle = min_idle
        self._available_connections = _IdleStack(self._available_connections)

    def reset(self) -> None:
        super().reset()  # type: ignore[no-untyped-call]
        self._available_connections = _IdleStack()

    def size(self) -> tuple[int, int]:
        """(connections open or opening, of which idle)."""
        idle = len(self._available_connections)
        return idle + len(self._in_use_connections), idle

    async def reap(self) -> int:
        """Close the connections that stayed idle since the last call; how many.

        Once off the stack a connection is the reaper's alone: nothing else,
        not even the pool's ``disconnect`` when the node stops, would close
        it.  So each is closed without waiting for its socket to finish
        closing (``nowait``), inside the lock: a reaper cancelled at its
        first wait (the node stopping) has already closed them all.  Waiting
        per connection left the rest open and forgotten (a test saw it).
        """
        async with self._lock:
            idle = self._available_connections
            assert isinstance(idle, _IdleStack)
            spare = min(idle.low, len(idle)) - self.min_idle
            doomed = idle[:spare] if spare > 0 else []
            del idle[: len(doomed)]
            idle.low = len(idle)
            for connection in doomed:
                try:
                    await connection.disconnect(nowait=True)
                except Exception as error:  # closing a dead link: nothing to save
                    log.debug("idle Redis connection not closed cleanly: %r", error)
        return len(doomed)

    async def reap_forever(self, interval: float) -> None:
        """Reap every ``interval`` seconds (a background task of the node)."""
        while True:
            await asyncio.sleep(interval)
            await self.reap()
