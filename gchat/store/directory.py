"""Agencies, officials, roles, enrolment codes, and the directory's search terms.

Agencies and officials carry a Thai and an English name (at least one);
``name`` is a generated column, the Thai name when there is one, else the
English one. Every write that changes a name, position or agency code also
rewrites that row's search terms (see ``gchat.store.terms``), in the same
transaction, so search never sees a half-updated row.
"""

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any
from uuid import UUID

from gchat.store import policies
from gchat.store.database import Executor
from gchat.store.terms import has_thai, prefix_range, terms_of


@dataclass(frozen=True)
class Official:
    """An official's identity and status (enrolment, bootstrap); the admin view is
    ``OfficialRecord``, the search result ``OfficialCard``."""

    id: UUID
    agency_id: UUID
    name: str
    status: str


@dataclass(frozen=True)
class Role:
    role: str
    scope_agency_id: UUID | None


@dataclass(frozen=True)
class Agency:
    id: UUID
    parent_id: UUID | None
    code: str
    name_th: str | None
    name_en: str | None
    depth: int = 0


@dataclass(frozen=True)
class OfficialRecord:
    """Everything the directory holds about an official (admin view)."""

    id: UUID
    agency_id: UUID
    agency_code: str
    name_th: str | None
    name_en: str | None
    position: str | None
    email: str | None
    phone: str | None
    employee_id: str | None
    status: str
    roles: tuple[Role, ...] = ()


@dataclass(frozen=True)
class OfficialCard:
    """What a search result shows: enough to start a conversation."""

    id: UUID
    name_th: str | None
    name_en: str | None
    position: str | None
    agency_id: UUID
    agency_code: str
    agency_name_th: str | None
    agency_name_en: str | None
    active_devices: int


@dataclass(frozen=True)
class NewOfficial:
    id: UUID
    agency_id: UUID
    name_th: str | None
    name_en: str | None
    position: str | None = None
    email: str | None = None
    phone: str | None = None
    employee_id: str | None = None


@dataclass(frozen=True)
class CodeRow:
    id: UUID
    official_id: UUID
    issued_by: UUID | None
    created_at: datetime
    expires_at: datetime
    used_at: datetime | None
    cancelled_at: datetime | None
    device_id: UUID | None

    def state(self, now: datetime) -> str:
        if self.used_at is not None:
            return "used"
        if self.cancelled_at is not None:
            return "cancelled"
        if self.expires_at <= now:
            return "expired"
        return "pending"


@dataclass(frozen=True)
class DeviceListing:
    """A device as an admin lists it (``list_devices``)."""

    id: UUID
    official_id: UUID
    name: str
    platform: str
    status: str
    enrolled_at: datetime
    last_seen_at: datetime | None
    revoked_at: datetime | None
    push_origin: str | None  # the push service's scheme://host[:port], if subscribed


def split_name(name: str | None) -> tuple[str | None, str | None]:
    """(Thai, English) of a name given in one language: Thai if it has Thai script."""
    if not name:
        return None, None
    return (name, None) if has_thai(name) else (None, name)


# --- agencies -------------------------------------------------------------------


async def create_agency(
    db: Executor,
    agency_id: UUID,
    code: str,
    name: str | None = None,
    parent_id: UUID | None = None,
    *,
    name_th: str | None = None,
    name_en: str | None = None,
) -> None:
    """Add an agency. ``name`` fills the Thai or English name by its script."""
    guess_th, guess_en = split_name(name)
    name_th, name_en = name_th or guess_th, name_en or guess_en
    await db.execute(
        "INSERT INTO agencies (id, parent_id, code, name_th, name_en) VALUES ($1, $2, $3, $4, $5)",
        agency_id,
        parent_id,
        code,
        name_th,
        name_en,
    )
    await _set_agency_terms(db, agency_id, (code, name_th, name_en))


async def _set_agency_terms(db: Executor, agency_id: UUID, texts: Iterable[str | None]) -> None:
    await db.execute("DELETE FROM agency_terms WHERE agency_id = $1", agency_id)
    await db.execute(
        """INSERT INTO agency_terms (term, agency_id)
           SELECT t, $2 FROM unnest($1::text[]) AS t""",
        sorted(terms_of(texts)),
        agency_id,
    )


_AGENCY = "SELECT id, parent_id, code, name_th, name_en FROM agencies"


async def get_agency(db: Executor, agency_id: UUID) -> Agency | None:
    row = await db.fetchrow(_AGENCY + " WHERE id = $1", agency_id)
    return Agency(**row) if row else None


async def agencies_by_code(db: Executor, codes: Sequence[str]) -> dict[str, Agency]:
    rows = await db.fetch(_AGENCY + " WHERE code = ANY($1::text[])", list(codes))
    return {row["code"]: Agency(**row) for row in rows}


