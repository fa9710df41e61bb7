"""Proofs on a log of a million leaves with bounded memory (issue 20, "what must be shown").

A log of 1,048,600 leaves (four tile levels' worth: subtrees of height 8 and
16 stored, a ragged right edge) is written as the sequencer writes it --
packs of 16 with their leaf hashes, and the stored subtree roots -- with
small synthetic entries so the test fills it in seconds.  A fresh service
(a restarted node) then serves 300 inclusion proofs of random leaves and
consistency proofs; each verifies against the root computed independently
while filling, and the process's resident memory grows by under 10 MB.
"""

import hashlib
import random
from datetime import UTC, datetime, timedelta

import pytest

from gchat.audit.merkle import MerkleAccumulator, verify_consistency, verify_inclusion
from gchat.store import audit as store
from gchat.store import audit_codec as codec
from loadtests.harness import rss_kib
from tests.audit.conftest import LogBench, registered_auditor

SIZE = 1_048_600


async def _fill(bench: LogBench) -> dict[int, bytes]:
    """The log, and the roots of a few tree sizes (from an accumulator, as it grows)."""
    tree = MerkleAccumulator()
    roots: dict[int, bytes] = {}
    at = datetime.now(UTC) - timedelta(hours=1)
    async with bench.db.pool.acquire() as conn:
        await store.ensure_partitions(conn, [at])
        chunk = 65_536
        for start in range(0, SIZE, chunk):
            rows, hashes = [], []
            for first in range(start, min(SIZE, start + chunk), codec.PACK):
                records, leaf_hashes = [], []
                for i in range(first, min(SIZE, first + codec.PACK)):
                    entry = b'{"kind":"test.n","n":%d}' % i
                    leaf_hashes.append(hashlib.sha256(b"\x00" + entry).digest())
                    stored = b"\x00\x00\x00\xff" + entry  # no ids, another kind, the JSON
                    records.append((i + 1, at, stored))
                hashes += leaf_hashes
                rows.append((first, at, at, first + 1, first + len(records),
                             b"".join(leaf_hashes), codec.pack_events(records)))
            await conn.copy_records_to_table(
                "audit_packs", records=rows,
                columns=["first_leaf", "at", "min_at", "min_id", "max_id", "hashes", "events"])
            await conn.executemany(
                "INSERT INTO audit_subtrees (height, idx, hash) VALUES ($1, $2, $3)",
                tree.extend(hashes))
            roots[tree.size] = tree.root()
    return roots


@pytest.mark.slow
async def test_proofs_on_a_million_leaves_in_bounded_memory(bench: LogBench) -> None:
    await bench.sequencer.stop()
    roots = await _fill(bench)
    assert max(roots) == SIZE
    service, who = bench.service(), await registered_auditor(bench.db.pool)
    rng = random.Random(20)
    await service.inclusion(who, 0, SIZE)  # imports and pools warm
    before = rss_kib_self()
    for _ in range(300):
        index = rng.randrange(SIZE)
        row, leaf, path, _ = await service.inclusion(who, index, SIZE)
        assert row.entry == b'{"kind":"test.n","n":%d}' % index
        assert verify_inclusion(leaf, index, SIZE, path, roots[SIZE])
    for old in sorted(roots)[:-1]:
        proof, _, _ = await service.consistency(who, old, SIZE)
        assert verify_consistency(old, SIZE, roots[old], roots[SIZE], proof)
    grown = rss_kib_self() - before
    assert grown < 10 * 1024, f"RSS grew by {grown} KiB"


def rss_kib_self() -> int:
    import os

    return rss_kib(os.getpid())
