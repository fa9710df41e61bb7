"""Identity keys, auth message, signed prekeys and device certificates."""

from __future__ import annotations

import uuid

import pytest
from nacl.public import PrivateKey

from crypto.certificate import (
    CERTIFICATE_SIZE,
    DeviceCertificate,
    issue_certificate,
    verify_certificate,
)
from crypto.errors import CryptoError, InvalidCertificate, InvalidKey, InvalidSignature
from crypto.identity import IdentityKeyPair, auth_message, verify_signature
from crypto.prekeys import (
    PrekeyPair,
    sign_prekey,
    signed_prekey_message,
    verify_signed_prekey,
)

# RFC 8032 7.1 TEST 1: a fixed seed pins the key derivation and signing.
RFC8032_SEED = bytes.fromhex("9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60")
RFC8032_PK = bytes.fromhex("d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a")
RFC8032_SIG = bytes.fromhex(
    "e5564300c360ac729086e2cc806e828a84877f1eb8e5d974d873e06522490155"
    "5fb8821590a33bacc61e39701cf9b46bd25bf5f0595bbe24655141438e7a100b")


def test_identity_from_seed_matches_rfc8032() -> None:
    ik = IdentityKeyPair.from_seed(RFC8032_SEED)
    assert ik.seed == RFC8032_SEED
    assert ik.public_key == RFC8032_PK
    assert ik.sign(b"") == RFC8032_SIG
    verify_signature(RFC8032_PK, b"", RFC8032_SIG)


def test_identity_generate_sign_verify() -> None:
    ik = IdentityKeyPair.generate()
    sig = ik.sign(b"hello")
    assert len(sig) == 64 and len(ik.public_key) == 32
    verify_signature(ik.public_key, b"hello", sig)
    with pytest.raises(InvalidSignature):
        verify_signature(ik.public_key, b"hellp", sig)
    with pytest.raises(InvalidSignature):
        verify_signature(IdentityKeyPair.generate().public_key, b"hello", sig)


@pytest.mark.parametrize(("pk_len", "sig_len"), [(31, 64), (33, 64), (32, 63), (32, 65), (0, 0)])
def test_verify_signature_wrong_lengths(pk_len: int, sig_len: int) -> None:
    with pytest.raises(InvalidSignature):
        verify_signature(b"\x01" * pk_len, b"m", b"\x02" * sig_len)


def test_identity_bad_seed() -> None:
    with pytest.raises(InvalidKey):
        IdentityKeyPair.from_seed(b"short")


def test_dh_conversion_consistent() -> None:
    ik = IdentityKeyPair.generate()
    assert bytes(PrivateKey(ik.dh_private()).public_key) == ik.dh_public()


def test_auth_message_format_pinned() -> None:
    msg = auth_message("node-1.gchat.go.th", bytes(range(32)))
    expected = (b"gchat.auth.v1" + b"\x00\x12" + b"node-1.gchat.go.th" + bytes(range(32)))
    assert msg == expected
    assert msg.hex() == (
        "67636861742e617574682e7631" "0012" "6e6f64652d312e67636861742e676f2e7468"
        "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f")
    # Non-ASCII server ids are length-prefixed in UTF-8 bytes, not characters.
    assert auth_message("ไทย", b"") == b"gchat.auth.v1\x00\x09" + "ไทย".encode()


def test_signed_prekey_message_format() -> None:
    pk = bytes(range(32))
    assert signed_prekey_message(0x01020304, pk) == b"gchat.spk.v1\x01\x02\x03\x04" + pk


def test_signed_prekey_roundtrip_and_failures() -> None:
    ik = IdentityKeyPair.generate()
    spk = PrekeyPair.generate(42)
    sig = sign_prekey(ik, spk)
    verify_signed_prekey(ik.public_key, 42, spk.public_key, sig)
    with pytest.raises(InvalidSignature):
        verify_signed_prekey(ik.public_key, 43, spk.public_key, sig)
    with pytest.raises(InvalidSignature):
        verify_signed_prekey(IdentityKeyPair.generate().public_key, 42, spk.public_key, sig)
    with pytest.raises(InvalidKey):
        verify_signed_prekey(ik.public_key, 42, spk.public_key[:31], sig)
    with pytest.raises(InvalidKey):
        verify_signed_prekey(ik.public_key, 2**32, spk.public_key, sig)


