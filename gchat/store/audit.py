"""The audit tables: events, the Merkle log's leaves, signed tree heads.

Append-only by construction: nothing here updates or deletes (the tables'
triggers would refuse it), so the application's role needs only SELECT and
INSERT on them.
"""

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from uuid import UUID

import asyncpg

from gchat.store.database import Executor

# One statement for any number of events: the arrays are zipped by unnest
# (the per-event id lists travel as JSON arrays, since SQL arrays of arrays
# must be rectangular).
_INSERT = """
INSERT INTO audit_events (kind, created_at, actor_official, actor_device,
                          subject_official, subject_device, officials, devices,
                          agencies, entry)
SELECT t.kind, t.at, t.ao, t.ad, t.so, t.sd,
       ARRAY(SELECT jsonb_array_elements_text(t.offs::jsonb)::uuid),
       ARRAY(SELECT jsonb_array_elements_text(t.devs::jsonb)::uuid),
       ARRAY(SELECT jsonb_array_elements_text(t.ags::jsonb)::uuid),
       t.entry
FROM unnest($1::text[], $2::timestamptz[], $3::uuid[], $4::uuid[], $5::uuid[],
            $6::uuid[], $7::text[], $8::text[], $9::text[], $10::bytea[])
     AS t(kind, at, ao, ad, so, sd, offs, devs, ags, entry)
"""


async def agencies_of(conn: Executor, official_ids: Sequence[str]) -> dict[str, str]:
    """Each official's agency (as strings, the form events list them in)."""
    if not official_ids:
        return {}
    rows = await conn.fetch(
        "SELECT id::text, agency_id::text FROM officials WHERE id = ANY($1::text[]::uuid[])",
        list(official_ids),
    )
    return {row["id"]: row["agency_id"] for row in rows}


async def insert_events(conn: Executor, columns: Sequence[Sequence[Any]]) -> None:
    """Insert events given column-wise (see ``_INSERT`` for the order)."""
    await conn.execute(_INSERT, *columns)


# --- the sequencer ------------------------------------------------------------


@dataclass(frozen=True)
class Horizon:
    """Where the next pass must look: events of transactions at or after ``xmax``,
    or in ``running`` (both from the previous pass's snapshot).

    Every other transaction had finished when that snapshot was taken, so its
    events were visible to the pass and sequenced by it.  Unlike a lower xid
    bound alone, this does not stay behind a long transaction elsewhere in
    the cluster (a backup's ``pg_dump``, a forgotten session): the events
    committed since it began are not walked again on every poll.
    """

    xmax: str
    running: tuple[str, ...] = ()

    @property
    def floor(self) -> str:
        """Every transaction below this had finished (stored with leaves as ``low_xid``)."""
        return str(min(int(x) for x in (self.xmax, *self.running)))


_SNAPSHOT = """SELECT pg_snapshot_xmax(s)::text AS xmax,
                      ARRAY(SELECT pg_snapshot_xip(s))::text[] AS running
               FROM pg_current_snapshot() AS s"""


def _horizon(row: Any) -> Horizon:
    return Horizon(row["xmax"], tuple(row["running"]))


async def snapshot_horizon(conn: Executor) -> Horizon:
    """The horizon of the current snapshot (the next pass looks from here)."""
    return _horizon(await conn.fetchrow(_SNAPSHOT))


# The sequencer's statements must not depend on statistics (PostgreSQL here
# runs without autovacuum, and a fresh database is never analysed): without
# them the planner guesses that most of ``audit_events`` is past the bound
# and scans both tables on every poll (measured: 69-114 ms per idle poll at
# 212,000 events).  Every one of them is answered best by its indexes --
# walk ``audit_events_xid`` from the horizon, probe ``audit_log``'s unique
# index per row, read leaves and subtrees by primary key -- so the
# sequencer's session pins that plan (:func:`pin_index_plans`) and an idle
# poll touches a few index pages whatever the log's size.
_PENDING = """
    FROM (SELECT id, xid, entry FROM audit_events WHERE xid >= $1::text::xid8
          UNION ALL
          SELECT id, xid, entry FROM audit_events WHERE xid = ANY($2::text[]::xid8[])) AS e
    WHERE NOT EXISTS (SELECT 1 FROM audit_log l WHERE l.event_id = e.id)
"""


_PIN = (
    "SET enable_seqscan = off; SET enable_bitmapscan = off;"
    " SET enable_hashjoin = off; SET enable_mergejoin = off"
)


