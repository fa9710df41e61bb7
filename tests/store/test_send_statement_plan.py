"""The pairwise send statement: what it inserted is picked from the batch by a join
for a few sends and by one hash table for more, never by comparing every row
with every other in a large batch; both pick exactly the sends inserted."""

import asyncio
import re
import uuid
from datetime import UTC, datetime, timedelta

import asyncpg
import pytest

from gchat.audit.log import AuditLog, accepted_events
from gchat.messaging import service as messaging
from gchat.store import messages
from gchat.store.database import PINNED_SETTINGS, Database
from gchat.store.messages import NewMessage, StoredMessage
from loadtests.send_cost import seed_pairs


async def _plan(database_url: str, statement: str) -> str:
    conn = await asyncpg.connect(database_url, server_settings=PINNED_SETTINGS)
    try:
        # The generic plan (``force_generic_plan``): the one a pinned
        # connection caches and runs for every batch, whatever its size.
        rows = await conn.fetch(
            "EXPLAIN " + statement,
            *([[]] * 4), "", *([[]] * 4), None, None, b"", [], [], [], "", [], [],
        )
    finally:
        await conn.close()
    return "\n".join(row[0] for row in rows)


def _joins_on_inserted(plan: str) -> list[str]:
    """The plan's join filters that compare a row with the inserted messages
    (``ins``, or their places in the batch, ``kept``)."""
    inserted = re.compile(r"\b(ins|kept)(_\d+)?\.")
    return [
        line.strip()
        for line in plan.splitlines()
        if "Join Filter" in line and inserted.search(line)
    ]


async def test_a_large_batch_picks_what_it_inserted_by_hashing(database_url: str) -> None:
    plan = await _plan(database_url, messages._STORE_AND_ENQUEUE)
    # The messages inserted, then the envelopes (for the inbox) and the
    # "message.accepted" events of those, each probe a hash ...
    assert plan.count("hashed SubPlan") == 3, plan
    # ... and no join compares the batch's rows with the inserted messages
    # one by one: with hash joins off, such a join is a nested loop, B x B
    # comparisons for a batch of B sends.
    assert _joins_on_inserted(plan) == [], plan


async def test_a_few_sends_are_picked_by_a_join(database_url: str) -> None:
    # Nothing to set up per execution: the cheapest for a lone send.
    plan = await _plan(database_url, messages._STORE_AND_ENQUEUE_FEW)
    assert "hashed SubPlan" not in plan, plan
    assert len(_joins_on_inserted(plan)) == 3, plan


def _send(pair: list[uuid.UUID], client_id: str) -> NewMessage:
    sender_official, sender, recipient_official, recipient = pair
    return NewMessage(
        messages.MessageIds().new(),
        sender,
        sender_official,
        recipient_official,
        client_id,
        datetime.now(UTC),
        [(recipient, f"to {client_id}".encode())],
    )


async def _store(db: Database, batch: list[NewMessage]) -> tuple[list[StoredMessage], list[bytes]]:
    """``batch`` checked and stored as the committer does (rechecked standings);
    the stored results, and the leaf hashes of the events encoded for it."""
    audit = AuditLog()
    async with db.pinned.acquire() as conn:
        checked = await messaging.check_batch(conn, batch)
        assert checked.verdicts == [None] * len(batch)
        accepted = await audit.encode(conn, accepted_events(batch), agencies=checked.agencies)
        assert accepted is not None
        stored = await messages.store_batch(
            conn, batch, datetime.now(UTC) + timedelta(days=1), accepted, checked.standings
        )
    return stored, accepted.hashes


@pytest.mark.parametrize("fresh", [2, 6])
async def test_only_the_sends_inserted_get_envelopes_and_events(
    database_url: str, fresh: int
) -> None:
    # 2 fresh sends and 2 repeats take the join, 6 and 2 the hash.
    assert fresh + 2 <= messages._FEW or fresh + 1 > messages._FEW
    db = await Database.connect(database_url, min_size=1, max_size=2)
    try:
        pairs = await seed_pairs(db, fresh + 1)
        earlier = _send(pairs[0], "earlier")
        await _store(db, [earlier])
        new = [_send(pair, f"c{i}") for i, pair in enumerate(pairs[1:])]
        retry = _send(pairs[0], "earlier")  # stored by an earlier batch
        again = _send(pairs[1], "c0")  # the same as this batch's first
        stored, hashes = await _store(db, [*new, retry, again])

        assert [(s.message_id, s.duplicate) for s in stored] == [
            *[(m.message_id, False) for m in new],
            (earlier.message_id, True),
            (new[0].message_id, True),
        ]
        inbox = await db.pool.fetch("SELECT device_id, message_id, ciphertext FROM inbox")
        assert {tuple(row) for row in inbox} == {
            (m.envelopes[0][0], m.message_id, m.envelopes[0][1]) for m in [earlier, *new]
        }
        # Each time as given, to the microsecond (it travels as a float8).
        times = await db.pool.fetch("SELECT id, sent_at FROM messages")
        assert dict(times) == {m.message_id: m.sent_at for m in [earlier, *new]}
        # One "message.accepted" event for each send inserted, in batch order.
        events = await db.pool.fetch("SELECT leaf_hash FROM audit_pending ORDER BY id")
        assert [row[0] for row in events][1:] == hashes[:fresh]
        # One backlog row a batch (migration 0021); a batch of retries writes none.
        await _store(db, [_send(pairs[0], "earlier")])
        assert await db.pool.fetchval("SELECT count(*) FROM audit_backlog") == 2
    finally:
        await db.close()


