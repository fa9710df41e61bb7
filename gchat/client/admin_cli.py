"""``gchat admin ...``: directory administration as an enrolled admin device.

Every command connects with the device in ``--state``, authenticates, makes
its requests over the protocol and prints a table (``--json``: JSON lines).
The server decides what the device's official may do; a refusal is printed
as ``error: <code>: <reason>`` with exit status 1.

    gchat admin agency create|rename|move|list
    gchat admin official add|update|move|suspend|reinstate|retire|show|list
    gchat admin role grant|revoke
    gchat admin device list|revoke
    gchat admin code issue|list|cancel
    gchat admin policy set|show
    gchat admin search QUERY
    gchat admin import officials.csv [--apply]
    gchat admin export [--format csv|json] [--output FILE]

Agencies may be named by id or by code; officials by id.
"""

import argparse
import contextlib
import csv
import io
import json
import sys
import time
import uuid
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any, TextIO

import msgspec

from gchat.client.cli import _as_device, _device_args
from gchat.client.cli_errors import UserError
from gchat.client.lookup import agency_codes, agency_id
from gchat.client.output import table, when
from gchat.client.sdk import Client, ClientError
from protocol import frames as f
from protocol import limits

#: Columns of the import file (the shape HR systems export), in export order.
IMPORT_COLUMNS = ("employee_id", "name_th", "name_en", "position", "agency_code", "email",
                  "phone")
#: Extra columns of an export, ignored on import (so an export imports again).
EXPORT_ONLY_COLUMNS = ("status", "roles", "official_id")
#: Keep each import frame well under the protocol's frame limit.
CHUNK_BYTES = 160 * 1024


# --- output ---------------------------------------------------------------------


def _when(ms: int | None) -> str:
    return when(ms)


def _emit(args: argparse.Namespace, data: Any) -> None:
    """JSON of a frame or struct (with --json)."""
    print(msgspec.json.encode(data).decode(), flush=True)


def _roles(roles: Sequence[f.RoleInfo], codes: dict[uuid.UUID, str]) -> str:
    parts = []
    for r in roles:
        if r.role == "official":
            continue
        scope = "" if r.scope_agency_id is None else "@" + codes.get(
            r.scope_agency_id, str(r.scope_agency_id))
        parts.append(r.role + scope)
    return ",".join(parts)


def _officials(args: argparse.Namespace, found: Sequence[f.OfficialInfo],
               codes: dict[uuid.UUID, str]) -> None:
    if args.json:
        for o in found:
            _emit(args, o)
        return
    table(
        ("id", "employee_id", "name_th", "name_en", "position", "agency", "status", "roles"),
        [(o.id, o.employee_id, o.name_th, o.name_en, o.position, o.agency_code, o.status,
          _roles(o.roles, codes)) for o in found],
        sys.stdout,
    )


# --- helpers -----------------------------------------------------------------------


def _run(args: argparse.Namespace, work: Any) -> None:
    _as_device(args, work)


# --- agencies ------------------------------------------------------------------------


def cmd_agency_create(args: argparse.Namespace) -> None:
    async def work(client: Client) -> None:
        reply: f.AgencyReply = await client.request(
            f.CreateAgency, code=args.code, name_th=args.name_th, name_en=args.name_en,
            parent_id=await agency_id(client, args.parent),
        )
        _agency_out(args, [reply.agency])

    _run(args, work)


def cmd_agency_rename(args: argparse.Namespace) -> None:
    async def work(client: Client) -> None:
        reply: f.AgencyReply = await client.request(
            f.UpdateAgency, agency_id=await agency_id(client, args.agency), code=args.code,
            name_th=args.name_th, name_en=args.name_en,
        )
        _agency_out(args, [reply.agency])

    _run(args, work)


def cmd_agency_move(args: argparse.Namespace) -> None:
    async def work(client: Client) -> None:
        parent = None if args.top else await agency_id(client, args.parent)
        reply: f.AgencyReply = await client.request(
            f.MoveAgency, agency_id=await agency_id(client, args.agency), parent_id=parent
        )
        _agency_out(args, [reply.agency])

    _run(args, work)


def cmd_agency_list(args: argparse.Namespace) -> None:
    async def work(client: Client) -> None:
        reply: f.AgencyList = await client.request(
            f.ListAgencies, root_id=await agency_id(client, args.root)
        )
        _agency_out(args, reply.agencies)

    _run(args, work)


