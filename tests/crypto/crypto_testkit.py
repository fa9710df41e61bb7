"""Shared fixtures-as-functions for the crypto tests."""

from __future__ import annotations

from dataclasses import dataclass, field

from crypto.identity import IdentityKeyPair
from crypto.prekeys import PrekeyPair, sign_prekey
from crypto.session import PrekeyMessage, Session
from crypto.x3dh import PrekeyBundle


@dataclass
class Device:
    """A device with its identity, signed prekey and one-time prekeys."""

    identity: IdentityKeyPair = field(default_factory=IdentityKeyPair.generate)
    signed_prekey: PrekeyPair = field(default_factory=lambda: PrekeyPair.generate(1))
    one_time: dict[int, PrekeyPair] = field(default_factory=dict)

    def bundle(self, with_one_time: bool = True) -> PrekeyBundle:
        spk = self.signed_prekey
        sig = sign_prekey(self.identity, spk)
        if not with_one_time:
            return PrekeyBundle(self.identity.public_key, spk.key_id, spk.public_key, sig)
        kid = 100 + len(self.one_time)
        opk = PrekeyPair.generate(kid)
        self.one_time[kid] = opk
        return PrekeyBundle(self.identity.public_key, spk.key_id, spk.public_key, sig,
                            kid, opk.public_key)

    def accept(self, message: bytes) -> tuple[Session, bytes]:
        header = PrekeyMessage.from_bytes(message).header
        opk = None
        if header.one_time_prekey_id is not None:
            opk = self.one_time[header.one_time_prekey_id]
        session, plaintext = Session.accept(self.identity, self.signed_prekey, opk, message)
        if header.one_time_prekey_id is not None:
            del self.one_time[header.one_time_prekey_id]
        return session, plaintext


def pair(with_one_time: bool = True) -> tuple[Session, Session]:
    """An established pair of sessions (initiator, responder)."""
    alice, bob = Device(), Device()
    a = Session.initiate(alice.identity, bob.bundle(with_one_time))
    b, first = bob.accept(a.encrypt(b"hello"))
    assert first == b"hello"
    assert a.decrypt(b.encrypt(b"hi")) == b"hi"
    return a, b
