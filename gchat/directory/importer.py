"""Bulk import of officials: stage chunk by chunk, check, then all or nothing.

An import is the actor's own: ``begin`` opens it, ``stage`` adds rows (at
most ``limits.MAX_IMPORT_ROWS`` a frame) and answers with the problems it can
already see in them, and ``apply`` checks every staged row again against the
directory as it is now. A dry run stops there and reports; a real apply
creates every official in one transaction, with one INSERT per chunk of rows
for each table, or, if any row is bad, changes nothing. Staged rows are
deleted when the import is applied or discarded.

Row rules: ``employee_id`` is required, well-formed and new (in the
directory and in the file); a Thai or an English name (``name_th`` must be
in Thai script); ``agency_code`` names an agency the actor administers;
email and phone, when present, look like ones; nothing over 200 characters
or holding control characters.

An update import (``update``) syncs the directory with an HR file: a row
whose ``employee_id`` is already in the directory sets that official's
names, position, contact and agency to the row's (an empty cell clears a
field) instead of being refused, if the actor administers the official's
agency and the official is not retired. Rows that change nothing are
counted, not written. Why: ministries re-send the whole HR file when
people are renamed, promoted or transferred; the same file, exported and
edited, imports again.
"""

import asyncio
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from uuid import UUID

import asyncpg

from gchat.audit.log import AuditEvent, AuditLog
from gchat.directory import authz
from gchat.directory.administration import Administration, TextRefused, check_text
from gchat.directory.authz import Scope, forbidden
from gchat.errors import ServiceError
from gchat.identity.principal import Principal
from gchat.store import directory as store
from gchat.store import imports
from gchat.store.database import Database, Executor
from gchat.store.directory import Agency, NewOfficial, OfficialRecord
from gchat.store.imports import StagedRow
from protocol.errors import ErrorCode

#: Rows per INSERT when applying.
APPLY_CHUNK = 2000
#: Rows checked between yields to the chunk being written meanwhile.
_YIELD_EVERY = 100
#: Problems reported in full by ``apply`` (the count is always exact).
MAX_REPORTED = 200
_FIELDS = ("employee_id", "name_th", "name_en", "position", "agency_code", "email", "phone")
#: What an update import may change (besides the agency).
_UPDATED = ("name_th", "name_en", "position", "email", "phone")


@dataclass(frozen=True)
class RowProblem:
    """A row's fault: ``code`` is stable (the app words it in Thai or English),
    ``reason`` the node's English sentence, ``ref_line`` the other line a
    repeat refers to."""

    line: int
    field: str
    reason: str
    code: str
    ref_line: int | None = None


@dataclass(frozen=True)
class Change:
    """An existing official as the directory has it and as the row wants it."""

    before: OfficialRecord
    after: OfficialRecord

    def fields(self) -> list[str]:
        return [n for n in _UPDATED if getattr(self.before, n) != getattr(self.after, n)]

    @property
    def moved(self) -> bool:
        return self.before.agency_id != self.after.agency_id


@dataclass(frozen=True)
class Outcome:
    rows: int
    created: int
    problems: list[RowProblem]
    error_count: int
    applied: bool
    updated: int = 0
    unchanged: int = 0
    bad_rows: int = 0


