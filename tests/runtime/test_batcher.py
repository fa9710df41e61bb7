"""Batcher: natural batching, and lingering for work nobody waits for."""

import asyncio

import pytest

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


async def test_stop_answers_everything_queued_first() -> None:
    batches: list[list[int]] = []

    async def work(items: list[int]) -> list[int]:
        batches.append(items)
        await asyncio.sleep(0.01)  # later items queue meanwhile
        return [item * 10 for item in items]

    batcher = Batcher("test", work, 2)
    batcher.start()
    futures = [batcher.submit(i) for i in range(5)]
    await batcher.stop()
    assert [f.result() for f in futures] == [0, 10, 20, 30, 40]
    assert batches == [[0, 1], [2, 3], [4]]
    assert (batcher.batches, batcher.items) == (3, 5)


async def test_a_failed_batch_fails_each_of_its_items_and_the_next_runs() -> None:
    async def work(items: list[int]) -> list[int | BaseException]:
        if 0 in items:
            raise RuntimeError("down")
        return [ValueError(i) if i == 2 else i for i in items]

    batcher = Batcher("test", work, 100)
    batcher.start()
    try:
        first = batcher.submit(0)
        with pytest.raises(RuntimeError):
            await first
        results = await asyncio.gather(
            batcher.submit(1), batcher.submit(2), return_exceptions=True
        )
        assert results[0] == 1 and isinstance(results[1], ValueError)
    finally:
        await batcher.stop()