async def test_a_client_id_with_a_comma_is_refused_not_split(database_url: str) -> None:
    # The statement takes the batch's client ids as one comma-separated
    # text; the protocol allows no comma in one, and the store refuses one
    # rather than write a batch whose ids were split in the wrong places.
    db = await Database.connect(database_url, min_size=1, max_size=2)
    try:
        pairs = await seed_pairs(db, 2)
        batch = [_send(pairs[0], "a,b"), _send(pairs[1], "c")]
        with pytest.raises(ValueError, match="comma"):
            await _store(db, batch)
        assert await db.pool.fetchval("SELECT count(*) FROM messages") == 0
        assert await db.pool.fetchval("SELECT count(*) FROM audit_pending") == 0
    finally:
        await db.close()


async def test_a_batch_of_more_events_than_a_backlog_row_holds_writes_rows_in_order(
    database_url: str,
) -> None:
    """300 sends, every one inserted: their "message.accepted" events go in
    as backlog rows of 256 and 44 (migration 0021), in the batch's order."""
    db = await Database.connect(database_url, min_size=1, max_size=2)
    try:
        pairs = await seed_pairs(db, 3)
        batch = [_send(pairs[i % 3], f"c{i}") for i in range(300)]
        _, hashes = await _store(db, batch)
        sizes = await db.pool.fetch(
            "SELECT cardinality(entries) FROM audit_backlog ORDER BY xid, id")
        assert [row[0] for row in sizes] == [256, 44]
        events = await db.pool.fetch("SELECT leaf_hash FROM audit_pending ORDER BY xid, id")
        assert [bytes(row[0]) for row in events] == hashes
    finally:
        await db.close()


async def test_a_send_racing_one_of_the_same_client_id_is_answered_as_that_one(
    database_url: str,
) -> None:
    """The statement looks stored client ids up and inserts the rest as plain
    rows; a send of the same client id by a transaction still in flight is not
    seen by the look-up. Once that one commits, the batch is answered as a
    retry of it for that send, and the others are stored, each with its
    envelope and "message.accepted" event, as ``ON CONFLICT`` would."""
    db = await Database.connect(database_url, min_size=1, max_size=2)
    other = await asyncpg.connect(database_url)
    try:
        pairs = await seed_pairs(db, 6)
        racing = _send(pairs[0], "raced")
        batch = [_send(pairs[0], "raced"), *(_send(p, f"c{i}") for i, p in enumerate(pairs))]
        await other.execute("BEGIN")
        await other.execute(
            """INSERT INTO messages (id, sender_device, sender_official, recipient_official,
                                     client_message_id, sent_at)
               VALUES ($1, $2, $3, $4, $5, $6)""",
            racing.message_id, racing.sender_device, racing.sender_official,
            racing.recipient_official, racing.client_message_id, racing.sent_at,
        )
        storing = asyncio.ensure_future(_store(db, batch))
        # The batch's insert waits on the unique index for the other transaction.
        for _ in range(500):
            if await db.pool.fetchval(
                "SELECT count(*) FROM pg_locks WHERE NOT granted AND locktype = 'transactionid'"
            ):
                break
            await asyncio.sleep(0.01)
        else:
            raise AssertionError("the batch did not wait for the racing send")
        assert not storing.done()
        await other.execute("COMMIT")
        stored, hashes = await storing

        assert [(s.message_id, s.duplicate) for s in stored] == [
            (racing.message_id, True),
            *[(m.message_id, False) for m in batch[1:]],
        ]
        inbox = await db.pool.fetch("SELECT message_id FROM inbox")
        assert sorted(row[0] for row in inbox) == sorted(m.message_id for m in batch[1:])
        events = await db.pool.fetch("SELECT leaf_hash FROM audit_pending ORDER BY id")
        assert [bytes(row[0]) for row in events] == hashes[1:]
    finally:
        await other.close()
        await db.close()


async def test_a_batch_looks_each_client_id_up_on_a_plan_cached_while_messages_was_empty(
    database_url: str,
) -> None:
    """A pinned connection keeps the generic plan it made on the first batch,
    when ``messages`` was empty; with 5,000 messages kept, a batch of 8
    still reads the unique index of client ids once per send, not in full."""
    db = await Database.connect(database_url, min_size=1, max_size=1)
    try:
        pairs = await seed_pairs(db, 8)
        for n in range(7):  # past the five executions, on the cached plans
            await _store(db, [_send(pair, f"early{n}.{i}") for i, pair in enumerate(pairs)])
        sender_official, sender, recipient_official, _ = pairs[0]
        await db.pool.execute(
            """INSERT INTO messages (id, sender_device, sender_official, recipient_official,
                                     client_message_id, sent_at)
               SELECT gen_random_uuid(), $1, $2, $3, 'grown' || g, now()
               FROM generate_series(1, 5000) g""",
            sender, sender_official, recipient_official,
        )
        read = """SELECT idx_tup_read FROM pg_stat_user_indexes
                  WHERE indexrelname = 'messages_sender_device_client_message_id_key'"""

        async def tuples_read() -> int:
            for pool in (db.pool, db.pinned):
                await pool.execute("SELECT pg_stat_force_next_flush()")
            async with db.pool.acquire() as conn:
                await conn.execute("SELECT pg_stat_clear_snapshot()")
                return int(await conn.fetchval(read))

        before = await tuples_read()
        stored, _ = await _store(db, [_send(pair, f"late{i}") for i, pair in enumerate(pairs)])
        assert not any(s.duplicate for s in stored)
        assert await tuples_read() - before <= 2 * len(pairs)
    finally:
        await db.close()
