"""CPU of one send at a time on the real send path, node and PostgreSQL, checkouts alternated.

    python -m loadtests.send_cost --variant before=/path/to/checkout --variant after=. \\
        [--sends 1000] [--rounds 3] [--grow 200000]

Why: at low load every send is a batch of one, so each statement of a send
transaction is paid per message, and the relay's fixed-rate figures on a
shared machine are too noisy to show a change of a few statements. This
drives ``SendCommitter`` with the node's check (``check_batch``) and audit
log, one send after the other (each its own batch), and measures process
CPU time: this process's (the node's share) and that of the pool's
PostgreSQL backends (``/proc/<pid>/stat``), per send, after a warm-up of
100 sends (plans and caches); and the wall time per send, submit to
answer, one after the other (the committer's share of a lone send's
latency). Each variant runs in its own process with
its checkout's ``gchat`` first on ``sys.path``, rounds alternating A B, B A,
..., each on a fresh database (``GCHAT_LOADTEST_DATABASE_URL`` /
``GCHAT_TEST_DATABASE_URL``, default postgres@127.0.0.1). Prints one JSON
line per run and the medians with their ratios to the first variant.

Each run also measures the floor under a lone send: the same number of
transactions that each insert one row of a ciphertext's size into a plain
(logged) table and commit, one after the other on a connection of their
own (``floor_node_ms``, ``floor_db_ms``). That is what any server that
stores a message durably before answering pays per message when every
message is its own transaction (at low load), whatever its schema: on
these machines most of a lone send's PostgreSQL CPU is this floor's
(docs/PERFORMANCE.md, "lead, 2026-12-05").

``--grow N``: after the warm-up (on tables of a few rows, so the
connections have cached their plans), N more officials with a device each
are inserted, and nobody runs ``ANALYZE``: what a send costs on a node
started on a young database that grew since.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import inspect
import json
import os
import statistics
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

_PAIRS = 50
_WARM_UP = 100


def _cpu_seconds(pid: int) -> float:
    """CPU seconds of a one-threaded process (a PostgreSQL backend), to the
    nanosecond: its time on a CPU in ``/proc/PID/schedstat``. ``/proc/PID/stat``
    counts clock ticks (10 ms), 0.1 ms a batch over 100 batches, too coarse
    for a change of a few percent; it is the fallback where the kernel keeps
    no schedstat."""
    try:
        return int(Path(f"/proc/{pid}/schedstat").read_text().split()[0]) / 1e9
    except FileNotFoundError:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def seed_pairs(db: Any, count: int) -> list[list[uuid.UUID]]:
    """``count`` x (sender official, its device, recipient official, its device),
    in one new agency, written through the ``gchat`` first on ``sys.path``
    (``db``: its ``Database``). tests/store/test_pinned_plans.py seeds with it too."""
    from gchat.store import devices, directory

    agency, pairs = uuid.uuid4(), []
    async with db.transaction() as conn:
        await directory.create_agency(conn, agency, "BENCH", "Bench")
        for i in range(count):
            ids = []
            for side in "sr":
                official, device = uuid.uuid4(), uuid.uuid4()
                await directory.create_official(conn, official, agency, f"{side}{i}")
                await devices.create(conn, device, official, os.urandom(32), b"c", "d", "p")
                ids += [official, device]
            pairs.append(ids)
    return pairs


async def grow_directory(database_url: str, rows: int) -> None:
    """``rows`` more officials, a device each, in the first agency, and no ``ANALYZE``.

    On a connection of its own: the pools' connections have cached plans
    (foreign key checks included) made on the small tables, which is what
    the growth is to test.
    """
    import asyncpg

    conn = await asyncpg.connect(database_url)
    try:
        agency = await conn.fetchval("SELECT id FROM agencies ORDER BY id LIMIT 1")
        await conn.execute(
            """INSERT INTO officials (id, agency_id, name_en)
               SELECT gen_random_uuid(), $1, 'grown ' || g FROM generate_series(1, $2) g""",
            agency, rows)
        await conn.execute(
            """INSERT INTO devices (id, official_id, identity_key, certificate, name, platform)
               SELECT gen_random_uuid(), o.id, sha256(o.id::text::bytea), 'c', 'd', 'p'
               FROM officials o WHERE o.name_en LIKE 'grown %'""")
    finally:
        await conn.close()


def sample(backends: list[int]) -> tuple[float, float, float]:
    """CPU seconds of the backends and of this process, and the wall clock."""
    return sum(map(_cpu_seconds, backends)), time.process_time(), time.perf_counter()


@contextlib.asynccontextmanager
async def seeded_database(
    pair_count: int, pool: int = 2, **connect: Any
) -> AsyncIterator[tuple[Any, Any, list[list[uuid.UUID]]]]:
    """A fresh, migrated database with ``pair_count`` pairs of officials: (the
    temporary database, the ``Database``, the pairs). Closed and dropped after."""
    from gchat.store import migrations
    from gchat.store.database import Database
    from loadtests.harness import TempDatabase

    temp = TempDatabase()
    db = await Database.connect(await temp.create(), 2, pool, **connect)
    try:
        async with db.pool.acquire() as conn:
            await migrations.migrate(conn)
        yield temp, db, await seed_pairs(db, pair_count)
    finally:
        await db.close()
        await temp.drop()


@contextlib.asynccontextmanager
async def seeded_committer(
    pair_count: int, lanes: int = 1, pool: int = 2
) -> AsyncIterator[tuple[Any, Any, Any, list[list[uuid.UUID]]]]:
    """The real committer (with its check and audit log) running on a fresh,
    migrated database with ``pair_count`` pairs of officials: (the temporary
    database, the Database, the committer, the pairs). ``lanes`` where the
    checkout has commit lanes. Stopped and dropped after."""
    from gchat.audit.log import AuditLog
    from gchat.messaging import service as messaging
    from gchat.messaging.committer import SendCommitter
    from gchat.store.messages import NewMessage

    laned = "lanes" in inspect.signature(SendCommitter).parameters
    async with seeded_database(
        pair_count, pool, **({"commit_lanes": lanes} if laned else {})
    ) as (temp, db, pairs):

        async def after_commit(batch: list[NewMessage]) -> None:
            return None

        make: Any = SendCommitter
        committer = make(
            db, 256, timedelta(days=1), after_commit, audit=AuditLog(),
            prepare=messaging.check_batch, **({"lanes": lanes} if laned else {}),
        )
        committer.start()
        try:
            yield temp, db, committer, pairs
        finally:
            await committer.stop()


async def backends_of(db: Any) -> list[int]:
    """The PIDs of the database's backends (their CPU is the send's)."""
    rows = await db.pool.fetch(
        "SELECT pid FROM pg_stat_activity WHERE datname = current_database()"
    )
    return [r[0] for r in rows]


async def one(sends: int, grow: int = 0) -> dict[str, Any]:
    """One run in this process, with whatever ``gchat`` is first on ``sys.path``."""
    import gchat
    from gchat.store.messages import NewMessage, StoredMessage

    async with seeded_committer(_PAIRS) as (temp, db, committer, pairs):

        async def send(first: int, count: int) -> None:
            for k in range(first, first + count):
                sender_official, sender, recipient_official, recipient = pairs[k % _PAIRS]
                result = await committer.submit(NewMessage(
                    uuid.uuid4(), sender, sender_official, recipient_official, f"c{k}",
                    datetime.now(UTC), [(recipient, os.urandom(348))]))
                assert isinstance(result, StoredMessage) and not result.duplicate

        await send(0, _WARM_UP)
        if grow:
            await grow_directory(temp.url, grow)
        backends = await backends_of(db)
        db0, node0, wall0 = sample(backends)
        await send(_WARM_UP, sends)
        db1, node1, wall1 = sample(backends)
        floor_node_ms, floor_db_ms = await durable_floor(db, sends)
    return {"node_ms": 1000 * (node1 - node0) / sends, "db_ms": 1000 * (db1 - db0) / sends,
            "wall_ms": 1000 * (wall1 - wall0) / sends,
            "floor_node_ms": floor_node_ms, "floor_db_ms": floor_db_ms,
            "backends": len(backends), "load": os.getloadavg()[0], "grown": grow,
            "gchat": str(Path(gchat.__file__).parent)}


async def durable_floor(db: Any, transactions: int) -> tuple[float, float]:
    """CPU ms per transaction (this process's, its backend's) of ``transactions``
    one-row inserts of a ciphertext's size, each committed on its own."""
    async with db.pool.acquire() as conn:
        await conn.execute("CREATE TABLE send_cost_floor (id bigserial PRIMARY KEY, c bytea)")
        insert = await conn.prepare("INSERT INTO send_cost_floor (c) VALUES ($1)")
        backend = await conn.fetchval("SELECT pg_backend_pid()")
        for _ in range(_WARM_UP):
            await insert.fetch(os.urandom(348))
        db0, node0, _ = sample([backend])
        for _ in range(transactions):
            await insert.fetch(os.urandom(348))
        db1, node1, _ = sample([backend])
        await conn.execute("DROP TABLE send_cost_floor")
    return 1000 * (node1 - node0) / transactions, 1000 * (db1 - db0) / transactions


