"""The sequencer: contiguous leaves in commit order, one leader, fail-over."""

import asyncio
import itertools
import json
from collections.abc import Iterable
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from crypto.identity import IdentityKeyPair
from gchat.app import App
from gchat.audit.log import AuditEvent, AuditLog
from gchat.audit.merkle import MerkleAccumulator
from gchat.audit.sequencer import LOCK_KEY, Sequencer
from gchat.store import audit as audit_store
from gchat.store import audit_codec as codec
from gchat.store import migrations
from gchat.store.database import Database
from tests.audit.conftest import LogBench, sequence
from tests.support import eventually, node_config


async def _leaves(pool: asyncpg.Pool) -> list[tuple[int, int]]:
    rows = await pool.fetch("SELECT leaf_index, event_id FROM audit_log ORDER BY leaf_index")
    return [(r[0], r[1]) for r in rows]


def _assert_contiguous(leaves: list[tuple[int, int]], events: int) -> None:
    assert [i for i, _ in leaves] == list(range(len(leaves)))
    assert len({e for _, e in leaves}) == len(leaves) == events


async def test_late_commits_get_later_leaves_and_nothing_is_lost(bench: LogBench) -> None:
    """An event whose transaction commits after a newer one is sequenced later."""
    async with bench.db.pool.acquire() as slow:
        tx = slow.transaction()
        await tx.start()
        await bench.log.record(slow, AuditEvent("test.slow"))  # smaller id, not committed
        await bench.add(5)
        await bench.settle()  # the 5 are sequenced while the slow one is in flight
        assert len(await _leaves(bench.db.pool)) == 5
        await tx.commit()
    await bench.add(3)
    size = await bench.settle()
    leaves = await _leaves(bench.db.pool)
    _assert_contiguous(leaves, 9)
    slow_id = await bench.db.pool.fetchval("SELECT id FROM audit_events WHERE kind='test.slow'")
    assert slow_id == 1 and dict((e, i) for i, e in leaves)[slow_id] >= 5
    assert size == 9


async def test_many_concurrent_writers(bench: LogBench) -> None:
    await asyncio.gather(*(bench.add(7) for _ in range(20)))
    await bench.settle()
    _assert_contiguous(await _leaves(bench.db.pool), 140)


async def test_a_stop_does_not_wait_out_the_retry_interval(database_url: str) -> None:
    """Stopping a leading sequencer returns at once, not after ``retry_seconds``
    (its stop's kick used to swallow the cancellation, so the loop slept first)."""
    db = await Database.connect(database_url, min_size=1, max_size=3)
    sequencer = Sequencer(db, IdentityKeyPair.generate(), poll_interval=0.02, retry_seconds=3600)
    try:
        sequencer.start()
        await eventually(lambda: sequencer.leading, what="the sequencer leads")
        for _ in range(5):  # the race needs the kick to land during the poll's wait
            await asyncio.wait_for(sequencer.stop(), timeout=30)
            assert not sequencer.leading
            sequencer.start()
            await eventually(lambda: sequencer.leading, what="the sequencer leads again")
        await asyncio.wait_for(sequencer.stop(), timeout=30)
    finally:
        await sequencer.stop()
        await db.close()


