"""XChaCha20-Poly1305 (IETF) with a random 24-byte nonce.

One place wraps libsodium's AEAD so that nonces are always fresh and the
library's exceptions become :class:`DecryptionFailed`. The 192-bit nonce
makes random nonces safe for any realistic number of messages per key.
Output layout: ``nonce(24) || ciphertext || tag(16)``.
"""

from __future__ import annotations

import nacl.bindings as _b
import nacl.exceptions as _ne
import nacl.utils as _nu

from crypto.errors import DecryptionFailed, InvalidKey

__all__ = [
    "KEY_SIZE",
    "NONCE_SIZE",
    "OVERHEAD",
    "TAG_SIZE",
    "decrypt",
    "encrypt",
    "open_",
    "seal",
]

KEY_SIZE = 32
NONCE_SIZE = 24
TAG_SIZE = 16
OVERHEAD = NONCE_SIZE + TAG_SIZE


def encrypt(key: bytes, nonce: bytes, plaintext: bytes, ad: bytes) -> bytes:
    """Raw AEAD with a caller-chosen nonce: ``ciphertext || tag``.

    Only for known-answer tests; protocol code uses :func:`seal`.
    """
    if len(key) != KEY_SIZE:
        raise InvalidKey("AEAD key must be 32 bytes")
    if len(nonce) != NONCE_SIZE:
        raise InvalidKey("AEAD nonce must be 24 bytes")
    try:
        return bytes(_b.crypto_aead_xchacha20poly1305_ietf_encrypt(
            bytes(plaintext), bytes(ad), bytes(nonce), bytes(key)))
    except (_ne.CryptoError, ValueError, TypeError) as exc:
        raise InvalidKey("AEAD parameters rejected") from exc


def decrypt(key: bytes, nonce: bytes, ciphertext: bytes, ad: bytes) -> bytes:
    """Inverse of :func:`encrypt`; DecryptionFailed on any mismatch."""
    if len(key) != KEY_SIZE:
        raise InvalidKey("AEAD key must be 32 bytes")
    if len(nonce) != NONCE_SIZE or len(ciphertext) < TAG_SIZE:
        raise DecryptionFailed("bad nonce size or ciphertext too short")
    try:
        return bytes(_b.crypto_aead_xchacha20poly1305_ietf_decrypt(
            bytes(ciphertext), bytes(ad), bytes(nonce), bytes(key)))
    except (_ne.CryptoError, ValueError, TypeError) as exc:
        raise DecryptionFailed("authentication failed") from exc


def seal(key: bytes, plaintext: bytes, ad: bytes) -> bytes:
    """Encrypt and authenticate; returns ``nonce || ciphertext || tag``."""
    nonce = _nu.random(NONCE_SIZE)
    return nonce + encrypt(key, nonce, plaintext, ad)


def open_(key: bytes, sealed: bytes, ad: bytes) -> bytes:
    """Inverse of :func:`seal`; DecryptionFailed on any mismatch."""
    if len(sealed) < OVERHEAD:
        raise DecryptionFailed("ciphertext too short")
    return decrypt(key, sealed[:NONCE_SIZE], sealed[NONCE_SIZE:], ad)
