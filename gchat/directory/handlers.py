"""Request handlers of directory administration, import and search.

Each calls ``gchat.directory.administration``, ``gchat.directory.importer``
or ``gchat.directory.service`` as the authenticated principal and builds the
reply frame.
"""

from datetime import UTC, datetime

from gchat.directory.administration import Administration
from gchat.directory.importer import DirectoryImport, RowProblem
from gchat.directory.service import Directory
from gchat.handling import handles
from gchat.identity.principal import Principal
from gchat.store.directory import Agency, CodeRow, DeviceListing, OfficialCard, OfficialRecord
from gchat.store.imports import StagedRow
from gchat.store.policies import Effective, PolicyRow
from protocol import frames as f


def _ms(moment: datetime | None) -> int | None:
    return None if moment is None else f.wire_time(moment)


def agency_info(agency: Agency) -> f.AgencyInfo:
    return f.AgencyInfo(
        id=agency.id,
        parent_id=agency.parent_id,
        code=agency.code,
        name_th=agency.name_th,
        name_en=agency.name_en,
        depth=agency.depth,
    )


def official_info(record: OfficialRecord) -> f.OfficialInfo:
    return f.OfficialInfo(
        id=record.id,
        agency_id=record.agency_id,
        agency_code=record.agency_code,
        name_th=record.name_th,
        name_en=record.name_en,
        position=record.position,
        email=record.email,
        phone=record.phone,
        employee_id=record.employee_id,
        status=record.status,  # type: ignore[arg-type]
        roles=[
            f.RoleInfo(role=r.role, scope_agency_id=r.scope_agency_id)  # type: ignore[arg-type]
            for r in record.roles
        ],
    )


def _device(row: DeviceListing) -> f.DeviceInfo:
    return f.DeviceInfo(
        device_id=row.id,
        name=row.name,
        platform=row.platform,
        status=row.status,  # type: ignore[arg-type]
        enrolled_at=_ms(row.enrolled_at) or 0,
        last_seen_at=_ms(row.last_seen_at),
        revoked_at=_ms(row.revoked_at),
        push=row.push_origin is not None,
        push_origin=row.push_origin,
    )


def _code(row: CodeRow, now: datetime) -> f.CodeInfo:
    return f.CodeInfo(
        code_id=row.id,
        state=row.state(now),  # type: ignore[arg-type]
        issued_by=row.issued_by,
        created_at=_ms(row.created_at) or 0,
        expires_at=_ms(row.expires_at) or 0,
        device_id=row.device_id,
    )


def _card(card: OfficialCard) -> f.OfficialCard:
    return f.OfficialCard(
        official_id=card.id,
        name_th=card.name_th,
        name_en=card.name_en,
        position=card.position,
        agency_id=card.agency_id,
        agency_code=card.agency_code,
        agency_name_th=card.agency_name_th,
        agency_name_en=card.agency_name_en,
        active_devices=card.active_devices,
    )


def _policy(row: PolicyRow | Effective) -> f.PolicyInfo:
    return f.PolicyInfo(
        message_scope=row.message_scope,  # type: ignore[arg-type]
        max_devices=row.max_devices,
        retention_seconds=row.retention_seconds,
        max_attachment_bytes=row.max_attachment_bytes,
        attachment_bytes_per_day=row.attachment_bytes_per_day,
    )


def _errors(problems: list[RowProblem]) -> list[f.RowError]:
    return [
        f.RowError(line=p.line, field=p.field, reason=p.reason, code=p.code, ref_line=p.ref_line)
        for p in problems
    ]


