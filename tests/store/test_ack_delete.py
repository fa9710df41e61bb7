"""An ack batch's delete: only the acking devices' rows, each with both agencies.

The agencies (of the acking device's official and of the sender) go into
every "message.delivered" event's scope; the delete looks each up once per
distinct device and sender, so a batch mixing devices, senders and
agencies must still give every row its own pair.
"""

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg

from gchat.store import directory, messages, migrations
from gchat.store.database import Executor
from gchat.store.messages import NewMessage


async def test_a_mixed_batch_gives_every_row_its_own_agencies(database_url: str) -> None:
    pool = await asyncpg.create_pool(database_url, min_size=1, max_size=3)
    try:
        async with pool.acquire() as conn:
            await migrations.migrate(conn)
        x, y = uuid.uuid4(), uuid.uuid4()
        await directory.create_agency(pool, x, "X", "Agency X")
        await directory.create_agency(pool, y, "Y", "Agency Y")
        agency_of, device_of = {}, {}
        for i, agency in enumerate((x, y, x, y)):
            official, device = uuid.uuid4(), uuid.uuid4()
            await directory.create_official(pool, official, agency, f"O{i}")
            await pool.execute(
                """INSERT INTO devices (id, official_id, identity_key, certificate, name, platform)
                   VALUES ($1, $2, $3, '\\x00', 'd', 'p')""",
                device, official, bytes([i]) * 32,
            )
            agency_of[official], device_of[official] = agency, device
        a, b, c, d = agency_of
        sends = [(a, b), (b, a), (c, b), (d, b), (a, c), (d, a), (b, c)]
        batch = [
            NewMessage(uuid.uuid4(), device_of[s], s, r, f"m{n}", datetime.now(UTC),
                       [(device_of[r], b"ciphertext %d" % n)])
            for n, (s, r) in enumerate(sends)
        ]
        async with pool.acquire() as conn, conn.transaction():
            await messages.store_batch(conn, batch, datetime.now(UTC) + timedelta(days=1))
        rows = await pool.fetch("SELECT device_id, position, message_id FROM inbox")
        sender_of = {m.message_id: m.sender_official for m in batch}
        official_of = {device: official for official, device in device_of.items()}
        # Every row acked in one batch, plus a position nobody holds.
        acks = [(r["device_id"], r["position"]) for r in rows] + [(device_of[a], 999)]
        seen: list[Any] = []

        async def record(conn: Executor, deleted: list[Any]) -> None:
            seen.extend(deleted)

        deleted = await messages.delete_acked_many(pool, acks, record)
        assert len(deleted) == len(rows) == len(sends) and seen == deleted
        for row in deleted:
            sender = sender_of[row["message_id"]]
            assert row["sender_official"] == sender
            assert row["sender_agency"] == agency_of[sender]
            assert row["device_agency"] == agency_of[official_of[row["device_id"]]]
        assert await pool.fetchval("SELECT count(*) FROM inbox") == 0
    finally:
        await pool.close()