@pytest.mark.parametrize("point", [
    bytes(32),
    (1).to_bytes(32, "little"),
    bytes.fromhex("e0eb7a7c3b41b8ae1656e3faf19fc46ada098deb9c32b1fd866205165f49b800"),
    bytes.fromhex("5f9c95bca3508c24b1d0b1559c83ef5b04445cc4581c8e86d8224eddd09f1157"),
    bytes.fromhex("ecffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f"),
])
def test_signed_prekey_low_order_refused(point: bytes) -> None:
    ik = IdentityKeyPair.generate()
    sig = ik.sign(signed_prekey_message(1, point))
    with pytest.raises(InvalidKey):
        verify_signed_prekey(ik.public_key, 1, point, sig)


def test_prekey_ids_u32() -> None:
    assert PrekeyPair.generate(0).key_id == 0
    assert PrekeyPair.generate(2**32 - 1).key_id == 2**32 - 1
    for bad in (-1, 2**32):
        with pytest.raises(InvalidKey):
            PrekeyPair.generate(bad)


def _cert() -> tuple[IdentityKeyPair, DeviceCertificate]:
    directory = IdentityKeyPair.generate()
    device = IdentityKeyPair.generate()
    cert = issue_certificate(directory, uuid.uuid4(), uuid.uuid4(), uuid.uuid4(),
                             device.public_key, 1_700_000_000)
    return directory, cert


def test_certificate_roundtrip_and_layout() -> None:
    directory, cert = _cert()
    data = cert.to_bytes()
    assert len(data) == CERTIFICATE_SIZE == 153
    assert data[0] == 1
    assert data[1:17] == cert.official_id.bytes
    assert data[17:33] == cert.agency_id.bytes
    assert data[33:49] == cert.device_id.bytes
    assert data[49:81] == cert.identity_key
    assert data[81:89] == (1_700_000_000).to_bytes(8, "big")
    verify_signature(directory.public_key, b"gchat.cert.v1" + data[:89], data[89:])
    assert verify_certificate(data, directory.public_key) == cert
    assert DeviceCertificate.from_bytes(data) == cert


def test_certificate_fixed_bytes() -> None:
    directory = IdentityKeyPair.from_seed(bytes(32))
    cert = issue_certificate(directory, uuid.UUID(int=1), uuid.UUID(int=2), uuid.UUID(int=3),
                             RFC8032_PK, 0x0102030405060708)
    data = cert.to_bytes()
    assert data[:89].hex() == (
        "01" + "00" * 15 + "01" + "00" * 15 + "02" + "00" * 15 + "03"
        + RFC8032_PK.hex() + "0102030405060708")
    # Ed25519 is deterministic: the whole certificate is reproducible.
    assert cert == issue_certificate(directory, uuid.UUID(int=1), uuid.UUID(int=2),
                                     uuid.UUID(int=3), RFC8032_PK, 0x0102030405060708)


def test_certificate_tamper_every_byte() -> None:
    directory, cert = _cert()
    data = cert.to_bytes()
    for i in range(len(data)):
        tampered = bytearray(data)
        tampered[i] ^= 0x01
        with pytest.raises(InvalidCertificate):
            verify_certificate(bytes(tampered), directory.public_key)


def test_certificate_wrong_directory_key_and_lengths() -> None:
    _, cert = _cert()
    data = cert.to_bytes()
    with pytest.raises(InvalidCertificate):
        verify_certificate(data, IdentityKeyPair.generate().public_key)
    with pytest.raises(InvalidCertificate):
        verify_certificate(data, b"short")
    directory, cert = _cert()
    data = cert.to_bytes()
    for bad in (data[:-1], data + b"\x00", b"", b"\x02" + data[1:]):
        with pytest.raises(InvalidCertificate):
            verify_certificate(bad, directory.public_key)


def test_certificate_errors_are_crypto_errors() -> None:
    assert issubclass(InvalidCertificate, CryptoError)
    with pytest.raises(InvalidCertificate):
        issue_certificate(IdentityKeyPair.generate(), uuid.uuid4(), uuid.uuid4(), uuid.uuid4(),
                          b"short", 0)
