"""The node's Redis pool against real Redis: bounded under a burst, shrinking when idle.

Counted twice: by the pool, and by Redis itself (``CLIENT LIST`` of the
connections that carry this test's client name), so a connection the pool
forgot but left open would show.
"""

import asyncio
import secrets
from collections.abc import AsyncIterator
from typing import Any

import pytest
from redis.asyncio import Redis

from gchat.runtime.redis_broker import connect_redis
from gchat.runtime.redis_pool import IdlePool
from tests.support import eventually


async def open_at_redis(observer: Redis, name: str) -> int:
    """Connections Redis holds open under client name ``name``."""
    clients = await observer.client_list()
    return sum(1 for c in clients if c.get("name") == name)


def named_client(redis_url: str, **options: Any) -> tuple[str, Redis, IdlePool]:
    """A node's client whose connections Redis lists under a name of their own."""
    name = f"pooltest-{secrets.token_hex(4)}"
    sep = "&" if "?" in redis_url else "?"
    client = connect_redis(f"{redis_url}{sep}client_name={name}", **options)
    pool = client.connection_pool
    assert isinstance(pool, IdlePool)
    return name, client, pool


@pytest.fixture
async def observer(redis_url: str) -> AsyncIterator[Redis]:
    client = connect_redis(redis_url)
    yield client
    await client.aclose()


async def test_a_burst_is_served_by_at_most_max_connections_then_idle_ones_close(
    redis_url: str, redis_prefix: str, observer: Redis
) -> None:
    name, client, pool = named_client(redis_url, timeout=10, max_connections=8)
    peak_pool = peak_redis = 0
    burst_over = asyncio.Event()

    async def watch() -> None:
        nonlocal peak_pool, peak_redis
        while not burst_over.is_set():
            peak_pool = max(peak_pool, pool.size()[0])
            peak_redis = max(peak_redis, await open_at_redis(observer, name))
            await asyncio.sleep(0.01)

    try:
        watcher = asyncio.create_task(watch())
        # 200 commands at once, each holding its connection for 50 ms (a
        # reconnect storm's rate-limit checks, slowed down so they overlap).
        key = f"{redis_prefix}empty"
        results = await asyncio.gather(*(client.blpop([key], timeout=0.05) for _ in range(200)))
        burst_over.set()
        await watcher
        assert results == [None] * 200  # every one served: they waited, none failed
        assert 2 <= peak_pool <= 8, peak_pool
        assert peak_redis <= 8, peak_redis
        assert pool.size()[0] == await open_at_redis(observer, name) >= 2

        # The first reap starts the watch; a whole idle interval later the
        # idle ones beyond one are closed, at Redis too.
        assert await pool.reap() == 0
        closed = await pool.reap()
        assert closed >= 1 and pool.size() == (1, 1)
        async def one_left() -> bool:
            return await open_at_redis(observer, name) == 1

        await eventually(one_left, what="Redis still holds the closed connections")

        # A connection used during an interval is kept; the pool still works.
        await client.set(f"{redis_prefix}k", b"v")
        assert await pool.reap() == 0 and pool.size() == (1, 1)
        assert await client.get(f"{redis_prefix}k") == b"v"
    finally:
        burst_over.set()
        await client.aclose()


async def test_the_reaper_task_shrinks_the_pool_on_its_own(
    redis_url: str, redis_prefix: str
) -> None:
    client = connect_redis(redis_url, max_connections=6)
    pool = client.connection_pool
    assert isinstance(pool, IdlePool)
    reaper = asyncio.create_task(pool.reap_forever(0.2))
    try:
        key = f"{redis_prefix}empty"
        await asyncio.gather(*(client.blpop([key], timeout=0.05) for _ in range(30)))
        assert pool.size()[0] >= 2
        await eventually(lambda: pool.size() == (1, 1), within=5)
    finally:
        reaper.cancel()
        await asyncio.gather(reaper, return_exceptions=True)
        await client.aclose()


async def test_a_reap_cancelled_at_once_leaves_no_connection_open_and_forgotten(
    redis_url: str, redis_prefix: str, observer: Redis
) -> None:
    # The node stopping cancels its reaper wherever it is: right after the
    # reap has taken the idle connections off the pool's stack is the worst
    # place, for then the pool's own disconnect no longer knows them.
    name, client, pool = named_client(redis_url, max_connections=6)
    try:
        key = f"{redis_prefix}empty"
        await asyncio.gather(*(client.blpop([key], timeout=0.05) for _ in range(30)))
        opened = pool.size()[0]
        assert opened >= 3 and await open_at_redis(observer, name) == opened
        assert await pool.reap() == 0  # starts the watch
        reaping = asyncio.create_task(pool.reap())
        await asyncio.sleep(0)  # the reap runs to its first wait, if it has one
        reaping.cancel()
        await asyncio.gather(reaping, return_exceptions=True)
        assert pool.size() == (1, 1)

        async def only_the_pools_own() -> bool:
            return await open_at_redis(observer, name) == pool.size()[0]

        await eventually(only_the_pools_own, what="Redis holds connections the pool forgot")
    finally:
        await client.aclose()
