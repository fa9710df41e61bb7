"""The audit tables: pending events, the Merkle log's packs of leaves, signed tree heads.

Append-only by construction: nothing here updates, and the only delete is
the sequencer's move of pending events into the log, in the transaction
that appends them (migrations 0010, 0021, docs/AUDIT.md section 2).  Entries are
kept in their stored form (:mod:`gchat.store.audit_codec`) and decoded to
their canonical JSON here, so callers see only the JSON.
"""

import contextlib
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any
from uuid import UUID

import asyncpg
import msgspec

from gchat.store import audit_codec as codec
from gchat.store.database import INDEX_PLANS_ONLY, Executor


async def agencies_of(conn: Executor, official_ids: Sequence[UUID]) -> dict[UUID, UUID]:
    """Each official's agency."""
    if not official_ids:
        return {}
    rows = await conn.fetch(
        "SELECT id, agency_id FROM officials WHERE id = ANY($1::uuid[])", list(official_ids)
    )
    return {row["id"]: row["agency_id"] for row in rows}


@dataclass(frozen=True)
class EncodedEvents:
    """Events ready for the backlog: their time, leaf hashes and stored entries."""

    at: datetime
    hashes: list[bytes]
    entries: list[bytes]


#: Events a backlog row holds at most: the first takes the row's id, the
#: others the ids after it (``audit_events_id_seq`` steps by this; 0021).
ROW_EVENTS = 256


async def insert_events(conn: Executor, events: EncodedEvents) -> None:
    """Append events (stored entries with their leaf hashes) as one backlog row
    (one per ``ROW_EVENTS``).

    Not a row per event (migration 0021): a heap tuple, an index entry, a
    WAL record and an id from the sequence per statement.
    """
    for start in range(0, len(events.entries), ROW_EVENTS):
        await conn.execute(
            "INSERT INTO audit_backlog (created_at, leaf_hashes, entries) VALUES ($1, $2, $3)",
            events.at,
            b"".join(events.hashes[start : start + ROW_EVENTS]),
            events.entries[start : start + ROW_EVENTS],
        )


# --- the sequencer ------------------------------------------------------------


@dataclass(frozen=True)
class Horizon:
    """Where the next pass must look: events of transactions at or after ``xmax``,
    or in ``running`` (both from the previous pass's snapshot).

    Every other transaction had finished when that snapshot was taken, so its
    events were visible to the pass and moved into the log by it.  Unlike a
    lower xid bound alone, this does not stay behind a long transaction
    elsewhere in the cluster (a backup's ``pg_dump``, a forgotten session):
    the events committed since it began are not walked again on every poll.
    """

    xmax: str
    running: tuple[str, ...] = ()


_SNAPSHOT = """SELECT pg_snapshot_xmax(s)::text AS xmax,
                      ARRAY(SELECT pg_snapshot_xip(s))::text[] AS running
               FROM pg_current_snapshot() AS s"""


def _horizon(row: Any) -> Horizon:
    return Horizon(row["xmax"], tuple(row["running"]))


# The sequencer's statements must not depend on statistics (PostgreSQL here
# runs without autovacuum, and a fresh database is never analysed).  Each is
# answered best by an index -- ``audit_backlog_xid_id`` from the horizon, packs
# by ``first_leaf``, subtrees by primary key -- so the sequencer's session
# pins that plan (:func:`pin_index_plans`) and an idle poll touches a few
# index pages whatever the log's size.
_PENDING = """
    FROM (SELECT id, xid FROM audit_backlog WHERE xid >= $1::text::xid8
          UNION ALL
          SELECT id, xid FROM audit_backlog WHERE xid = ANY($2::text[]::xid8[])) AS e
"""


_PIN = "; ".join(f"SET {setting} = off" for setting in INDEX_PLANS_ONLY)
_UNPIN = "; ".join(f"RESET {setting}" for setting in INDEX_PLANS_ONLY)


