"""``gchat admin ...``: directory administration as an enrolled admin device.

Every command connects with the device in ``--state``, authenticates, makes
its requests over the protocol and prints a table with names, codes and
local times (``--json``: JSON lines, ids and epoch milliseconds, nothing
else on stdout). The server decides what the device's official may do; a
refusal is one line, ``gchat: the server refused: <reason> (<code>)``, exit 1.

    gchat admin agency create|rename|move|list
    gchat admin official add|update|move|suspend|reinstate|retire|show|list
    gchat admin role grant|revoke
    gchat admin device list|revoke
    gchat admin code issue|list|cancel
    gchat admin policy set|show
    gchat admin search QUERY
    gchat admin import officials.csv [--update] [--encoding E] [--apply]
    gchat admin export [--format csv|json] [--output FILE]   (gchat.client.admin_import)

Agencies may be named by id or by code; officials by id.
"""

import argparse
import sys
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any, get_args

from gchat.client import admin_import
from gchat.client.cli import _as_device, _device_args
from gchat.client.cli_errors import UserError
from gchat.client.lookup import agency_codes, agency_id, all_officials
from gchat.client.output import emit, roles_text, table, when
from gchat.client.sdk import Client
from protocol import frames as f


def _emit(args: argparse.Namespace, data: Any) -> None:
    emit(data)


def _when(ms: int | None) -> str:
    return when(ms)


def _officials(
    args: argparse.Namespace, found: Sequence[f.OfficialInfo], codes: dict[uuid.UUID, str]
) -> None:
    if args.json:
        for o in found:
            _emit(args, o)
        return
    table(
        ("id", "employee_id", "name_th", "name_en", "position", "agency", "status", "roles"),
        [
            (
                o.id,
                o.employee_id,
                o.name_th,
                o.name_en,
                o.position,
                o.agency_code,
                o.status,
                roles_text(o.roles, codes),
            )
            for o in found
        ],
        sys.stdout,
    )


# --- helpers -----------------------------------------------------------------------


def _run(args: argparse.Namespace, work: Any) -> None:
    _as_device(args, work, deliveries=False)


# --- agencies ------------------------------------------------------------------------


def cmd_agency_create(args: argparse.Namespace) -> None:
    async def work(client: Client) -> None:
        reply: f.AgencyReply = await client.request(
            f.CreateAgency,
            code=args.code,
            name_th=args.name_th,
            name_en=args.name_en,
            parent_id=await agency_id(client, args.parent),
        )
        _agency_out(args, [reply.agency])

    _run(args, work)


