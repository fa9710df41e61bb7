"""Merkle tree math for the tamper-evident audit log (docs/AUDIT.md).

The audit log is a Certificate-Transparency style append-only log: every audit
entry is a leaf of a Merkle tree, the server periodically signs a tree head
(size, root, timestamp) and auditors check inclusion and consistency proofs
offline.  This module is the pure, I/O-free part of that: hashing, proof
generation and proof verification, following RFC 9162 section 2.1 (which is
RFC 6962 section 2.1 with the verification algorithms spelled out) exactly,
so that any independent RFC 9162 implementation can check our proofs.

Definitions used throughout (RFC 9162 2.1.1):

* ``MTH({})        = SHA-256()``  (the empty string)
* ``MTH({d(0)})    = SHA-256(0x00 || d(0))``                 -- leaf hash
* ``MTH(D[n])      = SHA-256(0x01 || MTH(D[0:k]) || MTH(D[k:n]))`` -- node hash
  where ``k`` is the largest power of two strictly smaller than ``n``.

The distinct 0x00 / 0x01 prefixes give domain separation between leaves and
interior nodes, which is what stops an attacker from passing an interior node
off as a leaf (second-preimage attack on the tree).

Everything except :func:`leaf_hash` works on *leaf hashes* rather than raw
entries, so the storage layer can keep the 32-byte leaf hash next to each
entry and never re-hash entry bodies to build proofs.

The module-level proof generators take the full list of leaf hashes and cost
about n hashes per call (a proof's sibling subtrees cover the whole tree, so
that is the floor without a cache): roughly 0.1 s at 100k leaves.  A server
answering many proofs should keep a :class:`MerkleTree`, which caches complete
subtrees and answers proofs for the current and every older tree size in
O(log^2 n) -- tens of microseconds.  :class:`MerkleAccumulator` is the
O(log n)-memory variant for the sequencer, which only needs roots.

The server itself keeps no tree in memory: the sequencer stores, besides
every leaf hash, the root of every complete aligned subtree whose height is
a multiple of :data:`TILE_HEIGHT` (the bottom rows of the "tiles" of a
transparency log: one stored hash per 256 leaves, one per 65,536, ...).
Any subtree root is then at most 2**7 stored hashes folded together, so a
root, an inclusion proof or a consistency proof of any tree size needs a
few hundred stored hashes at most -- O(log n) reads.  :class:`ProofPlan`
says which stored hashes an answer needs (so they are read in one query)
and :class:`StoredNodes` computes the answer from them.

The verifiers are O(log n), never raise, and return ``False`` for anything
that is not a well-formed, valid proof, because their inputs come from the
network or from exported files an auditor does not trust.
"""

from __future__ import annotations

import hashlib
import hmac
import struct
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

__all__ = [
    "EMPTY_ROOT",
    "HASH_SIZE",
    "MerkleAccumulator",
    "MerkleTree",
    "ProofPlan",
    "StoredNodes",
    "TILE_HEIGHT",
    "TreeHead",
    "TREE_HEAD_DOMAIN",
    "consistency_proof",
    "inclusion_proof",
    "leaf_hash",
    "node_hash",
    "root_from_leaf_hashes",
    "verify_consistency",
    "verify_inclusion",
]

HASH_SIZE = 32
"""Size in bytes of every hash in the tree (SHA-256)."""

EMPTY_ROOT = hashlib.sha256(b"").digest()
"""``MTH({})``: the root of the empty tree is the hash of the empty string."""

TILE_HEIGHT = 8
"""Subtree roots are stored at heights 0 (leaves), 8, 16, ...: 256-wide tiles."""

TREE_HEAD_DOMAIN = b"gchat.treehead.v1"
"""Domain-separation prefix of :meth:`TreeHead.signing_message`."""

_LEAF_PREFIX = b"\x00"
_NODE_PREFIX = b"\x01"
_U64_MAX = (1 << 64) - 1

_sha256 = hashlib.sha256


# ---------------------------------------------------------------------------
# Hashing
# ---------------------------------------------------------------------------


