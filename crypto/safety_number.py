"""Safety numbers: what two officials compare to detect a key substitution.

Modelled on Signal's NumericFingerprint (version 0, 5200 SHA-512
iterations). For each official::

    keys   = concatenation of their 32-byte identity keys, sorted bytewise
    h      = SHA-512(0x0000 || official_id (16 raw UUID bytes) || keys)
    repeat 5200 times: h = SHA-512(h || keys)
    digits = for each of the first six 5-byte chunks c of h:
             format(int.from_bytes(c, "big") % 100000, "05d")   # 30 digits

The safety number is the two 30-digit strings concatenated in ascending
order, so both sides get the same 60 digits; it is shown as 12 groups of 5.
An official with several devices is fingerprinted over all their device
identity keys, so adding a device changes the number too.
"""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Sequence

from crypto.errors import InvalidKey

__all__ = ["ITERATIONS", "fingerprint_digits", "format_safety_number", "safety_number"]

ITERATIONS = 5200
_VERSION = b"\x00\x00"


def _keys(identity_keys: bytes | Sequence[bytes]) -> bytes:
    keys = [identity_keys] if isinstance(identity_keys, bytes) else list(identity_keys)
    if not keys or any(not isinstance(k, bytes) or len(k) != 32 for k in keys):
        raise InvalidKey("identity keys must be one or more 32-byte keys")
    return b"".join(sorted(keys))


def fingerprint_digits(official_id: uuid.UUID, identity_keys: bytes | Sequence[bytes]) -> str:
    """The 30-digit half of a safety number belonging to one official."""
    keys = _keys(identity_keys)
    h = hashlib.sha512(_VERSION + official_id.bytes + keys).digest()
    for _ in range(ITERATIONS):
        h = hashlib.sha512(h + keys).digest()
    return "".join(f"{int.from_bytes(h[i:i + 5], 'big') % 100000:05d}" for i in range(0, 30, 5))


def safety_number(
    local_official_id: uuid.UUID,
    local_identity_keys: bytes | Sequence[bytes],
    remote_official_id: uuid.UUID,
    remote_identity_keys: bytes | Sequence[bytes],
) -> str:
    """The 60-digit safety number (no spaces); identical on both sides."""
    a = fingerprint_digits(local_official_id, local_identity_keys)
    b = fingerprint_digits(remote_official_id, remote_identity_keys)
    return a + b if a <= b else b + a


def format_safety_number(digits: str) -> str:
    """Display form: groups of 5 digits separated by spaces."""
    return " ".join(digits[i:i + 5] for i in range(0, len(digits), 5))
