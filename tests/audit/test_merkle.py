"""Tests for gchat.audit.merkle against an independent RFC 9162 reference.

The reference below is written straight from the recursive definitions of
RFC 9162 section 2.1 (MTH, PATH, PROOF/SUBPROOF) and hashes entries itself
with hashlib, sharing no code with the production module.  The production
code must agree with it on every root and every proof for all tree sizes
1..257, and the verifiers must accept exactly the valid proofs.
"""

from __future__ import annotations

import dataclasses
import hashlib
import struct
from functools import cache
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gchat.audit.merkle import (
    EMPTY_ROOT,
    MerkleAccumulator,
    MerkleTree,
    TreeHead,
    consistency_proof,
    inclusion_proof,
    leaf_hash,
    node_hash,
    root_from_leaf_hashes,
    verify_consistency,
    verify_inclusion,
)

# ---------------------------------------------------------------------------
# Independent reference implementation (RFC 9162 2.1.1, 2.1.3.1, 2.1.4.1)
# ---------------------------------------------------------------------------

EXHAUSTIVE_MAX = 257
BIG = 2100

ENTRIES: list[bytes] = [b"gchat-audit-entry-%d" % i for i in range(BIG)]


def _sha(data: bytes) -> bytes:
    return hashlib.sha256(data).digest()


def _k(n: int) -> int:
    """Largest power of two strictly smaller than n (n > 1), by counting up."""
    k = 1
    while k * 2 < n:
        k *= 2
    return k


@cache
def ref_mth(lo: int, hi: int) -> bytes:
    """MTH(D[lo:hi]) of ENTRIES, literally the recursive RFC definition (memoised)."""
    n = hi - lo
    if n == 0:
        return _sha(b"")
    if n == 1:
        return _sha(b"\x00" + ENTRIES[lo])
    k = _k(n)
    return _sha(b"\x01" + ref_mth(lo, lo + k) + ref_mth(lo + k, hi))


def ref_path(m: int, lo: int, hi: int) -> list[bytes]:
    """PATH(m, D[lo:hi]), m relative to lo."""
    n = hi - lo
    if n == 1:
        return []
    k = _k(n)
    if m < k:
        return ref_path(m, lo, lo + k) + [ref_mth(lo + k, hi)]
    return ref_path(m - k, lo + k, hi) + [ref_mth(lo, lo + k)]


def ref_subproof(m: int, lo: int, hi: int, b: bool) -> list[bytes]:
    """SUBPROOF(m, D[lo:hi], b), m relative to lo."""
    n = hi - lo
    if m == n:
        return [] if b else [ref_mth(lo, hi)]
    k = _k(n)
    if m <= k:
        return ref_subproof(m, lo, lo + k, b) + [ref_mth(lo + k, hi)]
    return ref_subproof(m - k, lo + k, hi, False) + [ref_mth(lo, lo + k)]


def ref_proof(m: int, n: int) -> list[bytes]:
    """PROOF(m, D[n]) for 0 < m < n; empty for m in {0, n} (by convention)."""
    if m in (0, n):
        return []
    return ref_subproof(m, 0, n, True)


LEAVES: list[bytes] = [_sha(b"\x00" + e) for e in ENTRIES]
ROOTS: list[bytes] = [ref_mth(0, n) for n in range(BIG + 1)]


def test_reference_sanity() -> None:
    # The reference itself: MTH of one entry is its leaf hash, of two is the node.
    assert ref_mth(0, 1) == LEAVES[0]
    assert ref_mth(0, 2) == _sha(b"\x01" + LEAVES[0] + LEAVES[1])
    assert ref_mth(0, 3) == _sha(b"\x01" + ROOTS[2] + LEAVES[2])
    assert [_k(n) for n in range(2, 10)] == [1, 2, 2, 4, 4, 4, 4, 8]


# ---------------------------------------------------------------------------
# Known answers
# ---------------------------------------------------------------------------

