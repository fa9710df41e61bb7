"""Double Ratchet (Signal spec rev. 1) with header in AD.

Choices (see docs/PROTOCOL.md, Part II for the byte formats):

* KDF_RK / KDF_CK from :mod:`crypto.kdf`; ENCRYPT = XChaCha20-Poly1305 with
  a random 24-byte nonce and ``AD = x3dh_ad || header``.
* Skipped message keys are stored per ``(ratchet public key, n)``. At most
  :data:`MAX_SKIP` keys are derived for one incoming message, counting the
  rest of the old receiving chain (``pn``) and the start of the new one
  (``n``) together, and at most :data:`MAX_STORED_SKIPPED` are kept (oldest
  evicted first), so a peer (or the server) cannot make us do or store
  unbounded work. A skipped key older than :data:`SKIPPED_KEY_MAX_AGE` is
  deleted: a message delayed longer can no longer be read.
* ``n`` and ``pn`` of 2**32-1 are refused: the counter after them would not
  fit the u32 the state and the header store.
* A message is decrypted on a *copy* of the state and the copy is committed
  only after the AEAD tag verified. A forged, tampered or replayed message
  therefore leaves the state exactly as it was.
* A message key is deleted once used, so a replay finds no key and is
  refused with :class:`ReplayedMessage` (forward secrecy and replay
  protection are the same mechanism).
"""

from __future__ import annotations

import copy
import json
import time
from dataclasses import dataclass, field
from typing import Any

from crypto.aead import open_, seal
from crypto.errors import (
    CryptoError,
    DecryptionFailed,
    InvalidMessage,
    InvalidState,
    ReplayedMessage,
    TooManySkippedMessages,
)
from crypto.kdf import chain_kdf, root_kdf
from crypto.prekeys import PrekeyPair, x25519
from crypto.state_encoding import b64, unb64

__all__ = [
    "HEADER_SIZE",
    "MAX_SKIP",
    "MAX_STORED_SKIPPED",
    "SKIPPED_KEY_MAX_AGE",
    "RatchetHeader",
    "RatchetSession",
]

MAX_SKIP = 1000
MAX_STORED_SKIPPED = 2000
SKIPPED_KEY_MAX_AGE = 30 * 24 * 3600  # seconds
_MAX_PREVIOUS_REMOTE = 32
HEADER_SIZE = 40
_U32 = 2**32
_STATE_VERSION = 1


@dataclass(frozen=True)
class RatchetHeader:
    """``dh(32) | u32be pn | u32be n`` (40 bytes)."""

    dh: bytes
    pn: int
    n: int

    def to_bytes(self) -> bytes:
        """The 40-byte wire form."""
        return self.dh + self.pn.to_bytes(4, "big") + self.n.to_bytes(4, "big")

    @classmethod
    def from_bytes(cls, data: bytes) -> RatchetHeader:
        """Parse exactly 40 bytes."""
        if len(data) != HEADER_SIZE:
            raise InvalidMessage("ratchet header must be 40 bytes")
        return cls(bytes(data[:32]), int.from_bytes(data[32:36], "big"),
                   int.from_bytes(data[36:40], "big"))


@dataclass(repr=False)  # never print keys
class _State:
    dhs_private: bytes
    dhs_public: bytes
    dhr: bytes | None
    rk: bytes
    cks: bytes | None
    ckr: bytes | None
    ns: int
    nr: int
    pn: int
    ad: bytes
    #: (ratchet key, n) -> (message key, unix seconds when it was skipped)
    skipped: dict[tuple[bytes, int], tuple[bytes, int]] = field(default_factory=dict)
    previous_remote: list[bytes] = field(default_factory=list)


def _opt(b: bytes | None) -> str | None:
    return None if b is None else b64(b)


def _unopt(s: Any) -> bytes | None:
    return None if s is None else unb64(s)


