"""PostgreSQL's cost of the audit backlog per event: written in batches, then sequenced.

    python -m loadtests.audit_backlog --variant before=/path/to/checkout --variant after=. \\
        [--events 20000] [--batches 1,4,32] [--rounds 3]

Why: every message writes two audit events into the backlog (its commit
batch's "message.accepted", its ack batch's "message.delivered") and the
sequencer moves them into the log; a relay phase on a shared machine is too
noisy to show what the backlog's shape costs PostgreSQL. For each batch
size B this writes ``--events`` "message.delivered" events through
the node's encoder and ``insert_events`` (as ``AuditLog.record_delivered``
did until the ack's delete made them in SQL), B per statement (an ack batch of B
envelopes; one at low load) and 256 per transaction (so that the
statements are measured, not the commits), then starts the real sequencer and waits until
every event has a leaf. Each phase reports the CPU of the database's
backends (``/proc/<pid>/stat``) and the WAL written (``pg_current_wal_lsn``,
cluster-wide: run it on a cluster of its own), per event; the sequencer's
also this process's CPU (its hashing). Variants run alternated as in
``loadtests.send_cost`` (``--variant NAME=CHECKOUT``), each round on a fresh
database (``GCHAT_LOADTEST_DATABASE_URL``).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import uuid
from pathlib import Path
from typing import Any

from loadtests.send_cost import alternate, print_medians, sample


async def _wal(conn: Any) -> int:
    return int(await conn.fetchval("SELECT pg_current_wal_lsn() - '0/0'::pg_lsn"))


async def _logged(probe: Any, size: int) -> None:
    """Until the log holds ``size`` leaves (polled: the sequencer is in this process,
    but its progress is the database's)."""
    while await probe.fetchval("SELECT audit_log_size()") < size:  # noqa: ASYNC110
        await asyncio.sleep(0.005)


async def one(events: int, batch: int) -> dict[str, Any]:
    """One run in this process, with whatever ``gchat`` is first on ``sys.path``."""
    from datetime import UTC, datetime

    import asyncpg

    from gchat.audit.merkle import leaf_hash
    from gchat.audit.sequencer import Sequencer
    from gchat.runtime.server_keys import ServerKeys
    from gchat.store import audit as store
    from gchat.store import audit_codec as codec
    from gchat.store import migrations
    from gchat.store.database import Database
    from loadtests.harness import TempDatabase

    temp = TempDatabase()
    db = await Database.connect(await temp.create(), 2, 2)
    probe = await asyncpg.connect(temp.url)
    try:
        async with db.pool.acquire() as conn:
            await migrations.migrate(conn)
        encoder = codec.DeliveredCodec()

        async def record_delivered(conn: Any, deliveries: list[Any], agencies: Any) -> None:
            at = datetime.now(UTC)
            hashes, stored = [], []
            for entry, row in encoder.encode(deliveries, agencies, codec.time_text(at)):
                hashes.append(leaf_hash(entry))
                stored.append(row)
            await store.insert_events(conn, store.EncodedEvents(at, hashes, stored))

        officials = [uuid.uuid4() for _ in range(20)]
        agency = uuid.uuid4()
        agencies = dict.fromkeys(officials, agency)

        def deliveries(first: int) -> list[Any]:
            return [(officials[k % 20], uuid.uuid4(), uuid.uuid4(), k,
                     officials[(k + 1) % 20], uuid.uuid4()) for k in range(first, first + batch)]

        async def write(count: int) -> None:
            # Transactions of 256 events (or one batch), so that what is
            # measured is the statements, not the commits.
            step = max(batch, 256 // batch * batch)
            for start in range(0, count, step):
                async with db.transaction() as conn:
                    for first in range(start, min(count, start + step), batch):
                        await record_delivered(conn, deliveries(first), agencies)

        keys = ServerKeys.load_or_create(Path(f"/tmp/{temp.name}-keys"))
        sequencer = Sequencer(db, keys.audit, sign_interval=3600, poll_interval=0.01,
                              busy_poll_interval=0.01)
        sequencer.start()
        warm = -(-200 // batch) * batch
        events = -(-events // batch) * batch
        await write(warm)  # warm-up: plans cached, the sequencer elected
        await _logged(probe, warm)
        await sequencer.stop()
        backends = [r[0] for r in await db.pool.fetch(
            "SELECT pid FROM pg_stat_activity WHERE datname = current_database()"
            " AND pid <> $1", await probe.fetchval("SELECT pg_backend_pid()"))]
        wal0 = await _wal(probe)
        db0, node0, wall0 = sample(backends)
        await write(events)
        db1, node1, wall1 = sample(backends)
        wal1 = await _wal(probe)
        sequencer.start()
        await _logged(probe, warm + events)
        db2, node2, wall2 = sample(backends)
        wal2 = await _wal(probe)
        await sequencer.stop()
        size = await probe.fetchval("SELECT audit_log_size()")
        assert size == warm + events, size
    finally:
        await probe.close()
        await db.close()
        await temp.drop()
    us = 1e6 / events
    return {"batch": batch, "write_db_us": us * (db1 - db0), "write_node_us": us * (node1 - node0),
            "write_wal_b": (wal1 - wal0) / events, "seq_db_us": us * (db2 - db1),
            "seq_node_us": us * (node2 - node1), "seq_wal_b": (wal2 - wal1) / events,
            "seq_wall_ms": 1000 * (wall2 - wall1), "load": os.getloadavg()[0]}


_FIGURES = ("write_db_us", "write_wal_b", "seq_db_us", "seq_node_us", "seq_wal_b", "seq_wall_ms")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--variant", action="append", default=[], help="NAME=CHECKOUT")
    parser.add_argument("--events", type=int, default=20_000)
    parser.add_argument("--batches", default="1,4,32")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--one", nargs=2, type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        import uvloop

        print(json.dumps(uvloop.run(one(*args.one))))
        return
    if len(args.variant) < 2:
        sys.exit("give at least two --variant NAME=CHECKOUT")
    script = str(Path(__file__).resolve())
    for batch in (int(b) for b in args.batches.split(",")):
        variants = [(name, Path(path).resolve(), ["--one", str(args.events), str(batch)])
                    for name, path in (v.split("=", 1) for v in args.variant)]
        got = alternate(script, variants, args.rounds)
        print(f"\nbatch of {batch}, {args.events} events, medians of {args.rounds}:")
        print_medians(got, _FIGURES)


if __name__ == "__main__":
    main()
