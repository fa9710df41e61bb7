"""The audit backlog as rows of a statement's events (migration 0021): ids, order,
whole rows per pass, and the move of a previous version's per-event backlog."""

import itertools
import json
from datetime import UTC, datetime

import asyncpg
import pytest

from gchat.audit.log import AuditEvent, AuditLog
from gchat.audit.merkle import MerkleAccumulator
from gchat.store import audit as store
from gchat.store import audit_codec as codec
from gchat.store import migrations
from gchat.store.database import Database
from tests.audit.conftest import LogBench, sequence


async def _log(pool: asyncpg.Pool) -> list[tuple[int, int, bytes]]:
    """(leaf index, event id, leaf hash) of every leaf, in order."""
    rows = await pool.fetch(
        "SELECT leaf_index, event_id, leaf_hash FROM audit_log ORDER BY leaf_index")
    return [(r[0], r[1], bytes(r[2])) for r in rows]


async def _pending(pool: asyncpg.Pool) -> list[tuple[int, int, datetime, bytes, bytes]]:
    """The backlog's events as the view shows them, in the order they get leaves."""
    rows = await pool.fetch(
        "SELECT id, xid::text::bigint, created_at, leaf_hash, entry FROM audit_pending"
        " ORDER BY xid, id")
    return [(r[0], r[1], r[2], bytes(r[3]), bytes(r[4])) for r in rows]


def _event(n: int) -> AuditEvent:
    return AuditEvent("test.event", details={"n": n})


async def test_a_statement_s_events_are_one_row_their_ids_unique_and_in_order(
    bench: LogBench,
) -> None:
    """One row per statement (per 256 events); a row's events have the ids
    after its own, which the sequence gives 256 apart; the log holds every
    event once, in (xid, id) order: a transaction's rows by id, each row's
    events in order. A statement of more events than a row holds writes
    rows in their order."""
    await bench.sequencer.stop()
    db = bench.db
    async with db.transaction() as conn:
        await bench.log.record(conn, *(_event(i) for i in range(3)))
        await bench.log.record(conn, _event(3))
        await bench.log.record(conn, *(_event(i) for i in range(4, 304)))
    async with db.transaction() as conn:
        await bench.log.record(conn, _event(304))
    rows = await db.pool.fetch(
        "SELECT id, cardinality(entries) AS n FROM audit_backlog ORDER BY xid, id")
    assert [r["n"] for r in rows] == [3, 1, 256, 44, 1]
    assert [b["id"] - a["id"] for a, b in itertools.pairwise(rows)] == [256] * 4
    pending = await _pending(db.pool)
    ids = [p[0] for p in pending]
    assert ids == [r["id"] + k for r in rows for k in range(r["n"])]
    assert await store.sequencing_backlog(db.pool) == (305, pytest.approx(0, abs=60))
    bench.sequencer.start()
    assert await bench.settle() == 305
    leaves = await _log(db.pool)
    assert [(i, e) for i, e, _ in leaves] == list(enumerate(ids))
    assert [h for _, _, h in leaves] == [p[3] for p in pending]
    # The auditors' reads see the same events, with their ids, in order.
    rows_read = await store.entries_range(db.pool, 0, 305, None)
    assert [r.id for r in rows_read] == ids
    assert [json.loads(r.entry)["details"]["n"] for r in rows_read] == list(range(305))


async def test_a_pass_takes_whole_rows_about_its_batch_of_events(database_url: str) -> None:
    """Rows larger and smaller than the sequencer's batch: every pass appends
    whole rows, as far as the first that reaches the batch, and the leaves
    come out contiguous, in order, each event once."""
    db = await Database.connect(database_url, min_size=1, max_size=3)
    log = AuditLog()
    try:
        sizes = [7, 1, 25, 3, 10, 10, 1]
        for k, size in enumerate(sizes):
            async with db.transaction() as conn:
                await log.record(conn, *(_event(100 * k + i) for i in range(size)))
        pending = await _pending(db.pool)
        async with db.pool.acquire() as conn:
            first = await store.unsequenced(conn, store.Horizon("0"), 10)
        # 7 and 1 events, then the row that reaches 10 (25 events)
        assert (len(first), first.complete) == (33, False)
        assert first.hashes == b"".join(p[3] for p in pending[:33])
        await sequence(db, sum(sizes), batch=10)
        leaves = await _log(db.pool)
        assert [(i, e, h) for i, e, h in leaves] == [
            (i, p[0], p[3]) for i, p in enumerate(pending)]
        tree = MerkleAccumulator()
        tree.extend([p[3] for p in pending])
        assert await db.pool.fetchval("SELECT count(*) FROM audit_backlog") == 0
        assert await store.log_size(db.pool) == tree.size == sum(sizes)
    finally:
        await db.close()


