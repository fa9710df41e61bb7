"""Raw attachment transfers over the protocol, one request per chunk (for server tests)."""

from uuid import UUID

from gchat.client.sdk import Client
from protocol import frames as f

CHUNK = 64 * 1024


async def upload(
    client: Client,
    data: bytes,
    *,
    recipient: UUID | None = None,
    conversation_id: UUID | None = None,
    stop_at: int | None = None,
) -> f.UploadReady:
    """Upload ``data`` (up to ``stop_at`` bytes); returns the upload's grant."""
    ready: f.UploadReady = await client.request(
        f.UploadBegin, size=len(data), recipient=recipient, conversation_id=conversation_id
    )
    await send_from(client, ready, data, stop_at=stop_at)
    return ready


async def send_from(
    client: Client, ready: f.UploadReady, data: bytes, stop_at: int | None = None
) -> f.UploadProgress | None:
    end = len(data) if stop_at is None else stop_at
    progress = None
    for offset in range(ready.offset, end, CHUNK):
        progress = await client.request(
            f.UploadChunk,
            attachment_id=ready.attachment_id,
            capability=ready.capability,
            offset=offset,
            data=data[offset : min(offset + CHUNK, end)],
        )
    return progress


async def download(client: Client, attachment_id: UUID) -> bytes:
    ready: f.DownloadReady = await client.request(f.DownloadBegin, attachment_id=attachment_id)
    out = bytearray()
    while len(out) < ready.size:
        chunk = await client.request(
            f.DownloadChunk,
            attachment_id=attachment_id,
            capability=ready.capability,
            offset=len(out),
            length=CHUNK,
        )
        out += chunk.data
    return bytes(out)
