"""``gchat.audit.verify`` against exports built with an independent RFC 9162
reference (the literal recursive definitions, as in tests/audit/test_merkle.py),
not with gchat.audit.merkle: the verifier must accept exactly the right ones."""

import hashlib
import json
from functools import cache

import pytest

from crypto.identity import IdentityKeyPair
from gchat.audit import verify as v
from gchat.audit.merkle import TreeHead

KEY = IdentityKeyPair.from_seed(bytes(range(32)))
ENTRIES = [
    json.dumps({"kind": "test.event", "n": i, "v": 1}, separators=(",", ":")).encode()
    for i in range(64)
]


def _sha(data: bytes) -> bytes:
    return hashlib.sha256(data).digest()


def _k(n: int) -> int:
    k = 1
    while k * 2 < n:
        k *= 2
    return k


@cache
def mth(lo: int, hi: int) -> bytes:
    if hi == lo:
        return _sha(b"")
    if hi - lo == 1:
        return _sha(b"\x00" + ENTRIES[lo])
    k = _k(hi - lo)
    return _sha(b"\x01" + mth(lo, lo + k) + mth(lo + k, hi))


def path(m: int, lo: int, hi: int) -> list[bytes]:
    if hi - lo == 1:
        return []
    k = _k(hi - lo)
    if m < k:
        return path(m, lo, lo + k) + [mth(lo + k, hi)]
    return path(m - k, lo + k, hi) + [mth(lo, lo + k)]


def subproof(m: int, lo: int, hi: int, b: bool) -> list[bytes]:
    if m == hi - lo:
        return [] if b else [mth(lo, hi)]
    k = _k(hi - lo)
    if m <= k:
        return subproof(m, lo, lo + k, b) + [mth(lo + k, hi)]
    return subproof(m - k, lo + k, hi, False) + [mth(lo, lo + k)]


def head(n: int, key: IdentityKeyPair = KEY, ts: int = 1_700_000_000_000) -> dict[str, object]:
    h = TreeHead(n, mth(0, n), ts + n)
    return v.head_line(n, h.timestamp_ms, h.root_hash, key.sign(h.signing_message()),
                       v.key_id(key.public_key))


def export(start: int, end: int, size: int, heads: tuple[int, ...] = (),
           withheld: frozenset[int] = frozenset()) -> list[str]:
    lines: list[dict[str, object]] = [v.header_line(start, end, size, 0)]
    lines += [head(n) for n in (*heads, size)]
    lines += [v.consistency_line(n, size, subproof(n, 0, size, True) if 0 < n < size else [])
              for n in heads]
    for i in range(start, end):
        lines.append(v.entry_line(i, None if i in withheld else ENTRIES[i],
                                  _sha(b"\x00" + ENTRIES[i]), path(i, 0, size)))
    return [json.dumps(line) for line in lines]


@pytest.mark.parametrize("size", [1, 2, 3, 5, 8, 13, 31, 32, 33, 64])
def test_reference_exports_verify(size: int) -> None:
    heads = tuple(n for n in (1, size // 2, size - 1) if 0 < n < size)
    report = v.verify_export(export(0, size, size, heads), KEY.public_key)
    assert report.ok, report.summary()
    assert report.entries == size


@pytest.mark.parametrize(("start", "end"), [(0, 0), (3, 9), (17, 40), (40, 41)])
def test_partial_ranges_and_withheld_entries_verify(start: int, end: int) -> None:
    lines = export(start, end, 41, (10, 20), withheld=frozenset(range(start, end, 3)))
    assert v.verify_export(lines, KEY.public_key).ok


def _tampered(lines: list[str], index: int, change: "dict[str, object]") -> list[str]:
    out = []
    for raw in lines:
        line = json.loads(raw)
        if line.get("type") == "entry" and line["index"] == index:
            line.update(change)
        out.append(json.dumps(line))
    return out


def test_flipped_proof_hash_names_the_entry() -> None:
    lines = export(0, 20, 20)
    proof = json.loads(lines[-9])["proof"]
    proof[0] = ("0" if proof[0][0] != "0" else "1") + proof[0][1:]
    report = v.verify_export(_tampered(lines, 11, {"proof": proof}), KEY.public_key)
    assert report.first is not None and report.first.index == 11


def test_entry_moved_to_another_index_is_named() -> None:
    lines = export(0, 20, 20)
    moved = _tampered(lines, 6, {"entry": ENTRIES[7].decode()})
    report = v.verify_export(moved, KEY.public_key)
    assert report.first is not None and report.first.index == 6


def test_another_key_fails_every_head() -> None:
    report = v.verify_export(export(0, 10, 10, (4,)), IdentityKeyPair.generate().public_key)
    assert not report.ok
    assert sum("signature does not verify" in f.what for f in report.failures) == 2


def test_inconsistent_older_head_is_reported() -> None:
    lines = export(0, 10, 10, (4,))
    forged = json.loads(lines[1])
    bad = TreeHead(4, mth(0, 5), forged["timestamp_ms"])
    forged.update(v.head_line(4, bad.timestamp_ms, bad.root_hash,
                              KEY.sign(bad.signing_message()), b""))
    lines[1] = json.dumps(forged)
    report = v.verify_export(lines, KEY.public_key)
    assert any("not a prefix" in f.what for f in report.failures)


@pytest.mark.parametrize(
    "junk", ["", "not json", "[]", '{"type": 3}', '{"type":"entry","index":-1}',
             '{"type":"tree_head","tree_size":"x"}', '{"type":"header"}']
)
def test_garbage_never_raises(junk: str) -> None:
    report = v.verify_export([*export(0, 4, 4), junk], KEY.public_key)
    assert not report.ok or junk == ""
    assert not v.verify_export([junk], KEY.public_key).ok


def test_cli_verify(tmp_path: "pytest.TempPathFactory", capsys: pytest.CaptureFixture[str]) -> None:
    from pathlib import Path

    from gchat.cli import main

    good = Path(str(tmp_path)) / "good.jsonl"
    good.write_text("\n".join(export(0, 12, 12, (5,))) + "\n")
    bad = Path(str(tmp_path)) / "bad.jsonl"
    bad.write_text("\n".join(_tampered(export(0, 12, 12, (5,)), 9,
                                       {"entry": ENTRIES[9].decode().replace("9", "8")})))
    with pytest.raises(SystemExit) as ok:
        main(["audit", "verify", "--export", str(good), "--key", KEY.public_key.hex()])
    assert ok.value.code == 0 and capsys.readouterr().out.startswith("OK: 12 entries")
    with pytest.raises(SystemExit) as failed:
        main(["audit", "verify", "--export", str(bad), "--key", KEY.public_key.hex()])
    out = capsys.readouterr().out
    assert failed.value.code == 1 and out.startswith("FAILED: entry 9 (test.event)"), out
