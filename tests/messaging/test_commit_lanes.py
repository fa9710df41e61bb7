"""Two commit lanes (gchat.messaging.committer) against real PostgreSQL: batches of
both lanes in flight at once keep each device's order, cannot deadlock, answer
retries from the original, and live streams still push each inbox in order."""

import asyncio
import os
import uuid
from collections.abc import AsyncIterator, Awaitable, Mapping
from datetime import UTC, datetime, timedelta

import pytest

from gchat.messaging import service as messaging
from gchat.messaging.committer import Checked, SendCommitter
from gchat.messaging.delivery import DeliveryStream, Inbox
from gchat.store import devices, directory
from gchat.store.database import Database, Executor
from gchat.store.messages import NewMessage, StoredMessage
from gchat.store.policies import SendStanding
from protocol.frames import Deliver, QueueEmpty
from tests.support import eventually

LANES = 2


@pytest.fixture
async def db(database_url: str) -> AsyncIterator[Database]:
    """A database whose pinned pool holds every lane's kept connection and one more."""
    database = await Database.connect(database_url, min_size=1, max_size=2, commit_lanes=LANES)
    yield database
    await database.close()


async def _official(db: Database, agency: uuid.UUID, lane: int | None = None) -> tuple[
    uuid.UUID, uuid.UUID
]:
    """An official with one device (whose id puts its sends in ``lane``)."""
    official = uuid.uuid4()
    await directory.create_official(db.pool, official, agency, "o" + official.hex[:6])
    device = uuid.uuid4()
    while lane is not None and device.int % LANES != lane:
        device = uuid.uuid4()
    await devices.create(db.pool, device, official, os.urandom(32), b"c", "d", "p")
    return official, device


async def _agency(db: Database) -> uuid.UUID:
    agency = uuid.uuid4()
    await directory.create_agency(db.pool, agency, "A" + agency.hex[:6], "Agency")
    return agency


def _send(sender: tuple[uuid.UUID, uuid.UUID], to: uuid.UUID, envelopes: list[uuid.UUID],
          cid: str) -> NewMessage:
    return NewMessage(uuid.uuid4(), sender[1], sender[0], to, cid, datetime.now(UTC),
                      [(d, cid.encode()) for d in envelopes])


class BothLanes:
    """The prepare hook: the first batch waits until a batch of the other lane
    is being checked too, so the test fails unless two batches are in flight."""

    def __init__(self) -> None:
        self.second = asyncio.Event()
        self.checking = 0
        self.peak = 0

    async def __call__(
        self, conn: Executor, sends: list[NewMessage], known: Mapping[uuid.UUID, SendStanding]
    ) -> Checked:
        self.checking += 1
        self.peak = max(self.peak, self.checking)
        try:
            if self.checking == LANES:
                self.second.set()
            await asyncio.wait_for(self.second.wait(), 10)
            return await messaging.check_batch(conn, sends, known)
        finally:
            self.checking -= 1


async def _inbox(db: Database, device: uuid.UUID) -> list[tuple[int, str, uuid.UUID]]:
    rows = await db.pool.fetch(
        """SELECT i.position, m.client_message_id, m.sender_device FROM inbox i
           JOIN messages m ON m.id = i.message_id WHERE i.device_id = $1 ORDER BY i.position""",
        device,
    )
    return [(r["position"], r["client_message_id"], r["sender_device"]) for r in rows]


async def _nothing(batch: list[NewMessage]) -> None:
    return None