def _agency_out(args: argparse.Namespace, agencies: Sequence[f.AgencyInfo]) -> None:
    if args.json:
        for a in agencies:
            _emit(args, a)
        return
    table(("code", "name_th", "name_en", "id"),
          [("  " * a.depth + a.code, a.name_th, a.name_en, a.id) for a in agencies], sys.stdout)


# --- officials -------------------------------------------------------------------------


def _official_fields(args: argparse.Namespace) -> dict[str, Any]:
    return {name: getattr(args, name) for name in
            ("name_th", "name_en", "position", "email", "phone", "employee_id")}


def cmd_official_add(args: argparse.Namespace) -> None:
    async def work(client: Client) -> None:
        fields = _official_fields(args)
        name = fields["name_th"] or fields["name_en"]
        if not name:
            raise UserError("give the official's name: --name-th and/or --name-en")
        reply: f.OfficialCreated = await client.request(
            f.CreateOfficial, name=name, agency_id=await agency_id(client, args.agency),
            **fields,
        )
        shown: f.OfficialReply = await client.request(f.GetOfficial, official_id=reply.official_id)
        _officials(args, [shown.official], await agency_codes(client))

    _run(args, work)


def cmd_official_update(args: argparse.Namespace) -> None:
    async def work(client: Client) -> None:
        reply: f.OfficialReply = await client.request(
            f.UpdateOfficial, official_id=args.official, **_official_fields(args)
        )
        _officials(args, [reply.official], await agency_codes(client))

    _run(args, work)


def cmd_official_move(args: argparse.Namespace) -> None:
    async def work(client: Client) -> None:
        reply: f.OfficialReply = await client.request(
            f.MoveOfficial, official_id=args.official,
            agency_id=await agency_id(client, args.agency),
        )
        _officials(args, [reply.official], await agency_codes(client))

    _run(args, work)


def _status_command(status: str) -> Any:
    def command(args: argparse.Namespace) -> None:
        async def work(client: Client) -> None:
            reply: f.OfficialReply = await client.request(
                f.SetOfficialStatus, official_id=args.official, status=status
            )
            _officials(args, [reply.official], await agency_codes(client))

        _run(args, work)

    return command


def cmd_official_show(args: argparse.Namespace) -> None:
    async def work(client: Client) -> None:
        reply: f.OfficialReply = await client.request(f.GetOfficial, official_id=args.official)
        o = reply.official
        if args.json:
            _emit(args, o)
            return
        codes = await agency_codes(client)
        for label, value in (("id", o.id), ("employee_id", o.employee_id),
                             ("name_th", o.name_th), ("name_en", o.name_en),
                             ("position", o.position), ("agency", o.agency_code),
                             ("email", o.email), ("phone", o.phone), ("status", o.status),
                             ("roles", _roles(o.roles, codes) or "official")):
            print(f"{label:<12} {'' if value is None else value}")
        devices: f.DeviceList = await client.request(f.ListDevices, official_id=o.id)
        print()
        _devices_out(args, devices.devices)

    _run(args, work)


async def _all_officials(client: Client, agency: uuid.UUID | None,
                         status: str | None) -> list[f.OfficialInfo]:
    found: list[f.OfficialInfo] = []
    offset: int | None = 0
    while offset is not None:
        page: f.OfficialList = await client.request(
            f.ListOfficials, agency_id=agency, status=status, offset=offset,
            limit=limits.MAX_PAGE,
        )
        found.extend(page.officials)
        offset = page.next_offset
    return found


def cmd_official_list(args: argparse.Namespace) -> None:
    async def work(client: Client) -> None:
        found = await _all_officials(client, await agency_id(client, args.agency), args.status)
        _officials(args, found, await agency_codes(client))

    _run(args, work)


# --- roles, devices, codes ------------------------------------------------------------


def cmd_role_grant(args: argparse.Namespace) -> None:
    async def work(client: Client) -> None:
        reply: f.OfficialReply = await client.request(
            f.GrantRole, official_id=args.official, role=args.role,
            scope_agency_id=await agency_id(client, args.scope),
        )
        _officials(args, [reply.official], await agency_codes(client))

    _run(args, work)


def cmd_role_revoke(args: argparse.Namespace) -> None:
    async def work(client: Client) -> None:
        reply: f.OfficialReply = await client.request(
            f.RevokeRole, official_id=args.official, role=args.role
        )
        _officials(args, [reply.official], await agency_codes(client))

    _run(args, work)


