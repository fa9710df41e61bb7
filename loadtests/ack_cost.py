"""CPU and time of an ack batch on the real ack path, node and PostgreSQL, checkouts alternated.

    python -m loadtests.ack_cost --variant before=/path/to/checkout --variant after=. \\
        [--batches 60] [--size 256] [--rounds 3]
    python -m loadtests.ack_cost --variant before=/path --variant after=. --rate 3000 \\
        [--seconds 8] [--rounds 6]

Why: an ack batch (its delete and its "message.delivered" audit events) is
work no message waits for, but it runs beside the send statement, and a
relay phase on a shared machine is too noisy to show what one costs. This
queues envelopes from 100 senders to 100 recipients (one per pair, as the
relay's pairs), then runs the node's own ack path (``Inbox._delete`` of the
checkout, with its audit log) on batches of ``--size`` positions spread over
the 100 devices (at 50% of capacity a batch is 256 positions, two or three
per device), one after the other, after a warm-up of 10. Per batch: this
process's CPU (the node's share), the PostgreSQL backends' CPU
(``/proc/<pid>/stat``) and the wall time (the batch's round trips and the
node's work between them: as long as its transaction stays open). Variants
run alternated as in ``loadtests.send_cost``, each round on a fresh
database.

``--rate R``: instead, sends at R a second through the real committer (its
check and audit log) for ``--seconds`` after a second's warm-up, each
envelope acked as its batch commits through the real ``Inbox`` (its linger
and batch size), in one process and loop as in the node, with the node's
pool sizes; the figures are the sends' latency (submit to answer) and the
CPU per message: what an ack batch does to the sends beside it, without
websockets or a load generator.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from loadtests.send_cost import alternate, backends_of, sample, seeded_database

_PAIRS = 100
_WARM_UP = 10


async def one(batches: int, size: int) -> dict[str, Any]:
    """One run in this process, with whatever ``gchat`` is first on ``sys.path``."""
    from gchat.audit.log import AuditLog
    from gchat.messaging.delivery import Inbox, PendingAck
    from gchat.store import messages
    from gchat.store.messages import NewMessage

    async with seeded_database(_PAIRS) as (_, db, pairs):
        per_pair = (batches + _WARM_UP) * -(-size // _PAIRS)
        ids = messages.MessageIds()
        expires = datetime.now(UTC) + timedelta(days=1)
        for k in range(per_pair):
            batch = [NewMessage(ids.new(), sd, so, ro, f"c{k}", datetime.now(UTC),
                                [(rd, os.urandom(348))]) for so, sd, ro, rd in pairs]
            async with db.transaction() as conn:
                await messages.store_batch(conn, batch, expires)
        inbox = Inbox(db, AuditLog())
        acked = dict.fromkeys(range(_PAIRS), 0)  # positions acked so far, per pair

        def next_batch() -> list[Any]:
            wanted: dict[int, list[int]] = {}
            for n in range(size):
                p = n % _PAIRS if size >= _PAIRS else (len(wanted) * 7 + n) % _PAIRS
                acked[p] += 1
                wanted.setdefault(p, []).append(acked[p])
            return [PendingAck(pairs[p][3], pairs[p][2], positions)
                    for p, positions in wanted.items()]

        for _ in range(_WARM_UP):
            await inbox._delete(next_batch())
        backends = await backends_of(db)
        walls = []
        db0, node0, _ = sample(backends)
        for _ in range(batches):
            acks = next_batch()
            start = time.perf_counter()
            got = await inbox._delete(acks)
            walls.append(time.perf_counter() - start)
            assert sum(got) == size, got
        db1, node1, _ = sample(backends)
        return {"node_ms": 1000 * (node1 - node0) / batches,
                "db_ms": 1000 * (db1 - db0) / batches,
                "wall_ms": 1000 * statistics.median(walls),
                "wall_p90_ms": 1000 * sorted(walls)[int(0.9 * len(walls))]}


async def beside_sends(rate: int, seconds: float) -> dict[str, Any]:
    """Sends at ``rate`` a second through the real committer (check, audit), each
    recipient's envelope acked as soon as its batch committed, through the real
    ``Inbox`` (its linger and batch size): the node's database work at that
    load, without websockets or a load generator. One process, one loop, as in
    the node. The figure is the sends' latency, submit to answer (the commit
    batch's wait and statement), and the CPU per message."""
    import uuid

    from gchat.audit.log import AuditLog
    from gchat.messaging import service as messaging
    from gchat.messaging.committer import SendCommitter
    from gchat.messaging.delivery import Inbox
    from gchat.store.messages import NewMessage, StoredMessage

    async with seeded_database(_PAIRS, 20) as (_, db, pairs):  # pool as the node's (db_pool_size)
        official_of = {recipient: official for _, _, official, recipient in pairs}
        audit = AuditLog()
        inbox = Inbox(db, audit)

        async def after_commit(batch: list[NewMessage]) -> None:
            for message in batch:
                for device, position, _ in message.placed:
                    inbox.ack(device, official_of[device], [position])

        committer = SendCommitter(db, 256, timedelta(days=1), after_commit, audit=audit,
                                  prepare=messaging.check_batch)
        committer.start()
        inbox.start()
        latencies: list[float] = []
        warm = 1.0
        try:
            loop = asyncio.get_running_loop()
            start = loop.time()

            async def send(k: int, due: float) -> None:
                sender_official, sender, recipient_official, recipient = pairs[k % _PAIRS]
                result = await committer.submit(NewMessage(
                    uuid.uuid4(), sender, sender_official, recipient_official, f"c{k}",
                    datetime.now(UTC), [(recipient, os.urandom(348))]))
                assert isinstance(result, StoredMessage)
                if due - start >= warm:
                    latencies.append(loop.time() - due)

            tasks = []
            backends: list[int] = []
            db0 = node0 = 0.0
            k = 0
            while (now := loop.time()) < start + warm + seconds:
                if not backends and now >= start + warm:
                    backends = await backends_of(db)
                    db0, node0, _ = sample(backends)
                while k < (now - start) * rate:
                    tasks.append(loop.create_task(send(k, start + k / rate)))
                    k += 1
                await asyncio.sleep(0.001)
            await asyncio.gather(*tasks)
            db1, node1, _ = sample(backends)
        finally:
            await inbox.stop()
            await committer.stop()
        done = len(latencies)
        latencies.sort()
        return {"p50_ms": 1000 * latencies[done // 2], "p99_ms": 1000 * latencies[done * 99 // 100],
                "node_ms": 1000 * (node1 - node0) / done, "db_ms": 1000 * (db1 - db0) / done,
                "load": os.getloadavg()[0]}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--variant", action="append", default=[], metavar="NAME=CHECKOUT")
    parser.add_argument("--batches", type=int, default=60)
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--rate", type=int, default=0,
                        help="instead: sends at this rate with their acks (``beside_sends``)")
    parser.add_argument("--seconds", type=float, default=8.0)
    parser.add_argument("--one", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        run = one(args.batches, args.size) if not args.rate else beside_sends(
            args.rate, args.seconds)
        print(json.dumps(asyncio.run(run)), flush=True)
        return 0
    variants = [(name, Path(path).absolute()) for name, _, path in
                (spec.partition("=") for spec in args.variant)]
    if len(variants) < 2:
        raise SystemExit("give at least two --variant NAME=CHECKOUT")
    argv = ["--one", "--batches", str(args.batches), "--size", str(args.size),
            "--rate", str(args.rate), "--seconds", str(args.seconds)]
    got = alternate(__file__, [(name, checkout, argv) for name, checkout in variants], args.rounds)
    base = variants[0][0]
    if args.rate:
        for name, runs in got.items():
            m = {k: statistics.median(run[k] for run in runs)
                 for k in ("p50_ms", "p99_ms", "node_ms", "db_ms")}
            b = {k: statistics.median(run[k] for run in got[base]) for k in m}
            each = "/".join(f"{run['p99_ms']:.1f}" for run in runs)
            print(f"{name:>10}: sends at {args.rate}/s with their acks: p50 {m['p50_ms']:.2f} ms "
                  f"({m['p50_ms'] / b['p50_ms']:.2f}x), p99 {m['p99_ms']:.2f} ms "
                  f"({m['p99_ms'] / b['p99_ms']:.2f}x), per message node {m['node_ms']:.3f} ms "
                  f"+ PostgreSQL {m['db_ms']:.3f} ms (median of {args.rounds} rounds; each "
                  f"round's p99 {each})")
        print(f"load average after: {os.getloadavg()}", flush=True)
        return 0
    keys = ("node_ms", "db_ms", "wall_ms", "wall_p90_ms")
    medians = {name: {k: statistics.median(run[k] for run in runs) for k in keys}
               for name, runs in got.items()}
    for name, m in medians.items():
        b = medians[base]
        print(f"{name:>10}: per {args.size}-position batch node {m['node_ms']:.3f} ms "
              f"({m['node_ms'] / b['node_ms']:.2f}x), PostgreSQL {m['db_ms']:.3f} ms "
              f"({m['db_ms'] / b['db_ms']:.2f}x), wall p50 {m['wall_ms']:.3f} ms "
              f"({m['wall_ms'] / b['wall_ms']:.2f}x), p90 {m['wall_p90_ms']:.3f} ms "
              f"(median of {args.rounds} rounds)")
    print(f"load average after: {os.getloadavg()}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
