"""Sender keys, safety numbers and the keystore."""

from __future__ import annotations

import functools
import uuid

import hypothesis.strategies as st
import nacl.pwhash.argon2id as argon2id
import pytest
from hypothesis import given, settings

from crypto import keystore
from crypto.aead import NONCE_SIZE
from crypto.errors import (
    CryptoError,
    DecryptionFailed,
    InvalidKey,
    InvalidMessage,
    InvalidSignature,
    ReplayedMessage,
    TooManySkippedMessages,
    WrongPassphrase,
)
from crypto.identity import IdentityKeyPair
from crypto.keystore import (
    generate_key,
    open_with_key,
    open_with_passphrase,
    seal_with_key,
    seal_with_passphrase,
)
from crypto.safety_number import fingerprint_digits, format_safety_number, safety_number
from crypto.sender_keys import DISTRIBUTION_SIZE, MAX_SKIP, SenderKeyState

FAST = {"opslimit": argon2id.OPSLIMIT_INTERACTIVE, "memlimit": argon2id.MEMLIMIT_INTERACTIVE}


# --- sender keys -----------------------------------------------------------

def test_sender_key_members_decrypt() -> None:
    owner = SenderKeyState.generate(7)
    dist = owner.distribution_message()
    assert len(dist) == DISTRIBUTION_SIZE and dist[0] == 0x04
    members = [SenderKeyState.from_distribution(dist) for _ in range(3)]
    for i in range(5):
        msg = owner.encrypt(b"group %d" % i)
        assert msg[0] == 0x03 and msg[1:5] == (7).to_bytes(4, "big")
        assert msg[5:9] == i.to_bytes(4, "big")
        for m in members:
            assert m.decrypt(msg) == b"group %d" % i
    assert not members[0].can_send
    with pytest.raises(CryptoError):
        members[0].encrypt(b"x")


def test_sender_key_out_of_order_replay_and_cap() -> None:
    owner = SenderKeyState.generate()
    member = SenderKeyState.from_distribution(owner.distribution_message())
    msgs = [owner.encrypt(b"%d" % i) for i in range(4)]
    assert member.decrypt(msgs[2]) == b"2"
    assert member.decrypt(msgs[0]) == b"0"
    for m in (msgs[0], msgs[2]):
        with pytest.raises(ReplayedMessage):
            member.decrypt(m)
    assert member.decrypt(msgs[3]) == b"3"
    assert member.decrypt(msgs[1]) == b"1"
    for _ in range(MAX_SKIP + 1):
        owner.encrypt(b"lost")
    far = owner.encrypt(b"far")
    before = member.to_bytes()
    with pytest.raises(TooManySkippedMessages):
        member.decrypt(far)
    assert member.to_bytes() == before


def test_sender_key_late_joiner_gets_no_history() -> None:
    owner = SenderKeyState.generate()
    early = owner.encrypt(b"before join")
    late = SenderKeyState.from_distribution(owner.distribution_message())
    with pytest.raises(ReplayedMessage):
        late.decrypt(early)
    assert late.decrypt(owner.encrypt(b"after join")) == b"after join"


def test_sender_key_rotation() -> None:
    owner = SenderKeyState.generate(1)
    old_member = SenderKeyState.from_distribution(owner.distribution_message())
    assert old_member.decrypt(owner.encrypt(b"before")) == b"before"
    rotated = owner.rotate()
    assert rotated.key_id == 2
    assert rotated.signing_public_key != owner.signing_public_key
    new_member = SenderKeyState.from_distribution(rotated.distribution_message())
    msg = rotated.encrypt(b"after rotation")
    assert new_member.decrypt(msg) == b"after rotation"
    before = old_member.to_bytes()
    with pytest.raises(DecryptionFailed):
        old_member.decrypt(msg)
    assert old_member.to_bytes() == before
    # Even with the key id forged to the old one, the old chain cannot open it.
    forged = msg[:1] + (1).to_bytes(4, "big") + msg[5:]
    with pytest.raises(CryptoError):
        old_member.decrypt(forged)