def leaf_hash(entry: bytes | bytearray | memoryview) -> bytes:
    """Return ``SHA-256(0x00 || entry)``, the RFC 9162 hash of one log entry.

    The 0x00 prefix (vs 0x01 for interior nodes) is the domain separation that
    makes it impossible to present an interior node as a leaf.
    """
    h = _sha256(_LEAF_PREFIX)
    h.update(entry)  # accepts any bytes-like object, rejects str/int with TypeError
    return h.digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    """Return ``SHA-256(0x01 || left || right)``, the hash of an interior node.

    Both children must be 32-byte hashes; we check, because a wrong-length
    child would silently produce a root no conforming verifier can reproduce.
    """
    if len(left) != HASH_SIZE or len(right) != HASH_SIZE:
        raise ValueError("node_hash children must be 32-byte hashes")
    return _sha256(_NODE_PREFIX + left + right).digest()


def _largest_power_of_two_below(n: int) -> int:
    """Return the RFC's split point ``k``: the largest power of two < ``n`` (n > 1)."""
    return 1 << ((n - 1).bit_length() - 1)


def _fold_right(roots: Sequence[bytes]) -> bytes:
    """Return the MTH of a tree given the roots of its perfect subtrees, left to right.

    A tree of ``n`` leaves is a run of perfect subtrees, one per set bit of
    ``n`` from the largest down; the RFC split always takes the leftmost one as
    ``D[0:k]``, so the root is those roots hashed together from the right.
    """
    r = roots[-1]
    for left in reversed(roots[:-1]):
        r = _node(left, r)
    return r


def _path(index: int, tree_size: int, range_root: Callable[[int, int], bytes]) -> list[bytes]:
    """``PATH(index, D[tree_size])`` (RFC 9162 2.1.3.1) with the recursion unrolled.

    ``range_root(lo, hi)`` must return ``MTH(D[lo:hi])``; it is only asked for
    ranges that are nodes of the RFC tree.  The RFC appends each level's
    sibling *after* the deeper sub-path, so siblings collected top-down are
    reversed at the end (leaf-to-root order, as verifiers consume them).
    """
    lo, hi = 0, tree_size
    top_down: list[bytes] = []
    while hi - lo > 1:
        mid = lo + _largest_power_of_two_below(hi - lo)
        if index < mid:
            # PATH(m, D[n]) = PATH(m, D[0:k]) : MTH(D[k:n])
            top_down.append(range_root(mid, hi))
            hi = mid
        else:
            # PATH(m, D[n]) = PATH(m - k, D[k:n]) : MTH(D[0:k])
            top_down.append(range_root(lo, mid))
            lo = mid
    top_down.reverse()
    return top_down


def _proof(old_size: int, tree_size: int, range_root: Callable[[int, int], bytes]) -> list[bytes]:
    """``PROOF(old_size, D[tree_size])`` (RFC 9162 2.1.4.1) with the recursion unrolled.

    The RFC defines it for ``0 < m < n``; for ``m == 0`` and ``m == n`` we
    return the empty proof, the verifier then only compares roots.
    """
    m = old_size
    if m == 0 or m == tree_size:
        return []
    lo, hi = 0, tree_size
    # The RFC's flag b: true while D[lo:hi] still starts at leaf 0, i.e. the
    # old tree is a prefix of the current subtree and its root is already
    # known to the verifier (it is the old tree head).
    b = True
    top_down: list[bytes] = []
    while m != hi:
        mid = lo + _largest_power_of_two_below(hi - lo)
        if m <= mid:
            # SUBPROOF(m, D[n], b) = SUBPROOF(m, D[0:k], b) : MTH(D[k:n])
            top_down.append(range_root(mid, hi))
            hi = mid
        else:
            # SUBPROOF(m, D[n], b) = SUBPROOF(m - k, D[k:n], false) : MTH(D[0:k])
            top_down.append(range_root(lo, mid))
            lo = mid
            b = False
    top_down.reverse()
    # Base case SUBPROOF(m, D[m], b) = {} if b else {MTH(D[m])}; it comes first.
    if not b:
        top_down.insert(0, range_root(lo, hi))
    return top_down