async def test_fail_over_between_two_nodes(database_url: str, tmp_path: Path) -> None:
    keys = tmp_path / "keys"  # both nodes share the audit key, as a deployment does
    first = App(replace(node_config(database_url, tmp_path / "a", keys_dir=keys), node_id="a"))
    second = App(replace(node_config(database_url, tmp_path / "b", keys_dir=keys), node_id="b"))
    await first.start()
    await second.start()
    apps = [first, second]
    try:
        assert first.db is not None
        pool = first.db.pool
        await eventually(
            lambda: any(a.sequencer and a.sequencer.leading for a in apps), what="a leader"
        )
        leader = next(a for a in apps if a.sequencer and a.sequencer.leading)
        other = second if leader is first else first
        assert other.sequencer is not None and not other.sequencer.leading

        async def write(app: App, n: int) -> None:
            assert app.db is not None
            for _ in range(n):
                async with app.db.transaction() as conn:
                    await app.audit.record(conn, AuditEvent("test.event"))

        await asyncio.gather(write(leader, 20), write(other, 20))
        # Kill the leader's session outright (as if its process died): the
        # lock goes with it and the other node takes over.  Only in this
        # test's database: other tests' sequencers run beside it under xdist.
        await pool.execute(
            """SELECT pg_terminate_backend(pid) FROM pg_locks
               WHERE locktype = 'advisory' AND objid = $1 AND granted
                 AND database = (SELECT oid FROM pg_database
                                 WHERE datname = current_database())""",
            LOCK_KEY & 0xFFFFFFFF,
        )
        await leader.stop()
        apps.remove(leader)
        await write(other, 20)
        other_pool = other.db.pool  # type: ignore[union-attr]

        async def sequenced() -> int:
            count = await other_pool.fetchval("SELECT count(*) FROM audit_log")
            total = await other_pool.fetchval("SELECT count(*) FROM audit_events")
            return int(total) if count == total else 0

        total = await eventually(sequenced, within=6, what="the other node sequences the rest")
        assert other.sequencer.leading
        _assert_contiguous(await _leaves(other.db.pool), int(total))  # type: ignore[union-attr]
        assert total >= 60
    finally:
        for app in apps:
            await app.stop()


async def test_while_events_keep_coming_passes_follow_each_other_sooner(
    database_url: str,
) -> None:
    """A pass that found events is followed after the busy interval, not the
    idle poll: with an hour's idle poll, a steady trickle is still sequenced
    (``pass_events`` 0: a pass follows after the busy interval whatever the
    last one carried; the spacing by events is the trickle test below)."""
    db = await Database.connect(database_url, min_size=1, max_size=3)
    log = AuditLog()

    async def add() -> None:
        async with db.transaction() as conn:
            await log.record(conn, AuditEvent("test.event"))

    await add()  # the first pass finds one, so the sequencer is busy from the start
    sequencer = Sequencer(
        db, IdentityKeyPair.generate(), sign_interval=3600, poll_interval=3600,
        busy_poll_interval=0.5, pass_events=0,
    )
    try:
        sequencer.start()
        await eventually(lambda: sequencer.sequenced == 1, what="the first event is sequenced")
        added = 1
        async with asyncio.timeout(20):
            while sequencer.sequenced < 10:  # one every 10 ms: each busy wait ends on some
                await add()
                added += 1
                await asyncio.sleep(0.01)
        await eventually(lambda: sequencer.sequenced == added, what="the trickle is sequenced")
    finally:
        await sequencer.stop()
        await db.close()


def test_passes_are_spaced_to_carry_pass_events_within_the_busy_and_idle_intervals() -> None:
    sequencer = Sequencer(
        None,  # type: ignore[arg-type]  # only the timing is asked
        IdentityKeyPair.generate(), poll_interval=0.25, busy_poll_interval=0.025, pass_events=256,
    )
    assert sequencer.next_pass_in(0, 0.1) == 0.25  # nothing found: the idle poll
    assert sequencer.next_pass_in(40, 0.025) == pytest.approx(0.16)  # 1,600 events/s
    assert sequencer.next_pass_in(400, 0.025) == 0.025  # 16,000/s: no sooner than the busy poll
    assert sequencer.next_pass_in(2, 0.25) == 0.25  # a trickle: no later than the idle poll
    every_time = Sequencer(
        None,  # type: ignore[arg-type]
        IdentityKeyPair.generate(), poll_interval=0.25, busy_poll_interval=0.025, pass_events=0,
    )
    assert every_time.next_pass_in(2, 0.25) == 0.025