async def test_two_lanes_keep_each_devices_order_and_answer_retries_from_the_original(
    db: Database,
) -> None:
    agency = await _agency(db)
    senders = [await _official(db, agency, lane % LANES) for lane in range(4)]
    recipient = await _official(db, agency)
    second = uuid.uuid4()
    await devices.create(db.pool, second, recipient[0], os.urandom(32), b"c", "d", "p")
    both = BothLanes()
    committer = SendCommitter(db, 8, timedelta(days=1), _nothing, prepare=both, lanes=LANES)
    committer.start()
    try:
        answered: dict[uuid.UUID, list[str]] = {s[1]: [] for s in senders}
        submitted: dict[uuid.UUID, list[str]] = {s[1]: [] for s in senders}
        futures = []
        for i in range(40):
            for n, sender in enumerate(senders):  # envelopes in both orders
                to = [recipient[1], second][:: 1 if (i + n) % 2 else -1]
                send = _send(sender, recipient[0], to, f"{n}-{i:02}")
                retry = _send(sender, recipient[0], to, send.client_message_id)
                # A retry right behind its original, once.
                for message in [send, retry] if i == 20 and n == 0 else [send]:
                    future = committer.submit(message)
                    submitted[sender[1]].append(message.client_message_id)
                    future.add_done_callback(
                        lambda _, d=sender[1], c=message.client_message_id: (
                            answered[d].append(c)
                        )
                    )
                    futures.append((message, future))
        results = await asyncio.gather(*(f for _, f in futures))
        assert both.peak == LANES
        originals: dict[str, StoredMessage] = {}
        for (send, _), result in zip(futures, results, strict=True):
            original = originals.setdefault(send.client_message_id, result)
            assert result.message_id == original.message_id
            assert result.duplicate == (result is not original)
        assert sum(r.duplicate for r in results) == 1
        assert answered == submitted  # each device's sends answered in the order sent

        # Each inbox: contiguous positions, each sender's sends in the order sent.
        for device in (recipient[1], second):
            rows = await _inbox(db, device)
            assert [p for p, _, _ in rows] == list(range(1, 161))
            for n, sender in enumerate(senders):
                cids = [c for _, c, d in rows if d == sender[1]]
                assert cids == [f"{n}-{i:02}" for i in range(40)]

        # Both lanes keep a pinned connection; the pool still has one for the rest.
        async with asyncio.timeout(10), db.pinned.acquire() as conn:
            assert await conn.fetchval("SELECT 1") == 1
    finally:
        await committer.stop()


async def test_group_and_pairwise_batches_in_both_lanes_do_not_deadlock(db: Database) -> None:
    agency = await _agency(db)
    posters = [await _official(db, agency, 0) for _ in range(2)]
    senders = [await _official(db, agency, 1) for _ in range(2)]
    recipients = [await _official(db, agency) for _ in range(3)]
    group = uuid.uuid4()
    await db.pool.execute(
        """INSERT INTO conversations (id, kind, agency_id, created_by)
           VALUES ($1, 'group', $2, $3)""", group, agency, posters[0][0])
    for official, _ in [*posters, *recipients]:
        await db.pool.execute(
            """INSERT INTO conversation_members (conversation_id, official_id, admin,
               joined_seq) VALUES ($1, $2, false, 1)""", group, official)
    committer = SendCommitter(db, 4, timedelta(days=1), _nothing,
                              prepare=BothLanes(), lanes=LANES)
    committer.start()
    try:
        futures = []
        for i in range(30):
            for n, (official, device) in enumerate(posters):
                futures.append(committer.submit(NewMessage(
                    uuid.uuid4(), device, official, None, f"g{n}-{i}", datetime.now(UTC),
                    [], kind="group", conversation_id=group, body=b"sender-key ct",
                    conversation_seq=0)))
            for n, sender in enumerate(senders):  # every recipient, in both orders
                for r, recipient in enumerate(recipients[:: 1 if (i + n) % 2 else -1]):
                    futures.append(committer.submit(_send(
                        sender, recipient[0], [recipient[1]], f"p{n}-{r}-{i}")))
        results = await asyncio.gather(*futures, return_exceptions=True)
        assert all(isinstance(r, StoredMessage) and not r.duplicate for r in results)
        for _, device in recipients:  # 60 group posts and 60 pairwise sends each
            positions = [p for p, _, _ in await _inbox(db, device)]
            assert positions == list(range(1, 121))
    finally:
        await committer.stop()