async def agency_exists(db: Executor, agency_id: UUID) -> bool:
    query = "SELECT EXISTS (SELECT 1 FROM agencies WHERE id = $1)"
    return bool(await db.fetchval(query, agency_id))


async def code_taken(db: Executor, code: str, other_than: UUID | None = None) -> bool:
    query = "SELECT EXISTS (SELECT 1 FROM agencies WHERE code = $1 AND id IS DISTINCT FROM $2)"
    return bool(await db.fetchval(query, code, other_than))


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


async def list_agencies(db: Executor, root_id: UUID | None) -> list[Agency]:
    """The subtree under ``root_id`` (every tree if None), parents before children."""
    rows = await db.fetch(
        """WITH RECURSIVE down AS (
               SELECT id, parent_id, code, name_th, name_en, 0 AS depth, ARRAY[code] AS path
               FROM agencies
               WHERE CASE WHEN $1::uuid IS NULL THEN parent_id IS NULL ELSE id = $1 END
               UNION ALL
               SELECT a.id, a.parent_id, a.code, a.name_th, a.name_en, d.depth + 1, d.path || a.code
               FROM agencies a JOIN down d ON a.parent_id = d.id)
           SELECT id, parent_id, code, name_th, name_en, depth FROM down ORDER BY path""",
        root_id,
    )
    return [Agency(**row) for row in rows]


async def update_agency(
    db: Executor, agency_id: UUID, code: str, name_th: str | None, name_en: str | None
) -> None:
    await db.execute(
        """UPDATE agencies SET code = $2, name_th = $3, name_en = $4, updated_at = now()
           WHERE id = $1""",
        agency_id,
        code,
        name_th,
        name_en,
    )
    await _set_agency_terms(db, agency_id, (code, name_th, name_en))


async def lock_tree(db: Executor) -> None:
    """Serialise moves of agencies (two crossing moves could make a cycle)."""
    await db.execute("SELECT pg_advisory_xact_lock(7163686174)")


async def move_agency(db: Executor, agency_id: UUID, parent_id: UUID | None) -> None:
    await db.execute(
        "UPDATE agencies SET parent_id = $2, updated_at = now() WHERE id = $1", agency_id, parent_id
    )


# --- officials ------------------------------------------------------------------


async def create_official(
    db: Executor,
    official_id: UUID,
    agency_id: UUID,
    name: str | None = None,
    **fields: Any,
) -> None:
    """Add one official with the ``official`` role.

    ``name`` fills the Thai or English name by its script; ``fields`` are the
    other columns of NewOfficial (name_th, name_en, position, ...).
    """
    guess_th, guess_en = split_name(name)
    fields.setdefault("name_th", None)
    fields.setdefault("name_en", None)
    fields["name_th"] = fields["name_th"] or guess_th
    fields["name_en"] = fields["name_en"] or guess_en
    await create_officials(db, [NewOfficial(id=official_id, agency_id=agency_id, **fields)])


async def create_officials(db: Executor, new: Sequence[NewOfficial]) -> None:
    """Add officials with the ``official`` role: three statements for any number."""
    await db.execute(
        """INSERT INTO officials (id, agency_id, name_th, name_en, position, email, phone,
                                  employee_id)
           SELECT * FROM unnest($1::uuid[], $2::uuid[], $3::text[], $4::text[], $5::text[],
                                $6::text[], $7::text[], $8::text[])""",
        [o.id for o in new],
        [o.agency_id for o in new],
        [o.name_th for o in new],
        [o.name_en for o in new],
        [o.position for o in new],
        [o.email for o in new],
        [o.phone for o in new],
        [o.employee_id for o in new],
    )
    await db.execute(
        """INSERT INTO official_roles (official_id, role)
           SELECT id, 'official' FROM unnest($1::uuid[]) AS id""",
        [o.id for o in new],
    )
    await _insert_official_terms(db, new)


async def _insert_official_terms(
    db: Executor, officials: Sequence[NewOfficial], active: bool = True
) -> None:
    """Index the officials' words; each row also carries what search filters
    and sorts by (agency, display name, active), so a search reads only the
    few dense pages of matching terms, not every matching official's row."""
    rows = sorted(
        (term, o.id, o.agency_id, o.name_th or o.name_en or "")
        for o in officials
        for term in terms_of((o.name_th, o.name_en, o.position))
    )  # in index order: fewer btree pages touched at random
    await db.execute(
        """INSERT INTO official_terms (term, official_id, agency_id, name, active)
           SELECT t, i, a, n, $5 FROM unnest($1::text[], $2::uuid[], $3::uuid[], $4::text[])
                AS u(t, i, a, n)""",
        [r[0] for r in rows],
        [r[1] for r in rows],
        [r[2] for r in rows],
        [r[3] for r in rows],
        active,
    )


