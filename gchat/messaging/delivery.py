"""Per-device delivery: push the inbox in order, bounded by unacknowledged envelopes.

One ``DeliveryStream`` runs per authenticated connection (Signal-Server's
per-device queue). It reads the inbox after the last pushed position,
pushes at most ``window`` envelopes that are not yet acknowledged, says
``queue_empty`` once it has caught up with the backlog, and sleeps until a
wake-up (new envelopes) or an ack (room in the window). An ack deletes the
envelopes, which is the only way they leave the inbox before they expire.

The database work goes through the node's ``Inbox``: the reads of every
device a commit batch woke become one statement, and so do the deletes of
every ack that arrived meanwhile, with their "message.delivered" audit
events (which that statement makes from the rows it deletes: no transaction
stays open across a turn of the loop). An ack frees window room at once; its
delete follows in the next batch, which waits for company (up to
``ack_linger``, or until ``ACK_BATCH_POSITIONS`` positions wait), and a
connection closing waits for its acks' deletes, hurrying them.

A commit on this node hands the rows it just wrote straight to the streams
of the devices connected here (``Inbox.hand_over``), so a live recipient is
pushed its envelope without the inbox being read back. A stream takes what
it is handed only when it continues exactly where the stream is (the next
position, the stream caught up, room in the window, no signal from
elsewhere waiting); otherwise it reads the inbox, as after any other
wake-up, so what is pushed is always the inbox in order. After an ack the
inbox is read again only if the last read filled the window.
"""

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from uuid import UUID

from gchat.audit.log import AuditLog
from gchat.runtime.batcher import Batcher
from gchat.runtime.metrics import NodeMetrics
from gchat.store import messages
from gchat.store.database import Database
from gchat.store.messages import InboxEntry, NewMessage
from protocol.frames import Deliver, QueueEmpty, wire_time

log = logging.getLogger("gchat.messaging.delivery")

#: Sends a turn's frames, in order (together: one write for many envelopes).
Push = Callable[[list[Deliver | QueueEmpty]], Awaitable[None]]
#: Writes frames at once if the socket takes them without waiting (False:
#: nothing written, ``Push`` them).
WriteNow = Callable[[list[Deliver]], bool]

#: Most devices read, or acks deleted, in one statement.
_MAX_BATCH = 512
#: How long an ack delete waits at most for others to share its transaction
#: (``ack_linger_seconds``). Nobody waits for it (the window room is freed at
#: the ack; a closing connection hurries it), and at low load a transaction
#: of four round trips and a durable commit is shared by the acks of a
#: quarter of a second instead of 50 ms (docs/PERFORMANCE.md, "lowload").
ACK_LINGER = 0.25
#: Acked positions that end the linger at once: at higher loads a batch goes
#: as soon as it is this large, so that no batch's delete and audit events
#: become a lump of work that holds up the sends around it.
ACK_BATCH_POSITIONS = 256
#: Ack deletes one connection may have queued before it waits for one.
_MAX_PENDING_ACKS = 4


@dataclass(frozen=True)
class _Read:
    device_id: UUID
    after: int
    limit: int


@dataclass
class PendingAck:
    """One connection's acked positions waiting for the next ack batch.

    Acks that arrive while it still waits join it (``join``), so a device
    acking each envelope costs one queued delete per batch, not one per ack.
    """

    device_id: UUID
    official_id: UUID
    positions: list[int]
    #: Set once its batch has begun: later acks queue a new one.
    taken: bool = False
    future: "asyncio.Future[int] | None" = None

    def join(self, positions: list[int]) -> bool:
        if self.taken:
            return False
        self.positions.extend(positions)
        return True


