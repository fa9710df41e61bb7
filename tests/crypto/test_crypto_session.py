"""X3DH, Double Ratchet and the session wire format (example-based)."""

from __future__ import annotations

import pytest
from crypto_testkit import Device, pair

from crypto.errors import (
    CryptoError,
    DecryptionFailed,
    InvalidKey,
    InvalidMessage,
    InvalidSignature,
    ReplayedMessage,
    TooManySkippedMessages,
)
from crypto.identity import IdentityKeyPair
from crypto.kdf import hkdf_sha256
from crypto.prekeys import PrekeyPair, sign_prekey, x25519
from crypto.ratchet import HEADER_SIZE, MAX_SKIP, RatchetHeader, RatchetSession
from crypto.session import TYPE_NORMAL, TYPE_PREKEY, PrekeyMessage, Session
from crypto.x3dh import PrekeyBundle, X3DHHeader, x3dh_initiate, x3dh_respond


@pytest.mark.parametrize("with_otpk", [True, False])
def test_x3dh_agreement_matches_spec_formula(with_otpk: bool) -> None:
    alice, bob = Device(), Device()
    bundle = bob.bundle(with_otpk)
    ek = PrekeyPair.generate(0)
    res = x3dh_initiate(alice.identity, bundle, ephemeral=ek)
    opk = None
    if bundle.one_time_prekey_id is not None:
        opk = bob.one_time[bundle.one_time_prekey_id]
    sk, ad = x3dh_respond(bob.identity, bob.signed_prekey, opk, res.header)
    assert sk == res.shared_key
    assert ad == res.associated_data == alice.identity.public_key + bob.identity.public_key
    # Recompute from the spec: F || DH1 || DH2 || DH3 [|| DH4].
    dh1 = x25519(alice.identity.dh_private(), bob.signed_prekey.public_key)
    dh2 = x25519(ek.private_key, bob.identity.dh_public())
    dh3 = x25519(ek.private_key, bob.signed_prekey.public_key)
    ikm = b"\xff" * 32 + dh1 + dh2 + dh3
    if opk is not None:
        ikm += x25519(ek.private_key, opk.public_key)
    assert sk == hkdf_sha256(ikm, bytes(32), b"gchat.x3dh.v1", 32)
    header = res.header.to_bytes()
    assert len(header) == (73 if with_otpk else 69)
    assert X3DHHeader.parse(header) == (res.header, len(header))


def test_x3dh_refuses_bad_signed_prekey() -> None:
    bob = Device()
    b = bob.bundle()
    forged = PrekeyBundle(b.identity_key, b.signed_prekey_id, PrekeyPair.generate(1).public_key,
                          b.signed_prekey_signature, b.one_time_prekey_id, b.one_time_prekey)
    with pytest.raises(InvalidSignature):
        x3dh_initiate(IdentityKeyPair.generate(), forged)
    low = PrekeyBundle(b.identity_key, 1, bytes(32), bob.identity.sign(b"x"))
    with pytest.raises(InvalidKey):
        x3dh_initiate(IdentityKeyPair.generate(), low)


def test_x3dh_refuses_low_order_one_time_and_ephemeral() -> None:
    bob = Device()
    spk = bob.signed_prekey
    bundle = PrekeyBundle(bob.identity.public_key, 1, spk.public_key,
                          sign_prekey(bob.identity, spk), 5, bytes(32))
    with pytest.raises(InvalidKey):
        x3dh_initiate(IdentityKeyPair.generate(), bundle)
    header = X3DHHeader(IdentityKeyPair.generate().public_key, bytes(32), 1, None)
    with pytest.raises(InvalidKey):
        x3dh_respond(bob.identity, spk, None, header)


def test_x3dh_respond_id_mismatch() -> None:
    alice, bob = Device(), Device()
    res = x3dh_initiate(alice.identity, bob.bundle(True))
    with pytest.raises(InvalidKey):
        x3dh_respond(bob.identity, bob.signed_prekey, None, res.header)
    with pytest.raises(InvalidKey):
        x3dh_respond(bob.identity, PrekeyPair.generate(9), None, res.header)


def test_session_wire_types_and_prekey_resend() -> None:
    alice, bob = Device(), Device()
    a = Session.initiate(alice.identity, bob.bundle())
    m1, m2 = a.encrypt(b"one"), a.encrypt(b"two")
    assert m1[0] == m2[0] == TYPE_PREKEY
    pm = PrekeyMessage.from_bytes(m2)
    assert pm.header.identity_key == alice.identity.public_key
    assert pm.to_bytes() == m2
    # The first message was lost: the second one sets up the session.
    b, p2 = bob.accept(m2)
    assert p2 == b"two"
    assert b.remote_identity_key == alice.identity.public_key
    assert b.decrypt(m1) == b"one"  # a resend of the same handshake
    with pytest.raises(ReplayedMessage):
        b.decrypt(m1)
    reply = b.encrypt(b"three")
    assert reply[0] == TYPE_NORMAL
    assert a.decrypt(reply) == b"three"
    assert a.encrypt(b"four")[0] == TYPE_NORMAL