async def get_official(db: Executor, official_id: UUID) -> Official | None:
    row = await db.fetchrow(
        "SELECT id, agency_id, name, status FROM officials WHERE id = $1", official_id
    )
    return Official(**row) if row else None


# The agency's code is a probe of its primary key per row, not a join: a join
# let the planner (index order pinned, so no hash join) filter every page's
# rows against the whole agencies table, 58 ms a page of 500 at 345 agencies.
_RECORD = """
SELECT o.id, o.agency_id, (SELECT a.code FROM agencies a WHERE a.id = o.agency_id) AS agency_code,
       o.name_th, o.name_en, o.position, o.email, o.phone, o.employee_id, o.status,
       ARRAY(SELECT r.role || ':' || coalesce(r.scope_agency_id::text, '')
             FROM official_roles r WHERE r.official_id = o.id ORDER BY r.role) AS roles
FROM officials o
"""


def _record(row: Any) -> OfficialRecord:
    """A row of ``_RECORD`` (its columns in OfficialRecord's order, roles last).

    Positional, not by name: an export builds 400,000 of these and the
    dict of each row was a third of the node's time for it.
    """
    roles = []
    for text in row[10]:
        role, _, scope = text.partition(":")
        roles.append(Role(role, UUID(scope) if scope else None))
    id_, agency_id, code, name_th, name_en, position, email, phone, employee_id, status = row[:10]
    return OfficialRecord(
        id_,
        agency_id,
        code,
        name_th,
        name_en,
        position,
        email,
        phone,
        employee_id,
        status,
        tuple(roles),
    )


@dataclass(frozen=True)
class OfficialName:
    """An official as others see them named: names and agency code."""

    id: UUID
    name_th: str | None
    name_en: str | None
    agency_code: str


async def names_of(db: Executor, official_ids: Sequence[UUID]) -> list[OfficialName]:
    rows = await db.fetch(
        """SELECT o.id, o.name_th, o.name_en, a.code AS agency_code
           FROM officials o JOIN agencies a ON a.id = o.agency_id
           WHERE o.id = ANY($1::uuid[]) ORDER BY o.id""",
        list(official_ids),
    )
    return [OfficialName(**row) for row in rows]


async def get_official_record(db: Executor, official_id: UUID) -> OfficialRecord | None:
    row = await db.fetchrow(_RECORD + " WHERE o.id = $1", official_id)
    return _record(row) if row else None


async def pin_index_order(conn: Executor, probes: bool = False) -> None:
    """Make the rest of this transaction read pages in index order, never sort.

    Why: with statistics taken while ``officials`` was small (a fresh
    database, autovacuum behind a bulk import) the planner sorted every row
    after the cursor to return one page, so an export became quadratic.
    ``probes``: also read other tables by key, never whole (statistics of a
    small ``agencies`` made each row of a page scan every agency).
    Only valid inside a transaction (SET LOCAL).
    """
    # One round trip. JIT off: the disabled paths' penalty cost would make
    # PostgreSQL JIT-compile every such query (~450 ms) to save microseconds.
    await conn.execute(
        "SET LOCAL enable_sort = off; SET LOCAL enable_bitmapscan = off; SET LOCAL jit = off"
        + ("; SET LOCAL enable_seqscan = off" if probes else "")
    )


def list_officials_sql(keyset: bool) -> str:
    """The page statement: $1 root, $2 status, $3 offset, $4 limit, and with
    ``keyset`` $5 the official to start after, in (name, id) order (also for
    EXPLAIN in tests).

    One statement a page: the cursor's (name, id) is read inside it. The
    subtree test sits under an OR, so PostgreSQL makes it a hashed set built
    once (and never when there is no root) rather than a join.
    """
    after = (
        "AND (o.name, o.id) > (SELECT c.name, c.id FROM officials c WHERE c.id = $5)"
        if keyset
        else ""
    )
    return f"""WITH RECURSIVE down AS (
                 SELECT id FROM agencies WHERE id = $1
                 UNION
                 SELECT a.id FROM agencies a JOIN down d ON a.parent_id = d.id)
              {_RECORD}
              WHERE ($1::uuid IS NULL OR o.agency_id IN (SELECT id FROM down))
                AND ($2::text IS NULL OR o.status = $2) {after}
              ORDER BY o.name, o.id OFFSET $3 LIMIT $4"""  # noqa: S608