def root_from_leaf_hashes(leaf_hashes: Sequence[bytes]) -> bytes:
    """Return the Merkle Tree Hash ``MTH(D[n])`` of the given leaf hashes.

    Computed iteratively with about n node hashes; the empty list gives
    :data:`EMPTY_ROOT`.  Raises ``ValueError`` if an element is not a 32-byte
    ``bytes`` (a bug in the caller: publishing a root over garbage is worse).
    """
    return MerkleTree(leaf_hashes).root()


def inclusion_proof(leaf_hashes: Sequence[bytes], index: int) -> list[bytes]:
    """Return the audit path ``PATH(index, D[n])`` of RFC 9162 2.1.3.1, n = len(leaf_hashes).

    The path lists sibling subtree roots from the leaf upwards, which is the
    order :func:`verify_inclusion` consumes them in.  Costs about n hashes
    (the siblings cover all other leaves, so that is the floor without a
    cache); to serve many proofs, build a :class:`MerkleTree` once instead.
    For a proof against an older signed tree head of size N, pass
    ``leaf_hashes[:N]``.  Raises ``ValueError`` unless ``0 <= index < n``.
    """
    return MerkleTree(leaf_hashes).inclusion_proof(index)


def consistency_proof(leaf_hashes: Sequence[bytes], old_size: int) -> list[bytes]:
    """Return ``PROOF(old_size, D[n])`` of RFC 9162 2.1.4.1, n = len(leaf_hashes).

    The proof shows the tree of the first ``old_size`` leaves is a prefix of
    the current tree, i.e. the log was only appended to.  Empty when
    ``old_size`` is 0 or n.  Costs about n hashes; see :class:`MerkleTree`
    for repeated use.  Raises ``ValueError`` unless ``0 <= old_size <= n``.
    """
    return MerkleTree(leaf_hashes).consistency_proof(old_size)


# ---------------------------------------------------------------------------
# Proof verification (never raises)
# ---------------------------------------------------------------------------


def _is_size(value: Any) -> bool:
    """True for a plain int in the u64 range (bool excluded: it is an int subclass)."""
    return isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= _U64_MAX


def _is_hash(value: Any) -> bool:
    """True for a 32-byte ``bytes`` object."""
    return isinstance(value, bytes) and len(value) == HASH_SIZE


def _is_proof(value: Any) -> bool:
    """True for a list/tuple of 32-byte hashes no longer than any real proof can be."""
    return (
        isinstance(value, (list, tuple))
        and len(value) <= 2 * 64
        and all(_is_hash(p) for p in value)
    )


def _node(left: bytes, right: bytes) -> bytes:
    """Unchecked node hash for the verifiers, whose inputs are already validated."""
    return _sha256(_NODE_PREFIX + left + right).digest()


def verify_inclusion(
    leaf_hash: bytes, index: int, tree_size: int, proof: Sequence[bytes], root: bytes
) -> bool:
    """Check an inclusion proof with the algorithm of RFC 9162 2.1.3.2.

    Returns True only if ``proof`` proves that ``leaf_hash`` is leaf number
    ``index`` of the tree of size ``tree_size`` whose root is ``root``.  The
    algorithm walks the path from the leaf up, using the bits of the index to
    decide the side of each sibling; it fails if the proof has too many
    elements (``sn`` reaches 0 early) or too few (``sn`` not 0 at the end).
    Malformed input of any kind yields False rather than an exception, since
    proofs arrive from an untrusted server or file.

    As in RFC 9162, the proof only binds ``tree_size`` through the shape of
    the path: ``tree_size`` and ``root`` must come from the same verified
    signed tree head, never from the proof's sender separately.
    """
    if not (_is_size(index) and _is_size(tree_size) and index < tree_size):
        return False
    if not (_is_hash(leaf_hash) and _is_hash(root) and _is_proof(proof)):
        return False
    fn = index
    sn = tree_size - 1
    r = leaf_hash
    for p in proof:
        if sn == 0:
            return False
        if fn & 1 or fn == sn:
            r = _node(p, r)
            while fn and not fn & 1:  # only loops when fn == sn and LSB(fn) clear
                fn >>= 1
                sn >>= 1
        else:
            r = _node(r, p)
        fn >>= 1
        sn >>= 1
    return sn == 0 and hmac.compare_digest(r, root)