class RatchetSession:
    """One side of a Double Ratchet conversation."""

    __slots__ = ("_state",)

    def __init__(self, state: _State) -> None:
        self._state = state

    def __repr__(self) -> str:
        return f"RatchetSession(ns={self._state.ns}, nr={self._state.nr})"

    @classmethod
    def init_initiator(
        cls, shared_key: bytes, remote_ratchet_key: bytes, associated_data: bytes
    ) -> RatchetSession:
        """Alice: SK from X3DH, Bob's signed prekey as his first ratchet key."""
        own = PrekeyPair.generate(0)
        rk, cks = root_kdf(shared_key, x25519(own.private_key, remote_ratchet_key))
        return cls(_State(own.private_key, own.public_key, remote_ratchet_key, rk, cks,
                          None, 0, 0, 0, associated_data))

    @classmethod
    def init_responder(
        cls, shared_key: bytes, own_ratchet_key: PrekeyPair, associated_data: bytes
    ) -> RatchetSession:
        """Bob: SK from X3DH, his signed prekey pair as first ratchet key."""
        return cls(_State(own_ratchet_key.private_key, own_ratchet_key.public_key, None,
                          shared_key, None, None, 0, 0, 0, associated_data))

    @property
    def can_send(self) -> bool:
        """False for a responder until the first message has been received."""
        return self._state.cks is not None

    @property
    def has_received(self) -> bool:
        """True once a message from the peer decrypted (a receiving chain exists)."""
        return self._state.ckr is not None

    @property
    def associated_data(self) -> bytes:
        """The X3DH AD bound into every message of this session."""
        return self._state.ad

    @property
    def skipped_count(self) -> int:
        """How many skipped message keys are stored."""
        return len(self._state.skipped)

    def encrypt(self, plaintext: bytes) -> bytes:
        """Return ``header(40) || nonce(24) || ciphertext || tag(16)``."""
        s = self._state
        if s.cks is None:
            raise InvalidState("cannot send before the first message was received")
        if s.ns >= _U32 - 1:
            raise InvalidState("sending chain exhausted")
        mk, s.cks = chain_kdf(s.cks)
        header = RatchetHeader(s.dhs_public, s.pn, s.ns).to_bytes()
        s.ns += 1
        return header + seal(mk, plaintext, s.ad + header)

    def decrypt(self, message: bytes, now: float | None = None) -> bytes:
        """Decrypt one message; the state changes only if this succeeds.

        ``now`` (unix seconds; default the clock) timestamps skipped keys
        and expires old ones. Raises ReplayedMessage,
        TooManySkippedMessages, DecryptionFailed, or InvalidMessage (cannot
        be parsed).
        """
        if len(message) < HEADER_SIZE:
            raise InvalidMessage("ratchet message truncated")
        raw_header = bytes(message[:HEADER_SIZE])
        header = RatchetHeader.from_bytes(raw_header)
        if header.n >= _U32 - 1 or header.pn >= _U32 - 1:
            raise InvalidMessage("message number out of range")
        body = bytes(message[HEADER_SIZE:])
        clock = int(time.time() if now is None else now)
        s = copy.deepcopy(self._state)
        s.skipped = {k: v for k, v in s.skipped.items() if clock - v[1] < SKIPPED_KEY_MAX_AGE}
        ad = s.ad + raw_header
        found = s.skipped.pop((header.dh, header.n), None)
        mk = found[0] if found is not None else None
        if mk is None:
            if s.dhr is not None and header.dh == s.dhr:
                if header.n < s.nr:
                    raise ReplayedMessage("message key already used")
            elif header.dh in s.previous_remote or header.dh == s.dhs_public:
                raise ReplayedMessage("message from a finished chain")
            else:
                # Both chains together: the rest of the old one and the new one's start.
                rest = header.pn - s.nr if s.ckr is not None and s.dhr is not None else 0
                if max(rest, 0) + header.n > MAX_SKIP:
                    raise TooManySkippedMessages(f"more than {MAX_SKIP} skipped messages")
                _skip(s, header.pn, clock)
                try:
                    _dh_ratchet(s, header.dh)
                except CryptoError as exc:
                    raise DecryptionFailed("bad ratchet key") from exc
            if s.ckr is None:
                # Only possible for the initiator before any reply: a message
                # claiming our peer's initial key is not one the peer sends.
                raise DecryptionFailed("no receiving chain for this ratchet key")
            _skip(s, header.n, clock)
            mk, s.ckr = chain_kdf(s.ckr)
            s.nr += 1
        plaintext = open_(mk, body, ad)
        self._state = s
        return plaintext

    def to_bytes(self) -> bytes:
        """Serialise to UTF-8 JSON (versioned, base64 for bytes, sorted keys)."""
        s = self._state
        obj = {
            "v": _STATE_VERSION,
            "dhs_private": b64(s.dhs_private),
            "dhs_public": b64(s.dhs_public),
            "dhr": _opt(s.dhr),
            "rk": b64(s.rk),
            "cks": _opt(s.cks),
            "ckr": _opt(s.ckr),
            "ns": s.ns,
            "nr": s.nr,
            "pn": s.pn,
            "ad": b64(s.ad),
            "skipped": [[b64(k[0]), k[1], b64(v[0]), v[1]] for k, v in s.skipped.items()],
            "previous_remote": [b64(k) for k in s.previous_remote],
        }
        return json.dumps(obj, sort_keys=True, separators=(",", ":")).encode("utf-8")

    @classmethod
    def from_bytes(cls, data: bytes) -> RatchetSession:
        """Inverse of :meth:`to_bytes`; InvalidState if malformed."""
        try:
            obj = json.loads(data)
            if not isinstance(obj, dict) or obj.get("v") != _STATE_VERSION:
                raise InvalidState("unknown ratchet state version")
            return cls(_state_from_obj(obj))
        except CryptoError:
            raise
        except (ValueError, KeyError, TypeError, RecursionError) as exc:
            raise InvalidState("malformed ratchet state") from exc


