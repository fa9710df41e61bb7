"""Attachments: who uploaded what size for whom, who may fetch it, daily usage.

The ciphertext itself is in the attachment storage
(``gchat.attachments.storage``); these rows hold only ids, sizes and times.
"""

from dataclasses import dataclass
from datetime import date, datetime
from uuid import UUID

from gchat.store.database import Executor


@dataclass(frozen=True)
class Attachment:
    id: UUID
    uploader_device: UUID
    size: int
    completed: bool


async def add_usage(db: Executor, official_id: UUID, day: date, size: int) -> int:
    """Count ``size`` bytes against the official's day; returns the day's total."""
    total = await db.fetchval(
        """INSERT INTO attachment_usage (official_id, day, bytes) VALUES ($1, $2, $3)
           ON CONFLICT (official_id, day) DO UPDATE
               SET bytes = attachment_usage.bytes + EXCLUDED.bytes
           RETURNING bytes""",
        official_id,
        day,
        size,
    )
    return int(total)


async def create(
    db: Executor,
    attachment_id: UUID,
    uploader_device: UUID,
    uploader_official: UUID,
    agency_id: UUID,
    recipient: UUID | None,
    conversation_id: UUID | None,
    size: int,
    expires_at: datetime,
    devices: list[UUID],
) -> None:
    await db.execute(
        """INSERT INTO attachments (id, uploader_device, uploader_official, agency_id,
                                    recipient, conversation_id, size, expires_at)
           VALUES ($1, $2, $3, $4, $5, $6, $7, $8)""",
        attachment_id,
        uploader_device,
        uploader_official,
        agency_id,
        recipient,
        conversation_id,
        size,
        expires_at,
    )
    await db.execute(
        """INSERT INTO attachment_recipients (attachment_id, device_id)
           SELECT $1, unnest($2::uuid[])""",
        attachment_id,
        devices,
    )


async def get(db: Executor, attachment_id: UUID) -> Attachment | None:
    row = await db.fetchrow(
        """SELECT id, uploader_device, size, completed_at IS NOT NULL AS completed
           FROM attachments WHERE id = $1""",
        attachment_id,
    )
    return Attachment(*row) if row else None


async def complete(db: Executor, attachment_id: UUID) -> bool:
    """Mark the upload whole; False if the attachment is gone (collected meanwhile)."""
    status = await db.execute(
        "UPDATE attachments SET completed_at = coalesce(completed_at, now()) WHERE id = $1",
        attachment_id,
    )
    return bool(status.endswith(" 1"))


async def downloadable_size(db: Executor, attachment_id: UUID, device_id: UUID) -> int | None:
    """The size of a complete, unexpired attachment this device was addressed; else None."""
    size = await db.fetchval(
        """SELECT a.size FROM attachments a
           JOIN attachment_recipients r ON r.attachment_id = a.id AND r.device_id = $2
           WHERE a.id = $1 AND a.completed_at IS NOT NULL AND a.expires_at > now()""",
        attachment_id,
        device_id,
    )
    return None if size is None else int(size)


async def mark_fetched(conn: Executor, attachment_id: UUID, device_id: UUID) -> int | None:
    """Record that the device has it; returns the size if this was news, else None."""
    await conn.execute("SELECT 1 FROM attachments WHERE id = $1 FOR UPDATE", attachment_id)
    size = await conn.fetchval(
        """UPDATE attachment_recipients r SET fetched_at = now()
           FROM attachments a
           WHERE r.attachment_id = $1 AND r.device_id = $2 AND r.fetched_at IS NULL
             AND a.id = r.attachment_id AND a.completed_at IS NOT NULL
           RETURNING a.size""",
        attachment_id,
        device_id,
    )
    return None if size is None else int(size)


async def delete_if_fetched(conn: Executor, attachment_id: UUID) -> bool:
    """Delete the attachment if no active addressed device still lacks it (call under
    the row lock ``mark_fetched`` takes)."""
    deleted = await conn.fetchval(
        """DELETE FROM attachments a WHERE a.id = $1 AND NOT EXISTS (
               SELECT 1 FROM attachment_recipients r JOIN devices d ON d.id = r.device_id
               WHERE r.attachment_id = a.id AND r.fetched_at IS NULL AND d.status = 'active')
           RETURNING a.id""",
        attachment_id,
    )
    return deleted is not None


async def collect(db: Executor, incomplete_before: datetime) -> list[UUID]:
    """Delete attachments past retention, and uploads left unfinished since before
    ``incomplete_before``; returns their ids (whose blobs the caller deletes)."""
    rows = await db.fetch(
        """DELETE FROM attachments
           WHERE expires_at < now() OR (completed_at IS NULL AND created_at < $1)
           RETURNING id""",
        incomplete_before,
    )
    return [row["id"] for row in rows]


async def existing(db: Executor, attachment_ids: list[UUID]) -> set[UUID]:
    rows = await db.fetch("SELECT id FROM attachments WHERE id = ANY($1::uuid[])", attachment_ids)
    return {row["id"] for row in rows}
