"""DeliveryStream's ack rules, with a stand-in for the node's Inbox (pure unit test)."""

import asyncio
from collections.abc import Callable
from datetime import UTC, datetime
from uuid import uuid4

import pytest

from gchat.messaging.delivery import _MAX_PENDING_ACKS, DeliveryStream, PendingAck, as_deliveries
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
        self.queued: list[PendingAck] = []
        self.reads = 0

    def attach(self, stream: DeliveryStream) -> None:
        pass

    def detach(self, stream: DeliveryStream) -> None:
        pass

    def commit(self, count: int) -> list[Deliver]:
        """Append ``count`` rows, as a commit does; returns them as handed over."""
        start = len(self.backlog) + 1
        rows = [
            InboxEntry(p, uuid4(), uuid4(), uuid4(), datetime.now(UTC), b"c")
            for p in range(start, start + count)
        ]
        self.backlog.extend(rows)
        return as_deliveries(rows)

    def read(self, device_id, after, limit):  # noqa: ANN001, ANN201
        self.reads += 1
        future = asyncio.get_running_loop().create_future()
        future.set_result([e for e in self.backlog if e.position > after][:limit])
        return future

    def ack(self, device_id, official_id, positions):  # noqa: ANN001, ANN201
        pending = PendingAck(device_id, official_id, positions)
        pending.future = asyncio.get_running_loop().create_future()
        self.acks.append((positions, pending.future))
        self.queued.append(pending)
        return pending

    def join(self, pending: PendingAck, positions: list[int]) -> bool:
        return pending.join(positions)

    def begin_batch(self) -> None:
        """The ack batcher takes what is queued (later acks queue anew)."""
        for pending in self.queued:
            pending.taken = True
        self.queued.clear()


async def started(
    inbox: SlowInbox,
    window: int,
    pushed: list[Deliver | QueueEmpty] | None = None,
    write_now: Callable[[list[Deliver]], bool] | None = None,
) -> tuple[DeliveryStream, asyncio.Task[None]]:
    """A running stream; ``write_now``: how the connection writes at once (None: never)."""
    into: list[Deliver | QueueEmpty] = pushed if pushed is not None else []

    async def push(frames: list[Deliver | QueueEmpty]) -> None:
        into.extend(frames)

    stream = DeliveryStream(  # type: ignore[arg-type]
        inbox, uuid4(), uuid4(), push, window, write_now=write_now
    )
    task = asyncio.create_task(stream.run())
    # Running: its first read is pushed (all of it, or what the window allows).
    await eventually(
        lambda: len(into) >= window or any(isinstance(x, QueueEmpty) for x in into)
    )
    return stream, task


def writer(
    pushed: list[Deliver | QueueEmpty], direct: bool
) -> Callable[[list[Deliver]], bool] | None:
    """A connection's ``write_now`` whose socket always takes the frames (or none)."""

    def write_now(frames: list[Deliver]) -> bool:
        pushed.extend(frames)
        return True

    return write_now if direct else None


def positions(pushed: list[Deliver | QueueEmpty]) -> list[int]:
    return [frame.position for frame in pushed if isinstance(frame, Deliver)]


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
            inbox.begin_batch()  # each is taken before the next arrives
        blocked = asyncio.create_task(stream.ack([_MAX_PENDING_ACKS + 1]))
        await stays(lambda: not blocked.done(), 0.05)  # that connection's read loop is paused
        inbox.acks[0][1].set_result(1)
        await asyncio.wait_for(blocked, 1)
        assert len(inbox.acks) == _MAX_PENDING_ACKS + 1
    finally:
        task.cancel()


@pytest.mark.parametrize("direct", [False, True])
async def test_rows_handed_over_in_order_are_pushed_without_a_read(direct: bool) -> None:
    inbox = SlowInbox(backlog=2)
    pushed: list[Deliver | QueueEmpty] = []
    stream, task = await started(inbox, window=10, pushed=pushed, write_now=writer(pushed, direct))
    try:
        await eventually(lambda: pushed and isinstance(pushed[-1], QueueEmpty))
        assert inbox.reads == 1
        stream.offer(inbox.commit(3))
        await eventually(lambda: positions(pushed) == [1, 2, 3, 4, 5])
        assert inbox.reads == 1
        await stream.ack([1, 2, 3, 4, 5])  # the last read did not fill the window
        await stays(lambda: inbox.reads == 1)
    finally:
        task.cancel()


@pytest.mark.parametrize("direct", [False, True])
async def test_a_gap_before_the_handed_rows_reads_the_inbox_instead(direct: bool) -> None:
    inbox = SlowInbox(backlog=1)
    pushed: list[Deliver | QueueEmpty] = []
    stream, task = await started(inbox, window=10, pushed=pushed, write_now=writer(pushed, direct))
    try:
        await eventually(lambda: pushed and isinstance(pushed[-1], QueueEmpty))
        inbox.commit(1)  # committed on another node; its wake-up is still on the way
        stream.offer(inbox.commit(1))
        await eventually(lambda: positions(pushed) == [1, 2, 3])  # 2 is read, not skipped
        assert inbox.reads == 2
    finally:
        task.cancel()


