"""The connection pool and the type store functions accept.

Pooled connections are released without asyncpg's reset query (advisory
unlock, UNLISTEN, RESET ALL): it was a quarter of the server's time under
load, one extra round trip per release. So code that sets session state on
a pooled connection (an advisory lock, a listener) undoes it itself before
releasing, as the audit sequencer does.
"""

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import TypeAlias

import asyncpg

log = logging.getLogger(__name__)

Executor: TypeAlias = asyncpg.Connection | asyncpg.Pool


async def _no_reset(conn: asyncpg.Connection) -> None:
    """Release a connection as it is (see the module docstring)."""


async def unlisten(conn: asyncpg.Connection, channel: str, callback: object) -> None:
    """Take ``callback`` off ``channel`` before ``conn`` goes back to the pool.

    Also when PostgreSQL has ended the session: asyncpg's ``remove_listener``
    does nothing on a closed connection, and the pool's release then finds the
    listener still on it and warns instead of releasing. Where warnings are
    errors (the test suite) that warning replaced a task's cancellation and
    left the pool slot taken, so a node's stop waited forever (the two-node
    audit fail-over test, about once in 20 runs under load). Terminating a
    closed connection finishes asyncpg's own clean-up, which frees the slot.
    """
    if conn.is_closed():
        conn.terminate()
    else:
        await conn.remove_listener(channel, callback)


#: Planner settings that, turned off, leave index scans and nested loops only:
#: plans that read a few index pages whatever the tables' sizes and statistics
#: (the pinned transactions here, the audit sequencer's session).
INDEX_PLANS_ONLY = ("enable_seqscan", "enable_bitmapscan", "enable_hashjoin", "enable_mergejoin")

#: The settings of the :attr:`Database.pinned` pool's sessions: a generic
#: plan made at a statement's first execution, of index scans and nested loops.
#:
#: Why: PostgreSQL keeps the plan of a statement prepared on a connection
#: (asyncpg prepares every statement). After five executions it may switch
#: to a generic plan, made once from the statistics of that moment: on a
#: young database with small tables (and no ``ANALYZE`` since: autovacuum
#: may be off) that plan scans tables in full, and the connection keeps it
#: while the tables grow. A send on such a connection cost PostgreSQL 92 ms
#: of CPU at 200,000 devices, against 0.5 ms (docs/PERFORMANCE.md). With
#: these settings a statement gets its generic plan at its first execution,
#: with only index scans and nested loops allowed (as the audit sequencer's
#: are), so it reads a few index pages whatever the tables' sizes and
#: statistics, and is not planned again. A statement that must run pinned
#: should run only on pinned connections: PostgreSQL keeps one plan per
#: prepared statement, whichever settings made it.
PINNED_SETTINGS = {"plan_cache_mode": "force_generic_plan"} | {
    setting: "off" for setting in INDEX_PLANS_ONLY
}


def pinned_pool_size(max_size: int, commit_lanes: int = 1) -> int:
    """How many connections :attr:`Database.pinned` may open beside a pool of
    ``max_size``: a quarter as many and one more per commit lane past the
    first, at least one beside the lanes' (the committer keeps one per lane;
    the other pinned transactions are short), so a node stays near its
    configured connection count (docs/OPERATIONS.md)."""
    return commit_lanes + max(1, max_size // 4 - 1)


class Database:
    """Owns the asyncpg pools; hands out transactions to services."""

    def __init__(self, pool: asyncpg.Pool, pinned: asyncpg.Pool) -> None:
        self.pool = pool
        #: Connections opened with :data:`PINNED_SETTINGS` for the whole
        #: session, for the statements that must run pinned (the send's):
        #: their transactions begin with a plain BEGIN, and a statement may
        #: be its own transaction (the send's store, docs/PERFORMANCE.md).
        self.pinned = pinned

    @classmethod
    async def connect(
        cls, dsn: str, min_size: int = 2, max_size: int = 10, commit_lanes: int = 1
    ) -> "Database":
        pool = await asyncpg.create_pool(
            dsn, min_size=min_size, max_size=max_size, command_timeout=30, reset=_no_reset
        )
        try:
            pinned = await asyncpg.create_pool(
                dsn, min_size=1, max_size=pinned_pool_size(max_size, commit_lanes),
                command_timeout=30,
                reset=_no_reset, server_settings=PINNED_SETTINGS,
            )
        except BaseException:
            await pool.close()
            raise
        return cls(pool, pinned)

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[asyncpg.Connection]:
        async with self.pool.acquire() as conn, conn.transaction():
            yield conn

    @asynccontextmanager
    async def pinned_transaction(self) -> AsyncIterator[asyncpg.Connection]:
        """A transaction on a :attr:`pinned` connection (:data:`PINNED_SETTINGS`
        are the session's, so it begins with a plain BEGIN)."""
        async with self.pinned.acquire() as conn, conn.transaction():
            yield conn

    async def analyze(self, *tables: str) -> None:
        """Refresh the planner's statistics of ``tables`` after a bulk change.

        Why: the planner chose nested loops over seq scans with statistics taken
        while a table was small; a bulk import must not leave them stale until
        autovacuum (which may be off or behind) gets to it.
        """
        async with self.pool.acquire() as conn:
            for table in tables:
                await conn.execute(f"ANALYZE {table}")  # noqa: S608 - names from code, not input

    async def close(self, wait_seconds: float = 10.0) -> None:
        """Close the pool: wait up to ``wait_seconds`` for connections in use, then end them.

        Why bounded: asyncpg's ``close`` waits for every acquired connection
        to come back, without limit. A connection that never does (one was
        stranded after PostgreSQL killed the audit sequencer's session: the
        two-node fail-over test hung about once in 25 runs) would keep a
        stopping node alive until its service manager kills it. asyncpg
        terminates the pool when its ``close`` is cancelled.
        """
        try:
            await asyncio.wait_for(
                asyncio.gather(self.pool.close(), self.pinned.close()), wait_seconds
            )
        except TimeoutError:
            log.warning("database pool: connections still in use after %.0f s; terminated",
                        wait_seconds)