def test_sender_key_forgery_refused() -> None:
    owner = SenderKeyState.generate()
    dist = owner.distribution_message()
    member = SenderKeyState.from_distribution(dist)
    # A malicious member knows the chain key but not the signing key.
    attacker = SenderKeyState.from_distribution(dist)
    msg = owner.encrypt(b"genuine")
    before = member.to_bytes()
    for i in range(len(msg)):
        t = bytearray(msg)
        t[i] ^= 0x04
        with pytest.raises(CryptoError):
            member.decrypt(bytes(t))
        assert member.to_bytes() == before
    # Re-sign with another key: refused as a bad signature.
    body = msg[:-64]
    with pytest.raises(InvalidSignature):
        member.decrypt(body + IdentityKeyPair.generate().sign(body))
    assert attacker.iteration == 0
    assert member.decrypt(msg) == b"genuine"


def test_sender_key_serialisation_and_malformed() -> None:
    owner = SenderKeyState.generate()
    restored = SenderKeyState.from_bytes(owner.to_bytes())
    member = SenderKeyState.from_distribution(owner.distribution_message())
    assert member.decrypt(restored.encrypt(b"x")) == b"x"
    for bad in (b"", b"\x04" + bytes(10), b"\x03" + bytes(72)):
        with pytest.raises(InvalidMessage):
            SenderKeyState.from_distribution(bad)
    with pytest.raises(InvalidMessage):
        member.decrypt(b"\x03short")
    with pytest.raises(CryptoError):
        SenderKeyState.from_bytes(b"{}")


# --- safety numbers --------------------------------------------------------

def test_safety_number_symmetric_and_format() -> None:
    a_id, b_id = uuid.uuid4(), uuid.uuid4()
    a_key, b_key = IdentityKeyPair.generate().public_key, IdentityKeyPair.generate().public_key
    n1 = safety_number(a_id, a_key, b_id, b_key)
    n2 = safety_number(b_id, b_key, a_id, a_key)
    assert n1 == n2 and len(n1) == 60 and n1.isdigit()
    shown = format_safety_number(n1)
    assert len(shown.split(" ")) == 12 and all(len(g) == 5 for g in shown.split(" "))
    assert sorted([n1[:30], n1[30:]]) == sorted(
        [fingerprint_digits(a_id, a_key), fingerprint_digits(b_id, b_key)])


def test_safety_number_changes_with_key_or_id_or_device() -> None:
    a_id, b_id = uuid.uuid4(), uuid.uuid4()
    a_key, b_key = IdentityKeyPair.generate().public_key, IdentityKeyPair.generate().public_key
    base = safety_number(a_id, a_key, b_id, b_key)
    assert safety_number(a_id, a_key, b_id, IdentityKeyPair.generate().public_key) != base
    assert safety_number(a_id, a_key, uuid.uuid4(), b_key) != base
    extra = IdentityKeyPair.generate().public_key
    assert safety_number(a_id, a_key, b_id, [b_key, extra]) != base
    # Device order does not matter.
    assert safety_number(a_id, a_key, b_id, [b_key, extra]) == \
        safety_number(a_id, [a_key], b_id, [extra, b_key])


def test_safety_number_pinned() -> None:
    # Pins the algorithm so clients in other languages can check theirs.
    digits = fingerprint_digits(uuid.UUID(int=0), bytes(range(32)))
    assert digits == fingerprint_digits(uuid.UUID(int=0), [bytes(range(32))])
    assert len(digits) == 30 and digits.isdigit()
    assert digits == PINNED_FINGERPRINT


PINNED_FINGERPRINT = "773237938493351189573136003040"


# --- keystore --------------------------------------------------------------

@settings(max_examples=5, deadline=None)
@given(data=st.binary(max_size=2000), passphrase=st.text(min_size=1, max_size=30))
def test_keystore_passphrase_roundtrip(data: bytes, passphrase: str) -> None:
    blob = seal_with_passphrase(data, passphrase, **FAST)
    assert blob[:6] == b"GCKS\x01\x01"
    assert open_with_passphrase(blob, passphrase) == data
    with pytest.raises(WrongPassphrase):
        open_with_passphrase(blob, passphrase + "x")


def test_keystore_default_cost_roundtrip() -> None:
    blob = seal_with_passphrase(b"identity seed", "correct horse battery staple")
    assert int.from_bytes(blob[6:10], "big") == argon2id.OPSLIMIT_MODERATE
    assert int.from_bytes(blob[10:18], "big") == argon2id.MEMLIMIT_MODERATE
    assert open_with_passphrase(blob, "correct horse battery staple") == b"identity seed"


