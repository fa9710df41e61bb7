"""The rules of attachments: who may upload for whom, who may download, limits, collection.

An upload names its audience (one official, or one conversation) up front;
the node fixes then the devices that may download it: the recipient's
active devices and the uploader's own other ones, or every active device of
the conversation's members but the uploader's. That is the set a message to
them is addressed to (PROTOCOL.md §11.4), decided by the same directory
policy as a send. The node never learns the file's name, type or key: those
travel in the end-to-end message.

A device enrolled after the upload was not addressed and cannot download
(the message it refers to was not addressed to that device either), and a
member removed from a conversation no longer downloads its attachments.

The daily quota counts bytes when they are announced (``upload_begin``), so
parallel uploads cannot together overshoot it; an upload that is never
finished gives its bytes back to the day they were counted against when it
is collected.

A blob goes when every addressed device still active has said
``download_done`` (at once), or else at the next collection once no active
addressed device lacks it (the last one was revoked), or when retention
ends; an upload left unfinished is collected after ``upload_ttl`` seconds,
and so is a stored file that no row names any more (a deletion interrupted
between the database and the disk).
"""

import asyncio
import logging
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from uuid import UUID

from gchat.attachments.capability import Capabilities, Kind
from gchat.attachments.storage import BlobStore
from gchat.audit.log import AuditEvent, AuditLog
from gchat.directory.policy import check_send
from gchat.errors import ServiceError
from gchat.identity.principal import Principal
from gchat.store import attachments as store
from gchat.store import conversations, devices, policies
from gchat.store.database import Database
from protocol.errors import ErrorCode

log = logging.getLogger("gchat.attachments")


@dataclass(frozen=True)
class Limits:
    """The node's defaults; agency policy may set lower ones."""

    max_file: int
    per_day: int
    retention_seconds: int
    upload_ttl_seconds: int
    max_devices_per_official: int


@dataclass(frozen=True)
class Grant:
    """A capability for one attachment, and where the transfer stands."""

    attachment_id: UUID
    size: int
    offset: int
    capability: bytes
    expires_at: int


