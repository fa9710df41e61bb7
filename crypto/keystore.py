"""Encrypted-at-rest storage of a device's secrets (identity seed, sessions).

Sans-I/O: these functions turn bytes into an encrypted blob and back; the
client decides where the file lives. The key comes either from a passphrase
(Argon2id, the salt and cost parameters stored in the header so they can be
raised later without breaking old files) or from a 32-byte key file.

Format (all integers big-endian)::

    magic b"GCKS" | version 0x01 | kdf (0x01 argon2id, 0x02 raw key)
    [argon2id: u32 opslimit | u64 memlimit | salt(16)]
    nonce(24) | XChaCha20-Poly1305 ciphertext+tag
    AEAD AD = every byte before the nonce (so the header cannot be altered)
"""

from __future__ import annotations

import nacl.exceptions as _ne
import nacl.pwhash.argon2id as _argon2id
import nacl.utils as _nu

from crypto.aead import KEY_SIZE, open_, seal
from crypto.errors import CryptoError, InvalidKey, InvalidMessage, WrongPassphrase

__all__ = [
    "DEFAULT_MEMLIMIT",
    "DEFAULT_OPSLIMIT",
    "KDF_ARGON2ID",
    "KDF_RAW_KEY",
    "MAGIC",
    "WrongPassphrase",
    "generate_key",
    "open_with_key",
    "open_with_passphrase",
    "seal_with_key",
    "seal_with_passphrase",
]

MAGIC = b"GCKS"
VERSION = 0x01
KDF_ARGON2ID = 0x01
KDF_RAW_KEY = 0x02
SALT_SIZE = _argon2id.SALTBYTES  # 16
DEFAULT_OPSLIMIT = _argon2id.OPSLIMIT_MODERATE
DEFAULT_MEMLIMIT = _argon2id.MEMLIMIT_MODERATE
# Refuse files asking for more than this, so a crafted file cannot make the
# client burn minutes of CPU or gigabytes of memory before failing.
MAX_OPSLIMIT = _argon2id.OPSLIMIT_SENSITIVE
MAX_MEMLIMIT = _argon2id.MEMLIMIT_SENSITIVE
# ... and less than libsodium's INTERACTIVE level (2 passes, 64 MiB), on
# writing and on reading: a file that says "1 pass, 8 KiB" (a downgrade by
# whoever could write it) would make guessing the passphrase cheap.
MIN_OPSLIMIT = _argon2id.OPSLIMIT_INTERACTIVE
MIN_MEMLIMIT = _argon2id.MEMLIMIT_INTERACTIVE


def _check_cost(opslimit: int, memlimit: int) -> bool:
    return MIN_OPSLIMIT <= opslimit <= MAX_OPSLIMIT and MIN_MEMLIMIT <= memlimit <= MAX_MEMLIMIT


def generate_key() -> bytes:
    """A random 32-byte key for a key file."""
    return _nu.random(KEY_SIZE)


def _passphrase_bytes(passphrase: str | bytes) -> bytes:
    """The passphrase as bytes; an empty one is refused (it protects nothing)."""
    raw = passphrase.encode("utf-8") if isinstance(passphrase, str) else bytes(passphrase)
    if not raw:
        raise InvalidKey("empty passphrase")
    return raw


def _derive(passphrase: bytes, salt: bytes, opslimit: int, memlimit: int) -> bytes:
    try:
        return bytes(_argon2id.kdf(KEY_SIZE, passphrase, salt, opslimit=opslimit,
                                   memlimit=memlimit))
    except (_ne.CryptoError, ValueError, TypeError) as exc:
        raise InvalidKey("Argon2id parameters rejected") from exc


def seal_with_passphrase(
    data: bytes,
    passphrase: str | bytes,
    *,
    opslimit: int = DEFAULT_OPSLIMIT,
    memlimit: int = DEFAULT_MEMLIMIT,
) -> bytes:
    """Encrypt ``data`` under a passphrase (Argon2id, fresh random salt)."""
    if not _check_cost(opslimit, memlimit):
        raise InvalidKey("Argon2id parameters out of range")
    salt = _nu.random(SALT_SIZE)
    header = (MAGIC + bytes([VERSION, KDF_ARGON2ID]) + opslimit.to_bytes(4, "big")
              + memlimit.to_bytes(8, "big") + salt)
    key = _derive(_passphrase_bytes(passphrase), salt, opslimit, memlimit)
    return header + seal(key, data, header)


def seal_with_key(data: bytes, key: bytes) -> bytes:
    """Encrypt ``data`` under a 32-byte key (from a key file)."""
    if len(key) != KEY_SIZE:
        raise InvalidKey("key file key must be 32 bytes")
    header = MAGIC + bytes([VERSION, KDF_RAW_KEY])
    return header + seal(key, data, header)


def _parse(blob: bytes, expected_kdf: int) -> int:
    """Check magic/version/kdf; return the header length."""
    if len(blob) < 6 or blob[:4] != MAGIC:
        raise InvalidMessage("not a G-Chat keystore")
    if blob[4] != VERSION:
        raise InvalidMessage("unknown keystore version")
    if blob[5] != expected_kdf:
        raise InvalidMessage("keystore uses a different key source")
    return 6 + (4 + 8 + SALT_SIZE if expected_kdf == KDF_ARGON2ID else 0)


def open_with_passphrase(blob: bytes, passphrase: str | bytes) -> bytes:
    """Decrypt a passphrase keystore; WrongPassphrase if it does not open."""
    blob = bytes(blob)
    hlen = _parse(blob, KDF_ARGON2ID)
    if len(blob) < hlen:
        raise InvalidMessage("keystore header truncated")
    opslimit = int.from_bytes(blob[6:10], "big")
    memlimit = int.from_bytes(blob[10:18], "big")
    salt = blob[18:hlen]
    if not _check_cost(opslimit, memlimit):
        raise InvalidMessage("keystore Argon2id parameters out of range")
    key = _derive(_passphrase_bytes(passphrase), salt, opslimit, memlimit)
    try:
        return open_(key, blob[hlen:], blob[:hlen])
    except CryptoError as exc:
        raise WrongPassphrase("wrong passphrase or corrupted keystore") from exc


def open_with_key(blob: bytes, key: bytes) -> bytes:
    """Decrypt a key-file keystore; WrongPassphrase if the key is wrong."""
    blob = bytes(blob)
    if len(key) != KEY_SIZE:
        raise InvalidKey("key file key must be 32 bytes")
    hlen = _parse(blob, KDF_RAW_KEY)
    try:
        return open_(key, blob[hlen:], blob[:hlen])
    except CryptoError as exc:
        raise WrongPassphrase("wrong key or corrupted keystore") from exc
