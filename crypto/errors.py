"""Exceptions of the end-to-end crypto package.

Every failure the public API can raise is a :class:`CryptoError`, so that an
adapter (server or client) can catch one root and map it to a stable error
code. Exceptions from PyNaCl/libsodium never escape: each module maps them
onto one of the subclasses below, because a caller must not depend on which
library sits underneath.
"""

from __future__ import annotations

__all__ = [
    "AttachmentTampered",
    "AttachmentTruncated",
    "CryptoError",
    "DecryptionFailed",
    "InvalidCertificate",
    "InvalidKey",
    "InvalidMessage",
    "InvalidSignature",
    "InvalidState",
    "ReplayedMessage",
    "TooManySkippedMessages",
    "WrongPassphrase",
]


class CryptoError(Exception):
    """Root of every error raised by :mod:`crypto`."""


class InvalidSignature(CryptoError):
    """An Ed25519 signature did not verify (or key/signature were malformed)."""


class InvalidKey(CryptoError):
    """A key has the wrong length, is not a valid point, or is low-order."""


class InvalidCertificate(CryptoError):
    """A device certificate is malformed or not signed by the directory key."""


class InvalidMessage(CryptoError):
    """A wire object (header, message, bundle) could not be parsed."""


class DecryptionFailed(CryptoError):
    """Authenticated decryption failed: wrong key, tampered data or wrong AD."""


class ReplayedMessage(DecryptionFailed):
    """A message whose key was already used (or deleted) was received again."""


class TooManySkippedMessages(DecryptionFailed):
    """Accepting a message would store more skipped keys than the cap allows."""


class WrongPassphrase(DecryptionFailed):
    """A keystore did not open: wrong passphrase or key file, or it was altered."""


class InvalidState(CryptoError):
    """Serialised state could not be parsed or is of an unknown version."""


class AttachmentTampered(DecryptionFailed):
    """An attachment's ciphertext does not match the hash or fails to decrypt."""


class AttachmentTruncated(DecryptionFailed):
    """An attachment's ciphertext ends before its final chunk (or goes on after it)."""
