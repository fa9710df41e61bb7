"""Where attachment ciphertext lives: one interface, a filesystem backend.

``FilesystemStore`` keeps an upload under ``partial/<id>`` while it grows
and, once whole, fsyncs it and renames it to ``blobs/<id>`` (then fsyncs
the folder): a reader never sees a half-written blob, and a node killed
mid-upload leaves only a partial file, which the next chunk (on any node
sharing the folder) continues from its size. The default folder is
``<data_dir>/attachments``; nodes of one deployment point ``attachments_dir``
at the same shared filesystem (NFS, CephFS, ...) so any node serves any
blob. Object storage (S3) is not shipped: it could not be tested here
against a real server (see docs/OPERATIONS.md).

Blocking file calls run in a worker thread, so a slow disk delays the
transfer, not the node's other connections.
"""

import asyncio
import errno
import os
import time
from pathlib import Path
from typing import Protocol
from uuid import UUID

from gchat.errors import ServiceError
from protocol.errors import ErrorCode

_FULL = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG)


class BlobStore(Protocol):
    async def stored(self, blob_id: UUID) -> int:
        """Bytes of an unfinished upload held (0 if none)."""

    async def append(self, blob_id: UUID, offset: int, data: bytes) -> int:
        """Write ``data`` at ``offset``, which must be the bytes held; returns the new size.

        Raises ServiceError ``offset_mismatch`` (the stored offset differs) or
        ``storage_full`` (nothing of ``data`` is kept then).
        """

    async def seal(self, blob_id: UUID) -> None:
        """Make the finished upload durable and visible to readers."""

    async def read(self, blob_id: UUID, offset: int, length: int) -> bytes:
        """Up to ``length`` bytes of a sealed blob from ``offset``; ``not_found`` if none."""

    async def delete(self, blob_id: UUID) -> None:
        """Remove the blob and any unfinished upload of it (absent is fine)."""

    async def older_than(self, seconds: float) -> list[UUID]:
        """Blobs and unfinished uploads not written for ``seconds`` (to find orphans)."""


class FilesystemStore:
    def __init__(self, root: Path) -> None:
        self._partial = root / "partial"
        self._blobs = root / "blobs"
        for folder in (self._partial, self._blobs):
            folder.mkdir(parents=True, exist_ok=True, mode=0o700)

    def _stored(self, blob_id: UUID) -> int:
        try:
            return (self._partial / str(blob_id)).stat().st_size
        except FileNotFoundError:
            return 0

    async def stored(self, blob_id: UUID) -> int:
        return await asyncio.to_thread(self._stored, blob_id)

    def _append(self, blob_id: UUID, offset: int, data: bytes) -> int:
        path = self._partial / str(blob_id)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o600)
        try:
            held = os.fstat(fd).st_size
            if held != offset:
                raise ServiceError(
                    ErrorCode.OFFSET_MISMATCH, f"{held} bytes are stored; continue from there"
                )
            try:
                written = os.pwrite(fd, data, offset)
                while written < len(data):
                    written += os.pwrite(fd, data[written:], offset + written)
            except OSError as error:
                os.ftruncate(fd, offset)  # keep exactly what was there before
                if error.errno in _FULL:
                    raise ServiceError(
                        ErrorCode.STORAGE_FULL, "the server's attachment storage is full"
                    ) from error
                raise
            return offset + len(data)
        finally:
            os.close(fd)

    async def append(self, blob_id: UUID, offset: int, data: bytes) -> int:
        return await asyncio.to_thread(self._append, blob_id, offset, data)

    def _seal(self, blob_id: UUID) -> None:
        path = self._partial / str(blob_id)
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        os.rename(path, self._blobs / str(blob_id))
        folder = os.open(self._blobs, os.O_RDONLY)
        try:
            os.fsync(folder)
        finally:
            os.close(folder)

    async def seal(self, blob_id: UUID) -> None:
        await asyncio.to_thread(self._seal, blob_id)

    def _read(self, blob_id: UUID, offset: int, length: int) -> bytes:
        try:
            fd = os.open(self._blobs / str(blob_id), os.O_RDONLY)
        except FileNotFoundError:
            raise ServiceError(ErrorCode.NOT_FOUND, "no such attachment") from None
        try:
            return os.pread(fd, length, offset)
        finally:
            os.close(fd)

    async def read(self, blob_id: UUID, offset: int, length: int) -> bytes:
        return await asyncio.to_thread(self._read, blob_id, offset, length)

    def _delete(self, blob_id: UUID) -> None:
        for folder in (self._partial, self._blobs):
            (folder / str(blob_id)).unlink(missing_ok=True)

    async def delete(self, blob_id: UUID) -> None:
        await asyncio.to_thread(self._delete, blob_id)

    def _older_than(self, seconds: float) -> list[UUID]:
        cutoff = time.time() - seconds
        found = []
        for folder in (self._partial, self._blobs):
            with os.scandir(folder) as entries:
                for entry in entries:
                    try:
                        blob_id = UUID(entry.name)
                        if entry.stat().st_mtime < cutoff:
                            found.append(blob_id)
                    except (ValueError, FileNotFoundError):
                        continue
        return found

    async def older_than(self, seconds: float) -> list[UUID]:
        return await asyncio.to_thread(self._older_than, seconds)
