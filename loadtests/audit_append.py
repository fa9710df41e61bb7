"""The audit sequencer's PostgreSQL CPU per event in steady passes, checkouts alternated.

    python -m loadtests.audit_append --variant before=/path/to/checkout --variant after=. \\
        [--rows 4] [--passes 300] [--rounds 4] [--messages 20000]

Why: in a relay phase the sequencer's backend is one of several on a
shared machine, and its passes are a few milliseconds each; what one of
them costs PostgreSQL per event is lost in the noise of the sends. This
builds a relay-shaped backlog once (``--messages`` sends through the real
committer, 100 at a time, and their acks through the real ack statement,
130 positions a batch: rows of about 100 "message.accepted" and 130
"message.delivered" events) in a database of its own, and keeps its rows.
Each run (a variant's checkout first on ``sys.path``, on a fresh database
its own migrations made) then replays them as the sequencer sees them at
capacity: ``--rows`` backlog rows are written (one statement and
transaction each, as the send and ack statements write them), then one pass
-- the read (``unsequenced``), the tree extended on the node, the append
(``append_events``), the backlog's vacuum every 10,000 events as the
sequencer does -- and again, ``--passes`` times after 5 of warm-up. It
reports the CPU of the pass's PostgreSQL backend (``/proc/<pid>/stat``)
and of this process during the passes only, per event, the log's bytes on
disk per event, and a digest of every pack and subtree root written:
variants must store the same bytes (the run fails if they do not). Rounds
alternate the variants' order as ``loadtests.send_cost`` does.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from loadtests.send_cost import _cpu_seconds, alternate, print_medians

_WARM_UP = 5
_VACUUM_EVERY = 10_000  # as the sequencer's default
_DIGEST = """SELECT (SELECT md5(string_agg(md5(row(first_leaf, at, min_at, min_id, max_id,
                                                   hashes, events)::text), '' ORDER BY first_leaf))
                     FROM audit_packs),
                    (SELECT md5(string_agg(md5(row(height, idx, hash)::text), ''
                                           ORDER BY height, idx)) FROM audit_subtrees)"""

#: The parties' GIN index's pending list (up to 4 MB whatever the log's size)
#: merged, then the log's bytes on disk (packs: heap, TOAST, every index).
_MERGE = """SELECT gin_clean_pending_list(c.oid) FROM pg_class c
            JOIN pg_am a ON a.oid = c.relam AND a.amname = 'gin'
            WHERE c.relkind = 'i' AND c.relname LIKE 'audit_packs%'"""
_LOG_BYTES = """SELECT sum(pg_total_relation_size(relid))
                FROM pg_partition_tree('audit_packs')"""


async def build(messages: int, url: str) -> None:
    """Fill the database at ``url`` with the rows of a relay-shaped backlog
    (table ``feed``, in the order the sequencer takes them).

    They are made on a database of their own, where no sequencer runs."""
    import asyncpg

    from gchat.store import messages as store_messages
    from gchat.store.messages import NewMessage, StoredMessage
    from loadtests.send_cost import seeded_committer

    senders = 100
    async with seeded_committer(senders, pool=10) as (temp, db, committer, pairs):

        async def send(first: int) -> None:
            for k in range(first, messages, senders):
                sender_official, sender, recipient_official, recipient = pairs[k % senders]
                result = await committer.submit(NewMessage(
                    uuid.uuid4(), sender, sender_official, recipient_official, f"c{k}",
                    datetime.now(UTC), [(recipient, os.urandom(348))]))
                assert isinstance(result, StoredMessage)

        await asyncio.gather(*(send(i) for i in range(senders)))
        rows = await db.pool.fetch(
            """SELECT i.device_id, d.official_id, i.position FROM inbox i
               JOIN devices d ON d.id = i.device_id ORDER BY i.message_id""")
        for start in range(0, len(rows), 130):  # an ack batch: a few positions of many devices
            acks: dict[tuple[Any, Any], list[int]] = {}
            for device, official, position in rows[start : start + 130]:
                acks.setdefault((device, official), []).append(position)
            await store_messages.delete_acked_many(
                db.pinned, [(d, o, sorted(p)) for (d, o), p in acks.items()], datetime.now(UTC))
        feed = await db.pool.fetch(
            "SELECT created_at, leaf_hashes, entries FROM audit_backlog ORDER BY xid, id")
    conn = await asyncpg.connect(url)
    try:
        await conn.execute("""CREATE TABLE feed (n bigint, created_at timestamptz,
                                                 leaf_hashes bytea, entries bytea[])""")
        await conn.copy_records_to_table(
            "feed", records=[(n, *r) for n, r in enumerate(feed)])
    finally:
        await conn.close()


async def one(feed_url: str, rows: int, passes: int) -> dict[str, Any]:
    """One run in this process, with whatever ``gchat`` is first on ``sys.path``."""
    import asyncpg

    from gchat.audit.merkle import MerkleAccumulator
    from gchat.store import audit as store
    from gchat.store import migrations
    from loadtests.harness import TempDatabase

    source = await asyncpg.connect(feed_url)
    try:
        feed = await source.fetch("SELECT created_at, leaf_hashes, entries FROM feed ORDER BY n")
    finally:
        await source.close()
    temp = TempDatabase()
    url = await temp.create()
    conn = await asyncpg.connect(url)
    writer = await asyncpg.connect(url)
    try:
        await migrations.migrate(conn)
        await store.pin_index_plans(conn)
        times = [r["created_at"] for r in feed]
        await store.ensure_partitions(conn, [min(times), max(times) + timedelta(hours=1)])
        pid = await conn.fetchval("SELECT pg_backend_pid()")
        tree = MerkleAccumulator()
        horizon = store.Horizon("0")
        after: datetime | None = None
        written = moved = events = 0
        db_cpu = node_cpu = wall = 0.0
        for p in range(_WARM_UP + passes):
            for _ in range(rows):  # each row its own statement and transaction, as written
                row = feed[written % len(feed)]
                # Each replay of the feed a minute later: times never go back.
                at = row["created_at"] + timedelta(minutes=written // len(feed))
                await writer.execute(
                    "INSERT INTO audit_backlog (created_at, leaf_hashes, entries)"
                    " VALUES ($1, $2, $3)", at, row["leaf_hashes"], row["entries"])
                written += 1
            db0, node0, wall0 = _cpu_seconds(pid), time.process_time(), time.perf_counter()
            got = await store.unsequenced(conn, horizon, 2_000)
            first = tree.size
            subtrees = tree.extend(
                [got.hashes[i : i + 32] for i in range(0, len(got.hashes), 32)])
            after = await store.append_events(conn, first, got, after, subtrees)
            horizon = got.horizon
            moved += len(got)
            if moved >= _VACUUM_EVERY:
                moved = 0
                await store.vacuum_backlog(conn)
            if p >= _WARM_UP:
                db_cpu += _cpu_seconds(pid) - db0
                node_cpu += time.process_time() - node0
                wall += time.perf_counter() - wall0
                events += len(got)
        packs, subtrees_digest = await writer.fetchrow(_DIGEST)
        await writer.execute(_MERGE)
        stored = await writer.fetchval(_LOG_BYTES)
        size = await writer.fetchval("SELECT audit_log_size()")
        assert size == tree.size, (size, tree.size)
    finally:
        await conn.close()
        await writer.close()
        await temp.drop()
    us = 1e6 / events
    return {"events_per_pass": events / passes, "seq_db_us": us * db_cpu,
            "seq_node_us": us * node_cpu, "seq_wall_us": us * wall,
            "log_bytes": int(stored) / tree.size,
            "digest": f"{packs}/{subtrees_digest}", "load": os.getloadavg()[0]}


_FIGURES = ("seq_db_us", "seq_node_us", "seq_wall_us", "log_bytes")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--variant", action="append", default=[], help="NAME=CHECKOUT")
    parser.add_argument("--rows", type=int, default=4, help="backlog rows a pass (~115 events)")
    parser.add_argument("--passes", type=int, default=300)
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--messages", type=int, default=20_000, help="sends behind the feed")
    parser.add_argument("--one", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        import uvloop

        feed, rows, passes = args.one
        print(json.dumps(uvloop.run(one(feed, int(rows), int(passes)))))
        return
    if len(args.variant) < 2:
        sys.exit("give at least two --variant NAME=CHECKOUT")
    import uvloop

    from loadtests.harness import TempDatabase

    feed = TempDatabase()
    try:
        uvloop.run(build(args.messages, uvloop.run(feed.create())))
        variants = [(name, Path(path).resolve(),
                     ["--one", feed.url, str(args.rows), str(args.passes)])
                    for name, path in (v.split("=", 1) for v in args.variant)]
        got = alternate(str(Path(__file__).resolve()), variants, args.rounds)
    finally:
        uvloop.run(feed.drop())
    digests = {run["digest"] for runs in got.values() for run in runs}
    same = "identical" if len(digests) == 1 else "DIFFERENT"
    print(f"\n{args.rows} rows a pass, {args.passes} passes, medians of {args.rounds}"
          f" (per event, microseconds); stored bytes {same}:")
    print_medians(got, _FIGURES)
    if len(digests) != 1:
        sys.exit("the variants stored different packs or subtree roots")


if __name__ == "__main__":
    main()