async def pin_index_plans(conn: Executor) -> None:
    """For this session: index scans and nested loops only (the sequencer's statements).

    Session settings, one round trip; the pool does not reset connections,
    so :func:`unpin_index_plans` before releasing it.
    """
    await conn.execute(_PIN)


async def unpin_index_plans(conn: Executor) -> None:
    """Undo :func:`pin_index_plans`."""
    await conn.execute(
        "RESET enable_seqscan; RESET enable_bitmapscan; RESET enable_hashjoin;"
        " RESET enable_mergejoin"
    )


#: The idle poll's one statement (the load test measures it as it is).
IDLE_CHECK = f"""SELECT h.xmax, h.running,
                        EXISTS (SELECT 1 {_PENDING} ORDER BY e.xid LIMIT 1) AS pending
                 FROM ({_SNAPSHOT}) AS h"""  # noqa: S608 - constant fragments only


async def idle_check(conn: Executor, since: Horizon) -> tuple[Horizon, bool]:
    """(this snapshot's horizon, whether any event past ``since`` waits for a leaf).

    One statement, one snapshot: when nothing waits, its horizon is the next
    pass's (every transaction before it had finished and its events were
    seen sequenced), so an idle poll is a single cheap round trip.
    """
    row = await conn.fetchrow(IDLE_CHECK, since.xmax, list(since.running))
    assert row is not None
    return _horizon(row), bool(row["pending"])


async def unsequenced(conn: Executor, since: Horizon, limit: int) -> list[tuple[int, bytes]]:
    """Visible events past ``since`` that have no leaf yet, by (xid, id)."""
    rows = await conn.fetch(
        f"SELECT e.id, e.entry {_PENDING} ORDER BY e.xid, e.id LIMIT $3",
        since.xmax,
        list(since.running),
        limit,
    )
    return [(row["id"], bytes(row["entry"])) for row in rows]


async def append_leaves(
    conn: Executor,
    first_index: int,
    event_ids: list[int],
    hashes: list[bytes],
    low_xid: str,
    subtrees: Sequence[tuple[int, int, bytes]] = (),
) -> None:
    """Write leaves from ``first_index`` on, and the subtree roots they completed."""
    await conn.execute(
        """INSERT INTO audit_log (leaf_index, event_id, leaf_hash, low_xid)
           SELECT $1 + o - 1, e, h, $4::text::xid8
           FROM unnest($2::bigint[], $3::bytea[]) WITH ORDINALITY AS t(e, h, o)""",
        first_index,
        event_ids,
        hashes,
        low_xid,
    )
    if subtrees:
        await conn.execute(
            """INSERT INTO audit_subtrees (height, idx, hash)
               SELECT * FROM unnest($1::smallint[], $2::bigint[], $3::bytea[])""",
            [h for h, _, _ in subtrees],
            [i for _, i, _ in subtrees],
            [r for _, _, r in subtrees],
        )


async def backfill_subtrees(conn: asyncpg.Connection) -> int:
    """Store the subtree roots missing for the leaves in ``audit_log`` (migration 0006).

    Reads every leaf: only for a log some older node appended to.
    """
    async with conn.transaction():
        return int(await conn.fetchval("SELECT audit_backfill_subtrees()"))


async def stored_nodes(
    conn: Executor, spans: Sequence[tuple[int, int, int]]
) -> dict[tuple[int, int], bytes]:
    """The stored hashes of ``spans`` (``(height, first, end)``; height 0: leaf hashes).

    One statement whatever the number of runs; each run is an ordered,
    limited range scan of a primary key, a plan that needs no statistics.
    """
    if not spans:
        return {}
    # Only placeholders are formatted into the text; every value is a parameter.
    parts = []
    args: list[int] = []
    for height, lo, hi in spans:
        n = len(args)
        if height == 0:
            parts.append(
                f"(SELECT 0::smallint, leaf_index, leaf_hash FROM audit_log"  # noqa: S608
                f" WHERE leaf_index >= ${n + 1} AND leaf_index < ${n + 2}"
                f" ORDER BY leaf_index LIMIT ${n + 3})"
            )
            args += [lo, hi, hi - lo]
        else:
            parts.append(
                f"(SELECT height, idx, hash FROM audit_subtrees WHERE height = ${n + 1}"  # noqa: S608
                f" AND idx >= ${n + 2} AND idx < ${n + 3} ORDER BY idx LIMIT ${n + 4})"
            )
            args += [height, lo, hi, hi - lo]
    rows = await conn.fetch(" UNION ALL ".join(parts), *args)
    return {(row[0], row[1]): bytes(row[2]) for row in rows}


