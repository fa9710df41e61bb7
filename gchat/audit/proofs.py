"""Proofs and export pages served from the stored tree, not from node memory.

Every node answers inclusion and consistency proofs and export pages by
reading the few stored hashes an answer needs (``ProofPlan`` says which:
at most a few hundred, whatever the log's size) in one statement, so a
node's memory does not grow with the log and a restarted node answers its
first proof as fast as its thousandth.

Export pages (docs/AUDIT.md section 5) stay under a byte budget whatever the
range: the signed tree heads of the range and their consistency proofs are
paged like the entries.  The page cursor is opaque to clients; here it is
``2 * leaf position`` while entries are being exported and
``2 * tree size + 1`` (the size of the next head to export) before that.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from uuid import UUID

from gchat.audit import verify
from gchat.audit.merkle import ProofPlan, StoredNodes
from gchat.store import audit as store
from gchat.store.database import Executor

#: Byte budget of one export page's lines, counted as they travel inside a
#: JSON frame (quotes and backslashes escaped again); the frame limit is 256 KiB.
EXPORT_PAGE_BYTES = 160 * 1024
#: Heads, or entries, read per statement while filling a page.
_CHUNK = 64


async def stored_size(conn: Executor) -> int:
    """Number of leaves in the stored log."""
    return await store.log_size(conn)


async def read(conn: Executor, plan: ProofPlan) -> StoredNodes:
    """The stored hashes ``plan`` needs, read in one statement."""
    return StoredNodes(await store.stored_nodes(conn, plan.spans()))


async def inclusion_proof(conn: Executor, index: int, tree_size: int) -> list[bytes]:
    """``PATH(index, D[tree_size])`` from storage (``tree_size`` <= the stored size)."""
    plan = ProofPlan()
    plan.inclusion(index, tree_size)
    return (await read(conn, plan)).inclusion_proof(index, tree_size)


async def consistency_proof(conn: Executor, old_size: int, new_size: int) -> list[bytes]:
    """``PROOF(old_size, D[new_size])`` from storage (``new_size`` <= the stored size)."""
    plan = ProofPlan()
    plan.consistency(old_size, new_size)
    return (await read(conn, plan)).consistency_proof(old_size, new_size)


def _or_none(prove: Callable[[int, int], list[bytes]], a: int, b: int) -> list[bytes] | None:
    """A proof, or None when a stored hash it needs is missing (leaves were removed)."""
    try:
        return prove(a, b)
    except KeyError:
        return None


def _cost(line: str) -> int:
    """Bytes ``line`` takes in a JSON frame: UTF-8, with quotes and backslashes escaped."""
    return len(line.encode()) + line.count('"') + line.count("\\")


def _line(data: Mapping[str, object]) -> str:
    return json.dumps(data, separators=(",", ":"), ensure_ascii=False)


def _head_line(h: store.TreeHeadRow) -> str:
    return _line(verify.head_line(h.tree_size, h.timestamp_ms, h.root_hash, h.signature, h.key_id))


@dataclass
class ExportPage:
    lines: list[str] = field(default_factory=list)
    cursor: int | None = None  # None: the export is complete
    first_leaf: int = 0  # the leaves [first_leaf, end_leaf) this page exported
    end_leaf: int = 0
    officials: set[UUID] = field(default_factory=set)  # in-scope officials it showed
    budget: int = EXPORT_PAGE_BYTES

    def fits(self, line: str) -> bool:
        """Add ``line`` if it fits the budget (a page always takes its first line)."""
        cost = _cost(line) + 3  # the separating comma and quotes around the string
        if self.lines and cost > self.budget:
            return False
        self.lines.append(line)
        self.budget -= cost
        return True


async def export_page(
    conn: Executor,
    head: store.TreeHeadRow,
    start: int,
    end: int,
    cursor: int | None,
    scope: list[UUID] | None,
) -> ExportPage:
    """One page of the export of leaves [start, end) against the signed ``head``.

    Order: header and the target head (first page), then every older signed
    head of a size in [start, N) each followed by its consistency proof to
    N, then the entries with their inclusion proofs.  A log shorter than its
    signed head is damaged (leaves removed): what is there is exported
    without proofs, and the verifier says what is missing.
    Raises ``ValueError`` for a cursor this range cannot have produced.
    """
    size = head.tree_size
    provable = await stored_size(conn) >= size
    page = ExportPage(first_leaf=start, end_leaf=start)
    if cursor is None:
        page.fits(_line(verify.header_line(start, end, size, int(time.time() * 1000))))
        page.fits(_head_line(head))
        after = start - 1
    elif cursor % 2 == 1:
        after = (cursor - 1) // 2 - 1
        if not start <= after + 1 <= size:
            raise ValueError("cursor outside the range")
    else:
        after = None
    if after is not None:
        # Older heads, each with its consistency proof to the target head.
        while True:
            heads = await store.tree_heads_between(conn, max(start, after + 1), size, _CHUNK)
            if not heads:
                break
            plan = ProofPlan()
            for h in heads if provable else []:
                plan.consistency(h.tree_size, size)
            nodes = await read(conn, plan)
            for h in heads:
                pair = [_head_line(h)]
                proof = _or_none(nodes.consistency_proof, h.tree_size, size) if provable else None
                if proof is not None:
                    pair.append(_line(verify.consistency_line(h.tree_size, size, proof)))
                if page.lines and sum(_cost(x) + 3 for x in pair) > page.budget:
                    page.cursor = 2 * (after + 1) + 1
                    return page
                for x in pair:
                    page.fits(x)
                after = h.tree_size
        position = start
    else:
        assert cursor is not None
        position = cursor // 2
        if not start <= position <= end:
            raise ValueError("cursor outside the range")
    page.first_leaf = position
    while position < end:
        window = min(end, position + _CHUNK)
        rows = await store.entries_range(conn, position, window, scope)
        if not rows:
            position = window  # leaves missing from a damaged log: the verifier names them
            continue
        plan = ProofPlan()
        if provable:
            for row in rows:
                if row.leaf_index is not None and row.leaf_index < size:
                    plan.inclusion(row.leaf_index, size)
        nodes = await read(conn, plan)
        for row in rows:
            index = row.leaf_index if row.leaf_index is not None else position
            path = (
                _or_none(nodes.inclusion_proof, index, size) if provable and index < size else None
            )
            line = _line(
                verify.entry_line(
                    index, row.entry if row.in_scope else None, row.leaf_hash or b"", path
                )
            )
            if not page.fits(line):
                page.end_leaf, page.cursor = position, 2 * position
                return page
            if row.in_scope:
                page.officials.update(row.officials)
            position = index + 1
    page.end_leaf = position
    return page
