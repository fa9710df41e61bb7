"""Known answers computed here from the specs, and the attacks a broken ratchet would let through.

The expected values of the KATs come from the definitions (X3DH §3.3, Double
Ratchet §5.2) written out in this file on the standard library's HMAC and
libsodium's raw X25519, never from the module under test. The attacks are
written as an attacker holding a stolen state would run them: every secret
in the stolen state, and a few chain steps from each, is tried as the key of
every message; none may open what the properties say it must not.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import time
from base64 import b64decode

import nacl.bindings as nb
import pytest

from crypto.aead import open_, seal
from crypto.errors import CryptoError, InvalidMessage, InvalidState, TooManySkippedMessages
from crypto.identity import IdentityKeyPair
from crypto.kdf import chain_kdf, root_kdf
from crypto.prekeys import PrekeyPair, sign_prekey
from crypto.ratchet import (
    HEADER_SIZE,
    MAX_SKIP,
    MAX_STORED_SKIPPED,
    SKIPPED_KEY_MAX_AGE,
    RatchetHeader,
)
from crypto.sender_keys import SenderKeyState
from crypto.session import Session
from crypto.x3dh import X3DH_INFO, PrekeyBundle, x3dh_initiate, x3dh_respond
from tests.crypto.crypto_testkit import Device, pair

# --- the definitions, on the standard library ------------------------------


def spec_hmac(key: bytes, data: bytes) -> bytes:
    return hmac.new(key, data, hashlib.sha256).digest()


def spec_hkdf(ikm: bytes, salt: bytes, info: bytes, length: int) -> bytes:
    """RFC 5869 written out."""
    prk = spec_hmac(salt or bytes(32), ikm)
    out, block, i = b"", b"", 1
    while len(out) < length:
        block = spec_hmac(prk, block + info + bytes([i]))
        out += block
        i += 1
    return out[:length]


def spec_dh(private: bytes, public: bytes) -> bytes:
    return bytes(nb.crypto_scalarmult(private, public))


def spec_identity_dh(seed: bytes) -> tuple[bytes, bytes]:
    """Ed25519 seed -> (X25519 private, X25519 public), libsodium's birational map."""
    public, secret = nb.crypto_sign_seed_keypair(seed)
    return nb.crypto_sign_ed25519_sk_to_curve25519(secret), nb.crypto_sign_ed25519_pk_to_curve25519(
        public
    )


SEED_A, SEED_B = bytes(range(32)), bytes(range(32, 64))
SPK_B, OPK_B, EK_A = bytes([7]) * 32, bytes([9]) * 32, bytes([5]) * 32


@pytest.mark.parametrize("with_one_time", [True, False])
def test_x3dh_known_answer_from_the_spec(with_one_time: bool) -> None:
    ik_a, ik_b = IdentityKeyPair.from_seed(SEED_A), IdentityKeyPair.from_seed(SEED_B)
    spk, opk, ek = PrekeyPair(1, SPK_B), PrekeyPair(2, OPK_B), PrekeyPair(0, EK_A)
    ika_priv, _ = spec_identity_dh(SEED_A)
    _, ikb_pub = spec_identity_dh(SEED_B)
    spk_pub = bytes(nb.crypto_scalarmult_base(SPK_B))
    dh = (spec_dh(ika_priv, spk_pub) + spec_dh(EK_A, ikb_pub) + spec_dh(EK_A, spk_pub))
    if with_one_time:
        dh += spec_dh(EK_A, bytes(nb.crypto_scalarmult_base(OPK_B)))
    expected_sk = spec_hkdf(b"\xff" * 32 + dh, bytes(32), b"gchat.x3dh.v1", 32)
    assert X3DH_INFO == b"gchat.x3dh.v1"
    bundle = PrekeyBundle(
        ik_b.public_key, 1, spk.public_key, sign_prekey(ik_b, spk),
        2 if with_one_time else None, opk.public_key if with_one_time else None,
    )
    alice = x3dh_initiate(ik_a, bundle, ephemeral=ek)
    assert alice.shared_key == expected_sk
    assert alice.associated_data == ik_a.public_key + ik_b.public_key
    sk, ad = x3dh_respond(ik_b, spk, opk if with_one_time else None, alice.header)
    assert (sk, ad) == (expected_sk, alice.associated_data)