def _state_from_obj(obj: dict[str, Any]) -> _State:
    skipped: dict[tuple[bytes, int], tuple[bytes, int]] = {}
    for entry in obj["skipped"]:
        # [dh, n, mk, skipped at]; states from before expiry have no time.
        dh, n, mk = entry[:3]
        at = int(entry[3]) if len(entry) > 3 else int(time.time())
        skipped[(unb64(dh), int(n))] = (unb64(mk), at)
    ints = [obj["ns"], obj["nr"], obj["pn"]]
    if not all(isinstance(i, int) and 0 <= i < _U32 for i in ints):
        raise InvalidState("bad counters")
    return _State(
        dhs_private=unb64(obj["dhs_private"]),
        dhs_public=unb64(obj["dhs_public"]),
        dhr=_unopt(obj["dhr"]),
        rk=unb64(obj["rk"]),
        cks=_unopt(obj["cks"]),
        ckr=_unopt(obj["ckr"]),
        ns=ints[0],
        nr=ints[1],
        pn=ints[2],
        ad=unb64(obj["ad"]),
        skipped=skipped,
        previous_remote=[unb64(k) for k in obj["previous_remote"]],
    )


def _skip(s: _State, until: int, now: int) -> None:
    """Store the keys of messages ``s.nr .. until-1`` of the receiving chain."""
    if s.ckr is None or s.dhr is None:
        return
    if until - s.nr > MAX_SKIP:
        raise TooManySkippedMessages(f"more than {MAX_SKIP} skipped messages")
    while s.nr < until:
        mk, s.ckr = chain_kdf(s.ckr)
        s.skipped[(s.dhr, s.nr)] = (mk, now)
        s.nr += 1
    while len(s.skipped) > MAX_STORED_SKIPPED:
        del s.skipped[next(iter(s.skipped))]


def _dh_ratchet(s: _State, remote: bytes) -> None:
    """One DH ratchet step on receiving a new remote ratchet key."""
    if s.dhr is not None:
        s.previous_remote.append(s.dhr)
        del s.previous_remote[:-_MAX_PREVIOUS_REMOTE]
    s.pn = s.ns
    s.ns = 0
    s.nr = 0
    s.dhr = remote
    s.rk, s.ckr = root_kdf(s.rk, x25519(s.dhs_private, remote))
    own = PrekeyPair.generate(0)
    s.dhs_private, s.dhs_public = own.private_key, own.public_key
    s.rk, s.cks = root_kdf(s.rk, x25519(s.dhs_private, remote))
