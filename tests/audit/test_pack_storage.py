"""How the log's packs are stored on disk (issue 20, item 3: bytes per event).

A pack of 16 message events is about 2.9 KB, over the 2 KB TOAST threshold.
pglz gives up on it (it wants 25% saved) and PostgreSQL writes it to the
TOAST table uncompressed; migration 0015 makes the ``events`` column LZ4,
which keeps the fifth the events' repeated shape saves (docs/PERFORMANCE.md,
"Bytes per event").  Checked here as structure and ratios, not sizes of a
whole small database (whose fixed costs, a GIN pending list of up to 4 MB,
would drown the per-event figure): every partition, old and new, compresses;
packs of messages' events are stored smaller than they are; and every event
read back from a compressed pack still hashes to its leaf.
"""

from __future__ import annotations

import asyncpg

from gchat.store import audit_codec as codec
from gchat.store import migrations
from loadtests.audit_scale import fill

_COMPRESSION = """SELECT c.relname, coalesce(nullif(a.attcompression::text, ''), 'default')
                  FROM pg_partition_tree('audit_packs') AS t
                  JOIN pg_class c ON c.oid = t.relid
                  JOIN pg_attribute a ON a.attrelid = c.oid AND a.attname = 'events'"""


async def test_packs_are_stored_compressed_in_every_partition(
    empty_database_url: str,
) -> None:
    conn = await asyncpg.connect(empty_database_url)
    try:
        await migrations.migrate(conn, before=15)
        existing = await conn.fetchval("SELECT audit_partition_for(now())")
        before = {r[0]: r[1] for r in await conn.fetch(_COMPRESSION)}
        assert before == {"audit_packs": "default", existing: "default"}  # pglz

        await migrations.migrate(conn)
        later = await conn.fetchval("SELECT audit_partition_for(now() + interval '3 months')")
        after = {r[0]: r[1] for r in await conn.fetch(_COMPRESSION)}
        assert after == {"audit_packs": "l", existing: "l", later: "l"}

        await fill(conn, 3200)  # 200 packs of messages' accepted and delivered events
        packs, compressed, stored, raw = await conn.fetchrow(
            """SELECT count(*), count(*) FILTER (WHERE pg_column_compression(events) = 'lz4'),
                      sum(pg_column_size(events)), sum(length(events))
               FROM audit_packs""")
        assert packs == 200 and compressed == packs
        assert stored < 0.85 * raw, (stored, raw)

        rows = await conn.fetch("SELECT first_leaf, hashes, events FROM audit_packs")
        checked = 0
        for first_leaf, hashes, events in rows:
            for i, (_, at, entry) in enumerate(codec.unpack_events(bytes(events))):
                assert codec.leaf_hash_of(entry, at) == bytes(hashes)[32 * i : 32 * i + 32], (
                    first_leaf + i)
                checked += 1
        assert checked == 3200
    finally:
        await conn.close()