# RFC 6962 test vectors as published with the Certificate Transparency
# reference implementation (certificate-transparency / transparency-dev).
CT_ENTRIES = [
    bytes.fromhex(h)
    for h in [
        "",
        "00",
        "10",
        "2021",
        "3031",
        "40414243",
        "5051525354555657",
        "606162636465666768696a6b6c6d6e6f",
    ]
]
CT_ROOTS = [
    "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
    "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
    "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
    "aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77",
    "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
    "4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4",
    "76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef",
    "ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c",
    "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328",
]
_H = {
    "a": "96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
    "b": "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
    "c": "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4",
    "d": "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
    "e": "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
    "f": "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
    "g": "0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a",
    "h": "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
    "i": "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
}
# (index, size, path) with 0-based indexes.
CT_INCLUSION = [(0, 8, "abc"), (5, 8, "def"), (2, 3, "h"), (1, 5, "ibd"), (0, 1, "")]
# (old size, new size, proof)
CT_CONSISTENCY = [(1, 8, "abc"), (6, 8, "gef"), (2, 5, "bd"), (1, 1, "")]


def _hexes(proof: list[bytes]) -> str:
    return "".join(k for p in proof for k, v in _H.items() if v == p.hex())


def test_empty_tree_root_is_sha256_of_empty_string() -> None:
    assert EMPTY_ROOT == hashlib.sha256(b"").digest()
    assert EMPTY_ROOT.hex() == CT_ROOTS[0]
    assert root_from_leaf_hashes([]) == EMPTY_ROOT
    assert MerkleTree().root() == EMPTY_ROOT
    assert MerkleAccumulator().root() == EMPTY_ROOT


def test_leaf_and_node_hash_prefixes() -> None:
    assert leaf_hash(b"").hex() == CT_ROOTS[1]
    assert leaf_hash(b"").hex() == hashlib.sha256(b"\x00").hexdigest()
    assert leaf_hash(b"abc") == hashlib.sha256(b"\x00abc").digest()
    assert leaf_hash(bytearray(b"abc")) == leaf_hash(memoryview(b"abc")) == leaf_hash(b"abc")
    left, right = leaf_hash(b"l"), leaf_hash(b"r")
    assert node_hash(left, right) == hashlib.sha256(b"\x01" + left + right).digest()
    assert node_hash(left, right) != node_hash(right, left)
    # Domain separation: a leaf whose entry is the concatenation of two hashes
    # does not collide with the node over them.
    assert leaf_hash(left + right) != node_hash(left, right)
    with pytest.raises(ValueError):
        node_hash(left[:31], right)
    with pytest.raises(ValueError):
        node_hash(left, right + b"\x00")
    with pytest.raises(TypeError):
        leaf_hash("text")  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        leaf_hash(5)  # type: ignore[arg-type]


def test_ct_known_roots() -> None:
    leaves = [leaf_hash(e) for e in CT_ENTRIES]
    tree = MerkleTree(leaves)
    acc = MerkleAccumulator()
    assert acc.root().hex() == CT_ROOTS[0]
    for n in range(len(CT_ENTRIES) + 1):
        assert root_from_leaf_hashes(leaves[:n]).hex() == CT_ROOTS[n]
        assert tree.root(n).hex() == CT_ROOTS[n]
        if n:
            acc.append_entry(CT_ENTRIES[n - 1])
            assert acc.root().hex() == CT_ROOTS[n]


@pytest.mark.parametrize(("index", "size", "path"), CT_INCLUSION)
def test_ct_known_inclusion_proofs(index: int, size: int, path: str) -> None:
    leaves = [leaf_hash(e) for e in CT_ENTRIES]
    proof = inclusion_proof(leaves[:size], index)
    assert _hexes(proof) == path and len(proof) == len(path)
    root = bytes.fromhex(CT_ROOTS[size])
    assert verify_inclusion(leaves[index], index, size, proof, root)


@pytest.mark.parametrize(("old", "new", "path"), CT_CONSISTENCY)
def test_ct_known_consistency_proofs(old: int, new: int, path: str) -> None:
    leaves = [leaf_hash(e) for e in CT_ENTRIES]
    proof = consistency_proof(leaves[:new], old)
    assert _hexes(proof) == path and len(proof) == len(path)
    old_root, new_root = bytes.fromhex(CT_ROOTS[old]), bytes.fromhex(CT_ROOTS[new])
    assert verify_consistency(old, new, old_root, new_root, proof)


# ---------------------------------------------------------------------------
# Exhaustive agreement with the reference, sizes 1..257
# ---------------------------------------------------------------------------


def test_leaf_hash_matches_reference() -> None:
    assert [leaf_hash(e) for e in ENTRIES] == LEAVES