def alternate(
    script: str, variants: list[tuple[str, Path, list[str]]], rounds: int
) -> dict[str, list[dict[str, Any]]]:
    """Run ``script`` once per variant and round, the order reversed every
    other round (a drifting machine then weighs on each alike), with the
    variant's checkout's gchat first on the path and its own arguments;
    each run's last printed line, parsed as JSON, by variant."""
    here = Path(__file__).resolve().parent.parent
    got: dict[str, list[dict[str, Any]]] = {name: [] for name, _, _ in variants}
    print(f"load average before: {os.getloadavg()}", flush=True)
    for r in range(rounds):
        for name, checkout, argv in variants if r % 2 == 0 else variants[::-1]:
            env = os.environ | {"PYTHONPATH": f"{checkout}{os.pathsep}{here}"}
            out = subprocess.run(
                [sys.executable, script, *argv],
                cwd=checkout, env=env, check=True, capture_output=True, text=True).stdout
            run = json.loads(out.strip().splitlines()[-1])
            got[name].append(run)
            print(json.dumps({"variant": name, "round": r + 1} | run), flush=True)
    return got



def print_medians(got: dict[str, list[dict[str, Any]]], figures: Sequence[str]) -> None:
    """A Markdown table of ``alternate``'s runs: each figure's median per
    variant, and its ratio to the first variant's."""
    base = next(iter(got))
    print("| figure | " + " | ".join(got) + " | ratio to " + base + " |")
    print("|---|" + "---|" * (len(got) + 1))
    for figure in figures:
        medians = {n: statistics.median(r[figure] for r in runs) for n, runs in got.items()}
        ratios = ", ".join(f"{medians[n] / medians[base]:.2f}x" for n in got if n != base)
        print(f"| {figure} | " + " | ".join(f"{m:.2f}" for m in medians.values())
              + f" | {ratios} |", flush=True)

