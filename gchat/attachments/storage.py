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
transfer, not the node's other connections. The chunks of one file that
wait for the thread go together (``FileBatches``): one hop for all of them.
"""

import asyncio
import errno
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Generic, Protocol, TypeVar
from uuid import UUID

from gchat.errors import ServiceError
from protocol.errors import ErrorCode

_FULL = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG)

Request = TypeVar("Request")
Result = TypeVar("Result")
#: Runs a batch of requests on one file in the worker thread: one result (or
#: the exception that request fails with) per request, in order.
BatchRun = Callable[[UUID, list[Request]], list["Result | BaseException"]]


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


class FileBatches(Generic[Request, Result]):
    """Requests on one file, run in the worker thread a batch at a time.

    A thread hop per 128 KiB chunk (``asyncio.to_thread``: the hand-over to
    a worker thread, the GIL passed back and forth, the loop woken again)
    cost the node about as much CPU as everything else it does for the
    chunk (docs/PERFORMANCE.md). A client keeps several chunk requests in
    flight and the node reads on while they wait (``gchat.handling.Later``),
    so the requests that arrive while one batch is in the thread go
    together in the next: one hop for all, in arrival order. At most one
    batch per file is in the thread at a time, so a file's requests run in
    the order they came.
    """

    def __init__(self, run: "BatchRun[Request, Result]") -> None:
        self._run = run
        self._waiting: dict[UUID, list[tuple[Request, asyncio.Future[Result]]]] = {}
        self._running: dict[UUID, asyncio.Task[None]] = {}

    async def submit(self, blob_id: UUID, request: Request) -> Result:
        """Run ``request`` on the file with the others waiting for it; its result."""
        future: asyncio.Future[Result] = asyncio.get_running_loop().create_future()
        self._waiting.setdefault(blob_id, []).append((request, future))
        if blob_id not in self._running:
            self._running[blob_id] = asyncio.create_task(self._drain(blob_id))
        return await future

    async def _drain(self, blob_id: UUID) -> None:
        batch: list[tuple[Request, asyncio.Future[Result]]] = []
        try:
            while waiting := self._waiting.pop(blob_id, []):
                # Requests given up meanwhile (their connection closed) are not run.
                batch = [(request, future) for request, future in waiting if not future.done()]
                if not batch:
                    continue
                try:
                    results = await asyncio.to_thread(
                        self._run, blob_id, [request for request, _ in batch]
                    )
                except Exception as error:  # the file could not be opened: all fail
                    results = [error] * len(batch)
                for (_, future), result in zip(batch, results, strict=True):
                    if future.done():  # given up while in the thread
                        continue
                    if isinstance(result, BaseException):
                        future.set_exception(result)
                    else:
                        future.set_result(result)
                batch = []
        finally:
            del self._running[blob_id]
            # Stopped mid-batch (the node stops): nobody gets an answer.
            for _, future in batch + self._waiting.pop(blob_id, []):
                future.cancel()


class FilesystemStore:
    def __init__(self, root: Path) -> None:
        self._partial = root / "partial"
        self._blobs = root / "blobs"
        for folder in (self._partial, self._blobs):
            folder.mkdir(parents=True, exist_ok=True, mode=0o700)
        self._appends = FileBatches[tuple[int, bytes], int](self._append)
        self._reads = FileBatches[tuple[int, int], bytes](self._read)

    def _stored(self, blob_id: UUID) -> int:
        try:
            return (self._partial / str(blob_id)).stat().st_size
        except FileNotFoundError:
            return 0

    async def stored(self, blob_id: UUID) -> int:
        return await asyncio.to_thread(self._stored, blob_id)

    def _append(self, blob_id: UUID, chunks: list[tuple[int, bytes]]) -> list[int | BaseException]:
        """Write each (offset, data) at its offset, which must be the bytes held
        by then; the size after each, or why it was refused.

        A refused chunk changes nothing, so the chunks after it (whose
        offsets assumed it) are refused too, as ``offset_mismatch``.
        """
        path = self._partial / str(blob_id)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o600)
        try:
            held = os.fstat(fd).st_size
            results: list[int | BaseException] = []
            for offset, data in chunks:
                if offset != held:
                    results.append(
                        ServiceError(
                            ErrorCode.OFFSET_MISMATCH,
                            f"{held} bytes are stored; continue from there",
                        )
                    )
                    continue
                try:
                    written = os.pwrite(fd, data, offset)
                    while written < len(data):
                        written += os.pwrite(fd, data[written:], offset + written)
                except OSError as error:
                    os.ftruncate(fd, offset)  # keep exactly what was there before
                    results.append(
                        ServiceError(
                            ErrorCode.STORAGE_FULL, "the server's attachment storage is full"
                        )
                        if error.errno in _FULL
                        else error
                    )
                    continue
                held = offset + len(data)
                results.append(held)
            return results
        finally:
            os.close(fd)

    async def append(self, blob_id: UUID, offset: int, data: bytes) -> int:
        return await self._appends.submit(blob_id, (offset, data))

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

    def _read(self, blob_id: UUID, spans: list[tuple[int, int]]) -> list[bytes | BaseException]:
        """The bytes of each (offset, length) span of a sealed blob."""
        try:
            fd = os.open(self._blobs / str(blob_id), os.O_RDONLY)
        except FileNotFoundError:
            raise ServiceError(ErrorCode.NOT_FOUND, "no such attachment") from None
        try:
            return [os.pread(fd, length, offset) for offset, length in spans]
        finally:
            os.close(fd)

    async def read(self, blob_id: UUID, offset: int, length: int) -> bytes:
        return await self._reads.submit(blob_id, (offset, length))

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
