"""Device certificates: the directory key vouching for a device identity key.

A client pins the directory public key and verifies the certificate of every
peer device before encrypting to it. The format is fixed-size binary so it
can be parsed identically in any language (see docs/PROTOCOL.md, Part II):

``0x01 | official_id(16) | agency_id(16) | device_id(16) | identity_key(32)
| issued_at u64be | signature(64)`` = 153 bytes; the signature is over
``b"gchat.cert.v1" || the first 89 bytes``.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass

from crypto.errors import CryptoError, InvalidCertificate
from crypto.identity import IdentityKeyPair, dh_public_from_identity, verify_signature

__all__ = [
    "CERTIFICATE_LABEL",
    "CERTIFICATE_SIZE",
    "CERTIFICATE_VERSION",
    "DeviceCertificate",
    "issue_certificate",
    "verify_certificate",
]

CERTIFICATE_VERSION = 0x01
CERTIFICATE_LABEL = b"gchat.cert.v1"
_BODY_SIZE = 1 + 16 + 16 + 16 + 32 + 8  # 89
_SIG_SIZE = 64
CERTIFICATE_SIZE = _BODY_SIZE + _SIG_SIZE  # 153
_MAX_U64 = 2**64 - 1


@dataclass(frozen=True)
class DeviceCertificate:
    """A parsed device certificate. Only trust one from verify_certificate."""

    official_id: uuid.UUID
    agency_id: uuid.UUID
    device_id: uuid.UUID
    identity_key: bytes
    issued_at: int
    signature: bytes

    def body(self) -> bytes:
        """The first 89 bytes of the wire form (everything but the signature)."""
        return _body(self.official_id, self.agency_id, self.device_id,
                     self.identity_key, self.issued_at)

    def signed_message(self) -> bytes:
        """The exact bytes the directory key signs."""
        return CERTIFICATE_LABEL + self.body()

    def to_bytes(self) -> bytes:
        """The 153-byte wire form."""
        if len(self.signature) != _SIG_SIZE:
            raise InvalidCertificate("signature must be 64 bytes")
        return self.body() + self.signature

    @classmethod
    def from_bytes(cls, data: bytes) -> DeviceCertificate:
        """Parse the wire form WITHOUT checking the signature.

        Use :func:`verify_certificate` for anything you will trust.
        """
        if not isinstance(data, bytes | bytearray | memoryview):
            raise InvalidCertificate("certificate must be bytes")
        data = bytes(data)
        if len(data) != CERTIFICATE_SIZE:
            raise InvalidCertificate(f"certificate must be {CERTIFICATE_SIZE} bytes")
        if data[0] != CERTIFICATE_VERSION:
            raise InvalidCertificate("unknown certificate version")
        return cls(
            official_id=uuid.UUID(bytes=data[1:17]),
            agency_id=uuid.UUID(bytes=data[17:33]),
            device_id=uuid.UUID(bytes=data[33:49]),
            identity_key=data[49:81],
            issued_at=int.from_bytes(data[81:89], "big"),
            signature=data[89:153],
        )


def _body(official_id: uuid.UUID, agency_id: uuid.UUID, device_id: uuid.UUID,
          identity_key: bytes, issued_at: int) -> bytes:
    if not all(isinstance(u, uuid.UUID) for u in (official_id, agency_id, device_id)):
        raise InvalidCertificate("ids must be uuid.UUID")
    if not isinstance(identity_key, bytes) or len(identity_key) != 32:
        raise InvalidCertificate("identity key must be 32 bytes")
    if isinstance(issued_at, bool) or not isinstance(issued_at, int) \
            or not 0 <= issued_at <= _MAX_U64:
        raise InvalidCertificate("issued_at must be a u64")
    return (bytes([CERTIFICATE_VERSION]) + official_id.bytes + agency_id.bytes
            + device_id.bytes + identity_key + issued_at.to_bytes(8, "big"))


def issue_certificate(
    directory_key: IdentityKeyPair,
    official_id: uuid.UUID,
    agency_id: uuid.UUID,
    device_id: uuid.UUID,
    identity_key: bytes,
    issued_at: int,
) -> DeviceCertificate:
    """Sign a certificate for a device identity key with the directory key."""
    body = _body(official_id, agency_id, device_id, identity_key, issued_at)
    signature = directory_key.sign(CERTIFICATE_LABEL + body)
    return DeviceCertificate(official_id, agency_id, device_id, identity_key,
                             issued_at, signature)


def verify_certificate(data: bytes, directory_public_key: bytes) -> DeviceCertificate:
    """Parse and verify a certificate; InvalidCertificate on any problem.

    Also refuses an identity key that is not a valid Ed25519 point, since
    such a key could never be used for X3DH.
    """
    cert = DeviceCertificate.from_bytes(data)
    try:
        verify_signature(directory_public_key, CERTIFICATE_LABEL + bytes(data[:_BODY_SIZE]),
                         cert.signature)
        dh_public_from_identity(cert.identity_key)
    except CryptoError as exc:
        raise InvalidCertificate("certificate signature or key invalid") from exc
    return cert
