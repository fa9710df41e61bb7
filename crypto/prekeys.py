"""X25519 prekeys and the signed-prekey format.

A device publishes one *signed* prekey (rotated now and then) and a stock of
*one-time* prekeys. Both are plain X25519 key pairs with a u32 id; the
signed prekey additionally carries an Ed25519 signature by the identity key
over :func:`signed_prekey_message`, so that the server cannot substitute its
own key when it hands out bundles.
"""

from __future__ import annotations

import hmac

import nacl.bindings as _b
import nacl.exceptions as _ne
import nacl.utils as _nu

from crypto.errors import InvalidKey
from crypto.identity import IdentityKeyPair, verify_signature

__all__ = [
    "MAX_KEY_ID",
    "SIGNED_PREKEY_LABEL",
    "X25519_KEY_SIZE",
    "PrekeyPair",
    "check_key_id",
    "check_x25519_public",
    "sign_prekey",
    "signed_prekey_message",
    "verify_signed_prekey",
    "x25519",
]

X25519_KEY_SIZE = 32
MAX_KEY_ID = 2**32 - 1
SIGNED_PREKEY_LABEL = b"gchat.spk.v1"


def check_key_id(key_id: int) -> int:
    """Return ``key_id`` if it is a u32, else raise InvalidKey."""
    if isinstance(key_id, bool) or not isinstance(key_id, int) or not 0 <= key_id <= MAX_KEY_ID:
        raise InvalidKey("key id must be an integer in [0, 2**32)")
    return key_id


def x25519(private_key: bytes, public_key: bytes) -> bytes:
    """X25519 DH that refuses low-order peers instead of returning zeros.

    libsodium already raises for a result of all zeros; the explicit check
    is kept so the guarantee does not depend on how libsodium was built.
    """
    if len(private_key) != X25519_KEY_SIZE or len(public_key) != X25519_KEY_SIZE:
        raise InvalidKey("X25519 keys must be 32 bytes")
    try:
        out = bytes(_b.crypto_scalarmult(private_key, public_key))
    except (_ne.CryptoError, ValueError, TypeError) as exc:
        raise InvalidKey("X25519 peer key is low-order or invalid") from exc
    if hmac.compare_digest(out, bytes(X25519_KEY_SIZE)):
        raise InvalidKey("X25519 shared secret is all zeros")
    return out


def check_x25519_public(public_key: bytes) -> bytes:
    """Return ``public_key`` if it is a usable X25519 key, else InvalidKey.

    "Usable" means 32 bytes and not a low-order point: a DH with a random
    scalar must not fail or yield zeros.
    """
    if not isinstance(public_key, bytes) or len(public_key) != X25519_KEY_SIZE:
        raise InvalidKey("X25519 public key must be 32 bytes")
    x25519(_nu.random(X25519_KEY_SIZE), public_key)
    return public_key


class PrekeyPair:
    """An X25519 key pair with its u32 id (signed or one-time prekey)."""

    __slots__ = ("_key_id", "_private_key", "_public_key")

    def __init__(self, key_id: int, private_key: bytes) -> None:
        if not isinstance(private_key, bytes) or len(private_key) != X25519_KEY_SIZE:
            raise InvalidKey("X25519 private key must be 32 bytes")
        self._key_id = check_key_id(key_id)
        self._private_key = private_key
        self._public_key = bytes(_b.crypto_scalarmult_base(private_key))

    @classmethod
    def generate(cls, key_id: int) -> PrekeyPair:
        """Make a fresh prekey with the given id."""
        return cls(key_id, _nu.random(X25519_KEY_SIZE))

    @property
    def key_id(self) -> int:
        """The u32 id by which bundles and initial messages name this key."""
        return self._key_id

    @property
    def private_key(self) -> bytes:
        """The 32-byte X25519 private scalar."""
        return self._private_key

    @property
    def public_key(self) -> bytes:
        """The 32-byte X25519 public key."""
        return self._public_key

    def __repr__(self) -> str:
        return f"PrekeyPair(key_id={self._key_id}, public_key={self._public_key.hex()})"


def signed_prekey_message(key_id: int, public_key: bytes) -> bytes:
    """``b"gchat.spk.v1" || u32be(key_id) || public_key``: what is signed.

    The id is covered so a signature cannot be moved to another id slot.
    """
    if not isinstance(public_key, bytes) or len(public_key) != X25519_KEY_SIZE:
        raise InvalidKey("X25519 public key must be 32 bytes")
    return SIGNED_PREKEY_LABEL + check_key_id(key_id).to_bytes(4, "big") + public_key


def sign_prekey(identity: IdentityKeyPair, prekey: PrekeyPair) -> bytes:
    """Sign a prekey with the device identity key (64-byte signature)."""
    return identity.sign(signed_prekey_message(prekey.key_id, prekey.public_key))


def verify_signed_prekey(
    identity_public_key: bytes, key_id: int, public_key: bytes, signature: bytes
) -> None:
    """Check a signed prekey: InvalidKey if unusable, InvalidSignature if unsigned."""
    check_key_id(key_id)
    check_x25519_public(public_key)
    verify_signature(identity_public_key, signed_prekey_message(key_id, public_key), signature)
