"""The send committer under load, alone: throughput, latency and CPU per send, variants alternated.

    python -m loadtests.commit_load --variant one=.:1 --variant two=.:2 [--rate 3300] \\
        [--rounds 3] [--seconds 4]

Why: the relay's phases measure the whole node (websockets, delivery, the
load generator beside it), and on a shared machine their throughput and
latency swing by a third between runs minutes apart. This drives only
``SendCommitter`` with the node's check (``check_batch``) and audit log:
200 pairs, closed loop (each sender with 2 sends waiting for their answer,
as the relay's), or with ``--rate`` sends at that fixed rate (latency from
the intended send time). It reports sends per second, p50 and p99 submit
to answer, and CPU per send of this process (the node's share) and of the
pool's PostgreSQL backends. A variant is ``NAME=CHECKOUT:LANES`` (its
``gchat``, run with that many commit lanes; checkouts without lanes take
1); each runs in its own process, rounds alternating A B, B A, ..., each
on a fresh database (as ``loadtests.send_cost``).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from loadtests.send_cost import alternate, backends_of, sample, seeded_committer

_PAIRS = 200
_IN_FLIGHT = 2
_WARM_UP = 1.0


async def one(lanes: int, rate: float, seconds: float) -> dict[str, Any]:
    """One run in this process, with whatever ``gchat`` is first on ``sys.path``."""
    from gchat.store.messages import NewMessage

    async with seeded_committer(_PAIRS, lanes, pool=20) as (_, db, committer, pairs):
        latencies: list[float] = []
        running = True

        async def send(k: int, due: float) -> None:
            sender_official, sender, recipient_official, recipient = pairs[k % _PAIRS]
            await committer.submit(NewMessage(
                uuid.uuid4(), sender, sender_official, recipient_official, uuid.uuid4().hex,
                datetime.now(UTC), [(recipient, os.urandom(348))]))
            latencies.append(time.perf_counter() - due)

        async def closed(k: int) -> None:
            while running:
                await send(k, time.perf_counter())

        async def paced() -> None:
            start, k, waiting = time.perf_counter(), 0, set()
            while running:
                due = start + k / rate
                if due > time.perf_counter():
                    await asyncio.sleep(due - time.perf_counter())
                task = asyncio.create_task(send(k, due))
                waiting.add(task)
                task.add_done_callback(waiting.discard)
                k += 1
            await asyncio.gather(*waiting)

        tasks = ([asyncio.create_task(paced())] if rate else
                 [asyncio.create_task(closed(k)) for k in range(_PAIRS * _IN_FLIGHT)])
        await asyncio.sleep(_WARM_UP)
        backends = await backends_of(db)
        latencies.clear()
        db0, node0, wall0 = sample(backends)
        await asyncio.sleep(seconds)
        db1, node1, wall1 = sample(backends)
        measured = sorted(latencies)
        running = False
        await asyncio.gather(*tasks)
        sends = len(measured)
        return {"sends_per_s": sends / (wall1 - wall0),
                "p50_ms": 1000 * measured[sends // 2], "p99_ms": 1000 * measured[sends * 99 // 100],
                "node_ms": 1000 * (node1 - node0) / sends, "db_ms": 1000 * (db1 - db0) / sends,
                "batches": committer.batches, "load": os.getloadavg()[0]}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--variant", action="append", default=[], metavar="NAME=CHECKOUT:LANES")
    parser.add_argument("--rate", type=float, default=0.0, help="sends/s (default: closed loop)")
    parser.add_argument("--seconds", type=float, default=4.0)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--one", type=int, metavar="LANES", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one is not None:
        import uvloop

        print(json.dumps(uvloop.run(one(args.one, args.rate, args.seconds))), flush=True)
        return 0
    variants = []
    for spec in args.variant:
        name, _, rest = spec.partition("=")
        path, _, lanes = rest.rpartition(":")
        variants.append((name, Path(path).absolute(), int(lanes)))
    if len(variants) < 2:
        raise SystemExit("give at least two --variant NAME=CHECKOUT:LANES")
    got = alternate(
        __file__,
        [
            (name, checkout, ["--one", str(lanes), "--rate", str(args.rate),
                              "--seconds", str(args.seconds)])
            for name, checkout, lanes in variants
        ],
        args.rounds,
    )
    base = variants[0][0]
    keys = ("sends_per_s", "p50_ms", "p99_ms", "node_ms", "db_ms")
    medians = {name: {k: statistics.median(run[k] for run in runs) for k in keys}
               for name, runs in got.items()}
    print(f"| median of {args.rounds} | " + " | ".join(medians) + " |")
    print("|---" * (len(medians) + 1) + "|")
    for k in keys:
        print(f"| {k} | " + " | ".join(
            f"{m[k]:,.3f} ({m[k] / medians[base][k]:.2f}x)" for m in medians.values()) + " |")
    print(f"load average after: {os.getloadavg()}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
