"""Batcher: natural batching, and lingering for work nobody waits for."""

import asyncio

from gchat.runtime.batcher import Batcher


async def test_a_lingering_batcher_gathers_requests_that_trickle_in() -> None:
    batches: list[list[int]] = []

    async def work(items: list[int]) -> list[int]:
        batches.append(items)
        return items

    lingering = Batcher("test", work, 100, linger=0.2)
    lingering.start()
    try:
        futures = []
        for i in range(5):  # one every 10 ms: each would be its own batch without linger
            futures.append(lingering.submit(i))
            await asyncio.sleep(0.01)
        assert await asyncio.gather(*futures) == [0, 1, 2, 3, 4]
        assert batches == [[0, 1, 2, 3, 4]]
    finally:
        await lingering.stop()


async def test_without_linger_a_lone_request_goes_at_once() -> None:
    batches: list[list[int]] = []

    async def work(items: list[int]) -> list[int]:
        batches.append(items)
        return items

    eager = Batcher("test", work, 100)
    eager.start()
    try:
        for i in range(3):
            assert await eager.submit(i) == i
        assert batches == [[0], [1], [2]]
    finally:
        await eager.stop()