def test_kdf_rk_and_kdf_ck_known_answers_from_the_spec() -> None:
    rk, dh_out, ck = bytes([1]) * 32, bytes([2]) * 32, bytes([3]) * 32
    out = spec_hkdf(dh_out, rk, b"gchat.ratchet.v1", 64)
    assert root_kdf(rk, dh_out) == (out[:32], out[32:])
    assert chain_kdf(ck) == (spec_hmac(ck, b"\x01"), spec_hmac(ck, b"\x02"))
    # And the ratchet uses them: Bob's first receiving chain is KDF_RK(SK, DH(spk, A's key)).
    alice, bob = Device(), Device()
    a = Session.initiate(alice.identity, bob.bundle(with_one_time=False))
    message = a.encrypt(b"x")
    state = json.loads(a.to_bytes())["ratchet"]
    a_ratchet_private = b64decode(state["dhs_private"])
    header = RatchetHeader.from_bytes(message[1 + 69 : 1 + 69 + HEADER_SIZE])
    assert header.dh == bytes(nb.crypto_scalarmult_base(a_ratchet_private))
    sk = x3dh_respond(bob.identity, bob.signed_prekey, None, Session.from_bytes(
        a.to_bytes())._pending)[0]  # type: ignore[arg-type]
    _, ck0 = (lambda o: (o[:32], o[32:]))(
        spec_hkdf(spec_dh(bob.signed_prekey.private_key, header.dh), sk, b"gchat.ratchet.v1", 64)
    )
    mk0 = spec_hmac(ck0, b"\x01")
    ad = alice.identity.public_key + bob.identity.public_key
    raw_header = message[1 + 69 : 1 + 69 + HEADER_SIZE]
    assert open_(mk0, message[1 + 69 + HEADER_SIZE :], ad + raw_header) == b"x"


# --- the attacker's tools ---------------------------------------------------


def secrets_in(state: bytes) -> list[bytes]:
    """Every 32-byte value in a stolen (serialised) state, and 5 chain steps from each."""
    found: list[bytes] = []

    def walk(node: object) -> None:
        if isinstance(node, dict):
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)
        elif isinstance(node, str):
            try:
                raw = b64decode(node, validate=True)
            except ValueError:
                return
            if len(raw) == 32:
                found.append(raw)

    walk(json.loads(state))
    keys = []
    for secret in found:
        keys.append(secret)
        chain = secret
        for _ in range(5):
            mk, chain = chain_kdf(chain)
            keys += [mk, chain]
    return keys


def opens_pairwise(keys: list[bytes], ad: bytes, message: bytes) -> bool:
    body = message[1:] if message[0] == 0x02 else message[1 + 69 :]
    header, sealed = body[:HEADER_SIZE], body[HEADER_SIZE:]
    for key in keys:
        try:
            open_(key, sealed, ad + header)
            return True
        except CryptoError:
            continue
    return False


def test_forward_secrecy_a_stolen_state_opens_no_earlier_message() -> None:
    alice, bob = Device(), Device()
    a = Session.initiate(alice.identity, bob.bundle())
    transcript = [a.encrypt(b"m0")]
    b, _ = bob.accept(transcript[0])
    for i in range(1, 12):
        if i % 3 == 0:  # replies now and then: DH steps
            reply = b.encrypt(f"r{i}".encode())
            transcript.append(reply)
            a.decrypt(reply)
        message = a.encrypt(f"m{i}".encode())
        transcript.append(message)
        b.decrypt(message)
    ad = alice.identity.public_key + bob.identity.public_key
    for stolen in (b.to_bytes(), a.to_bytes()):
        keys = secrets_in(stolen)
        assert keys, "the attacker found the state's keys"
        for message in transcript:
            assert not opens_pairwise(keys, ad, message)
            with pytest.raises(CryptoError):
                Session.from_bytes(stolen).decrypt(message)


def test_post_compromise_a_stolen_state_fails_after_one_step_each_way() -> None:
    a, b = pair()
    stolen = Session.from_bytes(b.to_bytes())
    a.decrypt(b.encrypt(b"bob speaks"))  # ...and the conversation goes on
    first = a.encrypt(b"alice, same DH chain as at the theft")
    assert stolen.decrypt(first) == b"alice, same DH chain as at the theft"  # expected: no PCS yet
    b.decrypt(first)
    a.decrypt(b.encrypt(b"bob steps his ratchet"))  # one step each way
    later = [a.encrypt(f"after {i}".encode()) for i in range(3)]
    for message in later:
        assert b.decrypt(message).startswith(b"after")
        with pytest.raises(CryptoError):
            stolen.decrypt(message)
    keys = secrets_in(stolen.to_bytes())
    ad = b64decode(json.loads(b.to_bytes())["ratchet"]["ad"])
    for message in later:
        assert not opens_pairwise(keys, ad, message)