async def test_a_steady_trickle_is_sequenced_in_few_passes_each_within_the_poll_interval(
    database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """At 100 events a second and ``pass_events`` 1,000, passes come every
    ``poll_interval`` (0.4 s), not every busy poll (25 ms: some 50 appends in
    the 1.2 s), and every event is still sequenced."""
    db = await Database.connect(database_url, min_size=1, max_size=3)
    log = AuditLog()
    appends = 0
    append_events = audit_store.append_events

    async def counted(*args: Any, **kwargs: Any) -> Any:
        nonlocal appends
        appends += 1
        return await append_events(*args, **kwargs)

    monkeypatch.setattr(audit_store, "append_events", counted)

    async def add() -> None:
        async with db.transaction() as conn:
            await log.record(conn, AuditEvent("test.event"))

    sequencer = Sequencer(
        db, IdentityKeyPair.generate(), sign_interval=3600, poll_interval=0.4,
        busy_poll_interval=0.025, pass_events=1000,
    )
    try:
        sequencer.start()
        await eventually(lambda: sequencer.leading, what="the sequencer leads")
        loop = asyncio.get_running_loop()
        added, end = 0, loop.time() + 1.2
        while loop.time() < end:
            await add()
            added += 1
            await asyncio.sleep(0.01)
        await eventually(lambda: sequencer.sequenced == added, what="the trickle is sequenced")
        assert appends <= 6, appends  # 1.2 s / 0.4 s, and the one that ends it
    finally:
        await sequencer.stop()
        await db.close()


async def test_a_long_pass_lets_the_event_loop_run_between_slices(
    database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A pass over many events hashes them a slice at a time and lets the node's
    other work run in between; the packs are what one go would make."""
    db = await Database.connect(database_url, min_size=1, max_size=3)
    log = AuditLog()
    async with db.transaction() as conn:  # one commit: the first pass sees all 100
        await log.record(conn, *(AuditEvent("test.event", details={"n": i}) for i in range(100)))
    ticks = 0  # how often other work ran on the loop
    seen: list[tuple[int, int]] = []  # (ticks, leaves) at each extension of the tree
    extend = MerkleAccumulator.extend

    def watched(tree: MerkleAccumulator, leaves: Iterable[bytes]) -> list[tuple[int, int, bytes]]:
        hashes = list(leaves)
        seen.append((ticks, len(hashes)))
        return extend(tree, hashes)

    async def other_work() -> None:
        nonlocal ticks
        while True:
            ticks += 1
            await asyncio.sleep(0)

    monkeypatch.setattr(MerkleAccumulator, "extend", watched)
    sequencer = Sequencer(db, IdentityKeyPair.generate(), sign_interval=3600, slice_events=32)
    spinner = asyncio.create_task(other_work())
    try:
        sequencer.start()
        await eventually(lambda: sequencer.sequenced == 100, what="the 100 events are sequenced")
    finally:
        spinner.cancel()
        await sequencer.stop()
    try:
        assert [n for _, n in seen] == [32, 32, 32, 4]  # one pass, in slices
        assert all(b > a for (a, _), (b, _) in itertools.pairwise(seen)), seen
        _assert_contiguous(await _leaves(db.pool), 100)
        packs = await db.pool.fetch(
            "SELECT first_leaf, length(hashes) / 32 AS n FROM audit_packs ORDER BY first_leaf"
        )
        assert [(p["first_leaf"], p["n"]) for p in packs] == [
            *((i, 16) for i in range(0, 96, 16)),
            (96, 4),
        ]
    finally:
        await db.close()


def test_a_slice_holds_some_leaves() -> None:
    for bad in (0, -16):
        with pytest.raises(ValueError):
            Sequencer(None, IdentityKeyPair.generate(), slice_events=bad)  # type: ignore[arg-type]


def _rows_read(node: dict[str, Any]) -> int:
    """Rows the scans under ``node`` of an EXPLAIN (ANALYZE, FORMAT JSON) plan read."""
    own = node["Actual Rows"] * node["Actual Loops"] if "Scan" in node["Node Type"] else 0
    return own + sum(_rows_read(child) for child in node.get("Plans", []))


async def test_a_pass_reads_the_events_it_takes_not_the_whole_backlog(database_url: str) -> None:
    """From a new leader's horizon (xid 0), over a backlog of many transactions
    never analysed, on the sequencer's pinned plans: the statement reads about
    the rows it returns. It used to read every event past the horizon to
    sort them, in each transaction of a pass again, and a large backlog was
    then more than the sequencer could get through (docs/PERFORMANCE.md).
    It takes whole rows, as far as the first that reaches its 50 events."""
    db = await Database.connect(database_url, min_size=1, max_size=2)
    try:
        async with db.pool.acquire() as conn:
            for _ in range(40):  # 40 transactions, 40 xids, 25 rows of 4 events each
                await conn.execute(
                    """INSERT INTO audit_backlog (created_at, leaf_hashes, entries)
                       SELECT now(), decode(repeat('ab', 128), 'hex'),
                              ARRAY['\\x00', '\\x01', '\\x02', '\\x03']::bytea[]
                       FROM generate_series(1, 25)"""
                )
            first = [
                r["id"]
                for r in await conn.fetch("SELECT id FROM audit_backlog ORDER BY xid, id LIMIT 13")
            ]
            await audit_store.pin_index_plans(conn)
            try:
                taken = await audit_store.unsequenced(conn, audit_store.Horizon("0"), 50)
                plan = json.loads(
                    await conn.fetchval(
                        f"EXPLAIN (ANALYZE, FORMAT JSON) {audit_store._UNSEQUENCED}", "0", [], 50
                    )
                )
            finally:
                await audit_store.unpin_index_plans(conn)
    finally:
        await db.close()
    assert taken.ids == first
    assert (len(taken), taken.complete) == (52, False)
    assert _rows_read(plan[0]["Plan"]) <= 2 * 50, plan


async def test_packs_made_in_postgresql_hold_the_codec_s_bytes(database_url: str) -> None:
    """``audit_append_batches`` packs the backlog's events as :func:`codec.pack_events`
    does, 16 a pack from the pass's first leaf, in (xid, id) order; a pack's ``at``
    is its newest event's time or the previous pack's if later (never back), and
    every month partition the packs need is made, old months included."""
    db = await Database.connect(database_url, min_size=1, max_size=3)
    log = AuditLog()
    now = datetime.now(UTC)
    old = now - timedelta(days=70)  # another month, before the first pack
    async with db.transaction() as conn:
        await log.record(conn, *(AuditEvent("test.event", details={"n": i}) for i in range(20)))
    async with db.transaction() as conn:  # a later transaction whose events are older
        stored = await conn.fetchval("SELECT entries[1] FROM audit_backlog LIMIT 1")
        for at in (old, old + timedelta(seconds=1)):
            await conn.execute(
                "INSERT INTO audit_backlog (created_at, leaf_hashes, entries) VALUES ($1, $2, $3)",
                at, codec.leaf_hash_of(stored, at), [stored],
            )
    async with db.transaction() as conn:
        await log.record(conn, *(AuditEvent("test.event", details={"n": i}) for i in range(18)))
    rows = await db.pool.fetch(
        "SELECT id, created_at, leaf_hash, entry FROM audit_pending ORDER BY xid, id"
    )
    await sequence(db, 40)
    try:
        packs = await db.pool.fetch(
            """SELECT first_leaf, at, min_at, min_id, max_id, hashes, events
               FROM audit_packs ORDER BY first_leaf"""
        )
        assert [p["first_leaf"] for p in packs] == [0, 16, 32]  # one pass
        last = None
        for pack in packs:
            chunk = rows[pack["first_leaf"] : pack["first_leaf"] + 16]
            assert bytes(pack["events"]) == codec.pack_events(
                [(r["id"], r["created_at"], bytes(r["entry"])) for r in chunk]
            )
            assert bytes(pack["hashes"]) == b"".join(bytes(r["leaf_hash"]) for r in chunk)
            newest = max(r["created_at"] for r in chunk)
            assert pack["at"] == (newest if last is None else max(last, newest))
            assert pack["min_at"] == min(r["created_at"] for r in chunk)
            assert (pack["min_id"], pack["max_id"]) == (
                min(r["id"] for r in chunk), max(r["id"] for r in chunk))
            last = pack["at"]
        assert [r["created_at"] for r in rows[20:22]] == [old, old + timedelta(seconds=1)]
        months = set(await audit_store.pack_partitions(db.pool))
        assert f"audit_packs_{now:%Y%m}" in months
        assert await db.pool.fetchval("SELECT count(*) FROM audit_pending") == 0
        tree = MerkleAccumulator()
        tree.extend([bytes(r["leaf_hash"]) for r in rows])
        assert (await audit_store.log_size(db.pool), tree.size) == (40, 40)
    finally:
        await db.close()


async def test_a_pass_whose_packs_start_in_an_old_month_makes_its_partition(
    database_url: str,
) -> None:
    """A backlog from months ago (a log with no packs yet): the first packs go to
    their own month's partition, which the pass makes."""
    db = await Database.connect(database_url, min_size=1, max_size=3)
    old = datetime.now(UTC) - timedelta(days=100)
    async with db.transaction() as conn:
        for i in range(3):
            entry = codec.encode(b'{"kind":"test.event","n":%d}' % i, "test.event", [], [], [], old)
            await conn.execute(
                "INSERT INTO audit_backlog (created_at, leaf_hashes, entries) VALUES ($1, $2, $3)",
                old, codec.leaf_hash_of(entry, old), [entry],
            )
    await sequence(db, 3)
    try:
        at = await db.pool.fetchval("SELECT at FROM audit_packs")
        assert at == old
        assert f"audit_packs_{old.astimezone(UTC):%Y%m}" in await audit_store.pack_partitions(
            db.pool
        )
    finally:
        await db.close()


async def _index_reads(conn: asyncpg.Connection) -> int:
    """Index scans of the backlog begun so far in this transaction."""
    return int(await conn.fetchval(
        "SELECT coalesce(idx_scan, 0) FROM pg_stat_xact_user_tables WHERE relname = 'audit_backlog'"
    ))


async def test_an_append_reads_no_backlog_index_whatever_the_statistics(
    database_url: str,
) -> None:
    """After a VACUUM of a drained backlog (pages, ``reltuples`` 0: the planner
    takes the table for empty) and with PL/pgSQL's cached plan, the append
    deletes its events by row address: it scans no index of the backlog.
    Deleting by ``id = ANY(ids)`` walked the whole (xid, id) index: about
    1 s per 2,000 events at a backlog of 60,000 (docs/PERFORMANCE.md)."""
    conn = await asyncpg.connect(database_url)
    try:
        await migrations.migrate(conn)
        await audit_store.ensure_partitions(conn, [datetime.now(UTC)])
        await audit_store.pin_index_plans(conn)  # as the sequencer's session is
        fill = """INSERT INTO audit_backlog (created_at, leaf_hashes, entries)
                  SELECT now(), sha256(int8send(g)), ARRAY['\\x000000ff'::bytea]
                  FROM generate_series(1, $1) AS g"""
        size, last = 0, None
        for round_ in range(10):  # past PL/pgSQL's five custom plans
            if round_ == 3:
                await conn.execute("VACUUM audit_backlog")  # drained: reltuples 0
                assert await conn.fetchval(
                    "SELECT reltuples FROM pg_class WHERE relname = 'audit_backlog'"
                ) == 0
                await conn.execute(fill, 3000)
            await conn.execute(fill, 100)
            async with conn.transaction():
                events = await audit_store.unsequenced(conn, audit_store.Horizon("0"), 200)
                before = await _index_reads(conn)
                last = await audit_store.append_events(conn, size, events, last)
                assert await _index_reads(conn) == before, round_
            size += len(events)
        assert await audit_store.log_size(conn) == size == 3 * 100 + 7 * 200
    finally:
        await conn.close()
