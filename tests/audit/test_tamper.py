"""Tampering with the log on a real database, as a superuser who bypasses the
triggers (``session_replication_role = replica``): the offline verifier must
detect each change and name the entry."""

import time
from typing import Any

import asyncpg

from crypto.identity import IdentityKeyPair
from gchat.audit.merkle import MerkleTree, TreeHead
from gchat.audit.verify import key_id, verify_export
from gchat.store import audit_codec as codec
from tests.audit.conftest import LogBench, registered_auditor


async def _export(bench: LogBench, tree_size: int | None = None) -> list[str]:
    service = bench.service()
    who = await registered_auditor(bench.db.pool)
    lines, cursor, size = await service.export(who, 0, None, tree_size, None)
    while cursor is not None:
        more, cursor, _ = await service.export(who, 0, None, size, cursor)
        lines += more
    return lines


async def _log_of(bench: LogBench) -> int:
    """20 events signed at sizes 10 and 20; returns the final size."""
    await bench.add(10)
    await bench.settle()
    assert await bench.sign() == 10
    await bench.add(10)
    await bench.settle()
    assert await bench.sign() == 20
    await bench.sequencer.stop()  # the attacker works on a quiet database
    return 20


async def _as_superuser(bench: LogBench, *statements: str) -> None:
    async with bench.db.pool.acquire() as conn, conn.transaction():
        await conn.execute("SET LOCAL session_replication_role = replica")
        for sql in statements:
            await conn.execute(sql)


#: leaf index -> [event id, created_at, stored entry, leaf hash], as stored.
Leaves = dict[int, list[Any]]


async def _leaves(bench: LogBench) -> Leaves:
    out: Leaves = {}
    for pack in await bench.db.pool.fetch(
        "SELECT first_leaf, hashes, events FROM audit_packs ORDER BY first_leaf"
    ):
        for i, (event_id, at, stored) in enumerate(codec.unpack_events(pack["events"])):
            h = bytes(pack["hashes"][32 * i : 32 * i + 32])
            out[pack["first_leaf"] + i] = [event_id, at, stored, h]
    return out


async def _rewrite(bench: LogBench, leaves: Leaves) -> None:
    """Replace the stored log with ``leaves``, packed as runs of consecutive leaves
    (what an attacker with the owner's rights can do, bypassing the triggers)."""
    runs: list[list[int]] = []
    for index in sorted(leaves):
        if runs and runs[-1][-1] == index - 1 and len(runs[-1]) < codec.PACK:
            runs[-1].append(index)
        else:
            runs.append([index])
    async with bench.db.pool.acquire() as conn, conn.transaction():
        await conn.execute("SET LOCAL session_replication_role = replica")
        await conn.execute("DELETE FROM audit_packs")
        for run in runs:
            rows = [leaves[i] for i in run]
            at = max(r[1] for r in rows)
            await conn.execute(
                """INSERT INTO audit_packs (first_leaf, at, min_at, min_id, max_id, hashes, events)
                   VALUES ($1, $2, $3, $4, $5, $6, $7)""",
                run[0], at, min(r[1] for r in rows), min(r[0] for r in rows),
                max(r[0] for r in rows), b"".join(r[3] for r in rows),
                codec.pack_events([(r[0], r[1], r[2]) for r in rows]),
            )


async def test_untampered_export_verifies(bench: LogBench) -> None:
    await _log_of(bench)
    report = verify_export(await _export(bench, 20), bench.keys.audit.public_key)
    assert report.ok, report.summary()
    assert report.entries == 20 and report.valid_heads == 2


async def test_triggers_refuse_changes_without_the_bypass(bench: LogBench) -> None:
    await _log_of(bench)
    for sql in (
        "UPDATE audit_packs SET min_id = 0",
        "DELETE FROM audit_packs WHERE first_leaf = 0",
        "DELETE FROM audit_tree_heads",
        "TRUNCATE audit_packs",
        "TRUNCATE audit_tree_heads",
    ):
        try:
            await bench.db.pool.execute(sql)
        except asyncpg.InsufficientPrivilegeError as error:
            assert "append-only" in str(error)
        else:
            raise AssertionError(f"{sql} was allowed")