def _devices_out(args: argparse.Namespace, found: Sequence[f.DeviceInfo]) -> None:
    if args.json:
        for d in found:
            _emit(args, d)
        return
    table(("device_id", "name", "platform", "status", "enrolled", "last_seen", "revoked"),
          [(d.device_id, d.name, d.platform, d.status, _when(d.enrolled_at),
            _when(d.last_seen_at), _when(d.revoked_at)) for d in found], sys.stdout)


def cmd_device_list(args: argparse.Namespace) -> None:
    async def work(client: Client) -> None:
        reply: f.DeviceList = await client.request(f.ListDevices, official_id=args.official)
        _devices_out(args, reply.devices)

    _run(args, work)


def cmd_device_revoke(args: argparse.Namespace) -> None:
    async def work(client: Client) -> None:
        reply: f.DeviceRevoked = await client.request(f.RevokeDevice, device_id=args.device)
        if args.json:
            _emit(args, reply)
        else:
            print(f"device {reply.device_id} revoked; its connections are closed")

    _run(args, work)


def cmd_code_issue(args: argparse.Namespace) -> None:
    async def work(client: Client) -> None:
        reply: f.CodeIssued = await client.request(f.IssueCode, official_id=args.official)
        if args.json:
            _emit(args, reply)
        else:
            print(f"enrolment code {reply.code} (expires {_when(reply.expires_at)} UTC)")
            print("give it to the official by a separate channel; it works once")

    _run(args, work)


def cmd_code_list(args: argparse.Namespace) -> None:
    async def work(client: Client) -> None:
        reply: f.CodeList = await client.request(f.ListCodes, official_id=args.official)
        if args.json:
            for c in reply.codes:
                _emit(args, c)
            return
        table(("code_id", "state", "issued", "expires", "device"),
              [(c.code_id, c.state, _when(c.created_at), _when(c.expires_at), c.device_id)
               for c in reply.codes], sys.stdout)

    _run(args, work)


def cmd_code_cancel(args: argparse.Namespace) -> None:
    async def work(client: Client) -> None:
        reply: f.CodeCancelled = await client.request(f.CancelCode, code_id=args.code_id)
        if args.json:
            _emit(args, reply)
        else:
            print(f"code {reply.code_id} cancelled")

    _run(args, work)


# --- policy ------------------------------------------------------------------------


def _policy_out(args: argparse.Namespace, reply: f.PolicyReply) -> None:
    if args.json:
        _emit(args, reply)
        return
    rows = [("set here", reply.policy)]
    if reply.effective is not None:
        rows.append(("effective", reply.effective))
    table(("", "message_scope", "max_devices", "retention_seconds"),
          [(label, p.message_scope or "(inherit)", p.max_devices or "(inherit)",
            p.retention_seconds or "(inherit)") for label, p in rows], sys.stdout)


def cmd_policy_set(args: argparse.Namespace) -> None:
    async def work(client: Client) -> None:
        retention = args.retention_seconds
        if args.retention_days is not None:
            retention = int(args.retention_days * 86400)
        reply: f.PolicyReply = await client.request(
            f.SetPolicy, agency_id=await agency_id(client, args.agency),
            policy=f.PolicyInfo(message_scope=args.message_scope, max_devices=args.max_devices,
                                retention_seconds=retention),
        )
        _policy_out(args, reply)

    _run(args, work)


def cmd_policy_show(args: argparse.Namespace) -> None:
    async def work(client: Client) -> None:
        reply: f.PolicyReply = await client.request(
            f.GetPolicy, agency_id=await agency_id(client, args.agency)
        )
        _policy_out(args, reply)

    _run(args, work)


# --- search ---------------------------------------------------------------------------


def cmd_search(args: argparse.Namespace) -> None:
    async def work(client: Client) -> None:
        reply: f.SearchResults = await client.request(
            f.SearchOfficials, query=args.query, agency_id=await agency_id(client, args.agency),
            offset=args.offset, limit=args.limit,
        )
        if args.json:
            for card in reply.results:
                _emit(args, card)
            return
        table(("official_id", "name_th", "name_en", "position", "agency", "devices"),
              [(c.official_id, c.name_th, c.name_en, c.position, c.agency_code,
                c.active_devices) for c in reply.results], sys.stdout)
        if reply.next_offset is not None:
            print(f"(more: --offset {reply.next_offset})")

    _run(args, work)


