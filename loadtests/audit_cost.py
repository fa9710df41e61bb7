"""The cost of auditing on the send path: throughput with audit on vs off, one run.

    python -m loadtests.audit_cost [--seconds 4] [--senders 64] [--rounds 3]

Drives the real send path below the socket -- ``SendCommitter`` committing
``store_batch`` (messages + inbox rows) in group-commit batches, exactly as
``Messaging.send`` does -- from many concurrent senders, against a database
made for this run (``GCHAT_LOADTEST_DATABASE_URL`` / ``GCHAT_TEST_DATABASE_URL``,
default postgres@127.0.0.1). Rounds alternate audit on / off (ABAB, so drift
hits both) on the same schema; with audit on, each batch also writes its
"message.accepted" events (one multi-row insert in the same transaction)
and the sequencer runs alongside, hashing and appending leaves. Prints one
JSON line per round and a summary with the ratio.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from tempfile import TemporaryDirectory

from gchat.audit.log import AuditLog
from gchat.audit.sequencer import Sequencer
from gchat.messaging.committer import SendCommitter
from gchat.runtime.server_keys import ServerKeys
from gchat.store import devices, directory, migrations
from gchat.store.database import Database
from gchat.store.messages import NewMessage
from loadtests.harness import TempDatabase

Pair = tuple[uuid.UUID, uuid.UUID, uuid.UUID, uuid.UUID]  # sender official/device, recipient's


async def _setup(db: Database, pairs: int) -> list[Pair]:
    agency = uuid.uuid4()
    out = []
    async with db.transaction() as conn:
        await directory.create_agency(conn, agency, "BENCH", "Bench")
        for i in range(pairs):
            ids = []
            for side in ("s", "r"):
                official, device = uuid.uuid4(), uuid.uuid4()
                await directory.create_official(conn, official, agency, f"{side}{i}")
                await devices.create(conn, device, official, os.urandom(32), b"cert", "d", "bench")
                ids += [official, device]
            out.append((ids[0], ids[1], ids[2], ids[3]))
    return out


async def send_for(committer: SendCommitter, pairs: list[Pair], seconds: float, size: int) -> int:
    """Each pair sends one message after the other for ``seconds``; how many were sent."""
    body = os.urandom(size)
    sent = 0
    stop = time.monotonic() + seconds

    async def sender(pair: Pair) -> None:
        nonlocal sent
        s_off, s_dev, r_off, r_dev = pair
        while time.monotonic() < stop:
            await committer.submit(
                NewMessage(
                    uuid.uuid4(), s_dev, s_off, r_off, uuid.uuid4().hex,
                    datetime.now(UTC), [(r_dev, body)],
                )
            )
            sent += 1

    await asyncio.gather(*(sender(p) for p in pairs))
    return sent


async def _round(
    db: Database,
    keys: ServerKeys,
    audit: bool,
    pairs: list[Pair],
    seconds: float,
    size: int,
) -> dict[str, object]:
    async def nothing(_: list[NewMessage]) -> None:
        return None

    committer = SendCommitter(
        db, 256, timedelta(days=1), nothing, audit=AuditLog(enabled=audit)
    )
    committer.start()
    sequencer = Sequencer(db, keys.audit, sign_interval=5.0) if audit else None
    if sequencer:
        sequencer.start()
    events_before = await db.pool.fetchval("SELECT count(*) FROM audit_events")
    started = time.monotonic()
    sent = await send_for(committer, pairs, seconds, size)
    elapsed = time.monotonic() - started
    await committer.stop()
    lag = 0
    if sequencer:
        # Let the sequencer finish what this round logged (not timed above).
        for _ in range(600):
            lag = await db.pool.fetchval(
                "SELECT (SELECT count(*) FROM audit_events) - (SELECT count(*) FROM audit_log)"
            )
            if lag == 0:
                break
            await asyncio.sleep(0.05)
        await sequencer.stop()
    events = await db.pool.fetchval("SELECT count(*) FROM audit_events") - events_before
    await db.pool.execute("DELETE FROM inbox")  # keep rounds comparable
    return {
        "audit": audit,
        "messages": sent,
        "seconds": round(elapsed, 3),
        "messages_per_second": round(sent / elapsed, 1),
        "batches": committer.batches,
        "audit_events": events,
    }


async def main(seconds: float, senders: int, rounds: int, size: int) -> dict[str, object]:
    temp = TempDatabase()
    url = await temp.create()
    try:
        db = await Database.connect(url, min_size=2, max_size=10)
        async with db.pool.acquire() as conn:
            await migrations.migrate(conn)
        pairs = await _setup(db, senders)
        with TemporaryDirectory() as keys_dir:
            keys = ServerKeys.load_or_create(Path(keys_dir))
            await _round(db, keys, True, pairs, 1.0, size)  # warm-up
            results: dict[bool, list[float]] = {True: [], False: []}
            for _ in range(rounds):
                for audit in (True, False):
                    r = await _round(db, keys, audit, pairs, seconds, size)
                    print(json.dumps(r), flush=True)
                    results[audit].append(float(r["messages_per_second"]))  # type: ignore[arg-type]
        await db.close()
    finally:
        await temp.drop()
    on, off = statistics.median(results[True]), statistics.median(results[False])
    summary = {
        "summary": "audit cost on the send path (SendCommitter, durable commits)",
        "senders": senders,
        "ciphertext_bytes": size,
        "audit_on_msgs_per_s_median": on,
        "audit_off_msgs_per_s_median": off,
        "throughput_ratio_on_over_off": round(on / off, 3),
        "cost_percent": round(100 * (1 - on / off), 1),
    }
    print(json.dumps(summary), flush=True)
    return summary


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=4.0)
    parser.add_argument("--senders", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--size", type=int, default=256, help="ciphertext bytes per message")
    args = parser.parse_args()
    asyncio.run(main(args.seconds, args.senders, args.rounds, args.size))
