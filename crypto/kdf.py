"""Key derivation: HKDF-SHA256 (RFC 5869) and the Double Ratchet KDFs.

PyNaCl has no HKDF, so it is written here on the stdlib ``hmac`` module
(checked against RFC 5869 and Wycheproof in the tests). The ratchet KDFs are
the ones recommended by the Double Ratchet spec rev. 1, section 5.2.
"""

from __future__ import annotations

import hashlib
import hmac

__all__ = [
    "HASH_LEN",
    "RATCHET_INFO",
    "chain_kdf",
    "hkdf_expand",
    "hkdf_extract",
    "hkdf_sha256",
    "hmac_sha256",
    "root_kdf",
]

HASH_LEN = 32
RATCHET_INFO = b"gchat.ratchet.v1"
_MAX_OKM = 255 * HASH_LEN


def hmac_sha256(key: bytes, data: bytes) -> bytes:
    """HMAC-SHA256 (RFC 2104), 32 bytes."""
    return hmac.new(key, data, hashlib.sha256).digest()


def hkdf_extract(salt: bytes, ikm: bytes) -> bytes:
    """HKDF-Extract; an empty salt means HashLen zero bytes (RFC 5869 2.2)."""
    return hmac_sha256(salt if salt else bytes(HASH_LEN), ikm)


def hkdf_expand(prk: bytes, info: bytes, length: int) -> bytes:
    """HKDF-Expand; raises ValueError for length outside [0, 255*HashLen]."""
    if length < 0 or length > _MAX_OKM:
        raise ValueError("HKDF output length must be in [0, 8160]")
    okm = b""
    block = b""
    counter = 1
    while len(okm) < length:
        block = hmac_sha256(prk, block + info + bytes([counter]))
        okm += block
        counter += 1
    return okm[:length]


def hkdf_sha256(ikm: bytes, salt: bytes, info: bytes, length: int) -> bytes:
    """HKDF-SHA256 = Expand(Extract(salt, ikm), info, length)."""
    if length < 0 or length > _MAX_OKM:
        raise ValueError("HKDF output length must be in [0, 8160]")
    return hkdf_expand(hkdf_extract(salt, ikm), info, length)


def chain_kdf(chain_key: bytes) -> tuple[bytes, bytes]:
    """KDF_CK: return ``(message_key, next_chain_key)``.

    Different constants as HMAC input give independent outputs, so exposing
    a message key reveals nothing about the next chain key.
    """
    return hmac_sha256(chain_key, b"\x01"), hmac_sha256(chain_key, b"\x02")


def root_kdf(root_key: bytes, dh_out: bytes) -> tuple[bytes, bytes]:
    """KDF_RK: return ``(next_root_key, chain_key)`` from a DH ratchet step."""
    out = hkdf_sha256(dh_out, root_key, RATCHET_INFO, 64)
    return out[:32], out[32:]
