"""File encryption for attachments (crypto/attachment.py, PROTOCOL.md §E13)."""

import hashlib
import os

import nacl.bindings as sodium
import pytest

from crypto.attachment import (
    A_BYTES,
    CHUNK_BYTES,
    HEADER_BYTES,
    FileDecryptor,
    FileEncryptor,
    ciphertext_size,
    new_key,
)
from crypto.errors import AttachmentTampered, AttachmentTruncated, DecryptionFailed, InvalidKey


def encrypt(data: bytes, key: bytes) -> tuple[bytes, bytes]:
    enc = FileEncryptor(key, len(data))
    out = bytearray(enc.header)
    for i in range(0, max(len(data), 1), CHUNK_BYTES):
        out += enc.push(data[i : i + CHUNK_BYTES])
    assert enc.done
    return bytes(out), enc.sha256


def decrypt(ct: bytes, key: bytes, digest: bytes, size: int, piece: int = 4096) -> bytes:
    dec = FileDecryptor(key, digest, size)
    out = bytearray()
    for i in range(0, len(ct), piece):
        out += dec.feed(ct[i : i + piece])
    out += dec.finish()
    return bytes(out)


@pytest.mark.parametrize(
    "size", [0, 1, CHUNK_BYTES - 1, CHUNK_BYTES, CHUNK_BYTES + 1, 3 * CHUNK_BYTES]
)
def test_round_trip_sizes_and_layout(size: int) -> None:
    key, data = new_key(), os.urandom(size)
    ct, digest = encrypt(data, key)
    chunks = max(1, -(-size // CHUNK_BYTES))
    assert len(ct) == ciphertext_size(size) == HEADER_BYTES + size + chunks * A_BYTES
    assert digest == hashlib.sha256(ct).digest()
    for piece in (1, 1000, CHUNK_BYTES + A_BYTES, len(ct) or 1):
        if piece == 1 and size > CHUNK_BYTES:
            continue  # byte by byte is slow; 1000 covers odd splits
        assert decrypt(ct, key, digest, size, piece) == data


def test_the_layout_is_libsodium_secretstream_with_final_tag_last() -> None:
    """Another implementation (the web app's libsodium) reads it with the plain API."""
    key, data = new_key(), os.urandom(CHUNK_BYTES + 5)
    ct, _ = encrypt(data, key)
    state = sodium.crypto_secretstream_xchacha20poly1305_state()
    sodium.crypto_secretstream_xchacha20poly1305_init_pull(state, ct[:HEADER_BYTES], key)
    first, tag1 = sodium.crypto_secretstream_xchacha20poly1305_pull(
        state, ct[HEADER_BYTES : HEADER_BYTES + CHUNK_BYTES + A_BYTES], None
    )
    last, tag2 = sodium.crypto_secretstream_xchacha20poly1305_pull(
        state, ct[HEADER_BYTES + CHUNK_BYTES + A_BYTES :], None
    )
    assert first + last == data
    assert tag1 == sodium.crypto_secretstream_xchacha20poly1305_TAG_MESSAGE
    assert tag2 == sodium.crypto_secretstream_xchacha20poly1305_TAG_FINAL


def test_truncated_at_a_chunk_boundary_is_refused() -> None:
    key, data = new_key(), os.urandom(3 * CHUNK_BYTES)
    ct, digest = encrypt(data, key)
    cut = ct[: HEADER_BYTES + 2 * (CHUNK_BYTES + A_BYTES)]
    # Even with the hash and size of the cut stream, the final tag is missing.
    with pytest.raises(AttachmentTruncated):
        decrypt(cut, key, hashlib.sha256(cut).digest(), 2 * CHUNK_BYTES)
    with pytest.raises(AttachmentTruncated):
        decrypt(cut, key, digest, len(data))


def test_cut_mid_chunk_or_extended_is_refused() -> None:
    key, data = new_key(), os.urandom(100_000)
    ct, digest = encrypt(data, key)
    with pytest.raises(DecryptionFailed):
        decrypt(ct[:-1], key, digest, len(data))
    with pytest.raises(AttachmentTruncated):
        decrypt(ct + b"\0", key, digest, len(data))


@pytest.mark.parametrize(
    "where", [0, HEADER_BYTES + 3, HEADER_BYTES + CHUNK_BYTES + A_BYTES + 1, -1]
)
def test_one_flipped_bit_anywhere_is_refused(where: int) -> None:
    key, data = new_key(), os.urandom(2 * CHUNK_BYTES + 10)
    ct, digest = encrypt(data, key)
    bad = bytearray(ct)
    bad[where] ^= 0x01
    with pytest.raises(AttachmentTampered):
        decrypt(bytes(bad), key, digest, len(data))
    # With a hash recomputed by the tamperer, the chunk's tag still refuses it.
    with pytest.raises(AttachmentTampered):
        decrypt(bytes(bad), key, hashlib.sha256(bytes(bad)).digest(), len(data))


def test_swapped_chunks_wrong_key_and_wrong_hash_are_refused() -> None:
    key, data = new_key(), os.urandom(3 * CHUNK_BYTES + 1)
    ct, digest = encrypt(data, key)
    r = CHUNK_BYTES + A_BYTES
    swapped = (
        ct[:HEADER_BYTES]
        + ct[HEADER_BYTES + r : HEADER_BYTES + 2 * r]
        + ct[HEADER_BYTES : HEADER_BYTES + r]
        + ct[HEADER_BYTES + 2 * r :]
    )
    with pytest.raises(AttachmentTampered):
        decrypt(swapped, key, hashlib.sha256(swapped).digest(), len(data))
    with pytest.raises(AttachmentTampered):
        decrypt(ct, new_key(), digest, len(data))
    with pytest.raises(AttachmentTampered):
        decrypt(ct, key, bytes(32), len(data))
    # Another file's stream under the same key: refused by size, tags or hash.
    other, other_digest = encrypt(os.urandom(len(data)), key)
    with pytest.raises(AttachmentTampered):
        decrypt(other, key, digest, len(data))


def test_misuse_is_refused() -> None:
    with pytest.raises(InvalidKey):
        FileEncryptor(b"short", 1)
    with pytest.raises(InvalidKey):
        FileDecryptor(b"short", bytes(32), 1)
    enc = FileEncryptor(new_key(), CHUNK_BYTES + 1)
    with pytest.raises(ValueError, match="expected"):
        enc.push(b"x")  # not the last chunk: must be a full one
    with pytest.raises(ValueError, match="not complete"):
        _ = enc.sha256
    enc.push(bytes(CHUNK_BYTES))
    enc.push(b"x")
    with pytest.raises(ValueError, match="already complete"):
        enc.push(b"y")
