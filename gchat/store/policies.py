"""Directory policy rows and the effective policy of agencies.

A policy row belongs to an agency (or, with ``agency_id`` NULL, is the
global row). NULL fields inherit. The effective value for an agency is the
strictest along its path to the root, starting from the global row (or the
node's configured default where the global row is silent); the node's
configured retention is also a ceiling, because envelopes are stored with
an expiry computed from it. Message scopes are ranked, strictest first:
agency (1) < ministry (2) < all (3).
"""

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from uuid import UUID

from gchat.store.database import Executor

#: The message scopes, strictest first: a scope's rank is its place here
#: (1-based). The store imports nothing of protocol/, so the wire's
#: ``protocol.frames.MessageScope`` and the column's CHECK (migration 0002)
#: are held to these same values by tests/store/test_policies.py.
SCOPES = ("agency", "ministry", "all")


def _rank(column: str) -> str:
    ranks = " ".join(f"WHEN '{name}' THEN {rank}" for rank, name in enumerate(SCOPES, 1))
    return f"(CASE {column} {ranks} END)"


_GLOBAL = "(SELECT * FROM directory_policies WHERE agency_id IS NULL)"

#: A recursive CTE named ``effective(id, root_id, scope_rank)`` over every
#: agency (scope_rank NULL = no restriction, i.e. 'all'). Use after
#: ``WITH RECURSIVE``.
EFFECTIVE_CTE = f"""effective(id, root_id, scope_rank) AS (
    SELECT a.id, a.id, least({_rank("g.message_scope")}, {_rank("p.message_scope")})
    FROM agencies a
    LEFT JOIN directory_policies p ON p.agency_id = a.id
    LEFT JOIN {_GLOBAL} g ON true
    WHERE a.parent_id IS NULL
  UNION ALL
    SELECT a.id, e.root_id, least(e.scope_rank, {_rank("p.message_scope")})
    FROM agencies a
    JOIN effective e ON a.parent_id = e.id
    LEFT JOIN directory_policies p ON p.agency_id = a.id)"""  # noqa: S608

#: A boolean SQL expression: may officials of agencies ``a_agency`` and
#: ``b_agency`` message each other, given rows ``a`` and ``b`` of
#: ``effective``? Both sides' policies must allow it (the stricter wins), so
#: the relation is symmetric: whoever may write to you, you may answer.
MAY_MESSAGE = """(CASE least(coalesce({a}.scope_rank, 3), coalesce({b}.scope_rank, 3))
       WHEN 3 THEN true
       WHEN 2 THEN {a}.root_id = {b}.root_id
       ELSE {a_agency} = {b_agency} END)"""


@dataclass(frozen=True)
class PolicyRow:
    agency_id: UUID | None
    message_scope: str | None
    max_devices: int | None
    retention_seconds: int | None
    updated_at: datetime | None = None
    updated_by: UUID | None = None
    max_attachment_bytes: int | None = None
    attachment_bytes_per_day: int | None = None


@dataclass(frozen=True)
class Effective:
    agency_id: UUID
    root_id: UUID
    message_scope: str
    max_devices: int
    retention_seconds: int
    #: None in the effective policy: no row sets it (the node's default applies).
    max_attachment_bytes: int | None = None
    attachment_bytes_per_day: int | None = None


async def get(db: Executor, agency_id: UUID | None) -> PolicyRow | None:
    row = await db.fetchrow(
        """SELECT agency_id, message_scope, max_devices, retention_seconds, updated_at, updated_by,
                  max_attachment_bytes, attachment_bytes_per_day
           FROM directory_policies WHERE agency_id IS NOT DISTINCT FROM $1""",
        agency_id,
    )
    return PolicyRow(**row) if row else None


async def put(db: Executor, row: PolicyRow, by: UUID | None) -> None:
    """Replace the agency's (or the global) row; all-NULL fields delete it."""
    if (
        row.message_scope is None
        and row.max_devices is None
        and row.retention_seconds is None
        and row.max_attachment_bytes is None
        and row.attachment_bytes_per_day is None
    ):
        await db.execute(
            "DELETE FROM directory_policies WHERE agency_id IS NOT DISTINCT FROM $1",
            row.agency_id,
        )
        return
    await db.execute(
        """INSERT INTO directory_policies
               (agency_id, message_scope, max_devices, retention_seconds, updated_by,
                max_attachment_bytes, attachment_bytes_per_day)
           VALUES ($1, $2, $3, $4, $5, $6, $7)
           ON CONFLICT (agency_id) DO UPDATE SET
               message_scope = EXCLUDED.message_scope, max_devices = EXCLUDED.max_devices,
               retention_seconds = EXCLUDED.retention_seconds, updated_at = now(),
               updated_by = EXCLUDED.updated_by,
               max_attachment_bytes = EXCLUDED.max_attachment_bytes,
               attachment_bytes_per_day = EXCLUDED.attachment_bytes_per_day""",
        row.agency_id,
        row.message_scope,
        row.max_devices,
        row.retention_seconds,
        by,
        row.max_attachment_bytes,
        row.attachment_bytes_per_day,
    )