def test_skipped_key_cap_evicts_the_oldest() -> None:
    a, b = pair()
    batches = []
    for _ in range(3):
        batch = [a.encrypt(f"{i}".encode()) for i in range(MAX_SKIP + 1)]
        b.decrypt(batch[-1])  # skips MAX_SKIP keys each time
        batches.append(batch)
    stored = json.loads(b.to_bytes())["ratchet"]["skipped"]
    assert len(stored) == MAX_STORED_SKIPPED
    with pytest.raises(CryptoError):
        b.decrypt(batches[0][0])  # evicted
    assert b.decrypt(batches[2][0]) == b"0"  # still held


def test_one_forged_ratchet_key_costs_at_most_max_skip_derivations() -> None:
    a, b = pair()
    a.decrypt(b.encrypt(b"x"))
    for _ in range(10):
        b.decrypt(a.encrypt(b"y"))
    state = json.loads(b.to_bytes())["ratchet"]
    nr = state["nr"]
    forged_key = PrekeyPair.generate(0).public_key
    # pn asks for 600 more of the old chain, n for 600 of the new: 1200 > MAX_SKIP.
    forged = b"\x02" + RatchetHeader(forged_key, nr + 600, 600).to_bytes() + bytes(60)
    before = b.to_bytes()
    with pytest.raises(TooManySkippedMessages):
        b.decrypt(forged)
    assert b.to_bytes() == before


def test_skipped_keys_expire() -> None:
    a, b = pair()
    early = a.encrypt(b"delayed")
    b.decrypt(a.encrypt(b"on time"))
    ratchet = b._ratchet  # the session's ratchet, to pass a clock
    late = time.time() + SKIPPED_KEY_MAX_AGE + 1
    with pytest.raises(CryptoError):
        ratchet.decrypt(early[1:], now=late)
    assert ratchet.decrypt(early[1:]) == b"delayed"  # not expired: still readable


def test_a_stolen_sender_key_opens_no_earlier_group_message() -> None:
    owner = SenderKeyState.generate()
    receiver = SenderKeyState.from_distribution(owner.distribution_message())
    transcript = [owner.encrypt(f"g{i}".encode()) for i in range(8)]
    for message in transcript[1:]:
        receiver.decrypt(message)  # g0 is skipped and kept
    receiver.decrypt(transcript[0])
    for stolen in (owner.to_bytes(), receiver.to_bytes()):
        keys = secrets_in(stolen)
        for message in transcript:
            body = message[:-64]
            for key in keys:
                with pytest.raises(CryptoError):
                    open_(key, body[9:], body[:9])


def test_sender_key_distribution_never_rolls_back() -> None:
    owner = SenderKeyState.generate()
    early = owner.distribution_message()
    receiver = SenderKeyState.from_distribution(early)
    messages = [owner.encrypt(f"g{i}".encode()) for i in range(3)]
    receiver.decrypt(messages[0])
    receiver.decrypt(messages[2])  # g1 skipped, kept
    held = receiver.to_bytes()
    same = receiver.accept_distribution(early)  # delayed copy: changes nothing
    assert same.to_bytes() == held
    with pytest.raises(CryptoError):
        same.decrypt(messages[0])
    assert same.accept_distribution(owner.distribution_message()).to_bytes() == held  # equal
    unseen = [owner.encrypt(f"g{i}".encode()) for i in range(3, 5)]
    ahead = owner.distribution_message()  # iteration 5; the receiver is at 3
    moved = receiver.accept_distribution(ahead)
    assert receiver.to_bytes() == held  # the receiver's own copy is untouched
    assert moved.iteration == 5
    assert moved.decrypt(unseen[1]) == b"g4"  # keys skipped on the jump are kept
    assert moved.decrypt(unseen[0]) == b"g3"
    assert moved.decrypt(messages[1]) == b"g1"  # and those skipped before it
    assert moved.decrypt(owner.encrypt(b"g5")) == b"g5"  # the chain goes on from there
    rotated = owner.rotate()
    newer = moved.accept_distribution(rotated.distribution_message())
    assert newer.key_id == rotated.key_id == owner.key_id + 1
    with pytest.raises(CryptoError):
        newer.accept_distribution(early)  # an older key id
    forged = bytearray(ahead)
    forged[9:41] = bytes(32)  # same key id and signer, another chain
    with pytest.raises(CryptoError):
        receiver.accept_distribution(bytes(forged))
    other_signer = bytearray(ahead)
    other_signer[41:73] = SenderKeyState.generate().signing_public_key
    with pytest.raises(CryptoError):
        receiver.accept_distribution(bytes(other_signer))


