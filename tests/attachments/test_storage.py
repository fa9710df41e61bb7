"""The filesystem blob store on a real directory: batched appends and reads."""

import asyncio
import os
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from uuid import uuid4

import pytest

from gchat.attachments.storage import FileBatches, FilesystemStore, file_threads
from gchat.errors import ServiceError

CHUNK = 4096


@pytest.fixture
def threads() -> Iterator[ThreadPoolExecutor]:
    pool = file_threads()
    yield pool
    pool.shutdown()


async def test_chunks_waiting_for_the_thread_are_written_in_one_batch_in_order(
    tmp_path: Path, threads: ThreadPoolExecutor
) -> None:
    store = FilesystemStore(tmp_path, threads)
    batches: list[int] = []
    write = store._append

    def counted(blob_id, chunks):  # noqa: ANN001, ANN202
        batches.append(len(chunks))
        return write(blob_id, chunks)

    store._appends = FileBatches(counted, threads)
    blob = uuid4()
    data = os.urandom(16 * CHUNK)
    sizes = await asyncio.gather(
        *(store.append(blob, o, data[o : o + CHUNK]) for o in range(0, len(data), CHUNK))
    )
    assert sizes == [o + CHUNK for o in range(0, len(data), CHUNK)]
    # Sixteen requests in flight at once: one hop to the thread for all.
    assert batches == [16]
    assert (tmp_path / "partial" / str(blob)).read_bytes() == data


async def test_a_chunk_at_the_wrong_offset_refuses_it_and_those_after_it(
    tmp_path: Path, threads: ThreadPoolExecutor
) -> None:
    store = FilesystemStore(tmp_path, threads)
    blob = uuid4()
    data = os.urandom(6 * CHUNK)
    offsets = [0, CHUNK, 3 * CHUNK, 4 * CHUNK]  # the third skips a chunk
    results = await asyncio.gather(
        *(store.append(blob, o, data[o : o + CHUNK]) for o in offsets), return_exceptions=True
    )
    assert results[:2] == [CHUNK, 2 * CHUNK]
    assert [getattr(r, "code", None) for r in results[2:]] == ["offset_mismatch"] * 2
    assert await store.stored(blob) == 2 * CHUNK


async def test_reads_of_a_missing_blob_all_fail_not_found_and_spans_come_back_in_order(
    tmp_path: Path, threads: ThreadPoolExecutor
) -> None:
    store = FilesystemStore(tmp_path, threads)
    blob = uuid4()
    with pytest.raises(ServiceError) as missing:
        await store.read(blob, 0, CHUNK)
    assert missing.value.code.value == "not_found"
    data = os.urandom(8 * CHUNK)
    await store.append(blob, 0, data)
    await store.seal(blob)
    parts = await asyncio.gather(
        *(store.read(blob, o, CHUNK) for o in reversed(range(0, len(data), CHUNK)))
    )
    assert b"".join(reversed(parts)) == data


async def test_a_request_given_up_does_not_stop_the_others(
    tmp_path: Path, threads: ThreadPoolExecutor
) -> None:
    store = FilesystemStore(tmp_path, threads)
    blob = uuid4()
    first = store.append(blob, 0, b"a" * CHUNK)
    second = store.append(blob, CHUNK, b"b" * CHUNK)
    second.cancel()  # both queued, neither in the thread yet (they leave at the turn's end)
    # The second was given up before its batch went to the thread: not
    # written, so the third, at the same offset, is.
    third = await store.append(blob, CHUNK, b"c" * CHUNK)
    assert await first == CHUNK
    assert third == 2 * CHUNK
    assert (tmp_path / "partial" / str(blob)).read_bytes() == b"a" * CHUNK + b"c" * CHUNK


async def test_a_batch_that_fills_the_disk_keeps_the_chunks_before_and_refuses_the_rest(
    tiny_disk: Path,
    threads: ThreadPoolExecutor,
) -> None:
    """The chunks of one batch go to the disk in one ``pwritev``; when the
    disk fills during it, the chunks written whole are kept and answered,
    the one cut short is refused ``storage_full`` and leaves nothing, and
    those after it are refused ``offset_mismatch``."""
    store = FilesystemStore(tiny_disk, threads)
    blob = uuid4()
    big = 300_000  # the tmpfs holds 1 MiB: the fourth chunk is cut short
    data = os.urandom(6 * big)
    results = await asyncio.gather(
        *(store.append(blob, o, data[o : o + big]) for o in range(0, len(data), big)),
        return_exceptions=True,
    )
    whole = [r for r in results if isinstance(r, int)]
    assert whole == [big, 2 * big, 3 * big]
    codes = [getattr(r, "code", None) for r in results[len(whole) :]]
    assert [c.value for c in codes if c is not None] == ["storage_full"] + ["offset_mismatch"] * (
        len(codes) - 1
    )
    assert await store.stored(blob) == big * len(whole)
    assert (tiny_disk / "partial" / str(blob)).read_bytes() == data[: big * len(whole)]
