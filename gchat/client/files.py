"""Files as attachments: encrypt, upload, refer to in a message, download, check, save.

The sender encrypts the file once into a private spool file (so an upload
cut off can resume byte for byte, on any node), uploads the ciphertext in
pipelined chunks, and sends a message whose body carries the reference
(PROTOCOL.md §E13): id, key, SHA-256, size, name, media type. The
receiver downloads, decrypts into a temporary file beside the target,
checks every chunk, the final tag, the size and the hash, and only then
renames it into place; a file that fails any check leaves nothing behind
and is reported with one sentence.

A message body carrying a file starts with the byte 0xFF (never found in
UTF-8 text) followed by a MessagePack map ``{"caption": str, "attachment":
{...}}``; any other body is text.
"""

import asyncio
import contextlib
import mimetypes
import os
import re
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any
from uuid import UUID

import msgspec

from crypto.attachment import CHUNK_BYTES, FileDecryptor, FileEncryptor, ciphertext_size, new_key
from gchat.client.rpc import ClientError, Rpc
from protocol import frames as f
from protocol.errors import ErrorCode

#: First byte of a message body that carries a file (never valid UTF-8).
FILE_MARK = b"\xff"
#: Chunk requests kept in flight during a transfer.
WINDOW = 8
#: Largest name kept from a sender (bytes, UTF-8).
_MAX_NAME = 255

Progress = Callable[[int, int], None]  # (bytes done, bytes in all)


class FileRef(msgspec.Struct, forbid_unknown_fields=True, omit_defaults=True):
    """What a recipient needs to fetch and check one file (PROTOCOL.md §E13)."""

    id: UUID
    key: bytes
    sha256: bytes
    size: int
    name: str
    media_type: str
    thumbnail: bytes | None = None


class FileBody(msgspec.Struct, forbid_unknown_fields=True):
    attachment: FileRef
    caption: str = ""


_body_encoder = msgspec.msgpack.Encoder()
_body_decoder = msgspec.msgpack.Decoder(FileBody)


def encode_body(reference: FileRef, caption: str = "") -> bytes:
    return FILE_MARK + _body_encoder.encode(FileBody(attachment=reference, caption=caption))


def decode_body(plaintext: bytes) -> tuple[str, FileRef | None]:
    """(text or caption, the file if any); ValueError for a malformed file body."""
    if not plaintext.startswith(FILE_MARK):
        return plaintext.decode(errors="replace"), None
    try:
        body = _body_decoder.decode(plaintext[1:])
    except msgspec.MsgspecError as error:
        raise ValueError(f"malformed file reference: {error}") from None
    ref = body.attachment
    if len(ref.key) != 32 or len(ref.sha256) != 32 or ref.size < 0:
        raise ValueError("malformed file reference")
    return body.caption, ref


class TransferError(Exception):
    """A file could not be sent or received; the message is one plain sentence."""


def safe_name(name: str) -> str:
    """A sender's file name made harmless as a local name: no folders, no dot files."""
    base = name.replace("\\", "/").rsplit("/", 1)[-1]
    base = re.sub(r"[\x00-\x1f\x7f]", "", base).strip().lstrip(".")
    while len(base.encode()) > _MAX_NAME:
        base = base[:-1]
    return base or "attachment"


# --- sending -----------------------------------------------------------------------


class Spool:
    """One file encrypted into a private temporary file, ready to upload (and resume)."""

    def __init__(self, source: Path, folder: Path | None = None) -> None:
        self.name = source.name
        self.media_type = mimetypes.guess_type(source.name)[0] or "application/octet-stream"
        self.key = new_key()
        self.size = source.stat().st_size
        self.ciphertext_size = ciphertext_size(self.size)
        fd, path = tempfile.mkstemp(prefix="gchat-upload-", dir=folder)  # mode 0600
        self.path = Path(path)
        encryptor = FileEncryptor(self.key, self.size)
        with os.fdopen(fd, "wb") as out, source.open("rb") as file:
            out.write(encryptor.header)
            while not encryptor.done:
                out.write(encryptor.push(_read_chunk(file)))
        self.sha256 = encryptor.sha256
        self.attachment_id: UUID | None = None

    def reference(self) -> FileRef:
        assert self.attachment_id is not None, "upload first"
        return FileRef(
            id=self.attachment_id,
            key=self.key,
            sha256=self.sha256,
            size=self.size,
            name=self.name,
            media_type=self.media_type,
        )

    def discard(self) -> None:
        self.path.unlink(missing_ok=True)


def _read_chunk(file: Any) -> bytes:
    """The next CHUNK_BYTES of the file, fewer only at its end."""
    data = bytearray()
    while len(data) < CHUNK_BYTES:
        piece = file.read(CHUNK_BYTES - len(data))
        if not piece:
            break
        data += piece
    return bytes(data)


def _refusal(error: ClientError) -> TransferError:
    sentences = {
        ErrorCode.TOO_LARGE: "the file is too large for this server ({})",
        ErrorCode.QUOTA_EXCEEDED: "today's file quota is used up ({})",
        ErrorCode.STORAGE_FULL: "the server's file storage is full; try again later",
        ErrorCode.NOT_A_MEMBER: "you are not a member of that conversation",
        ErrorCode.POLICY_REFUSED: "directory policy does not allow sending to that official",
        ErrorCode.NOT_FOUND: "the file is no longer on the server ({})",
    }
    sentence = next((text for code, text in sentences.items() if code == error.code), None)
    if sentence is None:
        return TransferError(f"the server refused the file: {error}")
    return TransferError(sentence.format(error.frame.message))


