"""Attachments: who uploaded what size for whom, who may fetch it, daily usage.

The ciphertext itself is in the attachment storage
(``gchat.attachments.storage``); these rows hold only ids, sizes and times.
"""

from dataclasses import dataclass
from datetime import date, datetime
from uuid import UUID

from gchat.store.database import Executor

#: An addressed device of attachment ``a`` that has not fetched it and still may:
#: active, and for a conversation's attachment, its official still a member.
_WAITING = """
    SELECT 1 FROM attachment_recipients r JOIN devices d ON d.id = r.device_id
    WHERE r.attachment_id = a.id AND r.fetched_at IS NULL AND d.status = 'active'
      AND (a.conversation_id IS NULL OR EXISTS (
          SELECT 1 FROM conversation_members m
          WHERE m.conversation_id = a.conversation_id AND m.official_id = d.official_id))
"""

_DELETE_IF_FETCHED = f"""
    DELETE FROM attachments a WHERE a.id = $1 AND NOT EXISTS ({_WAITING}) RETURNING a.id
"""  # noqa: S608 - constant SQL

#: Past retention, unfinished since before $1, or complete and waited for by no one;
#: an unfinished one's bytes go back to its uploader's day.
_COLLECT = f"""
WITH gone AS (
    DELETE FROM attachments a
    WHERE a.expires_at < now()
       OR (a.completed_at IS NULL AND a.created_at < $1)
       OR (a.completed_at IS NOT NULL AND NOT EXISTS ({_WAITING}))
    RETURNING a.id, a.uploader_official, a.created_at, a.size, a.completed_at
), unfinished AS (
    SELECT uploader_official AS official_id,
           (created_at AT TIME ZONE 'UTC')::date AS day, sum(size) AS bytes
    FROM gone WHERE completed_at IS NULL GROUP BY 1, 2
), released AS (
    UPDATE attachment_usage u SET bytes = greatest(0, u.bytes - f.bytes)
    FROM unfinished f WHERE u.official_id = f.official_id AND u.day = f.day
    RETURNING u.official_id
)
SELECT id FROM gone
"""  # noqa: S608 - constant SQL


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
    created_at: datetime,
    expires_at: datetime,
    devices: list[UUID],
) -> None:
    """Record an announced upload; ``created_at`` is the instant whose UTC day the
    upload's bytes were counted against (``add_usage``), so a collection can give
    them back to that day."""
    await db.execute(
        """INSERT INTO attachments (id, uploader_device, uploader_official, agency_id,
                                    recipient, conversation_id, size, created_at, expires_at)
           VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)""",
        attachment_id,
        uploader_device,
        uploader_official,
        agency_id,
        recipient,
        conversation_id,
        size,
        created_at,
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
    """The size of a complete, unexpired attachment this device was addressed; else None.

    For a conversation's attachment the device's official must also still be
    a member: one removed after the upload no longer downloads it.
    """
    size = await db.fetchval(
        """SELECT a.size FROM attachments a
           JOIN attachment_recipients r ON r.attachment_id = a.id AND r.device_id = $2
           WHERE a.id = $1 AND a.completed_at IS NOT NULL AND a.expires_at > now()
             AND (a.conversation_id IS NULL OR EXISTS (
                 SELECT 1 FROM conversation_members m JOIN devices d
                     ON d.official_id = m.official_id AND d.id = $2
                 WHERE m.conversation_id = a.conversation_id))""",
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
    """Delete the attachment if no addressed device that may still fetch it lacks it
    (call under the row lock ``mark_fetched`` takes)."""
    deleted = await conn.fetchval(
        _DELETE_IF_FETCHED,
        attachment_id,
    )
    return deleted is not None


async def collect(db: Executor, incomplete_before: datetime) -> list[UUID]:
    """Delete what no one will fetch; returns their ids (whose blobs the caller deletes).

    That is: attachments past retention; uploads left unfinished since before
    ``incomplete_before``, whose announced bytes go back to the uploader's
    quota for the day they were counted against; and complete ones that no
    addressed device that may still fetch lacks (the last one missing was
    revoked, or its official left the conversation, or none was addressed).
    """
    rows = await db.fetch(
        _COLLECT,
        incomplete_before,
    )
    return [row["id"] for row in rows]


async def existing(db: Executor, attachment_ids: list[UUID]) -> set[UUID]:
    rows = await db.fetch("SELECT id FROM attachments WHERE id = ANY($1::uuid[])", attachment_ids)
    return {row["id"] for row in rows}