def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--variant", action="append", default=[], metavar="NAME=CHECKOUT")
    parser.add_argument("--sends", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--grow", type=int, default=0, metavar="N",
                        help="officials and devices added after the warm-up, not analysed")
    parser.add_argument("--one", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        print(json.dumps(asyncio.run(one(args.sends, args.grow))), flush=True)
        return 0
    variants = [(name, Path(path).absolute()) for name, _, path in
                (spec.partition("=") for spec in args.variant)]
    if len(variants) < 2:
        raise SystemExit("give at least two --variant NAME=CHECKOUT")
    argv = ["--one", "--sends", str(args.sends), "--grow", str(args.grow)]
    got = alternate(__file__, [(name, checkout, argv) for name, checkout in variants], args.rounds)
    base = variants[0][0]
    medians = {name: {k: statistics.median(run[k] for run in runs)
                      for k in ("node_ms", "db_ms", "wall_ms", "floor_node_ms", "floor_db_ms")}
               for name, runs in got.items()}
    for name, m in medians.items():
        total = m["node_ms"] + m["db_ms"]
        base_total = medians[base]["node_ms"] + medians[base]["db_ms"]
        print(f"{name:>10}: node {m['node_ms']:.3f} ms + PostgreSQL {m['db_ms']:.3f} ms per send "
              f"(median of {args.rounds}) = {total:.3f} ms, {total / base_total:.2f}x {base}; "
              f"wall {m['wall_ms']:.3f} ms per send, "
              f"{m['wall_ms'] / medians[base]['wall_ms']:.2f}x; floor: node "
              f"{m['floor_node_ms']:.3f} ms + PostgreSQL {m['floor_db_ms']:.3f} ms "
              "per one-row durable transaction")
    print(f"load average after: {os.getloadavg()}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
