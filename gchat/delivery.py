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
from uuid import UUID

from gchat.store import messages
from gchat.store.database import Database
from protocol.frames import Deliver, QueueEmpty

log = logging.getLogger("gchat.delivery")

Push = Callable[[Deliver | QueueEmpty], Awaitable[None]]


def _ms(moment: object) -> int:
    return int(moment.timestamp() * 1000)  # type: ignore[attr-defined]


class DeliveryStream:
    def __init__(self, db: Database, device_id: UUID, push: Push, window: int) -> None:
        self._db = db
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
        deleted = await messages.delete_acked(self._db.pool, self.device_id, positions)
        self._unacked.difference_update(positions)
        self._wake.set()
        return deleted

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
                    )
                )
            if len(entries) == room:
                self._wake.set()  # there may be more; the window decides
            elif not self._caught_up:
                self._caught_up = True
                await self._push(QueueEmpty())
