"""Retention (issue 20, item 3): an old month is archived and its partition dropped;
then an old tree head, an inclusion proof of a kept event and the archive all
verify offline, with nothing but the audit public key and what the server sends."""

import gzip
from datetime import UTC, datetime
from pathlib import Path

import pytest

from crypto.identity import verify_signature
from gchat.audit import retention
from gchat.audit.merkle import TreeHead, leaf_hash, verify_consistency, verify_inclusion
from gchat.audit.verify import verify_export
from gchat.errors import ServiceError
from gchat.store import audit as store
from loadtests.audit_scale import fill
from tests.audit.conftest import LogBench, registered_auditor

OLD = datetime(2025, 1, 20, tzinfo=UTC)


def _signed(head: object, key: bytes) -> bytes:
    """The root of a signed head, after checking its signature offline."""
    h = TreeHead(head.tree_size, head.root_hash, head.timestamp_ms)  # type: ignore[attr-defined]
    verify_signature(key, h.signing_message(), head.signature)  # type: ignore[attr-defined]
    return h.root_hash


async def test_an_archived_month_leaves_every_proof_and_old_head_verifiable(
    bench: LogBench, tmp_path: Path
) -> None:
    key = bench.keys.audit.public_key
    await bench.sequencer.stop()
    async with bench.db.pool.acquire() as conn:
        await fill(conn, 600, until=OLD)  # January 2025, long past retention
    bench.sequencer.start()
    await bench.add(40)  # this month
    await bench.settle()
    old_head = await bench.service().latest_head(fresh=True)  # an auditor saved this one
    assert old_head is not None and old_head.tree_size == 640
    await bench.add(30)
    await bench.settle()
    assert await bench.sign() == 670

    async with bench.db.pool.acquire() as conn:
        partitions = await store.pack_partitions(conn)
        assert "audit_packs_202501" in partitions
        done = await retention.archive(conn, datetime(2025, 6, 1, tzinfo=UTC), tmp_path, key)
        assert [(d.month, d.start, d.end) for d in done] == [("2025-01", 0, 600)]
        assert "audit_packs_202501" not in await store.pack_partitions(conn)
        assert await store.log_size(conn) == 670  # the tree did not shrink
        kept = await conn.fetchval("SELECT sum(length(hashes)) / 32 FROM audit_archived_leaves")
        assert kept == 600

    # The archive verifies offline, as `gchat audit verify` reads it.
    archive = done[0].path
    assert archive is not None and archive.name == "audit-202501.jsonl.gz"
    with gzip.open(archive, "rb") as lines:
        report = verify_export(lines, key)
    assert report.ok and report.entries == 600, report.summary()

    service, who = bench.service(), await registered_auditor(bench.db.pool)
    new_head = await service.latest_head(fresh=True)
    assert new_head is not None and new_head.tree_size == 670
    old_root, new_root = _signed(old_head, key), _signed(new_head, key)

    # The old head is still a prefix of today's tree.
    proof, _, _ = await service.consistency(who, 640, 670)
    assert verify_consistency(640, 670, old_root, new_root, proof)

    # A kept event is provably in the old head and in the new one.
    row, stored_hash, path, _ = await service.inclusion(who, 620, 640)
    assert leaf_hash(row.entry) == stored_hash
    assert verify_inclusion(stored_hash, 620, 640, path, old_root)
    _, _, path, _ = await service.inclusion(who, 620, 670)
    assert verify_inclusion(stored_hash, 620, 670, path, new_root)

    # An archived entry is no longer served, and says why.
    with pytest.raises(ServiceError, match="archived"):
        await service.inclusion(who, 5, 670)

    # An export over the archived months carries their leaf hashes: it still verifies.
    lines, cursor, size = await service.export(who, 0, None, 670, None)
    while cursor is not None:
        more, cursor, _ = await service.export(who, 0, None, size, cursor)
        lines += more
    report = verify_export(lines, key)
    assert report.ok, report.summary()


async def test_nothing_is_dropped_without_a_signed_head_covering_it(
    bench: LogBench, tmp_path: Path
) -> None:
    await bench.sequencer.stop()
    out = tmp_path / "archives"
    out.mkdir()
    async with bench.db.pool.acquire() as conn:
        await fill(conn, 50, until=OLD)
        with pytest.raises(retention.RetentionError, match="signed tree head"):
            await retention.archive(conn, datetime(2025, 6, 1, tzinfo=UTC), out,
                                    bench.keys.audit.public_key)
        assert "audit_packs_202501" in await store.pack_partitions(conn)
        assert await store.log_size(conn) == 50
    assert not list(out.iterdir())
