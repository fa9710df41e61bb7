"""Staging of bulk imports: rows arrive chunk by chunk, are applied at once.

Every read here is an index range (the primary key ``(import_id, line)``
or ``(import_id, employee_id, line)``), so staging and applying cost the
same per row at 300,000 rows as at 300.
"""

from collections.abc import Sequence
from dataclasses import dataclass
from uuid import UUID

from gchat.store.database import Executor

#: An import untouched this long is abandoned (its CLI died): its rows are swept.
STALE_AFTER = "1 hour"


@dataclass(frozen=True)
class StagedRow:
    line: int
    employee_id: str | None
    name_th: str | None
    name_en: str | None
    position: str | None
    agency_code: str | None
    email: str | None
    phone: str | None


async def begin(db: Executor, import_id: UUID, actor: UUID) -> None:
    """Start an import (and sweep stale ones: staged rows are personal data)."""
    await db.execute(
        f"DELETE FROM directory_imports WHERE touched_at < now() - interval '{STALE_AFTER}'"  # noqa: S608
    )
    await db.execute(
        "INSERT INTO directory_imports (id, actor_official) VALUES ($1, $2)", import_id, actor
    )


async def owner(db: Executor, import_id: UUID) -> UUID | None:
    return await db.fetchval(  # type: ignore[no-any-return]
        "SELECT actor_official FROM directory_imports WHERE id = $1 FOR UPDATE", import_id
    )


async def stage(db: Executor, import_id: UUID, rows: Sequence[StagedRow]) -> None:
    """Stage rows; a line staged again replaces the earlier one."""
    await db.execute("UPDATE directory_imports SET touched_at = now() WHERE id = $1", import_id)
    await db.execute(
        """INSERT INTO directory_import_rows
               (import_id, line, employee_id, name_th, name_en, position, agency_code, email,
                phone)
           SELECT $1, * FROM unnest($2::int[], $3::text[], $4::text[], $5::text[], $6::text[],
                                    $7::text[], $8::text[], $9::text[])
           ON CONFLICT (import_id, line) DO UPDATE SET
               employee_id = EXCLUDED.employee_id, name_th = EXCLUDED.name_th,
               name_en = EXCLUDED.name_en, position = EXCLUDED.position,
               agency_code = EXCLUDED.agency_code, email = EXCLUDED.email,
               phone = EXCLUDED.phone""",
        import_id,
        [r.line for r in rows],
        [r.employee_id for r in rows],
        [r.name_th for r in rows],
        [r.name_en for r in rows],
        [r.position for r in rows],
        [r.agency_code for r in rows],
        [r.email for r in rows],
        [r.phone for r in rows],
    )


async def staged(
    db: Executor, import_id: UUID, after_line: int = -1, limit: int | None = None
) -> list[StagedRow]:
    """Staged rows after ``after_line``, in line order, at most ``limit`` (keyset paging)."""
    rows = await db.fetch(
        """SELECT line, employee_id, name_th, name_en, position, agency_code, email, phone
           FROM directory_import_rows WHERE import_id = $1 AND line > $2
           ORDER BY line LIMIT $3""",
        import_id,
        after_line,
        limit,
    )
    return [StagedRow(**row) for row in rows]


#: First staged line of each employee id: one index descent per id
#: (``directory_import_rows_employee``), whatever the import's size or its
#: statistics. Why not ``employee_id = ANY($2) GROUP BY``: for a chunk's 500
#: ids the planner preferred reading every row of the import (a filter, not an
#: index condition, on employee_id), with fresh statistics (a sequential scan)
#: as with the empty table's (the import's whole index range): quadratic again,
#: 15 of 22 s of PostgreSQL CPU in a 50,000-row import.
EMPLOYEE_LINES = """SELECT u.employee_id, f.line
                    FROM unnest($2::text[]) AS u(employee_id)
                    CROSS JOIN LATERAL (
                        SELECT r.line FROM directory_import_rows r
                        WHERE r.import_id = $1 AND r.employee_id = u.employee_id
                        ORDER BY r.line LIMIT 1) AS f"""


async def staged_employee_lines(
    db: Executor, import_id: UUID, employee_ids: Sequence[str]
) -> dict[str, int]:
    """First staged line of each of these employee ids in the import."""
    rows = await db.fetch(EMPLOYEE_LINES, import_id, list(employee_ids))
    return {row["employee_id"]: row["line"] for row in rows}


async def discard(db: Executor, import_id: UUID) -> None:
    await db.execute("DELETE FROM directory_imports WHERE id = $1", import_id)