async def list_officials(
    db: Executor,
    root_id: UUID | None,
    status: str | None,
    offset: int,
    limit: int,
    after: UUID | None = None,
) -> list[OfficialRecord] | None:
    """Officials of the subtree under ``root_id`` (all if None), by name.

    With ``after`` (keyset paging), the page starts after that official in
    (name, id) order: an index range on ``officials_name``, so every page of
    an export costs the same, where OFFSET re-read every row before it (2.1 s
    at offset 400,000). None if ``after`` is no official. In a transaction
    (the plan is pinned to index order).
    """
    args: list[Any] = [root_id, status, offset, limit]
    if after is not None:
        args.append(after)
    await pin_index_order(db, probes=True)
    rows = await db.fetch(list_officials_sql(keyset=after is not None), *args)
    if not rows and after is not None:  # the end, or a cursor naming no official
        if not await db.fetchval("SELECT EXISTS (SELECT FROM officials WHERE id = $1)", after):
            return None
    return [_record(row) for row in rows]


def search_records_sql(words: int) -> str:
    """The admin search statement: $1 root, $2 status, $3 offset, $4 limit,
    $5 the whole query (an exact employee id), $6/$7 the (name, id) to start
    after, then per word its prefix range; the first word drives (also for
    EXPLAIN in tests and the load test)."""
    # The driving word matched every candidate read off its ranges: probe the others.
    others = "".join(
        " AND " + _holds("o.id", "o.agency_id", 8 + 2 * i, 9 + 2 * i) for i in range(1, words)
    )
    return f"""WITH RECURSIVE down AS (
                 SELECT id FROM agencies WHERE $1::uuid IS NULL OR id = $1
                 UNION
                 SELECT a.id FROM agencies a JOIN down d ON a.parent_id = d.id),
              candidates AS MATERIALIZED (
                 SELECT t.official_id AS id, t.name, true AS worded FROM official_terms t
                 WHERE t.term >= $8 AND t.term < $9 AND t.agency_id IN (SELECT id FROM down)
                   AND (t.name, t.official_id) > ($6, $7::uuid)
                 UNION
                 SELECT m.id, m.name, true FROM agency_terms g
                 JOIN officials m ON m.agency_id = g.agency_id
                 WHERE g.term >= $8 AND g.term < $9 AND g.agency_id IN (SELECT id FROM down)
                   AND (m.name, m.id) > ($6, $7::uuid)
                 UNION
                 SELECT e.id, e.name, false FROM officials e
                 WHERE e.employee_id = $5::text AND e.agency_id IN (SELECT id FROM down)
                   AND (e.name, e.id) > ($6, $7::uuid)),
              found AS MATERIALIZED (
                 SELECT DISTINCT ON (c.name, c.id) c.id, c.name
                 FROM candidates c JOIN officials o ON o.id = c.id
                 WHERE ($2::text IS NULL OR o.status = $2)
                   AND ((c.worded{others}) OR o.employee_id = $5::text)
                 ORDER BY c.name, c.id OFFSET $3 LIMIT $4)
              SELECT o.id, o.agency_id, a.code AS agency_code, o.name_th, o.name_en, o.position,
                     o.email, o.phone, o.employee_id, o.status,
                     ARRAY(SELECT r.role || ':' || coalesce(r.scope_agency_id::text, '')
                           FROM official_roles r WHERE r.official_id = o.id ORDER BY r.role)
                       AS roles
              FROM found f JOIN officials o ON o.id = f.id JOIN agencies a ON a.id = o.agency_id
              ORDER BY f.name, f.id"""  # noqa: S608


async def search_records(
    db: Executor,
    root_id: UUID | None,
    status: str | None,
    words: Sequence[str],
    whole: str,
    offset: int,
    limit: int,
    after: UUID | None = None,
) -> list[OfficialRecord] | None:
    """Officials of the subtree under ``root_id`` (all if None), any status
    unless ``status``, whose names, position or agency (code, names) have a
    term starting with every one of ``words``, or whose employee id is
    ``whole``; by name, paged like :func:`list_officials` (None if ``after``
    is no official).

    The admin's search, unlike :func:`search_officials` not limited to whom
    the caller may message or to active officials. The candidates are read
    off the driving (longest) word's index ranges (``official_terms``, whose
    rows carry the name and agency, so the subtree and the cursor are
    applied there; the members of agencies named by it; the employee id),
    then checked for the other words by index probes and sorted by name: the
    cost follows how many officials the word matches, never where they fall
    in the name order (walking the name index read 66,717 officials to find
    a page of "som" at 100,000, whose matches sort late).
    """
    ordered = sorted(words, key=len, reverse=True)
    ranges = [bound for w in ordered for bound in prefix_range(w)]
    cursor: list[Any] = ["", UUID(int=0)]  # before every name (a name is never empty)
    if after is not None:
        row = await db.fetchrow("SELECT name, id FROM officials WHERE id = $1", after)
        if row is None:
            return None
        cursor = [row["name"], row["id"]]
    sql = search_records_sql(len(ordered))
    rows = await db.fetch(sql, root_id, status, offset, limit, whole or None, *cursor, *ranges)
    return [_record(row) for row in rows]