async def pin_index_plans(conn: Executor) -> None:
    """For this session: index scans and nested loops only (the sequencer's statements).

    Session settings, one round trip; the pool does not reset connections,
    so :func:`unpin_index_plans` before releasing it.
    """
    await conn.execute(_PIN)


async def unpin_index_plans(conn: Executor) -> None:
    """Undo :func:`pin_index_plans`."""
    await conn.execute(_UNPIN)


#: The idle poll's one statement (the load test measures it as it is).
IDLE_CHECK = f"""SELECT h.xmax, h.running,
                        EXISTS (SELECT 1 {_PENDING} ORDER BY e.xid LIMIT 1) AS pending
                 FROM ({_SNAPSHOT}) AS h"""  # noqa: S608 - constant fragments only


async def idle_check(conn: Executor, since: Horizon) -> tuple[Horizon, bool]:
    """(this snapshot's horizon, whether any event past ``since`` waits for a leaf).

    One statement, one snapshot: when nothing waits, its horizon is the next
    pass's, so an idle poll is a single cheap round trip.
    """
    row = await conn.fetchrow(IDLE_CHECK, since.xmax, list(since.running))
    assert row is not None
    return _horizon(row), bool(row["pending"])


#: The first ``$3`` backlog rows past a horizon, by (xid, id): each branch
#: walks ``audit_backlog_xid_id`` in that order and stops at its limit, so the
#: statement reads what it returns however large the backlog (as one sorted
#: union, PostgreSQL read every row past the horizon to sort them).  A row's
#: events are its leaf hashes' length / 32 (read without the entries).
_UNSEQUENCED = """
    SELECT id, xid, slot, created_at, leaf_hashes,
           octet_length(leaf_hashes) / 32 AS n FROM (
        (SELECT id, xid, ctid AS slot, created_at, leaf_hashes FROM audit_backlog
         WHERE xid >= $1::text::xid8 ORDER BY xid, id LIMIT $3)
        UNION ALL
        (SELECT id, xid, ctid AS slot, created_at, leaf_hashes FROM audit_backlog
         WHERE xid = ANY($2::text[]::xid8[]) ORDER BY xid, id LIMIT $3)) AS e
    ORDER BY xid, id LIMIT $3"""

#: This snapshot's horizon and those rows, as far as the first that reaches
#: ``$3`` events (so a pass takes about ``$3`` events whatever the rows'
#: sizes), as a few values: their first ids and leaf hashes (concatenated)
#: in order, their row addresses as one text (the node only hands them back:
#: as a ``tid[]`` asyncpg made and parsed a tuple per row), their oldest and
#: newest times, and whether they are every row past the horizon.  The
#: entries stay in PostgreSQL (``audit_append_backlog`` packs them there).
_TAKE = f"""WITH r AS MATERIALIZED ({_UNSEQUENCED}),
            e AS MATERIALIZED (
                SELECT * FROM (
                    SELECT *, sum(n) OVER (ORDER BY xid, id ROWS UNBOUNDED PRECEDING) - n AS before
                    FROM r) AS c
                WHERE before < $3)
            SELECT h.xmax, h.running,
                   (SELECT array_agg(id ORDER BY xid, id) FROM e) AS ids,
                   (SELECT array_agg(slot ORDER BY xid, id) FROM e)::text AS slots,
                   (SELECT string_agg(leaf_hashes, ''::bytea ORDER BY xid, id) FROM e) AS hashes,
                   (SELECT min(created_at) FROM e) AS oldest,
                   (SELECT max(created_at) FROM e) AS newest,
                   (SELECT count(*) FROM e) = (SELECT count(*) FROM r)
                     AND (SELECT count(*) FROM r) < $3 AS complete
            FROM ({_SNAPSHOT}) AS h"""  # noqa: S608 - constant fragments only