async def _backlog_pages(pool: asyncpg.Pool) -> int:
    """Bytes of the backlog's table and of its TOAST table (rows over 2 kB go there)."""
    return int(await pool.fetchval(
        "SELECT pg_relation_size(c.oid) + pg_relation_size(c.reltoastrelid)"
        " FROM pg_class c WHERE c.oid = 'audit_backlog'::regclass"))


async def test_vacuum_keeps_the_emptied_backlog_s_pages_for_the_next_rows(
    database_url: str,
) -> None:
    """Every pass empties the backlog and its VACUUM then finds it empty:
    truncating it would take an ACCESS EXCLUSIVE lock on the table every
    send and ack inserts into, and the next rows would extend it again
    (migration 0022). The pages stay, and the next rows reuse them."""
    db = await Database.connect(database_url, min_size=1, max_size=3)
    log = AuditLog()

    async def fill(first: int) -> None:
        for k in range(20):
            async with db.transaction() as conn:
                await log.record(conn, *(_event(first + 256 * k + i) for i in range(256)))

    try:
        await fill(0)
        await sequence(db, 20 * 256)
        assert await db.pool.fetchval("SELECT count(*) FROM audit_backlog") == 0
        size = await _backlog_pages(db.pool)
        assert size > 0
        await store.vacuum_backlog(db.pool)
        assert await _backlog_pages(db.pool) == size
        await fill(0)  # as many rows of the same size again: into the freed pages
        assert await _backlog_pages(db.pool) < 1.25 * size  # not twice the size
    finally:
        await db.close()


_OLD_INSERT = """INSERT INTO audit_pending (created_at, leaf_hash, entry)
                 SELECT $1, h, e FROM unnest($2::bytea[], $3::bytea[]) AS t(h, e)"""


def _stored(n: int, at: datetime) -> tuple[bytes, bytes]:
    entry = codec.encode(b'{"kind":"test.event","n":%d}' % n, "test.event", [], [], [], at)
    return codec.leaf_hash_of(entry, at), entry


async def test_0021_moves_the_per_event_backlog_and_a_previous_node_corrupts_nothing(
    empty_database_url: str,
) -> None:
    """Events waiting in 0020's per-event backlog keep their ids, transactions,
    times, leaf hashes and order; a node of the previous version still writes
    its events (through the view, in order, ids from the sequence), while its
    sequencer can neither read the backlog's rows nor append; a new sequencer
    then logs everything once, in (xid, id) order."""
    conn = await asyncpg.connect(empty_database_url)
    other = await asyncpg.connect(empty_database_url)
    try:
        await migrations.migrate(conn, before=21)
        at = datetime.now(UTC)
        # Two transactions committing out of id order: the first takes ids
        # first (and the smaller xid) but commits last.
        first, second = conn.transaction(), other.transaction()
        await first.start()
        one = [_stored(i, at) for i in range(2)]
        await conn.execute(_OLD_INSERT, at, [h for h, _ in one], [e for _, e in one])
        await second.start()
        two = [_stored(i, at) for i in range(2, 5)]
        await other.execute(_OLD_INSERT, at, [h for h, _ in two], [e for _, e in two])
        await second.commit()
        await first.commit()
        before = await conn.fetch(
            "SELECT id, xid::text::bigint, created_at, leaf_hash, entry FROM audit_pending"
            " ORDER BY xid, id")
        assert len(before) == 5
        await migrations.migrate(conn)
        db = await Database.connect(empty_database_url, min_size=1, max_size=3)
        try:
            assert await _pending(db.pool) == [
                (r[0], r[1], r[2], bytes(r[3]), bytes(r[4])) for r in before]
            # A previous version's node: its writes still land, one row an event.
            three = [_stored(i, at) for i in range(5, 8)]
            await other.execute(_OLD_INSERT, at, [h for h, _ in three], [e for _, e in three])
            # Its sequencer reads the rows' addresses and appends with the old
            # function: neither exists any more.
            with pytest.raises(asyncpg.UndefinedColumnError):
                await other.fetch("SELECT ctid FROM audit_pending")
            for old in ("audit_append_events", "audit_append_packs"):
                assert await other.fetchval(
                    "SELECT count(*) FROM pg_proc WHERE proname = $1", old) == 0
            # This version's writer, after it.
            async with db.transaction() as tx:
                await AuditLog().record(tx, *(_event(i) for i in range(8, 10)))
            pending = await _pending(db.pool)
            assert [p[3] for p in pending] == [h for h, _ in (*one, *two, *three)] + [
                p[3] for p in pending[8:]]
            assert len(pending) == 10 and len({p[0] for p in pending}) == 10
            await sequence(db, 10)
            leaves = await _log(db.pool)
            assert [(e, h) for _, e, h in leaves] == [(p[0], p[3]) for p in pending]
            assert await db.pool.fetchval("SELECT count(*) FROM audit_pending") == 0
            # The old view of the events still reads the log.
            assert await db.pool.fetchval("SELECT count(*) FROM audit_events") == 10
        finally:
            await db.close()
    finally:
        await other.close()
        await conn.close()
