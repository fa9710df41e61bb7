"""Tampering with the log on a real database, as a superuser who bypasses the
triggers (``session_replication_role = replica``): the offline verifier must
detect each change and name the entry."""

import time

import asyncpg

from crypto.identity import IdentityKeyPair
from gchat.audit.merkle import MerkleTree, TreeHead
from gchat.audit.verify import key_id, verify_export
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


async def test_untampered_export_verifies(bench: LogBench) -> None:
    await _log_of(bench)
    report = verify_export(await _export(bench, 20), bench.keys.audit.public_key)
    assert report.ok, report.summary()
    assert report.entries == 20 and report.valid_heads == 2


async def test_triggers_refuse_changes_without_the_bypass(bench: LogBench) -> None:
    await _log_of(bench)
    for sql in (
        "UPDATE audit_events SET kind = 'x'",
        "DELETE FROM audit_log WHERE leaf_index = 3",
        "DELETE FROM audit_tree_heads",
        "TRUNCATE audit_events CASCADE",
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
    await _as_superuser(
        bench,
        """UPDATE audit_events SET entry = overlay(entry placing '9'::bytea from
               position('"n":'::bytea in entry) + 4 for 1)
           WHERE id = (SELECT event_id FROM audit_log WHERE leaf_index = 5)""",
    )
    report = verify_export(await _export(bench, 20), bench.keys.audit.public_key)
    assert not report.ok
    assert report.first is not None and report.first.index == 5, report.summary()
    assert "altered" in report.first.what


async def test_changed_entry_and_leaf_hash_are_located(bench: LogBench) -> None:
    """A cleverer attacker also rewrites the stored leaf hash: the signed heads
    still catch it, and the report points at the range it is in."""
    await _log_of(bench)
    await _as_superuser(
        bench,
        """UPDATE audit_events SET entry = replace(convert_from(entry, 'UTF8'),
               '"n":3', '"n":7')::bytea
           WHERE id = (SELECT event_id FROM audit_log WHERE leaf_index = 13)""",
        """UPDATE audit_log l SET leaf_hash = sha256('\\x00'::bytea || e.entry)
           FROM audit_events e WHERE e.id = l.event_id AND l.leaf_index = 13""",
    )
    report = verify_export(await _export(bench, 20), bench.keys.audit.public_key)
    assert not report.ok
    assert any("between index 10 and 19" in f.what for f in report.failures), report.summary()


async def test_deleted_event_is_named(bench: LogBench) -> None:
    await _log_of(bench)
    await _as_superuser(
        bench,
        "CREATE TEMP TABLE gone AS SELECT event_id FROM audit_log WHERE leaf_index = 7",
        "DELETE FROM audit_log WHERE leaf_index = 7",
        "DELETE FROM audit_events WHERE id IN (SELECT event_id FROM gone)",
    )
    report = verify_export(await _export(bench, 20), bench.keys.audit.public_key)
    assert report.first is not None and report.first.index == 7, report.summary()
    assert "missing" in report.first.what


async def test_two_reordered_events_are_named(bench: LogBench) -> None:
    await _log_of(bench)
    await _as_superuser(
        bench,
        """CREATE TEMP TABLE pair AS
           SELECT l.leaf_index, e.id, e.entry FROM audit_log l JOIN audit_events e
           ON e.id = l.event_id WHERE l.leaf_index IN (3, 4)""",
        """UPDATE audit_events e SET entry = o.entry
           FROM pair p JOIN pair o ON o.leaf_index = 7 - p.leaf_index
           WHERE e.id = p.id""",
    )
    report = verify_export(await _export(bench, 20), bench.keys.audit.public_key)
    assert report.first is not None and report.first.index == 3, report.summary()
    assert {f.index for f in report.failures if f.index is not None} >= {3, 4}


async def test_truncated_and_resigned_with_another_key_is_named(bench: LogBench) -> None:
    await _log_of(bench)
    genuine = await bench.service().latest_head(fresh=False)
    assert genuine is not None and genuine.tree_size == 20
    # Cut the last 5 entries and the heads that cover them, and sign a
    # convincing head over what is left with a key the attacker owns.
    await _as_superuser(
        bench,
        "CREATE TEMP TABLE gone AS SELECT event_id FROM audit_log WHERE leaf_index >= 15",
        "DELETE FROM audit_log WHERE leaf_index >= 15",
        "DELETE FROM audit_events WHERE id IN (SELECT event_id FROM gone)",
        "DELETE FROM audit_tree_heads WHERE tree_size > 15",
    )
    hashes = [bytes(r[0]) for r in await bench.db.pool.fetch(
        "SELECT leaf_hash FROM audit_log ORDER BY leaf_index")]
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