async def log_state(conn: Executor) -> tuple[int, str]:
    """(tree size, low xid of the last leaf's pass); (0, '0') when empty."""
    row = await conn.fetchrow(
        "SELECT leaf_index, low_xid::text AS low FROM audit_log ORDER BY leaf_index DESC LIMIT 1"
    )
    return (0, "0") if row is None else (row["leaf_index"] + 1, row["low"])


async def sequencing_backlog(conn: asyncpg.Connection) -> tuple[int, float]:
    """(events without a leaf, age in seconds of the oldest of them; 0 when none).

    Searches from the last pass's low xid bound, as the sequencer does, so
    the cost follows the backlog rather than the size of the log -- with
    index plans pinned, as the sequencer's are, since without statistics the
    planner would scan both tables.
    """
    async with conn.transaction():
        await conn.execute(_PIN.replace("SET ", "SET LOCAL "))
        row = await conn.fetchrow(
            """SELECT count(*) AS waiting,
                      coalesce(extract(epoch FROM now() - min(e.created_at)), 0) AS age
               FROM audit_events e
               WHERE e.xid >= coalesce(
                       (SELECT low_xid FROM audit_log ORDER BY leaf_index DESC LIMIT 1), '0'::xid8)
                 AND NOT EXISTS (SELECT 1 FROM audit_log l WHERE l.event_id = e.id)"""
        )
    assert row is not None
    return int(row["waiting"]), max(0.0, float(row["age"]))


@dataclass(frozen=True)
class TreeHeadRow:
    tree_size: int
    timestamp_ms: int
    root_hash: bytes
    signature: bytes
    key_id: bytes


async def insert_tree_head(conn: Executor, head: TreeHeadRow) -> None:
    await conn.execute(
        """INSERT INTO audit_tree_heads (tree_size, timestamp_ms, root_hash, signature, key_id)
           VALUES ($1, $2, $3, $4, $5) ON CONFLICT DO NOTHING""",
        head.tree_size,
        head.timestamp_ms,
        head.root_hash,
        head.signature,
        head.key_id,
    )


def _head(row: Any) -> TreeHeadRow:
    return TreeHeadRow(
        row["tree_size"],
        row["timestamp_ms"],
        bytes(row["root_hash"]),
        bytes(row["signature"]),
        bytes(row["key_id"]),
    )


async def latest_tree_head(conn: Executor) -> TreeHeadRow | None:
    row = await conn.fetchrow(
        """SELECT tree_size, timestamp_ms, root_hash, signature, key_id FROM audit_tree_heads
            ORDER BY timestamp_ms DESC, tree_size DESC LIMIT 1"""
    )
    return None if row is None else _head(row)


async def tree_head_of_size(conn: Executor, size: int) -> TreeHeadRow | None:
    row = await conn.fetchrow(
        """SELECT tree_size, timestamp_ms, root_hash, signature, key_id
            FROM audit_tree_heads WHERE tree_size = $1 ORDER BY timestamp_ms DESC LIMIT 1""",
        size,
    )
    return None if row is None else _head(row)


async def tree_heads_between(conn: Executor, low: int, high: int, limit: int) -> list[TreeHeadRow]:
    """The newest signed head of each size in [low, high), smallest first, up to ``limit``."""
    rows = await conn.fetch(
        """SELECT DISTINCT ON (tree_size) tree_size, timestamp_ms, root_hash, signature, key_id
            FROM audit_tree_heads
            WHERE tree_size >= $1 AND tree_size < $2
            ORDER BY tree_size, timestamp_ms DESC LIMIT $3""",
        low,
        high,
        limit,
    )
    return [_head(r) for r in rows]


# --- queries --------------------------------------------------------------------


@dataclass(frozen=True)
class EventRow:
    id: int
    leaf_index: int | None
    kind: str
    created_at: datetime
    officials: list[UUID]
    entry: bytes
    in_scope: bool = True
    leaf_hash: bytes | None = None  # as stored when sequenced (entries_range only)