def verify_consistency(
    old_size: int, new_size: int, old_root: bytes, new_root: bytes, proof: Sequence[bytes]
) -> bool:
    """Check a consistency proof with the algorithm of RFC 9162 2.1.4.2.

    Returns True only if ``proof`` proves that the tree of size ``old_size``
    with root ``old_root`` is a prefix of the tree of size ``new_size`` with
    root ``new_root`` -- i.e. nothing already logged was altered or removed.
    The RFC algorithm covers ``0 < old_size < new_size``; the edge cases follow
    from the definitions: equal sizes need an empty proof and equal roots, and
    the empty tree is a prefix of every tree, so ``old_size == 0`` needs an
    empty proof and ``old_root`` equal to :data:`EMPTY_ROOT`.  Never raises.
    Each size must come from the same verified signed tree head as its root.
    """
    if not (_is_size(old_size) and _is_size(new_size) and old_size <= new_size):
        return False
    if not (_is_hash(old_root) and _is_hash(new_root) and _is_proof(proof)):
        return False
    if new_size == 0 and not hmac.compare_digest(new_root, EMPTY_ROOT):
        return False
    if old_size == 0:
        return len(proof) == 0 and hmac.compare_digest(old_root, EMPTY_ROOT)
    if old_size == new_size:
        return len(proof) == 0 and hmac.compare_digest(old_root, new_root)

    # 1. An empty proof can never prove 0 < first < second.
    if len(proof) == 0:
        return False
    path = list(proof)
    # 2. If first is a power of two the old root is a node of the new tree and
    #    is omitted from the proof, so put it back.
    if old_size & (old_size - 1) == 0:
        path.insert(0, old_root)
    # 3.
    fn = old_size - 1
    sn = new_size - 1
    # 4.
    while fn & 1:
        fn >>= 1
        sn >>= 1
    # 5.
    fr = sr = path[0]
    # 6.
    for c in path[1:]:
        if sn == 0:
            return False
        if fn & 1 or fn == sn:
            fr = _node(c, fr)
            sr = _node(c, sr)
            while fn and not fn & 1:  # only loops when fn == sn and LSB(fn) clear
                fn >>= 1
                sn >>= 1
        else:
            sr = _node(sr, c)
        fn >>= 1
        sn >>= 1
    # 7.
    return sn == 0 and hmac.compare_digest(fr, old_root) and hmac.compare_digest(sr, new_root)


# ---------------------------------------------------------------------------
# Incremental trees: sequencer (roots only) and proof server (all subtrees)
# ---------------------------------------------------------------------------