async def upload(
    rpc: Rpc,
    spool: Spool,
    *,
    recipient: UUID | None = None,
    conversation_id: UUID | None = None,
    progress: Progress | None = None,
) -> UUID:
    """Upload the spool (or go on with its unfinished upload); returns the attachment id.

    Call again with the same spool on a new connection (to any node) after
    a ConnectionError: it asks where the upload stands and continues.
    """
    try:
        if spool.attachment_id is None:
            ready: f.UploadReady = await rpc.request(
                f.UploadBegin,
                size=spool.ciphertext_size,
                recipient=recipient,
                conversation_id=conversation_id,
            )
            spool.attachment_id = ready.attachment_id
        else:
            ready = await rpc.request(f.UploadResume, attachment_id=spool.attachment_id)
        while ready.offset < ready.size:
            try:
                await _send_chunks(rpc, spool, ready, progress)
                break
            except ClientError as error:
                if error.code not in (ErrorCode.CAPABILITY_EXPIRED, ErrorCode.OFFSET_MISMATCH):
                    raise
                ready = await rpc.request(f.UploadResume, attachment_id=spool.attachment_id)
    except ClientError as error:
        raise _refusal(error) from None
    assert spool.attachment_id is not None
    return spool.attachment_id


async def _send_chunks(
    rpc: Rpc, spool: Spool, ready: f.UploadReady, progress: Progress | None
) -> None:
    step = min(ready.max_chunk, 128 * 1024)
    in_flight: list[asyncio.Future[Any]] = []
    try:
        with spool.path.open("rb") as file:
            offset = ready.offset
            file.seek(offset)
            while offset < ready.size:
                data = file.read(min(step, ready.size - offset))
                in_flight.append(
                    await rpc.submit(
                        f.UploadChunk,
                        attachment_id=ready.attachment_id,
                        capability=ready.capability,
                        offset=offset,
                        data=data,
                    )
                )
                offset += len(data)
                if len(in_flight) >= WINDOW:
                    reply: f.UploadProgress = await in_flight.pop(0)
                    if progress:
                        progress(reply.offset, ready.size)
            while in_flight:
                reply = await in_flight.pop(0)
                if progress:
                    progress(reply.offset, ready.size)
    finally:
        for future in in_flight:  # an error cut the window short: collect the rest quietly
            future.cancel()
            await asyncio.gather(future, return_exceptions=True)


# --- receiving ---------------------------------------------------------------------


async def download(
    rpc: Rpc, reference: FileRef, folder: Path, progress: Progress | None = None
) -> Path:
    """Fetch, check and save the file under ``folder``; returns where it went.

    Nothing is left under ``folder`` unless every check passed. The server
    is then told (``download_done``) so it can delete its copy.
    """
    os.makedirs(folder, exist_ok=True)
    decryptor = FileDecryptor(reference.key, reference.sha256, reference.size)
    fd, temporary = tempfile.mkstemp(prefix=".gchat-download-", dir=folder)
    try:
        with os.fdopen(fd, "wb") as out:
            await _fetch(rpc, reference, decryptor, out, progress)
            out.write(decryptor.finish())
            out.flush()
            os.fsync(out.fileno())
        target = _free_path(folder, safe_name(reference.name))
        os.replace(temporary, target)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temporary)
        raise
    await rpc.request(f.DownloadDone, attachment_id=reference.id)
    return target


async def _fetch(
    rpc: Rpc, reference: FileRef, decryptor: FileDecryptor, out: Any, progress: Progress | None
) -> None:
    expected = ciphertext_size(reference.size)
    try:
        ready: f.DownloadReady = await rpc.request(f.DownloadBegin, attachment_id=reference.id)
    except ClientError as error:
        raise _refusal(error) from None
    if ready.size != expected:
        raise TransferError(
            f"the server holds {ready.size} bytes for this file, not the {expected} its sender "
            "announced: refused"
        )
    offset = 0
    while offset < ready.size:
        try:
            offset = await _fetch_window(rpc, ready, offset, decryptor, out, progress)
        except ClientError as error:
            if error.code != ErrorCode.CAPABILITY_EXPIRED:
                raise _refusal(error) from None
            ready = await rpc.request(f.DownloadBegin, attachment_id=reference.id)


async def _fetch_window(
    rpc: Rpc,
    ready: f.DownloadReady,
    offset: int,
    decryptor: FileDecryptor,
    out: Any,
    progress: Progress | None,
) -> int:
    step = min(ready.max_chunk, 128 * 1024)
    asked = offset
    in_flight: list[asyncio.Future[Any]] = []
    try:
        while offset < ready.size:
            while asked < ready.size and len(in_flight) < WINDOW:
                length = min(step, ready.size - asked)
                in_flight.append(
                    await rpc.submit(
                        f.DownloadChunk,
                        attachment_id=ready.attachment_id,
                        capability=ready.capability,
                        offset=asked,
                        length=length,
                    )
                )
                asked += length
            chunk: f.AttachmentChunk = await in_flight.pop(0)
            if not chunk.data:
                raise TransferError("the server's copy of the file is truncated: refused")
            if chunk.offset != offset:
                raise TransferError("the server sent the file out of order: refused")
            out.write(decryptor.feed(chunk.data))
            offset += len(chunk.data)
            if progress:
                progress(offset, ready.size)
        return offset
    finally:
        for future in in_flight:
            future.cancel()
            await asyncio.gather(future, return_exceptions=True)


def _free_path(folder: Path, name: str) -> Path:
    """``folder/name``, or ``name (2)``, ``name (3)``... if taken: never overwrite."""
    candidate = folder / name
    stem, dot, suffix = name.partition(".")
    n = 2
    while candidate.exists():
        candidate = folder / f"{stem} ({n}){dot}{suffix}"
        n += 1
    return candidate