_UP = f"""
WITH RECURSIVE up(start, id, parent_id, scope_rank, max_devices, retention, max_file, per_day)
AS (
    SELECT a.id, a.id, a.parent_id, {_rank("p.message_scope")}, p.max_devices,
           p.retention_seconds, p.max_attachment_bytes, p.attachment_bytes_per_day
    FROM agencies a LEFT JOIN directory_policies p ON p.agency_id = a.id
    WHERE a.id = ANY($1::uuid[])
  UNION ALL
    SELECT up.start, a.id, a.parent_id, {_rank("p.message_scope")}, p.max_devices,
           p.retention_seconds, p.max_attachment_bytes, p.attachment_bytes_per_day
    FROM up JOIN agencies a ON a.id = up.parent_id
    LEFT JOIN directory_policies p ON p.agency_id = a.id),
chain AS (
    SELECT start, min(scope_rank) AS scope_rank, min(max_devices) AS max_devices,
           min(retention) AS retention, min(max_file) AS max_file, min(per_day) AS per_day,
           (array_agg(id) FILTER (WHERE parent_id IS NULL))[1] AS root_id
    FROM up GROUP BY start)
SELECT c.start AS agency_id, c.root_id,
       least({_rank("g.message_scope")}, c.scope_rank) AS scope_rank,
       least(coalesce(g.max_devices, $2), c.max_devices) AS max_devices,
       least($3, g.retention_seconds, c.retention) AS retention_seconds,
       least(g.max_attachment_bytes, c.max_file) AS max_attachment_bytes,
       least(g.attachment_bytes_per_day, c.per_day) AS attachment_bytes_per_day
FROM chain c LEFT JOIN {_GLOBAL} g ON true
"""  # noqa: S608 (constant SQL fragments, values are $n parameters)


def _effective(row: Any) -> Effective:
    rank = row["scope_rank"] or 3
    return Effective(
        agency_id=row["agency_id"],
        root_id=row["root_id"],
        message_scope=SCOPES[rank - 1],
        max_devices=row["max_devices"],
        retention_seconds=row["retention_seconds"],
        max_attachment_bytes=row["max_attachment_bytes"],
        attachment_bytes_per_day=row["attachment_bytes_per_day"],
    )


async def effective(
    db: Executor, agency_ids: list[UUID], default_max_devices: int, default_retention: int
) -> dict[UUID, Effective]:
    """The effective policy of each agency (walking up from each, a few index lookups)."""
    rows = await db.fetch(_UP, agency_ids, default_max_devices, default_retention)
    return {row["agency_id"]: _effective(row) for row in rows}


@dataclass(frozen=True)
class SendStanding:
    """An official as the messaging policy sees them: status, ministry, message
    scope, and active devices (a send must name exactly those)."""

    official_id: UUID
    agency_id: UUID
    status: str
    root_id: UUID
    scope_rank: int
    #: ``policy_epoch`` when this was read: root_id and scope_rank hold as
    #: long as it has not moved (migration 0016).
    epoch: int
    active_devices: frozenset[UUID] = frozenset()


def _standings_query(officials: str) -> str:
    """The standings of the officials in the ``uuid[]`` parameter ``officials``
    (``$n``): rows (id, agency_id, status, root_id, scope_rank, epoch, active_devices)."""
    return f"""WITH RECURSIVE o AS (
                SELECT id, agency_id, status FROM officials WHERE id = ANY({officials}::uuid[])),
            up(start, id, parent_id, scope_rank) AS (
                SELECT a.id, a.id, a.parent_id, {_rank("p.message_scope")}
                FROM agencies a LEFT JOIN directory_policies p ON p.agency_id = a.id
                WHERE a.id IN (SELECT agency_id FROM o)
              UNION ALL
                SELECT up.start, a.id, a.parent_id, {_rank("p.message_scope")}
                FROM up JOIN agencies a ON a.id = up.parent_id
                LEFT JOIN directory_policies p ON p.agency_id = a.id),
            chain AS (
                SELECT start, min(scope_rank) AS scope_rank,
                       (array_agg(id) FILTER (WHERE parent_id IS NULL))[1] AS root_id
                FROM up GROUP BY start)
            SELECT o.id, o.agency_id, o.status, c.root_id,
                   coalesce(least({_rank("g.message_scope")}, c.scope_rank), 3) AS scope_rank,
                   (SELECT e.epoch FROM policy_epoch e WHERE e.one) AS epoch,
                   ARRAY(SELECT d.id FROM devices d
                         WHERE d.official_id = o.id AND d.status = 'active') AS active_devices
            FROM o JOIN chain c ON c.start = o.agency_id LEFT JOIN {_GLOBAL} g ON true"""  # noqa: S608


