"""Retention: old months of the audit log leave the database as verified archives.

``gchat audit archive`` (on the node's host, as the database owner) takes
each month partition of ``audit_packs`` that ended before the cutoff, oldest
first, and:

1. writes its entries to ``audit-YYYYMM.jsonl.gz``: gzip-compressed JSON
   Lines in the export format (docs/AUDIT.md section 5), each entry with its
   inclusion proof against the latest signed tree head, which the file
   carries -- ``gchat audit verify`` checks it offline like any export;
2. reads the file back and verifies it with the audit public key (nothing
   is dropped on the strength of an unchecked file);
3. in one transaction, keeps the partition's leaf hashes in
   ``audit_archived_leaves`` and drops the partition.

The tree is unchanged: every leaf hash and subtree root stays, so every
signed head still has its root, and inclusion proofs of kept entries and
consistency proofs between any sizes are served as before; an export over
archived leaves carries their leaf hashes without entries (docs/AUDIT.md
section 8 says what can still be proved).
"""

from __future__ import annotations

import gzip
import json
import os
import re
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import asyncpg

from gchat.audit import proofs, verify
from gchat.store import audit as store

_PARTITION = re.compile(r"audit_packs_(\d{4})(\d{2})")


class RetentionError(Exception):
    """Archiving cannot go on (nothing was dropped); the message says why, in one sentence."""


@dataclass(frozen=True)
class Archived:
    month: str  # YYYY-MM
    path: Path | None  # None: the partition was empty
    start: int  # leaves [start, end)
    end: int
    tree_size: int  # the signed head the archive's proofs are against


def _line(data: dict[str, object]) -> bytes:
    return json.dumps(data, separators=(",", ":"), ensure_ascii=False).encode() + b"\n"


async def _write(
    conn: asyncpg.Connection, head: store.TreeHeadRow, start: int, end: int, path: Path
) -> None:
    """The archive of leaves [start, end): header, the signed head, entries with proofs."""
    part = path.with_name(path.name + ".part")
    with gzip.open(part, "wb") as out:
        out.write(_line(verify.header_line(start, end, head.tree_size, int(time.time() * 1000))))
        out.write(
            _line(
                verify.head_line(
                    head.tree_size, head.timestamp_ms, head.root_hash, head.signature, head.key_id
                )
            )
        )
        cursor: int | None = 2 * start  # straight to the entries: no older heads
        while cursor is not None:
            page = await proofs.export_page(conn, head, start, end, cursor, None)
            for text in page.lines:
                out.write(text.encode() + b"\n")
            cursor = page.cursor
    with part.open("rb") as file:
        os.fsync(file.fileno())
    part.rename(path)


def _check(path: Path, public_key: bytes, start: int, end: int) -> None:
    with gzip.open(path, "rb") as lines:
        report = verify.verify_export(lines, public_key)
    if not report.ok or report.entries != end - start:
        raise RetentionError(
            f"the archive {path} did not verify, nothing dropped: {report.summary()}"
        )


async def archive(
    conn: asyncpg.Connection, before: datetime, out_dir: Path, public_key: bytes
) -> list[Archived]:
    """Archive and drop every month partition that ended at or before ``before``."""
    months = []
    for name in await store.pack_partitions(conn):
        found = _PARTITION.fullmatch(name)
        if found is None:
            continue
        year, month = int(found[1]), int(found[2])
        ends = datetime(year + month // 12, month % 12 + 1, 1, tzinfo=UTC)
        if ends <= before:
            months.append((name, f"{year:04d}-{month:02d}"))
    done = []
    for name, label in sorted(months):
        start, end, count = await store.partition_leaves(conn, name)
        if count == 0:
            await store.drop_partition(conn, name)
            done.append(Archived(label, None, 0, 0, 0))
            continue
        if count != end - start or await store.live_leaves_below(conn, start):
            raise RetentionError(
                f"{name} does not hold the oldest run of leaves: archive months in order"
            )
        head = await store.latest_tree_head(conn)
        if head is None or head.tree_size < end:
            raise RetentionError(
                "no signed tree head covers these leaves yet: run the node "
                "until it signs one (every few seconds) and try again"
            )
        path = out_dir / f"audit-{label.replace('-', '')}.jsonl.gz"
        if path.exists():
            raise RetentionError(f"{path} exists: move it away first (never overwritten)")
        await _write(conn, head, start, end, path)
        _check(path, public_key, start, end)
        await store.drop_partition(conn, name)
        done.append(Archived(label, path, start, end, head.tree_size))
    return done