async def test_a_stream_pushes_each_envelope_once_in_order_when_lanes_hand_over_out_of_order(
    db: Database,
) -> None:
    inbox = Inbox(db)
    inbox.start()
    try:
        agency = await _agency(db)
        senders = [await _official(db, agency, lane) for lane in range(LANES)]
        recipient = await _official(db, agency)
        handed: dict[int, asyncio.Event] = {}

        async def after_commit(batch: list[NewMessage]) -> None:
            # The batch that took the lower position of a round hands its row
            # over only after the other lane's: the stream is offered 2 before 1.
            [position] = [p for m in batch for d, p, _ in m.placed if d == recipient[1]]
            if position % 2:
                await asyncio.wait_for(handed.setdefault(position + 1, asyncio.Event()).wait(),
                                       10)
            inbox.hand_over(batch)
            handed.setdefault(position, asyncio.Event()).set()

        pushed: list[Deliver | QueueEmpty] = []

        async def push(frames: list[Deliver | QueueEmpty]) -> None:
            pushed.extend(frames)

        stream = DeliveryStream(inbox, recipient[1], recipient[0], push, window=100)
        task = asyncio.create_task(stream.run())
        await eventually(lambda: pushed == [QueueEmpty()])
        committer = SendCommitter(db, 8, timedelta(days=1), after_commit,
                                  prepare=messaging.check_batch, lanes=LANES)
        committer.start()
        try:
            sent = []
            for i in range(15):  # a round: one send per lane, committed concurrently
                round_ = [_send(s, recipient[0], [recipient[1]], f"{n}-{i}")
                          for n, s in enumerate(senders)]
                await asyncio.gather(*(committer.submit(m) for m in round_))
                sent += round_
            await eventually(lambda: len(pushed) == 1 + len(sent))
            delivered = [f for f in pushed if isinstance(f, Deliver)]
            assert [d.position for d in delivered] == list(range(1, 31))
            assert sorted(d.message_id for d in delivered) == sorted(m.message_id for m in sent)
            # Every batch was handed over. A lane's wake-up runs after its commit has
            # answered (2ccd88c), and the stream may read the last rows from the inbox
            # before the held-back wake-up resumes: so wait for it, as the senders don't.
            await eventually(lambda: len(handed) == 30)
        finally:
            await committer.stop()
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
    finally:
        await inbox.stop()


async def test_stop_commits_what_both_lanes_have_queued(db: Database) -> None:
    agency = await _agency(db)
    senders = [await _official(db, agency, lane) for lane in range(LANES)]
    recipient = await _official(db, agency)
    committer = SendCommitter(db, 4, timedelta(days=1), _nothing,
                              prepare=messaging.check_batch, lanes=LANES)
    committer.start()
    futures = [committer.submit(_send(s, recipient[0], [recipient[1]], f"{n}-{i}"))
               for i in range(20) for n, s in enumerate(senders)]
    await committer.stop()
    assert all(f.done() and isinstance(f.result(), StoredMessage) for f in futures)
    assert await db.pool.fetchval("SELECT count(*) FROM inbox") == 40
    assert committer.committed == 40


