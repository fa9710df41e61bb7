"""The sequencer's append of migration 0023 (``audit_append_backlog``): the same
packs and subtree roots as 0021's ``audit_append_batches`` on the same
backlog, byte for byte, and packs kept compressed in their rows."""

from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg

from gchat.audit.merkle import MerkleAccumulator
from gchat.store import audit as store
from gchat.store import audit_codec as codec
from gchat.store import migrations
from loadtests.audit_scale import generated_events

_WRITTEN = """SELECT (SELECT array_agg(row(first_leaf, at, min_at, min_id, max_id, hashes, events)
                                       ORDER BY first_leaf) FROM audit_packs),
                     (SELECT array_agg(row(height, idx, hash) ORDER BY height, idx)
                      FROM audit_subtrees),
                     (SELECT count(*) FROM audit_backlog)"""


async def _backlog(conn: asyncpg.Connection, now: datetime) -> int:
    """Rows as the send and ack statements write them, of 1 to 256 message
    events, in three transactions, the last of older times than the first
    (so a pack's ``at`` is the previous one's): how many events."""
    sizes = [[1, 3, 40], [256, 17], [5, 2, 33]]
    events = generated_events(1, sum(map(sum, sizes)), 1)
    taken = 0
    for t, rows in enumerate(sizes):
        at = now - timedelta(minutes=(10 if t == 2 else t))
        async with conn.transaction():
            for n in rows:
                entries = [e[3] for e in events[taken : taken + n]]
                await store.insert_events(conn, store.EncodedEvents(
                    at, [codec.leaf_hash_of(e, at) for e in entries], entries))
                taken += n
    return taken


async def _append(conn: asyncpg.Connection, function: str, *args: Any) -> Any:
    return await conn.fetchval(
        f"SELECT {function}($1, $2, $3::text::tid[], $4, $5, $6, $7, $8)", *args)  # noqa: S608


async def test_the_append_writes_the_bytes_0021_s_wrote(database_url: str) -> None:
    """One pass over a backlog of rows of 1 to 256 events from three
    transactions, from leaf 5 on, after a pack whose ``at`` is later than some
    of the events: 0021's function and 0023's, each from the same backlog (the
    first rolled back), write the same packs (leaf hashes, events, times, ids)
    and subtree roots, return the same newest ``at``, and empty the backlog."""
    now = datetime.now(UTC).replace(microsecond=123456)
    conn = await asyncpg.connect(database_url)
    try:
        await store.pin_index_plans(conn)  # as the sequencer's session is
        await store.ensure_partitions(conn, [now])
        events = await _backlog(conn, now)
        taken = await store.unsequenced(conn, store.Horizon("0"), 10_000)
        assert (len(taken), len(taken.ids), taken.complete) == (events, 8, True)
        tree = MerkleAccumulator()
        tree.extend([bytes([i]) * 32 for i in range(5)])
        subtrees = tree.extend(
            [taken.hashes[i : i + 32] for i in range(0, len(taken.hashes), 32)])
        assert subtrees  # the 256 leaves from 0 complete a subtree of height 8
        after = now - timedelta(minutes=1)
        args = (5, taken.ids, taken.rows, taken.hashes, after, [h for h, _, _ in subtrees],
                [i for _, i, _ in subtrees], [r for _, _, r in subtrees])
        written = {}
        for function in ("audit_append_batches", "audit_append_backlog"):
            transaction = conn.transaction()
            await transaction.start()
            at = await _append(conn, function, *args)
            written[function] = (at, *await conn.fetchrow(_WRITTEN))
            await transaction.rollback()
        old, new = written["audit_append_batches"], written["audit_append_backlog"]
        assert new == old
        at, packs, roots, left = new
        assert (len(packs), len(roots), left) == (-(-events // 16), len(subtrees), 0)
        assert at == now  # the newest pack's: the first transactions' time
        assert b"".join(bytes(p[5]) for p in packs) == taken.hashes
        assert [p[2] for p in packs][-1] == now - timedelta(minutes=10)  # min_at
        assert {p[1] for p in packs} == {now}  # never back to the older events' time
    finally:
        await conn.close()


_STORAGE = """SELECT c.relname, a.attname, a.attstorage::text
              FROM pg_partition_tree('audit_packs') AS t
              JOIN pg_class c ON c.oid = t.relid
              JOIN pg_attribute a ON a.attrelid = c.oid AND a.attname IN ('events', 'hashes')"""


async def test_leaf_hashes_are_never_compressed_and_packs_are_stored_as_before(
    empty_database_url: str,
) -> None:
    """Every partition, made before 0023 or after it, keeps a pack's leaf
    hashes as they are (PLAIN: PostgreSQL no longer tries pglz on 512 random
    bytes when a pack is over the TOAST target) and its events as before
    (compressed, then moved to the TOAST table when the row is still too
    long): the packs of one pass take the same bytes, in the heap and in
    TOAST, as 0021's append and storage gave them."""
    sizes = {}
    now = datetime(2026, 12, 5, 12, tzinfo=UTC)
    for version in (23, None):
        conn = await asyncpg.connect(empty_database_url)
        try:
            await conn.execute("DROP SCHEMA public CASCADE; CREATE SCHEMA public")
            await migrations.migrate(conn, before=23)
            existing = await conn.fetchval("SELECT audit_partition_for($1)", now)
            await migrations.migrate(conn, before=version)
            later = await conn.fetchval(
                "SELECT audit_partition_for($1::timestamptz + interval '3 months')", now)
            storage = {(r[0], r[1]): r[2] for r in await conn.fetch(_STORAGE)}
            hashes = "x" if version else "p"
            assert storage == {(table, column): kind
                               for table in ("audit_packs", existing, later)
                               for column, kind in (("events", "x"), ("hashes", hashes))}
            await store.pin_index_plans(conn)
            entries = [e[3] for e in generated_events(1, 160, 160, now)]
            await store.insert_events(conn, store.EncodedEvents(
                now, [codec.leaf_hash_of(e, now) for e in entries], entries))
            taken = await store.unsequenced(conn, store.Horizon("0"), 1_000)
            await conn.fetchval(
                "SELECT audit_append_batches($1, $2, $3::text::tid[], $4, NULL, '{}', '{}', '{}')",
                0, taken.ids, taken.rows, taken.hashes)
            sizes[version] = await conn.fetchrow(
                """SELECT count(*) FILTER (WHERE pg_column_compression(events) = 'lz4'),
                          sum(pg_column_size(events)), sum(pg_column_size(hashes)),
                          pg_relation_size(max(p.tableoid)::regclass),
                          (SELECT pg_relation_size(reltoastrelid) FROM pg_class
                           WHERE oid = max(p.tableoid))
                   FROM audit_packs p""")
        finally:
            await conn.close()
    assert sizes[None] == sizes[23]
    compressed, _, _, _, toasted = sizes[None]
    assert compressed == 10 and toasted > 0
