"""The agency directory: officials, roles, enrolment codes, who administers whom.

``bootstrap`` makes the first superadmin on the server host, where whoever
can run it already owns the database; ``search`` is the directory look-up
every active official may use from a usable device (``authz.current``),
filtered by messaging policy and rate-limited per device (each search is a
database query any official can repeat). The admin operations are in
``gchat.directory.administration``, who may do what in
``gchat.directory.authz``.
"""

import uuid
from datetime import UTC, datetime, timedelta
from uuid import UUID

from gchat.audit.log import AuditEvent, AuditLog
from gchat.directory import authz
from gchat.errors import ServiceError
from gchat.identity import codes
from gchat.identity.principal import Principal
from gchat.runtime.ratelimit import Limits, LocalRateLimiter, RateLimiter
from gchat.store import directory, terms
from gchat.store.database import Database, Executor
from gchat.store.directory import OfficialCard, SearchQuery
from protocol import limits
from protocol.errors import ErrorCode


class Directory:
    def __init__(
        self,
        db: Database,
        code_ttl_seconds: int,
        audit: AuditLog | None = None,
        limiter: RateLimiter | None = None,
    ) -> None:
        self._db = db
        self._limiter = limiter if limiter is not None else LocalRateLimiter()
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

    async def search(
        self, actor: Principal, query: str, agency_id: UUID | None, offset: int, limit: int
    ) -> tuple[list[OfficialCard], int | None]:
        """Officials the actor may message whose names, position or agency start
        with every word of ``query``; (page, next offset or None)."""
        await self._limiter.check(Limits.SEARCHES, str(actor.device_id))
        words = terms.words(query)
        if len(words) > limits.MAX_SEARCH_WORDS:
            raise ServiceError(ErrorCode.INVALID_FIELD, f"at most {limits.MAX_SEARCH_WORDS} words")
        await authz.current(self._db.pool, actor)  # a revoked device searches nothing
        async with self._db.transaction() as conn:  # the plan is pinned per transaction
            cards = await directory.search_officials(
                conn, actor.official_id, SearchQuery(words, agency_id, offset, limit)
            )
        more = len(cards) > limit
        return cards[:limit], (offset + limit if more else None)

    async def _new_code(self, conn: Executor, official_id: UUID, issued_by: UUID | None) -> str:
        code = codes.generate()
        expires = datetime.now(UTC) + self._code_ttl
        await directory.insert_code(conn, codes.code_hash(code), official_id, issued_by, expires)
        return code