async def test_a_lane_commits_its_next_batch_while_the_last_wakes_its_recipients(
    db: Database,
) -> None:
    agency = await _agency(db)
    sender = await _official(db, agency, 0)
    recipient = await _official(db, agency)
    release = asyncio.Event()
    woken: list[list[str]] = []

    async def after_commit(batch: list[NewMessage]) -> None:
        if not woken:  # the first wake-up holds until the next batch has committed
            await asyncio.wait_for(release.wait(), 10)
        woken.append([m.client_message_id for m in batch])

    committer = SendCommitter(db, 4, timedelta(days=1), after_commit,
                              prepare=messaging.check_batch, lanes=LANES)
    committer.start()
    try:
        first = await committer.submit(_send(sender, recipient[0], [recipient[1]], "a"))
        second = await committer.submit(_send(sender, recipient[0], [recipient[1]], "b"))
        assert isinstance(first, StoredMessage) and isinstance(second, StoredMessage)
        assert woken == []  # "b" committed with "a"'s wake-up still running
        third = committer.submit(_send(sender, recipient[0], [recipient[1]], "c"))
        await third
        release.set()
    finally:
        await committer.stop()  # waits for the wake-ups
    assert woken == [["a"], ["b"], ["c"]]  # in commit order


async def test_a_batch_is_handed_over_as_it_commits_before_the_lane_takes_the_next(
    db: Database,
) -> None:
    """What ``after_commit`` does before it returns (the node's streams take the
    rows) runs as the batch commits: before its senders are answered and before
    the lane checks its next batch. The awaitable it returns runs after, in order."""
    agency = await _agency(db)
    sender = await _official(db, agency, 0)
    recipient = await _official(db, agency)
    events: list[str] = []
    queued = asyncio.Event()

    async def prepare(
        conn: Executor, sends: list[NewMessage], known: Mapping[uuid.UUID, SendStanding]
    ) -> Checked:
        events.append("check " + ",".join(m.client_message_id for m in sends))
        await asyncio.wait_for(queued.wait(), 10)  # "b" queues while "a" is checked
        return await messaging.check_batch(conn, sends, known)

    def after_commit(batch: list[NewMessage]) -> "asyncio.Future[None]":
        ids = ",".join(m.client_message_id for m in batch)
        events.append("hand over " + ids)
        signalled: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        signalled.add_done_callback(lambda _: events.append("signal " + ids))
        asyncio.get_running_loop().call_soon(signalled.set_result, None)
        return signalled

    committer = SendCommitter(db, 4, timedelta(days=1), after_commit, prepare=prepare)
    committer.start()
    try:
        first = committer.submit(_send(sender, recipient[0], [recipient[1]], "a"))
        first.add_done_callback(lambda _: events.append("answer a"))
        await eventually(lambda: events == ["check a"])
        second = committer.submit(_send(sender, recipient[0], [recipient[1]], "b"))
        queued.set()
        assert isinstance(await first, StoredMessage)
        assert isinstance(await second, StoredMessage)
    finally:
        await committer.stop()
    assert events[:3] == ["check a", "hand over a", "check b"]
    assert events.index("hand over a") < events.index("answer a")
    assert events.index("signal a") < events.index("signal b")
    assert [e for e in events if e.startswith("hand over")] == ["hand over a", "hand over b"]


async def test_a_batch_with_nothing_left_to_signal_runs_no_task(db: Database) -> None:
    """``after_commit`` returning None (a node alone whose streams took every
    row) leaves the committer nothing to run: no task. A batch with signals
    still has them run."""
    agency = await _agency(db)
    sender = await _official(db, agency, 0)
    recipient = await _official(db, agency)
    signalled: list[str] = []

    async def signal(ids: str) -> None:
        signalled.append(ids)

    def after_commit(batch: list[NewMessage]) -> "Awaitable[None] | None":
        ids = ",".join(m.client_message_id for m in batch)
        return None if ids == "a" else signal(ids)

    committer = SendCommitter(db, 4, timedelta(days=1), after_commit, prepare=messaging.check_batch)
    committer.start()
    try:
        assert isinstance(
            await committer.submit(_send(sender, recipient[0], [recipient[1]], "a")), StoredMessage
        )
        assert committer._handing == [None]  # no task for "a"
        assert isinstance(
            await committer.submit(_send(sender, recipient[0], [recipient[1]], "b")), StoredMessage
        )
        await eventually(lambda: signalled == ["b"])
        assert committer._handing[0] is not None
    finally:
        await committer.stop()