class MerkleAccumulator:
    """Append-only Merkle tree that keeps only the roots of its perfect subtrees.

    A tree of ``n`` leaves decomposes into perfect subtrees, one per set bit
    of ``n`` from largest (leftmost) to smallest; keeping just their roots (a
    "compact range") is enough to append and to compute the RFC root, in
    O(log n) memory.  The sequencer appends entries one by one in commit
    order and signs :meth:`root` periodically, without loading the whole log.
    It can be checkpointed with :attr:`subtree_roots` and resumed with
    :meth:`from_state` after a restart.
    """

    __slots__ = ("_size", "_stack")

    def __init__(self) -> None:
        """Start with the empty tree."""
        self._size = 0
        # Roots of the perfect subtrees, left to right, sizes = set bits of _size
        # from high to low.
        self._stack: list[bytes] = []

    @classmethod
    def from_state(cls, tree_size: int, subtree_roots: Sequence[bytes]) -> MerkleAccumulator:
        """Rebuild an accumulator from a saved (:attr:`size`, :attr:`subtree_roots`).

        Raises ``ValueError`` if the number of roots does not match the number
        of set bits of ``tree_size`` or a root is not 32 bytes, because the
        state is then inconsistent and any root computed from it would be wrong.
        """
        if not _is_size(tree_size):
            raise ValueError("tree_size must be an int in [0, 2**64)")
        roots = list(subtree_roots)
        if len(roots) != tree_size.bit_count() or not all(_is_hash(r) for r in roots):
            raise ValueError("subtree_roots do not match tree_size")
        acc = cls()
        acc._size = tree_size
        acc._stack = roots
        return acc

    @classmethod
    def from_leaf_hashes(cls, leaf_hashes: Iterable[bytes]) -> MerkleAccumulator:
        """Build an accumulator by appending every leaf hash in order."""
        acc = cls()
        for h in leaf_hashes:
            acc.append_leaf_hash(h)
        return acc

    @property
    def size(self) -> int:
        """Number of leaves appended so far."""
        return self._size

    def __len__(self) -> int:
        """Number of leaves appended so far."""
        return self._size

    @property
    def subtree_roots(self) -> tuple[bytes, ...]:
        """Roots of the perfect subtrees, left to right (for checkpointing)."""
        return tuple(self._stack)

    def append_leaf_hash(self, leaf: bytes) -> int:
        """Append one leaf hash; return its index in the log.

        Merges equal-sized subtrees like a binary counter increment: one
        merge per trailing 1 bit of the old size, amortised O(1) hashes.
        """
        if not _is_hash(leaf):
            raise ValueError("leaf hash must be 32 bytes")
        if self._size >= _U64_MAX:
            raise OverflowError("Merkle tree is full")
        index = self._size
        h = leaf
        n = index
        while n & 1:
            h = _node(self._stack.pop(), h)
            n >>= 1
        self._stack.append(h)
        self._size = index + 1
        return index

    def append_entry(self, entry: bytes | bytearray | memoryview) -> int:
        """Hash ``entry`` as a leaf, append it, and return its index."""
        return self.append_leaf_hash(leaf_hash(entry))

    def extend(self, leaves: Iterable[bytes]) -> list[tuple[int, int, bytes]]:
        """Append leaf hashes; return the subtrees they completed that must be stored.

        Each is ``(height, index, root)`` of a perfect subtree covering leaves
        ``[index << height, (index + 1) << height)`` whose height is a positive
        multiple of :data:`TILE_HEIGHT`: what :class:`StoredNodes` needs
        besides the leaves.  Every merge of the binary-counter append makes
        one subtree that just became complete, so none is missed.
        """
        completed: list[tuple[int, int, bytes]] = []
        stack = self._stack
        for leaf in leaves:
            if not _is_hash(leaf):
                raise ValueError("leaf hash must be 32 bytes")
            if self._size >= _U64_MAX:
                raise OverflowError("Merkle tree is full")
            index = self._size
            h = leaf
            n = index
            height = 0
            while n & 1:
                h = _node(stack.pop(), h)
                n >>= 1
                height += 1
                if height % TILE_HEIGHT == 0:
                    completed.append((height, index >> height, h))
            stack.append(h)
            self._size = index + 1
        return completed

    def root(self) -> bytes:
        """Return the current ``MTH`` (``EMPTY_ROOT`` when empty) in O(log n).

        Folding the subtree roots from the right reproduces the RFC split: the
        leftmost perfect subtree is exactly ``D[0:k]`` and the rest is ``D[k:n]``.
        """
        if not self._stack:
            return EMPTY_ROOT
        r = self._stack[-1]
        for left in reversed(self._stack[:-1]):
            r = _node(left, r)
        return r


