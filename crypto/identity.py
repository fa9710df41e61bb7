"""Device identity keys (Ed25519) and the authentication challenge format.

A device's identity is one Ed25519 key pair. It signs prekeys, the
authentication challenge and (as the directory key) device certificates.
For the Diffie-Hellman legs of X3DH the same key is converted to X25519 with
libsodium's birational map instead of keeping a second key (Signal uses
XEdDSA for the opposite direction; the conversion is the PyNaCl-native
equivalent and keeps one key to pin and certify).
"""

from __future__ import annotations

import nacl.bindings as _b
import nacl.exceptions as _ne
import nacl.signing as _signing

from crypto.errors import InvalidKey, InvalidSignature

__all__ = [
    "AUTH_LABEL",
    "PUBLIC_KEY_SIZE",
    "SEED_SIZE",
    "SIGNATURE_SIZE",
    "IdentityKeyPair",
    "auth_message",
    "dh_public_from_identity",
    "verify_signature",
]

SEED_SIZE = 32
PUBLIC_KEY_SIZE = 32
SIGNATURE_SIZE = 64
AUTH_LABEL = b"gchat.auth.v1"


class IdentityKeyPair:
    """An Ed25519 key pair; the private part is kept as its 32-byte seed."""

    __slots__ = ("_signing_key",)

    def __init__(self, signing_key: _signing.SigningKey) -> None:
        self._signing_key = signing_key

    @classmethod
    def generate(cls) -> IdentityKeyPair:
        """Make a fresh key pair from the OS random source."""
        return cls(_signing.SigningKey.generate())

    @classmethod
    def from_seed(cls, seed: bytes) -> IdentityKeyPair:
        """Rebuild a key pair from its 32-byte seed (the storable secret)."""
        if not isinstance(seed, bytes) or len(seed) != SEED_SIZE:
            raise InvalidKey("identity seed must be 32 bytes")
        return cls(_signing.SigningKey(seed))

    @property
    def seed(self) -> bytes:
        """The 32-byte secret seed; store it only encrypted (see keystore)."""
        return bytes(self._signing_key)

    @property
    def public_key(self) -> bytes:
        """The 32-byte Ed25519 public key (what certificates and AD carry)."""
        return bytes(self._signing_key.verify_key)

    def sign(self, message: bytes) -> bytes:
        """Return the 64-byte detached Ed25519 signature of ``message``."""
        return bytes(self._signing_key.sign(message).signature)

    def dh_private(self) -> bytes:
        """The X25519 private scalar derived from this Ed25519 key (for DH)."""
        # PyNaCl calls crypto_sign_ed25519_sk_to_curve25519 underneath.
        return bytes(self._signing_key.to_curve25519_private_key())

    def dh_public(self) -> bytes:
        """The X25519 public key matching :meth:`dh_private`."""
        return dh_public_from_identity(self.public_key)

    def __repr__(self) -> str:
        return f"IdentityKeyPair(public_key={self.public_key.hex()})"


def dh_public_from_identity(public_key: bytes) -> bytes:
    """Convert an Ed25519 public key to X25519; raise InvalidKey if invalid."""
    if not isinstance(public_key, bytes) or len(public_key) != PUBLIC_KEY_SIZE:
        raise InvalidKey("identity public key must be 32 bytes")
    try:
        return bytes(_b.crypto_sign_ed25519_pk_to_curve25519(public_key))
    except (_ne.CryptoError, ValueError, TypeError) as exc:
        raise InvalidKey("identity public key is not a valid Ed25519 point") from exc


def verify_signature(public_key: bytes, message: bytes, signature: bytes) -> None:
    """Verify a detached Ed25519 signature, raising InvalidSignature if bad.

    Malformed inputs (wrong lengths, a public key that is not a curve point)
    are reported as InvalidSignature too: for the caller they mean the same
    thing, "this was not signed by that key".
    """
    if not isinstance(public_key, bytes) or len(public_key) != PUBLIC_KEY_SIZE:
        raise InvalidSignature("public key must be 32 bytes")
    if not isinstance(signature, bytes) or len(signature) != SIGNATURE_SIZE:
        raise InvalidSignature("signature must be 64 bytes")
    if not isinstance(message, bytes | bytearray | memoryview):
        raise InvalidSignature("message must be bytes")
    try:
        _signing.VerifyKey(public_key).verify(bytes(message), signature)
    except (_ne.CryptoError, ValueError, TypeError) as exc:
        raise InvalidSignature("signature verification failed") from exc


def auth_message(server_id: str, nonce: bytes) -> bytes:
    """The bytes a device signs to authenticate (and to enrol) on a server.

    ``b"gchat.auth.v1" || u16be(len(server_id)) || server_id (UTF-8) || nonce``.
    The label separates this use of the identity key from every other; the
    server id stops a signature for one server being replayed to another.
    """
    sid = server_id.encode("utf-8")
    if len(sid) > 0xFFFF:
        raise ValueError("server_id too long")
    return AUTH_LABEL + len(sid).to_bytes(2, "big") + sid + bytes(nonce)