@dataclass(frozen=True)
class Unsequenced:
    """Events past a horizon that have no leaf yet, in the order they get their leaves."""

    horizon: Horizon  # of the snapshot they were read in: where the next pass looks
    ids: list[int]  # their backlog rows' first event ids, in order
    rows: str  # those rows' ctids, as a tid[]'s text: where the append deletes them
    hashes: bytes  # the events' leaf hashes, 32 bytes each, in order
    oldest: datetime | None  # their times' range (None when there are none)
    newest: datetime | None
    complete: bool = True  # these are all the events past the horizon

    def __len__(self) -> int:
        """How many events."""
        return len(self.hashes) // 32


async def unsequenced(conn: Executor, since: Horizon, limit: int) -> Unsequenced:
    """The visible events past ``since`` (none has a leaf yet), by (xid, id), in
    whole backlog rows as far as the first that reaches ``limit`` events, and
    the horizon of the snapshot that saw them: one statement."""
    row = await conn.fetchrow(_TAKE, since.xmax, list(since.running), limit)
    assert row is not None
    return Unsequenced(
        _horizon(row),
        list(row["ids"] or ()),
        row["slots"] or "{}",
        row["hashes"] or b"",
        row["oldest"],
        row["newest"],
        bool(row["complete"]),
    )


async def ensure_partitions(conn: Executor, times: Sequence[datetime]) -> None:
    """The month partitions of ``audit_packs`` holding these times exist."""
    await conn.execute(
        "SELECT audit_partition_for(t) FROM unnest($1::timestamptz[]) AS t", list(times)
    )


async def append_events(
    conn: Executor,
    first_leaf: int,
    events: Unsequenced,
    after: datetime | None,
    subtrees: Sequence[tuple[int, int, bytes]] = (),
) -> datetime:
    """Give ``events`` the leaves from ``first_leaf``, store the completed ``subtrees``;
    returns the newest pack's ``at`` (the next append's ``after``).

    ``audit_append_backlog`` (migration 0023; ``audit_append_batches`` of
    0021 before it, which packed the same bytes with more work per event)
    deletes their backlog rows by ctid (a TID scan, whatever the
    statistics), packs their events in PostgreSQL, up to ``codec.PACK`` a
    pack, each pack's ``at`` not before ``after``; it raises if the rows are
    not pending exactly as given (the same first ids in (xid, id) order, the
    same leaf hashes: another sequencer moved one, or the tree was hashed
    from other leaves), and then nothing is written.
    """
    at: datetime = await conn.fetchval(
        "SELECT audit_append_backlog($1, $2, $3::text::tid[], $4, $5, $6, $7, $8)",
        first_leaf,
        events.ids,
        events.rows,
        events.hashes,
        after,
        [h for h, _, _ in subtrees],
        [i for _, i, _ in subtrees],
        [r for _, _, r in subtrees],
    )
    return at


async def backfill_subtrees(conn: asyncpg.Connection) -> int:
    """Store the subtree roots missing for the leaves in the log (migration 0006).

    Reads every leaf: only for a log some older node appended to.
    """
    async with conn.transaction():
        return int(await conn.fetchval("SELECT audit_backfill_subtrees()"))


async def vacuum_backlog(conn: Executor) -> None:
    """Reclaim the backlog's moved rows (where this role may; otherwise autovacuum's job).

    Their pages stay in the table for the next rows (``vacuum_truncate`` is
    off, migration 0022): a pass leaves the backlog empty, and truncating it
    would lock out every send and ack statement, which insert into it.
    """
    await conn.execute("VACUUM (SKIP_LOCKED) audit_backlog")


# Packs and archived runs that hold leaves [lo, hi): a pack holds at most
# ``codec.PACK`` leaves, so its first leaf is above lo - PACK.
_HASH_RUNS = """(SELECT first_leaf, hashes FROM audit_packs
                 WHERE first_leaf > ${a} AND first_leaf < ${b} ORDER BY first_leaf LIMIT ${c})
                UNION ALL
                (SELECT first_leaf, hashes FROM audit_archived_leaves
                 WHERE first_leaf > ${a} AND first_leaf < ${b} ORDER BY first_leaf LIMIT ${c})"""


