"""The cost of the push check on the send path: push on vs off, one run.

    python -m loadtests.push_cost [--seconds 3] [--senders 64] [--rounds 4]

Drives the real send path below the socket -- ``SendCommitter`` committing
``store_batch`` in group-commit batches, with the node's after-commit hook
(broker wake-up, then ``PushNotifier.notify``) -- from many concurrent
senders against a database made for this run. No device has a push
subscription (the common case the per-commit hook must not slow down).
Four modes, push off or on, each with the recipients

- ``online``: every recipient has a listener on this node, as in a relay
  where recipients are connected: ``notify`` is a set lookup per recipient;
- ``offline``: no recipient is connected anywhere: every commit batch also
  runs the background lookup of subscriptions (one indexed query).

Each round runs the four modes in a rotated order (so that drift over the
run falls on every mode alike), on tables emptied before each mode.

Per round: messages/s, CPU milliseconds per 1,000 messages of this process
(senders, committer and notifier alike) and of the database's PostgreSQL
backends. Prints one JSON line per round and a summary with the ratios.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import time
from datetime import timedelta

from cryptography.hazmat.primitives.asymmetric import ec

from gchat.messaging.committer import SendCommitter
from gchat.push.notifier import LocalCoalescer, PushNotifier
from gchat.push.sender import WebPushSender
from gchat.runtime.broker import InProcessBroker, Signal, SignalKind
from gchat.store import migrations
from gchat.store.database import Database
from gchat.store.messages import NewMessage
from loadtests.audit_cost import Pair, _setup, send_for
from loadtests.harness import TempDatabase, backend_pids, cpu_seconds_of

MODES = ("off-online", "on-online", "off-offline", "on-offline")


async def _round(
    db: Database, mode: str, pairs: list[Pair], seconds: float, size: int
) -> dict[str, float]:
    """One round's figures (the mode is the caller's key, so every value is a number)."""
    broker = InProcessBroker()
    if mode.endswith("-online"):
        for _, _, _, r_dev in pairs:
            broker.subscribe(r_dev, lambda _signal: None)
    notifier = (
        None
        if mode.startswith("off")
        else PushNotifier(
            db,
            WebPushSender(ec.generate_private_key(ec.SECP256R1()), "mailto:bench@localhost"),
            LocalCoalescer(30.0),
            broker,
        )
    )
    wake = Signal(SignalKind.WAKE)

    async def after_commit(batch: list[NewMessage]) -> None:
        devices = {device for m in batch for device, _ in m.envelopes}
        await broker.publish(devices, wake)
        if notifier is not None:
            notifier.notify(devices)

    committer = SendCommitter(db, 256, timedelta(days=1), after_commit)
    committer.start()
    async with db.pool.acquire() as conn:
        pids = await backend_pids(conn)
    pg_before = cpu_seconds_of(pids)
    cpu_before = time.process_time()
    started = time.monotonic()
    sent = await send_for(committer, pairs, seconds, size)
    await committer.stop()
    if notifier is not None:
        await notifier.idle()  # the background lookups count too
    elapsed = time.monotonic() - started
    cpu = time.process_time() - cpu_before
    pg_after = cpu_seconds_of(pids)
    pg = sum(pg_after[p] - pg_before[p] for p in pg_after if p in pg_before)
    if notifier is not None:
        await notifier.close()
    await db.pool.execute("TRUNCATE inbox, messages CASCADE")  # keep rounds comparable
    return {
        "messages": sent,
        "batches": committer.batches,
        "seconds": round(elapsed, 3),
        "messages_per_second": round(sent / elapsed, 1),
        "process_cpu_ms_per_1k": round(1e6 * cpu / sent, 1),
        "postgres_cpu_ms_per_1k": round(1e6 * pg / sent, 1),
    }


async def main(seconds: float, senders: int, rounds: int, size: int) -> dict[str, object]:
    temp = TempDatabase()
    url = await temp.create()
    results: dict[str, list[dict[str, float]]] = {m: [] for m in MODES}
    try:
        db = await Database.connect(url, min_size=10, max_size=10)  # a fixed set of backends
        async with db.pool.acquire() as conn:
            await migrations.migrate(conn)
        pairs = await _setup(db, senders)
        await _round(db, "on-offline", pairs, 1.0, size)  # warm-up
        for i in range(rounds):
            for mode in MODES[i % len(MODES):] + MODES[: i % len(MODES)]:
                r = await _round(db, mode, pairs, seconds, size)
                print(json.dumps({"mode": mode, **r}), flush=True)
                results[mode].append(r)
        await db.close()
    finally:
        await temp.drop()

    def median(mode: str, key: str) -> float:
        return float(statistics.median(r[key] for r in results[mode]))

    summary: dict[str, object] = {
        "summary": "push check on the send path (SendCommitter, durable commits, no subscriptions)",
        "senders": senders,
        "rounds": rounds,
    }
    keys = ("messages_per_second", "process_cpu_ms_per_1k", "postgres_cpu_ms_per_1k")
    for recipients in ("online", "offline"):
        for key in keys:
            on, off = median(f"on-{recipients}", key), median(f"off-{recipients}", key)
            summary[f"{recipients}: {key} off -> on"] = f"{off} -> {on} (x{on / off:.3f})"
    print(json.dumps(summary), flush=True)
    return summary


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--senders", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--size", type=int, default=256, help="ciphertext bytes per message")
    args = parser.parse_args()
    asyncio.run(main(args.seconds, args.senders, args.rounds, args.size))