def test_sender_key_distribution_jump_is_bounded_and_evicts() -> None:
    from crypto.sender_keys import MAX_SKIP as SK_MAX_SKIP
    from crypto.sender_keys import MAX_STORED_SKIPPED as SK_STORED

    owner = SenderKeyState.generate()
    receiver = SenderKeyState.from_distribution(owner.distribution_message())
    for _ in range(SK_MAX_SKIP):
        owner.encrypt(b"")
    exactly = receiver.accept_distribution(owner.distribution_message())
    assert exactly.iteration == SK_MAX_SKIP
    owner.encrypt(b"")
    with pytest.raises(TooManySkippedMessages):
        receiver.accept_distribution(owner.distribution_message())
    for _ in range(SK_MAX_SKIP - 1):
        owner.encrypt(b"")
    third = exactly.accept_distribution(owner.distribution_message())
    assert third.iteration == 2 * SK_MAX_SKIP
    assert len(json.loads(third.to_bytes())["skipped"]) == SK_STORED
    for _ in range(10):
        owner.encrypt(b"")
    fourth = third.accept_distribution(owner.distribution_message())
    assert len(json.loads(fourth.to_bytes())["skipped"]) == SK_STORED  # oldest evicted


def test_sender_key_state_round_trip_keeps_skipped_keys_and_their_age() -> None:
    owner = SenderKeyState.generate()
    receiver = SenderKeyState.from_distribution(owner.distribution_message())
    messages = [owner.encrypt(f"g{i}".encode()) for i in range(4)]
    stored_at = 1_000_000_000
    receiver.decrypt(messages[3], now=stored_at)  # g0..g2 skipped at that time
    for state in (owner, receiver):
        again = SenderKeyState.from_bytes(state.to_bytes())
        assert again.to_bytes() == state.to_bytes()
        assert (again.key_id, again.iteration, again.signing_public_key, again.can_send) == (
            state.key_id, state.iteration, state.signing_public_key, state.can_send)
    again = SenderKeyState.from_bytes(receiver.to_bytes())
    assert again.decrypt(messages[1], now=stored_at + 10) == b"g1"
    with pytest.raises(CryptoError):  # expired: stored_at + 30 days
        again.decrypt(messages[0], now=stored_at + 30 * 24 * 3600)
    # A state written before skipped keys had a time: they count from loading.
    old = json.loads(receiver.to_bytes())
    old["skipped"] = [entry[:2] for entry in old["skipped"]]
    loaded = SenderKeyState.from_bytes(json.dumps(old).encode())
    assert loaded.decrypt(messages[2]) == b"g2"
    assert loaded.decrypt(messages[0]) == b"g0"
    sending = SenderKeyState.from_bytes(owner.to_bytes())
    assert receiver.decrypt(sending.encrypt(b"after")) == b"after"
    for bad in (b"[]", b"{}", json.dumps({**json.loads(owner.to_bytes()), "v": 2}).encode()):
        with pytest.raises(InvalidState):
            SenderKeyState.from_bytes(bad)


def test_no_secret_in_any_repr() -> None:
    a, b = pair()
    owner = SenderKeyState.generate()
    objects = [a, b, a._ratchet, a._ratchet._state, owner, owner._state]  # noqa: SLF001
    for obj in objects:
        shown = repr(obj)
        for secret in secrets_in(a.to_bytes()) + secrets_in(owner.to_bytes()):
            assert secret.hex() not in shown and repr(secret) not in shown


# --- sender keys at their edges (from make mutate's survivors) --------------


def _owner_at(iteration: int) -> SenderKeyState:
    """An owner whose chain stands at ``iteration`` (as a stored state would say)."""
    state = json.loads(SenderKeyState.generate().to_bytes())
    state["iteration"] = iteration
    return SenderKeyState.from_bytes(json.dumps(state).encode())


