"""The Merkle tree lives in PostgreSQL, not in node memory (issue 20, item 1).

Proofs and a new sequencer's state come from the leaf hashes and the stored
subtree roots (``audit_subtrees``); checked here against an independent
implementation of the RFC 9162 definitions (recursive MTH/PATH/PROOF over
the leaf hashes read back from the database, sharing no code with
``gchat.audit.merkle``), at sizes where two tile levels are in use.
"""

from __future__ import annotations

import hashlib
import json
import random
from datetime import UTC, datetime
from functools import cache

import asyncpg
import pytest

from gchat.audit.merkle import MerkleAccumulator, MerkleTree, ProofPlan, StoredNodes, leaf_hash
from gchat.audit.sequencer import resume
from gchat.audit.verify import verify_export
from gchat.store import audit as store
from gchat.store import audit_codec as codec
from gchat.store import migrations
from loadtests.audit_scale import fill, fill_old_layout
from tests.audit.conftest import LogBench, registered_auditor

#: Past 2**16: subtrees of height 8 and 16 are stored, plus a ragged right edge.
SIZE = 65_536 + 300 + 7


def _reference(leaves: list[bytes]):  # type: ignore[no-untyped-def]
    """MTH, PATH and PROOF of RFC 9162 2.1, literally (memoised), over ``leaves``."""

    def sha(data: bytes) -> bytes:
        return hashlib.sha256(data).digest()

    def k_of(n: int) -> int:
        k = 1
        while k * 2 < n:
            k *= 2
        return k

    @cache
    def mth(lo: int, hi: int) -> bytes:
        if hi - lo == 1:
            return leaves[lo]
        k = k_of(hi - lo)
        return sha(b"\x01" + mth(lo, lo + k) + mth(lo + k, hi))

    def path(m: int, lo: int, hi: int) -> list[bytes]:
        if hi - lo == 1:
            return []
        k = k_of(hi - lo)
        if m < k:
            return path(m, lo, lo + k) + [mth(lo + k, hi)]
        return path(m - k, lo + k, hi) + [mth(lo, lo + k)]

    def subproof(m: int, lo: int, hi: int, b: bool) -> list[bytes]:
        n = hi - lo
        if m == n:
            return [] if b else [mth(lo, hi)]
        k = k_of(n)
        if m <= k:
            return subproof(m, lo, lo + k, b) + [mth(lo + k, hi)]
        return subproof(m - k, lo + k, hi, False) + [mth(lo, lo + k)]

    return mth, path, subproof


@pytest.mark.parametrize("size", [1, 2, 255, 256, 257, 4096, 65_535, 65_536, 65_537, 70_001])
def test_proofs_from_stored_hashes_match_the_in_memory_tree(size: int) -> None:
    leaves = [leaf_hash(b"e%d" % i) for i in range(size)]
    acc = MerkleAccumulator()
    stored = {(0, i): h for i, h in enumerate(leaves)}
    stored |= {(h, i): r for h, i, r in acc.extend(leaves)}
    assert all(h % 8 == 0 and h > 0 for h, _ in stored if h) and len(stored) > size - 1
    tree = MerkleTree(leaves)
    rng = random.Random(size)
    for _ in range(20):
        n = rng.randint(1, size)
        index, old = rng.randrange(n), rng.randint(0, n)
        plan = ProofPlan()
        plan.inclusion(index, n)
        plan.consistency(old, n)
        plan.root(n)
        wanted = {(h, j) for h, lo, hi in plan.spans() for j in range(lo, hi)}
        assert len(wanted) <= 3 * 255 * 3  # a few tiles per level, whatever n is
        nodes = StoredNodes({key: stored[key] for key in wanted})
        assert nodes.inclusion_proof(index, n) == tree.inclusion_proof(index, n)
        assert nodes.consistency_proof(old, n) == tree.consistency_proof(old, n)
        assert nodes.root(n) == tree.root(n) == acc.from_state(n, nodes.compact_range(n)).root()