# --- import and export ------------------------------------------------------------------


class ImportFileError(Exception):
    """The file cannot be read as an officials import."""


def read_import(path: Path) -> tuple[list[f.ImportRow], list[str]]:
    """Rows of an HR CSV (UTF-8, BOM allowed), numbered by file line; ignored columns."""
    with path.open(encoding="utf-8-sig", newline="") as handle:
        reader = csv.DictReader(handle)
        header = [h.strip() for h in (reader.fieldnames or [])]
        reader.fieldnames = header
        missing = [c for c in ("employee_id", "agency_code") if c not in header]
        if missing or not {"name_th", "name_en"} & set(header):
            raise ImportFileError(
                f"{path}: the header needs employee_id, agency_code and name_th and/or "
                f"name_en (found: {', '.join(header) or 'nothing'})"
            )
        ignored = [h for h in header if h not in IMPORT_COLUMNS]
        rows = []
        line = 1
        for record in reader:
            line = reader.line_num
            values = {c: (record.get(c) or None) for c in IMPORT_COLUMNS if c in header}
            values = {k: v[: limits.MAX_IMPORT_TEXT] if v else v for k, v in values.items()}
            rows.append(f.ImportRow(line=line, **values))
    return rows, ignored


def chunks(rows: Sequence[f.ImportRow]) -> Iterable[list[f.ImportRow]]:
    """Rows in frames of at most MAX_IMPORT_ROWS rows and about CHUNK_BYTES."""
    chunk: list[f.ImportRow] = []
    size = 0
    for row in rows:
        row_size = len(msgspec.msgpack.encode(row))
        if chunk and (len(chunk) >= limits.MAX_IMPORT_ROWS or size + row_size > CHUNK_BYTES):
            yield chunk
            chunk, size = [], 0
        chunk.append(row)
        size += row_size
    if chunk:
        yield chunk


async def run_import(client: Client, rows: Sequence[f.ImportRow], apply: bool,
                     out: TextIO) -> tuple[f.ImportResult, list[f.RowError]]:
    """Stage, dry-run, and (if asked and clean) apply; prints progress to ``out``."""
    started = time.perf_counter()
    begun: f.ImportStarted = await client.request(f.ImportBegin)
    import_id = begun.import_id
    problems: list[f.RowError] = []
    applied = False
    try:
        for chunk in chunks(rows):
            checked: f.ImportChecked = await client.request(
                f.ImportRows, import_id=import_id, rows=chunk
            )
            problems.extend(checked.errors)
        staged = time.perf_counter()
        result: f.ImportResult = await client.request(
            f.ImportApply, import_id=import_id, dry_run=True
        )
        checked_at = time.perf_counter()
        if result.error_count and len(result.errors) > len(problems):
            problems = list(result.errors)  # the full check saw more (a concurrent change)
        print(f"dry run: {result.rows} rows, {result.error_count} bad "
              f"(staged in {staged - started:.2f}s, checked in {checked_at - staged:.2f}s)",
              file=out)
        if apply and result.error_count == 0:
            result = await client.request(f.ImportApply, import_id=import_id, dry_run=False)
            applied = result.applied
            print(f"applied: {result.created} officials created in "
                  f"{time.perf_counter() - checked_at:.2f}s "
                  f"(total {time.perf_counter() - started:.2f}s)", file=out)
        elif apply:
            print("not applied: the file has bad rows; nothing was changed", file=out)
    finally:
        if not applied:
            with contextlib.suppress(ClientError, ConnectionError):
                await client.request(f.ImportDiscard, import_id=import_id)
    return result, problems


def cmd_import(args: argparse.Namespace) -> None:
    try:
        rows, ignored = read_import(args.file)
    except (ImportFileError, OSError, UnicodeDecodeError, csv.Error) as error:
        raise UserError(str(error)) from None
    if ignored:
        print(f"note: ignoring columns {', '.join(ignored)}", file=sys.stderr)

    async def work(client: Client) -> None:
        result, problems = await run_import(client, rows, args.apply, sys.stderr)
        if args.json:
            _emit(args, result)
        if problems:
            table(("line", "column", "problem"),
                  [(p.line, p.field, p.reason) for p in problems], sys.stdout)
            if result.error_count > len(problems):
                print(f"... and {result.error_count - len(problems)} more", file=sys.stdout)
        if result.error_count:
            sys.exit(1)
        if not args.apply:
            print("the file is clean; run again with --apply to create the officials",
                  file=sys.stderr)

    _run(args, work)