async def stored_nodes(
    conn: Executor, spans: Sequence[tuple[int, int, int]]
) -> dict[tuple[int, int], bytes]:
    """The stored hashes of ``spans`` (``(height, first, end)``; height 0: leaf hashes).

    One statement whatever the number of runs; each run is an ordered,
    limited range scan of a primary key or unique index, a plan that needs
    no statistics.
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
                "(SELECT 0::smallint AS height, first_leaf AS idx, hashes FROM ("  # noqa: S608
                + _HASH_RUNS.format(a=n + 1, b=n + 2, c=n + 3)
                + ") AS r)"
            )
            args += [lo - codec.PACK, hi, hi - lo + codec.PACK]
        else:
            parts.append(
                f"(SELECT height, idx, hash FROM audit_subtrees WHERE height = ${n + 1}"  # noqa: S608
                f" AND idx >= ${n + 2} AND idx < ${n + 3} ORDER BY idx LIMIT ${n + 4})"
            )
            args += [height, lo, hi, hi - lo]
    rows = await conn.fetch(" UNION ALL ".join(parts), *args)
    out: dict[tuple[int, int], bytes] = {}
    for height, idx, value in rows:
        if height:
            out[(height, idx)] = bytes(value)
            continue
        for i in range(len(value) // 32):
            out[(0, idx + i)] = bytes(value[32 * i : 32 * i + 32])
    return out


async def pack_partitions(conn: Executor) -> list[str]:
    """Names of the month partitions of ``audit_packs``."""
    rows = await conn.fetch(
        """SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
           WHERE i.inhparent = 'audit_packs'::regclass ORDER BY c.relname"""
    )
    return [row[0] for row in rows]


async def partition_leaves(conn: Executor, name: str) -> tuple[int, int, int]:
    """(first leaf, end, number of leaves) of one partition; (0, 0, 0) when empty."""
    row = await conn.fetchrow(
        f"""SELECT coalesce(min(first_leaf), 0) AS lo,
                   coalesce(max(first_leaf + length(hashes) / 32), 0) AS hi,
                   coalesce(sum(length(hashes) / 32), 0) AS n
            FROM {_quoted(name)}"""  # noqa: S608 - a partition's name, quoted
    )
    assert row is not None
    return int(row["lo"]), int(row["hi"]), int(row["n"])


async def live_leaves_below(conn: Executor, leaf: int) -> bool:
    """Whether packs below ``leaf`` are still in the database."""
    return bool(
        await conn.fetchval(
            "SELECT EXISTS (SELECT 1 FROM audit_packs WHERE first_leaf < $1)", leaf
        )
    )


async def drop_partition(conn: asyncpg.Connection, name: str) -> None:
    """Keep a partition's leaf hashes in ``audit_archived_leaves``, then drop it, atomically."""
    async with conn.transaction():
        await conn.execute(
            f"""INSERT INTO audit_archived_leaves (first_leaf, hashes)
                SELECT first_leaf, hashes FROM {_quoted(name)}"""  # noqa: S608
        )
        await conn.execute(f"ALTER TABLE audit_packs DETACH PARTITION {_quoted(name)}")
        await conn.execute(f"DROP TABLE {_quoted(name)}")


def _quoted(name: str) -> str:
    if not name.replace("_", "").isalnum():
        raise ValueError(f"not a partition name: {name!r}")
    return '"' + name + '"'


async def log_size(conn: Executor) -> int:
    """Number of leaves in the log."""
    return int(await conn.fetchval("SELECT audit_log_size()"))


async def last_pack_time(conn: Executor) -> datetime | None:
    """``at`` of the newest pack (packs' times never go back: see the sequencer)."""
    value: datetime | None = await conn.fetchval(
        "SELECT at FROM audit_packs ORDER BY first_leaf DESC LIMIT 1"
    )
    return value