async def agency_subtree(conn: Executor, root: UUID) -> list[UUID]:
    """``root`` and every agency below it."""
    rows = await conn.fetch(
        """WITH RECURSIVE down AS (
               SELECT id FROM agencies WHERE id = $1
               UNION ALL
               SELECT a.id FROM agencies a JOIN down ON a.parent_id = down.id)
           SELECT id FROM down""",
        root,
    )
    return [row["id"] for row in rows]


def _event(row: Any, in_scope: bool = True, leaf_hash: bytes | None = None) -> EventRow:
    return EventRow(
        row["id"],
        row["leaf_index"],
        row["kind"],
        row["created_at"],
        list(row["officials"]),
        bytes(row["entry"]),
        in_scope,
        leaf_hash,
    )


async def query_events(
    conn: Executor,
    *,
    scope: list[UUID] | None,
    official: UUID | None,
    device: UUID | None,
    agencies: list[UUID] | None,
    kinds: list[str] | None,
    since: datetime | None,
    until: datetime | None,
    after_id: int,
    limit: int,
) -> list[EventRow]:
    """Events matching every given filter, by id, after ``after_id``.

    ``scope`` None means everything; otherwise an event must involve an
    agency in ``scope``.  ``agencies`` matches events involving any of them.
    """
    rows = await conn.fetch(
        """SELECT e.id, l.leaf_index, e.kind, e.created_at, e.officials, e.entry
           FROM audit_events e LEFT JOIN audit_log l ON l.event_id = e.id
           WHERE e.id > $1
             AND ($2::uuid[] IS NULL OR e.agencies && $2::uuid[])
             AND ($3::uuid IS NULL OR e.officials @> ARRAY[$3::uuid])
             AND ($4::uuid IS NULL OR e.devices @> ARRAY[$4::uuid])
             AND ($5::uuid[] IS NULL OR e.agencies && $5::uuid[])
             AND ($6::text[] IS NULL OR e.kind = ANY($6::text[]))
             AND ($7::timestamptz IS NULL OR e.created_at >= $7)
             AND ($8::timestamptz IS NULL OR e.created_at < $8)
           ORDER BY e.id LIMIT $9""",
        after_id,
        scope,
        official,
        device,
        agencies,
        kinds,
        since,
        until,
        limit,
    )
    return [_event(row) for row in rows]


async def event_at(conn: Executor, leaf_index: int, scope: list[UUID] | None) -> EventRow | None:
    rows = await entries_range(conn, leaf_index, leaf_index + 1, scope)
    return rows[0] if rows else None


async def entries_range(
    conn: Executor, start: int, end: int, scope: list[UUID] | None
) -> list[EventRow]:
    """Leaves [start, end) with their entries, in index order.

    The ``LIMIT`` (the range's length) keeps the plan an ordered walk of
    ``audit_log``'s primary key with a probe per row whether or not the
    planner has statistics (without, it chose a parallel bitmap scan and a
    sort: 20-50 ms instead of about 1 ms at a million leaves).

    ``in_scope`` tells whether the caller's scope covers the entry (the
    caller then withholds the entry bytes and keeps only the leaf hash).
    """
    rows = await conn.fetch(
        """SELECT e.id, l.leaf_index, l.leaf_hash, e.kind, e.created_at, e.officials, e.entry,
                  ($3::uuid[] IS NULL OR e.agencies && $3::uuid[]) AS in_scope
           FROM audit_log l JOIN audit_events e ON e.id = l.event_id
           WHERE l.leaf_index >= $1 AND l.leaf_index < $2
           ORDER BY l.leaf_index LIMIT $4""",
        start,
        end,
        scope,
        max(0, end - start),
    )
    return [_event(row, row["in_scope"], bytes(row["leaf_hash"])) for row in rows]


async def audit_queries_about(
    conn: Executor, official: UUID, before: datetime, after_id: int, limit: int
) -> list[EventRow]:
    """Auditor queries that concerned ``official``, made before ``before``."""
    rows = await conn.fetch(
        """SELECT e.id, l.leaf_index, e.kind, e.created_at, e.officials, e.entry
           FROM audit_events e LEFT JOIN audit_log l ON l.event_id = e.id
           WHERE e.kind LIKE 'audit.%' AND e.officials @> ARRAY[$1::uuid]
             AND e.actor_official IS DISTINCT FROM $1
             AND e.created_at < $2 AND e.id > $3
           ORDER BY e.id LIMIT $4""",
        official,
        before,
        after_id,
        limit,
    )
    return [_event(row) for row in rows]
