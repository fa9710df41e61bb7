"""Group commit: concurrent sends share transactions, each answered after commit."""

import asyncio
import uuid
from datetime import UTC, datetime, timedelta

import asyncpg

from gchat.messaging.committer import SendCommitter
from gchat.store import directory, migrations
from gchat.store.database import Database
from gchat.store.messages import NewMessage


async def migrated(database_url: str) -> Database:
    db = await Database.connect(database_url)
    async with db.pool.acquire() as conn:
        await migrations.migrate(conn)
    return db


async def seed(pool: asyncpg.Pool) -> tuple[uuid.UUID, uuid.UUID, list[uuid.UUID]]:
    agency, official = uuid.uuid4(), uuid.uuid4()
    await directory.create_agency(pool, agency, "A", "Agency")
    await directory.create_official(pool, official, agency, "Sender")
    devices = [uuid.uuid4() for _ in range(3)]
    for i, device in enumerate(devices):
        await pool.execute(
            """INSERT INTO devices (id, official_id, identity_key, certificate, name, platform)
               VALUES ($1, $2, $3, '\\x00', 'd', 'p')""",
            device, official, bytes([i]) * 32,
        )
    return official, devices[0], devices[1:]


async def test_concurrent_sends_commit_in_few_batches_with_contiguous_positions(
    database_url: str,
) -> None:
    db = await migrated(database_url)
    official, sender, recipients = await seed(db.pool)
    woken: list[set[uuid.UUID]] = []

    async def after(batch: list[NewMessage]) -> None:
        woken.append({d for m in batch for d, _ in m.envelopes})

    committer = SendCommitter(db, 64, timedelta(days=1), after)
    committer.start()
    try:
        sends = [
            NewMessage(uuid.uuid4(), sender, official, official, f"c{i}",
                       datetime.now(UTC), [(d, b"ct%d" % i) for d in recipients])
            for i in range(100)
        ]
        results = await asyncio.gather(*(committer.submit(m) for m in sends))
        assert [r.message_id for r in results] == [m.message_id for m in sends]
        assert committer.batches < 10  # far fewer transactions than sends
        assert woken and set().union(*woken) == set(recipients)
        for device in recipients:
            positions = [
                r["position"]
                for r in await db.pool.fetch(
                    "SELECT position FROM inbox WHERE device_id = $1 ORDER BY position", device
                )
            ]
            assert positions == list(range(1, 101))
    finally:
        await committer.stop()
        await db.close()


async def test_a_group_send_is_rechecked_under_the_conversations_lock(database_url: str) -> None:
    from gchat.messaging import service as messaging

    db = await Database.connect(database_url)
    try:
        async with db.pool.acquire() as conn:
            await migrations.migrate(conn)
        official, sender, _ = await seed(db.pool)
        agency = await db.pool.fetchval("SELECT agency_id FROM officials WHERE id = $1", official)
        group = uuid.uuid4()
        await db.pool.execute(
            """INSERT INTO conversations (id, kind, agency_id, created_by)
               VALUES ($1, 'group', $2, $3)""", group, agency, official)

        def post(cid: str) -> NewMessage:
            return NewMessage(uuid.uuid4(), sender, official, None, cid, datetime.now(UTC), [],
                              kind="group", conversation_id=group, body=b"sender-key ct",
                              conversation_seq=0)

        async def verdict(cid: str) -> object:
            async with db.transaction() as conn:
                return (await messaging.check_batch(conn, [post(cid)])).verdicts[0]

        refused = await verdict("not-yet-a-member")
        assert getattr(refused, "code", None) == "not_a_member"
        await db.pool.execute(
            """INSERT INTO conversation_members (conversation_id, official_id, admin, joined_seq)
               VALUES ($1, $2, false, 1)""", group, official)
        assert await verdict("member") is None
        await db.pool.execute(
            "UPDATE conversations SET announcement_only = true WHERE id = $1", group)
        refused = await verdict("announcement")
        assert getattr(refused, "code", None) == "announcement_only"
        await db.pool.execute(
            "UPDATE conversation_members SET admin = true WHERE official_id = $1", official)
        assert await verdict("admin") is None
    finally:
        await db.close()


async def test_placed_rows_are_the_inbox_rows_written_and_a_retry_places_none(
    database_url: str,
) -> None:
    from gchat.store import messages

    db = await migrated(database_url)
    official, sender, recipients = await seed(db.pool)
    expires = datetime.now(UTC) + timedelta(days=1)

    def send(cid: str, devices: list[uuid.UUID]) -> NewMessage:
        return NewMessage(uuid.uuid4(), sender, official, official, cid, datetime.now(UTC),
                          [(d, f"{cid}:{d}".encode()) for d in devices])

    try:
        first = send("a", recipients)
        async with db.transaction() as conn:
            await messages.store_batch(conn, [first], expires)
        gone = uuid.uuid4()  # a device that no longer exists gets nothing
        retry, fresh = send("a", recipients), send("b", [*recipients, gone])
        again = send("b", recipients)  # the same client id later in the same batch
        async with db.transaction() as conn:
            results = await messages.store_batch(conn, [retry, fresh, again], expires)
        assert [r.duplicate for r in results] == [True, False, True]
        assert results[0].message_id == first.message_id
        assert results[2].message_id == fresh.message_id
        assert retry.placed == [] and again.placed == []
        rows = await db.pool.fetch(
            "SELECT device_id, position, message_id, ciphertext FROM inbox"
        )
        written = {(r["device_id"], r["position"], r["ciphertext"]) for r in rows
                   if r["message_id"] == fresh.message_id}
        assert set(fresh.placed) == written
        assert {(d, p) for d, p, _ in first.placed} == {(d, 1) for d in recipients}
        assert {(d, p) for d, p, _ in fresh.placed} == {(d, 2) for d in recipients}
    finally:
        await db.close()