def test_sender_key_ids_start_below_2_31_and_use_the_range() -> None:
    ids = [SenderKeyState.generate().key_id for _ in range(64)]
    assert all(0 <= k < 2**31 for k in ids)
    assert max(ids) >= 2**30  # not a narrower range (fails with probability 2**-64)


def test_sender_key_wire_formats_are_big_endian_at_every_width() -> None:
    owner = _owner_at(2**24 + 5)
    dist = owner.distribution_message()
    assert len(dist) == 73 and dist[0] == 0x04
    assert int.from_bytes(dist[1:5], "big") == owner.key_id
    assert int.from_bytes(dist[5:9], "big") == 2**24 + 5
    receiver = SenderKeyState.from_distribution(dist)
    assert (receiver.key_id, receiver.iteration) == (owner.key_id, 2**24 + 5)
    assert receiver.signing_public_key == owner.signing_public_key == dist[41:73]
    message = owner.encrypt(b"far along")
    assert int.from_bytes(message[5:9], "big") == 2**24 + 5
    assert receiver.decrypt(message) == b"far along"
    for bad in (dist[:-1], dist + b"\x00", b"\x03" + dist[1:]):
        with pytest.raises(CryptoError):
            SenderKeyState.from_distribution(bad)


def test_sender_key_counters_stop_before_2_32_minus_1() -> None:
    owner = _owner_at(2**32 - 2)
    receiver = SenderKeyState.from_distribution(owner.distribution_message())
    assert receiver.decrypt(owner.encrypt(b"last")) == b"last"  # n = 2**32 - 2 is fine
    with pytest.raises(CryptoError):
        owner.encrypt(b"one too many")  # the owner's chain is exhausted at 2**32 - 1
    # A validly signed message numbered 2**32 - 1 (only a forger makes one): refused.
    last = _owner_at(2**32 - 1)
    state = json.loads(last.to_bytes())
    mk, _ = chain_kdf(b64decode(state["chain_key"]))
    header = bytes([0x03]) + last.key_id.to_bytes(4, "big") + (2**32 - 1).to_bytes(4, "big")
    body = header + seal(mk, b"p", header)
    forged = body + IdentityKeyPair.from_seed(b64decode(state["signing_seed"])).sign(body)
    with pytest.raises(InvalidMessage):
        SenderKeyState.from_distribution(last.distribution_message()).decrypt(forged)


def test_sender_key_decrypt_edges_replay_skip_cap_and_size() -> None:
    owner = SenderKeyState.generate()
    receiver = SenderKeyState.from_distribution(owner.distribution_message())
    messages = [owner.encrypt(f"g{i}".encode()) for i in range(5)]
    assert receiver.decrypt(messages[3]) == b"g3"
    assert receiver.iteration == 4
    before = receiver.to_bytes()
    with pytest.raises(CryptoError):
        receiver.decrypt(messages[3])  # replay after a skip
    with pytest.raises(CryptoError):
        receiver.decrypt(messages[4][:-1] + bytes([messages[4][-1] ^ 1]))  # bad signature
    assert receiver.to_bytes() == before  # failures change nothing, skipped keys included
    assert receiver.decrypt(messages[4]) == b"g4"
    assert receiver.decrypt(messages[0]) == b"g0"
    # Exactly MAX_SKIP ahead is read; one more is refused.
    from crypto.sender_keys import MAX_SKIP as SK_MAX_SKIP
    from crypto.sender_keys import MAX_STORED_SKIPPED as SK_STORED

    fresh = SenderKeyState.from_distribution(owner.distribution_message())
    far = [owner.encrypt(b"x") for _ in range(SK_MAX_SKIP + 2)]
    assert fresh.decrypt(far[SK_MAX_SKIP]) == b"x"  # MAX_SKIP keys skipped: allowed
    assert fresh.iteration == 5 + SK_MAX_SKIP + 1
    third = SenderKeyState.from_distribution(owner.distribution_message())
    later = [owner.encrypt(b"y") for _ in range(SK_MAX_SKIP + 2)]
    with pytest.raises(TooManySkippedMessages):
        third.decrypt(later[SK_MAX_SKIP + 1])  # one more: refused
    # The stored skipped keys stop at the cap, oldest first.
    owner2 = SenderKeyState.generate()
    keeper = SenderKeyState.from_distribution(owner2.distribution_message())
    batch = [owner2.encrypt(b"z") for _ in range(2 * SK_MAX_SKIP + 11)]
    keeper.decrypt(batch[SK_MAX_SKIP])  # skips 1000
    keeper.decrypt(batch[2 * SK_MAX_SKIP])  # 999 more
    keeper.decrypt(batch[2 * SK_MAX_SKIP + 10])  # 9 more: 2008 > 2000
    assert len(json.loads(keeper.to_bytes())["skipped"]) == SK_STORED
    with pytest.raises(CryptoError):
        keeper.decrypt(batch[7])  # evicted, oldest first
    assert keeper.decrypt(batch[8]) == b"z"
    # The shortest message that can be one: 9 header + 24 nonce + 16 tag + 64 signature.
    with pytest.raises(CryptoError):
        receiver.decrypt(bytes([0x03]) + bytes(8 + 40 + 64 - 1))


