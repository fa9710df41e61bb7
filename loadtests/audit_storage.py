"""Audit storage as the node builds it: bytes per event, sequencer lag, auditor queries.

    python -m loadtests.audit_storage [--events 200000] [--query-events 1000000]

1. **Write path** (a database made for this run, never analysed): two
   writers record, through ``AuditLog.record``, transactions of 64
   ``message.accepted`` events (the committer's) and of 64
   ``message.delivered`` events of messages sent 64 earlier (the ack
   batcher's; the mix ``audit_scale.fill`` makes), as fast as they can,
   with a ``Sequencer`` running as on a node.  Reports the write rate, the
   sequencer's lag (events waiting and age of the oldest, sampled every
   0.2 s during the run) and how long it took to drain after.
2. **Bytes per event** (:func:`audit_bytes`, what ``loadtests.scale``
   reports too): ``pg_total_relation_size`` (heap, TOAST, every index) of
   every audit table and partition, divided by the events; the same without
   the backlog table, a buffer of fixed size -- against the same number of
   events in the tables before migration 0010 (filled set-based, one row per
   event and per leaf, in a second database).
3. **Auditor queries** on a log of ``--query-events`` events made by the
   node's own code (``audit_scale.fill``), never analysed: an official's
   last day, p50/p95 over 50 officials, and the plan (``EXPLAIN``).

Prints one JSON object (the figures in docs/PERFORMANCE.md come from it).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import time
import uuid
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg

from gchat.audit.log import AuditEvent, AuditLog
from gchat.audit.sequencer import Sequencer
from gchat.runtime.server_keys import ServerKeys
from gchat.store import audit as store
from gchat.store import migrations
from gchat.store.database import Database
from loadtests.audit_scale import DELIVERY_LAG, _uuid, fill, fill_old_layout, message_events
from loadtests.harness import TempDatabase, Workspace

_BATCH = 64
_OFFICIALS = 5000
_AGENCIES = 50


async def _directory(conn: asyncpg.Connection) -> None:
    """50 agencies and 5,000 officials with the ids the generated events use."""
    await conn.executemany(
        "INSERT INTO agencies (id, code, name_en) VALUES ($1, $2, $3)",
        [(uuid.UUID(_uuid(f"g{i}")), f"LT-{i}", f"Agency {i}") for i in range(_AGENCIES)],
    )
    await conn.executemany(
        "INSERT INTO officials (id, agency_id, name_en) VALUES ($1, $2, $3)",
        [(uuid.UUID(_uuid(f"o{i}")), uuid.UUID(_uuid(f"g{i % _AGENCIES}")), f"Official {i}")
         for i in range(_OFFICIALS)],
    )


def _batches(first: int, last: int) -> list[list[AuditEvent]]:
    """What a node writes for messages ``first`` .. ``last - 1``: their
    "message.accepted" events in one transaction (the committer's), and in
    another the "message.delivered" events of the messages sent
    ``DELIVERY_LAG`` earlier (the ack batcher's), as ``audit_scale.fill``
    mixes them: a message's two events are never in one pack."""
    at = datetime.now(UTC)
    return [[message_events(g, at)[0] for g in range(first, last)],
            [message_events(g - DELIVERY_LAG, at)[1] for g in range(first, last)]]


#: Every table the audit log keeps (with their partitions, indexes and TOAST):
#: the log itself, and the backlog (``audit_backlog``, a buffer the
#: sequencer empties and vacuums every 10,000 events).
AUDIT_TABLES = ("audit_packs", "audit_subtrees", "audit_tree_heads", "audit_archived_leaves",
                "audit_backlog")


async def _sizes(conn: asyncpg.Connection, tables: Iterable[str]) -> dict[str, int]:
    """Bytes on disk (heap, TOAST, indexes) of each table, partitions included."""
    out = {}
    for table in tables:
        out[table] = int(await conn.fetchval(
            """SELECT CASE WHEN c.relkind = 'p'
                           THEN (SELECT sum(pg_total_relation_size(t.relid))
                                 FROM pg_partition_tree(c.oid) AS t)
                           ELSE pg_total_relation_size(c.oid) END
               FROM pg_class c WHERE c.oid = $1::regclass""", table))
    return out


async def audit_bytes(conn: asyncpg.Connection) -> dict[str, Any]:
    """Bytes on disk of the audit log and per event: the one measure
    ``loadtests.audit_storage`` and ``loadtests.scale`` report.

    ``bytes``: each of :data:`AUDIT_TABLES`; ``packs``: the packs'
    partitions split into heap, TOAST (its index included) and indexes
    (the GIN index's pending list included: up to ``gin_pending_list_limit``,
    4 MB, per partition, a fixed cost that weighs on small logs).
    """
    sizes = await _sizes(conn, AUDIT_TABLES)
    split = await conn.fetchrow(
        """SELECT coalesce(sum(pg_relation_size(t.relid, 'main') + pg_relation_size(t.relid, 'fsm')
                               + pg_relation_size(t.relid, 'vm')), 0) AS heap,
                  coalesce(sum(pg_total_relation_size(nullif(c.reltoastrelid, 0))), 0) AS toast,
                  coalesce(sum(pg_indexes_size(t.relid)), 0) AS indexes
           FROM pg_partition_tree('audit_packs') AS t JOIN pg_class c ON c.oid = t.relid
           WHERE t.isleaf""")
    events = await store.log_size(conn)
    total = sum(sizes.values())
    return {
        "events": events, "bytes": sizes, "total": total,
        "packs": {k: int(v) for k, v in split.items()},
        "bytes_per_event": round(total / events, 1) if events else None,
        "log_bytes_per_event":
            round((total - sizes["audit_backlog"]) / events, 1) if events else None,
    }


async def _write_path(url: str, events: int, work: Workspace, log: Any) -> dict[str, Any]:
    db = await Database.connect(url, min_size=2, max_size=6)
    keys = ServerKeys.load_or_create(work.path("keys"))
    sequencer = Sequencer(db, keys.audit, sign_interval=5.0)
    audit = AuditLog()
    lags: list[tuple[int, float]] = []
    messages = events // 2
    next_message = 0

    async def writer() -> None:
        nonlocal next_message
        while next_message < messages:
            first = next_message
            next_message += _BATCH
            for batch in _batches(first, min(first + _BATCH, messages)):
                async with db.transaction() as conn:
                    await audit.record(conn, *batch)

    async def sampler() -> None:
        while True:
            async with db.pool.acquire() as conn:
                lags.append(await store.sequencing_backlog(conn))
            await asyncio.sleep(0.2)

    try:
        sequencer.start()
        watch = asyncio.create_task(sampler())
        started = time.perf_counter()
        await asyncio.gather(writer(), writer())
        written = time.perf_counter() - started
        log(f"wrote {events} events in {written:.1f}s")
        while True:
            async with db.pool.acquire() as conn:
                waiting, _ = await store.sequencing_backlog(conn)
            if waiting == 0:
                break
            await asyncio.sleep(0.05)
        drained = time.perf_counter() - started - written
        watch.cancel()
        await asyncio.gather(watch, return_exceptions=True)
        async with db.pool.acquire() as conn:
            sizes = await audit_bytes(conn)
        return {
            "write_s": round(written, 2),
            "events_per_s": round(events / written),
            "lag_max_events": max(w for w, _ in lags),
            "lag_max_age_s": round(max(a for _, a in lags), 3),
            "lag_p95_age_s": round(sorted(a for _, a in lags)[int(len(lags) * 0.95)], 3),
            "drain_after_s": round(drained, 3),
            "sequenced_by_this_sequencer": sequencer.sequenced,
            **sizes,
        }
    finally:
        await sequencer.stop()
        await db.close()


async def _old_layout(url: str, events: int) -> dict[str, Any]:
    """The same number of events in the tables before 0010 (it moved the log into packs)."""
    conn = await asyncpg.connect(url)
    try:
        await migrations.migrate(conn, before=10)
        await fill_old_layout(conn, events)
        sizes = await _sizes(conn, ["audit_events", "audit_log", "audit_subtrees"])
        return {"bytes": sizes, "bytes_per_event": round(sum(sizes.values()) / events, 1)}
    finally:
        await conn.close()


async def _queries(url: str, events: int, log: Any) -> dict[str, Any]:
    conn = await asyncpg.connect(url)
    try:
        await migrations.migrate(conn)
        started = time.perf_counter()
        await fill(conn, events, log=log)
        filled = time.perf_counter() - started
        since = datetime.now(UTC) - timedelta(days=1)
        times = []
        for i in range(50):
            official = uuid.UUID(_uuid(f"o{i * 97 % _OFFICIALS}"))
            t = time.perf_counter()
            rows = await store.query_events(
                conn, scope=None, official=official, device=None, agencies=None, kinds=None,
                since=since, until=None, after_id=0, limit=100)
            times.append(time.perf_counter() - t)
            assert rows, "an official with no events in the last day"
        plan = await conn.fetch(
            "EXPLAIN " + store.PACKS_QUERY.format(
                involves=" AND audit_pack_ids(events) && $6::uuid[]", next_page="$2 < 0"),
            0, -1, since, None, 64, [uuid.UUID(_uuid("o1"))])
        return {
            "events": events, "fill_s": round(filled, 1),
            "official_last_day_p50_ms": round(statistics.median(times) * 1000, 2),
            "official_last_day_p95_ms": round(sorted(times)[47] * 1000, 2),
            "rows_returned": len(rows),
            "analysed": bool(await conn.fetchval(
                "SELECT bool_or(last_analyze IS NOT NULL OR last_autoanalyze IS NOT NULL)"
                " FROM pg_stat_user_tables WHERE relname LIKE 'audit_packs_%'")),
            "plan": [r[0] for r in plan],
        }
    finally:
        await conn.close()


async def run(events: int, query_events: int, log: Any) -> dict[str, Any]:
    dbs = [TempDatabase() for _ in range(3)]
    work = Workspace()
    try:
        for db in dbs:
            await db.create()
        conn = await asyncpg.connect(dbs[0].url)
        try:
            await migrations.migrate(conn)
            await _directory(conn)
        finally:
            await conn.close()
        log("write path")
        result: dict[str, Any] = {"write_path": await _write_path(dbs[0].url, events, work, log)}
        log("old layout")
        result["old_layout"] = await _old_layout(dbs[1].url, events)
        result["old_over_new_bytes"] = round(
            result["old_layout"]["bytes_per_event"] / result["write_path"]["bytes_per_event"], 2)
        if query_events:
            log("queries")
            result["queries"] = await _queries(dbs[2].url, query_events, log)
        return result
    finally:
        for db in dbs:
            await db.drop()
        work.cleanup()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m loadtests.audit_storage")
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--query-events", type=int, default=1_000_000)
    args = parser.parse_args(argv)

    def log(line: str) -> None:
        print(line, file=sys.stderr, flush=True)

    print(json.dumps(asyncio.run(run(args.events, args.query_events, log)), indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
