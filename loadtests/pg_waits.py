"""What a load test's PostgreSQL backends wait for: wait events sampled, by statement.

    python -m loadtests.pg_waits [--database NAME] [--when TEXT] [--after 2] [--seconds 5]

Why: a phase's ``cpu/msg: db backends`` counts what the node's backends
compute, not where a statement's wall time goes. At half capacity a send
waits for its commit batch's statement, and part of that statement's time
is no CPU at all: flushing the WAL (``IO/WALSync``), waiting for another
backend's flush (``LWLock/WALWrite``), a lock. Sampling ``pg_stat_activity``
a few hundred times a second tells those apart, per statement
(docs/PERFORMANCE.md, 2026-12-05 12:30: at 4,000 msg/s the send statement
was flushing the WAL for half of its time).

Run it beside a load test (``python -m loadtests ab --rate 4000 ...``):
without ``--database`` it follows the newest database a load test made
(``gchat_lt_*``), waits until one of its backends runs a statement
containing ``--when`` (by default the send's store statement: a relay
phase has begun, the enrolment before it is past), then ``--after``
seconds more (past the phase's first, discarded second), and samples for
``--seconds``. Each sample counts every backend of the database that is
not idle by (the statement's first words, state, wait event type, wait
event); the table gives each its share of the samples: 0.5 is a backend in
that state half of the time. The sampler's own read (a view of the
server's backends, every ``--interval``) is on a connection of its own,
outside the database it samples.
"""

from __future__ import annotations

import argparse
import asyncio
import time
from collections import Counter

import asyncpg

from loadtests.harness import admin_dsn

#: Text of the send's store statement (``gchat.store.messages``) and of no other.
SEND_STATEMENT = "WITH unchanged AS"
#: A backend's state: (statement's first words, state, wait event type, wait event).
Key = tuple[str, str, str, str]

_SAMPLE = """SELECT left(regexp_replace(query, '\\s+', ' ', 'g'), $2) AS statement, state,
                  coalesce(wait_event_type, 'CPU') AS kind, coalesce(wait_event, '') AS event
             FROM pg_stat_activity
            WHERE datname = $1 AND state <> 'idle' AND pid <> pg_backend_pid()"""


async def newest_load_test_database(conn: asyncpg.Connection) -> str | None:
    """The database a load test made last (``gchat_lt_*``), if one exists now."""
    name: str | None = await conn.fetchval(
        "SELECT datname FROM pg_database WHERE datname LIKE 'gchat\\_lt\\_%' ORDER BY oid DESC"
        " LIMIT 1"
    )
    return name


async def sample(
    conn: asyncpg.Connection, database: str, seconds: float, interval: float, width: int = 40
) -> tuple[Counter[Key], int]:
    """Sample ``database``'s busy backends for ``seconds``; the counts and the samples taken."""
    counts: Counter[Key] = Counter()
    taken = 0
    statement = await conn.prepare(_SAMPLE)
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        for row in await statement.fetch(database, width):
            counts[(row["statement"], row["state"], row["kind"], row["event"])] += 1
        taken += 1
        await asyncio.sleep(interval)
    return counts, taken


async def wait_for(conn: asyncpg.Connection, database: str, text: str) -> None:
    """Return once a backend of ``database`` runs a statement containing ``text``."""
    running = (
        "SELECT EXISTS (SELECT FROM pg_stat_activity WHERE datname = $1 AND state <> 'idle'"
        " AND pid <> pg_backend_pid() AND strpos(query, $2) > 0)"
    )
    while True:  # another server's backends: nothing here to be told by
        if await conn.fetchval(running, database, text):
            return
        await asyncio.sleep(0.05)


def table(counts: Counter[Key], taken: int, top: int = 25) -> str:
    """The commonest states, each with its share of the samples."""
    lines = [f"{taken} samples; share of samples a backend was in each state:"]
    for (statement, state, kind, event), n in counts.most_common(top):
        where = f"{kind}/{event}"
        lines.append(f"  {n / max(taken, 1):6.3f}  {state:<20} {where:<26} {statement}")
    return "\n".join(lines)


async def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m loadtests.pg_waits", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--database",
                        help="the database to sample (default: the newest gchat_lt_*)")
    parser.add_argument("--when", default=SEND_STATEMENT,
                        help="start once a statement containing this runs (default: a send's)")
    parser.add_argument("--after", type=float, default=2.0,
                        help="seconds to wait after that (default 2)")
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--interval", type=float, default=0.003)
    args = parser.parse_args(argv)
    conn = await asyncpg.connect(admin_dsn(), server_settings={
        "application_name": "gchat-loadtest-probe"})
    try:
        database = args.database
        while database is None:
            database = await newest_load_test_database(conn)
            if database is None:
                await asyncio.sleep(0.2)
        await wait_for(conn, database, args.when)
        await asyncio.sleep(args.after)
        counts, taken = await sample(conn, database, args.seconds, args.interval)
        print(f"database {database}")
        print(table(counts, taken))
    finally:
        await conn.close()


if __name__ == "__main__":
    asyncio.run(main())
