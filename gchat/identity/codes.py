"""Enrolment codes: generated with 100 bits of entropy, stored only as hashes.

Codes are read aloud or typed from a letter, so they use Crockford's base32
(no I, L, O, U) in groups of five, and normalising forgives case, dashes,
spaces and the look-alike letters. Because a code carries 100 random bits,
a plain SHA-256 of it is as good as a slow hash, and lets the server find a
code by its hash without ever storing the code.
"""

import hashlib
import secrets

ALPHABET = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
LENGTH = 20  # 20 * 5 = 100 bits
_LOOKALIKES = str.maketrans({"O": "0", "I": "1", "L": "1"})


def generate() -> str:
    raw = "".join(secrets.choice(ALPHABET) for _ in range(LENGTH))
    return "-".join(raw[i : i + 5] for i in range(0, LENGTH, 5))


def normalise(code: str) -> str:
    return code.upper().replace("-", "").replace(" ", "").translate(_LOOKALIKES)


def code_hash(code: str) -> bytes:
    return hashlib.sha256(b"gchat.code.v1" + normalise(code).encode()).digest()
