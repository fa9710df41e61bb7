"""Auditor queries whose cost follows the answer (issue 20, item 4).

The plan of an official's last-day query is read from EXPLAIN on a log
spanning two months that was never analysed: it must use the GIN index of
the parties and prune the partitions before ``since`` -- a plan, not a
timing.  The results are checked against a brute-force filter of every
event, page by page through the ``after`` cursor.
"""

from datetime import UTC, datetime, timedelta
from uuid import UUID, uuid4

from gchat.audit.log import AuditEvent
from gchat.store import audit as store
from loadtests.audit_scale import _uuid, fill
from tests.audit.conftest import LogBench

OLD = datetime(2025, 1, 20, tzinfo=UTC)


async def test_an_officials_last_day_uses_the_index_and_skips_old_months(
    bench: LogBench,
) -> None:
    await bench.sequencer.stop()
    async with bench.db.pool.acquire() as conn:
        await fill(conn, 3000, until=OLD)
        await fill(conn, 3000)  # the last 150 s
        assert await conn.fetchval(
            "SELECT count(*) FROM pg_stat_user_tables WHERE relname LIKE 'audit_packs_%'"
            " AND (last_analyze IS NOT NULL OR last_autoanalyze IS NOT NULL)"
        ) == 0
        official = UUID(_uuid("o1"))
        since = datetime.now(UTC) - timedelta(days=1)
        sql = store.PACKS_QUERY.format(
            involves=" AND audit_pack_ids(events) && $6::uuid[]", next_page="$2 < 0")
        plan = "\n".join(
            r[0] for r in await conn.fetch(
                f"EXPLAIN (ANALYZE, COSTS OFF) {sql}", 0, -1, since, None, 64, [official])
        )
        month = f"audit_packs_{datetime.now(UTC):%Y%m}"
        assert month in plan, plan
        assert "audit_packs_202501" not in plan, plan  # pruned: the bound is used
        assert "Bitmap Index Scan on " in plan and "audit_pack_ids" in plan, plan
        assert "Seq Scan" not in plan, plan
        rows = await store.query_events(
            conn, scope=None, official=official, device=None, agencies=None, kinds=None,
            since=since, until=None, after_id=0, limit=100)
        assert rows and all(r.created_at >= since for r in rows)
        assert all(official in r.officials for r in rows)


async def test_stale_statistics_do_not_turn_the_query_into_a_scan(bench: LogBench) -> None:
    """Statistics taken while the month was small make the planner read every pack
    and run audit_pack_ids() on each (about a millisecond a pack); the query pins
    the parties' index, so its plan stays a bitmap of the official's packs."""
    await bench.sequencer.stop()
    async with bench.db.pool.acquire() as conn:
        await fill(conn, 3000)
        await conn.execute("ANALYZE")  # autovacuum's last visit, when the log was small
        await fill(conn, 20000)
        official = UUID(_uuid("o1"))
        since = datetime.now(UTC) - timedelta(days=1)
        sql = "EXPLAIN (COSTS OFF) " + store.PACKS_QUERY.format(
            involves=" AND audit_pack_ids(events) && $6::uuid[]", next_page="$2 < 0")
        args = (0, -1, since, None, 108, [official])
        unpinned = "\n".join(r[0] for r in await conn.fetch(sql, *args))
        assert "Seq Scan" in unpinned, unpinned  # the trap is real on these statistics
        async with store.parties_index_pinned(conn):
            plan = "\n".join(r[0] for r in await conn.fetch(sql, *args))
        assert "Bitmap Index Scan on " in plan and "audit_pack_ids" in plan, plan
        assert "Seq Scan" not in plan, plan
        # ... and the pin is undone for whatever the connection runs next.
        assert await conn.fetchval("SHOW enable_seqscan") == "on"
        rows = await store.query_events(
            conn, scope=None, official=official, device=None, agencies=None, kinds=None,
            since=since, until=None, after_id=0, limit=100)
        assert rows and all(official in r.officials for r in rows)
        assert await conn.fetchval("SHOW enable_seqscan") == "on"


async def test_pages_match_a_brute_force_filter(bench: LogBench) -> None:
    """Events of several officials, sequenced and not, paged by the cursor."""
    a, b, c = uuid4(), uuid4(), uuid4()
    devices = {a: uuid4(), b: uuid4(), c: uuid4()}
    for i in range(120):
        sender, recipient = [(a, b), (b, c), (c, a), (a, c)][i % 4]
        async with bench.db.transaction() as conn:
            await bench.log.record(conn, AuditEvent(
                "message.accepted" if i % 3 else "message.delivered",
                actor_official=sender, actor_device=devices[sender],
                subject_official=recipient, details={"n": i}))
        if i == 90:
            await bench.settle()
            await bench.sequencer.stop()  # the rest waits in the backlog
    every = await store.query_events(
        bench.db.pool, scope=None, official=None, device=None, agencies=None, kinds=None,
        since=None, until=None, after_id=0, limit=500)
    assert len(every) == 120 and [r.id for r in every] == sorted(r.id for r in every)
    assert {r.leaf_index is None for r in every} == {True, False}
    for official in (a, c):
        for kinds in (None, ["message.delivered"]):
            expected = [r.id for r in every if official in r.officials
                        and (kinds is None or r.kind in kinds)]
            got: list[int] = []
            after = 0
            while True:
                page = await store.query_events(
                    bench.db.pool, scope=None, official=official, device=None, agencies=None,
                    kinds=kinds, since=None, until=None, after_id=after, limit=7)
                got += [r.id for r in page]
                if len(page) < 7:
                    break
                after = page[-1].id
            assert got == expected
    by_device = await store.query_events(
        bench.db.pool, scope=None, official=None, device=devices[b], agencies=None, kinds=None,
        since=None, until=None, after_id=0, limit=500)
    # The device's official must exist for a device query: these test officials do not.
    assert by_device == []
