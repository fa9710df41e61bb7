"""Request handlers of attachments: upload, resume, chunks, download, done.

Chunks are answered ``Later``: the connection reads the next chunk requests
while one is stored or read, so the chunks a client keeps in flight reach
the disk together (``gchat.attachments.storage.FileBatches``), and their
answers still leave in order.
"""

from functools import partial

from gchat.attachments.service import Attachments, Grant
from gchat.handling import Later, handles
from gchat.identity.principal import Principal
from protocol import frames as f
from protocol import limits


class AttachmentHandlers:
    def __init__(self, attachments: Attachments) -> None:
        self._attachments = attachments

    @staticmethod
    def _ready(rid: int, grant: Grant) -> f.UploadReady:
        return f.UploadReady(
            rid=rid,
            attachment_id=grant.attachment_id,
            size=grant.size,
            offset=grant.offset,
            capability=grant.capability,
            expires_at=grant.expires_at,
            max_chunk=limits.MAX_CHUNK_BYTES,
        )

    @handles(f.UploadBegin)
    async def upload_begin(self, actor: Principal, frame: f.UploadBegin) -> f.UploadReady:
        grant = await self._attachments.begin_upload(
            actor, frame.size, frame.recipient, frame.conversation_id
        )
        return self._ready(frame.rid, grant)

    @handles(f.UploadResume)
    async def upload_resume(self, actor: Principal, frame: f.UploadResume) -> f.UploadReady:
        grant = await self._attachments.resume_upload(actor, frame.attachment_id)
        return self._ready(frame.rid, grant)

    @handles(f.UploadChunk)
    async def upload_chunk(self, actor: Principal, frame: f.UploadChunk) -> Later:
        size, stored = self._attachments.upload_chunk(
            actor, frame.attachment_id, frame.capability, frame.offset, frame.data
        )
        return Later(stored, partial(_progress, frame, size))

    @handles(f.DownloadBegin)
    async def download_begin(self, actor: Principal, frame: f.DownloadBegin) -> f.DownloadReady:
        grant = await self._attachments.begin_download(actor, frame.attachment_id)
        return f.DownloadReady(
            rid=frame.rid,
            attachment_id=grant.attachment_id,
            size=grant.size,
            capability=grant.capability,
            expires_at=grant.expires_at,
            max_chunk=limits.MAX_CHUNK_BYTES,
        )

    @handles(f.DownloadChunk)
    async def download_chunk(self, actor: Principal, frame: f.DownloadChunk) -> Later:
        data = self._attachments.download_chunk(
            actor, frame.attachment_id, frame.capability, frame.offset, frame.length
        )
        return Later(data, partial(_chunk, frame))

    @handles(f.DownloadDone)
    async def download_done(self, actor: Principal, frame: f.DownloadDone) -> f.DownloadClosed:
        await self._attachments.download_done(actor, frame.attachment_id)
        return f.DownloadClosed(rid=frame.rid, attachment_id=frame.attachment_id)


def _progress(frame: f.UploadChunk, size: int, stored: int) -> f.UploadProgress:
    """All ``size`` bytes stored: the upload is whole (its last chunk's future
    is done only once the blob is sealed and recorded complete)."""
    return f.UploadProgress(
        rid=frame.rid, attachment_id=frame.attachment_id, offset=stored, complete=stored == size
    )


def _chunk(frame: f.DownloadChunk, data: bytes) -> f.AttachmentChunk:
    return f.AttachmentChunk(
        rid=frame.rid, attachment_id=frame.attachment_id, offset=frame.offset, data=data
    )
