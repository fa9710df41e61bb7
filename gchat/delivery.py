"""Per-device delivery: push the inbox in order, bounded by unacknowledged envelopes.

One ``DeliveryStream`` runs per authenticated connection (Signal-Server's
per-device queue). It reads the inbox from PostgreSQL after the last pushed
position, pushes at most ``window`` envelopes that are not yet acknowledged,
says ``queue_empty`` once it has caught up with the backlog, and sleeps
until a wake-up (new envelopes) or an ack (room in the window). An ack
deletes the envelopes, which is the only way they leave the inbox before
they expire.
"""

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any
from uuid import UUID

from gchat.audit import AuditEvent, AuditLog
from gchat.metrics import NodeMetrics
from gchat.store import messages
from gchat.store.database import Database, Executor
from protocol.frames import Deliver, QueueEmpty

log = logging.getLogger("gchat.delivery")

Push = Callable[[Deliver | QueueEmpty], Awaitable[None]]


def _ms(moment: object) -> int:
    return int(moment.timestamp() * 1000)  # type: ignore[attr-defined]


class DeliveryStream:
    def __init__(
        self,
        db: Database,
        device_id: UUID,
        push: Push,
        window: int,
        metrics: NodeMetrics | None = None,
        audit: AuditLog | None = None,
        official_id: UUID | None = None,
    ) -> None:
        self._db = db
        self._audit = audit
        self._official_id = official_id
        self._metrics = metrics
        self.device_id = device_id
        self._push = push
        self._window = window
        self._unacked: set[int] = set()
        self._last_pushed = 0
        self._caught_up = False
        self._wake = asyncio.Event()
        self._wake.set()

    def wake(self) -> None:
        """New envelopes may be waiting (called from broker signals)."""
        self._wake.set()

    async def ack(self, positions: list[int]) -> int:
        """Delete acknowledged envelopes of this device; frees window room."""
        record = self._record_delivered if self._audit and self._audit.enabled else None
        deleted = await messages.delete_acked(self._db.pool, self.device_id, positions, record)
        self._unacked.difference_update(positions)
        if self._metrics is not None:
            self._metrics.acks.inc(len(positions))
        self._wake.set()
        return deleted

    async def _record_delivered(self, conn: Executor, rows: list[Any]) -> None:
        """One "message.delivered" event per acked envelope, in the delete's transaction."""
        assert self._audit is not None
        await self._audit.record(
            conn,
            *(
                AuditEvent(
                    "message.delivered",
                    actor_official=self._official_id,
                    actor_device=self.device_id,
                    details={
                        "message_id": row["message_id"],
                        "position": row["position"],
                        "sender_official": row["sender_official"],
                        "sender_device": row["sender_device"],
                    },
                )
                for row in rows
            ),
        )

    async def run(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            room = self._window - len(self._unacked)
            if room <= 0:
                continue
            entries = await messages.fetch_inbox(
                self._db.pool, self.device_id, self._last_pushed, room
            )
            for entry in entries:
                self._unacked.add(entry.position)
                self._last_pushed = entry.position
                await self._push(
                    Deliver(
                        position=entry.position,
                        message_id=entry.message_id,
                        sender_official=entry.sender_official,
                        sender_device=entry.sender_device,
                        sent_at=_ms(entry.sent_at),
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