async def sequencing_backlog(conn: asyncpg.Connection) -> tuple[int, float]:
    """(events without a leaf, age in seconds of the oldest of them; 0 when none).

    The backlog table holds only what waits, so this costs what waits (a
    row's events counted from its leaf hashes' length, entries unread).
    """
    row = await conn.fetchrow(
        """SELECT coalesce(sum(octet_length(leaf_hashes) / 32), 0) AS waiting,
                  coalesce(extract(epoch FROM now() - min(created_at)), 0) AS age
           FROM audit_backlog"""
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
    entry: bytes  # canonical JSON
    in_scope: bool = True
    leaf_hash: bytes | None = None  # as stored when sequenced (entries_range only)
    archived: bool = False  # retention removed the entry; only its leaf hash is kept


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


_kind_decoder = msgspec.json.Decoder()


def _row(
    event_id: int,
    leaf: int | None,
    at: datetime,
    stored: bytes,
    scope: list[UUID] | None = None,
    leaf_hash: bytes | None = None,
) -> EventRow:
    officials, agencies, _ = codec.parties(stored)
    entry = codec.decode(stored, at)
    kind = codec.kind_of(stored) or str(_kind_decoder.decode(entry).get("kind", ""))
    in_scope = scope is None or not set(agencies).isdisjoint(scope)
    return EventRow(event_id, leaf, kind, at, officials, entry, in_scope, leaf_hash)


@dataclass(frozen=True)
class _Match:
    """What an event must involve (every given set, any of its ids) and be.

    The cheap tests (id, time, parties as raw bytes, kind byte) come first
    and run on every event of every candidate pack; an event is decoded
    only once they pass (at 1M events, building UUIDs and datetimes for
    every candidate cost an auditor's query most of its time).
    """

    any_of: list[list[UUID]]
    device: UUID | None
    kinds: set[str] | None
    since: datetime | None
    until: datetime | None
    after_id: int
    also: Callable[[EventRow], bool] | None = None
    _sets: list[frozenset[bytes]] = field(init=False, repr=False)
    _since: int | None = field(init=False, repr=False)
    _until: int | None = field(init=False, repr=False)

    def __post_init__(self) -> None:
        since, until = self.since, self.until
        object.__setattr__(self, "_sets", [frozenset(u.bytes for u in ids) for ids in self.any_of])
        object.__setattr__(self, "_since", None if since is None else codec.micros_of(since))
        object.__setattr__(self, "_until", None if until is None else codec.micros_of(until))

    def candidates(self, events: bytes) -> Iterator[tuple[int, int, int, bytes]]:
        """(position, id, microseconds, stored entry) of a pack's events worth a
        :meth:`wants`: with parties to match, only those whose bytes hold one
        of the smallest set's ids (a byte search, not a parse of every event)."""
        if not self._sets:
            return ((i, *e) for i, e in enumerate(codec.scan_events(events)))
        smallest: frozenset[bytes] = min(self._sets, key=len)
        return codec.scan_involving(events, smallest)

    def wants(self, event_id: int, micros: int, stored: bytes) -> bool:
        if event_id <= self.after_id:
            return False
        if (self._since is not None and micros < self._since) or (
            self._until is not None and micros >= self._until
        ):
            return False
        involved, devices = codec.raw_ids(stored)
        for ids in self._sets:
            if not any(i in ids for i in involved):
                return False
        if self.device is not None and self.device.bytes not in devices:
            return False
        if self.kinds is not None:
            kind = codec.kind_of(stored)  # None: not in the table, the row decides
            return kind is None or kind in self.kinds
        return True

    def keeps(self, row: EventRow) -> bool:
        if self.kinds is not None and row.kind not in self.kinds:
            return False
        return self.also is None or self.also(row)


# Candidate packs, by their first event id: the GIN index of the parties
# answers the "involves" conditions, the month partitions and ``at`` the
# time bound (every event of a pack is at or before its ``at``).
PACKS_QUERY = """SELECT first_leaf, min_id, events FROM audit_packs
            WHERE max_id > $1 AND {next_page}
              AND ($3::timestamptz IS NULL OR at >= $3)
              AND ($4::timestamptz IS NULL OR min_at < $4)
              {involves}
            ORDER BY min_id LIMIT $5"""
# The backlog's events, one row each (a row's k-th event, from 0, has its
# id + k: migration 0021).
_BACKLOG = """SELECT b.id + e.k - 1 AS id, b.created_at, e.entry
              FROM audit_backlog b, unnest(b.entries) WITH ORDINALITY AS e(entry, k)
              WHERE b.id + e.k - 1 > $1 AND ($3::timestamptz IS NULL OR b.created_at >= $3)
                AND ($4::timestamptz IS NULL OR b.created_at < $4) {involves}
              ORDER BY 1 LIMIT $2"""
_CHUNK = 64
_MAX_CHUNK = 1000


@contextlib.asynccontextmanager
async def parties_index_pinned(conn: asyncpg.Connection) -> AsyncIterator[None]:
    """Candidate packs from the parties' GIN index, whatever the statistics say.

    Why: with statistics taken while a month's partition was small (a fresh
    log, autovacuum behind), the planner read the partition sequentially and
    ran ``audit_pack_ids()`` (PL/pgSQL, about a millisecond a pack) on every
    pack: 1.8 s for 1,400 packs, minutes at a million events.  Session
    settings (undone after; a transaction that fails undoes them itself);
    JIT off, or the penalty of the disabled paths makes PostgreSQL compile
    the statement.
    """
    await conn.execute("SET enable_seqscan = off; SET enable_indexscan = off; SET jit = off")
    try:
        yield
    except BaseException:
        # In a transaction the failure aborts it, and its rollback undoes the
        # settings; outside one they stay, so undo them if the link still works.
        if not conn.is_in_transaction() and not conn.is_closed():
            with contextlib.suppress(Exception):
                await conn.execute(_UNPIN_PARTIES)
        raise
    await conn.execute(_UNPIN_PARTIES)


_UNPIN_PARTIES = "RESET enable_seqscan; RESET enable_indexscan; RESET jit"


async def _matching(conn: Executor, match: _Match, limit: int) -> list[EventRow]:
    """The first ``limit`` events (by id) that ``match`` wants, sequenced or not."""
    if isinstance(conn, asyncpg.Pool):
        async with conn.acquire() as own:
            return await _matching(own, match, limit)
    if not match.any_of:  # everything in order: the min_id index, as planned
        return await _read_matching(conn, match, limit)
    async with parties_index_pinned(conn):
        return await _read_matching(conn, match, limit)


async def _read_matching(conn: asyncpg.Connection, match: _Match, limit: int) -> list[EventRow]:
    involves = "".join(
        f" AND audit_pack_ids(events) && ${6 + i}::uuid[]" for i in range(len(match.any_of))
    )
    pending_involves = "".join(
        f" AND audit_entry_ids(e.entry) && ${5 + i}::uuid[]" for i in range(len(match.any_of))
    )
    found: list[EventRow] = []
    last_min = -1
    # Every candidate pack involves the parties, so usually holds a wanted
    # event: a chunk of ``limit`` + a few packs answers a page in one read.
    chunk = max(_CHUNK, min(limit + 8, _MAX_CHUNK))
    complete = False
    while not complete:
        packs = await conn.fetch(
            # The first chunk has no lower bound on min_id: stated anyway, the
            # planner without statistics ANDs a bitmap of the whole min_id index.
            PACKS_QUERY.format(
                involves=involves, next_page="min_id > $2" if last_min >= 0 else "$2 < 0"
            ),
            match.after_id,
            last_min,
            match.since,
            match.until,
            chunk,
            *match.any_of,
        )
        for pack in packs:
            if len(found) >= limit:
                # Packs come by min_id: once one starts after the page's last
                # event, neither it nor any later pack holds an earlier one.
                found.sort(key=lambda r: r.id)
                if pack["min_id"] > found[limit - 1].id:
                    complete = True
                    break
            first = pack["first_leaf"]
            for i, event_id, micros, stored in match.candidates(pack["events"]):
                if match.wants(event_id, micros, stored):
                    row = _row(event_id, first + i, codec.time_of(micros), stored)
                    if match.keeps(row):
                        found.append(row)
            last_min = pack["min_id"]
        complete = complete or len(packs) < chunk
    after = match.after_id
    while True:  # the backlog: events not sequenced yet (leaf_index None)
        rows = await conn.fetch(
            _BACKLOG.format(involves=pending_involves),
            after,
            _CHUNK,
            match.since,
            match.until,
            *match.any_of,
        )
        for r in rows:
            stored = bytes(r["entry"])
            if match.wants(r["id"], codec.micros_of(r["created_at"]), stored):
                row = _row(r["id"], None, r["created_at"], stored)
                if match.keeps(row):
                    found.append(row)
            after = r["id"]
        if len(rows) < _CHUNK:  # the backlog is short: read it all
            break
    found.sort(key=lambda r: r.id)
    return found[:limit]


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
    A device is looked up through its official (the index holds officials
    and agencies; the device is then checked in each candidate).
    """
    any_of: list[list[UUID]] = []
    if scope is not None:
        any_of.append(scope)
    if agencies is not None:
        any_of.append(agencies)
    if official is not None:
        any_of.append([official])
    if device is not None:
        owner = await conn.fetchval("SELECT official_id FROM devices WHERE id = $1", device)
        if owner is None:
            return []
        any_of.append([owner])
    match = _Match(any_of, device, set(kinds) if kinds else None, since, until, after_id)
    return await _matching(conn, match, limit)


async def event_at(conn: Executor, leaf_index: int, scope: list[UUID] | None) -> EventRow | None:
    rows = await entries_range(conn, leaf_index, leaf_index + 1, scope)
    return rows[0] if rows else None


async def entries_range(
    conn: Executor, start: int, end: int, scope: list[UUID] | None
) -> list[EventRow]:
    """Leaves [start, end) that still have their entries, in index order.

    Leaves whose entries retention archived are not returned (their hashes
    stay: :func:`stored_nodes`).  ``in_scope`` tells whether the caller's
    scope covers the entry (the caller then withholds the entry bytes and
    keeps only the leaf hash).  An ordered, limited walk of ``first_leaf``
    whether or not the planner has statistics.
    """
    if end <= start:
        return []
    rows = await conn.fetch(
        """(SELECT first_leaf, hashes, events FROM audit_packs
            WHERE first_leaf > $1 AND first_leaf < $2 ORDER BY first_leaf LIMIT $3)
           UNION ALL
           (SELECT first_leaf, hashes, NULL FROM audit_archived_leaves
            WHERE first_leaf > $1 AND first_leaf < $2 ORDER BY first_leaf LIMIT $3)""",
        start - codec.PACK,
        end,
        end - start + codec.PACK,
    )
    out = []
    for pack in rows:
        first, hashes = pack["first_leaf"], bytes(pack["hashes"])
        if pack["events"] is None:  # archived: the leaf hashes only
            for i in range(len(hashes) // 32):
                if start <= first + i < end:
                    out.append(_archived(first + i, hashes[32 * i : 32 * i + 32]))
            continue
        for i, (event_id, at, stored) in enumerate(codec.unpack_events(pack["events"])):
            if start <= first + i < end:
                leaf_hash = hashes[32 * i : 32 * i + 32]
                out.append(_row(event_id, first + i, at, stored, scope, leaf_hash))
    out.sort(key=lambda r: r.leaf_index or 0)
    return out


def _archived(leaf: int, leaf_hash: bytes) -> EventRow:
    return EventRow(0, leaf, "", codec.EPOCH, [], b"", False, leaf_hash, archived=True)


async def audit_queries_about(
    conn: Executor, official: UUID, before: datetime, after_id: int, limit: int
) -> list[EventRow]:
    """Auditor requests that concerned ``official``, made before ``before`` by others."""

    def by_another(row: EventRow) -> bool:
        actor = _kind_decoder.decode(row.entry).get("actor_official")
        return bool(actor != str(official))

    match = _Match([[official]], None, set(codec.AUDITOR_KINDS), None, before, after_id, by_another)
    return await _matching(conn, match, limit)
