"""The agency directory: officials, roles, enrolment codes, who administers whom.

Issue-2 minimum: an admin (``agency_admin`` over a subtree, or
``superadmin``) can add officials to agencies in their scope and issue
enrolment codes for them. ``bootstrap`` makes the first superadmin on the
server host, where whoever can run it already owns the database.
"""

import uuid
from datetime import UTC, datetime, timedelta
from uuid import UUID

from gchat import codes
from gchat.errors import ServiceError
from gchat.principal import Principal
from gchat.store import directory
from gchat.store.database import Database, Executor
from protocol.errors import ErrorCode


class Directory:
    def __init__(self, db: Database, code_ttl_seconds: int) -> None:
        self._db = db
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
        return agency_id, official_id, code

    async def may_administer(self, actor: Principal, agency_id: UUID) -> bool:
        """Superadmins administer everything, agency admins their subtree."""
        if actor.role("superadmin"):
            return True
        admin = actor.role("agency_admin")
        if admin is None:
            return False
        if admin.scope_agency_id is None:
            return True
        return await directory.is_within(self._db.pool, agency_id, admin.scope_agency_id)

    async def create_official(
        self, actor: Principal, name: str, agency_id: UUID | None
    ) -> tuple[UUID, UUID]:
        agency = agency_id or actor.agency_id
        if not await directory.agency_exists(self._db.pool, agency):
            raise ServiceError(ErrorCode.NOT_FOUND, "no such agency")
        if not await self.may_administer(actor, agency):
            raise ServiceError(ErrorCode.FORBIDDEN, "not an admin of that agency")
        official_id = uuid.uuid4()
        async with self._db.transaction() as conn:
            await directory.create_official(conn, official_id, agency, name)
        return official_id, agency

    async def issue_code(self, actor: Principal, official_id: UUID) -> tuple[str, datetime]:
        official = await directory.get_official(self._db.pool, official_id)
        if official is None or not await self.may_administer(actor, official.agency_id):
            # One answer for "absent" and "not yours": scope is not an oracle.
            raise ServiceError(ErrorCode.FORBIDDEN, "not an admin of that official")
        if official.status != "active":
            raise ServiceError(ErrorCode.FORBIDDEN, "official is not active")
        code = await self._new_code(self._db.pool, official_id, actor.official_id)
        return code, datetime.now(UTC) + self._code_ttl

    async def _new_code(self, conn: Executor, official_id: UUID, issued_by: UUID | None) -> str:
        code = codes.generate()
        expires = datetime.now(UTC) + self._code_ttl
        await directory.insert_code(conn, codes.code_hash(code), official_id, issued_by, expires)
        return code