class MerkleTree:
    """Whole tree in memory for serving proofs: O(n) memory, O(log^2 n) per proof.

    Stores, for every height h, the roots of all *complete* aligned perfect
    subtrees of 2**h leaves (so about 2n hashes in total).  Every node of the
    RFC tree of any size N <= :attr:`size` is either one of those or a run of
    them along the right edge, so roots, inclusion proofs and consistency
    proofs for the current tree *and every older tree head* come out in
    microseconds instead of re-hashing the whole log.  Appends are amortised
    O(1) hashes.  The module-level functions are thin wrappers around this.
    """

    __slots__ = ("_levels",)

    def __init__(self, leaf_hashes: Iterable[bytes] = ()) -> None:
        """Build the tree from leaf hashes (about n hashes, level by level).

        Raises ``ValueError`` if an element is not a 32-byte ``bytes``.
        """
        level = list(leaf_hashes)
        if not all(_is_hash(h) for h in level):
            raise ValueError("leaf hashes must be 32-byte bytes objects")
        self._levels: list[list[bytes]] = [level]
        sha = _sha256
        prefix = _NODE_PREFIX
        while len(level) > 1:
            pairs = iter(level)
            # zip(it, it) yields consecutive pairs and drops an odd last node,
            # which is not the root of a complete subtree at the next height.
            level = [sha(prefix + a + b).digest() for a, b in zip(pairs, pairs, strict=False)]
            self._levels.append(level)

    @property
    def size(self) -> int:
        """Number of leaves."""
        return len(self._levels[0])

    def __len__(self) -> int:
        """Number of leaves."""
        return len(self._levels[0])

    def leaf_hash(self, index: int) -> bytes:
        """Return the leaf hash at ``index``."""
        return self._levels[0][index]

    def append_leaf_hash(self, leaf: bytes) -> int:
        """Append one leaf hash and return its index (amortised O(1) hashes)."""
        if not _is_hash(leaf):
            raise ValueError("leaf hash must be 32 bytes")
        levels = self._levels
        index = len(levels[0])
        levels[0].append(leaf)
        h = 0
        # A level that just became even has completed a pair: its parent exists now.
        while len(levels[h]) % 2 == 0:
            parent = _node(levels[h][-2], levels[h][-1])
            if h + 1 == len(levels):
                levels.append([])
            levels[h + 1].append(parent)
            h += 1
        return index

    def append_entry(self, entry: bytes | bytearray | memoryview) -> int:
        """Hash ``entry`` as a leaf, append it, and return its index."""
        return self.append_leaf_hash(leaf_hash(entry))

    def _range_root(self, lo: int, hi: int) -> bytes:
        """Return ``MTH(D[lo:hi])`` for a node of an RFC tree (lo aligned, hi <= size).

        An RFC node of ``s`` leaves starts at a multiple of the smallest power
        of two >= ``s`` and consists of perfect subtrees, one per set bit of
        ``s`` from the largest down; each therefore starts aligned to its own
        size, so taking the largest power of two that fits at each position
        finds them, and folding them gives the node's root.  O(log n).
        """
        if lo == hi:
            return EMPTY_ROOT
        parts: list[bytes] = []
        pos = lo
        while pos < hi:
            height = (hi - pos).bit_length() - 1
            parts.append(self._levels[height][pos >> height])
            pos += 1 << height
        return _fold_right(parts)

    def _size_arg(self, tree_size: int | None) -> int:
        """Resolve an optional tree size, refusing sizes the tree cannot answer for."""
        if tree_size is None:
            return self.size
        if not _is_size(tree_size) or tree_size > self.size:
            raise ValueError(f"tree size {tree_size!r} out of range [0, {self.size}]")
        return tree_size

    def root(self, tree_size: int | None = None) -> bytes:
        """Return ``MTH`` of the first ``tree_size`` leaves (default: all) in O(log n)."""
        return self._range_root(0, self._size_arg(tree_size))

    def inclusion_proof(self, index: int, tree_size: int | None = None) -> list[bytes]:
        """Return ``PATH(index, D[tree_size])`` (default size: all leaves).

        Raises ``ValueError`` unless ``0 <= index < tree_size <= size``.
        """
        n = self._size_arg(tree_size)
        if not _is_size(index) or index >= n:
            raise ValueError(f"leaf index {index!r} out of range for tree size {n}")
        return _path(index, n, self._range_root)

    def consistency_proof(self, old_size: int, new_size: int | None = None) -> list[bytes]:
        """Return ``PROOF(old_size, D[new_size])`` (default new size: all leaves).

        Raises ``ValueError`` unless ``0 <= old_size <= new_size <= size``.
        """
        n = self._size_arg(new_size)
        if not _is_size(old_size) or old_size > n:
            raise ValueError(f"old size {old_size!r} out of range for tree size {n}")
        return _proof(old_size, n, self._range_root)


