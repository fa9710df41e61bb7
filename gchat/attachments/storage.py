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
import contextlib
import errno
import os
import time
from collections.abc import Callable
from concurrent.futures import Executor, ThreadPoolExecutor
from pathlib import Path
from typing import Generic, Protocol, TypeVar
from uuid import UUID

from gchat.errors import ServiceError
from protocol.errors import ErrorCode

_FULL = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG)
#: Most buffers one ``pwritev`` takes (Linux's IOV_MAX).
_IOV_MAX = 1024

Request = TypeVar("Request")
Result = TypeVar("Result")
#: Runs a batch of requests on one file in the worker thread: one result (or
#: the exception that request fails with) per request, in order.
BatchRun = Callable[[UUID, list[Request]], list["Result | BaseException"]]


class BlobStore(Protocol):
    async def stored(self, blob_id: UUID) -> int:
        """Bytes of an unfinished upload held (0 if none)."""

    def append(self, blob_id: UUID, offset: int, data: bytes) -> "asyncio.Future[int]":
        """Write ``data`` at ``offset``, which must be the bytes held; the new size.

        Raises ServiceError ``offset_mismatch`` (the stored offset differs) or
        ``storage_full`` (nothing of ``data`` is kept then).
        """

    async def seal(self, blob_id: UUID) -> None:
        """Make the finished upload durable and visible to readers."""

    def read(self, blob_id: UUID, offset: int, length: int) -> "asyncio.Future[bytes]":
        """Up to ``length`` bytes of a sealed blob from ``offset``; ``not_found`` if none."""

    async def delete(self, blob_id: UUID) -> None:
        """Remove the blob and any unfinished upload of it (absent is fine)."""

    async def older_than(self, seconds: float) -> list[UUID]:
        """Blobs and unfinished uploads not written for ``seconds`` (to find orphans)."""


def _mismatch(held: int) -> ServiceError:
    return ServiceError(ErrorCode.OFFSET_MISMATCH, f"{held} bytes are stored; continue from there")


def _write_run(fd: int, held: int, run: list[bytes], results: list[int | BaseException]) -> int:
    """Write ``run``, chunks that follow on from one another, at ``held`` (the
    file's size) in one ``pwritev``; add the size after each chunk, or why
    it was refused, to ``results``; returns the size then.

    One system call, not one per chunk: each call releases the GIL and must
    take it back from the event loop's thread, which holds it while it
    reads the next chunks, so the batch waited for the loop once per chunk.
    A chunk that cannot be written whole (the disk is full) is cut off, as
    if it never came: the file keeps exactly the chunks before it.
    """
    views = [memoryview(data) for data in run]
    written, first = 0, 0
    try:
        while first < len(views):
            done = os.pwritev(fd, views[first : first + _IOV_MAX], held + written)
            written += done
            while first < len(views) and done >= len(views[first]):
                done -= len(views[first])
                first += 1
            if done:
                views[first] = views[first][done:]
        failure = None
    except OSError as error:
        failure = error
    for data in run:
        if failure is None or written >= len(data):
            written -= len(data)
            held += len(data)
            results.append(held)
        elif written >= 0:
            os.ftruncate(fd, held)  # keep exactly what was there before this chunk
            results.append(
                ServiceError(ErrorCode.STORAGE_FULL, "the server's attachment storage is full")
                if failure.errno in _FULL
                else failure
            )
            written = -1
        else:
            results.append(_mismatch(held))
    return held


