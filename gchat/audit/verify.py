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
    MerkleTree,
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
    """
    report = Report()
    fail = report.failures.append
    header: dict[str, Any] | None = None
    heads: dict[int, list[tuple[TreeHead, bool]]] = {}
    consistencies: list[dict[str, Any]] = []
    entries: list[tuple[int | None, bytes | None, bytes | None, list[bytes] | None, int]] = []
    unproved = 0

    def add_head(line: dict[str, Any], origin: str) -> None:
        size, ts = _int(line.get("tree_size")), _int(line.get("timestamp_ms"))
        root, sig = _hex(line.get("root_hash"), 32), _hex(line.get("signature"), 64)
        if size is None or ts is None or root is None or sig is None:
            fail(Failure(f"{origin} tree head is malformed: {line!r:.120}"))
            return
        head = TreeHead(size, root, ts)
        try:
            verify_signature(public_key, head.signing_message(), sig)
            valid = True
        except CryptoError:
            valid = False
            fail(
                Failure(
                    f"{origin} tree head of size {size} (timestamp {ts}): signature does "
                    "not verify with the audit public key (forged or signed by another key)"
                )
            )
        report.tree_heads += 1
        report.valid_heads += valid
        heads.setdefault(size, []).append((head, valid))

    for number, raw in enumerate(lines, start=1):
        if isinstance(raw, bytes):
            raw = raw.decode("utf-8", "replace")
        if not raw.strip():
            continue
        line = _parse(raw)
        kind = line.get("type") if line else None
        if line is None or not isinstance(kind, str):
            fail(Failure(f"line {number} is not a JSON object with a type"))
        elif kind == "header":
            if header is not None:
                fail(Failure(f"line {number}: a second header"))
            header = line
        elif kind == "tree_head":
            add_head(line, "exported")
        elif kind == "consistency":
            consistencies.append(line)
        elif kind == "entry":
            index = _int(line.get("index"))
            entry = line.get("entry")
            data = entry.encode() if isinstance(entry, str) else None
            given = _hex(line.get("leaf_hash"), 32)
            if line.get("proof") is None:
                unproved += 1
            entries.append((index, data, given, _proof(line.get("proof")), number))
        else:
            fail(Failure(f"line {number}: unknown line type {kind!r}"))
    for known in known_heads:
        add_head(known, "known")

    if header is None or header.get("format") != EXPORT_FORMAT:
        fail(Failure(f"no {EXPORT_FORMAT} header line"))
        return report
    start, end, size = (_int(header.get(k)) for k in ("start", "end", "tree_size"))
    if start is None or end is None or size is None or not start <= end <= size:
        fail(Failure(f"malformed header: {header!r:.200}"))
        return report
    report.tree_size = size

    def valid_head(n: int) -> TreeHead | None:
        return next((h for h, ok in heads.get(n, []) if ok), None)

    target = valid_head(size)
    if target is None:
        fail(Failure(f"no validly signed tree head of the export's size {size}"))

    # Consistency of every other head with the target (append-only history).
    for line in consistencies:
        old, new = _int(line.get("old_size")), _int(line.get("new_size"))
        proof = _proof(line.get("proof"))
        if old is None or new is None or proof is None:
            fail(Failure(f"malformed consistency proof: {line!r:.120}"))
            continue
        old_head, new_head = valid_head(old), valid_head(new)
        if old_head is None or new_head is None:
            continue  # its heads are already reported
        report.consistency_proofs += 1
        if not verify_consistency(old, new, old_head.root_hash, new_head.root_hash, proof):
            fail(
                Failure(
                    f"tree head of size {old} is not a prefix of the tree of size {new}: "
                    "consistency proof fails (entries before index "
                    f"{old} were altered or removed since it was signed)"
                )
            )

    # Entries: contiguous indexes, leaf hash, inclusion in the target tree.
    hashes: list[bytes | None] = []
    not_included: list[Failure] = []
    expected = start
    for index, data, given, proof, number in entries:
        kind = _kind_of(data) if data is not None else None
        if index is None:
            fail(Failure(f"line {number}: entry without a valid index"))
            continue
        if index != expected:
            if index > expected:
                missing = f"{expected}" if index == expected + 1 else f"{expected}..{index - 1}"
                fail(
                    Failure(
                        f"missing from the export (next entry has index {index}): "
                        f"entries {missing} were removed",
                        expected,
                    )
                )
                hashes.extend([None] * (index - expected))
            else:
                fail(Failure(f"out of order or repeated (expected index {expected})", index, kind))
                continue
        expected = index + 1
        if data is not None:
            hash_ = leaf_hash(data)
            if kind is None:
                fail(Failure("entry is not a JSON object with a kind", index))
            if given is not None and given != hash_:
                fail(
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
            fail(Failure("entry has neither entry bytes nor a leaf hash", index))
            hashes.append(None)
            continue
        hashes.append(hash_)
        if target is not None:
            if index >= size:
                fail(Failure(f"beyond the export's tree size {size}", index, kind))
            elif proof is None:
                pass  # reported once below
            elif not verify_inclusion(
                hash_, index, size, proof, target.root_hash
            ):
                not_included.append(
                    Failure(
                        f"not included in the signed tree of size {size}: the entry "
                        "differs from what was logged at this index (altered, "
                        "replaced or moved) or its proof is wrong",
                        index,
                        kind,
                    )
                )
        report.entries += 1
    if len(not_included) >= 3 and 2 * len(not_included) > report.entries:
        # Nearly every proof fails: the tree itself was rewritten (leaf hashes
        # changed to match altered entries), so the failures say nothing about
        # which entry; the signed heads below locate it.
        fail(
            Failure(
                f"{len(not_included)} of {report.entries} entries are not included in the "
                f"signed tree of size {size}: the log's leaves were rewritten"
            )
        )
    else:
        report.failures.extend(not_included)
    if expected < end:
        fail(Failure(f"missing: the export ends before its end {end}", expected))
    if unproved:
        fail(
            Failure(
                f"{unproved} entries come without an inclusion proof: the server's log "
                f"does not hold the {size} leaves its signed tree head covers"
            )
        )

    # From leaf 0, recompute the root of every signed head the entries cover:
    # this locates a change to the nearest pair of heads even when the stored
    # leaf hashes (and so the server's proofs) were rewritten to match.
    # (Up to the first missing entry: a gap is already named above.)
    prefix: list[bytes] = []
    for h in hashes:
        if h is None:
            break
        prefix.append(h)
    if start == 0 and prefix:
        tree = MerkleTree(prefix)
        complete = len(prefix) == len(hashes)
        good = 0
        for n in sorted(heads):
            head = valid_head(n)
            if head is None or n == 0:
                continue
            if n > tree.size:
                if n > size and complete:
                    fail(
                        Failure(
                            f"log truncated: a signed tree head of size {n} exists but the "
                            f"export's tree has only {size} entries",
                            size,
                        )
                    )
                continue
            if tree.root(n) == head.root_hash:
                good = n
                continue
            # Point at the range's first entry unless a precise failure inside it
            # already names the entry.
            named = any(f.index is not None and good <= f.index < n for f in report.failures)
            fail(
                Failure(
                    f"the entries do not reproduce the signed tree head of size {n}: an "
                    f"entry between index {good} and {n - 1} was altered, removed or moved "
                    "(the stored leaf hashes were rewritten to match)" if not named else
                    f"the entries do not reproduce the signed tree head of size {n}",
                    None if named else good,
                    None if named else _kind_of_at(entries, good),
                )
            )
            break
        # Entries no valid head covers cannot be proved to anyone.
        covered = max((n for n in heads if valid_head(n) is not None), default=0)
        if target is None and covered < tree.size:
            fail(
                Failure(
                    f"not covered by any validly signed tree head (the last valid one "
                    f"has size {covered})",
                    covered,
                    _kind_of_at(entries, covered),
                )
            )
    else:
        for n in sorted(heads):
            if n > size and valid_head(n) is not None:
                fail(
                    Failure(
                        f"log truncated: a signed tree head of size {n} exists but the "
                        f"export's tree has only {size} entries",
                        size,
                    )
                )
    return report


def _kind_of_at(
    entries: list[tuple[int | None, bytes | None, bytes | None, list[bytes] | None, int]],
    index: int,
) -> str | None:
    for i, data, _, _, _ in entries:
        if i == index and data is not None:
            return _kind_of(data)
    return None
