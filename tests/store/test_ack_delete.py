"""An ack batch's delete: only the acking devices' rows, each audited with its own
agencies, in the one statement that deletes it.

The agencies (of the acking device's official and of the sender) go into
every "message.delivered" event's scope; the delete looks each up once per
distinct device and sender, so a batch mixing devices, senders and
agencies must still give every row its own pair. The events are made in
SQL: each must be what the node's encoder writes for that row.
"""

import uuid
from datetime import UTC, datetime, timedelta

import asyncpg

from gchat.audit.merkle import leaf_hash
from gchat.store import audit_codec as codec
from gchat.store import directory, messages, migrations
from gchat.store.audit import ROW_EVENTS
from gchat.store.messages import NewMessage

_AT = datetime(2026, 12, 5, 15, 4, 5, 678901, tzinfo=UTC)


async def _directory(pool: asyncpg.Pool, agencies: list[uuid.UUID]) -> list[
        tuple[uuid.UUID, uuid.UUID, uuid.UUID]]:
    """An official and device in each agency given."""
    made = []
    for i, agency in enumerate(agencies):
        official, device = uuid.uuid4(), uuid.uuid4()
        await directory.create_official(pool, official, agency, f"O{i}")
        await pool.execute(
            """INSERT INTO devices (id, official_id, identity_key, certificate, name, platform)
               VALUES ($1, $2, $3, '\\x00', 'd', 'p')""",
            device, official, bytes([i]) * 32,
        )
        made.append((official, device, agency))
    return made


async def _two_agencies(pool: asyncpg.Pool) -> tuple[uuid.UUID, uuid.UUID]:
    """The schema, and two agencies (their ids) in it."""
    async with pool.acquire() as conn:
        await migrations.migrate(conn)
    x, y = uuid.uuid4(), uuid.uuid4()
    await directory.create_agency(pool, x, "X", "Agency X")
    await directory.create_agency(pool, y, "Y", "Agency Y")
    return x, y


async def _store(pool: asyncpg.Pool, batch: list[NewMessage]) -> None:
    async with pool.acquire() as conn, conn.transaction():
        await messages.store_batch(conn, batch, datetime.now(UTC) + timedelta(days=1))


async def test_a_mixed_batch_is_audited_row_by_row_as_the_node_would_encode_it(
    database_url: str,
) -> None:
    pool = await asyncpg.create_pool(database_url, min_size=1, max_size=3)
    try:
        x, y = await _two_agencies(pool)
        people = await _directory(pool, [x, y, x, y])
        agency_of = {official: agency for official, _, agency in people}
        device_of = {official: device for official, device, _ in people}
        a, b, c, d = agency_of
        sends = [(a, b), (b, a), (c, b), (d, b), (a, c), (d, a), (b, c)]
        batch = [
            NewMessage(uuid.uuid4(), device_of[s], s, r, f"m{n}", datetime.now(UTC),
                       [(device_of[r], b"ciphertext %d" % n)])
            for n, (s, r) in enumerate(sends)
        ]
        await _store(pool, batch)
        rows = await pool.fetch("SELECT device_id, position, message_id FROM inbox")
        official_of = {device: official for official, device in device_of.items()}
        # Every row acked in one batch, a device's in two acks, plus a position
        # nobody holds.
        held: dict[uuid.UUID, list[int]] = {}
        for row in rows:
            held.setdefault(row["device_id"], []).append(row["position"])
        acks = [(device, official_of[device], positions) for device, positions in held.items()]
        first, *rest = acks[0][2]
        acks[0] = (acks[0][0], acks[0][1], [first])
        acks += [(acks[0][0], acks[0][1], [*rest, 999])]
        deleted = await messages.delete_acked_many(pool, acks, _AT)
        assert deleted == [len(positions) for *_, positions in acks[:-1]] + [len(rest)]
        assert await pool.fetchval("SELECT count(*) FROM inbox") == 0

        (backlog,) = await pool.fetch("SELECT created_at, leaf_hashes, entries FROM audit_backlog")
        assert backlog["created_at"] == _AT
        message_of = {m.message_id: m for m in batch}
        # The node's encoder, given each row's values and the officials' agencies.
        by_message = {}
        for entry, stored in codec.DeliveredCodec().encode(
            [(official_of[r["device_id"]], r["device_id"], r["message_id"], r["position"],
              message_of[r["message_id"]].sender_official,
              message_of[r["message_id"]].sender_device) for r in rows],
            agency_of, codec.time_text(_AT),
        ):
            by_message[entry] = (leaf_hash(entry), stored)
        hashes = bytes(backlog["leaf_hashes"])
        written = {}
        for k, stored in enumerate(backlog["entries"]):
            entry = codec.decode(bytes(stored), _AT)
            written[entry] = (hashes[32 * k : 32 * k + 32], bytes(stored))
        assert written == by_message and len(written) == len(rows)
    finally:
        await pool.close()


async def test_a_large_batch_is_audited_in_backlog_rows_of_row_events(database_url: str) -> None:
    """More rows than a backlog row holds: rows of ``ROW_EVENTS`` events each, in
    the scope of both officials' agencies; a batch that deletes nothing writes
    nothing."""
    pool = await asyncpg.create_pool(database_url, min_size=1, max_size=3)
    try:
        x, y = await _two_agencies(pool)
        (sender, sender_device, _), (recipient, device, _) = await _directory(pool, [x, y])
        count = ROW_EVENTS + 3
        await _store(pool, [
            NewMessage(uuid.uuid4(), sender_device, sender, recipient, f"m{n}",
                       datetime.now(UTC), [(device, b"c")]) for n in range(count)])
        positions = [r[0] for r in await pool.fetch("SELECT position FROM inbox")]
        assert await messages.delete_acked_many(
            pool, [(device, recipient, positions)], _AT) == [count]
        sizes = [r[0] for r in await pool.fetch(
            "SELECT cardinality(entries) FROM audit_backlog ORDER BY id")]
        assert sizes == [ROW_EVENTS, 3]
        entries = [bytes(e) for r in await pool.fetch(
            "SELECT entries FROM audit_backlog ORDER BY id") for e in r[0]]
        assert all(codec.parties(e) == (sorted([sender, recipient]), sorted([x, y]),
                                       sorted([device, sender_device])) for e in entries)
        assert await messages.delete_acked_many(
            pool, [(device, recipient, positions[:1])], _AT) == [0]
        assert await pool.fetchval("SELECT count(*) FROM audit_backlog") == 2
    finally:
        await pool.close()
