"""The wait-event sampler of the load tests (``loadtests.pg_waits``) against real PostgreSQL."""

import asyncio

import asyncpg

from loadtests.pg_waits import sample, table, wait_for


async def test_a_sleeping_backend_is_sampled_as_waiting_in_its_statement(database_url: str) -> None:
    sleeper = await asyncpg.connect(database_url)
    probe = await asyncpg.connect(database_url)
    try:
        database = await probe.fetchval("SELECT current_database()")
        sleeping = asyncio.create_task(sleeper.execute("SELECT pg_sleep(0.6)"))
        await asyncio.wait_for(wait_for(probe, database, "pg_sleep(0.6)"), 5)  # it has begun
        counts, taken = await sample(probe, database, 0.3, 0.01)
        await sleeping
    finally:
        await sleeper.close()
        await probe.close()
    assert taken >= 5
    key = ("SELECT pg_sleep(0.6)", "active", "Timeout", "PgSleep")
    assert counts[key] >= taken - 1  # busy in it all along; the probe itself is not counted
    assert sum(counts.values()) - counts[key] <= 1
    assert "Timeout/PgSleep" in table(counts, taken)
