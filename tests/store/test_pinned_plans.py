"""Pinned transactions: the send and ack statements read no table in full, whatever
plans their connection cached while the tables were small and unanalysed."""

import uuid
from datetime import UTC, datetime, timedelta

import pytest

from gchat.audit.log import AuditLog, accepted_events
from gchat.messaging import service as messaging
from gchat.messaging.committer import SendCommitter
from gchat.store import messages, migrations
from gchat.store.database import Database
from gchat.store.messages import NewMessage, StoredMessage
from loadtests.send_cost import grow_directory, seed_pairs

#: Tables the current transaction has read in full so far.
_SCANNED = "SELECT relname FROM pg_stat_xact_user_tables WHERE seq_scan > 0 ORDER BY relname"


def _send(pair: list[uuid.UUID], n: int) -> NewMessage:
    sender_official, sender, recipient_official, recipient = pair
    return NewMessage(uuid.uuid4(), sender, sender_official, recipient_official, f"c{n}",
                      datetime.now(UTC), [(recipient, b"ciphertext %d" % n)])


async def _flush_counts(db: Database) -> None:
    """Report the connection's table counts so far (an idle backend keeps them
    pending, and pg_stat_xact_* shows pending counts, not only this transaction's)."""
    for pool in (db.pool, db.pinned):
        await pool.execute("SELECT pg_stat_force_next_flush()")


async def test_sends_and_acks_scan_no_table_on_plans_cached_while_tables_were_small(
    database_url: str,
) -> None:
    # One connection: every statement below shares its cached plans.
    db = await Database.connect(database_url, min_size=1, max_size=1)
    try:
        async with db.pool.acquire() as conn:
            await migrations.migrate(conn)
        pairs = await seed_pairs(db, 3)

        async def after_commit(batch: list[NewMessage]) -> None:
            return None

        audit = AuditLog()
        committer = SendCommitter(db, 64, timedelta(days=1), after_commit, audit=audit,
                                  prepare=messaging.check_batch)
        committer.start()
        try:
            # More than the five executions after which PostgreSQL may cache a
            # generic plan, on tables of a few rows.
            for n in range(8):
                result = await committer.submit(_send(pairs[n % 3], n))
                assert isinstance(result, StoredMessage) and not result.duplicate
        finally:
            await committer.stop()
        await grow_directory(database_url, 2000)

        # The committer's transaction, with what it read in full looked at before COMMIT.
        send = _send(pairs[0], 100)
        await _flush_counts(db)
        async with db.pinned_transaction() as conn:
            checked = await messaging.check_batch(conn, [send])
            assert checked.verdicts == [None]
            accepted = await audit.encode(conn, accepted_events([send]),
                                          agencies=checked.agencies)
            await messages.store_batch(conn, [send], datetime.now(UTC) + timedelta(days=1),
                                       accepted)
            assert [r[0] for r in await conn.fetch(_SCANNED)] == []

        # A write that re-reads the standings its check decided on (the lone
        # send's statement) looks each official up by id: a plan on the
        # agency's index would read every official grown into it.
        send = _send(pairs[1], 101)
        await _flush_counts(db)
        async with db.pinned_transaction() as conn:
            checked = await messaging.check_batch(conn, [send])
            accepted = await audit.encode(conn, accepted_events([send]),
                                          agencies=checked.agencies)
            await messages.store_batch(conn, [send], datetime.now(UTC) + timedelta(days=1),
                                       accepted, checked.standings)
            assert [r[0] for r in await conn.fetch(_SCANNED)] == []
            assert await conn.fetchval(
                "SELECT idx_tup_fetch FROM pg_stat_xact_user_tables WHERE relname = 'officials'"
            ) <= 8

        inbox = await db.pool.fetch(
            """SELECT i.device_id, d.official_id, i.position FROM inbox i
               JOIN devices d ON d.id = i.device_id ORDER BY i.position""")
        scanned: list[list[str]] = []
        for row in inbox:  # each ack its own delete, past the five executions too
            await _flush_counts(db)
            # Its statement in a transaction of the test's, to look at before COMMIT.
            async with db.pinned.acquire() as conn, conn.transaction():
                assert await messages.delete_acked_many(
                    conn, [(row["device_id"], row["official_id"], [row["position"]])],
                    datetime.now(UTC)) == [1]
                scanned.append([r[0] for r in await conn.fetch(_SCANNED)])
        assert scanned == [[]] * len(inbox)
        assert await db.pool.fetchval("SELECT count(*) FROM inbox") == 0
    finally:
        await db.close()


async def test_a_pinned_transaction_rolls_back_on_error_and_leaves_no_settings(
    database_url: str,
) -> None:
    db = await Database.connect(database_url, min_size=1, max_size=1)
    try:
        await db.pool.execute("CREATE TABLE pinned_probe (n int)")
        with pytest.raises(RuntimeError):
            async with db.pinned_transaction() as conn:
                await conn.execute("INSERT INTO pinned_probe VALUES (1)")
                assert await conn.fetchval("SHOW enable_seqscan") == "off"
                assert await conn.fetchval("SHOW plan_cache_mode") == "force_generic_plan"
                raise RuntimeError("refused")
        async with db.pinned_transaction() as conn:
            await conn.execute("INSERT INTO pinned_probe VALUES (2)")
        async with db.pool.acquire() as conn:  # the same, only, connection
            assert await conn.fetchval("SHOW enable_seqscan") == "on"
            assert await conn.fetchval("SHOW plan_cache_mode") == "auto"
            assert not conn.is_in_transaction()
            assert [r[0] for r in await conn.fetch("SELECT n FROM pinned_probe")] == [2]
    finally:
        await db.close()
