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

import contextlib
import uuid

from websockets.asyncio.server import ServerConnection
from websockets.exceptions import ConnectionClosed

from loadtests import bare_server
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


def main(argv: list[str] | None = None) -> None:
    bare_server.main("bare_files", BareFiles().handle, MSGPACK_SUBPROTOCOL,
                     "bare file handler", argv)


if __name__ == "__main__":
    main()