def test_a_missing_stored_hash_is_an_error_not_a_wrong_proof() -> None:
    leaves = [leaf_hash(b"e%d" % i) for i in range(600)]
    stored = {(0, i): h for i, h in enumerate(leaves) if i != 300}
    stored |= {(h, i): r for h, i, r in MerkleAccumulator().extend(leaves)}
    with pytest.raises(KeyError):
        StoredNodes(stored).inclusion_proof(301, 600)


async def _leaf_hashes(conn: asyncpg.Connection) -> list[bytes]:
    rows = await conn.fetch("SELECT hashes FROM audit_packs ORDER BY first_leaf")
    joined = b"".join(bytes(r[0]) for r in rows)
    return [joined[i : i + 32] for i in range(0, len(joined), 32)]


async def test_migration_backfills_the_subtrees_of_an_existing_log(
    empty_database_url: str,
) -> None:
    """A log sequenced before 0006 gets exactly the subtree roots a sequencer stores,
    and 0010 moves its leaves into packs unchanged (same hashes, same tree)."""
    conn = await asyncpg.connect(empty_database_url)
    try:
        await migrations.migrate(conn, before=6)
        await fill_old_layout(conn, SIZE)
        await migrations.migrate(conn)
        rows = await conn.fetch("SELECT height, idx, hash FROM audit_subtrees")
        expected = MerkleAccumulator().extend(await _leaf_hashes(conn))
        assert {(r[0], r[1], bytes(r[2])) for r in rows} == set(expected)
        assert {h for h, _, _ in expected} == {8, 16}
    finally:
        await conn.close()


