"""Conversations (direct and group) and their members (0004_groups.sql).

Membership changes run inside the caller's transaction after ``lock``, which
takes the conversation row FOR UPDATE: every change to one conversation is
serialised there, so its sequence numbers are contiguous, and a group send
being committed (which holds the row FOR SHARE) sees membership either
entirely before or entirely after a change.
"""

from dataclasses import dataclass
from uuid import UUID

from gchat.store.database import Executor


@dataclass(frozen=True)
class Conversation:
    id: UUID
    kind: str
    agency_id: UUID
    created_by: UUID
    title: str
    announcement_only: bool
    seq: int
    last_event: bytes | None


@dataclass(frozen=True)
class Member:
    official_id: UUID
    agency_id: UUID
    admin: bool
    joined_seq: int


_COLUMNS = "id, kind, agency_id, created_by, title, announcement_only, seq, last_event"


async def create(
    db: Executor,
    conversation_id: UUID,
    kind: str,
    agency_id: UUID,
    created_by: UUID,
    title: str,
    announcement_only: bool,
    direct_pair: tuple[UUID, UUID] | None = None,
) -> bool:
    """Insert a conversation; False if the direct pair already has one."""
    low, high = sorted(direct_pair) if direct_pair else (None, None)
    inserted = await db.fetchval(
        """INSERT INTO conversations (id, kind, agency_id, created_by, title,
                                      announcement_only, direct_low, direct_high)
           VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
           ON CONFLICT (direct_low, direct_high) DO NOTHING
           RETURNING id""",
        conversation_id,
        kind,
        agency_id,
        created_by,
        title,
        announcement_only,
        low,
        high,
    )
    return inserted is not None


async def find_direct(db: Executor, a: UUID, b: UUID) -> Conversation | None:
    low, high = sorted((a, b))
    row = await db.fetchrow(
        f"SELECT {_COLUMNS} FROM conversations WHERE direct_low = $1 AND direct_high = $2",  # noqa: S608
        low,
        high,
    )
    return Conversation(**row) if row else None


async def get(db: Executor, conversation_id: UUID) -> Conversation | None:
    row = await db.fetchrow(
        f"SELECT {_COLUMNS} FROM conversations WHERE id = $1",  # noqa: S608
        conversation_id,
    )
    return Conversation(**row) if row else None


async def lock(conn: Executor, conversation_id: UUID) -> Conversation | None:
    """The conversation, locked for a membership change until the transaction ends."""
    row = await conn.fetchrow(
        f"SELECT {_COLUMNS} FROM conversations WHERE id = $1 FOR UPDATE",  # noqa: S608
        conversation_id,
    )
    return Conversation(**row) if row else None


async def update(
    conn: Executor,
    conversation_id: UUID,
    seq: int,
    last_event: bytes,
    title: str,
    announcement_only: bool,
) -> None:
    await conn.execute(
        """UPDATE conversations SET seq = $2, last_event = $3, title = $4,
                  announcement_only = $5
           WHERE id = $1""",
        conversation_id,
        seq,
        last_event,
        title,
        announcement_only,
    )


async def members(db: Executor, conversation_id: UUID) -> list[Member]:
    """Members in joining order (then by id), each with their agency."""
    rows = await db.fetch(
        """SELECT m.official_id, o.agency_id, m.admin, m.joined_seq
           FROM conversation_members m JOIN officials o ON o.id = m.official_id
           WHERE m.conversation_id = $1 ORDER BY m.joined_seq, m.official_id""",
        conversation_id,
    )
    return [Member(**row) for row in rows]


async def member(db: Executor, conversation_id: UUID, official_id: UUID) -> Member | None:
    row = await db.fetchrow(
        """SELECT m.official_id, o.agency_id, m.admin, m.joined_seq
           FROM conversation_members m JOIN officials o ON o.id = m.official_id
           WHERE m.conversation_id = $1 AND m.official_id = $2""",
        conversation_id,
        official_id,
    )
    return Member(**row) if row else None


@dataclass(frozen=True)
class Standing:
    """What decides whether an official may post to a conversation now."""

    seq: int
    announcement_only: bool
    member: bool
    admin: bool


async def lock_for_posting(
    conn: Executor, posts: list[tuple[UUID, UUID]]
) -> dict[tuple[UUID, UUID], Standing | None]:
    """Each (conversation, official)'s standing; None if there is no such conversation.

    The conversations are locked FOR SHARE in id order, as membership changes
    lock them, so no change can slip in before the calling batch commits.
    """
    if not posts:
        return {}
    rows = await conn.fetch(
        """SELECT c.id, c.seq, c.announcement_only, m.official_id, m.admin
           FROM conversations c
           LEFT JOIN conversation_members m
             ON m.conversation_id = c.id AND m.official_id = ANY($2::uuid[])
           WHERE c.id = ANY($1::uuid[]) ORDER BY c.id FOR SHARE OF c""",
        sorted({c for c, _ in posts}),
        sorted({o for _, o in posts}),
    )
    found = {row["id"]: (row["seq"], row["announcement_only"]) for row in rows}
    admins = {
        (row["id"], row["official_id"]): row["admin"]
        for row in rows
        if row["official_id"] is not None
    }
    return {
        post: Standing(*found[post[0]], post in admins, admins.get(post, False))
        if post[0] in found
        else None
        for post in posts
    }


async def add_members(
    conn: Executor, conversation_id: UUID, officials: list[UUID], admins: set[UUID], seq: int
) -> None:
    await conn.execute(
        """INSERT INTO conversation_members (conversation_id, official_id, admin, joined_seq)
           SELECT $1, o, o = ANY($3::uuid[]), $4 FROM unnest($2::uuid[]) AS o""",
        conversation_id,
        officials,
        list(admins),
        seq,
    )


async def remove_members(conn: Executor, conversation_id: UUID, officials: list[UUID]) -> None:
    await conn.execute(
        """DELETE FROM conversation_members
           WHERE conversation_id = $1 AND official_id = ANY($2::uuid[])""",
        conversation_id,
        officials,
    )


async def set_admin(conn: Executor, conversation_id: UUID, official_id: UUID, admin: bool) -> None:
    await conn.execute(
        """UPDATE conversation_members SET admin = $3
           WHERE conversation_id = $1 AND official_id = $2""",
        conversation_id,
        official_id,
        admin,
    )


async def officials(db: Executor, official_ids: list[UUID]) -> dict[UUID, tuple[UUID, str]]:
    """official id -> (agency id, status), for the ids that exist."""
    rows = await db.fetch(
        "SELECT id, agency_id, status FROM officials WHERE id = ANY($1::uuid[])", official_ids
    )
    return {row["id"]: (row["agency_id"], row["status"]) for row in rows}


async def top_agencies(db: Executor, agency_ids: list[UUID]) -> dict[UUID, UUID]:
    """agency id -> the root of its tree (the ministry it belongs to)."""
    rows = await db.fetch(
        """WITH RECURSIVE up AS (
               SELECT id AS start, id, parent_id FROM agencies WHERE id = ANY($1::uuid[])
               UNION ALL
               SELECT up.start, a.id, a.parent_id FROM agencies a JOIN up ON a.id = up.parent_id)
           SELECT start, id FROM up WHERE parent_id IS NULL""",
        agency_ids,
    )
    return {row["start"]: row["id"] for row in rows}


async def active_devices(db: Executor, official_ids: list[UUID]) -> list[UUID]:
    rows = await db.fetch(
        """SELECT id FROM devices WHERE official_id = ANY($1::uuid[]) AND status = 'active'
           ORDER BY id""",
        official_ids,
    )
    return [row["id"] for row in rows]