def test_roots_match_reference_every_size() -> None:
    big = MerkleTree(LEAVES)
    for n in range(BIG + 1):
        assert big.root(n) == ROOTS[n], n
    for n in range(EXHAUSTIVE_MAX + 1):
        assert root_from_leaf_hashes(LEAVES[:n]) == ROOTS[n], n
    assert root_from_leaf_hashes(tuple(LEAVES[:100])) == ROOTS[100]


def test_every_inclusion_proof_sizes_1_to_257() -> None:
    big = MerkleTree(LEAVES[:EXHAUSTIVE_MAX])
    checked = 0
    for n in range(1, EXHAUSTIVE_MAX + 1):
        tree = MerkleTree(LEAVES[:n])  # what inclusion_proof(LEAVES[:n], i) builds
        for i in range(n):
            expected = ref_path(i, 0, n)
            assert tree.inclusion_proof(i) == expected, (i, n)
            assert big.inclusion_proof(i, n) == expected, (i, n)
            assert verify_inclusion(LEAVES[i], i, n, expected, ROOTS[n]), (i, n)
            checked += 1
        # The module-level wrapper itself, on a spread of indexes.
        for i in {0, 1 % n, n // 3, n // 2, n - 2 if n > 1 else 0, n - 1}:
            assert inclusion_proof(LEAVES[:n], i) == ref_path(i, 0, n), (i, n)
    assert checked == EXHAUSTIVE_MAX * (EXHAUSTIVE_MAX + 1) // 2


def test_every_consistency_proof_sizes_1_to_257() -> None:
    big = MerkleTree(LEAVES[:EXHAUSTIVE_MAX])
    checked = 0
    for n in range(1, EXHAUSTIVE_MAX + 1):
        tree = MerkleTree(LEAVES[:n])
        for m in range(n + 1):
            expected = ref_proof(m, n)
            assert tree.consistency_proof(m) == expected, (m, n)
            assert big.consistency_proof(m, n) == expected, (m, n)
            assert verify_consistency(m, n, ROOTS[m], ROOTS[n], expected), (m, n)
            checked += 1
        for m in {0, 1, n // 2, n - 1, n}:
            assert consistency_proof(LEAVES[:n], m) == ref_proof(m, n), (m, n)
    assert checked == sum(n + 1 for n in range(1, EXHAUSTIVE_MAX + 1))


@settings(max_examples=150, deadline=None)
@given(data=st.data())
def test_random_proofs_at_bigger_sizes(data: st.DataObject) -> None:
    n = data.draw(st.integers(EXHAUSTIVE_MAX, BIG), label="n")
    i = data.draw(st.integers(0, n - 1), label="index")
    m = data.draw(st.integers(0, n), label="old_size")
    leaves = LEAVES[:n]
    path = inclusion_proof(leaves, i)
    assert path == ref_path(i, 0, n)
    assert verify_inclusion(leaves[i], i, n, path, ROOTS[n])
    proof = consistency_proof(leaves, m)
    assert proof == ref_proof(m, n)
    assert verify_consistency(m, n, ROOTS[m], ROOTS[n], proof)


@settings(max_examples=60, deadline=None)
@given(sizes=st.lists(st.integers(1, BIG), min_size=2, max_size=2, unique=True))
def test_proofs_against_older_tree_heads(sizes: list[int]) -> None:
    """A grown MerkleTree serves proofs for earlier signed tree heads."""
    old, new = sorted(sizes)
    tree = MerkleTree(LEAVES)
    assert tree.consistency_proof(old, new) == ref_proof(old, new)
    assert tree.inclusion_proof(old - 1, new) == ref_path(old - 1, 0, new)
    assert tree.inclusion_proof(old - 1, old) == ref_path(old - 1, 0, old)


# ---------------------------------------------------------------------------
# Verifiers accept exactly the valid proofs
# ---------------------------------------------------------------------------

MUTATION_MAX = 130


def _flip(proof: list[bytes], which: int, byte: int) -> list[bytes]:
    out = list(proof)
    b = bytearray(out[which])
    b[byte % 32] ^= 0x01
    out[which] = bytes(b)
    return out


def _bad(h: bytes) -> bytes:
    return bytes([h[0] ^ 0x80]) + h[1:]


def _inclusion_ok_for(i: int, n: int, proof: list[bytes], leaf: bytes) -> bool:
    """Valid iff the claim is true and the proof is the (unique) RFC proof for it."""
    return 0 <= i < n <= BIG and leaf == LEAVES[i] and proof == ref_path(i, 0, n)


def test_inclusion_verifier_rejects_every_mutation() -> None:
    junk = hashlib.sha256(b"junk").digest()
    for n in range(1, MUTATION_MAX + 1):
        root = ROOTS[n]
        for i in range(n):
            proof = ref_path(i, 0, n)
            leaf = LEAVES[i]
            for j in range(len(proof)):
                for byte in (0, 17, 31):
                    assert not verify_inclusion(leaf, i, n, _flip(proof, j, byte), root)
            assert not verify_inclusion(_bad(leaf), i, n, proof, root)
            assert not verify_inclusion(leaf, i, n, proof, _bad(root))
            # Wrong index, with the correct root: a path fixes the leaf position.
            for j in {i - 1, i + 1, i ^ 1, i ^ 2, n - 1 - i, n, n + 1}:
                if j != i:
                    assert not verify_inclusion(leaf, j, n, proof, root), (i, j, n)
            # Wrong size, each with the genuine root for that size.
            for size in {n - 1, n + 1, n * 2, n // 2}:
                if size != n and 0 <= size <= BIG:
                    ok = _inclusion_ok_for(i, size, proof, leaf)
                    assert verify_inclusion(leaf, i, size, proof, ROOTS[size]) == ok
            # Truncated and extended.
            if proof:
                assert not verify_inclusion(leaf, i, n, proof[:-1], root)
                assert not verify_inclusion(leaf, i, n, proof[1:], root)
                if len(proof) >= 2 and proof[0] != proof[1]:
                    swapped = [proof[1], proof[0], *proof[2:]]
                    assert not verify_inclusion(leaf, i, n, swapped, root)
            assert not verify_inclusion(leaf, i, n, [*proof, junk], root)
            assert not verify_inclusion(leaf, i, n, [junk, *proof], root)
            assert not verify_inclusion(leaf, i, n, [*proof, proof[-1] if proof else leaf], root)


def test_consistency_verifier_rejects_every_mutation() -> None:
    junk = hashlib.sha256(b"junk").digest()
    for n in range(1, MUTATION_MAX + 1):
        for m in range(0, n + 1):
            proof = ref_proof(m, n)
            old_root, new_root = ROOTS[m], ROOTS[n]
            assert verify_consistency(m, n, old_root, new_root, proof)
            for j in range(len(proof)):
                for byte in (0, 31):
                    assert not verify_consistency(m, n, old_root, new_root, _flip(proof, j, byte))
            assert not verify_consistency(m, n, _bad(old_root), new_root, proof)
            # (From the empty tree nothing constrains the new root: it is a prefix of all.)
            assert verify_consistency(m, n, old_root, _bad(new_root), proof) == (m == 0)
            # Other sizes, each with the genuine roots for the claimed sizes:
            # accepted only if it is the genuine proof of that claim too.
            for m2, n2 in {(m - 1, n), (m + 1, n), (m, n - 1), (m, n + 1), (m + 1, n + 1)}:
                if 0 <= m2 <= n2 <= BIG and (m2, n2) != (m, n):
                    ok = proof == ref_proof(m2, n2)
                    got = verify_consistency(m2, n2, ROOTS[m2], ROOTS[n2], proof)
                    assert got == ok, (m, n, m2, n2)
            if m > 0:
                assert not verify_consistency(n, m, new_root, old_root, proof) or m == n
            if proof:
                assert not verify_consistency(m, n, old_root, new_root, proof[:-1])
                assert not verify_consistency(m, n, old_root, new_root, proof[1:])
                if len(proof) >= 2 and proof[0] != proof[1]:
                    swapped = [proof[1], proof[0], *proof[2:]]
                    assert not verify_consistency(m, n, old_root, new_root, swapped)
            assert not verify_consistency(m, n, old_root, new_root, [*proof, junk])
            assert not verify_consistency(m, n, old_root, new_root, [junk, *proof])
            if 0 < m < n and m & (m - 1) == 0:
                # A power-of-two old root is implicit; sending it too is malformed.
                assert not verify_consistency(m, n, old_root, new_root, [old_root, *proof])


def test_consistency_edge_cases() -> None:
    r4, r5 = ROOTS[4], ROOTS[5]
    assert verify_consistency(0, 0, EMPTY_ROOT, EMPTY_ROOT, [])
    assert not verify_consistency(0, 0, EMPTY_ROOT, r4, [])
    assert not verify_consistency(0, 0, r4, r4, [])
    assert verify_consistency(0, 5, EMPTY_ROOT, r5, [])
    assert not verify_consistency(0, 5, r4, r5, [])
    assert not verify_consistency(0, 5, EMPTY_ROOT, r5, [r5])
    assert verify_consistency(4, 4, r4, r4, [])
    assert not verify_consistency(4, 4, r4, r5, [])
    assert not verify_consistency(4, 4, r4, r4, [r4])
    assert not verify_consistency(4, 5, r4, r5, [])
    assert not verify_consistency(5, 4, r5, r4, ref_proof(4, 5))


def test_different_leaves_same_size_rejected() -> None:
    other = [leaf_hash(b"forged %d" % i) for i in range(40)]
    forged = MerkleTree(other)
    for n in (1, 2, 7, 8, 9, 33, 40):
        for i in (0, n - 1, n // 2):
            assert not verify_inclusion(LEAVES[i], i, n, forged.inclusion_proof(i), ROOTS[n])
        for m in (1, n // 2, n - 1):
            if 0 < m < n:
                p = forged.consistency_proof(m, n)
                assert not verify_consistency(m, n, ROOTS[m], ROOTS[n], p)
                # A log that rewrote history cannot prove consistency with its old head.
                assert not verify_consistency(m, n, ROOTS[m], forged.root(n), p)


_GOOD_LEAF = LEAVES[5]
_GOOD_PROOF = ref_path(5, 0, 13)
_GOOD_ROOT = ROOTS[13]

MALFORMED_INCLUSION: list[tuple[Any, Any, Any, Any, Any]] = [
    (_GOOD_LEAF[:31], 5, 13, _GOOD_PROOF, _GOOD_ROOT),
    (_GOOD_LEAF + b"\x00", 5, 13, _GOOD_PROOF, _GOOD_ROOT),
    (_GOOD_LEAF, 5, 13, _GOOD_PROOF, _GOOD_ROOT[:31]),
    (_GOOD_LEAF, 5, 13, _GOOD_PROOF, None),
    (None, 5, 13, _GOOD_PROOF, _GOOD_ROOT),
    (_GOOD_LEAF.hex(), 5, 13, _GOOD_PROOF, _GOOD_ROOT),
    (bytearray(_GOOD_LEAF), 5, 13, _GOOD_PROOF, _GOOD_ROOT),
    (_GOOD_LEAF, 13, 13, _GOOD_PROOF, _GOOD_ROOT),
    (_GOOD_LEAF, 14, 13, _GOOD_PROOF, _GOOD_ROOT),
    (_GOOD_LEAF, -1, 13, _GOOD_PROOF, _GOOD_ROOT),
    (_GOOD_LEAF, 0, 0, [], EMPTY_ROOT),
    (_GOOD_LEAF, 5, -13, _GOOD_PROOF, _GOOD_ROOT),
    (_GOOD_LEAF, 5.0, 13, _GOOD_PROOF, _GOOD_ROOT),
    (_GOOD_LEAF, "5", 13, _GOOD_PROOF, _GOOD_ROOT),
    (_GOOD_LEAF, 5, 13.0, _GOOD_PROOF, _GOOD_ROOT),
    (_GOOD_LEAF, True, 13, _GOOD_PROOF, _GOOD_ROOT),
    (_GOOD_LEAF, 5, 2**64, _GOOD_PROOF, _GOOD_ROOT),
    (_GOOD_LEAF, 2**70, 2**71, _GOOD_PROOF, _GOOD_ROOT),
    (_GOOD_LEAF, 5, 13, None, _GOOD_ROOT),
    (_GOOD_LEAF, 5, 13, b"".join(_GOOD_PROOF), _GOOD_ROOT),
    (_GOOD_LEAF, 5, 13, iter(_GOOD_PROOF), _GOOD_ROOT),
    (_GOOD_LEAF, 5, 13, [p.hex() for p in _GOOD_PROOF], _GOOD_ROOT),
    (_GOOD_LEAF, 5, 13, [_GOOD_PROOF[0][:31], *_GOOD_PROOF[1:]], _GOOD_ROOT),
    (_GOOD_LEAF, 5, 13, [_GOOD_PROOF[0] + b"\x00", *_GOOD_PROOF[1:]], _GOOD_ROOT),
    (_GOOD_LEAF, 5, 13, [*_GOOD_PROOF[:-1], None], _GOOD_ROOT),
    (_GOOD_LEAF, 5, 13, _GOOD_PROOF * 100, _GOOD_ROOT),
    (_GOOD_LEAF, 5, 13, [], _GOOD_ROOT),
]


def test_inclusion_malformed_inputs_return_false() -> None:
    assert verify_inclusion(_GOOD_LEAF, 5, 13, _GOOD_PROOF, _GOOD_ROOT)
    assert verify_inclusion(_GOOD_LEAF, 5, 13, tuple(_GOOD_PROOF), _GOOD_ROOT)
    for args in MALFORMED_INCLUSION:
        assert verify_inclusion(*args) is False, args


def test_consistency_malformed_inputs_return_false() -> None:
    proof = ref_proof(6, 13)
    r6, r13 = ROOTS[6], ROOTS[13]
    assert verify_consistency(6, 13, r6, r13, proof)
    bad: list[tuple[Any, Any, Any, Any, Any]] = [
        (13, 6, r13, r6, proof),
        (-1, 13, r6, r13, proof),
        (6, -13, r6, r13, proof),
        (6, 2**64, r6, r13, proof),
        (6.0, 13, r6, r13, proof),
        (True, 13, r6, r13, proof),
        ("6", 13, r6, r13, proof),
        (6, 13, r6[:31], r13, proof),
        (6, 13, r6, r13 + b"\x00", proof),
        (6, 13, None, r13, proof),
        (6, 13, r6, r13, None),
        (6, 13, r6, r13, b"".join(proof)),
        (6, 13, r6, r13, [*proof[:-1], proof[-1][:31]]),
        (6, 13, r6, r13, [*proof[:-1], "x" * 32]),
        (6, 13, r6, r13, [bytearray(p) for p in proof]),
        (6, 13, r6, r13, proof * 100),
        (6, 13, r6, r13, []),
        (2**70, 2**71, r6, r13, proof),
    ]
    for args in bad:
        assert verify_consistency(*args) is False, args


@settings(max_examples=300, deadline=None)
@given(
    leaf=st.binary(min_size=0, max_size=40),
    index=st.integers(-5, 2**65),
    size=st.integers(-5, 2**65),
    proof=st.lists(st.binary(min_size=30, max_size=34), max_size=70),
    root=st.binary(min_size=31, max_size=33),
)
def test_verifiers_never_raise_on_garbage(
    leaf: bytes, index: int, size: int, proof: list[bytes], root: bytes
) -> None:
    assert verify_inclusion(leaf, index, size, proof, root) in (True, False)
    assert verify_consistency(index, size, root, leaf, proof) in (True, False)


# ---------------------------------------------------------------------------
# Generator argument checking
# ---------------------------------------------------------------------------


def test_generators_reject_bad_arguments() -> None:
    leaves = LEAVES[:8]
    for index in (-1, 8, 9, True, 1.0):
        with pytest.raises(ValueError):
            inclusion_proof(leaves, index)  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        inclusion_proof([], 0)
    for old in (-1, 9, False):
        with pytest.raises(ValueError):
            consistency_proof(leaves, old)
    with pytest.raises(ValueError):
        root_from_leaf_hashes([LEAVES[0], LEAVES[1][:31]])
    with pytest.raises(ValueError):
        inclusion_proof([LEAVES[0], bytearray(LEAVES[1])], 0)  # type: ignore[list-item]
    tree = MerkleTree(leaves)
    with pytest.raises(ValueError):
        tree.root(9)
    with pytest.raises(ValueError):
        tree.inclusion_proof(3, 3)
    with pytest.raises(ValueError):
        tree.consistency_proof(5, 4)
    with pytest.raises(ValueError):
        tree.append_leaf_hash(b"short")
    assert consistency_proof([], 0) == []
    assert consistency_proof(leaves, 8) == [] and consistency_proof(leaves, 0) == []


# ---------------------------------------------------------------------------
# Incremental structures
# ---------------------------------------------------------------------------


def test_accumulator_matches_every_prefix() -> None:
    acc = MerkleAccumulator()
    assert len(acc) == 0 and acc.size == 0 and acc.subtree_roots == ()
    for n in range(1, BIG + 1):
        assert acc.append_leaf_hash(LEAVES[n - 1]) == n - 1
        assert acc.root() == ROOTS[n], n
        assert len(acc.subtree_roots) == n.bit_count()
        if n <= EXHAUSTIVE_MAX:
            assert acc.root() == root_from_leaf_hashes(LEAVES[:n])
    assert acc.size == BIG


def test_accumulator_append_entry_and_checkpoint() -> None:
    acc = MerkleAccumulator()
    for e in ENTRIES[:100]:
        acc.append_entry(e)
    assert acc.root() == ROOTS[100]
    resumed = MerkleAccumulator.from_state(acc.size, acc.subtree_roots)
    for e in ENTRIES[100:300]:
        acc.append_entry(e)
        resumed.append_entry(e)
    assert resumed.root() == acc.root() == ROOTS[300]
    assert MerkleAccumulator.from_leaf_hashes(LEAVES[:77]).root() == ROOTS[77]
    assert MerkleAccumulator.from_state(0, []).root() == EMPTY_ROOT
    with pytest.raises(ValueError):
        MerkleAccumulator.from_state(5, [LEAVES[0]])  # 5 = 0b101 needs two roots
    with pytest.raises(ValueError):
        MerkleAccumulator.from_state(1, [LEAVES[0][:31]])
    with pytest.raises(ValueError):
        MerkleAccumulator.from_state(-1, [])
    with pytest.raises(ValueError):
        acc.append_leaf_hash(b"x" * 31)
    assert acc.size == 300  # a rejected append changes nothing


def test_merkle_tree_appends_match_bulk_build() -> None:
    tree = MerkleTree()
    for n in range(1, 600):
        assert tree.append_leaf_hash(LEAVES[n - 1]) == n - 1
        assert tree.root() == ROOTS[n]
        assert tree.leaf_hash(n - 1) == LEAVES[n - 1]
    assert len(tree) == 599
    bulk = MerkleTree(LEAVES[:599])
    for n in range(0, 600, 7):
        assert tree.root(n) == bulk.root(n) == ROOTS[n]
    for i in range(0, 599, 13):
        assert tree.inclusion_proof(i) == bulk.inclusion_proof(i) == ref_path(i, 0, 599)
    tree.append_entry(ENTRIES[599])
    assert tree.root() == ROOTS[600]


# ---------------------------------------------------------------------------
# Tree heads
# ---------------------------------------------------------------------------


def test_tree_head_signing_message_layout() -> None:
    root = bytes.fromhex(CT_ROOTS[8])
    head = TreeHead(tree_size=8, root_hash=root, timestamp_ms=1_700_000_000_123)
    msg = head.signing_message()
    expected = (
        b"gchat.treehead.v1"
        + (8).to_bytes(8, "big")
        + (1_700_000_000_123).to_bytes(8, "big")
        + root
    )
    assert msg == expected
    assert len(msg) == 17 + 8 + 8 + 32
    assert msg[17:33] == struct.pack(">QQ", 8, 1_700_000_000_123)
    assert msg.hex() == (
        "67636861742e74726565686561642e7631"  # "gchat.treehead.v1"
        "0000000000000008"
        "0000018bcfe5687b"
        "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328"
    )
    # Every field changes the message.
    assert TreeHead(9, root, 1_700_000_000_123).signing_message() != msg
    assert TreeHead(8, root, 1_700_000_000_124).signing_message() != msg
    assert TreeHead(8, ROOTS[7], 1_700_000_000_123).signing_message() != msg
    # Extremes encode.
    assert TreeHead(0, EMPTY_ROOT, 0).signing_message()[17:33] == bytes(16)
    assert TreeHead(2**64 - 1, root, 2**64 - 1).signing_message()[17:33] == b"\xff" * 16


def test_tree_head_is_frozen_and_validated() -> None:
    head = TreeHead(1, ROOTS[1], 5)
    with pytest.raises(dataclasses.FrozenInstanceError):
        head.tree_size = 2  # type: ignore[misc]
    bad: list[tuple[Any, Any, Any]] = [
        (-1, ROOTS[1], 5),
        (2**64, ROOTS[1], 5),
        (1, ROOTS[1][:31], 5),
        (1, bytearray(ROOTS[1]), 5),
        (1, ROOTS[1], -5),
        (1, ROOTS[1], 2**64),
        (1.0, ROOTS[1], 5),
        (True, ROOTS[1], 5),
    ]
    for args in bad:
        with pytest.raises(ValueError):
            TreeHead(*args)