async def test_takeover_and_proofs_from_storage_at_tile_scale(bench: LogBench) -> None:
    await bench.sequencer.stop()
    async with bench.db.pool.acquire() as conn:
        await fill(conn, SIZE)
        # A new sequencer's state comes from a few hundred stored rows.
        plan = ProofPlan()
        plan.root(SIZE)
        assert sum(hi - lo for _, lo, hi in plan.spans()) < 300
        resumed = await resume(conn, SIZE)
        leaves = await _leaf_hashes(conn)
    mth, path, subproof = _reference(leaves)
    assert resumed.root() == mth(0, SIZE)

    bench.sequencer.start()  # takes over at SIZE and appends after it
    await bench.add(5)
    size = await bench.settle()
    assert size == SIZE + 5 and await bench.sign() == size
    async with bench.db.pool.acquire() as conn:
        leaves = await _leaf_hashes(conn)
        stored = {(r[0], r[1]) for r in await conn.fetch("SELECT height, idx FROM audit_subtrees")}
    assert stored == {(8, i) for i in range(size // 256)} | {(16, 0)}
    mth, path, subproof = _reference(leaves)

    service = bench.service()  # a fresh node: nothing cached
    who = await registered_auditor(bench.db.pool)
    for index in (0, 255, 256, 40_000, 65_535, 65_536, SIZE - 1, size - 1):
        row, hash_, proof, head = await service.inclusion(who, index, size)
        assert hash_ == leaves[index] and proof == path(index, 0, size)
        assert head is not None and head.root_hash == mth(0, size)
    for old in (1, 256, 65_536, SIZE):
        proof, _, _ = await service.consistency(who, old, size)
        assert proof == subproof(old, 0, size, True)

    # An export across the tile boundary verifies offline.
    lines, cursor, _ = await service.export(who, 65_500, 65_600, size, None)
    while cursor is not None:
        more, cursor, _ = await service.export(who, 65_500, 65_600, size, cursor)
        lines += more
    report = verify_export(lines, bench.keys.audit.public_key)
    assert report.ok and report.entries == 100, report.summary()


async def test_sequencer_writes_each_completed_subtree_with_its_leaves(bench: LogBench) -> None:
    for _ in range(3):
        await bench.add(200)
    size = await bench.settle()
    async with bench.db.pool.acquire() as conn:
        rows = await conn.fetch("SELECT height, idx, hash FROM audit_subtrees")
        leaves = await _leaf_hashes(conn)
    assert size == 600
    assert {(r[0], r[1], bytes(r[2])) for r in rows} == set(MerkleAccumulator().extend(leaves))
    assert len(rows) == 2
    assert await store.log_size(bench.db.pool) == 600


async def _buffers(conn: asyncpg.Connection, sql: str, *args: object) -> int:
    """Pages one statement reads (from cache or disk), by its own EXPLAIN (ANALYZE, BUFFERS)."""
    plan = json.loads(await conn.fetchval(f"EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) {sql}", *args))
    top = plan[0]["Plan"]
    return int(top["Shared Hit Blocks"] + top["Shared Read Blocks"])


async def test_polls_scan_no_table_when_the_planner_has_no_statistics(bench: LogBench) -> None:
    """Issue 19: a fresh, never analysed database must not make every poll a full scan,
    nor may a long transaction elsewhere make every poll walk what committed since --
    here with 20,000 moved events left unvacuumed in the backlog table."""
    async with bench.db.pool.acquire() as conn, bench.db.pool.acquire() as other:
        # A transaction with an xid, open across everything below (a backup, say).
        held = other.transaction()
        await held.start()
        await other.fetchval("SELECT pg_current_xact_id()")
        try:
            # 20,000 backlog rows of an event each, 2,000 a transaction.
            at = datetime.now(UTC)
            entry = codec.encode(b'{"kind":"test.event"}', "test.event", [], [], [], at)
            for _ in range(10):
                await conn.execute(
                    """INSERT INTO audit_backlog (created_at, leaf_hashes, entries)
                       SELECT $1, $2, ARRAY[$3::bytea] FROM generate_series(1, 2000)""",
                    at, codec.leaf_hash_of(entry, at), entry)
            assert await bench.settle() >= 20_000
            await bench.sequencer.stop()
            # No ANALYZE ran (the migration's saw an empty table; the sequencer's
            # VACUUM may have counted rows since, without column statistics).
            await store.pin_index_plans(conn)  # as the sequencer's session does
            # A new sequencer's first poll looks at the whole backlog table.
            horizon, pending = await store.idle_check(conn, store.Horizon("0"))
            assert not pending and horizon.running
            for _ in range(5):
                horizon, pending = await store.idle_check(conn, horizon)
                assert not pending
            # The 20,000 dead rows fill hundreds of pages; index probes read a few.
            read = await _buffers(conn, store.IDLE_CHECK, horizon.xmax, list(horizon.running))
            pages = await conn.fetchval("SELECT pg_relation_size('audit_backlog') / 8192")
            assert pages > 200 and read < pages / 5, (read, pages)
            await bench.add(3)
            _, pending = await store.idle_check(conn, horizon)
            assert pending and len(await store.unsequenced(conn, horizon, 5000)) == 3
        finally:
            await held.rollback()
            await store.unpin_index_plans(conn)


async def test_a_new_sequencer_repairs_subtrees_an_older_node_did_not_write(
    bench: LogBench,
) -> None:
    """Rolling upgrade: leaves appended without their subtree roots are healed on takeover."""
    await bench.sequencer.stop()
    async with bench.db.pool.acquire() as conn:
        await fill(conn, 1000, subtrees=False)  # as a pre-0006 sequencer leaves them
        assert await conn.fetchval("SELECT count(*) FROM audit_subtrees") == 0
        leaves = await _leaf_hashes(conn)
    bench.sequencer.start()
    await bench.add(3)
    size = await bench.settle()
    assert size == 1003 and await bench.sign() == size
    async with bench.db.pool.acquire() as conn:
        rows = await conn.fetch("SELECT height, idx, hash FROM audit_subtrees")
        leaves = await _leaf_hashes(conn)
    assert {(r[0], r[1], bytes(r[2])) for r in rows} == set(MerkleAccumulator().extend(leaves))
    head = await bench.service().latest_head(fresh=False)
    assert head is not None and head.root_hash == MerkleTree(leaves).root()