def test_sender_key_skipped_keys_expire_exactly_after_30_days() -> None:
    owner = SenderKeyState.generate()
    receiver = SenderKeyState.from_distribution(owner.distribution_message())
    messages = [owner.encrypt(f"g{i}".encode()) for i in range(3)]
    receiver.decrypt(messages[2], now=1_000_000)
    day30 = 1_000_000 + 30 * 24 * 3600
    assert SenderKeyState.from_bytes(receiver.to_bytes()).decrypt(
        messages[0], now=day30 - 1) == b"g0"
    with pytest.raises(CryptoError):
        SenderKeyState.from_bytes(receiver.to_bytes()).decrypt(messages[1], now=day30)


def test_sender_key_state_serialisation_is_canonical() -> None:
    owner = SenderKeyState.generate()
    raw = owner.to_bytes()
    assert raw == json.dumps(json.loads(raw), sort_keys=True, separators=(",", ":")).encode()


def test_ratchet_state_round_trip_keeps_skipped_keys_their_age_and_refuses_others() -> None:
    from crypto.ratchet import RatchetSession

    a, b = pair()
    messages = [a.encrypt(f"m{i}".encode()) for i in range(4)]
    stored_at = 1_000_000_000
    b._ratchet.decrypt(messages[3][1:], now=stored_at)  # m0..m2 skipped then
    raw = b._ratchet.to_bytes()
    again = RatchetSession.from_bytes(raw)
    assert again.to_bytes() == raw
    assert again.decrypt(messages[1][1:], now=stored_at + 10) == b"m1"
    with pytest.raises(CryptoError):  # its age survived the round trip
        RatchetSession.from_bytes(raw).decrypt(messages[0][1:], now=stored_at + SKIPPED_KEY_MAX_AGE)
    old = json.loads(raw)
    old["skipped"] = [entry[:3] for entry in old["skipped"]]  # before skipped keys had a time
    loaded = RatchetSession.from_bytes(json.dumps(old).encode())
    assert loaded.decrypt(messages[2][1:]) == b"m2"
    for bad in (b"[]", b"{}", json.dumps({**json.loads(raw), "v": 2}).encode()):
        with pytest.raises(InvalidState):
            RatchetSession.from_bytes(bad)


def test_sender_key_empty_message_and_a_failed_skipped_key_changes_nothing() -> None:
    owner = SenderKeyState.generate()
    receiver = SenderKeyState.from_distribution(owner.distribution_message())
    empty = owner.encrypt(b"")
    assert len(empty) == 9 + 24 + 16 + 64  # the shortest group message there is
    assert receiver.decrypt(empty) == b""
    with pytest.raises(InvalidMessage):
        receiver.decrypt(empty[:-1])
    skipped = owner.encrypt(b"skipped")
    receiver.decrypt(owner.encrypt(b"ahead"))
    # The owner (who can sign) sends a message naming the skipped number that does not open.
    seed = b64decode(json.loads(owner.to_bytes())["signing_seed"])
    body = bytearray(skipped[:-64])
    body[-1] ^= 1
    bad = bytes(body) + IdentityKeyPair.from_seed(seed).sign(bytes(body))
    with pytest.raises(CryptoError):
        receiver.decrypt(bad)
    assert receiver.decrypt(skipped) == b"skipped"  # the skipped key is still there


