"""Messages and per-device inboxes.

A batch of sends from many connections is written in one transaction (group
commit). Positions in a device's inbox come from ``devices.inbox_head``,
bumped under that row's lock in device-id order (so concurrent batches on
several nodes cannot deadlock), which makes each inbox's positions
contiguous and committed in order: a reader that has seen position P never
later finds a smaller one appear.
"""

from collections import Counter
from dataclasses import dataclass
from datetime import datetime
from uuid import UUID

from gchat.store.database import Executor


@dataclass(frozen=True)
class NewMessage:
    """A validated send, ready to store."""

    message_id: UUID
    sender_device: UUID
    sender_official: UUID
    recipient_official: UUID
    client_message_id: str
    sent_at: datetime
    envelopes: list[tuple[UUID, bytes]]  # (device id, ciphertext)


@dataclass(frozen=True)
class StoredMessage:
    """What the sender is told: the message id and time, new or original."""

    message_id: UUID
    sent_at: datetime
    duplicate: bool


@dataclass(frozen=True)
class InboxEntry:
    position: int
    message_id: UUID
    sender_official: UUID
    sender_device: UUID
    sent_at: datetime
    ciphertext: bytes


async def store_batch(
    conn: Executor, batch: list[NewMessage], expires_at: datetime
) -> list[StoredMessage]:
    """Store a batch (inside the caller's transaction); one result per send.

    A send whose (sender device, client message id) is already stored, in an
    earlier batch or earlier in this one, stores nothing and gets the first
    send's id and time back.
    """
    first: dict[tuple[UUID, str], NewMessage] = {}
    for message in batch:
        first.setdefault((message.sender_device, message.client_message_id), message)
    unique = list(first.values())
    inserted = await conn.fetch(
        """INSERT INTO messages (id, sender_device, sender_official, recipient_official,
                                 client_message_id, sent_at)
           SELECT * FROM unnest($1::uuid[], $2::uuid[], $3::uuid[], $4::uuid[],
                                $5::text[], $6::timestamptz[])
           ON CONFLICT (sender_device, client_message_id) DO NOTHING
           RETURNING id""",
        [m.message_id for m in unique],
        [m.sender_device for m in unique],
        [m.sender_official for m in unique],
        [m.recipient_official for m in unique],
        [m.client_message_id for m in unique],
        [m.sent_at for m in unique],
    )
    new_ids = {row["id"] for row in inserted}
    fresh = [m for m in unique if m.message_id in new_ids]
    stored = {
        (m.sender_device, m.client_message_id): StoredMessage(m.message_id, m.sent_at, False)
        for m in fresh
    }
    repeats = [m for m in unique if m.message_id not in new_ids]
    if repeats:
        rows = await conn.fetch(
            """SELECT m.id, m.sender_device, m.client_message_id, m.sent_at
               FROM messages m
               JOIN unnest($1::uuid[], $2::text[]) AS r(device, cid)
                 ON m.sender_device = r.device AND m.client_message_id = r.cid""",
            [m.sender_device for m in repeats],
            [m.client_message_id for m in repeats],
        )
        for row in rows:
            key = (row["sender_device"], row["client_message_id"])
            stored[key] = StoredMessage(row["id"], row["sent_at"], True)
    if fresh:
        await _enqueue(conn, fresh, expires_at)
    results = []
    for message in batch:
        original = stored[(message.sender_device, message.client_message_id)]
        is_first = first[(message.sender_device, message.client_message_id)] is message
        if not is_first:
            original = StoredMessage(original.message_id, original.sent_at, True)
        results.append(original)
    return results


async def _enqueue(conn: Executor, messages: list[NewMessage], expires_at: datetime) -> None:
    """Append every envelope to its device's inbox with the next positions."""
    per_device = Counter(device for m in messages for device, _ in m.envelopes)
    devices = sorted(per_device)
    rows = await conn.fetch(
        """WITH locked AS (
               SELECT id FROM devices WHERE id = ANY($1::uuid[]) ORDER BY id FOR UPDATE)
           UPDATE devices d SET inbox_head = d.inbox_head + c.n
           FROM unnest($1::uuid[], $2::bigint[]) AS c(id, n), locked l
           WHERE d.id = c.id AND l.id = c.id
           RETURNING d.id, d.inbox_head""",
        devices,
        [per_device[d] for d in devices],
    )
    next_position = {row["id"]: row["inbox_head"] - per_device[row["id"]] + 1 for row in rows}
    device_ids, positions, message_ids, ciphertexts = [], [], [], []
    for message in messages:
        for device, ciphertext in message.envelopes:
            if device not in next_position:
                continue  # device vanished between the check and the commit
            device_ids.append(device)
            positions.append(next_position[device])
            next_position[device] += 1
            message_ids.append(message.message_id)
            ciphertexts.append(ciphertext)
    await conn.execute(
        """INSERT INTO inbox (device_id, position, message_id, ciphertext, expires_at)
           SELECT d, p, m, c, $5 FROM unnest($1::uuid[], $2::bigint[], $3::uuid[], $4::bytea[])
               AS e(d, p, m, c)""",
        device_ids,
        positions,
        message_ids,
        ciphertexts,
        expires_at,
    )


async def fetch_inbox(
    db: Executor, device_id: UUID, after: int, limit: int
) -> list[InboxEntry]:
    """The device's envelopes after ``after``, in position order."""
    rows = await db.fetch(
        """SELECT i.position, i.message_id, m.sender_official, m.sender_device, m.sent_at,
                  i.ciphertext
           FROM inbox i JOIN messages m ON m.id = i.message_id
           WHERE i.device_id = $1 AND i.position > $2 AND i.expires_at > now()
           ORDER BY i.position LIMIT $3""",
        device_id,
        after,
        limit,
    )
    return [InboxEntry(**row) for row in rows]


async def delete_acked(db: Executor, device_id: UUID, positions: list[int]) -> int:
    """Delete this device's envelopes at ``positions``; others' are untouchable."""
    result = await db.execute(
        "DELETE FROM inbox WHERE device_id = $1 AND position = ANY($2::bigint[])",
        device_id,
        positions,
    )
    return int(result.split()[-1])


async def expire(db: Executor, retention_cutoff: datetime) -> tuple[int, int]:
    """Drop undelivered envelopes past their expiry and old message metadata."""
    envelopes = await db.execute("DELETE FROM inbox WHERE expires_at <= now()")
    messages = await db.execute(
        """DELETE FROM messages m WHERE m.sent_at < $1
           AND NOT EXISTS (SELECT 1 FROM inbox i WHERE i.message_id = m.id)""",
        retention_cutoff,
    )
    return int(envelopes.split()[-1]), int(messages.split()[-1])


async def inbox_depth(db: Executor, device_id: UUID) -> int:
    return int(await db.fetchval("SELECT count(*) FROM inbox WHERE device_id = $1", device_id))


async def find_sent(
    db: Executor, sender_device: UUID, client_message_id: str
) -> StoredMessage | None:
    """The stored answer to an earlier send with this client message id."""
    row = await db.fetchrow(
        "SELECT id, sent_at FROM messages WHERE sender_device = $1 AND client_message_id = $2",
        sender_device,
        client_message_id,
    )
    return StoredMessage(row["id"], row["sent_at"], True) if row else None