async def export_directory(client: Client, agency: uuid.UUID | None) -> dict[str, Any]:
    agencies: f.AgencyList = await client.request(f.ListAgencies, root_id=agency)
    officials = await _all_officials(client, agency, None)
    return {"agencies": agencies.agencies, "officials": officials}


def write_csv(officials: Sequence[f.OfficialInfo], codes: dict[uuid.UUID, str],
              out: TextIO) -> None:
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(IMPORT_COLUMNS + EXPORT_ONLY_COLUMNS)
    for o in officials:
        writer.writerow([o.employee_id or "", o.name_th or "", o.name_en or "", o.position or "",
                         o.agency_code, o.email or "", o.phone or "", o.status,
                         _roles(o.roles, codes), o.id])


def cmd_export(args: argparse.Namespace) -> None:
    async def work(client: Client) -> None:
        data = await export_directory(client, await agency_id(client, args.agency))
        codes = {a.id: a.code for a in data["agencies"]}
        buffer = io.StringIO()
        if args.format == "json":
            buffer.write(json.dumps(msgspec.to_builtins(data), ensure_ascii=False, indent=1))
            buffer.write("\n")
        else:
            write_csv(data["officials"], codes, buffer)
        if args.output:
            args.output.write_text(buffer.getvalue(), encoding="utf-8")
            print(f"wrote {len(data['officials'])} officials and {len(data['agencies'])} "
                  f"agencies to {args.output}", file=sys.stderr)
        else:
            sys.stdout.write(buffer.getvalue())

    _run(args, work)


# --- registration ------------------------------------------------------------------------