def test_ratchet_state_refuses_counters_outside_u32() -> None:
    from crypto.ratchet import RatchetSession

    a, _ = pair()
    raw = json.loads(a._ratchet.to_bytes())
    for bad in (-1, 2**32):
        with pytest.raises(InvalidState):
            RatchetSession.from_bytes(json.dumps({**raw, "nr": bad}).encode())
    assert RatchetSession.from_bytes(json.dumps({**raw, "nr": 2**32 - 1}).encode())


def test_sending_chain_ends_at_the_last_number_a_header_can_carry() -> None:
    """Message numbers are u32 and 2**32 - 1 is refused on receipt (PROTOCOL E5):
    a sender at 2**32 - 2 sends once more, then refuses."""
    from crypto.ratchet import HEADER_SIZE, RatchetHeader, RatchetSession

    a, _ = pair()
    raw = json.loads(a._ratchet.to_bytes())
    assert raw["cks"] is not None  # the initiator can send
    for start, sendable in ((2**32 - 3, 2), (2**32 - 2, 1), (2**32 - 1, 0)):
        session = RatchetSession.from_bytes(json.dumps({**raw, "ns": start}).encode())
        for i in range(sendable):
            header = RatchetHeader.from_bytes(session.encrypt(b"x")[:HEADER_SIZE])
            assert header.n == start + i
        with pytest.raises(InvalidState):
            session.encrypt(b"one too many")


def test_initiator_refuses_a_forged_first_reply_that_claims_skipped_messages() -> None:
    alice, bob = Device(), Device()
    a = Session.initiate(alice.identity, bob.bundle())
    a.encrypt(b"hello")
    before = a.to_bytes()
    forged_key = PrekeyPair.generate(0).public_key
    forged = b"\x02" + RatchetHeader(forged_key, 5, 0).to_bytes() + bytes(60)
    with pytest.raises(CryptoError):
        a.decrypt(forged)
    assert a.to_bytes() == before


def test_x3dh_header_ids_are_big_endian_u32_and_the_flag_is_0_or_1() -> None:
    from crypto.x3dh import X3DHHeader

    ik, ek = bytes([1]) * 32, bytes([2]) * 32
    header = X3DHHeader(ik, ek, 0x01020304, 0x0A0B0C0D)
    raw = header.to_bytes()
    assert raw[64:68] == bytes([1, 2, 3, 4]) and raw[69:73] == bytes([10, 11, 12, 13])
    assert X3DHHeader.parse(raw + b"rest") == (header, 73)
    none = X3DHHeader(ik, ek, 0x01020304, None)
    assert X3DHHeader.parse(none.to_bytes() + bytes(8)) == (none, 69)
    for flag in (2, 0xFF):
        with pytest.raises(InvalidMessage):
            X3DHHeader.parse(raw[:68] + bytes([flag]) + raw[69:])


def test_ratchet_header_parses_every_byte_of_both_counters() -> None:
    from crypto.ratchet import RatchetHeader

    dh = bytes(range(32))
    for pn, n in ((2**24 + 5, 2**31 + 7), (0x01020304, 0xA0B0C0D0)):
        raw = RatchetHeader(dh, pn, n).to_bytes()
        assert raw[32:] == pn.to_bytes(4, "big") + n.to_bytes(4, "big")
        assert RatchetHeader.from_bytes(raw) == RatchetHeader(dh, pn, n)


@pytest.mark.parametrize("field", ["n", "pn"])
def test_a_counter_of_2_32_minus_1_is_refused_before_any_work(field: str) -> None:
    """2**32 - 1 is out of range (PROTOCOL E5): refused as unparseable, before
    any skipped-key work; one below it is in range and fails only later."""
    from crypto.ratchet import HEADER_SIZE, RatchetHeader

    a, b = pair()
    message = a._ratchet.encrypt(b"x")
    header = RatchetHeader.from_bytes(message[:HEADER_SIZE])

    def forged(value: int) -> bytes:
        changed = RatchetHeader(header.dh, *(
            (value, header.n) if field == "pn" else (header.pn, value)))
        return changed.to_bytes() + message[HEADER_SIZE:]

    with pytest.raises(InvalidMessage, match="out of range"):
        b._ratchet.decrypt(forged(2**32 - 1))
    with pytest.raises(CryptoError) as caught:
        b._ratchet.decrypt(forged(2**32 - 2))
    assert not isinstance(caught.value, InvalidMessage)