class _Checker:
    """The row rules, against a snapshot of the directory."""

    def __init__(
        self,
        agencies: dict[str, Agency],
        allowed: set[UUID] | None,
        existing: dict[str, OfficialRecord],
        earlier: dict[str, int],
        update: bool,
    ) -> None:
        self.agencies = agencies
        self.allowed = allowed
        self.existing = existing
        self.earlier = earlier  # employee id -> first line that has it
        self.update = update

    def check(self, row: StagedRow) -> tuple[list[RowProblem], NewOfficial | Change | None]:
        problems: list[RowProblem] = []
        values: dict[str, str | None] = {}
        for name in _FIELDS:
            try:
                values[name] = check_text(name, getattr(row, name), thai=name == "name_th")
            except TextRefused as error:
                problems.append(RowProblem(row.line, name, str(error), error.code))
                values[name] = None
        employee_id = values["employee_id"]
        if employee_id is None and not any(p.field == "employee_id" for p in problems):
            problems.append(
                RowProblem(row.line, "employee_id", "employee_id is missing", "missing")
            )
        if employee_id is not None:
            first = self.earlier.setdefault(employee_id, row.line)
            if first != row.line:
                problems.append(
                    RowProblem(
                        row.line,
                        "employee_id",
                        f"employee_id {employee_id} repeats line {first}",
                        "repeated",
                        first,
                    )
                )
            elif employee_id in self.existing and not self.update:
                problems.append(
                    RowProblem(
                        row.line,
                        "employee_id",
                        f"employee_id {employee_id} is already in the "
                        "directory (import --update changes officials)",
                        "exists",
                    )
                )
            elif employee_id in self.existing:
                record = self.existing[employee_id]
                if self.allowed is not None and record.agency_id not in self.allowed:
                    problems.append(
                        RowProblem(
                            row.line,
                            "employee_id",
                            f"employee_id {employee_id} belongs to an official outside your scope",
                            "outside_scope",
                        )
                    )
                elif record.status == "retired":
                    problems.append(
                        RowProblem(
                            row.line,
                            "employee_id",
                            f"employee_id {employee_id} belongs to a retired official",
                            "retired",
                        )
                    )
        if (
            values["name_th"] is None
            and values["name_en"] is None
            and not any(p.field in ("name_th", "name_en") for p in problems)
        ):
            problems.append(
                RowProblem(row.line, "name_th", "neither a Thai nor an English name", "no_name")
            )
        agency = None
        code = values["agency_code"]
        if code is None:
            if not any(p.field == "agency_code" for p in problems):
                problems.append(
                    RowProblem(row.line, "agency_code", "agency_code is missing", "missing")
                )
        else:
            agency = self.agencies.get(code)
            if agency is None:
                problems.append(
                    RowProblem(
                        row.line, "agency_code", f"no agency with code {code}", "unknown_agency"
                    )
                )
            elif self.allowed is not None and agency.id not in self.allowed:
                problems.append(
                    RowProblem(
                        row.line,
                        "agency_code",
                        f"agency {code} is outside your scope",
                        "outside_scope",
                    )
                )
        if problems or agency is None:
            return problems, None
        if employee_id is not None and employee_id in self.existing:
            before = self.existing[employee_id]
            after = replace(
                before,
                agency_id=agency.id,
                agency_code=agency.code,
                name_th=values["name_th"],
                name_en=values["name_en"],
                position=values["position"],
                email=values["email"],
                phone=values["phone"],
            )
            return [], Change(before, after)
        return [], NewOfficial(
            id=uuid.uuid4(),
            agency_id=agency.id,
            name_th=values["name_th"],
            name_en=values["name_en"],
            position=values["position"],
            email=values["email"],
            phone=values["phone"],
            employee_id=employee_id,
        )


@dataclass(frozen=True)
class _Batch:
    """A checked chunk: the officials it creates and the changes it makes."""

    new: list[NewOfficial]
    changes: list[Change]


class _Refused(Exception):
    """A real apply found problems: roll back, then report them."""

    def __init__(self, outcome: Outcome) -> None:
        super().__init__("import refused")
        self.outcome = outcome