def test_prekey_message_for_another_session() -> None:
    a, b = pair()
    other = Session.initiate(IdentityKeyPair.generate(), Device().bundle())
    with pytest.raises(InvalidMessage):
        b.decrypt(other.encrypt(b"x"))


def test_ratchet_message_layout() -> None:
    a, b = pair()
    m = a.encrypt(b"abc")
    assert m[0] == TYPE_NORMAL
    header = RatchetHeader.from_bytes(m[1:1 + HEADER_SIZE])
    assert len(m) == 1 + 40 + 24 + 3 + 16
    assert header.n == 0 and header.pn == 1  # Alice ratcheted after the reply
    assert b.decrypt(m) == b"abc"


def test_tamper_every_byte_refused_and_state_unchanged() -> None:
    a, b = pair()
    m = a.encrypt(b"secret")
    before = b.to_bytes()
    for i in range(len(m)):
        t = bytearray(m)
        t[i] ^= 0x80
        with pytest.raises(CryptoError):
            b.decrypt(bytes(t))
        assert b.to_bytes() == before
    assert b.decrypt(m) == b"secret"


def test_skip_cap() -> None:
    a, b = pair()
    for _ in range(MAX_SKIP + 1):
        a.encrypt(b"lost")
    last = a.encrypt(b"too far")
    before = b.to_bytes()
    with pytest.raises(TooManySkippedMessages):
        b.decrypt(last)
    assert b.to_bytes() == before


def test_skip_exactly_cap_ok() -> None:
    a, b = pair()
    msgs = [a.encrypt(b"%d" % i) for i in range(MAX_SKIP + 1)]
    assert b.decrypt(msgs[-1]) == b"%d" % MAX_SKIP
    assert b.decrypt(msgs[0]) == b"0"


def test_forward_secrecy_stored_state_cannot_decrypt_old() -> None:
    a, b = pair()
    m = a.encrypt(b"old secret")
    assert b.decrypt(m) == b"old secret"
    stored = b.to_bytes()
    restored = Session.from_bytes(stored)
    with pytest.raises(DecryptionFailed):
        restored.decrypt(m)
    # The message key is nowhere in the stored state.
    assert b"old secret" not in stored


def test_post_compromise_security() -> None:
    a, b = pair()
    stolen = b.to_bytes()  # attacker copies Bob's state at time T
    # One DH ratchet step in each direction.
    assert b.decrypt(a.encrypt(b"x1")) == b"x1"
    assert a.decrypt(b.encrypt(b"y1")) == b"y1"
    assert b.decrypt(a.encrypt(b"x2")) == b"x2"
    later_to_bob = a.encrypt(b"after healing")
    later_to_alice = b.encrypt(b"after healing too")
    with pytest.raises(DecryptionFailed):
        Session.from_bytes(stolen).decrypt(later_to_bob)
    # Nor can Alice's copy-of-state-at-T impersonation read Bob's new messages:
    # the attacker's copy of Bob cannot be used to derive Alice's receiving keys.
    attacker = Session.from_bytes(stolen)
    with pytest.raises(CryptoError):
        attacker.decrypt(later_to_alice)
    assert b.decrypt(later_to_bob) == b"after healing"
    assert a.decrypt(later_to_alice) == b"after healing too"


def test_responder_cannot_send_first() -> None:
    bob = Device()
    r = RatchetSession.init_responder(bytes(32), bob.signed_prekey, b"ad")
    assert not r.can_send
    with pytest.raises(CryptoError):
        r.encrypt(b"x")


def test_state_roundtrip_and_malformed() -> None:
    a, b = pair()
    for s in (a, b):
        assert Session.from_bytes(s.to_bytes()).to_bytes() == s.to_bytes()
    for bad in (b"", b"{}", b"[1]", b'{"v":2}', b"\xff"):
        with pytest.raises(CryptoError):
            Session.from_bytes(bad)
    for bad in (b"", b"\x03abc", b"\x02short", b"\x01" + bytes(10)):
        with pytest.raises(CryptoError):
            a.decrypt(bad)


def test_many_round_trips_with_ratchet_steps() -> None:
    a, b = pair()
    for i in range(20):
        for j in range(i % 3 + 1):
            assert b.decrypt(a.encrypt(b"a%d.%d" % (i, j))) == b"a%d.%d" % (i, j)
        assert a.decrypt(b.encrypt(b"b%d" % i)) == b"b%d" % i
