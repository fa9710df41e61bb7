"""An ack's delete lingers for company (``ack_linger_seconds``), and a closing
connection does not wait the linger out (gchat.messaging.delivery)."""

import asyncio
from uuid import UUID, uuid4

import asyncpg

from gchat.messaging.delivery import ACK_BATCH_POSITIONS, Inbox
from gchat.store.database import Database
from tests.fixtures import WorldFactory
from tests.support import eventually, stays


async def _inbox(pool: asyncpg.Pool, device: UUID) -> int:
    return int(await pool.fetchval("SELECT count(*) FROM inbox WHERE device_id = $1", device))


async def test_an_acked_envelope_waits_for_its_batch_but_not_for_a_closing_connection(
    world_with: WorldFactory,
) -> None:
    async with world_with(ack_linger_seconds=30.0) as world:
        assert world.app.db is not None
        pool = world.app.db.pool
        alice = await world.official_with_device("alice")
        bob = await world.official_with_device("bob")
        assert bob.state.official_id is not None and bob.state.device_id is not None
        device = bob.state.device_id
        await alice.send_message(bob.state.official_id, b"hello", "c-1")
        got = [m.plaintext async for m in bob.messages(idle_timeout=1.0)]
        assert got == [b"hello"]  # handled, so acked
        # The delete lingers: the row is still there.
        await stays(lambda: _inbox(pool, device), during=0.3)
        await bob.close()
        # The closing connection waits for its acks' deletes, which go at once.
        async def deleted() -> bool:
            return await _inbox(pool, device) == 0

        await eventually(deleted, what="the acked envelope deleted")


async def test_a_lingering_ack_batch_goes_at_once_when_enough_positions_wait(
    database_url: str,
) -> None:
    """At higher loads a batch does not wait out the linger: ``ACK_BATCH_POSITIONS``
    acked positions end it (so no batch grows into a lump of work)."""
    db = await Database.connect(database_url, min_size=1, max_size=3)
    inbox = Inbox(db, ack_linger=3600)
    inbox.start()
    try:
        device, official = uuid4(), uuid4()  # no such envelopes: the delete finds none
        few = inbox.ack(device, official, [1, 2, 3])
        await stays(lambda: not few.future.done(), during=0.2)  # type: ignore[union-attr]
        assert inbox.join(few, list(range(4, ACK_BATCH_POSITIONS + 1)))
        async with asyncio.timeout(5):
            assert await few.future == 0  # type: ignore[misc]
    finally:
        await inbox.stop()
        await db.close()
