"""DeliveryStream's ack rules, with a stand-in for the node's Inbox (pure unit test)."""

import asyncio
from datetime import UTC, datetime
from uuid import uuid4

from gchat.messaging.delivery import _MAX_PENDING_ACKS, DeliveryStream
from gchat.store.messages import InboxEntry
from protocol.frames import Deliver, QueueEmpty
from tests.support import eventually, stays


class SlowInbox:
    """Hands out ``backlog`` entries and keeps ack futures pending until released."""

    def __init__(self, backlog: int) -> None:
        self.backlog = [
            InboxEntry(p, uuid4(), uuid4(), uuid4(), datetime.now(UTC), b"c")
            for p in range(1, backlog + 1)
        ]
        self.acks: list[tuple[list[int], asyncio.Future[int]]] = []

    def read(self, device_id, after, limit):  # noqa: ANN001, ANN201
        future = asyncio.get_running_loop().create_future()
        future.set_result([e for e in self.backlog if e.position > after][:limit])
        return future

    def ack(self, device_id, official_id, positions):  # noqa: ANN001, ANN201
        future = asyncio.get_running_loop().create_future()
        self.acks.append((positions, future))
        return future


async def started(inbox: SlowInbox, window: int) -> tuple[DeliveryStream, asyncio.Task[None]]:
    pushed: list[Deliver | QueueEmpty] = []

    async def push(frame: Deliver | QueueEmpty) -> None:
        pushed.append(frame)

    stream = DeliveryStream(inbox, uuid4(), uuid4(), push, window)  # type: ignore[arg-type]
    task = asyncio.create_task(stream.run())
    # Running: it has pushed what the window allows.
    await eventually(lambda: len(pushed) >= min(window, len(inbox.backlog)))
    return stream, task


async def test_acks_for_positions_never_pushed_queue_nothing() -> None:
    inbox = SlowInbox(backlog=3)
    stream, task = await started(inbox, window=10)
    try:
        await stream.ack([999, 1000, 5000])
        await stream.ack([1, 1, 2])  # pushed, with a repeat
        await stream.ack([1])  # already acked
        assert [positions for positions, _ in inbox.acks] == [[1, 2]]
    finally:
        task.cancel()


async def test_a_connection_waits_when_its_ack_deletes_pile_up() -> None:
    inbox = SlowInbox(backlog=20)
    stream, task = await started(inbox, window=20)
    try:
        for position in range(1, _MAX_PENDING_ACKS + 1):
            await stream.ack([position])
        blocked = asyncio.create_task(stream.ack([_MAX_PENDING_ACKS + 1]))
        await stays(lambda: not blocked.done(), 0.05)  # that connection's read loop is paused
        inbox.acks[0][1].set_result(1)
        await asyncio.wait_for(blocked, 1)
        assert len(inbox.acks) == _MAX_PENDING_ACKS + 1
    finally:
        task.cancel()
