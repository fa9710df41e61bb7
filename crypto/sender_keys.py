"""Sender keys for group messages (encrypt once, sign, fan out).

Each member of a group owns one :class:`SenderKeyState`: a symmetric chain
key (ratcheted forward with the same KDF_CK as the Double Ratchet) and an
Ed25519 signing key. The member sends a *distribution message* to every
other member's device over the pairwise sessions; afterwards each group
message is encrypted once with the next message key and signed, so the
server stores one ciphertext for the whole group.

Properties, and their limits (see docs/PROTOCOL.md, Part II):

* forward secrecy along the chain (old message keys are deleted);
* no post-compromise security within one key id: when membership changes
  (or periodically) the sender *rotates*: a new key id, chain key and
  signing key, distributed only to the current members;
* the signature stops a member (who knows the chain key) from forging
  messages in another member's name.

Wire formats (all integers big-endian):

* distribution ``0x04 | u32 key_id | u32 iteration | chain_key(32) |
  signing_public_key(32)`` = 73 bytes;
* group message ``0x03 | u32 key_id | u32 iteration | nonce(24) | ct+tag |
  signature(64)``; AEAD AD = the first 9 bytes; the signature covers
  everything before it.
"""

from __future__ import annotations

import copy
import hmac
import json
import time
from dataclasses import dataclass, field

import nacl.utils as _nu

from crypto.aead import open_, seal
from crypto.errors import (
    CryptoError,
    DecryptionFailed,
    InvalidMessage,
    InvalidState,
    ReplayedMessage,
    TooManySkippedMessages,
)
from crypto.identity import IdentityKeyPair, verify_signature
from crypto.kdf import chain_kdf
from crypto.prekeys import check_key_id
from crypto.state_encoding import b64, unb64

__all__ = [
    "DISTRIBUTION_SIZE",
    "MAX_SKIP",
    "TYPE_DISTRIBUTION",
    "TYPE_GROUP_MESSAGE",
    "SenderKeyState",
]

TYPE_GROUP_MESSAGE = 0x03
TYPE_DISTRIBUTION = 0x04
DISTRIBUTION_SIZE = 73
MAX_SKIP = 1000
MAX_STORED_SKIPPED = 2000
SKIPPED_KEY_MAX_AGE = 30 * 24 * 3600  # seconds, as for pairwise sessions
_HEADER = 9
_SIG = 64
_U32 = 2**32
_STATE_VERSION = 1


@dataclass(repr=False)  # never print keys
class _State:
    key_id: int
    iteration: int
    chain_key: bytes
    signing_public: bytes
    signing_seed: bytes | None
    #: iteration -> (message key, unix seconds when it was skipped)
    skipped: dict[int, tuple[bytes, int]] = field(default_factory=dict)


