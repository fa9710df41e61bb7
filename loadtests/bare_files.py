"""The bare file handler: what moving attachment bytes costs without G-Chat.

The reference the attachment load test (``loadtests.files``) measures the
node against: the same server stack (websockets with G-Chat's settings from
``gchat.app``, the MessagePack subprotocol, ``protocol.codec``'s server
codec decoding each client frame and encoding each reply) answering the same
``upload_begin`` / ``upload_chunk`` / ``download_begin`` / ``download_chunk``
frames, but with no authentication, no database, no capability check, no
policy and no disk: an upload is kept in memory and a download is served
from it. So the ratio node / bare is what the node's own work on a chunk
(capability HMAC, a worker-thread write or read, the transaction at the
start and end) costs against the stack's decoding and framing alone.

Run it with ``python -m loadtests.bare_files --port 0``; it prints
``bare file handler listening on HOST:PORT`` once it accepts connections.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
import uuid

from websockets.asyncio.server import ServerConnection, serve
from websockets.exceptions import ConnectionClosed

from gchat.app import WEBSOCKET_SETTINGS
from protocol import frames as f
from protocol import limits
from protocol.codec import server_codec
from protocol.version import MSGPACK_SUBPROTOCOL

_CAPABILITY = bytes(limits.CAPABILITY_BYTES)


class BareFiles:
    def __init__(self) -> None:
        self.blobs: dict[uuid.UUID, bytearray] = {}
        self.sizes: dict[uuid.UUID, int] = {}

    def answer(self, frame: object) -> object:
        if isinstance(frame, f.UploadBegin):
            attachment = uuid.uuid4()
            self.blobs[attachment] = bytearray()
            self.sizes[attachment] = frame.size
            return f.UploadReady(rid=frame.rid, attachment_id=attachment, size=frame.size,
                                 offset=0, capability=_CAPABILITY, expires_at=0,
                                 max_chunk=limits.MAX_CHUNK_BYTES)
        if isinstance(frame, f.UploadChunk):
            blob = self.blobs[frame.attachment_id]
            blob += frame.data
            return f.UploadProgress(rid=frame.rid, attachment_id=frame.attachment_id,
                                    offset=len(blob),
                                    complete=len(blob) == self.sizes[frame.attachment_id])
        if isinstance(frame, f.DownloadBegin):
            size = len(self.blobs[frame.attachment_id])
            return f.DownloadReady(rid=frame.rid, attachment_id=frame.attachment_id, size=size,
                                   capability=_CAPABILITY, expires_at=0,
                                   max_chunk=limits.MAX_CHUNK_BYTES)
        if isinstance(frame, f.DownloadChunk):
            blob = self.blobs[frame.attachment_id]
            data = bytes(blob[frame.offset : frame.offset + frame.length])
            return f.AttachmentChunk(rid=frame.rid, attachment_id=frame.attachment_id,
                                     offset=frame.offset, data=data)
        if isinstance(frame, f.DownloadDone):
            self.blobs.pop(frame.attachment_id, None)
            self.sizes.pop(frame.attachment_id, None)
            return f.DownloadClosed(rid=frame.rid, attachment_id=frame.attachment_id)
        return f.Error(rid=getattr(frame, "rid", None), code="unsupported",
                       message="the bare handler moves files only")

    async def handle(self, ws: ServerConnection) -> None:
        codec = server_codec(MSGPACK_SUBPROTOCOL)
        with contextlib.suppress(ConnectionClosed):
            async for data in ws:
                await ws.send(codec.encode(self.answer(codec.decode(data))))


async def run(host: str, port: int) -> None:
    handler = BareFiles()
    async with serve(
        handler.handle,
        host,
        port,
        subprotocols=[MSGPACK_SUBPROTOCOL],  # type: ignore[list-item]
        **WEBSOCKET_SETTINGS,
    ) as server:
        bound = server.sockets[0].getsockname()
        print(f"bare file handler listening on {bound[0]}:{bound[1]}", flush=True)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            with contextlib.suppress(NotImplementedError):
                loop.add_signal_handler(signum, stop.set)
        await stop.wait()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m loadtests.bare_files")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    args = parser.parse_args(argv)
    try:
        import uvloop
    except ImportError:  # pragma: no cover
        asyncio.run(run(args.host, args.port))
    else:
        uvloop.run(run(args.host, args.port))


if __name__ == "__main__":
    main()
