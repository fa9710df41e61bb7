"""Refused attempts are audited per address and window, within a memory bound."""

import json
import uuid
from collections.abc import AsyncIterator

import pytest

from gchat.audit.failures import AUTH_FAILED, OVERFLOW_ADDRESS, FailureAudit
from gchat.audit.log import AuditLog
from gchat.store import migrations
from gchat.store.database import Database


@pytest.fixture
async def db(database_url: str) -> AsyncIterator[Database]:
    database = await Database.connect(database_url, min_size=1, max_size=2)
    async with database.pool.acquire() as conn:
        await migrations.migrate(conn)
    try:
        yield database
    finally:
        await database.close()


async def _entries(db: Database) -> list[dict[str, object]]:
    rows = await db.pool.fetch(
        "SELECT entry FROM audit_events WHERE kind = $1 ORDER BY id", AUTH_FAILED
    )
    return [json.loads(bytes(r["entry"])) for r in rows]


async def test_a_thousand_addresses_cost_at_most_the_bound(db: Database) -> None:
    failures = FailureAudit(db, AuditLog(), window_seconds=60, max_addresses=5)
    for i in range(1000):
        failures.note(AUTH_FAILED, f"10.0.{i // 250}.{i % 250}", "signature", uuid.uuid4())
    assert await failures.flush() == 6  # five addresses, then everyone else as "other"
    entries = await _entries(db)
    assert len(entries) == 6
    by_remote = {e["details"]["remote"]: e["details"] for e in entries}  # type: ignore[index]
    assert by_remote[OVERFLOW_ADDRESS]["count"] == 995
    assert sum(d["count"] for d in by_remote.values()) == 1000
    assert await failures.flush() == 0  # nothing pending, nothing written


async def test_counts_survive_a_failed_flush(db: Database) -> None:
    failures = FailureAudit(db, AuditLog(), window_seconds=60)
    failures.note(AUTH_FAILED, "192.0.2.1", "token")
    await db.close()  # the database goes away under the flush
    assert await failures.flush() == 0
    assert failures.pending == 1