# ---------------------------------------------------------------------------
# Proofs from stored subtree roots (the server's way: no tree in memory)
# ---------------------------------------------------------------------------


def _subtrees(lo: int, hi: int) -> list[tuple[int, int]]:
    """The perfect aligned subtrees ``(height, index)`` that make up ``D[lo:hi]``, left to right.

    For an RFC node (and for ``[0, n)``) these are the ones
    :meth:`MerkleTree._range_root` folds; the alignment bound keeps the
    decomposition right for any ``lo``.
    """
    out = []
    pos = lo
    while pos < hi:
        height = (hi - pos).bit_length() - 1
        if pos:
            height = min(height, (pos & -pos).bit_length() - 1)
        out.append((height, pos >> height))
        pos += 1 << height
    return out


def _check_inclusion(index: int, tree_size: int) -> None:
    if not _is_size(tree_size) or not _is_size(index) or index >= tree_size:
        raise ValueError(f"leaf index {index!r} out of range for tree size {tree_size!r}")


def _check_consistency(old_size: int, new_size: int) -> None:
    if not _is_size(new_size) or not _is_size(old_size) or old_size > new_size:
        raise ValueError(f"old size {old_size!r} out of range for tree size {new_size!r}")


class ProofPlan:
    """Collects which stored hashes some roots and proofs need, to read them in one go.

    Stored hashes are named ``(height, index)`` with ``height`` a multiple of
    :data:`TILE_HEIGHT` (0: the leaf hash of leaf ``index``).  A perfect
    subtree of height ``h`` is the fold of ``2 ** (h % TILE_HEIGHT)`` stored
    hashes one tile row below it, so a proof of a tree of ``n`` leaves needs
    at most ``255 * ceil(log2(n) / 8)`` of them -- whatever ``n`` is.
    """

    __slots__ = ("_wanted",)

    def __init__(self) -> None:
        """An empty plan."""
        self._wanted: set[tuple[int, int, int]] = set()

    def _range(self, lo: int, hi: int) -> bytes:
        for height, index in _subtrees(lo, hi):
            base = height - height % TILE_HEIGHT
            width = 1 << (height - base)
            self._wanted.add((base, index * width, (index + 1) * width))
        return EMPTY_ROOT  # a placeholder: the plan only records what is asked

    def root(self, tree_size: int) -> None:
        """Plan ``MTH(D[tree_size])`` (and the compact range of that size)."""
        if not _is_size(tree_size):
            raise ValueError(f"tree size {tree_size!r} out of range")
        self._range(0, tree_size)

    def inclusion(self, index: int, tree_size: int) -> None:
        """Plan ``PATH(index, D[tree_size])``."""
        _check_inclusion(index, tree_size)
        _path(index, tree_size, self._range)

    def consistency(self, old_size: int, new_size: int) -> None:
        """Plan ``PROOF(old_size, D[new_size])``."""
        _check_consistency(old_size, new_size)
        _proof(old_size, new_size, self._range)

    def spans(self) -> list[tuple[int, int, int]]:
        """The stored hashes needed, as disjoint ``(height, first index, end index)`` runs."""
        runs: list[tuple[int, int, int]] = []
        for height, lo, hi in sorted(self._wanted):
            if runs and runs[-1][0] == height and runs[-1][2] >= lo:
                runs[-1] = (height, runs[-1][1], max(runs[-1][2], hi))
            else:
                runs.append((height, lo, hi))
        return runs


