"""Directory administration: agencies, officials, roles, devices, codes, policy.

Every operation runs as the authenticated actor, whose standing is read
again at the start of the operation's transaction; who administers or
reads what (superadmin, agency admin over a subtree, auditor read-only) is
decided in ``gchat.directory.authz``. The rules only administration adds:
nobody changes their own status or roles, the last active superadmin cannot
be suspended, retired or demoted, and a retired official stays retired.

A refused operation changes nothing: every check happens before the first
write, inside the transaction. Each successful write records one audit
event (metadata: ids, codes, which fields changed; never names or contact
details) in the same transaction. Suspending or retiring an official, or
revoking a device, then closes the affected connections on every node
(``gchat.identity.revocation``), after the commit.
"""

import re
import uuid
from collections.abc import Sequence
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import get_args
from uuid import UUID

from gchat.audit.log import AuditEvent, AuditLog
from gchat.directory import authz
from gchat.directory.authz import Scope, forbidden
from gchat.errors import ServiceError
from gchat.identity import codes
from gchat.identity.principal import Principal
from gchat.identity.revocation import Revocations
from gchat.store import devices, policies, terms
from gchat.store import directory as store
from gchat.store.database import Database, Executor
from gchat.store.directory import (
    Agency,
    CodeRow,
    DeviceListing,
    NewOfficial,
    OfficialRecord,
    PendingCodeRow,
)
from gchat.store.policies import Effective, PolicyRow
from gchat.store.terms import has_thai
from protocol import frames, limits, text
from protocol.errors import ErrorCode

#: From the protocol, the one source of these names.
ROLES: tuple[str, ...] = get_args(frames.RoleName)
STATUSES: tuple[str, ...] = get_args(frames.OfficialStatus)
_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
_PHONE = re.compile(r"^\+?[0-9][0-9 ()-]{2,31}$")
_EMPLOYEE_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_./-]{0,63}$")
_AGENCY_CODE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,31}$")


def invalid(message: str) -> ServiceError:
    return ServiceError(ErrorCode.INVALID_FIELD, message)