class DirectoryImport:
    def __init__(self, db: Database, audit: AuditLog, administration: Administration) -> None:
        self._db = db
        self._audit = audit
        self._admin = administration

    async def _importer(self, conn: Executor, principal: Principal) -> Scope:
        scope = await authz.current(conn, principal)
        if not scope.actor.superadmin and scope.actor.role("agency_admin") is None:
            raise forbidden("only admins import officials")
        return scope

    async def _own(self, conn: Executor, principal: Principal, import_id: UUID) -> Scope:
        scope = await self._importer(conn, principal)
        if await imports.owner(conn, import_id) != scope.actor.official_id:
            raise ServiceError(ErrorCode.NOT_FOUND, "no such import of yours")
        return scope

    async def _allowed(self, scope: Scope) -> set[UUID] | None:
        """The agencies the actor may import into (None: everywhere)."""
        if await scope.administers_everywhere():
            return None
        admin = scope.actor.role("agency_admin")
        assert admin is not None and admin.scope_agency_id is not None
        return {a.id for a in await store.list_agencies(scope.conn, admin.scope_agency_id)}

    async def _checker(
        self,
        scope: Scope,
        rows: Sequence[StagedRow],
        earlier: dict[str, int],
        update: bool,
        allowed: set[UUID] | None,
        agencies: dict[str, Agency],
    ) -> _Checker:
        """A checker for these rows; ``agencies`` caches agencies by code across chunks."""
        conn = scope.conn
        codes = {r.agency_code.strip() for r in rows if r.agency_code} - set(agencies)
        codes.discard("")
        agencies.update(await store.agencies_by_code(conn, sorted(codes)))
        ids = sorted({r.employee_id.strip() for r in rows if r.employee_id})
        existing = await store.records_by_employee_id(conn, ids)
        return _Checker(agencies, allowed, existing, earlier, update)

    async def begin(self, principal: Principal) -> UUID:
        import_id = uuid.uuid4()
        async with self._db.transaction() as conn:
            scope = await self._importer(conn, principal)
            await imports.begin(conn, import_id, scope.actor.official_id)
        return import_id

    async def stage(
        self,
        principal: Principal,
        import_id: UUID,
        rows: Sequence[StagedRow],
        update: bool = False,
    ) -> list[RowProblem]:
        """Stage rows; the problems visible so far (apply checks everything again)."""
        if len({r.line for r in rows}) != len(rows):
            raise ServiceError(ErrorCode.INVALID_FIELD, "a line number appears twice")
        async with self._db.transaction() as conn:
            scope = await self._own(conn, principal, import_id)
            ids = sorted({r.employee_id.strip() for r in rows if r.employee_id})
            earlier = await imports.staged_employee_lines(conn, import_id, ids)
            checker = await self._checker(
                scope, rows, earlier, update, await self._allowed(scope), {}
            )
            problems: list[RowProblem] = []
            for row in sorted(rows, key=lambda r: r.line):
                problems.extend(checker.check(row)[0])
            await imports.stage(conn, import_id, rows)
        return problems

    async def apply(
        self, principal: Principal, import_id: UUID, dry_run: bool, update: bool = False
    ) -> Outcome:
        """Check every staged row, chunk by chunk, and (not a dry run) write as it goes.

        Memory is two chunks of rows (one checked while the one before is
        written) plus each employee id seen (to find repeats), not the whole
        import.
        A problem anywhere rolls the whole transaction back. A real apply that
        fails deletes the staged rows (they are personal data, and the run is over).
        """
        try:
            async with self._db.transaction() as conn:
                outcome = await self._apply(conn, principal, import_id, dry_run, update)
                if not outcome.applied and not dry_run:
                    raise _Refused(outcome)
        except _Refused as refused:
            await self._forget(import_id)
            return refused.outcome
        except asyncpg.UniqueViolationError:
            await self._forget(import_id)
            raise ServiceError(
                ErrorCode.CONFLICT, "the directory changed during the import; run it again"
            ) from None
        if outcome.applied:
            await self._db.analyze("officials", "official_terms", "official_roles")
        return outcome

    async def _forget(self, import_id: UUID) -> None:
        async with self._db.transaction() as conn:
            await imports.discard(conn, import_id)

    async def _apply(
        self, conn: Executor, principal: Principal, import_id: UUID, dry_run: bool, update: bool
    ) -> Outcome:
        scope = await self._own(conn, principal, import_id)
        allowed = await self._allowed(scope)
        agencies: dict[str, Agency] = {}
        earlier: dict[str, int] = {}
        problems: list[RowProblem] = []
        error_count = bad_rows = rows = created = updated = unchanged = 0
        last = -1
        ready: _Batch | None = None  # checked, to be written
        while True:
            # Chunk n + 1 is read, then chunk n written while n + 1 is checked:
            # the node's checking and PostgreSQL's writing overlap (one
            # connection, so the reads come first). A row of n + 1 that repeats
            # one of n is a repeat whether or not n is written yet.
            chunk = await imports.staged(conn, import_id, last, APPLY_CHUNK)
            checker = (
                await self._checker(scope, chunk, earlier, update, allowed, agencies)
                if chunk
                else None
            )
            writing = (
                asyncio.create_task(self._write(conn, scope, import_id, ready)) if ready else None
            )
            ready = None
            try:
                if checker is not None:
                    last = chunk[-1].line
                    rows += len(chunk)
                    new: list[NewOfficial] = []
                    changes: list[Change] = []
                    for index, row in enumerate(chunk, 1):
                        if writing is not None and index % _YIELD_EVERY == 0:
                            await asyncio.sleep(0)  # let the writer send its next statement
                        found, item = checker.check(row)
                        if found:
                            error_count += len(found)
                            bad_rows += 1
                            problems.extend(found[: MAX_REPORTED - len(problems)])
                        elif isinstance(item, NewOfficial):
                            new.append(item)
                        elif isinstance(item, Change) and (item.fields() or item.moved):
                            changes.append(item)
                        elif isinstance(item, Change):
                            unchanged += 1
                    created += len(new)
                    updated += len(changes)
                    # After a problem, keep checking (the report counts every
                    # problem) but write nothing more: it is all rolled back.
                    if not (error_count or dry_run):
                        ready = _Batch(new, changes)
            finally:
                if writing is not None:
                    await writing
            if checker is None:
                break
        if error_count:
            return Outcome(rows, 0, problems, error_count, False, bad_rows=bad_rows)
        if dry_run:
            return Outcome(rows, created, [], 0, False, updated, unchanged)
        await self._audit.record(conn, self._summary(scope, import_id, created, updated))
        await imports.discard(conn, import_id)
        return Outcome(rows, created, [], 0, True, updated, unchanged)

    async def _write(self, conn: Executor, scope: Scope, import_id: UUID, batch: "_Batch") -> None:
        """One checked chunk into the directory, with its audit events."""
        await store.create_officials(conn, batch.new)
        for change in batch.changes:
            if change.fields():
                await store.update_official(conn, change.after)
            if change.moved:
                await store.move_official(conn, change.after.id, change.after.agency_id)
        await self._audit.record(conn, *self._events(scope, import_id, batch.new, batch.changes))

    def _events(
        self,
        scope: Scope,
        import_id: UUID,
        new: Iterable[NewOfficial],
        changes: Sequence[Change] = (),
    ) -> list[AuditEvent]:
        actor = {"actor_official": scope.actor.official_id, "actor_device": scope.actor.device_id}
        events = [
            AuditEvent(
                "admin.official_created",
                subject_official=o.id,
                agency_id=o.agency_id,
                details={"import": import_id},
                **actor,
            )
            for o in new
        ]
        for c in changes:
            if c.fields():
                events.append(
                    AuditEvent(
                        "admin.official_updated",
                        subject_official=c.after.id,
                        agency_id=c.after.agency_id,
                        details={"import": import_id, "fields": c.fields()},
                        **actor,
                    )
                )
            if c.moved:
                events.append(
                    AuditEvent(
                        "admin.official_moved",
                        subject_official=c.after.id,
                        agency_id=c.after.agency_id,
                        details={
                            "import": import_id,
                            "from_agency": c.before.agency_id,
                            "to_agency": c.after.agency_id,
                        },
                        **actor,
                    )
                )
        return events

    def _summary(self, scope: Scope, import_id: UUID, created: int, updated: int) -> AuditEvent:
        return AuditEvent(
            "admin.officials_imported",
            actor_official=scope.actor.official_id,
            actor_device=scope.actor.device_id,
            details={"import": import_id, "created": created, "updated": updated},
        )

    async def discard(self, principal: Principal, import_id: UUID) -> None:
        async with self._db.transaction() as conn:
            await self._own(conn, principal, import_id)
            await imports.discard(conn, import_id)
