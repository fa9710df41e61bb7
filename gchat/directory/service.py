"""The agency directory: officials, roles, enrolment codes, who administers whom.

``bootstrap`` makes the first superadmin on the server host, where whoever
can run it already owns the database; ``may_administer`` answers whether an
actor administers an agency (for other services); ``search`` is the
directory look-up every official may use, filtered by messaging policy.
The admin operations themselves are in ``gchat.directory.administration``.
"""

import uuid
from datetime import UTC, datetime, timedelta
from uuid import UUID

from gchat.audit.log import AuditEvent, AuditLog
from gchat.errors import ServiceError
from gchat.identity import codes
from gchat.identity.principal import Principal
from gchat.store import directory, terms
from gchat.store.database import Database, Executor
from gchat.store.directory import OfficialCard, SearchQuery
from protocol import limits
from protocol.errors import ErrorCode


class Directory:
    def __init__(
        self, db: Database, code_ttl_seconds: int, audit: AuditLog | None = None
    ) -> None:
        self._db = db
        self._audit = audit if audit is not None else AuditLog(enabled=False)
        self._code_ttl = timedelta(seconds=code_ttl_seconds)

    async def bootstrap(
        self, agency_code: str, agency_name: str, admin_name: str
    ) -> tuple[UUID, UUID, str]:
        """Create the first agency and superadmin; return (agency, official, code)."""
        agency_id, official_id = uuid.uuid4(), uuid.uuid4()
        async with self._db.transaction() as conn:
            await directory.create_agency(conn, agency_id, agency_code, agency_name)
            await directory.create_official(conn, official_id, agency_id, admin_name)
            await directory.grant_role(conn, official_id, "superadmin", None)
            code = await self._new_code(conn, official_id, None)
            await self._audit.record(
                conn,
                AuditEvent(
                    "admin.bootstrap",
                    subject_official=official_id,
                    agency_id=agency_id,
                    details={"agency_code": agency_code, "role": "superadmin", "via": "host"},
                ),
            )
        return agency_id, official_id, code

    async def may_administer(self, actor: Principal, agency_id: UUID) -> bool:
        """Superadmins administer everything, agency admins their subtree.

        Roles are read again: the principal's may predate a revoked role.
        """
        roles = {r.role: r for r in await directory.roles_of(self._db.pool, actor.official_id)}
        if "superadmin" in roles:
            return True
        admin = roles.get("agency_admin")
        if admin is None:
            return False
        if admin.scope_agency_id is None:
            return True
        return await directory.is_within(self._db.pool, agency_id, admin.scope_agency_id)

    async def search(
        self, actor: Principal, query: str, agency_id: UUID | None, offset: int, limit: int
    ) -> tuple[list[OfficialCard], int | None]:
        """Officials the actor may message whose names, position or agency start
        with every word of ``query``; (page, next offset or None)."""
        words = terms.words(query)
        if len(words) > limits.MAX_SEARCH_WORDS:
            raise ServiceError(
                ErrorCode.INVALID_FIELD, f"at most {limits.MAX_SEARCH_WORDS} words"
            )
        cards = await directory.search_officials(
            self._db.pool, actor.official_id, SearchQuery(words, agency_id, offset, limit)
        )
        more = len(cards) > limit
        return cards[:limit], (offset + limit if more else None)

    async def _new_code(self, conn: Executor, official_id: UUID, issued_by: UUID | None) -> str:
        code = codes.generate()
        expires = datetime.now(UTC) + self._code_ttl
        await directory.insert_code(conn, codes.code_hash(code), official_id, issued_by, expires)
        return code
