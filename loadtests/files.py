"""Attachments under load: one big file, node memory, many files at once.

What is measured (issue 16, "Performance"), each as a ratio taken in one run:

* a big file (100 MiB) uploaded to a real node and downloaded by its
  recipient, against the same bytes through the bare file handler
  (``loadtests.bare_files``: the same websockets stack and codec, no
  database, checks or disk), in MiB/s; rounds alternate between the two
  and the best of each is kept (the machine is shared and noisy);
* the node process's memory while it moves that file: the most its RSS
  (``/proc/PID/status``) grew above what it was just before, sampled every
  10 ms;
* many transfers at once (50 pairs, 5 MiB each): every sender uploads at
  the same time, then every recipient downloads at the same time; the
  throughput of each, and whether every file came back byte for byte.

The client side is lean (``FileConn``), not the SDK: it keeps ``WINDOW``
chunk requests in flight like the SDK does, but sends prepared bytes
instead of encrypting a file first (the node cannot tell ciphertext from
random bytes, and client-side encryption is not the node's cost). A file's
bytes are never held whole: each 128 KiB chunk is cut from a 1 MiB random
block and stamped with its transfer and position, so no two chunks of a run
are alike, and a SHA-256 is taken as it goes out and as it comes back.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import time
import uuid
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any
from uuid import UUID

from websockets.asyncio.client import ClientConnection

from loadtests import harness
from loadtests.clients import Dev, GChatConn, open_socket
from protocol import frames as f
from protocol import limits
from protocol.codec import Codec, client_codec
from protocol.version import MSGPACK_SUBPROTOCOL

MIB = 1024 * 1024
CHUNK = limits.MAX_CHUNK_BYTES
#: Chunk requests kept in flight per transfer (as gchat.client.files does).
WINDOW = 8
_BLOCK = os.urandom(MIB)


class TransferFailed(Exception):
    pass


@dataclass(frozen=True)
class Payload:
    """``size`` bytes, chunk by chunk: a slice of a random block, stamped with
    this payload's ``tag`` and the chunk's offset (so every chunk differs)."""

    tag: int
    size: int

    def chunk(self, offset: int) -> bytes:
        length = min(CHUNK, self.size - offset)
        start = offset % (len(_BLOCK) - CHUNK)
        stamp = self.tag.to_bytes(8, "big") + offset.to_bytes(8, "big")
        return (stamp + _BLOCK[start + len(stamp) : start + CHUNK])[:length]


class FileConn:
    """One connection that uploads and downloads attachments, pipelined."""

    def __init__(self, ws: ClientConnection, codec: Codec[f.ServerFrame]) -> None:
        self.ws = ws
        self.codec = codec
        self._rid = 100

    @classmethod
    async def gchat(cls, url: str, dev: Dev) -> FileConn:
        conn = await GChatConn.open(url, dev)
        return cls(conn.ws, conn.codec)

    @classmethod
    async def bare(cls, url: str, dev: Dev) -> FileConn:
        ws = await open_socket(url, dev.ip)
        return cls(ws, client_codec(MSGPACK_SUBPROTOCOL))

    async def close(self) -> None:
        await self.ws.close()

    async def _send(self, frame_type: type[Any], **fields: Any) -> int:
        self._rid += 1
        await self.ws.send(self.codec.encode(frame_type(rid=self._rid, **fields)))
        return self._rid

    async def _reply(self, rid: int) -> Any:
        """The reply to ``rid`` (replies come in order); pushes are skipped."""
        while True:
            frame = self.codec.decode(await self.ws.recv())
            if isinstance(frame, f.Error):
                raise TransferFailed(f"{frame.code}: {frame.message}")
            if getattr(frame, "rid", None) == rid:
                return frame

    async def call(self, frame_type: type[Any], **fields: Any) -> Any:
        return await self._reply(await self._send(frame_type, **fields))

    async def upload(self, payload: Payload, recipient: UUID) -> tuple[UUID, str]:
        """Upload ``payload`` for ``recipient``; (attachment id, SHA-256 of what was sent)."""
        ready: f.UploadReady = await self.call(f.UploadBegin, size=payload.size,
                                               recipient=recipient)
        digest = hashlib.sha256()
        waiting: deque[int] = deque()
        offset = 0
        last: f.UploadProgress | None = None
        while offset < payload.size or waiting:
            while offset < payload.size and len(waiting) < WINDOW:
                data = payload.chunk(offset)
                digest.update(data)
                waiting.append(await self._send(
                    f.UploadChunk, attachment_id=ready.attachment_id,
                    capability=ready.capability, offset=offset, data=data))
                offset += len(data)
            last = await self._reply(waiting.popleft())
        if last is None or not last.complete:
            raise TransferFailed("the node did not report the upload complete")
        return ready.attachment_id, digest.hexdigest()

    async def download(self, attachment_id: UUID) -> tuple[int, str]:
        """Download an attachment; (bytes received, their SHA-256)."""
        ready: f.DownloadReady = await self.call(f.DownloadBegin, attachment_id=attachment_id)
        digest = hashlib.sha256()
        waiting: deque[tuple[int, int]] = deque()
        asked = received = 0
        while received < ready.size:
            while asked < ready.size and len(waiting) < WINDOW:
                length = min(CHUNK, ready.size - asked)
                rid = await self._send(f.DownloadChunk, attachment_id=attachment_id,
                                       capability=ready.capability, offset=asked, length=length)
                waiting.append((rid, asked))
                asked += length
            rid, at = waiting.popleft()
            chunk: f.AttachmentChunk = await self._reply(rid)
            if chunk.offset != at or not chunk.data:
                raise TransferFailed(f"chunk at {chunk.offset} ({len(chunk.data)} bytes), "
                                     f"expected {at}")
            digest.update(chunk.data)
            received += len(chunk.data)
        await self.call(f.DownloadDone, attachment_id=attachment_id)
        return received, digest.hexdigest()


class RssWatch:
    """The most a process's RSS grew above where it stood at ``start``."""

    def __init__(self, pid: int, interval: float = 0.01) -> None:
        self.pid = pid
        self.interval = interval
        self.base_kib = 0
        self.peak_kib = 0
        self.samples = 0
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self.base_kib = self.peak_kib = harness.rss_kib(self.pid)
        self._task = asyncio.create_task(self._sample())

    async def _sample(self) -> None:
        while True:
            self.peak_kib = max(self.peak_kib, harness.rss_kib(self.pid))
            self.samples += 1
            await asyncio.sleep(self.interval)

    async def stop(self) -> float:
        """Growth in MiB."""
        assert self._task is not None
        self._task.cancel()
        await asyncio.gather(self._task, return_exceptions=True)
        self.peak_kib = max(self.peak_kib, harness.rss_kib(self.pid))
        return (self.peak_kib - self.base_kib) / 1024