class FileBatches(Generic[Request, Result]):
    """Requests on one file, run in a worker thread a batch at a time.

    A thread hop per 128 KiB chunk (the hand-over to a worker thread, the
    GIL passed back and forth, the loop woken again) cost the node about as
    much CPU as everything else it does for the chunk (docs/PERFORMANCE.md).
    A client keeps several chunk requests in flight and the node reads on
    while they wait (``gchat.handling.Later``), so the requests read in one
    loop turn, and those that arrive while a batch is in the thread, go
    together: one hop for all, in arrival order. At most one batch per file
    is in the thread at a time, so a file's requests run in the order they
    came. A request is a future and its batch a callback each way: no task.
    """

    def __init__(self, run: "BatchRun[Request, Result]", threads: Executor) -> None:
        self._run = run
        self._threads = threads
        self._waiting: dict[UUID, list[tuple[Request, asyncio.Future[Result]]]] = {}
        self._running: set[UUID] = set()

    def submit(self, blob_id: UUID, request: Request) -> "asyncio.Future[Result]":
        """Run ``request`` on the file with the others waiting for it; its result.

        A future, not a coroutine: the handler hands it to the connection
        (``Later``) with no task per chunk. The batch leaves at the end of
        this loop turn, with the requests read in it.
        """
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Result] = loop.create_future()
        waiting = self._waiting.get(blob_id)
        if waiting is not None:  # a batch is due to leave, or one is in the thread
            waiting.append((request, future))
            return future
        self._waiting[blob_id] = [(request, future)]
        if blob_id not in self._running:
            loop.call_soon(self._start, loop, blob_id)
        return future

    def _start(self, loop: asyncio.AbstractEventLoop, blob_id: UUID) -> None:
        """Send the requests waiting for ``blob_id`` to the worker thread."""
        # Requests given up meanwhile (their connection closed) are not run.
        batch = [item for item in self._waiting.pop(blob_id, []) if not item[1].done()]
        if not batch:
            return
        self._running.add(blob_id)
        self._threads.submit(self._work, loop, blob_id, batch)

    def _work(
        self,
        loop: asyncio.AbstractEventLoop,
        blob_id: UUID,
        batch: list[tuple[Request, "asyncio.Future[Result]"]],
    ) -> None:
        """Run a batch (in a worker thread) and hand its results to the loop.

        Straight to the loop with ``call_soon_threadsafe``, not through an
        asyncio future wrapping the executor's (``run_in_executor``): that
        chain cost a lock, a callback and a loop turn more per batch, and
        the node's CPU per MiB moved was a fifth higher with it.
        """
        results: list[Result | BaseException]
        try:
            results = self._run(blob_id, [request for request, _ in batch])
        except Exception as error:  # the file could not be opened: all fail
            results = [error] * len(batch)
        with contextlib.suppress(RuntimeError):  # the loop closed: the node stopped
            loop.call_soon_threadsafe(self._finish, loop, blob_id, batch, results)

    def _finish(
        self,
        loop: asyncio.AbstractEventLoop,
        blob_id: UUID,
        batch: list[tuple[Request, "asyncio.Future[Result]"]],
        results: "list[Result | BaseException]",
    ) -> None:
        """Answer a batch back from the thread; send the next, if any waits."""
        self._running.discard(blob_id)
        for (_, future), result in zip(batch, results, strict=True):
            if future.done():  # given up while in the thread
                continue
            if isinstance(result, BaseException):
                future.set_exception(result)
            else:
                future.set_result(result)
        if blob_id in self._waiting:
            self._start(loop, blob_id)


def file_threads() -> ThreadPoolExecutor:
    """The chunks' own threads (as many as asyncio's default executor has),
    so their batches return to the loop without a wrapping future
    (``FileBatches._work``). Their owner shuts them down when the node stops."""
    return ThreadPoolExecutor(min(32, (os.cpu_count() or 1) + 4), "gchat-files")


class FilesystemStore:
    def __init__(self, root: Path, threads: Executor) -> None:
        self._partial = root / "partial"
        self._blobs = root / "blobs"
        for folder in (self._partial, self._blobs):
            folder.mkdir(parents=True, exist_ok=True, mode=0o700)
        self._appends = FileBatches[tuple[int, bytes], int](self._append, threads)
        self._reads = FileBatches[tuple[int, int], bytes](self._read, threads)

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
        offsets assumed it) are refused too, as ``offset_mismatch``. The
        chunks that follow on from one another go to the disk in one system
        call (``_write_run``).
        """
        path = self._partial / str(blob_id)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o600)
        try:
            held = os.fstat(fd).st_size
            results: list[int | BaseException] = []
            start = 0
            while start < len(chunks):
                if chunks[start][0] != held:
                    results.append(_mismatch(held))
                    start += 1
                    continue
                stop, end = start, held
                while stop < len(chunks) and chunks[stop][0] == end:
                    end += len(chunks[stop][1])
                    stop += 1
                held = _write_run(fd, held, [data for _, data in chunks[start:stop]], results)
                start = stop
            return results
        finally:
            os.close(fd)

    def append(self, blob_id: UUID, offset: int, data: bytes) -> "asyncio.Future[int]":
        return self._appends.submit(blob_id, (offset, data))

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

    def read(self, blob_id: UUID, offset: int, length: int) -> "asyncio.Future[bytes]":
        return self._reads.submit(blob_id, (offset, length))

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