class Inbox:
    """The node's batched inbox reads and ack deletes."""

    def __init__(
        self,
        db: Database,
        audit: AuditLog | None = None,
        metrics: NodeMetrics | None = None,
        ack_linger: float = ACK_LINGER,
    ) -> None:
        self._db = db
        self._metrics = metrics
        self._audit = audit if audit is not None and audit.enabled else None
        self._reads: Batcher[_Read, list[InboxEntry]] = Batcher(
            "inbox-read", self._read, _MAX_BATCH
        )
        self._acks: Batcher[PendingAck, int] = Batcher(
            "inbox-ack", self._delete, _MAX_BATCH, linger=ack_linger
        )
        self._streams: dict[UUID, DeliveryStream] = {}
        #: Acked positions queued and not yet taken by a batch.
        self._waiting = 0

    def start(self) -> None:
        self._reads.start()
        self._acks.start()

    async def stop(self) -> None:
        await self._acks.stop()
        await self._reads.stop()

    def attach(self, stream: "DeliveryStream") -> None:
        """``stream`` is the device's live stream on this node (the newest wins)."""
        self._streams[stream.device_id] = stream

    def detach(self, stream: "DeliveryStream") -> None:
        if self._streams.get(stream.device_id) is stream:
            del self._streams[stream.device_id]

    def hand_over(self, batch: list[NewMessage]) -> tuple[set[UUID], set[UUID]]:
        """Give each committed inbox row to its device's stream on this node;
        returns the devices that were given theirs (their streams are woken)
        and the others with new rows (none here, or one to read them).

        Each row goes as the ``deliver`` frame it is pushed as, made here
        once (no ``InboxEntry`` in between: at capacity that was a
        microsecond per envelope), with its message's wire time taken once.
        A device's frames are in position order: its rows were placed in
        the batch's order (``messages.store_batch``).
        """
        streams = self._streams
        given: dict[UUID, list[Deliver]] = {}
        others: set[UUID] = set()
        for message in batch:
            sent_at: int | None = None
            for device, position, ciphertext in message.placed:
                if device not in streams:
                    others.add(device)
                    continue
                body = ciphertext if ciphertext is not None else message.body
                if body is None:  # not expected: the stream is woken to read it instead
                    others.add(device)
                    continue
                if sent_at is None:
                    sent_at = wire_time(message.sent_at)
                frame = Deliver(
                    position,
                    message.message_id,
                    message.sender_official,
                    message.sender_device,
                    sent_at,
                    body,
                    message.kind,  # type: ignore[arg-type]  # the schema's CHECK
                    message.conversation_id,
                )
                frames = given.get(device)
                if frames is None:
                    given[device] = [frame]
                else:
                    frames.append(frame)
        for device, frames in given.items():
            streams[device].offer(frames)
        handed = set(given)
        return handed, others - handed

    def hurry_acks(self) -> None:
        """A connection waits for its acks' deletes: the batch lingers no more."""
        self._acks.hurry()

    def read(self, device_id: UUID, after: int, limit: int) -> "asyncio.Future[list[InboxEntry]]":
        return self._reads.submit(_Read(device_id, after, limit))

    def ack(self, device_id: UUID, official_id: UUID, positions: list[int]) -> PendingAck:
        """Queue these positions' delete; the returned ack takes more until its batch begins."""
        pending = PendingAck(device_id, official_id, positions)
        pending.future = self._acks.submit(pending)
        self._queued(len(positions))
        return pending

    def join(self, pending: PendingAck, positions: list[int]) -> bool:
        """Add ``positions`` to ``pending`` if its batch has not begun."""
        if not pending.join(positions):
            return False
        self._queued(len(positions))
        return True

    def _queued(self, positions: int) -> None:
        self._waiting += positions
        if self._waiting >= ACK_BATCH_POSITIONS:
            self._acks.hurry()

    async def _read(self, reads: list[_Read]) -> list[list[InboxEntry]]:
        if self._metrics is not None:
            self._metrics.inbox_reads.inc(len(reads))
        return await messages.fetch_inboxes(
            self._db.pool, [(r.device_id, r.after, r.limit) for r in reads]
        )

    async def _delete(self, acks: list[PendingAck]) -> list[int]:
        for ack in acks:  # before any await: nothing joins them from here on
            ack.taken = True
            self._waiting -= len(ack.positions)
        return await messages.delete_acked_many(
            self._db.pinned,
            [(ack.device_id, ack.official_id, ack.positions) for ack in acks],
            datetime.now(UTC) if self._audit is not None else None,
        )


def as_deliveries(entries: list[InboxEntry]) -> list[Deliver]:
    """Inbox rows as the ``deliver`` frames that push them."""
    return [
        Deliver(
            position=entry.position,
            message_id=entry.message_id,
            sender_official=entry.sender_official,
            sender_device=entry.sender_device,
            sent_at=wire_time(entry.sent_at),
            ciphertext=entry.ciphertext,
            kind=entry.kind,  # type: ignore[arg-type]  # the schema's CHECK
            conversation_id=entry.conversation_id,
        )
        for entry in entries
    ]


def _log_failure(future: "asyncio.Future[int]") -> None:
    # The ack batcher already logged the outage once; the envelope is
    # delivered again later and the client drops it by message id.
    if not future.cancelled() and future.exception() is not None:
        log.debug("ack not stored (redelivered later): %s", future.exception())


