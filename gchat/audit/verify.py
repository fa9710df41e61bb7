"""Offline verification of an audit export (``gchat audit verify``).

Pure: takes the export's JSON Lines and the audit public key, does no I/O,
and trusts nothing in the export.  It checks every tree head's Ed25519
signature, every consistency proof, and every entry (its leaf hash, its
index, its inclusion proof against the export's signed tree head); when the
export starts at leaf 0 it also recomputes the root of every signed head it
covers from the entries themselves, which locates an alteration even if the
server's stored leaf hashes were rewritten to match.  The report lists every
failure, the first failing entry first.  Format: docs/AUDIT.md.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from crypto.errors import CryptoError
from crypto.identity import verify_signature
from gchat.audit.merkle import (
    MerkleAccumulator,
    TreeHead,
    leaf_hash,
    verify_consistency,
    verify_inclusion,
)

EXPORT_FORMAT = "gchat-audit-export/1"


# --- lines (the server builds them with these, the verifier reads them) --------


def header_line(start: int, end: int, tree_size: int, exported_at_ms: int) -> dict[str, Any]:
    return {
        "type": "header",
        "format": EXPORT_FORMAT,
        "start": start,
        "end": end,
        "tree_size": tree_size,
        "exported_at": exported_at_ms,
    }


def head_line(
    tree_size: int, timestamp_ms: int, root_hash: bytes, signature: bytes, key_id: bytes
) -> dict[str, Any]:
    return {
        "type": "tree_head",
        "tree_size": tree_size,
        "timestamp_ms": timestamp_ms,
        "root_hash": root_hash.hex(),
        "signature": signature.hex(),
        "key_id": key_id.hex(),
    }


def consistency_line(old_size: int, new_size: int, proof: list[bytes]) -> dict[str, Any]:
    return {
        "type": "consistency",
        "old_size": old_size,
        "new_size": new_size,
        "proof": [p.hex() for p in proof],
    }


def entry_line(
    index: int, entry: bytes | None, hash_: bytes, proof: list[bytes] | None
) -> dict[str, Any]:
    """An entry with its bytes (as text), or only its leaf hash when withheld.

    ``proof`` None: the server could not prove inclusion (its log is damaged).
    """
    line: dict[str, Any] = {
        "type": "entry",
        "index": index,
        "proof": None if proof is None else [p.hex() for p in proof],
    }
    if entry is not None:
        line["entry"] = entry.decode()
    if hash_:
        line["leaf_hash"] = hash_.hex()  # as the server stored it
    return line


def key_id(public_key: bytes) -> bytes:
    """The first 8 bytes of SHA-256 of the audit public key (names the key)."""
    import hashlib

    return hashlib.sha256(public_key).digest()[:8]


# --- verification --------------------------------------------------------------


@dataclass(frozen=True)
class Failure:
    what: str
    index: int | None = None  # the leaf index concerned, when there is one
    kind: str | None = None  # the entry's kind, when readable

    def __str__(self) -> str:
        if self.index is None:
            return self.what
        kind = f" ({self.kind})" if self.kind else ""
        return f"entry {self.index}{kind}: {self.what}"


@dataclass
class Report:
    entries: int = 0
    tree_heads: int = 0
    valid_heads: int = 0
    consistency_proofs: int = 0
    tree_size: int | None = None
    failures: list[Failure] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.failures and self.entries >= 0 and self.tree_size is not None

    @property
    def first(self) -> Failure | None:
        """The first failing entry (lowest index), else the first other failure."""
        indexed = [f for f in self.failures if f.index is not None]
        if indexed:
            return min(indexed, key=lambda f: f.index or 0)
        return self.failures[0] if self.failures else None

    def summary(self) -> str:
        if self.ok:
            return (
                f"OK: {self.entries} entries, {self.valid_heads} signed tree heads, "
                f"{self.consistency_proofs} consistency proofs verified (tree size "
                f"{self.tree_size})"
            )
        first = self.first
        lines = [f"FAILED: {first}"] + [f"  - {f}" for f in self.failures]
        return "\n".join(lines)


def _hex(value: Any, size: int | None = None) -> bytes | None:
    if not isinstance(value, str):
        return None
    try:
        raw = bytes.fromhex(value)
    except ValueError:
        return None
    return raw if size is None or len(raw) == size else None


def _proof(value: Any) -> list[bytes] | None:
    if not isinstance(value, list):
        return None
    out = [_hex(p, 32) for p in value]
    return None if any(p is None for p in out) else out  # type: ignore[return-value]


def _int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else None


def _kind_of(entry: bytes) -> str | None:
    try:
        data = json.loads(entry)
    except ValueError:
        return None
    return data.get("kind") if isinstance(data, dict) else None


def _parse(raw: str | bytes) -> dict[str, Any] | None:
    try:
        line = json.loads(raw)
    except ValueError:
        return None
    return line if isinstance(line, dict) else None


#: Failures of one kind kept in a report; the rest are counted in one more line.
MAX_LISTED = 1000


def verify_export(
    lines: Iterable[str | bytes],
    public_key: bytes,
    known_heads: Iterable[dict[str, Any]] = (),
) -> Report:
    """Verify an export against the audit public key; never raises on bad input.

    ``known_heads`` are tree heads the auditor saved earlier (the ``tree_head``
    objects printed by ``gchat audit tree-head``): each must carry a valid
    signature, and the export must be consistent with it (a log truncated or
    rewritten behind a head the auditor already holds is reported).

    One pass over ``lines`` in bounded memory, so a file of any size can be
    checked as it is read: each entry is checked when it is read (against
    the export's head, which comes before the entries), and from leaf 0 the
    roots of the signed heads are recomputed with an O(log n) accumulator.
    What is kept grows with the number of signed heads, not of entries.
    Heads and consistency proofs must come before the entries, as the
    server writes them; an export out of that order fails.
    """
    return _Verifier(public_key, known_heads).run(lines)


class _Verifier:
    """The state of one streaming verification (see :func:`verify_export`)."""

    def __init__(self, public_key: bytes, known_heads: Iterable[dict[str, Any]]) -> None:
        self.key = public_key
        self.report = Report()
        self.heads: dict[int, list[tuple[TreeHead, bool]]] = {}
        self.known = list(known_heads)
        self.header: dict[str, Any] | None = None
        self.start = self.end = self.size = 0
        self.target: TreeHead | None = None
        self.in_entries = False
        self.expected = 0
        self.unproved = 0
        self.not_included: list[Failure] = []
        self.not_included_count = 0
        # The prefix from leaf 0, while it has no gap: roots of the signed heads.
        self.prefix = MerkleAccumulator()
        self.prefix_ok = True
        self.good = 0  # the largest signed head size the prefix reproduced so far
        self.mismatch = False
        self.mismatch_at = 0
        self.kinds: dict[int, str | None] = {}  # entry kinds at head sizes (for messages)
        self.stopped = False

    def fail(self, failure: Failure) -> None:
        self.report.failures.append(failure)

    def valid_head(self, n: int) -> TreeHead | None:
        return next((h for h, ok in self.heads.get(n, []) if ok), None)

    def add_head(self, line: dict[str, Any], origin: str) -> None:
        size, ts = _int(line.get("tree_size")), _int(line.get("timestamp_ms"))
        root, sig = _hex(line.get("root_hash"), 32), _hex(line.get("signature"), 64)
        if size is None or ts is None or root is None or sig is None:
            self.fail(Failure(f"{origin} tree head is malformed: {line!r:.120}"))
            return
        head = TreeHead(size, root, ts)
        try:
            verify_signature(self.key, head.signing_message(), sig)
            valid = True
        except CryptoError:
            valid = False
            self.fail(
                Failure(
                    f"{origin} tree head of size {size} (timestamp {ts}): signature does "
                    "not verify with the audit public key (forged or signed by another key)"
                )
            )
        self.report.tree_heads += 1
        self.report.valid_heads += valid
        self.heads.setdefault(size, []).append((head, valid))

    def run(self, lines: Iterable[str | bytes]) -> Report:
        for known in self.known:
            self.add_head(known, "known")
        for number, raw in enumerate(lines, start=1):
            if isinstance(raw, bytes):
                raw = raw.decode("utf-8", "replace")
            if not raw.strip():
                continue
            self.line(number, raw)
            if self.stopped:
                return self.report
        if self.header is None:
            self.fail(Failure(f"no {EXPORT_FORMAT} header line"))
            return self.report
        if not self.in_entries:
            self.begin_entries()
        self.finish()
        return self.report

    def line(self, number: int, raw: str) -> None:
        line = _parse(raw)
        kind = line.get("type") if line else None
        if line is None or not isinstance(kind, str):
            self.fail(Failure(f"line {number} is not a JSON object with a type"))
        elif kind == "header":
            if self.header is not None:
                self.fail(Failure(f"line {number}: a second header"))
            else:
                self.read_header(line)
        elif self.header is None:
            self.fail(Failure(f"no {EXPORT_FORMAT} header line before line {number}"))
            self.stopped = True
        elif kind == "tree_head":
            if self.in_entries:
                self.fail(Failure(f"line {number}: a tree head after the entries began"))
            else:
                self.add_head(line, "exported")
        elif kind == "consistency":
            if self.in_entries:
                self.fail(Failure(f"line {number}: a consistency proof after the entries began"))
            else:
                self.consistency(line)
        elif kind == "entry":
            if not self.in_entries:
                self.begin_entries()
            self.entry(number, line)
        else:
            self.fail(Failure(f"line {number}: unknown line type {kind!r}"))

    def read_header(self, header: dict[str, Any]) -> None:
        self.header = header
        if header.get("format") != EXPORT_FORMAT:
            self.fail(Failure(f"no {EXPORT_FORMAT} header line"))
            self.stopped = True
            return
        start, end, size = (_int(header.get(k)) for k in ("start", "end", "tree_size"))
        if start is None or end is None or size is None or not start <= end <= size:
            self.fail(Failure(f"malformed header: {header!r:.200}"))
            self.stopped = True
            return
        self.start, self.end, self.size = start, end, size
        self.expected = start
        self.report.tree_size = size

    def consistency(self, line: dict[str, Any]) -> None:
        old, new = _int(line.get("old_size")), _int(line.get("new_size"))
        proof = _proof(line.get("proof"))
        if old is None or new is None or proof is None:
            self.fail(Failure(f"malformed consistency proof: {line!r:.120}"))
            return
        old_head, new_head = self.valid_head(old), self.valid_head(new)
        if old_head is None or new_head is None:
            return  # its heads are reported already (or the export is out of order)
        self.report.consistency_proofs += 1
        if not verify_consistency(old, new, old_head.root_hash, new_head.root_hash, proof):
            self.fail(
                Failure(
                    f"tree head of size {old} is not a prefix of the tree of size {new}: "
                    "consistency proof fails (entries before index "
                    f"{old} were altered or removed since it was signed)"
                )
            )

    def begin_entries(self) -> None:
        """Every head is known now: fix the target and the sizes to recompute."""
        self.in_entries = True
        self.target = self.valid_head(self.size)
        if self.target is None:
            self.fail(Failure(f"no validly signed tree head of the export's size {self.size}"))
        self.sizes = sorted(n for n in self.heads if n > 0 and self.valid_head(n) is not None)
        self.next_size = 0  # index into self.sizes of the next head to reproduce

    def entry(self, number: int, line: dict[str, Any]) -> None:
        index = _int(line.get("index"))
        raw_entry = line.get("entry")
        data = raw_entry.encode() if isinstance(raw_entry, str) else None
        given = _hex(line.get("leaf_hash"), 32)
        proof = _proof(line.get("proof"))
        if line.get("proof") is None:
            self.unproved += 1
        kind = _kind_of(data) if data is not None else None
        if index is None:
            self.fail(Failure(f"line {number}: entry without a valid index"))
            return
        if index != self.expected:
            if index > self.expected:
                missing = (
                    f"{self.expected}"
                    if index == self.expected + 1
                    else f"{self.expected}..{index - 1}"
                )
                self.fail(
                    Failure(
                        f"missing from the export (next entry has index {index}): "
                        f"entries {missing} were removed",
                        self.expected,
                    )
                )
                self.prefix_ok = False
            else:
                self.fail(
                    Failure(
                        f"out of order or repeated (expected index {self.expected})", index, kind
                    )
                )
                return
        self.expected = index + 1
        if index in self.heads or index == 0:
            self.kinds[index] = kind
        if data is not None:
            hash_ = leaf_hash(data)
            if kind is None:
                self.fail(Failure("entry is not a JSON object with a kind", index))
            if given is not None and given != hash_:
                self.fail(
                    Failure(
                        "the entry's bytes do not match the leaf hash stored when it was "
                        "sequenced (the entry was altered afterwards)",
                        index,
                        kind,
                    )
                )
        elif given is not None:
            hash_ = given
        else:
            self.fail(Failure("entry has neither entry bytes nor a leaf hash", index))
            self.prefix_ok = False
            return
        target = self.target
        if target is not None:
            if index >= self.size:
                self.fail(Failure(f"beyond the export's tree size {self.size}", index, kind))
            elif proof is None:
                pass  # reported once at the end
            elif not verify_inclusion(hash_, index, self.size, proof, target.root_hash):
                self.not_included_count += 1
                if len(self.not_included) < MAX_LISTED:
                    self.not_included.append(
                        Failure(
                            f"not included in the signed tree of size {self.size}: the entry "
                            "differs from what was logged at this index (altered, "
                            "replaced or moved) or its proof is wrong",
                            index,
                            kind,
                        )
                    )
        self.report.entries += 1
        self.grow_prefix(hash_)

    def grow_prefix(self, hash_: bytes) -> None:
        """From leaf 0, compare the root of each signed head the entries reach.

        This locates a change to the nearest pair of heads even when the
        stored leaf hashes (and so the server's proofs) were rewritten to match.
        """
        if self.start != 0 or not self.prefix_ok or self.mismatch:
            return
        self.prefix.append_leaf_hash(hash_)
        n = self.prefix.size
        while self.next_size < len(self.sizes) and self.sizes[self.next_size] < n:
            self.next_size += 1
        if self.next_size == len(self.sizes) or self.sizes[self.next_size] != n:
            return
        self.next_size += 1
        head = self.valid_head(n)
        assert head is not None
        if self.prefix.root() == head.root_hash:
            self.good = n
            return
        self.mismatch = True
        self.mismatch_at = n  # reported by finish(), once it knows what else failed

    def finish(self) -> None:
        report = self.report
        count = self.not_included_count
        if count >= 3 and 2 * count > report.entries:
            # Nearly every proof fails: the tree itself was rewritten (leaf hashes
            # changed to match altered entries), so the failures say nothing about
            # which entry; the signed heads locate it.
            self.fail(
                Failure(
                    f"{count} of {report.entries} entries are not included in the "
                    f"signed tree of size {self.size}: the log's leaves were rewritten"
                )
            )
        else:
            report.failures.extend(self.not_included)
            if count > len(self.not_included):
                self.fail(
                    Failure(
                        f"and {count - len(self.not_included)} more entries "
                        "not included in the signed tree"
                    )
                )
        if self.mismatch:
            good, n = self.good, self.mismatch_at
            # Point at the range's first entry unless a precise failure inside
            # it already names the entry.
            named = any(f.index is not None and good <= f.index < n for f in report.failures)
            self.fail(
                Failure(
                    f"the entries do not reproduce the signed tree head of size {n}: an "
                    f"entry between index {good} and {n - 1} was altered, removed or moved "
                    "(the stored leaf hashes were rewritten to match)"
                    if not named
                    else f"the entries do not reproduce the signed tree head of size {n}",
                    None if named else good,
                    None if named else self.kinds.get(good),
                )
            )
        if self.expected < self.end:
            self.fail(Failure(f"missing: the export ends before its end {self.end}", self.expected))
        if self.unproved:
            self.fail(
                Failure(
                    f"{self.unproved} entries come without an inclusion proof: the server's "
                    f"log does not hold the {self.size} leaves its signed tree head covers"
                )
            )
        covered_to = self.prefix.size
        complete = self.prefix_ok
        if self.start == 0 and covered_to:
            for n in sorted(self.heads):
                if n > covered_to and n > self.size and complete and self.valid_head(n):
                    self.fail(
                        Failure(
                            f"log truncated: a signed tree head of size {n} exists but the "
                            f"export's tree has only {self.size} entries",
                            self.size,
                        )
                    )
            # Entries no valid head covers cannot be proved to anyone.
            covered = max((n for n in self.heads if self.valid_head(n) is not None), default=0)
            if self.target is None and covered < covered_to:
                self.fail(
                    Failure(
                        f"not covered by any validly signed tree head (the last valid one "
                        f"has size {covered})",
                        covered,
                        self.kinds.get(covered),
                    )
                )
        else:
            for n in sorted(self.heads):
                if n > self.size and self.valid_head(n) is not None:
                    self.fail(
                        Failure(
                            f"log truncated: a signed tree head of size {n} exists but the "
                            f"export's tree has only {self.size} entries",
                            self.size,
                        )
                    )
