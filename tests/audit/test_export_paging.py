"""Export at scale (issue 20, item 2): pages under the frame limit whatever the
range, heads and proofs paged too; the CLI writes pages as they arrive and
``verify`` streams the file."""

from __future__ import annotations

import json
from pathlib import Path

from gchat.audit.merkle import MerkleTree, TreeHead
from gchat.audit.verify import key_id, verify_export
from gchat.store import audit as store
from protocol import frames as f
from protocol import limits
from protocol.codec import client_codec
from protocol.version import JSON_SUBPROTOCOL
from tests.audit.conftest import LogBench, registered_auditor

HEADS = 320


async def _signed_heads(bench: LogBench, sizes: range) -> None:
    """Heads of many sizes, as a sequencer signing every few seconds leaves them."""
    hashes = [bytes(r[0]) for r in await bench.db.pool.fetch(
        "SELECT leaf_hash FROM audit_log ORDER BY leaf_index")]
    tree = MerkleTree(hashes)
    key = bench.keys.audit
    for n in sizes:
        head = TreeHead(n, tree.root(n), 1_700_000_000_000 + n)
        await store.insert_tree_head(bench.db.pool, store.TreeHeadRow(
            n, head.timestamp_ms, head.root_hash, key.sign(head.signing_message()),
            key_id(key.public_key)))


async def test_export_covering_more_than_300_heads_pages_under_the_frame_limit(
    bench: LogBench, tmp_path: Path
) -> None:
    for _ in range(4):
        await bench.add(150)
    await bench.settle()
    await _signed_heads(bench, range(1, HEADS + 1))
    size = await bench.sign()
    assert size == 600

    service = bench.service()
    who = await registered_auditor(bench.db.pool)
    wire = client_codec(JSON_SUBPROTOCOL)
    out = tmp_path / "export.jsonl"
    pages = 0
    cursor = None
    with out.open("w") as file:
        while True:
            lines, cursor, _ = await service.export(who, 0, None, size, cursor)
            frame = f.AuditExportPage(rid=1, tree_size=size, lines=lines, cursor=cursor)
            encoded = wire.encode(frame)
            # What the old first page carried alone passed the limit; now none does.
            assert len(encoded.encode() if isinstance(encoded, str) else encoded) \
                < limits.MAX_FRAME_BYTES
            file.writelines(line + "\n" for line in lines)
            pages += 1
            if cursor is None:
                break
    heads_and_proofs = [json.loads(x)["type"] for x in out.read_text().splitlines()]
    assert heads_and_proofs.count("tree_head") == HEADS + 1
    assert heads_and_proofs.count("consistency") == HEADS
    assert heads_and_proofs.count("entry") == size
    assert pages >= 3

    with out.open("rb") as file:  # streamed, as `gchat audit verify` reads it
        report = verify_export(file, bench.keys.audit.public_key)
    assert report.ok, report.summary()
    assert report.valid_heads == HEADS + 1 and report.consistency_proofs == HEADS
    assert report.entries == size

    # A forged head in the middle of the range is still caught, pages or not.
    lines = out.read_text().splitlines()
    forged = next(i for i, x in enumerate(lines) if '"tree_size":200,' in x
                  and '"tree_head"' in x)
    bad = json.loads(lines[forged])
    bad["root_hash"] = "00" * 32
    lines[forged] = json.dumps(bad)
    report = verify_export(lines, bench.keys.audit.public_key)
    assert not report.ok and any("size 200" in x.what for x in report.failures)


async def test_a_cursor_from_elsewhere_is_refused(bench: LogBench) -> None:
    await bench.add(10)
    await bench.settle()
    size = await bench.sign()
    service = bench.service()
    who = await registered_auditor(bench.db.pool)
    for cursor in (2 * (size + 5), 2 * (size + 5) + 1):
        try:
            await service.export(who, 0, None, size, cursor)
        except Exception as error:  # ServiceError(not_found)
            assert "cursor" in str(error)
        else:
            raise AssertionError(f"cursor {cursor} was accepted")