async def send_standings(db: Executor, official_ids: list[UUID]) -> dict[UUID, SendStanding]:
    """Status, agency, effective message scope and active devices of these
    officials: one query (a send's whole check reads nothing else).

    Run it pinned (on a connection of ``Database.pinned``): its plan is made
    once per connection, index scans only.
    """
    rows = await db.fetch(_standings_query("$1"), official_ids)
    return {
        row["id"]: SendStanding(
            row["id"],
            row["agency_id"],
            row["status"],
            row["root_id"],
            row["scope_rank"],
            row["epoch"],
            frozenset(row["active_devices"]),
        )
        for row in rows
    }


def unchanged_cte(first: int) -> str:
    """A CTE ``unchanged(ok)``: do the officials' standings still read as given?

    For a statement that writes only what a check decided from standings
    read before it (``send_standings``), as its own transaction: it reads
    them again in its own snapshot and writes nothing unless they are the
    same, so the decision holds for the write as if both had run in one
    transaction (``messages.store_batch``). Each official's status and
    agency, and the active devices of them all, are compared as they are;
    root and scope, which only the agency tree and the policies decide, by
    ``policy_epoch`` (migration 0016): walking the tree again for them was
    about a quarter of PostgreSQL's CPU per lone send. Each official is
    looked up by its id alone (a join on agency and status too could be
    planned on the agency's index, every official of the agency read). The
    active devices are compared as one set, sorted here: a device never
    changes hands (nothing updates ``devices.official_id``), so the same
    devices are the same devices of each official. The standings are the
    parameters ``$first`` to ``$first+4`` (:func:`standings_parameters`);
    with none, ``ok`` is true.
    """
    ids, agencies, statuses, epochs, devices = (f"${first + i}" for i in range(5))
    epoch = "(SELECT p.epoch FROM policy_epoch p WHERE p.one)"
    return f"""unchanged AS (
    SELECT (SELECT coalesce(bool_and(coalesce(
                       (SELECT o.agency_id = x.agency_id AND o.status = x.status
                        FROM officials o WHERE o.id = x.id), false)), true)
            FROM unnest({ids}::uuid[], {agencies}::uuid[], string_to_array({statuses}, ','))
                 AS x(id, agency_id, status))
       AND (SELECT coalesce(array_agg(d.id ORDER BY d.id), '{{}}')
            FROM devices d WHERE d.official_id = ANY({ids}::uuid[]) AND d.status = 'active')
           = (SELECT coalesce(array_agg(g.id ORDER BY g.id), '{{}}')
              FROM unnest({devices}::uuid[]) AS g(id))
       AND NOT EXISTS (SELECT 1 FROM unnest({epochs}::bigint[]) AS e(epoch)
                       WHERE e.epoch IS DISTINCT FROM {epoch})
       AS ok)"""  # noqa: S608


def standings_parameters(standings: Mapping[UUID, SendStanding]) -> list[Any]:
    """The parameters of :func:`unchanged_cte` for these standings: each
    epoch once, as all the statement asks is that none moved; the statuses
    as one text (``a,b,...``; a status is a word) and the devices in any
    order, since asyncpg encodes each element of an array parameter with a
    few ``collections.abc`` checks (a text element cost the node 0.29 us,
    docs/PERFORMANCE.md)."""
    rows = list(standings.values())
    return [
        [s.official_id for s in rows],
        [s.agency_id for s in rows],
        ",".join([s.status for s in rows]),
        list({s.epoch for s in rows}),
        [d for s in rows for d in s.active_devices],
    ]


def may_message(a: SendStanding, b: SendStanding) -> bool:
    """The same rule as MAY_MESSAGE, for two parties already loaded."""
    rank = min(a.scope_rank, b.scope_rank)
    if rank >= 3:
        return True
    if rank == 2:
        return a.root_id == b.root_id
    return a.agency_id == b.agency_id


async def expire_by_policy(db: Executor, default_retention: int) -> int:
    """Delete undelivered envelopes older than their recipient's effective retention.

    Only agencies whose retention is shorter than the node's matter (the
    node's own expiry handles the rest), so with no such policy this is one
    cheap query.
    """
    if not await db.fetchval(
        "SELECT EXISTS (SELECT 1 FROM directory_policies WHERE retention_seconds < $1)",
        default_retention,
    ):
        return 0
    result = await db.execute(
        f"""WITH RECURSIVE eff(id, retention) AS (
                SELECT a.id, least(g.retention_seconds, p.retention_seconds)
                FROM agencies a LEFT JOIN directory_policies p ON p.agency_id = a.id
                LEFT JOIN {_GLOBAL} g ON true
                WHERE a.parent_id IS NULL
              UNION ALL
                SELECT a.id, least(e.retention, p.retention_seconds)
                FROM agencies a JOIN eff e ON a.parent_id = e.id
                LEFT JOIN directory_policies p ON p.agency_id = a.id)
            DELETE FROM inbox i
            USING devices d, officials o, eff e, messages m
            WHERE d.id = i.device_id AND o.id = d.official_id AND e.id = o.agency_id
              AND m.id = i.message_id AND e.retention < $1
              AND m.sent_at < now() - make_interval(secs => e.retention)""",  # noqa: S608
        default_retention,
    )
    return int(str(result).split()[-1])
