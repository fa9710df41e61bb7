"""File encryption for attachments: libsodium secretstream XChaCha20-Poly1305.

A file gets a fresh random 32-byte key. Its ciphertext is the 24-byte
secretstream header followed by one secretstream message per 65 536-byte
chunk of the file (the last chunk shorter, or empty for an empty file),
each 17 bytes longer than its chunk; the last carries TAG_FINAL, every
other TAG_MESSAGE, and no additional data is used. So the ciphertext's size
follows from the file's (``ciphertext_size``), a truncated ciphertext lacks
its final tag, and chunks cannot be reordered, dropped or repeated (each
message's key and nonce come from the stream state). The sender hashes the
whole ciphertext with SHA-256; key, hash and sizes travel inside the
end-to-end message (docs/PROTOCOL.md §E13), so the server stores bytes it
cannot read and a recipient refuses bytes the sender did not upload.

Pure and incremental: the caller feeds chunks and writes what comes out, so
a 100 MiB file never needs to be held in memory.
"""

import hashlib
import hmac

import nacl.bindings as sodium
import nacl.exceptions
import nacl.utils

from crypto.errors import AttachmentTampered, AttachmentTruncated, InvalidKey

KEY_BYTES = sodium.crypto_secretstream_xchacha20poly1305_KEYBYTES  # 32
HEADER_BYTES = sodium.crypto_secretstream_xchacha20poly1305_HEADERBYTES  # 24
A_BYTES = sodium.crypto_secretstream_xchacha20poly1305_ABYTES  # 17
#: Plaintext bytes per secretstream message.
CHUNK_BYTES = 65536
_RECORD = CHUNK_BYTES + A_BYTES
_FINAL = sodium.crypto_secretstream_xchacha20poly1305_TAG_FINAL
_MESSAGE = sodium.crypto_secretstream_xchacha20poly1305_TAG_MESSAGE


def new_key() -> bytes:
    return nacl.utils.random(KEY_BYTES)


def chunk_count(size: int) -> int:
    """Secretstream messages for a file of ``size`` bytes (at least one)."""
    return max(1, -(-size // CHUNK_BYTES))


def ciphertext_size(size: int) -> int:
    """The ciphertext's size for a file of ``size`` bytes."""
    if size < 0:
        raise ValueError("negative size")
    return HEADER_BYTES + size + chunk_count(size) * A_BYTES


def _check_key(key: bytes) -> None:
    if len(key) != KEY_BYTES:
        raise InvalidKey(f"attachment key must be {KEY_BYTES} bytes")


class FileEncryptor:
    """Encrypts one file of a size known in advance, chunk by chunk.

    ``header`` comes first; then ``push`` each 65 536-byte chunk in order
    (the last may be shorter); the last push ends the stream. ``sha256`` is
    the hash of everything produced, once finished.
    """

    def __init__(self, key: bytes, size: int) -> None:
        _check_key(key)
        self._state = sodium.crypto_secretstream_xchacha20poly1305_state()
        self.header: bytes = sodium.crypto_secretstream_xchacha20poly1305_init_push(
            self._state, key
        )
        self._left = chunk_count(size)
        self._size = size
        self._pushed = 0
        self._hash = hashlib.sha256(self.header)

    def push(self, chunk: bytes) -> bytes:
        if self._left == 0:
            raise ValueError("the file is already complete")
        final = self._left == 1
        expected = self._size - self._pushed if final else CHUNK_BYTES
        if len(chunk) != expected:
            raise ValueError(f"chunk of {len(chunk)} bytes where {expected} were expected")
        out: bytes = sodium.crypto_secretstream_xchacha20poly1305_push(
            self._state, chunk, None, _FINAL if final else _MESSAGE
        )
        self._left -= 1
        self._pushed += len(chunk)
        self._hash.update(out)
        return out

    @property
    def done(self) -> bool:
        return self._left == 0

    @property
    def sha256(self) -> bytes:
        if not self.done:
            raise ValueError("the file is not complete yet")
        return self._hash.digest()


class FileDecryptor:
    """Checks and decrypts one attachment's ciphertext as it arrives.

    ``feed`` takes ciphertext in pieces of any size and returns the
    plaintext decrypted so far; ``finish`` checks that the stream ended with
    its final chunk, that no byte followed, that the size is the announced
    one and that the SHA-256 matches; only then is the plaintext good (a
    caller writes it to a temporary file and keeps it only after ``finish``).
    """

    def __init__(self, key: bytes, sha256: bytes, size: int) -> None:
        _check_key(key)
        self._key = key
        self._expected_hash = sha256
        self._expected_size = ciphertext_size(size)
        self._state: sodium.crypto_secretstream_xchacha20poly1305_state | None = None
        self._buffer = bytearray()
        self._hash = hashlib.sha256()
        self._seen = 0
        self._final = False

    def feed(self, data: bytes) -> bytes:
        self._seen += len(data)
        if self._seen > self._expected_size:
            raise AttachmentTruncated("the attachment is longer than announced")
        self._hash.update(data)
        self._buffer += data
        out = bytearray()
        if self._state is None:
            if len(self._buffer) < HEADER_BYTES:
                return b""
            self._state = sodium.crypto_secretstream_xchacha20poly1305_state()
            header = bytes(self._buffer[:HEADER_BYTES])
            del self._buffer[:HEADER_BYTES]
            sodium.crypto_secretstream_xchacha20poly1305_init_pull(self._state, header, self._key)
        # A full record is decrypted only once a byte after it arrived, or
        # the stream is at its announced end: the last record may be full.
        while len(self._buffer) > _RECORD or (
            len(self._buffer) == _RECORD and self._seen == self._expected_size
        ):
            out += self._pull(bytes(self._buffer[:_RECORD]))
            del self._buffer[:_RECORD]
        return bytes(out)

    def _pull(self, record: bytes) -> bytes:
        if self._final:
            raise AttachmentTruncated("the attachment goes on after its final chunk")
        assert self._state is not None
        try:
            plain, tag = sodium.crypto_secretstream_xchacha20poly1305_pull(
                self._state, record, None
            )
        except nacl.exceptions.CryptoError:
            raise AttachmentTampered(
                "the attachment was altered: a chunk failed to decrypt"
            ) from None
        if tag == _FINAL:
            self._final = True
        elif tag != _MESSAGE:
            raise AttachmentTampered("the attachment carries an unexpected chunk tag")
        return bytes(plain)

    def finish(self) -> bytes:
        """The last plaintext; raises unless the whole attachment checked out."""
        out = b""
        if self._state is not None and self._buffer:
            out = self._pull(bytes(self._buffer))
            self._buffer.clear()
        if self._seen != self._expected_size or not self._final:
            raise AttachmentTruncated("the attachment is truncated")
        if not hmac.compare_digest(self._hash.digest(), self._expected_hash):
            raise AttachmentTampered("the attachment was altered: its SHA-256 does not match")
        return out
