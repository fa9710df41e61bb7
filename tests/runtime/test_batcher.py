"""Batcher: natural batching, and lingering for work nobody waits for."""

import asyncio

import pytest

from gchat.runtime.batcher import Batcher
from tests.support import eventually


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


async def test_hurry_ends_a_linger_at_once() -> None:
    """Somebody waiting for a lingering batch (a closing connection's acks) hurries it."""
    lingering = Batcher("test", _echo, 100, linger=3600)
    lingering.start()
    try:
        future = lingering.submit(1)
        await asyncio.sleep(0.05)
        assert not future.done()  # it lingers
        lingering.hurry()
        async with asyncio.timeout(5):
            assert await future == 1
    finally:
        await lingering.stop()


async def test_a_hurry_while_a_batch_runs_spares_the_next_batch_its_linger() -> None:
    """What was queued when the hurry came goes in the next batch, which does not linger."""
    gate = asyncio.Event()
    batches: list[list[int]] = []

    async def work(items: list[int]) -> list[int]:
        batches.append(items)
        await gate.wait()
        return items

    lingering = Batcher("test", work, 100, linger=3600)
    lingering.start()
    try:
        first = lingering.submit(1)
        lingering.hurry()
        await eventually(lambda: batches == [[1]], what="the first batch runs")
        second = lingering.submit(2)  # queued while the first batch runs
        lingering.hurry()
        gate.set()
        async with asyncio.timeout(5):
            assert await asyncio.gather(first, second) == [1, 2]
        assert batches == [[1], [2]]
        third = lingering.submit(3)  # nobody hurried this one: it lingers again
        await asyncio.sleep(0.05)
        assert not third.done()
    finally:
        await lingering.stop()  # hurries what is left


async def _echo(items: list[int]) -> list[int]:
    return items


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
