"""Who may do what, decided in one place for every feature.

Every check reads the actor's device, status and roles from the database at
the time of the request (inside its transaction when there is one): a token
or an open connection may be older than a suspension or a revoked role.

The rules:

- ``superadmin`` administers everything.
- ``agency_admin`` administers the agencies of its subtree (all of them
  without a scope), the officials in them, their devices and codes, and the
  subtree's policy; it grants only roles no wider than its own, and acts on
  an official only if every role that official holds is within its power.
- ``auditor`` reads directory records and audit events within its scope
  (everything without a scope); it writes nothing.
- Everyone else administers and audits nothing.

One answer for "you may not see it" and "it does not exist": ``find_or_forbid``
says ``not_found`` only to an actor who could see the thing wherever it was,
and ``forbidden`` to everyone else, so that absence is no oracle.

Used by directory administration, import and search, conversations
(agency admins act on groups of their agencies) and the auditor service.
"""

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TypeVar
from uuid import UUID

from gchat.errors import ServiceError
from gchat.identity.principal import Principal
from gchat.store import audit as audit_store
from gchat.store import devices
from gchat.store import directory as store
from gchat.store.database import Executor
from gchat.store.directory import OfficialRecord, Role
from protocol.errors import ErrorCode

_Found = TypeVar("_Found")


def forbidden(message: str = "not allowed for your role and scope") -> ServiceError:
    return ServiceError(ErrorCode.FORBIDDEN, message)


@dataclass(frozen=True)
class Actor:
    """The actor as the database sees it now."""

    official_id: UUID
    device_id: UUID
    agency_id: UUID
    roles: tuple[Role, ...]

    def role(self, name: str) -> Role | None:
        return next((r for r in self.roles if r.role == name), None)

    @property
    def superadmin(self) -> bool:
        return self.role("superadmin") is not None


async def current(conn: Executor, principal: Principal) -> "Scope":
    """The actor's standing now; refuses a revoked device or an inactive official."""
    device = await devices.get(conn, principal.device_id)
    if device is None or not device.usable or device.official_id != principal.official_id:
        raise forbidden("your device or official account is not active")
    roles = await store.roles_of(conn, principal.official_id)
    return Scope(
        conn, Actor(principal.official_id, principal.device_id, device.agency_id, tuple(roles))
    )


class Scope:
    """What one actor may administer, read and audit, for one transaction."""

    def __init__(self, conn: Executor, actor: Actor) -> None:
        self.conn = conn
        self.actor = actor

    async def _within(self, agency_id: UUID, root: UUID | None) -> bool:
        return root is None or await store.is_within(self.conn, agency_id, root)

    async def administers(self, agency_id: UUID) -> bool:
        if self.actor.superadmin:
            return True
        admin = self.actor.role("agency_admin")
        return admin is not None and await self._within(agency_id, admin.scope_agency_id)

    async def reads(self, agency_id: UUID) -> bool:
        if await self.administers(agency_id):
            return True
        auditor = self.actor.role("auditor")
        return auditor is not None and await self._within(agency_id, auditor.scope_agency_id)

    async def administers_everywhere(self) -> bool:
        if self.actor.superadmin:
            return True
        admin = self.actor.role("agency_admin")
        return admin is not None and admin.scope_agency_id is None

    async def read_root(self) -> UUID | None:
        """The root of what the actor may read (None: everything)."""
        if await self.administers_everywhere():
            return None
        for name in ("agency_admin", "auditor"):
            role = self.actor.role(name)
            if role is not None and role.scope_agency_id is None:
                return None
        admin = self.actor.role("agency_admin")
        if admin is not None:
            return admin.scope_agency_id
        auditor = self.actor.role("auditor")
        if auditor is not None:
            return auditor.scope_agency_id
        raise forbidden()

    async def audited_agencies(self) -> list[UUID] | None:
        """The agencies whose events the actor may audit (None: all); auditors only."""
        auditor = self.actor.role("auditor")
        if auditor is None:
            raise forbidden("auditor role required")
        if auditor.scope_agency_id is None:
            return None
        return await audit_store.agency_subtree(self.conn, auditor.scope_agency_id)

    async def may_grant(self, role: str, scope: UUID | None) -> bool:
        """May the actor hand out ``role`` over ``scope``: never wider than its own."""
        if self.actor.superadmin:
            return True
        admin = self.actor.role("agency_admin")
        if admin is None or role == "superadmin":
            return False
        if role == "official":
            return True
        if scope is None:  # a global role
            return admin.scope_agency_id is None
        return await self._within(scope, admin.scope_agency_id)

    async def outranks(self, target: OfficialRecord) -> bool:
        """Is every role the target holds within the actor's power?"""
        if self.actor.superadmin:
            return True
        for role in target.roles:
            if not await self.may_grant(role.role, role.scope_agency_id):
                return False
        return True

    async def find_or_forbid(
        self,
        found: _Found | None,
        noun: str,
        may: Callable[[_Found], Awaitable[bool]] | None = None,
    ) -> _Found:
        """``found`` if it exists and the actor ``may`` act on it; else a refusal.

        A missing thing is ``not_found`` only to an actor who administers
        everywhere (who could see it wherever it was); to everyone else it
        is ``forbidden``, like a thing outside their scope.
        """
        if found is None:
            if await self.administers_everywhere():
                raise ServiceError(ErrorCode.NOT_FOUND, f"no such {noun}")
            raise forbidden(f"not an admin of that {noun}")
        if may is not None and not await may(found):
            raise forbidden(f"not an admin of that {noun}")
        return found