class TextRefused(ValueError):
    """Why a field's text is unacceptable: a stable ``code`` (an import
    problem's, PROTOCOL.md "Import problems") and an English sentence."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


def check_text(field: str, value: str | None, *, thai: bool = False) -> str | None:
    """Trimmed text or None; the reason it is unacceptable as a TextRefused."""
    if value is None:
        return None
    value = value.strip()
    if not value:
        return None
    if len(value) > limits.MAX_TEXT:
        raise TextRefused("too_long", f"{field} is longer than {limits.MAX_TEXT} characters")
    try:  # the protocol's one text rule (import rows reach here unchecked)
        value = text.clean(value, display=True)
    except ValueError as error:
        raise TextRefused("bad_text", f"{field} {error}") from None
    if field == "email" and not _EMAIL.match(value):
        raise TextRefused("not_email", "email is not an address")
    if field == "phone" and not _PHONE.match(value):
        raise TextRefused("not_phone", "phone is not a phone number")
    if field == "employee_id" and not _EMPLOYEE_ID.match(value):
        raise TextRefused(
            "bad_employee_id",
            "employee_id may hold only letters, digits and _ . / - (at most 64)",
        )
    if thai and not has_thai(value):
        raise TextRefused("no_thai", f"{field} has no Thai characters")
    return value


def _checked(field: str, value: str | None, *, thai: bool = False) -> str | None:
    try:
        return check_text(field, value, thai=thai)
    except ValueError as error:
        raise invalid(str(error)) from None


def _diff(before: object, after: object, names: Sequence[str]) -> list[str]:
    return [n for n in names if getattr(before, n) != getattr(after, n)]


class Administration:
    def __init__(
        self,
        db: Database,
        audit: AuditLog,
        revocations: Revocations,
        code_ttl_seconds: int,
        default_max_devices: int,
        default_retention_seconds: int,
    ) -> None:
        self._db = db
        self._audit = audit
        self._revocations = revocations
        self._code_ttl = timedelta(seconds=code_ttl_seconds)
        self._default_max_devices = default_max_devices
        self._default_retention = default_retention_seconds

    # --- the actor ------------------------------------------------------------

    def _event(self, scope: Scope, kind: str, **fields: object) -> AuditEvent:
        return AuditEvent(
            kind,
            actor_official=scope.actor.official_id,
            actor_device=scope.actor.device_id,
            **fields,  # type: ignore[arg-type]
        )

    async def _target(self, scope: Scope, official_id: UUID, *, write: bool) -> OfficialRecord:
        """The official, if the actor may administer (or read) them."""

        async def may(record: OfficialRecord) -> bool:
            if write:
                return await scope.administers(record.agency_id) and await scope.outranks(record)
            return await scope.reads(record.agency_id)

        record = await store.get_official_record(scope.conn, official_id)
        return await scope.find_or_forbid(record, "official", may)

    async def _auditor_read(
        self, scope: Scope, request: str, agency_id: UUID | None, officials: Sequence[UUID]
    ) -> None:
        """Log a read of directory records that only the auditor role allowed.

        Auditors' reads are themselves audited (``audit.directory_read``,
        with every official read), so that access transparency shows an
        official whose record an auditor opened; an admin reading what it
        administers is doing its job and is not logged.
        """
        if not officials or scope.actor.role("auditor") is None:
            return
        if agency_id is None:
            if await scope.administers_everywhere():
                return
        elif await scope.administers(agency_id):
            return
        await self._audit.record(
            scope.conn,
            self._event(
                scope,
                "audit.directory_read",
                agency_id=agency_id,
                details={"request": request, "queried_officials": sorted(set(officials), key=str)},
            ),
        )

    async def _agency(self, scope: Scope, agency_id: UUID, *, write: bool) -> Agency:
        """The agency, if the actor may administer (or read) it."""
        may = scope.administers if write else scope.reads
        agency = await store.get_agency(scope.conn, agency_id)
        return await scope.find_or_forbid(agency, "agency", lambda a: may(a.id))

    async def _read_root(self, scope: Scope, agency_id: UUID | None) -> UUID | None:
        """Where a listing starts: ``agency_id`` if the actor may read it (else
        the refusal ``find_or_forbid`` gives), or with None the root of all the
        actor may read (None: everything)."""
        if agency_id is None:
            return await scope.read_root()
        return (await self._agency(scope, agency_id, write=False)).id

    # --- agencies ---------------------------------------------------------------

    async def create_agency(
        self,
        principal: Principal,
        code: str,
        name_th: str | None,
        name_en: str | None,
        parent_id: UUID | None,
    ) -> Agency:
        name_th = _checked("name_th", name_th, thai=True)
        name_en = _checked("name_en", name_en)
        if not _AGENCY_CODE.match(code):
            raise invalid("agency code: letters, digits and _ . - (at most 32)")
        async with self._db.transaction() as conn:
            scope = await authz.current(conn, principal)
            if parent_id is None:
                if not await scope.administers_everywhere():
                    raise forbidden("only a superadmin creates top-level agencies")
            else:
                await self._agency(scope, parent_id, write=True)
            if name_th is None and name_en is None:
                raise invalid("an agency needs a Thai or an English name")
            if await store.code_taken(conn, code):
                raise ServiceError(ErrorCode.CONFLICT, f"agency code {code} is taken")
            agency_id = uuid.uuid4()
            await store.create_agency(
                conn, agency_id, code, None, parent_id, name_th=name_th, name_en=name_en
            )
            await self._audit.record(
                conn,
                self._event(
                    scope,
                    "admin.agency_created",
                    agency_id=agency_id,
                    details={"code": code, "parent_agency": parent_id},
                ),
            )
            agency = await store.get_agency(conn, agency_id)
        assert agency is not None
        return agency

    async def update_agency(
        self,
        principal: Principal,
        agency_id: UUID,
        code: str | None,
        name_th: str | None,
        name_en: str | None,
    ) -> Agency:
        if code is not None and not _AGENCY_CODE.match(code):
            raise invalid("agency code: letters, digits and _ . - (at most 32)")
        async with self._db.transaction() as conn:
            scope = await authz.current(conn, principal)
            before = await self._agency(scope, agency_id, write=True)
            after = replace(
                before,
                code=code if code is not None else before.code,
                name_th=_checked("name_th", name_th, thai=True)
                if name_th is not None
                else before.name_th,
                name_en=_checked("name_en", name_en) if name_en is not None else before.name_en,
            )
            if after.name_th is None and after.name_en is None:
                raise invalid("an agency needs a Thai or an English name")
            if after.code != before.code and await store.code_taken(conn, after.code, agency_id):
                raise ServiceError(ErrorCode.CONFLICT, f"agency code {after.code} is taken")
            changed = _diff(before, after, ("code", "name_th", "name_en"))
            if changed:
                await store.update_agency(conn, agency_id, after.code, after.name_th, after.name_en)
                await self._audit.record(
                    conn,
                    self._event(
                        scope,
                        "admin.agency_updated",
                        agency_id=agency_id,
                        details={"code": after.code, "fields": changed},
                    ),
                )
        return after

    async def move_agency(
        self, principal: Principal, agency_id: UUID, parent_id: UUID | None
    ) -> Agency:
        async with self._db.transaction() as conn:
            await store.lock_tree(conn)
            scope = await authz.current(conn, principal)
            agency = await self._agency(scope, agency_id, write=True)
            if parent_id is None:
                if not await scope.administers_everywhere():
                    raise forbidden("only a superadmin makes an agency top-level")
            else:
                await self._agency(scope, parent_id, write=True)
                if await store.is_within(conn, parent_id, agency_id):
                    raise invalid("an agency cannot move under itself or its own sub-agency")
            admin = scope.actor.role("agency_admin")
            if (
                not scope.actor.superadmin
                and admin is not None
                and admin.scope_agency_id == agency_id
            ):
                raise forbidden("an agency admin cannot move the root of its own scope")
            if agency.parent_id != parent_id:
                await store.move_agency(conn, agency_id, parent_id)
                await self._audit.record(
                    conn,
                    self._event(
                        scope,
                        "admin.agency_moved",
                        agency_id=agency_id,
                        details={
                            "code": agency.code,
                            "from_agency": agency.parent_id,
                            "to_agency": parent_id,
                        },
                    ),
                )
        return replace(agency, parent_id=parent_id)

    async def list_agencies(self, principal: Principal, root_id: UUID | None) -> list[Agency]:
        async with self._db.transaction() as conn:
            scope = await authz.current(conn, principal)
            root_id = await self._read_root(scope, root_id)
            return await store.list_agencies(conn, root_id)

    # --- officials ----------------------------------------------------------------

    async def create_official(
        self,
        principal: Principal,
        agency_id: UUID | None,
        name: str | None,
        *,
        name_th: str | None = None,
        name_en: str | None = None,
        position: str | None = None,
        email: str | None = None,
        phone: str | None = None,
        employee_id: str | None = None,
    ) -> OfficialRecord:
        guess_th, guess_en = store.split_name(name.strip() if name else None)
        new = NewOfficial(
            id=uuid.uuid4(),
            agency_id=agency_id or principal.agency_id,  # re-read below
            name_th=_checked("name_th", name_th or guess_th, thai=True),
            name_en=_checked("name_en", name_en or guess_en),
            position=_checked("position", position),
            email=_checked("email", email),
            phone=_checked("phone", phone),
            employee_id=_checked("employee_id", employee_id),
        )
        if new.name_th is None and new.name_en is None:
            raise invalid("an official needs a Thai or an English name")
        async with self._db.transaction() as conn:
            scope = await authz.current(conn, principal)
            if agency_id is None:  # the admin's own agency, as it is now
                new = replace(new, agency_id=scope.actor.agency_id)
            await self._agency(scope, new.agency_id, write=True)
            if new.employee_id and await store.employee_id_taken(conn, new.employee_id, None):
                raise ServiceError(ErrorCode.CONFLICT, "employee_id is already in the directory")
            await store.create_officials(conn, [new])
            await self._audit.record(
                conn,
                self._event(
                    scope,
                    "admin.official_created",
                    subject_official=new.id,
                    agency_id=new.agency_id,
                ),
            )
            record = await store.get_official_record(conn, new.id)
        assert record is not None
        return record

    async def get_official(self, principal: Principal, official_id: UUID) -> OfficialRecord:
        async with self._db.transaction() as conn:
            scope = await authz.current(conn, principal)
            record = await self._target(scope, official_id, write=False)
            await self._auditor_read(scope, "get_official", record.agency_id, [record.id])
            return record

    async def list_officials(
        self,
        principal: Principal,
        agency_id: UUID | None,
        status: str | None,
        offset: int,
        limit: int,
        after: UUID | None = None,
        query: str = "",
    ) -> tuple[list[OfficialRecord], int | None, UUID | None]:
        """A page, the next offset and the next keyset cursor (None: no more).

        With ``query``: only officials whose names, position or agency have
        a term starting with every word, or whose employee id is the query
        (``store.search_records``), searched on the node, not in the browser.
        """
        words = terms.words(query)
        if len(words) > limits.MAX_SEARCH_WORDS:
            raise invalid(f"at most {limits.MAX_SEARCH_WORDS} words")
        async with self._db.transaction() as conn:
            scope = await authz.current(conn, principal)
            root = await self._read_root(scope, agency_id)
            if words:
                found = await store.search_records(
                    conn, root, status, words, query.strip(), offset, limit + 1, after
                )
            else:
                found = await store.list_officials(conn, root, status, offset, limit + 1, after)
            if found is not None:
                shown = [r.id for r in found[:limit]]
                await self._auditor_read(scope, "list_officials", root, shown)
        if found is None:
            raise ServiceError(ErrorCode.NOT_FOUND, "no such official to page after")
        if len(found) <= limit:
            return found, None, None
        return found[:limit], offset + limit, found[limit - 1].id

    async def update_official(
        self, principal: Principal, official_id: UUID, **fields: str | None
    ) -> OfficialRecord:
        """Change the given fields ("" clears one; a name cannot be cleared to none)."""
        async with self._db.transaction() as conn:
            scope = await authz.current(conn, principal)
            before = await self._target(scope, official_id, write=True)
            values = {}
            for name, value in fields.items():
                if value is not None:
                    values[name] = _checked(name, value, thai=name == "name_th")
            after = replace(before, **values)  # type: ignore[arg-type]
            if after.name_th is None and after.name_en is None:
                raise invalid("an official needs a Thai or an English name")
            if (
                after.employee_id
                and after.employee_id != before.employee_id
                and await store.employee_id_taken(conn, after.employee_id, official_id)
            ):
                raise ServiceError(ErrorCode.CONFLICT, "employee_id is already in the directory")
            changed = _diff(before, after, list(values))
            if changed:
                await store.update_official(conn, after)
                await self._audit.record(
                    conn,
                    self._event(
                        scope,
                        "admin.official_updated",
                        subject_official=official_id,
                        agency_id=after.agency_id,
                        details={"fields": changed},
                    ),
                )
        return after

    async def move_official(
        self, principal: Principal, official_id: UUID, agency_id: UUID
    ) -> OfficialRecord:
        async with self._db.transaction() as conn:
            scope = await authz.current(conn, principal)
            before = await self._target(scope, official_id, write=True)
            destination = await self._agency(scope, agency_id, write=True)
            if before.agency_id != agency_id:
                await store.move_official(conn, official_id, agency_id)
                await self._audit.record(
                    conn,
                    self._event(
                        scope,
                        "admin.official_moved",
                        subject_official=official_id,
                        agency_id=agency_id,
                        details={"from_agency": before.agency_id, "to_agency": agency_id},
                    ),
                )
        return replace(before, agency_id=agency_id, agency_code=destination.code)

    async def set_status(
        self, principal: Principal, official_id: UUID, status: str
    ) -> OfficialRecord:
        """Suspend, reinstate or retire. Retired is final."""
        if status not in STATUSES:
            raise invalid("status must be active, suspended or retired")
        closed: list[UUID] = []
        async with self._db.transaction() as conn:
            await devices.lock_official(conn, official_id)
            scope = await authz.current(conn, principal)
            before = await self._target(scope, official_id, write=True)
            if official_id == scope.actor.official_id:
                raise forbidden("you cannot change your own status")
            if before.status == status:
                return before
            if before.status == "retired":
                raise forbidden("a retired official cannot be reinstated; create a new one")
            if (
                status != "active"
                and any(r.role == "superadmin" for r in before.roles)
                and await store.active_superadmins(conn) <= 1
            ):
                raise forbidden("the last active superadmin cannot be suspended or retired")
            await store.set_status(conn, official_id, status)
            details: dict[str, object] = {"from_status": before.status}
            if status == "retired":
                closed = await store.revoke_devices(conn, official_id)
                cancelled = await store.cancel_codes(conn, official_id, scope.actor.official_id)
                details |= {"revoked_devices": closed, "cancelled_codes": cancelled}
            elif status == "suspended":
                closed = sorted((await devices.active_ids(conn, [official_id]))[official_id])
                details |= {"closed_devices": closed}
            kind = {
                "active": "admin.official_reinstated",
                "suspended": "admin.official_suspended",
                "retired": "admin.official_retired",
            }[status]
            await self._audit.record(
                conn,
                self._event(
                    scope,
                    kind,
                    subject_official=official_id,
                    agency_id=before.agency_id,
                    details=details,
                ),
            )
        await self._revocations.devices_revoked(closed)
        return replace(before, status=status)

    # --- roles ------------------------------------------------------------------------

    async def grant_role(
        self, principal: Principal, official_id: UUID, role: str, scope_agency_id: UUID | None
    ) -> OfficialRecord:
        if role not in ROLES:
            raise invalid(f"role must be one of {', '.join(ROLES)}")
        if role in ("official", "superadmin") and scope_agency_id is not None:
            raise invalid(f"{role} has no scope")
        async with self._db.transaction() as conn:
            scope = await authz.current(conn, principal)
            target = await self._target(scope, official_id, write=True)
            if official_id == scope.actor.official_id:
                raise forbidden("you cannot change your own roles")
            if scope_agency_id is not None and not await store.agency_exists(conn, scope_agency_id):
                raise ServiceError(ErrorCode.NOT_FOUND, "no such agency")
            if not await scope.may_grant(role, scope_agency_id):
                raise forbidden("you cannot grant a role wider than your own")
            if target.status != "active":
                raise forbidden("roles are granted to active officials only")
            await store.grant_role(conn, official_id, role, scope_agency_id)
            await self._audit.record(
                conn,
                self._event(
                    scope,
                    "admin.role_granted",
                    subject_official=official_id,
                    agency_id=target.agency_id,
                    details={"role": role, "scope_agency": scope_agency_id},
                ),
            )
            record = await store.get_official_record(conn, official_id)
        assert record is not None
        return record

    async def revoke_role(
        self, principal: Principal, official_id: UUID, role: str
    ) -> OfficialRecord:
        if role not in ROLES:
            raise invalid(f"role must be one of {', '.join(ROLES)}")
        if role == "official":
            raise invalid("the official role is not revoked; suspend or retire instead")
        async with self._db.transaction() as conn:
            scope = await authz.current(conn, principal)
            target = await self._target(scope, official_id, write=True)
            if official_id == scope.actor.official_id:
                raise forbidden("you cannot change your own roles")
            held = next((r for r in target.roles if r.role == role), None)
            if held is None:
                return target
            if (
                role == "superadmin"
                and target.status == "active"
                and await store.active_superadmins(conn) <= 1
            ):
                raise forbidden("the last active superadmin cannot be demoted")
            await store.revoke_role(conn, official_id, role)
            await self._audit.record(
                conn,
                self._event(
                    scope,
                    "admin.role_revoked",
                    subject_official=official_id,
                    agency_id=target.agency_id,
                    details={"role": role, "scope_agency": held.scope_agency_id},
                ),
            )
            record = await store.get_official_record(conn, official_id)
        assert record is not None
        return record

    # --- devices --------------------------------------------------------------------------

    async def list_devices(self, principal: Principal, official_id: UUID) -> list[DeviceListing]:
        async with self._db.transaction() as conn:
            scope = await authz.current(conn, principal)
            record = await self._target(scope, official_id, write=False)
            await self._auditor_read(scope, "list_devices", record.agency_id, [official_id])
            return await store.list_devices(conn, official_id)

    async def revoke_device(self, principal: Principal, device_id: UUID) -> None:
        async with self._db.transaction() as conn:
            scope = await authz.current(conn, principal)
            device = await scope.find_or_forbid(await store.get_device(conn, device_id), "device")
            target = await self._target(scope, device.official_id, write=True)
            if device.status != "active":
                return
            revoked = await store.revoke_devices(conn, device.official_id, device_id)
            await self._audit.record(
                conn,
                self._event(
                    scope,
                    "admin.device_revoked",
                    subject_official=device.official_id,
                    subject_device=device_id,
                    agency_id=target.agency_id,
                ),
            )
        await self._revocations.devices_revoked(revoked)

    # --- enrolment codes ---------------------------------------------------------------------

    async def issue_code(
        self, principal: Principal, official_id: UUID
    ) -> tuple[UUID, str, datetime]:
        async with self._db.transaction() as conn:
            scope = await authz.current(conn, principal)
            target = await self._target(scope, official_id, write=True)
            if target.status != "active":
                raise forbidden("official is not active")
            code = codes.generate()
            expires = datetime.now(UTC) + self._code_ttl
            code_id = await store.insert_code(
                conn, codes.code_hash(code), official_id, scope.actor.official_id, expires
            )
            await self._audit.record(
                conn,
                self._event(
                    scope,
                    "admin.code_issued",
                    subject_official=official_id,
                    agency_id=target.agency_id,
                    details={"code_id": code_id},
                ),
            )
        return code_id, code, expires

    async def list_codes(self, principal: Principal, official_id: UUID) -> list[CodeRow]:
        async with self._db.transaction() as conn:
            scope = await authz.current(conn, principal)
            record = await self._target(scope, official_id, write=False)
            await self._auditor_read(scope, "list_codes", record.agency_id, [official_id])
            return await store.list_codes(conn, official_id)

    async def pending_codes(
        self, principal: Principal, agency_id: UUID | None, after: UUID | None, limit: int
    ) -> tuple[list[PendingCodeRow], UUID | None]:
        """A page of the subtree's pending codes and the cursor of the next (None: no more)."""
        async with self._db.transaction() as conn:
            scope = await authz.current(conn, principal)
            root = await self._read_root(scope, agency_id)
            found = await store.pending_codes(conn, root, after, limit + 1)
            if found is None:
                raise ServiceError(ErrorCode.NOT_FOUND, "no such code to page after")
            page = found[:limit]
            await self._auditor_read(
                scope, "list_pending_codes", root, [c.official_id for c in page]
            )
        return page, (page[-1].id if len(found) > limit else None)

    async def cancel_code(self, principal: Principal, code_id: UUID) -> None:
        async with self._db.transaction() as conn:
            scope = await authz.current(conn, principal)
            code = await scope.find_or_forbid(await store.get_code(conn, code_id), "code")
            target = await self._target(scope, code.official_id, write=True)
            if code.state(datetime.now(UTC)) != "pending":
                raise ServiceError(
                    ErrorCode.CONFLICT, f"code is {code.state(datetime.now(UTC))}, not pending"
                )
            await store.cancel_codes(conn, code.official_id, scope.actor.official_id, code_id)
            await self._audit.record(
                conn,
                self._event(
                    scope,
                    "admin.code_cancelled",
                    subject_official=code.official_id,
                    agency_id=target.agency_id,
                    details={"code_id": code_id},
                ),
            )

    # --- policy -------------------------------------------------------------------------------

    async def set_policy(
        self, principal: Principal, agency_id: UUID | None, row: PolicyRow
    ) -> tuple[PolicyRow, Effective | None]:
        scopes = get_args(frames.MessageScope)
        if row.message_scope is not None and row.message_scope not in scopes:
            raise invalid(f"message_scope must be one of {', '.join(scopes)}")
        async with self._db.transaction() as conn:
            scope = await authz.current(conn, principal)
            if agency_id is None:
                if not scope.actor.superadmin:
                    raise forbidden("only a superadmin sets the global policy")
            else:
                await self._agency(scope, agency_id, write=True)
            row = replace(row, agency_id=agency_id)
            await policies.put(conn, row, scope.actor.official_id)
            await self._audit.record(
                conn,
                self._event(
                    scope,
                    "admin.policy_set",
                    agency_id=agency_id,
                    details={
                        "global": agency_id is None,
                        "message_scope": row.message_scope,
                        "max_devices": row.max_devices,
                        "retention_seconds": row.retention_seconds,
                        "max_attachment_bytes": row.max_attachment_bytes,
                        "attachment_bytes_per_day": row.attachment_bytes_per_day,
                    },
                ),
            )
            return await self._policy(conn, agency_id)

    async def get_policy(
        self, principal: Principal, agency_id: UUID | None
    ) -> tuple[PolicyRow, Effective | None]:
        async with self._db.transaction() as conn:
            scope = await authz.current(conn, principal)
            if agency_id is None:
                await scope.read_root()  # any admin or auditor may read the global row
            else:
                await self._agency(scope, agency_id, write=False)
            return await self._policy(conn, agency_id)

    async def _policy(
        self, conn: Executor, agency_id: UUID | None
    ) -> tuple[PolicyRow, Effective | None]:
        row = await policies.get(conn, agency_id) or PolicyRow(agency_id, None, None, None)
        if agency_id is None:
            return row, None
        found = await policies.effective(
            conn, [agency_id], self._default_max_devices, self._default_retention
        )
        return row, found.get(agency_id)