class DirectoryHandlers:
    def __init__(
        self, admin: Administration, importer: DirectoryImport, directory: Directory
    ) -> None:
        self._admin = admin
        self._importer = importer
        self._directory = directory

    @handles(f.CreateAgency)
    async def create_agency(self, actor: Principal, frame: f.CreateAgency) -> f.AgencyReply:
        agency = await self._admin.create_agency(
            actor, frame.code, frame.name_th, frame.name_en, frame.parent_id
        )
        return f.AgencyReply(rid=frame.rid, agency=agency_info(agency))

    @handles(f.UpdateAgency)
    async def update_agency(self, actor: Principal, frame: f.UpdateAgency) -> f.AgencyReply:
        agency = await self._admin.update_agency(
            actor, frame.agency_id, frame.code, frame.name_th, frame.name_en
        )
        return f.AgencyReply(rid=frame.rid, agency=agency_info(agency))

    @handles(f.MoveAgency)
    async def move_agency(self, actor: Principal, frame: f.MoveAgency) -> f.AgencyReply:
        agency = await self._admin.move_agency(actor, frame.agency_id, frame.parent_id)
        return f.AgencyReply(rid=frame.rid, agency=agency_info(agency))

    @handles(f.ListAgencies)
    async def list_agencies(self, actor: Principal, frame: f.ListAgencies) -> f.AgencyList:
        found = await self._admin.list_agencies(actor, frame.root_id)
        return f.AgencyList(rid=frame.rid, agencies=[agency_info(a) for a in found])

    @handles(f.CreateOfficial)
    async def create_official(self, actor: Principal, frame: f.CreateOfficial) -> f.OfficialCreated:
        record = await self._admin.create_official(
            actor,
            frame.agency_id,
            frame.name,
            name_th=frame.name_th,
            name_en=frame.name_en,
            position=frame.position,
            email=frame.email,
            phone=frame.phone,
            employee_id=frame.employee_id,
        )
        return f.OfficialCreated(rid=frame.rid, official_id=record.id, agency_id=record.agency_id)

    @handles(f.UpdateOfficial)
    async def update_official(self, actor: Principal, frame: f.UpdateOfficial) -> f.OfficialReply:
        record = await self._admin.update_official(
            actor,
            frame.official_id,
            name_th=frame.name_th,
            name_en=frame.name_en,
            position=frame.position,
            email=frame.email,
            phone=frame.phone,
            employee_id=frame.employee_id,
        )
        return f.OfficialReply(rid=frame.rid, official=official_info(record))

    @handles(f.MoveOfficial)
    async def move_official(self, actor: Principal, frame: f.MoveOfficial) -> f.OfficialReply:
        record = await self._admin.move_official(actor, frame.official_id, frame.agency_id)
        return f.OfficialReply(rid=frame.rid, official=official_info(record))

    @handles(f.SetOfficialStatus)
    async def set_status(self, actor: Principal, frame: f.SetOfficialStatus) -> f.OfficialReply:
        record = await self._admin.set_status(actor, frame.official_id, frame.status)
        return f.OfficialReply(rid=frame.rid, official=official_info(record))

    @handles(f.GetOfficial)
    async def get_official(self, actor: Principal, frame: f.GetOfficial) -> f.OfficialReply:
        record = await self._admin.get_official(actor, frame.official_id)
        return f.OfficialReply(rid=frame.rid, official=official_info(record))

    @handles(f.ListOfficials)
    async def list_officials(self, actor: Principal, frame: f.ListOfficials) -> f.OfficialList:
        found, next_offset, next_after = await self._admin.list_officials(
            actor,
            frame.agency_id,
            frame.status,
            frame.offset,
            frame.limit,
            frame.after,
            frame.query,
        )
        return f.OfficialList(
            rid=frame.rid,
            officials=[official_info(r) for r in found],
            next_offset=next_offset,
            next_after=next_after,
        )

    @handles(f.GrantRole)
    async def grant_role(self, actor: Principal, frame: f.GrantRole) -> f.OfficialReply:
        record = await self._admin.grant_role(
            actor, frame.official_id, frame.role, frame.scope_agency_id
        )
        return f.OfficialReply(rid=frame.rid, official=official_info(record))

    @handles(f.RevokeRole)
    async def revoke_role(self, actor: Principal, frame: f.RevokeRole) -> f.OfficialReply:
        record = await self._admin.revoke_role(actor, frame.official_id, frame.role)
        return f.OfficialReply(rid=frame.rid, official=official_info(record))

    @handles(f.ListDevices)
    async def list_devices(self, actor: Principal, frame: f.ListDevices) -> f.DeviceList:
        found = await self._admin.list_devices(actor, frame.official_id)
        return f.DeviceList(
            rid=frame.rid, official_id=frame.official_id, devices=[_device(d) for d in found]
        )

    @handles(f.RevokeDevice)
    async def revoke_device(self, actor: Principal, frame: f.RevokeDevice) -> f.DeviceRevoked:
        await self._admin.revoke_device(actor, frame.device_id)
        return f.DeviceRevoked(rid=frame.rid, device_id=frame.device_id)

    @handles(f.IssueCode)
    async def issue_code(self, actor: Principal, frame: f.IssueCode) -> f.CodeIssued:
        _, code, expires = await self._admin.issue_code(actor, frame.official_id)
        return f.CodeIssued(
            rid=frame.rid, official_id=frame.official_id, code=code, expires_at=_ms(expires) or 0
        )

    @handles(f.ListCodes)
    async def list_codes(self, actor: Principal, frame: f.ListCodes) -> f.CodeList:
        found = await self._admin.list_codes(actor, frame.official_id)
        now = datetime.now(UTC)
        return f.CodeList(
            rid=frame.rid, official_id=frame.official_id, codes=[_code(c, now) for c in found]
        )

    @handles(f.ListPendingCodes)
    async def pending_codes(self, actor: Principal, frame: f.ListPendingCodes) -> f.PendingCodes:
        found, next_after = await self._admin.pending_codes(
            actor, frame.agency_id, frame.after, frame.limit
        )
        return f.PendingCodes(
            rid=frame.rid,
            codes=[
                f.PendingCode(
                    code_id=c.id,
                    official_id=c.official_id,
                    name_th=c.name_th,
                    name_en=c.name_en,
                    agency_code=c.agency_code,
                    issued_by=c.issued_by,
                    created_at=_ms(c.created_at) or 0,
                    expires_at=_ms(c.expires_at) or 0,
                )
                for c in found
            ],
            next_after=next_after,
        )

    @handles(f.CancelCode)
    async def cancel_code(self, actor: Principal, frame: f.CancelCode) -> f.CodeCancelled:
        await self._admin.cancel_code(actor, frame.code_id)
        return f.CodeCancelled(rid=frame.rid, code_id=frame.code_id)

    @handles(f.SetPolicy)
    async def set_policy(self, actor: Principal, frame: f.SetPolicy) -> f.PolicyReply:
        p = frame.policy
        row, effective = await self._admin.set_policy(
            actor,
            frame.agency_id,
            PolicyRow(
                frame.agency_id,
                p.message_scope,
                p.max_devices,
                p.retention_seconds,
                max_attachment_bytes=p.max_attachment_bytes,
                attachment_bytes_per_day=p.attachment_bytes_per_day,
            ),
        )
        return f.PolicyReply(
            rid=frame.rid,
            agency_id=frame.agency_id,
            policy=_policy(row),
            effective=_policy(effective) if effective else None,
        )

    @handles(f.GetPolicy)
    async def get_policy(self, actor: Principal, frame: f.GetPolicy) -> f.PolicyReply:
        row, effective = await self._admin.get_policy(actor, frame.agency_id)
        return f.PolicyReply(
            rid=frame.rid,
            agency_id=frame.agency_id,
            policy=_policy(row),
            effective=_policy(effective) if effective else None,
        )

    @handles(f.SearchOfficials)
    async def search(self, actor: Principal, frame: f.SearchOfficials) -> f.SearchResults:
        cards, next_offset = await self._directory.search(
            actor, frame.query, frame.agency_id, frame.offset, frame.limit
        )
        return f.SearchResults(
            rid=frame.rid, results=[_card(c) for c in cards], next_offset=next_offset
        )

    @handles(f.ImportBegin)
    async def import_begin(self, actor: Principal, frame: f.ImportBegin) -> f.ImportStarted:
        return f.ImportStarted(rid=frame.rid, import_id=await self._importer.begin(actor))

    @handles(f.ImportRows)
    async def import_rows(self, actor: Principal, frame: f.ImportRows) -> f.ImportChecked:
        rows = [
            StagedRow(
                r.line,
                r.employee_id,
                r.name_th,
                r.name_en,
                r.position,
                r.agency_code,
                r.email,
                r.phone,
            )
            for r in frame.rows
        ]
        problems = await self._importer.stage(actor, frame.import_id, rows, frame.update)
        return f.ImportChecked(
            rid=frame.rid, import_id=frame.import_id, received=len(rows), errors=_errors(problems)
        )

    @handles(f.ImportApply)
    async def import_apply(self, actor: Principal, frame: f.ImportApply) -> f.ImportResult:
        outcome = await self._importer.apply(actor, frame.import_id, frame.dry_run, frame.update)
        return f.ImportResult(
            rid=frame.rid,
            import_id=frame.import_id,
            dry_run=frame.dry_run,
            applied=outcome.applied,
            rows=outcome.rows,
            created=outcome.created,
            error_count=outcome.error_count,
            errors=_errors(outcome.problems),
            updated=outcome.updated,
            unchanged=outcome.unchanged,
            bad_rows=outcome.bad_rows,
        )

    @handles(f.ImportDiscard)
    async def import_discard(self, actor: Principal, frame: f.ImportDiscard) -> f.ImportDiscarded:
        await self._importer.discard(actor, frame.import_id)
        return f.ImportDiscarded(rid=frame.rid, import_id=frame.import_id)