def test_keystore_header_is_authenticated(monkeypatch: pytest.MonkeyPatch) -> None:
    """A flipped bit in any byte of the file, header or body, makes it refuse to open.

    Argon2id is a pure function of (passphrase, salt, cost): each distinct
    derivation runs once (``functools.cache``), not once per flipped byte.  The
    cache is emptied at the start of every field, so each field that gets as
    far as the derivation is opened end to end with a real one at least once;
    flipped salt and cost bytes change the inputs, so each of those derives
    afresh anyway.  Only repeats (same inputs, same key) are saved: the nonce
    and ciphertext bytes, ~45 derivations of 64 MiB each.
    """
    derive = functools.cache(keystore._derive)
    monkeypatch.setattr(keystore, "_derive", derive)
    blob = seal_with_passphrase(b"secret", "pw", **FAST)
    fields = {  # the layout in crypto/keystore.py's docstring
        "magic": (0, 4), "version": (4, 5), "kdf": (5, 6), "opslimit": (6, 10),
        "memlimit": (10, 18), "salt": (18, 34), "nonce": (34, 34 + NONCE_SIZE),
        "ciphertext and tag": (34 + NONCE_SIZE, len(blob)),
    }
    bounds = list(fields.values())
    assert bounds[0][0] == 0 and bounds[-1][1] == len(blob) == 34 + NONCE_SIZE + 6 + 16
    assert all(a[1] == b[0] for a, b in zip(bounds, bounds[1:], strict=False))
    for name, (lo, hi) in fields.items():
        derive.cache_clear()
        for i in range(lo, hi):
            t = bytearray(blob)
            t[i] ^= 0x01
            with pytest.raises(CryptoError):
                open_with_passphrase(bytes(t), "pw")
                pytest.fail(f"byte {i} ({name}) flipped, and the file still opened")
    assert open_with_passphrase(blob, "pw") == b"secret"  # untouched, it opens


def test_keystore_key_file() -> None:
    key = generate_key()
    blob = seal_with_key(b"secret", key)
    assert blob[:6] == b"GCKS\x01\x02" and len(blob) == 6 + 24 + 6 + 16
    assert open_with_key(blob, key) == b"secret"
    with pytest.raises(WrongPassphrase):
        open_with_key(blob, generate_key())
    with pytest.raises(InvalidMessage):
        open_with_passphrase(blob, "pw")
    with pytest.raises(InvalidMessage):
        open_with_key(b"NOPE" + blob[4:], key)


def test_keystore_refuses_expensive_params() -> None:
    blob = bytearray(seal_with_passphrase(b"x", "pw", **FAST))
    blob[10:18] = (2**40).to_bytes(8, "big")
    with pytest.raises(InvalidMessage):
        open_with_passphrase(bytes(blob), "pw")


def test_keystore_refuses_a_cost_below_interactive_and_an_empty_passphrase() -> None:
    """A file rewritten to "1 pass, 8 KiB" (cheap to guess) is refused on reading too."""
    with pytest.raises(InvalidKey):
        seal_with_passphrase(b"x", "pw", opslimit=argon2id.OPSLIMIT_MIN,
                             memlimit=argon2id.MEMLIMIT_INTERACTIVE)
    with pytest.raises(InvalidKey):
        seal_with_passphrase(b"x", "pw", opslimit=argon2id.OPSLIMIT_INTERACTIVE,
                             memlimit=argon2id.MEMLIMIT_INTERACTIVE - 1)
    with pytest.raises(InvalidKey):
        seal_with_passphrase(b"x", "", **FAST)
    blob = bytearray(seal_with_passphrase(b"x", "pw", **FAST))
    with pytest.raises(InvalidKey):
        open_with_passphrase(bytes(blob), b"")
    weak = bytearray(blob)
    weak[6:10] = (1).to_bytes(4, "big")
    with pytest.raises(InvalidMessage):
        open_with_passphrase(bytes(weak), "pw")
    weak = bytearray(blob)
    weak[10:18] = (8192).to_bytes(8, "big")
    with pytest.raises(InvalidMessage):
        open_with_passphrase(bytes(weak), "pw")
