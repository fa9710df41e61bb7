"""The audit log at national scale: a million generated leaves, filled in SQL.

:func:`fill` appends generated ``message.accepted`` events, their leaves and
the stored subtree roots in set-based SQL (about a minute per million
here), without analysing anything -- as a fresh database with autovacuum
off is.  The tests use it at 65,000+ leaves (two tile levels).
"""

from __future__ import annotations

from typing import Any

import asyncpg

#: One generated ``message.accepted`` event per row of generate_series: ids
#: derived from the row number (5,000 senders in 50 agencies), an entry of
#: the size and shape the node writes (about 420 bytes).
_EVENTS = r"""
INSERT INTO audit_events (kind, created_at, actor_official, actor_device, subject_official,
                          officials, devices, agencies, entry)
SELECT 'message.accepted', at, a, d, s, ARRAY[a, s], ARRAY[d, r], ARRAY[ag],
       convert_to(
         '{"actor_device":"' || d || '","actor_official":"' || a
         || '","details":{"ciphertext_bytes":' || (300 + g % 700)
         || ',"message_id":"' || md5('m' || g)::uuid || '","recipient_devices":["' || r
         || '"],"sent_at":' || (extract(epoch FROM at) * 1000)::bigint
         || '},"kind":"message.accepted","subject_official":"' || s
         || '","time":"' || to_char(at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"')
         || '","v":1}', 'UTF8')
FROM (SELECT g, now() - make_interval(secs => ($2 - g) * 0.05) AS at,
             md5('o' || g % 5000)::uuid AS a, md5('d' || g % 5000)::uuid AS d,
             md5('o' || (g * 7 + 1) % 5000)::uuid AS s, md5('d' || (g * 7 + 1) % 5000)::uuid AS r,
             md5('g' || g % 50)::uuid AS ag
      FROM generate_series($1::bigint, $2::bigint) AS g) AS x
"""

# Leaves for every event without one, in id order, after the last leaf; the
# low bound is the xmin of this (later) transaction, as a sequencer stores it.
_LEAVES = r"""
INSERT INTO audit_log (leaf_index, event_id, leaf_hash, low_xid)
SELECT $1 + row_number() OVER (ORDER BY e.id) - 1, e.id, sha256('\x00'::bytea || e.entry),
       pg_snapshot_xmin(pg_current_snapshot())
FROM audit_events e WHERE e.id > $2 ORDER BY e.id
"""


async def fill(
    conn: asyncpg.Connection, leaves: int, *, subtrees: bool = True, chunk: int = 100_000,
    log: Any = None,
) -> None:
    """Append ``leaves`` generated events, sequenced, to the log (set-based SQL).

    With ``subtrees`` the stored subtree roots are computed too (the
    migration's ``audit_backfill_subtrees``), so the log is what a sequencer
    would have left.  Triggers allow this: it only inserts.
    """
    done = 0
    while done < leaves:
        n = min(chunk, leaves - done)
        last_id = await conn.fetchval("SELECT coalesce(max(id), 0) FROM audit_events")
        size = await conn.fetchval("SELECT coalesce(max(leaf_index) + 1, 0) FROM audit_log")
        await conn.execute(_EVENTS, done + 1, done + n)
        await conn.execute(_LEAVES, size, last_id)
        done += n
        if log:
            log(f"filled {done} leaves")
    if subtrees:
        await conn.execute("SELECT audit_backfill_subtrees()")