class SenderKeyState:
    """One sender's key for one group: the owner's copy or a receiver's copy."""

    __slots__ = ("_state",)

    def __init__(self, state: _State) -> None:
        self._state = state

    def __repr__(self) -> str:
        return f"SenderKeyState(key_id={self._state.key_id}, iteration={self._state.iteration})"

    @classmethod
    def generate(cls, key_id: int | None = None) -> SenderKeyState:
        """A new sending state (random chain key and signing key).

        The first key id is random below 2**31 so that rotations (each +1)
        never wrap in practice and receivers can refuse any older key id.
        """
        kid = (int.from_bytes(_nu.random(4), "big") >> 1 if key_id is None
               else check_key_id(key_id))
        signer = IdentityKeyPair.generate()
        return cls(_State(kid, 0, _nu.random(32), signer.public_key, signer.seed))

    @classmethod
    def from_distribution(cls, data: bytes) -> SenderKeyState:
        """A receiving state from a distribution message (received pairwise)."""
        if len(data) != DISTRIBUTION_SIZE or data[0] != TYPE_DISTRIBUTION:
            raise InvalidMessage("malformed sender key distribution message")
        return cls(_State(int.from_bytes(data[1:5], "big"), int.from_bytes(data[5:9], "big"),
                          bytes(data[9:41]), bytes(data[41:73]), None))

    @property
    def key_id(self) -> int:
        """The u32 id naming this chain; changes on rotation."""
        return self._state.key_id

    @property
    def iteration(self) -> int:
        """Index of the next message key of the chain."""
        return self._state.iteration

    @property
    def signing_public_key(self) -> bytes:
        """The Ed25519 key group messages of this chain are signed with."""
        return self._state.signing_public

    @property
    def can_send(self) -> bool:
        """True for the owner's state (it holds the signing key)."""
        return self._state.signing_seed is not None

    def distribution_message(self) -> bytes:
        """Distribution message starting at the current iteration.

        A member who joins later gets no key for earlier messages.
        """
        s = self._state
        return (bytes([TYPE_DISTRIBUTION]) + s.key_id.to_bytes(4, "big")
                + s.iteration.to_bytes(4, "big") + s.chain_key + s.signing_public)

    def accept_distribution(self, data: bytes) -> SenderKeyState:
        """This receiving copy updated by another distribution from the same sender.

        Only forward, never back:

        * a newer key id replaces the chain (the sender rotated);
        * an older key id raises ReplayedMessage;
        * the same key id must carry the same signing key and belong to the
          same chain: one at or behind our iteration is a duplicate (a copy
          per member reaches the sender's own devices) and changes nothing,
          so a distribution held back by the server cannot make messages
          already read readable again; one ahead moves the chain there,
          keeping the keys skipped on the way. A distribution that is not
          on our chain raises InvalidMessage.
        """
        incoming = SenderKeyState.from_distribution(data)
        s = self._state
        if incoming.key_id < s.key_id:
            raise ReplayedMessage("distribution for an older sender key id")
        if incoming.key_id > s.key_id:
            return incoming
        if incoming.signing_public_key != s.signing_public:
            raise InvalidMessage("same sender key id with another signing key")
        theirs = incoming._state
        behind, ahead = (theirs, s) if incoming.iteration <= s.iteration else (s, theirs)
        if ahead.iteration - behind.iteration > MAX_SKIP:
            raise TooManySkippedMessages(f"distribution more than {MAX_SKIP} messages away")
        moved = copy.deepcopy(s)
        chain = behind.chain_key
        clock = int(time.time())
        for n in range(behind.iteration, ahead.iteration):
            mk, chain = chain_kdf(chain)
            if behind is s:
                moved.skipped[n] = (mk, clock)
        if not hmac.compare_digest(chain, ahead.chain_key):
            raise InvalidMessage("distribution is not on the chain held for this key id")
        if behind is s:
            moved.chain_key, moved.iteration = chain, ahead.iteration
            while len(moved.skipped) > MAX_STORED_SKIPPED:
                del moved.skipped[next(iter(moved.skipped))]
        return SenderKeyState(moved)

    def rotate(self) -> SenderKeyState:
        """A fresh sending state with the next key id (old one is unaffected)."""
        if not self.can_send:
            raise InvalidState("only the owner can rotate a sender key")
        return SenderKeyState.generate((self._state.key_id + 1) % _U32)

    def encrypt(self, plaintext: bytes) -> bytes:
        """Encrypt and sign one group message."""
        s = self._state
        if s.signing_seed is None:
            raise InvalidState("receiving sender key state cannot encrypt")
        if s.iteration >= _U32 - 1:
            raise InvalidState("sender key chain exhausted; rotate")
        mk, s.chain_key = chain_kdf(s.chain_key)
        header = (bytes([TYPE_GROUP_MESSAGE]) + s.key_id.to_bytes(4, "big")
                  + s.iteration.to_bytes(4, "big"))
        s.iteration += 1
        body = header + seal(mk, plaintext, header)
        return body + IdentityKeyPair.from_seed(s.signing_seed).sign(body)

    def decrypt(self, message: bytes, now: float | None = None) -> bytes:
        """Verify and decrypt; the state changes only on success.

        ``now`` (unix seconds; default the clock) timestamps skipped keys
        and expires those older than SKIPPED_KEY_MAX_AGE.
        """
        if len(message) < _HEADER + 40 + _SIG or message[0] != TYPE_GROUP_MESSAGE:
            raise InvalidMessage("malformed group message")
        body, sig = bytes(message[:-_SIG]), bytes(message[-_SIG:])
        clock = int(time.time() if now is None else now)
        s = copy.deepcopy(self._state)
        s.skipped = {k: v for k, v in s.skipped.items() if clock - v[1] < SKIPPED_KEY_MAX_AGE}
        key_id = int.from_bytes(body[1:5], "big")
        n = int.from_bytes(body[5:9], "big")
        if key_id != s.key_id:
            raise DecryptionFailed("group message for another sender key id")
        if n >= _U32 - 1:
            raise InvalidMessage("group message number out of range")
        verify_signature(s.signing_public, body, sig)  # raises InvalidSignature
        found = s.skipped.pop(n, None)
        mk = found[0] if found is not None else None
        if mk is None:
            if n < s.iteration:
                raise ReplayedMessage("group message key already used")
            if n - s.iteration > MAX_SKIP:
                raise TooManySkippedMessages(f"more than {MAX_SKIP} skipped messages")
            while s.iteration < n:
                skipped_mk, s.chain_key = chain_kdf(s.chain_key)
                s.skipped[s.iteration] = (skipped_mk, clock)
                s.iteration += 1
            while len(s.skipped) > MAX_STORED_SKIPPED:
                del s.skipped[next(iter(s.skipped))]
            mk, s.chain_key = chain_kdf(s.chain_key)
            s.iteration += 1
        plaintext = open_(mk, body[_HEADER:], body[:_HEADER])
        self._state = s
        return plaintext

    def to_bytes(self) -> bytes:
        """Serialise to UTF-8 JSON (versioned, base64 bytes, sorted keys)."""
        s = self._state
        obj = {
            "v": _STATE_VERSION,
            "key_id": s.key_id,
            "iteration": s.iteration,
            "chain_key": b64(s.chain_key),
            "signing_public": b64(s.signing_public),
            "signing_seed": None if s.signing_seed is None else b64(s.signing_seed),
            "skipped": [[n, b64(mk), at] for n, (mk, at) in s.skipped.items()],
        }
        return json.dumps(obj, sort_keys=True, separators=(",", ":")).encode("utf-8")

    @classmethod
    def from_bytes(cls, data: bytes) -> SenderKeyState:
        """Inverse of :meth:`to_bytes`; InvalidState if malformed."""
        try:
            obj = json.loads(data)
            if not isinstance(obj, dict) or obj.get("v") != _STATE_VERSION:
                raise InvalidState("unknown sender key state version")
            seed = obj["signing_seed"]
            state = _State(
                key_id=check_key_id(obj["key_id"]),
                iteration=int(obj["iteration"]),
                chain_key=unb64(obj["chain_key"]),
                signing_public=unb64(obj["signing_public"]),
                signing_seed=None if seed is None else unb64(seed),
                skipped={
                    int(e[0]): (unb64(e[1]), int(e[2]) if len(e) > 2 else int(time.time()))
                    for e in obj["skipped"]
                },
            )
        except InvalidState:
            raise
        except (CryptoError, ValueError, KeyError, TypeError, RecursionError) as exc:
            raise InvalidState("malformed sender key state") from exc
        return cls(state)


