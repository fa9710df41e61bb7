"""Known-answer tests: Wycheproof (all vectors) and RFC examples.

Vectors are read from tests/vectors/ next to this directory, never from a
shared location, so the suite is self-contained.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from crypto.aead import decrypt, encrypt
from crypto.errors import DecryptionFailed, InvalidKey, InvalidSignature
from crypto.identity import verify_signature
from crypto.kdf import hkdf_sha256, hmac_sha256
from crypto.prekeys import x25519

VECTORS = Path(__file__).resolve().parent.parent / "vectors"


def _cases(name: str) -> list[tuple[dict[str, Any], dict[str, Any]]]:
    data = json.loads((VECTORS / name).read_text())
    cases = [(g, t) for g in data["testGroups"] for t in g["tests"]]
    assert len(cases) == data["numberOfTests"]
    return cases


def _ids(cases: list[tuple[dict[str, Any], dict[str, Any]]]) -> list[str]:
    return [f"tc{t['tcId']}-{t['result']}" for _, t in cases]


X25519 = _cases("x25519_test.json")
ED25519 = _cases("ed25519_test.json")
XCHACHA = _cases("xchacha20_poly1305_test.json")
HKDF = _cases("hkdf_sha256_test.json")
HMAC = _cases("hmac_sha256_test.json")


@pytest.mark.parametrize(("group", "tc"), X25519, ids=_ids(X25519))
def test_wycheproof_x25519(group: dict[str, Any], tc: dict[str, Any]) -> None:
    assert group["curve"] == "curve25519"
    priv, pub = bytes.fromhex(tc["private"]), bytes.fromhex(tc["public"])
    expected = bytes.fromhex(tc["shared"])
    if "ZeroSharedSecret" in tc["flags"]:
        # Low-order points: libsodium refuses instead of returning zeros.
        assert tc["result"] in ("acceptable", "invalid")
        with pytest.raises(InvalidKey):
            x25519(priv, pub)
        return
    if tc["result"] == "invalid":
        with pytest.raises(InvalidKey):
            assert x25519(priv, pub) != expected
        return
    assert x25519(priv, pub) == expected


@pytest.mark.parametrize(("group", "tc"), ED25519, ids=_ids(ED25519))
def test_wycheproof_ed25519(group: dict[str, Any], tc: dict[str, Any]) -> None:
    pk = bytes.fromhex(group["publicKey"]["pk"])
    msg, sig = bytes.fromhex(tc["msg"]), bytes.fromhex(tc["sig"])
    if tc["result"] == "valid":
        verify_signature(pk, msg, sig)
    else:
        assert tc["result"] == "invalid"
        with pytest.raises(InvalidSignature):
            verify_signature(pk, msg, sig)


@pytest.mark.parametrize(("group", "tc"), XCHACHA, ids=_ids(XCHACHA))
def test_wycheproof_xchacha20_poly1305(group: dict[str, Any], tc: dict[str, Any]) -> None:
    key, iv = bytes.fromhex(tc["key"]), bytes.fromhex(tc["iv"])
    aad, msg = bytes.fromhex(tc["aad"]), bytes.fromhex(tc["msg"])
    ct_tag = bytes.fromhex(tc["ct"]) + bytes.fromhex(tc["tag"])
    if tc["result"] == "valid":
        assert encrypt(key, iv, msg, aad) == ct_tag
        assert decrypt(key, iv, ct_tag, aad) == msg
    else:
        assert tc["result"] == "invalid"
        with pytest.raises((DecryptionFailed, InvalidKey)):
            decrypt(key, iv, ct_tag, aad)


@pytest.mark.parametrize(("group", "tc"), HKDF, ids=_ids(HKDF))
def test_wycheproof_hkdf_sha256(group: dict[str, Any], tc: dict[str, Any]) -> None:
    ikm, salt, info = (bytes.fromhex(tc[k]) for k in ("ikm", "salt", "info"))
    if tc["result"] == "valid":
        assert hkdf_sha256(ikm, salt, info, tc["size"]) == bytes.fromhex(tc["okm"])
    else:
        with pytest.raises(ValueError):
            hkdf_sha256(ikm, salt, info, tc["size"])


@pytest.mark.parametrize(("group", "tc"), HMAC, ids=_ids(HMAC))
def test_wycheproof_hmac_sha256(group: dict[str, Any], tc: dict[str, Any]) -> None:
    key, msg, tag = (bytes.fromhex(tc[k]) for k in ("key", "msg", "tag"))
    computed = hmac_sha256(key, msg)[: group["tagSize"] // 8]
    if tc["result"] == "valid":
        assert computed == tag
    else:
        assert computed != tag


# RFC 5869 Appendix A.1-A.3 (typed in from the RFC).
RFC5869 = [
    (
        "0b" * 22,
        "000102030405060708090a0b0c",
        "f0f1f2f3f4f5f6f7f8f9",
        42,
        "3cb25f25faacd57a90434f64d0362f2a2d2d0a90cf1a5a4c5db02d56ecc4c5bf34007208d5b887185865",
    ),
    (
        bytes(range(0x00, 0x50)).hex(),
        bytes(range(0x60, 0xB0)).hex(),
        bytes(range(0xB0, 0x100)).hex(),
        82,
        "b11e398dc80327a1c8e7f78c596a49344f012eda2d4efad8a050cc4c19afa97c"
        "59045a99cac7827271cb41c65e590e09da3275600c2f09b8367793a9aca3db71"
        "cc30c58179ec3e87c14c01d5c1f3434f1d87",
    ),
    (
        "0b" * 22,
        "",
        "",
        42,
        "8da4e775a563c18f715f802a063c5a31b8a11f5c5ee1879ec3454e5f3c738d2d9d201395faa4b61a96c8",
    ),
]


@pytest.mark.parametrize(("ikm", "salt", "info", "length", "okm"), RFC5869,
                         ids=["A.1", "A.2", "A.3"])
def test_rfc5869(ikm: str, salt: str, info: str, length: int, okm: str) -> None:
    got = hkdf_sha256(bytes.fromhex(ikm), bytes.fromhex(salt), bytes.fromhex(info), length)
    assert got.hex() == okm


def test_rfc7748_section_5_2() -> None:
    k1 = bytes.fromhex("a546e36bf0527c9d3b16154b82465edd62144c0ac1fc5a18506a2244ba449ac4")
    u1 = bytes.fromhex("e6db6867583030db3594c1a424b15f7c726624ec26b3353b10a903a6d0ab1c4c")
    assert x25519(k1, u1).hex() == (
        "c3da55379de9c6908e94ea4df28d084f32eccf03491c71f754b4075577a28552")
    k2 = bytes.fromhex("4b66e9d4d1b4673c5ad22691957d6af5c11b6421e0ea01d42ca4169e7918ba0d")
    u2 = bytes.fromhex("e5210f12786811d3f4b7959d0538ae2c31dbe7106fc03c3efc4cd549c715a493")
    assert x25519(k2, u2).hex() == (
        "95cbde9476e8907d7aade45cb4b873f88b595a68799fa152e6f8f7647aac7957")


def test_rfc7748_section_6_1() -> None:
    import nacl.bindings as b

    a_priv = bytes.fromhex("77076d0a7318a57d3c16c17251b26645df4c2f87ebc0992ab177fba51db92c2a")
    a_pub = bytes.fromhex("8520f0098930a754748b7ddcb43ef75a0dbf3a0d26381af4eba4a98eaa9b4e6a")
    b_priv = bytes.fromhex("5dab087e624a8a4b79e17f8b83800ee66f3bb1292618b6fd1c2f8b27ff88e0eb")
    b_pub = bytes.fromhex("de9edb7d7b7dc1b4d35b61c2ece435373f8343c85b78674dadfc7e146f882b4f")
    shared = "4a5d9d5ba4ce2de1728e3bf480350f25e07e21c947d19e3376f09b3c1e161742"
    assert b.crypto_scalarmult_base(a_priv) == a_pub
    assert b.crypto_scalarmult_base(b_priv) == b_pub
    assert x25519(a_priv, b_pub).hex() == shared
    assert x25519(b_priv, a_pub).hex() == shared