async def update_official(db: Executor, record: OfficialRecord) -> None:
    """Write names, position and contact (not agency or status) and the terms."""
    await db.execute(
        """UPDATE officials SET name_th = $2, name_en = $3, position = $4, email = $5,
                  phone = $6, employee_id = $7, updated_at = now()
           WHERE id = $1""",
        record.id,
        record.name_th,
        record.name_en,
        record.position,
        record.email,
        record.phone,
        record.employee_id,
    )
    await db.execute("DELETE FROM official_terms WHERE official_id = $1", record.id)
    await _insert_official_terms(
        db,
        [NewOfficial(record.id, record.agency_id, record.name_th, record.name_en, record.position)],
        active=record.status == "active",
    )


async def move_official(db: Executor, official_id: UUID, agency_id: UUID) -> None:
    await db.execute(
        "UPDATE officials SET agency_id = $2, updated_at = now() WHERE id = $1",
        official_id,
        agency_id,
    )
    await db.execute(
        "UPDATE official_terms SET agency_id = $2 WHERE official_id = $1", official_id, agency_id
    )


async def set_status(db: Executor, official_id: UUID, status: str) -> None:
    await db.execute(
        """UPDATE officials SET status = $2, status_changed_at = now(), updated_at = now()
           WHERE id = $1""",
        official_id,
        status,
    )
    await db.execute(
        "UPDATE official_terms SET active = ($2 = 'active') WHERE official_id = $1",
        official_id,
        status,
    )


async def records_by_employee_id(
    db: Executor, employee_ids: Sequence[str]
) -> dict[str, OfficialRecord]:
    """The officials holding these employee ids, locked for an update import."""
    rows = await db.fetch(
        _RECORD + " WHERE o.employee_id = ANY($1::text[]) FOR UPDATE OF o",
        list(employee_ids),
    )
    return {row["employee_id"]: _record(row) for row in rows}


async def employee_id_taken(db: Executor, employee_id: str, other_than: UUID | None) -> bool:
    query = """SELECT EXISTS (SELECT 1 FROM officials
                              WHERE employee_id = $1 AND id IS DISTINCT FROM $2)"""
    return bool(await db.fetchval(query, employee_id, other_than))


# --- roles ------------------------------------------------------------------------


async def grant_role(db: Executor, official_id: UUID, role: str, scope: UUID | None) -> None:
    await db.execute(
        """INSERT INTO official_roles (official_id, role, scope_agency_id) VALUES ($1, $2, $3)
           ON CONFLICT (official_id, role)
           DO UPDATE SET scope_agency_id = EXCLUDED.scope_agency_id, granted_at = now()""",
        official_id,
        role,
        scope,
    )


async def revoke_role(db: Executor, official_id: UUID, role: str) -> bool:
    result = await db.execute(
        "DELETE FROM official_roles WHERE official_id = $1 AND role = $2", official_id, role
    )
    return str(result).endswith(" 1")


async def roles_of(db: Executor, official_id: UUID) -> list[Role]:
    rows = await db.fetch(
        "SELECT role, scope_agency_id FROM official_roles WHERE official_id = $1 ORDER BY role",
        official_id,
    )
    return [Role(row["role"], row["scope_agency_id"]) for row in rows]


async def active_superadmins(db: Executor) -> int:
    """How many active officials hold ``superadmin`` (locks their role rows)."""
    rows = await db.fetch(
        """SELECT r.official_id FROM official_roles r JOIN officials o ON o.id = r.official_id
           WHERE r.role = 'superadmin' AND o.status = 'active' FOR UPDATE OF r"""
    )
    return len(rows)


# --- enrolment codes --------------------------------------------------------------


async def insert_code(
    db: Executor, code_hash: bytes, official_id: UUID, issued_by: UUID | None, expires_at: datetime
) -> UUID:
    return await db.fetchval(  # type: ignore[no-any-return]
        """INSERT INTO enrolment_codes (code_hash, official_id, issued_by, expires_at)
           VALUES ($1, $2, $3, $4) RETURNING id""",
        code_hash,
        official_id,
        issued_by,
        expires_at,
    )