class StoredNodes:
    """Roots and proofs computed from stored hashes (see :class:`ProofPlan`).

    ``stored`` maps ``(height, index)`` to a hash for heights that are
    multiples of :data:`TILE_HEIGHT`; interior subtrees are folded from them
    and remembered, so one instance can answer a page of proofs cheaply.
    A missing stored hash raises ``KeyError``: the store is incomplete, and
    no answer is better than a wrong one.
    """

    __slots__ = ("_nodes",)

    def __init__(self, stored: Mapping[tuple[int, int], bytes]) -> None:
        """Wrap the hashes read for a :class:`ProofPlan`."""
        self._nodes = dict(stored)

    def subtree(self, height: int, index: int) -> bytes:
        """Root of the perfect subtree of leaves ``[index << height, (index + 1) << height)``."""
        key = (height, index)
        found = self._nodes.get(key)
        if found is None:
            if height % TILE_HEIGHT == 0:
                raise KeyError(f"stored hash {key} is missing")
            left = self.subtree(height - 1, 2 * index)
            found = _node(left, self.subtree(height - 1, 2 * index + 1))
            self._nodes[key] = found
        return found

    def _range(self, lo: int, hi: int) -> bytes:
        if lo == hi:
            return EMPTY_ROOT
        return _fold_right([self.subtree(h, i) for h, i in _subtrees(lo, hi)])

    def leaf_hash(self, index: int) -> bytes:
        """The stored leaf hash of ``index`` (if it was read)."""
        return self.subtree(0, index)

    def compact_range(self, tree_size: int) -> list[bytes]:
        """Roots of the perfect subtrees of ``D[tree_size]`` (a sequencer's state)."""
        return [self.subtree(h, i) for h, i in _subtrees(0, tree_size)]

    def root(self, tree_size: int) -> bytes:
        """``MTH(D[tree_size])``."""
        return self._range(0, tree_size)

    def inclusion_proof(self, index: int, tree_size: int) -> list[bytes]:
        """``PATH(index, D[tree_size])``, leaf to root."""
        _check_inclusion(index, tree_size)
        return _path(index, tree_size, self._range)

    def consistency_proof(self, old_size: int, new_size: int) -> list[bytes]:
        """``PROOF(old_size, D[new_size])``."""
        _check_consistency(old_size, new_size)
        return _proof(old_size, new_size, self._range)


# ---------------------------------------------------------------------------
# Signed tree head payload
# ---------------------------------------------------------------------------


@dataclass(frozen=True)
class TreeHead:
    """A tree head (size, root, timestamp) that the server signs with its audit key.

    Signing and verifying (Ed25519) is done by callers; this class only fixes
    the exact bytes that get signed, so that server and offline verifier can
    never disagree about them.
    """

    tree_size: int
    root_hash: bytes
    timestamp_ms: int

    def __post_init__(self) -> None:
        """Refuse values that cannot be encoded unambiguously in the signed message."""
        if not _is_size(self.tree_size):
            raise ValueError("tree_size must be an int in [0, 2**64)")
        if not _is_size(self.timestamp_ms):
            raise ValueError("timestamp_ms must be an int in [0, 2**64)")
        if not _is_hash(self.root_hash):
            raise ValueError("root_hash must be 32 bytes")

    def signing_message(self) -> bytes:
        """Return the exact bytes to sign / verify for this tree head.

        Layout (65 bytes, all fields fixed-width so the encoding is injective)::

            b"gchat.treehead.v1"     17 bytes, domain separation: a signature
                                     over a tree head can never be replayed as
                                     a signature over any other G-Chat message
            tree_size                 8 bytes, unsigned big-endian
            timestamp_ms              8 bytes, unsigned big-endian (Unix ms)
            root_hash                32 bytes, the RFC 9162 MTH of the log
        """
        return (
            TREE_HEAD_DOMAIN
            + struct.pack(">QQ", self.tree_size, self.timestamp_ms)
            + (self.root_hash)
        )
