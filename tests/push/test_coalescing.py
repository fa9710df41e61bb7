"""Coalescing: one push per device per window, shared through real Redis by two nodes."""

import asyncio
import uuid

from gchat.push.notifier import LocalCoalescer, RedisCoalescer
from gchat.runtime.redis_broker import connect_redis


async def test_two_nodes_sharing_redis_claim_once_per_window(
    redis_url: str, redis_prefix: str
) -> None:
    first, second = connect_redis(redis_url), connect_redis(redis_url)
    try:
        node_a = RedisCoalescer(first, redis_prefix, 0.5)
        node_b = RedisCoalescer(second, redis_prefix, 0.5)
        device = uuid.uuid4()
        claims = await asyncio.gather(*(n.claim(device) for n in [node_a, node_b] * 5))
        assert sum(claims) == 1
        assert await node_b.claim(uuid.uuid4())  # another device: its own window
        await asyncio.sleep(0.6)
        assert await node_b.claim(device)  # the window passed
    finally:
        await first.aclose()
        await second.aclose()


async def test_local_window() -> None:
    coalescer = LocalCoalescer(0.2)
    device = uuid.uuid4()
    assert await coalescer.claim(device)
    assert not await coalescer.claim(device)
    await asyncio.sleep(0.25)
    assert await coalescer.claim(device)
