"""Per-device delivery: push the inbox in order, bounded by unacknowledged envelopes.

One ``DeliveryStream`` runs per authenticated connection (Signal-Server's
per-device queue). It reads the inbox after the last pushed position,
pushes at most ``window`` envelopes that are not yet acknowledged, says
``queue_empty`` once it has caught up with the backlog, and sleeps until a
wake-up (new envelopes) or an ack (room in the window). An ack deletes the
envelopes, which is the only way they leave the inbox before they expire.

The database work goes through the node's ``Inbox``: the reads of every
device a commit batch woke become one statement, and so do the deletes of
every ack that arrived meanwhile (with their "message.delivered" audit
events, in the same transaction). An ack frees window room at once; its
delete follows in the next batch, and a connection closing waits for its
acks' deletes.
"""

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any
from uuid import UUID

from gchat.audit.log import AuditEvent, AuditLog
from gchat.runtime.batcher import Batcher
from gchat.runtime.metrics import NodeMetrics
from gchat.store import messages
from gchat.store.database import Database, Executor
from gchat.store.messages import InboxEntry
from protocol.frames import Deliver, QueueEmpty, wire_time

log = logging.getLogger("gchat.messaging.delivery")

Push = Callable[[Deliver | QueueEmpty], Awaitable[None]]

#: Most devices read, or acks deleted, in one statement.
_MAX_BATCH = 512
#: Ack deletes one connection may have queued before it waits for one.
_MAX_PENDING_ACKS = 4


@dataclass(frozen=True)
class _Read:
    device_id: UUID
    after: int
    limit: int


@dataclass(frozen=True)
class _Ack:
    device_id: UUID
    official_id: UUID
    positions: list[int]


class Inbox:
    """The node's batched inbox reads and ack deletes."""

    def __init__(self, db: Database, audit: AuditLog | None = None) -> None:
        self._db = db
        self._audit = audit if audit is not None and audit.enabled else None
        self._reads: Batcher[_Read, list[InboxEntry]] = Batcher(
            "inbox-read", self._read, _MAX_BATCH
        )
        self._acks: Batcher[_Ack, int] = Batcher("inbox-ack", self._delete, _MAX_BATCH)

    def start(self) -> None:
        self._reads.start()
        self._acks.start()

    async def stop(self) -> None:
        await self._acks.stop()
        await self._reads.stop()

    def read(self, device_id: UUID, after: int, limit: int) -> "asyncio.Future[list[InboxEntry]]":
        return self._reads.submit(_Read(device_id, after, limit))

    def ack(
        self, device_id: UUID, official_id: UUID, positions: list[int]
    ) -> "asyncio.Future[int]":
        return self._acks.submit(_Ack(device_id, official_id, positions))

    async def _read(self, reads: list[_Read]) -> list[list[InboxEntry]]:
        return await messages.fetch_inboxes(
            self._db.pool, [(r.device_id, r.after, r.limit) for r in reads]
        )

    async def _delete(self, acks: list[_Ack]) -> list[int]:
        officials = {ack.device_id: ack.official_id for ack in acks}

        async def record(conn: Executor, rows: list[Any]) -> None:
            assert self._audit is not None
            await self._audit.record(conn, *(_delivered(row, officials) for row in rows))

        rows = await messages.delete_acked_many(
            self._db.pool,
            [(ack.device_id, position) for ack in acks for position in ack.positions],
            record if self._audit is not None else None,
        )
        deleted: dict[UUID, int] = {}
        for row in rows:
            deleted[row["device_id"]] = deleted.get(row["device_id"], 0) + 1
        return [deleted.pop(ack.device_id, 0) for ack in acks]


def _delivered(row: Any, officials: dict[UUID, UUID]) -> AuditEvent:
    """The "message.delivered" event for one deleted inbox row."""
    return AuditEvent(
        "message.delivered",
        actor_official=officials.get(row["device_id"]),
        actor_device=row["device_id"],
        details={
            "message_id": row["message_id"],
            "position": row["position"],
            "sender_official": row["sender_official"],
            "sender_device": row["sender_device"],
        },
    )


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
    ) -> None:
        self._inbox = inbox
        self.device_id = device_id
        self._official_id = official_id
        self._push = push
        self._window = window
        self._metrics = metrics
        self._unacked: set[int] = set()
        self._pending_acks: list[asyncio.Future[int]] = []
        self._last_pushed = 0
        self._caught_up = False
        self._wake = asyncio.Event()
        self._wake.set()

    def wake(self) -> None:
        """New envelopes may be waiting (called from broker signals)."""
        self._wake.set()

    async def ack(self, positions: list[int]) -> None:
        """Free window room now; the envelopes are deleted in the next ack batch.

        Only positions this connection pushed and has not yet seen acked
        count, so a client cannot queue deletes for arbitrary positions; and
        a connection with ``_MAX_PENDING_ACKS`` deletes queued waits (stops
        reading) until one is done, so no client can grow the node's queue.
        """
        positions = [p for p in dict.fromkeys(positions) if p in self._unacked]
        if not positions:
            return
        self._unacked.difference_update(positions)
        self._pending_acks = [f for f in self._pending_acks if not f.done()]
        if len(self._pending_acks) >= _MAX_PENDING_ACKS:
            await asyncio.wait(self._pending_acks, return_when=asyncio.FIRST_COMPLETED)
        future = self._inbox.ack(self.device_id, self._official_id, positions)
        future.add_done_callback(_log_failure)
        self._pending_acks.append(future)
        if self._metrics is not None:
            self._metrics.acks.inc(len(positions))
        self._wake.set()

    async def flush_acks(self) -> None:
        """Wait until every ack received so far is stored (or has failed)."""
        await asyncio.gather(*self._pending_acks, return_exceptions=True)
        self._pending_acks.clear()

    async def run(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            room = self._window - len(self._unacked)
            if room <= 0:
                continue
            entries = await self._inbox.read(self.device_id, self._last_pushed, room)
            for entry in entries:
                self._unacked.add(entry.position)
                self._last_pushed = entry.position
                await self._push(
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
                )
                if self._metrics is not None:
                    self._metrics.deliveries.inc()
            if len(entries) == room:
                self._wake.set()  # there may be more; the window decides
            elif not self._caught_up:
                self._caught_up = True
                await self._push(QueueEmpty())