@pytest.mark.parametrize("direct", [False, True])
async def test_a_signal_from_elsewhere_wins_over_handed_rows(direct: bool) -> None:
    inbox = SlowInbox(backlog=0)
    pushed: list[Deliver | QueueEmpty] = []
    stream, task = await started(inbox, window=10, pushed=pushed, write_now=writer(pushed, direct))
    try:
        await eventually(lambda: pushed and isinstance(pushed[-1], QueueEmpty))
        stream.offer(inbox.commit(1))
        inbox.commit(1)  # another node's row after ours, and its wake-up
        stream.wake()
        await eventually(lambda: positions(pushed) == [1, 2])
        assert inbox.reads == 2
    finally:
        task.cancel()


@pytest.mark.parametrize("direct", [False, True])
async def test_handed_rows_beyond_the_window_wait_in_the_inbox_for_room(direct: bool) -> None:
    inbox = SlowInbox(backlog=0)
    pushed: list[Deliver | QueueEmpty] = []
    stream, task = await started(inbox, window=3, pushed=pushed, write_now=writer(pushed, direct))
    try:
        await eventually(lambda: pushed and isinstance(pushed[-1], QueueEmpty))
        stream.offer(inbox.commit(5))
        await eventually(lambda: positions(pushed) == [1, 2, 3])  # read, as a read would
        await stream.ack([1, 2])
        await eventually(lambda: positions(pushed) == [1, 2, 3, 4, 5])
        stream.offer(inbox.commit(1))  # no room: dropped, and read once there is
        await stays(lambda: positions(pushed) == [1, 2, 3, 4, 5])
        await stream.ack([3])
        await eventually(lambda: positions(pushed) == [1, 2, 3, 4, 5, 6])
    finally:
        task.cancel()


@pytest.mark.parametrize("direct", [False, True])
async def test_rows_a_read_already_returned_are_not_pushed_twice(direct: bool) -> None:
    inbox = SlowInbox(backlog=0)
    pushed: list[Deliver | QueueEmpty] = []
    stream, task = await started(inbox, window=10, pushed=pushed, write_now=writer(pushed, direct))
    try:
        await eventually(lambda: pushed and isinstance(pushed[-1], QueueEmpty))
        rows = inbox.commit(2)
        stream.wake()  # read them first (a signal raced the hand-over)
        await eventually(lambda: positions(pushed) == [1, 2])
        stream.offer(rows)
        await stays(lambda: positions(pushed) == [1, 2])
    finally:
        task.cancel()


async def test_acks_arriving_while_a_delete_waits_join_it() -> None:
    inbox = SlowInbox(backlog=10)
    stream, task = await started(inbox, window=10)
    try:
        for position in range(1, 6):
            await stream.ack([position])
        assert [positions for positions, _ in inbox.acks] == [[1, 2, 3, 4, 5]]
        inbox.begin_batch()
        await stream.ack([6])  # its batch has begun: a new delete
        await stream.ack([7, 6])
        assert [positions for positions, _ in inbox.acks] == [[1, 2, 3, 4, 5], [6, 7]]
    finally:
        task.cancel()


async def test_rows_handed_to_an_idle_stream_are_written_by_the_hand_over_itself() -> None:
    inbox = SlowInbox(backlog=1)
    pushed: list[Deliver | QueueEmpty] = []
    stream, task = await started(inbox, window=10, pushed=pushed, write_now=writer(pushed, True))
    try:
        await eventually(lambda: pushed and isinstance(pushed[-1], QueueEmpty))
        await asyncio.sleep(0)  # the stream's task waits for a wake-up again
        stream.offer(inbox.commit(2))
        assert positions(pushed) == [1, 2, 3]  # written before offer returned
        stream.offer(inbox.commit(1))
        assert positions(pushed) == [1, 2, 3, 4]
        assert inbox.reads == 1
        await stream.ack([1, 2, 3, 4])
        await stays(lambda: positions(pushed) == [1, 2, 3, 4] and inbox.reads == 1)
    finally:
        task.cancel()


async def test_rows_the_socket_cannot_take_at_once_go_by_the_streams_task_in_order() -> None:
    inbox = SlowInbox(backlog=1)
    pushed: list[Deliver | QueueEmpty] = []
    takes = [False, True]  # draining at the first hand-over, not at the second

    def write_now(frames: list[Deliver]) -> bool:
        if takes.pop(0):
            pushed.extend(frames)
            return True
        return False

    stream, task = await started(inbox, window=10, pushed=pushed, write_now=write_now)
    try:
        await eventually(lambda: pushed and isinstance(pushed[-1], QueueEmpty))
        await asyncio.sleep(0)
        stream.offer(inbox.commit(2))
        assert positions(pushed) == [1]  # left to the task, which waits for the socket
        stream.offer(inbox.commit(1))  # the task has not run: it takes this one too
        await eventually(lambda: positions(pushed) == [1, 2, 3, 4])
        assert takes == [True] and inbox.reads == 1
        stream.offer(inbox.commit(1))
        assert positions(pushed) == [1, 2, 3, 4, 5]
    finally:
        task.cancel()