class DeliveryStream:
    def __init__(
        self,
        inbox: Inbox,
        device_id: UUID,
        official_id: UUID,
        push: Push,
        window: int,
        metrics: NodeMetrics | None = None,
        write_now: WriteNow | None = None,
    ) -> None:
        self._inbox = inbox
        self.device_id = device_id
        self._official_id = official_id
        self._push = push
        self._write_now = write_now
        self._window = window
        self._metrics = metrics
        self._unacked: set[int] = set()
        self._pending_acks: list[asyncio.Future[int]] = []
        self._open_ack: PendingAck | None = None
        self._last_pushed = 0
        self._caught_up = False
        #: Rows committed on this node since the last turn (``offer``), as frames.
        self._offered: list[Deliver] = []
        #: The inbox may hold what this stream has not seen: a signal came,
        #: the last read filled the window, or offered rows did not fit.
        self._must_read = True
        self._wake = asyncio.Event()
        self._wake.set()
        #: The loop waits for a wake-up, with nothing of its own to do.
        self._idle = False

    def wake(self) -> None:
        """New envelopes may be waiting (called from broker signals)."""
        self._must_read = True
        self._wake.set()

    def offer(self, entries: list[Deliver]) -> None:
        """Rows just committed for this device on this node, in position order.

        When the stream is idle and they are exactly what a read would
        return now, they are written here, within the commit's hand-over
        (``write_now``): at low load a wake-up of the stream's task per
        envelope cost more than writing it. Otherwise its task takes them.
        """
        if self._idle and not self._wake.is_set() and self._write_now is not None:
            self._offered.extend(entries)
            taken = self._take_offered(self._window - len(self._unacked))
            if taken is not None:
                try:
                    written = self._write_now(taken)
                except Exception:  # the task's push meets it again, and handles it
                    written = False
                if written:
                    self._pushed(taken, handed_over=True)
                    return
                self._offered = taken  # the socket must drain first: the task waits
            self._wake.set()
            return
        self._offered.extend(entries)
        self._wake.set()

    def _take_offered(self, room: int) -> list[Deliver] | None:
        """The offered rows if they are exactly what a read would return now."""
        offered = self._offered
        self._offered = []
        first = self._last_pushed + 1
        if len(offered) == 1:  # one envelope per commit: the usual case, checked at once
            if offered[0].position < first:
                return None  # a read during its commit already returned it
            follows = offered[0].position == first
        else:
            # Rows a read during their commit already returned are done with.
            offered = [e for e in offered if e.position >= first]
            if not offered:
                return None
            follows = [e.position for e in offered] == list(range(first, first + len(offered)))
        if self._must_read or not self._caught_up or len(offered) > room or not follows:
            self._must_read = True  # read the inbox instead: it has them, in order
            return None
        return offered

    async def ack(self, positions: list[int]) -> None:
        """Free window room now; the envelopes are deleted in the next ack batch.

        Only positions this connection pushed and has not yet seen acked
        count, so a client cannot queue deletes for arbitrary positions; and
        a connection with ``_MAX_PENDING_ACKS`` deletes queued waits (stops
        reading) until one is done, so no client can grow the node's queue.
        Acks arriving while this connection's last delete still waits for
        its batch join it.
        """
        unacked = self._unacked
        if len(positions) == 1:  # a client acking each envelope as it comes
            if positions[0] not in unacked:
                return
            positions = [positions[0]]
            unacked.discard(positions[0])
        else:
            positions = [p for p in dict.fromkeys(positions) if p in unacked]
            if not positions:
                return
            unacked.difference_update(positions)
        if self._open_ack is None or not self._inbox.join(self._open_ack, positions):
            self._pending_acks = [f for f in self._pending_acks if not f.done()]
            if len(self._pending_acks) >= _MAX_PENDING_ACKS:
                await asyncio.wait(self._pending_acks, return_when=asyncio.FIRST_COMPLETED)
            self._open_ack = self._inbox.ack(self.device_id, self._official_id, positions)
            assert self._open_ack.future is not None
            self._open_ack.future.add_done_callback(_log_failure)
            self._pending_acks.append(self._open_ack.future)
        if self._metrics is not None:
            self._metrics.acks.inc(len(positions))
        if self._must_read:  # the window held the stream back: room now
            self._wake.set()

    async def flush_acks(self) -> None:
        """Wait until every ack received so far is stored (or has failed); their
        batch lingers no more."""
        if any(not f.done() for f in self._pending_acks):
            self._inbox.hurry_acks()
        await asyncio.gather(*self._pending_acks, return_exceptions=True)
        self._pending_acks.clear()

    async def run(self) -> None:
        self._inbox.attach(self)
        try:
            await self._run()
        finally:
            self._inbox.detach(self)

    async def _run(self) -> None:
        while True:
            self._idle = True
            await self._wake.wait()
            self._idle = False
            self._wake.clear()
            room = self._window - len(self._unacked)
            if room <= 0:
                if self._offered:  # read them once acks make room
                    self._offered.clear()
                    self._must_read = True
                continue
            deliveries = self._take_offered(room)
            handed_over = deliveries is not None
            if deliveries is None:
                if not self._must_read:
                    continue  # nothing new: e.g. offered rows already read
                self._must_read = False
                entries = await self._inbox.read(self.device_id, self._last_pushed, room)
                if len(entries) == room:
                    self._must_read = True  # there may be more; the window decides
                deliveries = as_deliveries(entries)
            frames: list[Deliver | QueueEmpty] = list(deliveries)
            self._pushed(deliveries, handed_over)
            if self._must_read:
                self._wake.set()
            elif not self._caught_up:
                self._caught_up = True
                frames.append(QueueEmpty())
            if frames:
                await self._push(frames)

    def _pushed(self, entries: list[Deliver], handed_over: bool) -> None:
        """``entries`` are on their way: unacknowledged, and where the stream is."""
        if not entries:
            return
        if len(entries) == 1:
            self._unacked.add(entries[0].position)
        else:
            self._unacked.update(entry.position for entry in entries)
        self._last_pushed = entries[-1].position
        if self._metrics is not None:
            self._metrics.deliveries.inc(len(entries))
            if handed_over:
                self._metrics.handed_over.inc(len(entries))