def _common(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    _device_args(parser)
    parser.add_argument("--json", action="store_true", help="JSON lines instead of a table")
    return parser


def _official_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--name-th", help="name in Thai")
    parser.add_argument("--name-en", help="name in English")
    parser.add_argument("--position")
    parser.add_argument("--email")
    parser.add_argument("--phone")
    parser.add_argument("--employee-id", help="the HR system's id")


def register(admin: Any) -> None:
    """Add the directory administration commands under ``gchat admin``."""
    group = admin.add_parser("agency", help="agencies (create, rename, move, list)")
    sub = group.add_subparsers(dest="agency_command", required=True)
    p = _common(sub.add_parser("create", help="create an agency"))
    p.add_argument("--code", required=True)
    p.add_argument("--name-th")
    p.add_argument("--name-en")
    p.add_argument("--parent", help="parent agency (id or code); none: a ministry")
    p.set_defaults(func=cmd_agency_create)
    p = _common(sub.add_parser("rename", help="rename an agency or change its code"))
    p.add_argument("agency", help="id or code")
    p.add_argument("--code")
    p.add_argument("--name-th")
    p.add_argument("--name-en")
    p.set_defaults(func=cmd_agency_rename)
    p = _common(sub.add_parser("move", help="move an agency under another"))
    p.add_argument("agency", help="id or code")
    where = p.add_mutually_exclusive_group(required=True)
    where.add_argument("--parent", help="new parent (id or code)")
    where.add_argument("--top", action="store_true", help="make it a top-level agency")
    p.set_defaults(func=cmd_agency_move)
    p = _common(sub.add_parser("list", help="the agency tree"))
    p.add_argument("--root", help="only this agency's subtree (id or code)")
    p.set_defaults(func=cmd_agency_list)

    group = admin.add_parser("official", help="officials (add, update, move, status, list)")
    sub = group.add_subparsers(dest="official_command", required=True)
    p = _common(sub.add_parser("add", help="add an official"))
    p.add_argument("--agency", help="id or code (default: yours)")
    _official_options(p)
    p.set_defaults(func=cmd_official_add)
    p = _common(sub.add_parser("update", help="change names, position, contact"))
    p.add_argument("official", type=uuid.UUID)
    _official_options(p)
    p.set_defaults(func=cmd_official_update)
    p = _common(sub.add_parser("move", help="move an official to another agency"))
    p.add_argument("official", type=uuid.UUID)
    p.add_argument("--agency", required=True, help="id or code")
    p.set_defaults(func=cmd_official_move)
    for name, status, text in (
        ("suspend", "suspended", "suspend (closes their connections at once)"),
        ("reinstate", "active", "reinstate a suspended official"),
        ("retire", "retired", "retire (revokes every device; final; history kept)"),
    ):
        p = _common(sub.add_parser(name, help=text))
        p.add_argument("official", type=uuid.UUID)
        p.set_defaults(func=_status_command(status))
    p = _common(sub.add_parser("show", help="one official, with devices"))
    p.add_argument("official", type=uuid.UUID)
    p.set_defaults(func=cmd_official_show)
    p = _common(sub.add_parser("list", help="officials of your scope or an agency"))
    p.add_argument("--agency", help="id or code (with its sub-agencies)")
    p.add_argument("--status", choices=("active", "suspended", "retired"))
    p.set_defaults(func=cmd_official_list)

    group = admin.add_parser("role", help="grant or revoke roles")
    sub = group.add_subparsers(dest="role_command", required=True)
    for name, func in (("grant", cmd_role_grant), ("revoke", cmd_role_revoke)):
        p = _common(sub.add_parser(name, help=f"{name} a role"))
        p.add_argument("official", type=uuid.UUID)
        p.add_argument("role", choices=("agency_admin", "auditor", "superadmin"))
        if name == "grant":
            p.add_argument("--scope", help="agency (id or code) the role covers; none: global")
        p.set_defaults(func=func)

    group = admin.add_parser("device", help="list or revoke devices")
    sub = group.add_subparsers(dest="device_command", required=True)
    p = _common(sub.add_parser("list", help="an official's devices"))
    p.add_argument("official", type=uuid.UUID)
    p.set_defaults(func=cmd_device_list)
    p = _common(sub.add_parser("revoke", help="revoke a device (lost phone)"))
    p.add_argument("device", type=uuid.UUID)
    p.set_defaults(func=cmd_device_revoke)

    group = admin.add_parser("code", help="enrolment codes")
    sub = group.add_subparsers(dest="code_command", required=True)
    p = _common(sub.add_parser("issue", help="issue a one-time enrolment code"))
    p.add_argument("official", type=uuid.UUID)
    p.set_defaults(func=cmd_code_issue)
    p = _common(sub.add_parser("list", help="an official's codes"))
    p.add_argument("official", type=uuid.UUID)
    p.set_defaults(func=cmd_code_list)
    p = _common(sub.add_parser("cancel", help="cancel a pending code"))
    p.add_argument("code_id", type=uuid.UUID)
    p.set_defaults(func=cmd_code_cancel)

    group = admin.add_parser("policy", help="messaging, device and retention policy")
    sub = group.add_subparsers(dest="policy_command", required=True)
    p = _common(sub.add_parser("set", help="replace an agency's (or the global) policy"))
    p.add_argument("--agency", help="id or code; none: the global policy (superadmin)")
    p.add_argument("--message-scope", choices=("agency", "ministry", "all"))
    p.add_argument("--max-devices", type=int)
    retention = p.add_mutually_exclusive_group()
    retention.add_argument("--retention-days", type=float)
    retention.add_argument("--retention-seconds", type=int)
    p.set_defaults(func=cmd_policy_set)
    p = _common(sub.add_parser("show", help="the policy set on an agency and what applies"))
    p.add_argument("--agency", help="id or code; none: the global policy")
    p.set_defaults(func=cmd_policy_show)

    p = _common(admin.add_parser("search", help="look officials up by name, position, agency"))
    p.add_argument("query")
    p.add_argument("--agency", help="only this agency and its sub-agencies")
    p.add_argument("--offset", type=int, default=0)
    p.add_argument("--limit", type=int, default=20)
    p.set_defaults(func=cmd_search)

    p = _common(admin.add_parser("import", help="import officials from an HR CSV"))
    p.add_argument("file", type=Path)
    p.add_argument("--apply", action="store_true",
                   help="create them if the dry run finds no bad row (all or nothing)")
    p.set_defaults(func=cmd_import)

    p = _common(admin.add_parser("export", help="export the directory (your scope)"))
    p.add_argument("--format", choices=("csv", "json"), default="csv")
    p.add_argument("--agency", help="only this agency's subtree")
    p.add_argument("--output", type=Path)
    p.set_defaults(func=cmd_export)