async def claim_code(db: Executor, code_hash: bytes, device_id: UUID) -> UUID | None:
    """Consume an unused, uncancelled, unexpired code atomically; returns its official.

    The single UPDATE is the whole check, so two devices racing with one code
    cannot both win.
    """
    return await db.fetchval(  # type: ignore[no-any-return]
        """UPDATE enrolment_codes SET used_at = now(), device_id = $2
           WHERE code_hash = $1 AND used_at IS NULL AND cancelled_at IS NULL
             AND expires_at > now()
           RETURNING official_id""",
        code_hash,
        device_id,
    )


_CODE = """SELECT id, official_id, issued_by, created_at, expires_at, used_at, cancelled_at,
                  device_id FROM enrolment_codes"""


async def list_codes(db: Executor, official_id: UUID) -> list[CodeRow]:
    rows = await db.fetch(_CODE + " WHERE official_id = $1 ORDER BY created_at", official_id)
    return [CodeRow(**row) for row in rows]


@dataclass(frozen=True)
class PendingCodeRow:
    id: UUID
    official_id: UUID
    name_th: str | None
    name_en: str | None
    agency_code: str
    issued_by: UUID | None
    created_at: datetime
    expires_at: datetime


async def pending_codes(
    db: Executor, root_id: UUID | None, after: UUID | None, limit: int
) -> list[PendingCodeRow] | None:
    """Pending codes of officials under ``root_id`` (all if None), soonest to
    expire first, after the code ``after`` (None if it is no code).

    Walks ``enrolment_codes_pending`` (migration 0014) from the cursor: only
    codes not used or cancelled are in it, expired ones are skipped by the
    range start, so a page costs the same after a rollout of 300,000 letters.
    """
    cursor: list[Any] = [None, UUID(int=0)]
    if after is not None:
        row = await db.fetchrow("SELECT expires_at, id FROM enrolment_codes WHERE id = $1", after)
        if row is None:
            return None
        cursor = [row["expires_at"], row["id"]]
    rows = await db.fetch(
        """WITH RECURSIVE down AS (
             SELECT id FROM agencies WHERE $1::uuid IS NULL OR id = $1
             UNION
             SELECT a.id FROM agencies a JOIN down d ON a.parent_id = d.id)
           SELECT c.id, c.official_id, o.name_th, o.name_en, a.code AS agency_code,
                  c.issued_by, c.created_at, c.expires_at
           FROM enrolment_codes c JOIN officials o ON o.id = c.official_id
                JOIN agencies a ON a.id = o.agency_id
           WHERE c.used_at IS NULL AND c.cancelled_at IS NULL
             AND (c.expires_at, c.id) > (greatest(coalesce($2, now()), now()), $3)
             AND o.agency_id IN (SELECT id FROM down)
           ORDER BY c.expires_at, c.id LIMIT $4""",
        root_id,
        cursor[0],
        cursor[1],
        limit,
    )
    return [PendingCodeRow(**row) for row in rows]


async def get_code(db: Executor, code_id: UUID) -> CodeRow | None:
    row = await db.fetchrow(_CODE + " WHERE id = $1", code_id)
    return CodeRow(**row) if row else None


async def cancel_codes(
    db: Executor, official_id: UUID, by: UUID | None, code_id: UUID | None = None
) -> int:
    """Cancel the official's pending codes (or only ``code_id``); returns how many."""
    result = await db.execute(
        """UPDATE enrolment_codes SET cancelled_at = now(), cancelled_by = $2
           WHERE official_id = $1 AND ($3::uuid IS NULL OR id = $3)
             AND used_at IS NULL AND cancelled_at IS NULL AND expires_at > now()""",
        official_id,
        by,
        code_id,
    )
    return int(str(result).split()[-1])


# --- devices (admin view) ----------------------------------------------------------

# A push subscription shows as its push service's origin only: the endpoint's
# path is the capability to push to the device, and it stays in this table.
# (register_push accepts only https URLs without user info, so the origin is
# everything before the first '/', '?' or '#' after the scheme.)


async def list_devices(db: Executor, official_id: UUID) -> list[DeviceListing]:
    rows = await db.fetch(
        """SELECT d.id, d.official_id, d.name, d.platform, d.status, d.enrolled_at,
                  d.last_seen_at, d.revoked_at,
                  lower(substring(p.endpoint from '^[A-Za-z]+://[^/?#]+')) AS push_origin
           FROM devices d LEFT JOIN push_subscriptions p ON p.device_id = d.id
           WHERE d.official_id = $1 ORDER BY d.enrolled_at""",
        official_id,
    )
    return [DeviceListing(**row) for row in rows]


