"""Pairwise sessions: X3DH + Double Ratchet behind one encrypt/decrypt API.

Wire messages start with a type byte:

* ``0x01`` prekey message: ``0x01 | X3DH header | ratchet message``. The
  initiator sends these until it has received anything from the responder,
  so the responder can build the session from whichever arrives first.
* ``0x02`` normal message: ``0x02 | ratchet message``.

The caller (the client) owns the policy around this: it verifies the peer's
device certificate before :meth:`Session.initiate`, checks that the identity
key of an incoming prekey message is certified before trusting the session,
and deletes the one-time prekey after a successful :meth:`Session.accept`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from crypto.errors import CryptoError, InvalidMessage, InvalidState
from crypto.identity import IdentityKeyPair
from crypto.prekeys import PrekeyPair
from crypto.ratchet import RatchetSession
from crypto.state_encoding import b64, unb64
from crypto.x3dh import PrekeyBundle, X3DHHeader, x3dh_initiate, x3dh_respond

__all__ = [
    "TYPE_NORMAL",
    "TYPE_PREKEY",
    "PrekeyMessage",
    "Session",
    "message_type",
]

TYPE_PREKEY = 0x01
TYPE_NORMAL = 0x02
_STATE_VERSION = 1


def message_type(data: bytes) -> int:
    """Return the type byte of a pairwise message (0x01 or 0x02)."""
    if len(data) < 1 or data[0] not in (TYPE_PREKEY, TYPE_NORMAL):
        raise InvalidMessage("unknown pairwise message type")
    return data[0]


@dataclass(frozen=True)
class PrekeyMessage:
    """A parsed ``0x01`` message: the X3DH header and the first ratchet message."""

    header: X3DHHeader
    ratchet_message: bytes

    def to_bytes(self) -> bytes:
        """``0x01 | header | ratchet message``."""
        return bytes([TYPE_PREKEY]) + self.header.to_bytes() + self.ratchet_message

    @classmethod
    def from_bytes(cls, data: bytes) -> PrekeyMessage:
        """Parse; the responder uses ``.header`` to look up its prekeys by id."""
        if message_type(data) != TYPE_PREKEY:
            raise InvalidMessage("not a prekey message")
        header, used = X3DHHeader.parse(data[1:])
        return cls(header, bytes(data[1 + used:]))


class Session:
    """An end-to-end session with one remote device."""

    __slots__ = ("_accepted", "_local_identity", "_pending", "_ratchet", "_remote_identity")

    def __init__(self, ratchet: RatchetSession, local_identity_key: bytes,
                 remote_identity_key: bytes, *, pending: X3DHHeader | None = None,
                 accepted: X3DHHeader | None = None) -> None:
        self._ratchet = ratchet
        self._local_identity = local_identity_key
        self._remote_identity = remote_identity_key
        # Initiator: the X3DH header to prepend until the peer has replied.
        self._pending = pending
        # Responder: the X3DH header accepted, to recognise resent 0x01s.
        self._accepted = accepted

    @classmethod
    def initiate(cls, identity: IdentityKeyPair, bundle: PrekeyBundle) -> Session:
        """Start a session from a (certificate-checked) prekey bundle."""
        res = x3dh_initiate(identity, bundle)
        ratchet = RatchetSession.init_initiator(res.shared_key, res.remote_signed_prekey,
                                                res.associated_data)
        return cls(ratchet, identity.public_key, bundle.identity_key, pending=res.header)

    @classmethod
    def accept(cls, identity: IdentityKeyPair, signed_prekey: PrekeyPair,
               one_time_prekey: PrekeyPair | None, message: bytes) -> tuple[Session, bytes]:
        """Build the responder's session from a prekey message.

        Returns the session and the first plaintext; raises a CryptoError
        if the message is malformed, names other prekeys, or fails to decrypt.
        """
        pm = PrekeyMessage.from_bytes(message)
        sk, ad = x3dh_respond(identity, signed_prekey, one_time_prekey, pm.header)
        ratchet = RatchetSession.init_responder(sk, signed_prekey, ad)
        plaintext = ratchet.decrypt(pm.ratchet_message)
        session = cls(ratchet, identity.public_key, pm.header.identity_key,
                      accepted=pm.header)
        return session, plaintext

    @property
    def local_identity_key(self) -> bytes:
        """Our Ed25519 identity public key."""
        return self._local_identity

    @property
    def has_received(self) -> bool:
        """True once the peer's messages decrypt on this session (it is in use both ways)."""
        return self._ratchet.has_received

    @property
    def remote_identity_key(self) -> bytes:
        """The peer's Ed25519 identity public key (check it is certified)."""
        return self._remote_identity

    def encrypt(self, plaintext: bytes) -> bytes:
        """Encrypt for the peer; a prekey message until the peer has replied."""
        inner = self._ratchet.encrypt(plaintext)
        if self._pending is not None:
            return bytes([TYPE_PREKEY]) + self._pending.to_bytes() + inner
        return bytes([TYPE_NORMAL]) + inner

    def decrypt(self, data: bytes) -> bytes:
        """Decrypt a 0x01 or 0x02 message; state is unchanged on failure.

        A prekey message for a *different* X3DH handshake raises
        InvalidMessage: the caller should then try :meth:`accept`.
        """
        kind = message_type(data)
        if kind == TYPE_NORMAL:
            plaintext = self._ratchet.decrypt(data[1:])
            self._pending = None  # the peer has the session: stop resending X3DH
            return plaintext
        pm = PrekeyMessage.from_bytes(data)
        if self._accepted is None or self._accepted != pm.header:
            raise InvalidMessage("prekey message for another session")
        return self._ratchet.decrypt(pm.ratchet_message)

    def to_bytes(self) -> bytes:
        """Serialise to UTF-8 JSON; see docs/PROTOCOL.md, Part II."""
        obj = {
            "v": _STATE_VERSION,
            "local_identity": b64(self._local_identity),
            "remote_identity": b64(self._remote_identity),
            "pending": None if self._pending is None else b64(self._pending.to_bytes()),
            "accepted": None if self._accepted is None else b64(self._accepted.to_bytes()),
            "ratchet": json.loads(self._ratchet.to_bytes()),
        }
        return json.dumps(obj, sort_keys=True, separators=(",", ":")).encode("utf-8")

    @classmethod
    def from_bytes(cls, data: bytes) -> Session:
        """Inverse of :meth:`to_bytes`; InvalidState if malformed."""
        try:
            obj = json.loads(data)
            if not isinstance(obj, dict) or obj.get("v") != _STATE_VERSION:
                raise InvalidState("unknown session state version")
            ratchet = RatchetSession.from_bytes(json.dumps(obj["ratchet"]).encode("utf-8"))
            return cls(ratchet, unb64(obj["local_identity"]), unb64(obj["remote_identity"]),
                       pending=_header_or_none(obj["pending"]),
                       accepted=_header_or_none(obj["accepted"]))
        except InvalidState:
            raise
        except (CryptoError, ValueError, KeyError, TypeError, RecursionError) as exc:
            raise InvalidState("malformed session state") from exc


def _header_or_none(s: Any) -> X3DHHeader | None:
    if s is None:
        return None
    header, _ = X3DHHeader.parse(unb64(s))
    return header
