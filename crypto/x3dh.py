"""X3DH key agreement (Signal spec rev. 1) on Ed25519 identity keys.

Differences from the spec, all deliberate and documented in docs/PROTOCOL.md, Part II:
identity keys are Ed25519 (signing used directly; the DH legs convert them
to X25519 with libsodium) instead of XEdDSA, and ``Encode(IK)`` is the raw
32-byte Ed25519 public key.

``SK = HKDF-SHA256(salt=0^32, ikm=0xFF^32 || DH1 || DH2 || DH3 [|| DH4],
info=b"gchat.x3dh.v1", L=32)`` with DH1 = DH(IK_A, SPK_B), DH2 = DH(EK_A,
IK_B), DH3 = DH(EK_A, SPK_B), DH4 = DH(EK_A, OPK_B). ``AD = IK_A || IK_B``.
"""

from __future__ import annotations

import hmac
from dataclasses import dataclass

from crypto.errors import CryptoError, InvalidKey, InvalidMessage
from crypto.identity import PUBLIC_KEY_SIZE, IdentityKeyPair, dh_public_from_identity
from crypto.kdf import hkdf_sha256
from crypto.prekeys import (
    X25519_KEY_SIZE,
    PrekeyPair,
    check_key_id,
    check_x25519_public,
    verify_signed_prekey,
    x25519,
)

__all__ = [
    "X3DH_INFO",
    "InitiatorResult",
    "PrekeyBundle",
    "X3DHHeader",
    "x3dh_initiate",
    "x3dh_respond",
]

X3DH_INFO = b"gchat.x3dh.v1"
_F = b"\xff" * 32
_SALT = bytes(32)


@dataclass(frozen=True)
class PrekeyBundle:
    """What the server hands out for one device (after the cert check)."""

    identity_key: bytes
    signed_prekey_id: int
    signed_prekey: bytes
    signed_prekey_signature: bytes
    one_time_prekey_id: int | None = None
    one_time_prekey: bytes | None = None


@dataclass(frozen=True)
class X3DHHeader:
    """The X3DH part of an initial (prekey) message.

    Wire: ``identity_key(32) | ephemeral_key(32) | u32be signed_prekey_id |
    flag(1: 0x00 none, 0x01 present) | [u32be one_time_prekey_id]``.
    """

    identity_key: bytes
    ephemeral_key: bytes
    signed_prekey_id: int
    one_time_prekey_id: int | None

    def to_bytes(self) -> bytes:
        """Serialise: 69 bytes without a one-time prekey id, 73 with one."""
        out = (self.identity_key + self.ephemeral_key
               + check_key_id(self.signed_prekey_id).to_bytes(4, "big"))
        if self.one_time_prekey_id is None:
            return out + b"\x00"
        return out + b"\x01" + check_key_id(self.one_time_prekey_id).to_bytes(4, "big")

    @classmethod
    def parse(cls, data: bytes) -> tuple[X3DHHeader, int]:
        """Parse a header from the start of ``data``; return it and its length."""
        if len(data) < 69:
            raise InvalidMessage("X3DH header truncated")
        ik, ek = bytes(data[0:32]), bytes(data[32:64])
        spk_id = int.from_bytes(data[64:68], "big")
        flag = data[68]
        if flag == 0:
            return cls(ik, ek, spk_id, None), 69
        if flag == 1 and len(data) >= 73:
            return cls(ik, ek, spk_id, int.from_bytes(data[69:73], "big")), 73
        raise InvalidMessage("bad X3DH header flag or truncated")


@dataclass(frozen=True)
class InitiatorResult:
    """What the initiator gets: SK, AD, the header to send, Bob's SPK."""

    shared_key: bytes
    associated_data: bytes
    header: X3DHHeader
    remote_signed_prekey: bytes


def _kdf(dhs: list[bytes]) -> bytes:
    for dh in dhs:
        if hmac.compare_digest(dh, bytes(32)):
            raise InvalidKey("all-zero DH output")
    return hkdf_sha256(_F + b"".join(dhs), _SALT, X3DH_INFO, 32)


def x3dh_initiate(
    identity: IdentityKeyPair, bundle: PrekeyBundle, *, ephemeral: PrekeyPair | None = None
) -> InitiatorResult:
    """Alice's side: verify Bob's signed prekey, then derive SK and AD.

    ``ephemeral`` is for tests with fixed keys; normally a fresh one is made.
    Raises InvalidSignature / InvalidKey if the bundle is not acceptable.
    """
    verify_signed_prekey(bundle.identity_key, bundle.signed_prekey_id,
                         bundle.signed_prekey, bundle.signed_prekey_signature)
    if (bundle.one_time_prekey is None) != (bundle.one_time_prekey_id is None):
        raise InvalidKey("one-time prekey and its id must both be present or absent")
    ik_b = dh_public_from_identity(bundle.identity_key)
    ek = ephemeral if ephemeral is not None else PrekeyPair.generate(0)
    dhs = [
        x25519(identity.dh_private(), bundle.signed_prekey),
        x25519(ek.private_key, ik_b),
        x25519(ek.private_key, bundle.signed_prekey),
    ]
    if bundle.one_time_prekey is not None:
        check_x25519_public(bundle.one_time_prekey)
        dhs.append(x25519(ek.private_key, bundle.one_time_prekey))
    sk = _kdf(dhs)
    header = X3DHHeader(identity.public_key, ek.public_key, bundle.signed_prekey_id,
                        bundle.one_time_prekey_id)
    return InitiatorResult(sk, identity.public_key + bundle.identity_key, header,
                           bundle.signed_prekey)


def x3dh_respond(
    identity: IdentityKeyPair,
    signed_prekey: PrekeyPair,
    one_time_prekey: PrekeyPair | None,
    header: X3DHHeader,
) -> tuple[bytes, bytes]:
    """Bob's side: return ``(SK, AD)`` for an initial message's header.

    The caller looks the prekeys up by the ids in ``header``; a mismatch is
    refused here so a wrong lookup can never silently yield a wrong key.
    """
    if signed_prekey.key_id != header.signed_prekey_id:
        raise InvalidKey("signed prekey id does not match the header")
    if header.one_time_prekey_id is None:
        if one_time_prekey is not None:
            raise InvalidKey("header names no one-time prekey")
    elif one_time_prekey is None or one_time_prekey.key_id != header.one_time_prekey_id:
        raise InvalidKey("one-time prekey missing or id mismatch")
    if len(header.identity_key) != PUBLIC_KEY_SIZE or len(header.ephemeral_key) != X25519_KEY_SIZE:
        raise InvalidKey("bad key sizes in X3DH header")
    try:
        ik_a = dh_public_from_identity(header.identity_key)
        dhs = [
            x25519(signed_prekey.private_key, ik_a),
            x25519(identity.dh_private(), header.ephemeral_key),
            x25519(signed_prekey.private_key, header.ephemeral_key),
        ]
        if one_time_prekey is not None:
            dhs.append(x25519(one_time_prekey.private_key, header.ephemeral_key))
    except CryptoError as exc:
        raise InvalidKey(str(exc)) from exc
    return _kdf(dhs), header.identity_key + identity.public_key