async def get_device(db: Executor, device_id: UUID) -> DeviceListing | None:
    row = await db.fetchrow(
        """SELECT d.id, d.official_id, d.name, d.platform, d.status, d.enrolled_at,
                  d.last_seen_at, d.revoked_at,
                  lower(substring(p.endpoint from '^[A-Za-z]+://[^/?#]+')) AS push_origin
           FROM devices d LEFT JOIN push_subscriptions p ON p.device_id = d.id
           WHERE d.id = $1""",
        device_id,
    )
    return DeviceListing(**row) if row else None


async def revoke_devices(
    db: Executor, official_id: UUID, device_id: UUID | None = None
) -> list[UUID]:
    """Revoke the official's active devices (or only ``device_id``); returns their ids.

    Their one-time prekeys go too: nobody may start a session with them.
    """
    rows = await db.fetch(
        """UPDATE devices SET status = 'revoked', revoked_at = now()
           WHERE official_id = $1 AND ($2::uuid IS NULL OR id = $2) AND status = 'active'
           RETURNING id""",
        official_id,
        device_id,
    )
    ids = [row["id"] for row in rows]
    if ids:
        await db.execute("DELETE FROM one_time_prekeys WHERE device_id = ANY($1::uuid[])", ids)
    return ids


# --- search -----------------------------------------------------------------------


@dataclass(frozen=True)
class SearchQuery:
    words: list[str] = field(default_factory=list)
    agency_root: UUID | None = None
    offset: int = 0
    limit: int = 20


#: A subtree of at most this many officials is browsed by reading them all
#: (sorted); a bigger one by walking the name index, filtered by agency.
NARROW = 4000

_SUBTREE_SET = """WITH RECURSIVE subtree AS (
                      SELECT id FROM agencies WHERE id = $1
                      UNION
                      SELECT a.id FROM agencies a JOIN subtree s ON a.parent_id = s.id)
                  SELECT o.id FROM officials o
                  WHERE o.agency_id IN (SELECT id FROM subtree) AND o.status = 'active'"""


async def search_officials(
    db: Executor, viewer_official: UUID, query: SearchQuery
) -> list[OfficialCard]:
    """Active officials matching every word (a prefix of a term of theirs or of
    their agency), whom the viewer may message under the policy.

    Order: officials whose own names or position match come first, by the
    term that matched the first (longest) word, then name; then officials
    found through their agency's names, by that term, agency and name. In
    that order the page is read straight off an index range (``official_terms
    (term, name, official_id)``, ``officials (agency_id, name, id)``) and the
    read stops when the page is full, so a prefix that matches 300,000
    officials costs what one that matches 30 does. Each other word is an
    index probe per candidate. Only candidates that the other words or the
    viewer's policy reject lengthen the read. Without words (browsing an
    agency) officials come by name. Must run in a transaction (the plan is
    pinned to index order). Returns up to ``limit + 1`` cards (one more
    tells the caller there is a next page).
    """
    await pin_index_order(db)
    if query.words:
        return await _cards(db, *_search(viewer_official, query))
    narrow = False
    if query.agency_root is not None:
        capped = f"SELECT count(*) FROM ({_SUBTREE_SET} LIMIT {NARROW + 1}) AS c"  # noqa: S608
        narrow = int(await db.fetchval(capped, query.agency_root)) <= NARROW
    return await _cards(db, *_browse(viewer_official, query, narrow))


async def _cards(db: Executor, sql: str, args: list[Any]) -> list[OfficialCard]:
    return [OfficialCard(**row) for row in await db.fetch(sql, *args)]


def _probe(sql: str) -> str:
    """An index probe per row: a LIMIT 1 subquery the planner cannot turn into
    a hash of every match (which reads them all)."""
    return f"coalesce(({sql} LIMIT 1), false)"


def _holds(column: str, agency: str, low: int, high: int) -> str:
    """Official ``column`` (of agency ``agency``) has a term, or its agency has one,
    in [$low, $high)."""
    own = _probe(
        f"SELECT true FROM official_terms w WHERE w.official_id = {column} "  # noqa: S608
        f"AND w.term >= ${low} AND w.term < ${high}"
    )
    via = _probe(
        f"SELECT true FROM agency_terms w WHERE w.agency_id = {agency} "  # noqa: S608
        f"AND w.term >= ${low} AND w.term < ${high}"
    )
    return f"({own} OR {via})"


_CTES = f"""
        WITH RECURSIVE {policies.EFFECTIVE_CTE},
        viewer AS (
            SELECT e.id, e.root_id, e.scope_rank FROM officials me JOIN effective e
            ON e.id = me.agency_id WHERE me.id = $1 AND me.status = 'active'),
        subtree AS (
            SELECT id FROM agencies WHERE id = $4 OR ($4::uuid IS NULL AND parent_id IS NULL)
            UNION
            SELECT a.id FROM agencies a JOIN subtree s ON a.parent_id = s.id)"""  # noqa: S608


