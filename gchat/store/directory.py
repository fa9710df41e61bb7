"""Agencies, officials, roles and enrolment codes."""

from dataclasses import dataclass
from datetime import datetime
from uuid import UUID

from gchat.store.database import Executor


@dataclass(frozen=True)
class Official:
    id: UUID
    agency_id: UUID
    name: str
    status: str


@dataclass(frozen=True)
class Role:
    role: str
    scope_agency_id: UUID | None


async def create_agency(
    db: Executor, agency_id: UUID, code: str, name: str, parent_id: UUID | None = None
) -> None:
    await db.execute(
        "INSERT INTO agencies (id, parent_id, code, name) VALUES ($1, $2, $3, $4)",
        agency_id,
        parent_id,
        code,
        name,
    )


async def agency_exists(db: Executor, agency_id: UUID) -> bool:
    query = "SELECT EXISTS (SELECT 1 FROM agencies WHERE id = $1)"
    return bool(await db.fetchval(query, agency_id))


async def is_within(db: Executor, agency_id: UUID, root_id: UUID) -> bool:
    """True if ``agency_id`` is ``root_id`` or one of its descendants."""
    return bool(
        await db.fetchval(
            """WITH RECURSIVE up AS (
                   SELECT id, parent_id FROM agencies WHERE id = $1
                   UNION ALL
                   SELECT a.id, a.parent_id FROM agencies a JOIN up ON a.id = up.parent_id)
               SELECT EXISTS (SELECT 1 FROM up WHERE id = $2)""",
            agency_id,
            root_id,
        )
    )


async def create_official(db: Executor, official_id: UUID, agency_id: UUID, name: str) -> None:
    await db.execute(
        "INSERT INTO officials (id, agency_id, name) VALUES ($1, $2, $3)",
        official_id,
        agency_id,
        name,
    )
    await grant_role(db, official_id, "official", None)


async def get_official(db: Executor, official_id: UUID) -> Official | None:
    row = await db.fetchrow(
        "SELECT id, agency_id, name, status FROM officials WHERE id = $1", official_id
    )
    return Official(**row) if row else None


async def grant_role(db: Executor, official_id: UUID, role: str, scope: UUID | None) -> None:
    await db.execute(
        """INSERT INTO official_roles (official_id, role, scope_agency_id) VALUES ($1, $2, $3)
           ON CONFLICT (official_id, role)
           DO UPDATE SET scope_agency_id = EXCLUDED.scope_agency_id""",
        official_id,
        role,
        scope,
    )


async def roles_of(db: Executor, official_id: UUID) -> list[Role]:
    rows = await db.fetch(
        "SELECT role, scope_agency_id FROM official_roles WHERE official_id = $1 ORDER BY role",
        official_id,
    )
    return [Role(row["role"], row["scope_agency_id"]) for row in rows]


async def insert_code(
    db: Executor, code_hash: bytes, official_id: UUID, issued_by: UUID | None, expires_at: datetime
) -> None:
    await db.execute(
        """INSERT INTO enrolment_codes (code_hash, official_id, issued_by, expires_at)
           VALUES ($1, $2, $3, $4)""",
        code_hash,
        official_id,
        issued_by,
        expires_at,
    )


async def claim_code(db: Executor, code_hash: bytes, device_id: UUID) -> UUID | None:
    """Consume an unused, unexpired code atomically; returns its official.

    The single UPDATE is the whole check, so two devices racing with one code
    cannot both win.
    """
    return await db.fetchval(  # type: ignore[no-any-return]
        """UPDATE enrolment_codes SET used_at = now(), device_id = $2
           WHERE code_hash = $1 AND used_at IS NULL AND expires_at > now()
           RETURNING official_id""",
        code_hash,
        device_id,
    )