class Attachments:
    def __init__(
        self,
        db: Database,
        storage: BlobStore,
        capabilities: Capabilities,
        audit: AuditLog,
        limits: Limits,
    ) -> None:
        self._db = db
        self._storage = storage
        self._caps = capabilities
        self._audit = audit
        self._limits = limits

    # --- upload -------------------------------------------------------------------

    async def begin_upload(
        self, actor: Principal, size: int, recipient: UUID | None, conversation_id: UUID | None
    ) -> Grant:
        if (recipient is None) == (conversation_id is None):
            raise ServiceError(
                ErrorCode.INVALID_FIELD, "give exactly one of recipient and conversation_id"
            )
        attachment_id = uuid.uuid4()
        now = datetime.now(UTC)
        async with self._db.transaction() as conn:
            found = await policies.effective(
                conn,
                [actor.agency_id],
                self._limits.max_devices_per_official,
                self._limits.retention_seconds,
            )
            policy = found.get(actor.agency_id)
            max_file, per_day = self._limits.max_file, self._limits.per_day
            retention = self._limits.retention_seconds
            if policy is not None:
                max_file = min(max_file, policy.max_attachment_bytes or max_file)
                per_day = min(per_day, policy.attachment_bytes_per_day or per_day)
                retention = policy.retention_seconds
            if size > max_file:
                raise ServiceError(
                    ErrorCode.TOO_LARGE, f"attachments are limited to {max_file} bytes"
                )
            if recipient is not None:
                await check_send(conn, actor.official_id, recipient)
                active = await devices.active_ids(conn, [recipient, actor.official_id])
                addressed = active[recipient] | active[actor.official_id]
            else:
                assert conversation_id is not None
                if await conversations.member(conn, conversation_id, actor.official_id) is None:
                    raise ServiceError(ErrorCode.NOT_A_MEMBER, "not a member of that conversation")
                members = await conversations.members(conn, conversation_id)
                addressed = set(
                    await conversations.active_devices(conn, [m.official_id for m in members])
                )
            addressed.discard(actor.device_id)
            used = await store.add_usage(conn, actor.official_id, now.date(), size)
            if used > per_day:
                raise ServiceError(
                    ErrorCode.QUOTA_EXCEEDED,
                    f"today's attachment quota of {per_day} bytes would be exceeded",
                )
            await store.create(
                conn,
                attachment_id,
                actor.device_id,
                actor.official_id,
                actor.agency_id,
                recipient,
                conversation_id,
                size,
                now,
                now + timedelta(seconds=retention),
                sorted(addressed),
            )
            await self._audit.record(
                conn,
                AuditEvent(
                    "attachment.uploaded",
                    actor_official=actor.official_id,
                    actor_device=actor.device_id,
                    subject_official=recipient,
                    agency_id=actor.agency_id,
                    details={
                        "attachment_id": attachment_id,
                        "size": size,
                        "conversation_id": conversation_id,
                        "recipient_devices": sorted(addressed),
                    },
                ),
            )
        return self._grant(Kind.UPLOAD, attachment_id, actor.device_id, size, 0)

    def _grant(
        self, kind: Kind, attachment_id: UUID, device: UUID, size: int, offset: int
    ) -> Grant:
        capability, expires = self._caps.issue(kind, attachment_id, device, size)
        return Grant(attachment_id, size, offset, capability, expires)

    async def resume_upload(self, actor: Principal, attachment_id: UUID) -> Grant:
        found = await store.get(self._db.pool, attachment_id)
        if found is None or found.uploader_device != actor.device_id:
            raise ServiceError(ErrorCode.NOT_FOUND, "no upload of this device with that id")
        offset = found.size if found.completed else await self._storage.stored(attachment_id)
        return self._grant(Kind.UPLOAD, attachment_id, actor.device_id, found.size, offset)

    def upload_chunk(
        self, actor: Principal, attachment_id: UUID, capability: bytes, offset: int, data: bytes
    ) -> "tuple[int, asyncio.Future[int]]":
        """Store one chunk: the attachment's size, and the bytes stored once it is.

        Checked now (capability, bounds: refused with ServiceError), written
        by the store with the chunks that wait with it. The last chunk's
        future is done only once the blob is sealed and recorded complete,
        so the bytes stored reach the size only when the upload is whole.
        A future, not a coroutine: no task per chunk.
        """
        size = self._caps.check(capability, Kind.UPLOAD, attachment_id, actor.device_id)
        end = offset + len(data)
        if end > size:
            raise ServiceError(ErrorCode.INVALID_FIELD, f"the attachment has only {size} bytes")
        stored = self._storage.append(attachment_id, offset, data)
        if end < size:
            return size, stored
        return size, asyncio.ensure_future(self._complete(attachment_id, stored))

    async def _complete(self, attachment_id: UUID, stored: "asyncio.Future[int]") -> int:
        """Seal the upload once its last chunk is stored, and record it complete."""
        held = await stored
        await self._storage.seal(attachment_id)
        if not await store.complete(self._db.pool, attachment_id):
            await self._storage.delete(attachment_id)  # collected meanwhile
            raise ServiceError(ErrorCode.NOT_FOUND, "the upload was collected; start again")
        return held

    # --- download -----------------------------------------------------------------

    async def begin_download(self, actor: Principal, attachment_id: UUID) -> Grant:
        size = await store.downloadable_size(self._db.pool, attachment_id, actor.device_id)
        if size is None:
            raise ServiceError(ErrorCode.NOT_FOUND, "no such attachment for this device")
        return self._grant(Kind.DOWNLOAD, attachment_id, actor.device_id, size, 0)

    def download_chunk(
        self, actor: Principal, attachment_id: UUID, capability: bytes, offset: int, length: int
    ) -> "asyncio.Future[bytes]":
        """Read one chunk: checked now, read by the store with the others waiting."""
        size = self._caps.check(capability, Kind.DOWNLOAD, attachment_id, actor.device_id)
        if offset >= size:
            raise ServiceError(ErrorCode.INVALID_FIELD, f"the attachment has only {size} bytes")
        return self._storage.read(attachment_id, offset, min(length, size - offset))

    async def download_done(self, actor: Principal, attachment_id: UUID) -> None:
        async with self._db.transaction() as conn:
            size = await store.mark_fetched(conn, attachment_id, actor.device_id)
            if size is None:
                return  # already recorded, or not this device's: nothing to say
            await self._audit.record(
                conn,
                AuditEvent(
                    "attachment.fetched",
                    actor_official=actor.official_id,
                    actor_device=actor.device_id,
                    agency_id=actor.agency_id,
                    details={"attachment_id": attachment_id, "size": size},
                ),
            )
            gone = await store.delete_if_fetched(conn, attachment_id)
        if gone:
            await self._storage.delete(attachment_id)

    # --- collection ---------------------------------------------------------------

    async def collect(self) -> int:
        """Delete expired attachments, stale unfinished uploads and orphan files."""
        cutoff = datetime.now(UTC) - timedelta(seconds=self._limits.upload_ttl_seconds)
        gone = await store.collect(self._db.pool, cutoff)
        for blob_id in gone:
            await self._storage.delete(blob_id)
        old = await self._storage.older_than(self._limits.upload_ttl_seconds)
        orphans = set(old) - await store.existing(self._db.pool, old) if old else set()
        for blob_id in orphans:
            await self._storage.delete(blob_id)
        return len(gone) + len(orphans)