async def test_one_changed_byte_is_named(bench: LogBench) -> None:
    await _log_of(bench)
    leaves = await _leaves(bench)
    stored = leaves[5][2]
    at = stored.index(b'"n":') + 4
    leaves[5][2] = stored[:at] + b"9" + stored[at + 1 :]
    await _rewrite(bench, leaves)
    report = verify_export(await _export(bench, 20), bench.keys.audit.public_key)
    assert not report.ok
    assert report.first is not None and report.first.index == 5, report.summary()
    assert "altered" in report.first.what


async def test_changed_entry_and_leaf_hash_are_located(bench: LogBench) -> None:
    """A cleverer attacker also rewrites the stored leaf hash: the signed heads
    still catch it, and the report points at the range it is in."""
    await _log_of(bench)
    leaves = await _leaves(bench)
    leaves[13][2] = leaves[13][2].replace(b'"n":3', b'"n":7')
    leaves[13][3] = codec.leaf_hash_of(leaves[13][2], leaves[13][1])
    await _rewrite(bench, leaves)
    report = verify_export(await _export(bench, 20), bench.keys.audit.public_key)
    assert not report.ok
    assert any("between index 10 and 19" in f.what for f in report.failures), report.summary()


async def test_deleted_event_is_named(bench: LogBench) -> None:
    await _log_of(bench)
    leaves = await _leaves(bench)
    del leaves[7]
    await _rewrite(bench, leaves)
    report = verify_export(await _export(bench, 20), bench.keys.audit.public_key)
    assert report.first is not None and report.first.index == 7, report.summary()
    assert "missing" in report.first.what


async def test_two_reordered_events_are_named(bench: LogBench) -> None:
    await _log_of(bench)
    leaves = await _leaves(bench)
    leaves[3][1:3], leaves[4][1:3] = leaves[4][1:3], leaves[3][1:3]
    await _rewrite(bench, leaves)
    report = verify_export(await _export(bench, 20), bench.keys.audit.public_key)
    assert report.first is not None and report.first.index == 3, report.summary()
    assert {f.index for f in report.failures if f.index is not None} >= {3, 4}


async def test_truncated_and_resigned_with_another_key_is_named(bench: LogBench) -> None:
    await _log_of(bench)
    genuine = await bench.service().latest_head(fresh=False)
    assert genuine is not None and genuine.tree_size == 20
    # Cut the last 5 entries and the heads that cover them, and sign a
    # convincing head over what is left with a key the attacker owns.
    leaves = {i: v for i, v in (await _leaves(bench)).items() if i < 15}
    await _rewrite(bench, leaves)
    await _as_superuser(bench, "DELETE FROM audit_tree_heads WHERE tree_size > 15")
    hashes = [leaves[i][3] for i in sorted(leaves)]
    forger = IdentityKeyPair.generate()
    head = TreeHead(15, MerkleTree(hashes).root(), int(time.time() * 1000))
    await bench.db.pool.execute(
        "INSERT INTO audit_tree_heads VALUES ($1, $2, $3, $4, $5)",
        15, head.timestamp_ms, head.root_hash, forger.sign(head.signing_message()),
        key_id(forger.public_key),
    )
    lines = await _export(bench, 15)
    report = verify_export(lines, bench.keys.audit.public_key)
    assert not report.ok
    assert any("signature does not verify" in f.what for f in report.failures)
    assert report.first is not None and report.first.index == 10, report.summary()
    assert "not covered by any validly signed tree head" in report.first.what
    # An auditor who kept the genuine head of size 20 learns exactly what went.
    known = {
        "tree_size": genuine.tree_size, "timestamp_ms": genuine.timestamp_ms,
        "root_hash": genuine.root_hash.hex(), "signature": genuine.signature.hex(),
    }
    report = verify_export(lines, bench.keys.audit.public_key, [known])
    assert any(
        f.index == 15 and "log truncated" in f.what for f in report.failures
    ), report.summary()
