"""The pools: closing is bounded, whatever a caller still holds; the pinned one."""

import asyncio
import logging

import asyncpg
import pytest

from gchat.store.database import Database
from tests.support import eventually


async def _backend_gone(database_url: str, pid: int) -> bool:
    conn = await asyncpg.connect(database_url)
    try:
        return not await conn.fetchval("SELECT count(*) FROM pg_stat_activity WHERE pid = $1", pid)
    finally:
        await conn.close()


async def test_close_ends_a_connection_nobody_gives_back(
    database_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    db = await Database.connect(database_url, min_size=1, max_size=2)
    held = await db.pool.acquire()  # never released, as a stranded connection
    pid = held.get_server_pid()
    caplog.set_level(logging.WARNING, logger="gchat.store.database")
    await asyncio.wait_for(db.close(wait_seconds=0.5), 10)
    assert "still in use" in caplog.text
    await eventually(lambda: _backend_gone(database_url, pid), what="the session ended")


async def test_close_waits_for_a_connection_given_back_in_time(
    database_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    db = await Database.connect(database_url, min_size=1, max_size=2)
    held = await db.pool.acquire()
    pid = held.get_server_pid()
    caplog.set_level(logging.WARNING, logger="gchat.store.database")
    closing = asyncio.create_task(db.close(wait_seconds=10))
    await asyncio.sleep(0)  # close() is now waiting for the held connection
    assert not closing.done()
    await db.pool.release(held)
    await asyncio.wait_for(closing, 10)
    assert "still in use" not in caplog.text
    await eventually(lambda: _backend_gone(database_url, pid), what="the session ended")


async def test_the_pinned_pool_is_pinned_for_the_session_and_a_quarter_of_the_pool(
    database_url: str,
) -> None:
    db = await Database.connect(database_url, min_size=1, max_size=20)
    try:
        assert db.pool.get_max_size() == 20
        assert db.pinned.get_max_size() == 5  # docs/OPERATIONS.md counts on it
        async with db.pinned.acquire() as conn:  # outside any transaction
            assert await conn.fetchval("SHOW enable_seqscan") == "off"
            assert await conn.fetchval("SHOW plan_cache_mode") == "force_generic_plan"
        assert await db.pool.fetchval("SHOW enable_seqscan") == "on"
    finally:
        await db.close()