def cmd_agency_rename(args: argparse.Namespace) -> None:
    async def work(client: Client) -> None:
        reply: f.AgencyReply = await client.request(
            f.UpdateAgency,
            agency_id=await agency_id(client, args.agency),
            code=args.code,
            name_th=args.name_th,
            name_en=args.name_en,
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
    table(
        ("code", "name_th", "name_en", "id"),
        [("  " * a.depth + a.code, a.name_th, a.name_en, a.id) for a in agencies],
        sys.stdout,
    )


# --- officials -------------------------------------------------------------------------


def _official_fields(args: argparse.Namespace) -> dict[str, Any]:
    return {
        name: getattr(args, name)
        for name in ("name_th", "name_en", "position", "email", "phone", "employee_id")
    }


def cmd_official_add(args: argparse.Namespace) -> None:
    async def work(client: Client) -> None:
        fields = _official_fields(args)
        name = fields["name_th"] or fields["name_en"]
        if not name:
            raise UserError("give the official's name: --name-th and/or --name-en")
        reply: f.OfficialCreated = await client.request(
            f.CreateOfficial,
            name=name,
            agency_id=await agency_id(client, args.agency),
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
            f.MoveOfficial,
            official_id=args.official,
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
        for label, value in (
            ("id", o.id),
            ("employee_id", o.employee_id),
            ("name_th", o.name_th),
            ("name_en", o.name_en),
            ("position", o.position),
            ("agency", o.agency_code),
            ("email", o.email),
            ("phone", o.phone),
            ("status", o.status),
            ("roles", roles_text(o.roles, codes) or "official"),
        ):
            print(f"{label:<12} {'' if value is None else value}")
        devices: f.DeviceList = await client.request(f.ListDevices, official_id=o.id)
        print()
        _devices_out(args, devices.devices)

    _run(args, work)


def cmd_official_list(args: argparse.Namespace) -> None:
    async def work(client: Client) -> None:
        found = await all_officials(client, await agency_id(client, args.agency), args.status)
        _officials(args, found, await agency_codes(client))

    _run(args, work)


# --- roles, devices, codes ------------------------------------------------------------


def cmd_role_grant(args: argparse.Namespace) -> None:
    async def work(client: Client) -> None:
        reply: f.OfficialReply = await client.request(
            f.GrantRole,
            official_id=args.official,
            role=args.role,
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
    table(
        ("device_id", "name", "platform", "status", "enrolled", "last_seen", "revoked", "push"),
        [
            (
                d.device_id,
                d.name,
                d.platform,
                d.status,
                _when(d.enrolled_at),
                _when(d.last_seen_at),
                _when(d.revoked_at),
                d.push_origin or "no",
            )
            for d in found
        ],
        sys.stdout,
    )


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
            print(f"enrolment code {reply.code} (expires {_when(reply.expires_at)})")
            print("give it to the official by a separate channel; it works once")

    _run(args, work)


def cmd_code_list(args: argparse.Namespace) -> None:
    async def work(client: Client) -> None:
        reply: f.CodeList = await client.request(f.ListCodes, official_id=args.official)
        if args.json:
            for c in reply.codes:
                _emit(args, c)
            return
        table(
            ("code_id", "state", "issued", "expires", "device"),
            [
                (c.code_id, c.state, _when(c.created_at), _when(c.expires_at), c.device_id)
                for c in reply.codes
            ],
            sys.stdout,
        )

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
    table(
        ("", "message_scope", "max_devices", "retention_seconds", "max_file", "per_day"),
        [
            (
                label,
                p.message_scope or "(inherit)",
                p.max_devices or "(inherit)",
                p.retention_seconds or "(inherit)",
                p.max_attachment_bytes or "(inherit)",
                p.attachment_bytes_per_day or "(inherit)",
            )
            for label, p in rows
        ],
        sys.stdout,
    )


def cmd_policy_set(args: argparse.Namespace) -> None:
    async def work(client: Client) -> None:
        retention = args.retention_seconds
        if args.retention_days is not None:
            retention = int(args.retention_days * 86400)
        reply: f.PolicyReply = await client.request(
            f.SetPolicy,
            agency_id=await agency_id(client, args.agency),
            policy=f.PolicyInfo(
                message_scope=args.message_scope,
                max_devices=args.max_devices,
                retention_seconds=retention,
                max_attachment_bytes=args.max_attachment_bytes,
                attachment_bytes_per_day=args.attachment_bytes_per_day,
            ),
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
            f.SearchOfficials,
            query=args.query,
            agency_id=await agency_id(client, args.agency),
            offset=args.offset,
            limit=args.limit,
        )
        if args.json:
            for card in reply.results:
                _emit(args, card)
            return
        table(
            ("official_id", "name_th", "name_en", "position", "agency", "devices"),
            [
                (c.official_id, c.name_th, c.name_en, c.position, c.agency_code, c.active_devices)
                for c in reply.results
            ],
            sys.stdout,
        )
        if reply.next_offset is not None:
            print(f"(more: --offset {reply.next_offset})")

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
    p.add_argument("--status", choices=get_args(f.OfficialStatus))
    p.set_defaults(func=cmd_official_list)

    group = admin.add_parser("role", help="grant or revoke roles")
    sub = group.add_subparsers(dest="role_command", required=True)
    for name, func in (("grant", cmd_role_grant), ("revoke", cmd_role_revoke)):
        p = _common(sub.add_parser(name, help=f"{name} a role"))
        p.add_argument("official", type=uuid.UUID)
        # "official" is everyone's standing, not a role one is granted.
        p.add_argument("role", choices=[r for r in get_args(f.RoleName) if r != "official"])
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
    p.add_argument("--max-attachment-bytes", type=int, help="largest attachment per file")
    p.add_argument("--attachment-bytes-per-day", type=int, help="attachment quota per official")
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
    p.add_argument(
        "--apply",
        action="store_true",
        help="make the changes if the dry run finds no problem (all or nothing)",
    )
    p.add_argument(
        "--update",
        action="store_true",
        help="officials already in the directory (by employee_id) take the "
        "file's names, position, contact and agency",
    )
    p.add_argument(
        "--encoding", help="the file's encoding (default: detect UTF-8 or TIS-620/cp874)"
    )
    p.set_defaults(func=admin_import.cmd_import)

    p = _common(admin.add_parser("export", help="export the directory (your scope)"))
    p.add_argument("--format", choices=("csv", "json"), default="csv")
    p.add_argument("--agency", help="only this agency's subtree (code or id)")
    p.add_argument("--output", type=Path)
    p.set_defaults(func=admin_import.cmd_export)