Opener = Callable[[Dev], Awaitable[FileConn]]


async def one_file(open_conn: Opener, sender: Dev, recipient: Dev, size: int,
                   tag: int) -> dict[str, Any]:
    """Upload ``size`` bytes from ``sender`` to ``recipient``, who downloads them."""
    up, down = await open_conn(sender), await open_conn(recipient)
    try:
        payload = Payload(tag, size)
        started = time.monotonic()
        attachment, sent = await up.upload(payload, recipient.official_id)
        uploaded = time.monotonic()
        got, received = await down.download(attachment)
        downloaded = time.monotonic()
    finally:
        await asyncio.gather(up.close(), down.close())
    return {"upload_s": uploaded - started, "download_s": downloaded - uploaded,
            "verified": got == size and sent == received}


async def many_files(open_conn: Opener, pairs: list[tuple[Dev, Dev]], size: int,
                     tag: int) -> dict[str, Any]:
    """Every sender uploads at once, then every recipient downloads at once."""
    ups = await asyncio.gather(*(open_conn(s) for s, _ in pairs))
    downs = await asyncio.gather(*(open_conn(r) for _, r in pairs))
    try:
        started = time.monotonic()
        sent = await asyncio.gather(*(
            conn.upload(Payload(tag + k, size), r.official_id)
            for k, (conn, (_, r)) in enumerate(zip(ups, pairs, strict=True))))
        uploaded = time.monotonic()
        got = await asyncio.gather(*(
            conn.download(attachment) for conn, (attachment, _) in zip(downs, sent, strict=True)))
        downloaded = time.monotonic()
    finally:
        await asyncio.gather(*(c.close() for c in [*ups, *downs]))
    verified = sum(1 for (_, a), (n, b) in zip(sent, got, strict=True) if n == size and a == b)
    return {"upload_s": uploaded - started, "download_s": downloaded - uploaded,
            "verified": verified, "files": len(pairs)}


def mib_per_s(size: int, seconds: float) -> float:
    return size / MIB / seconds if seconds > 0 else float("nan")


def new_tag() -> int:
    return uuid.uuid4().int >> 80