def _visible(agency: str) -> str:
    """The viewer may message officials of ``agency``, which is in the subtree asked for."""
    may = policies.MAY_MESSAGE.format(a="v", b="e", a_agency="v.id", b_agency=agency)
    return f"""($4::uuid IS NULL OR {agency} IN (SELECT id FROM subtree))
               AND EXISTS (SELECT 1 FROM effective e CROSS JOIN viewer v
                           WHERE e.id = {agency} AND {may})"""  # noqa: S608


_CARD = """
        SELECT o.id, o.name_th, o.name_en, o.position, o.agency_id, a.code AS agency_code,
               a.name_th AS agency_name_th, a.name_en AS agency_name_en,
               (SELECT count(*) FROM devices d
                WHERE d.official_id = o.id AND d.status = 'active') AS active_devices
        FROM found f JOIN officials o ON o.id = f.id JOIN agencies a ON a.id = o.agency_id
        ORDER BY f.position"""


def search_sql(viewer_official: UUID, query: SearchQuery) -> tuple[str, list[Any]]:
    """The search statement and its arguments (also for EXPLAIN in tests and
    benchmarks); browsing without words as over a big subtree."""
    if query.words:
        return _search(viewer_official, query)
    return _browse(viewer_official, query, narrow=False)


def _search(viewer_official: UUID, query: SearchQuery) -> tuple[str, list[Any]]:
    """Words: two ordered index ranges of the driving (longest) word, the
    other words as probes, merged in order; $5, $6 the driving word's range."""
    words = sorted(query.words, key=len, reverse=True)
    args: list[Any] = [viewer_official, query.offset, query.limit + 1, query.agency_root]
    args.extend(prefix_range(words[0]))
    own_others, via_others = [], []
    for word in words[1:]:
        args.extend(prefix_range(word))
        own_others.append(
            " AND " + _holds("t.official_id", "t.agency_id", len(args) - 1, len(args))
        )
        via_others.append(" AND " + _holds("o.id", "o.agency_id", len(args) - 1, len(args)))
    first_own = _probe(
        "SELECT true FROM official_terms x WHERE x.official_id = t.official_id "
        "AND x.term >= $5 AND x.term < t.term"
    )
    own_match = _probe(
        "SELECT true FROM official_terms x WHERE x.official_id = o.id "
        "AND x.term >= $5 AND x.term < $6"
    )
    first_via = _probe(
        "SELECT true FROM agency_terms x WHERE x.agency_id = g.agency_id "
        "AND x.term >= $5 AND x.term < g.term"
    )
    sql = f"""{_CTES},
        own AS (
            SELECT t.official_id AS id, t.term, t.name FROM official_terms t
            WHERE t.term >= $5 AND t.term < $6 AND t.active
              AND NOT {first_own} AND {_visible("t.agency_id")}{"".join(own_others)}
            ORDER BY t.term, t.name, t.official_id
            LIMIT $2::int + $3::int),
        via AS (
            SELECT o.id, g.term, g.agency_id, o.name FROM agency_terms g
            JOIN officials o ON o.agency_id = g.agency_id AND o.status = 'active'
            WHERE g.term >= $5 AND g.term < $6
              AND NOT {first_via} AND NOT {own_match}
              AND {_visible("g.agency_id")}{"".join(via_others)}
            ORDER BY g.term, g.agency_id, o.name, o.id
            LIMIT $2::int + $3::int),
        found AS (
            SELECT id, row_number() OVER (ORDER BY part, term, agency_id, name, id) AS position
            FROM (SELECT 0 AS part, id, term, NULL::uuid AS agency_id, name FROM own
                  UNION ALL
                  SELECT 1, id, term, agency_id, name FROM via) AS m
            ORDER BY position OFFSET $2 LIMIT $3)
        {_CARD}"""  # noqa: S608
    return sql, args


def _browse(viewer_official: UUID, query: SearchQuery, narrow: bool) -> tuple[str, list[Any]]:
    """No words: the subtree's officials by name (all of them read if ``narrow``,
    else the name index walked and filtered by agency, which stops at the page)."""
    args: list[Any] = [viewer_official, query.offset, query.limit + 1, query.agency_root]
    source = "officials o"
    if narrow:
        source = "(SELECT * FROM officials WHERE agency_id IN (SELECT id FROM subtree)) o"
    sql = f"""{_CTES},
        found AS (
            SELECT o.id, row_number() OVER (ORDER BY o.name, o.id) AS position
            FROM {source}
            WHERE o.status = 'active' AND {_visible("o.agency_id")}
            ORDER BY o.name, o.id OFFSET $2 LIMIT $3)
        {_CARD}"""  # noqa: S608
    return sql, args
