"""``gchat audit ...``: auditors' commands, and the offline verifier.

    gchat audit public-key [--keys-dir DIR] [--json] > audit.pub   (server host)
    gchat audit verify --export FILE --key audit.pub|HEX [--known-head FILE ...]
    gchat audit query --state FILE [--official ID] [--device ID] [--agency CODE|ID]
                      [--kind K ...] [--since WHEN] [--until WHEN] [--limit N] [--all]
    gchat audit tree-head --state FILE [--cached]
    gchat audit inclusion --state FILE --index I --size N
    gchat audit consistency --state FILE --old M --new N
    gchat audit export --state FILE --out FILE [--start I] [--end J] [--size N]
    gchat audit accesses --state FILE        (any official: who audited me)

``verify`` needs no server: it reads an export (JSON Lines) and the audit
public key (what ``public-key`` wrote, or its hex) and exits 0 only if
everything verifies; otherwise it names the first failing entry and why
(exit 1). The other commands run as an enrolled device (see ``gchat
client``) whose official has the ``auditor`` role. ``query`` and
``accesses`` print a table with names and local times; ``--json`` prints
JSON lines (ids, epoch milliseconds) for scripts. WHEN is a date
(2026-11-01), a date and time, an age (24h, 7d), today or yesterday.
"""

import argparse
import gzip
import json
import re
import sys
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from crypto.identity import IdentityKeyPair
from gchat.audit.verify import verify_export
from gchat.client.cli import _as_device, _device_args
from gchat.client.cli_errors import UserError
from gchat.client.lookup import Names, agency_codes, agency_id, parse_uuid
from gchat.client.output import emit_json, table, when
from gchat.client.sdk import Client
from gchat.client.times import parse_time
from protocol import frames as f

#: Event kinds the server records (docs/AUDIT.md has what each means);
#: ``tests/cli`` checks every kind in the server's code is here.
KINDS = (
    "admin.agency_created",
    "admin.agency_moved",
    "admin.agency_updated",
    "admin.bootstrap",
    "admin.code_cancelled",
    "admin.code_issued",
    "admin.device_revoked",
    "admin.official_created",
    "admin.official_moved",
    "admin.official_reinstated",
    "admin.official_retired",
    "admin.official_suspended",
    "admin.official_updated",
    "admin.officials_imported",
    "admin.policy_set",
    "admin.role_granted",
    "admin.role_revoked",
    "attachment.fetched",
    "attachment.uploaded",
    "audit.consistency_proof",
    "audit.directory_read",
    "audit.export",
    "audit.inclusion_proof",
    "audit.query",
    "audit.tree_head",
    "auth.failed",
    "auth.succeeded",
    "conversation.admin_demoted",
    "conversation.admin_promoted",
    "conversation.announcement_set",
    "conversation.direct_created",
    "conversation.group_created",
    "conversation.members_added",
    "conversation.members_left",
    "conversation.members_removed",
    "conversation.renamed",
    "device.enrolled",
    "device.enrolment_refused",
    "keys.bundle_fetched",
    "message.accepted",
    "message.delivered",
)
_HEX_KEY = re.compile(r"^[0-9a-fA-F]{64}$")


def _kinds(given: list[str] | None) -> list[str]:
    unknown = [k for k in given or [] if k not in KINDS]
    if unknown:
        families = sorted({k.split(".")[0] + ".*" for k in KINDS})
        raise UserError(
            f"unknown event kind {unknown[0]!r}: kinds are named like "
            f"message.accepted ({', '.join(families)}; gchat audit kinds lists them)"
        )
    return list(given or [])


def _head(head: f.SignedTreeHead | None) -> dict[str, Any] | None:
    if head is None:
        return None
    return {
        "type": "tree_head",
        "tree_size": head.tree_size,
        "timestamp_ms": head.timestamp_ms,
        "root_hash": head.root_hash.hex(),
        "signature": head.signature.hex(),
        "key_id": head.key_id.hex(),
    }


def _event(event: f.AuditEventInfo) -> dict[str, Any]:
    return {
        "id": event.id,
        "leaf_index": event.leaf_index,
        "kind": event.kind,
        "time": event.time,
        "entry": json.loads(event.entry),
    }


def _public_key(value: str) -> bytes:
    """The audit public key: hex, or a file holding what ``public-key`` writes
    (its hex, or its ``--json`` output)."""
    path = Path(value)
    if path.is_file():
        text = path.read_text(encoding="utf-8", errors="replace").strip()
        if text.startswith("{"):
            try:
                text = str(json.loads(text).get("audit_public_key", ""))
            except (ValueError, AttributeError):
                text = ""
        source = f"the file {value}"
    elif _HEX_KEY.match(value.strip()):
        text, source = value.strip(), "--key"
    else:
        raise UserError(
            f"{value} is neither a file nor an audit public key in hex: "
            "write the key with gchat audit public-key > audit.pub on the "
            "server host and pass --key audit.pub"
        )
    if not _HEX_KEY.match(text):
        raise UserError(
            f"{source} does not hold an audit public key (64 hex digits, "
            "as gchat audit public-key writes it)"
        )
    return bytes.fromhex(text)


def cmd_verify(args: argparse.Namespace) -> None:
    known = []
    for name in args.known_head or []:
        try:
            known.append(json.loads(Path(name).read_text()))
        except ValueError:
            raise UserError(
                f"{name} is not a saved tree head (JSON from gchat audit tree-head --json)"
            ) from None
    key = _public_key(args.key)
    with Path(args.export).open("rb") as raw:
        compressed = raw.read(2) == b"\x1f\x8b"  # an archive: gzip-compressed JSON Lines
    opened = gzip.open if compressed else open
    with opened(Path(args.export), "rb") as file:
        report = verify_export(file, key, known)
    print(report.summary())
    sys.exit(0 if report.ok else 1)


def cmd_public_key(args: argparse.Namespace) -> None:
    """On the server host: print the audit public key auditors verify with.

    Only reads the key: on a folder without one it says so rather than
    making a new key that nothing was ever signed with.
    """
    from gchat import config
    from gchat.audit.verify import key_id

    try:
        cfg = config.load(toml_path=args.config)
    except ValueError as error:
        raise UserError(f"bad configuration: {error}") from None
    keys_dir = args.keys_dir if args.keys_dir is not None else cfg.key_directory
    path = keys_dir / "audit.key"
    if not path.exists():
        raise UserError(
            f"no audit key at {path}: run this on the node's host, with its "
            "--keys-dir (or GCHAT_DATA_DIR / GCHAT_KEYS_DIR)"
        )
    try:
        seed = bytes.fromhex(path.read_text().strip())
        public = IdentityKeyPair.from_seed(seed).public_key
    except ValueError:
        raise UserError(f"{path} does not hold a key (damaged?)") from None
    if args.json:
        emit_json({"audit_public_key": public.hex(), "key_id": key_id(public).hex()})
    else:
        print(public.hex())
        print(
            f"key id {key_id(public).hex()}; auditors verify with: "
            "gchat audit verify --export FILE --key audit.pub",
            file=sys.stderr,
        )


def cmd_archive(args: argparse.Namespace) -> None:
    """On the server host, as the database owner: archive and drop old months of the log."""
    import asyncio

    import asyncpg

    from gchat import config
    from gchat.audit import retention

    try:
        cfg = config.load(toml_path=args.config)
    except ValueError as error:
        raise UserError(f"bad configuration: {error}") from None
    if args.before is not None:
        try:
            before = datetime.fromisoformat(args.before).replace(tzinfo=UTC)
        except ValueError:
            raise UserError(f"--before {args.before}: give a date, like 2026-01-01") from None
    elif cfg.audit_retention_days > 0:
        before = datetime.now(UTC) - timedelta(days=cfg.audit_retention_days)
    else:
        raise UserError(
            "the audit log is kept forever (audit_retention_days = 0): give --before DATE"
        )
    if not cfg.database_url:
        raise UserError(
            "archive needs the node's database_url (GCHAT_DATABASE_URL); with the embedded "
            "database, stop the node and give it that cluster's address"
        )
    keys_dir = args.keys_dir if args.keys_dir is not None else cfg.key_directory
    path = keys_dir / "audit.key"
    if not path.exists():
        raise UserError(f"no audit key at {path}: run this on the node's host")
    public = IdentityKeyPair.from_seed(bytes.fromhex(path.read_text().strip())).public_key
    args.out.mkdir(parents=True, exist_ok=True)

    async def run() -> list[retention.Archived]:
        conn = await asyncpg.connect(cfg.database_url)
        try:
            return await retention.archive(conn, before, args.out, public)
        finally:
            await conn.close()

    try:
        done = asyncio.run(run())
    except retention.RetentionError as error:
        raise UserError(str(error)) from None
    except asyncpg.InsufficientPrivilegeError:
        raise UserError(
            "the database role may not drop audit partitions: run this as the owner "
            "(the role migrations run as)"
        ) from None
    for item in done:
        if args.json:
            emit_json({"month": item.month, "file": str(item.path) if item.path else None,
                       "start": item.start, "end": item.end, "tree_size": item.tree_size})
        elif item.path is None:
            print(f"{item.month}: empty, dropped")
        else:
            print(f"{item.month}: leaves {item.start}..{item.end - 1} -> {item.path} "
                  f"(verified against the head of size {item.tree_size}), partition dropped")
    if not done:
        print(f"nothing to archive before {before:%Y-%m-%d}")


def cmd_kinds(args: argparse.Namespace) -> None:
    for kind in KINDS:
        print(kind)


async def _events_out(
    args: argparse.Namespace, client: Client, events: list[f.AuditEventInfo]
) -> None:
    if args.json:
        for event in events:
            emit_json(_event(event))
        return
    names = Names(client)
    codes = await agency_codes(client)
    rows = []
    for event in events:
        entry = json.loads(event.entry)
        agency = entry.get("agency")
        agency_text = codes.get(uuid.UUID(agency), agency) if agency else ""
        skip = {
            "v",
            "kind",
            "time",
            "actor_official",
            "actor_device",
            "subject_official",
            "subject_device",
            "agency",
        }
        details = dict(entry.get("details") or {})
        details.update({k: v for k, v in entry.items() if k not in skip and k != "details"})
        rows.append(
            (
                when(event.time),
                event.kind,
                await names.official(entry.get("actor_official")),
                await names.official(entry.get("subject_official")),
                agency_text,
                " ".join(f"{k}={v}" for k, v in sorted(details.items())),
            )
        )
    table(("time", "kind", "by", "about", "agency", "details"), rows)


def cmd_query(args: argparse.Namespace) -> None:
    kinds = _kinds(args.kind)
    since = None if args.since is None else parse_time(args.since)
    until = None if args.until is None else parse_time(args.until)
    official = None if args.official is None else parse_uuid(args.official, "an official")
    device = None if args.device is None else parse_uuid(args.device, "a device")

    async def work(client: Client) -> None:
        agency = await agency_id(client, args.agency)
        after = 0
        while True:
            page = await client.request(
                f.AuditQuery,
                official_id=official,
                device_id=device,
                agency_id=agency,
                kinds=kinds,
                since=since,
                until=until,
                after=after,
                limit=args.limit,
            )
            await _events_out(args, client, page.events)
            if page.next_after is None or not args.all:
                if page.next_after is not None:
                    if args.json:
                        emit_json({"next_after": page.next_after})
                    else:
                        print("(more: --all, or narrow with --since/--kind)", file=sys.stderr)
                return
            after = page.next_after

    _as_device(args, work, deliveries=False)


def cmd_tree_head(args: argparse.Namespace) -> None:
    async def work(client: Client) -> None:
        reply = await client.request(f.AuditGetTreeHead, fresh=not args.cached)
        emit_json(_head(reply.head) or {})

    _as_device(args, work, deliveries=False)


def cmd_inclusion(args: argparse.Namespace) -> None:
    async def work(client: Client) -> None:
        r = await client.request(f.AuditGetInclusion, leaf_index=args.index, tree_size=args.size)
        emit_json(
            {
                "leaf_index": r.leaf_index,
                "tree_size": r.tree_size,
                "entry": r.entry,
                "leaf_hash": r.leaf_hash.hex(),
                "proof": [p.hex() for p in r.proof],
                "tree_head": _head(r.head),
            }
        )

    _as_device(args, work, deliveries=False)


def cmd_consistency(args: argparse.Namespace) -> None:
    async def work(client: Client) -> None:
        r = await client.request(f.AuditGetConsistency, old_size=args.old, new_size=args.new)
        emit_json(
            {
                "old_size": r.old_size,
                "new_size": r.new_size,
                "proof": [p.hex() for p in r.proof],
                "old_head": _head(r.old_head),
                "new_head": _head(r.new_head),
            }
        )

    _as_device(args, work, deliveries=False)


def cmd_export(args: argparse.Namespace) -> None:
    """Write each page to the file as it arrives: memory stays flat whatever the range.

    Written to ``OUT.part`` and renamed at the end, so a file named ``OUT``
    is always a whole export.
    """
    out = Path(args.out)
    partial = out.with_name(out.name + ".part")

    async def work(client: Client) -> None:
        with partial.open("w", encoding="utf-8") as file:
            page = await client.request(
                f.AuditExport, start=args.start, end=args.end, tree_size=args.size
            )
            while True:
                file.writelines(line + "\n" for line in page.lines)
                counts[0] += len(page.lines)
                if page.cursor is None:
                    break
                page = await client.request(
                    f.AuditExport,
                    start=args.start,
                    end=args.end,
                    tree_size=page.tree_size,
                    cursor=page.cursor,
                )
        counts[1], counts[2] = page.tree_size, 1

    counts = [0, 0, 0]  # lines written, tree size, complete
    try:
        _as_device(args, work, deliveries=False)
    finally:
        if partial.exists() and not counts[2]:
            partial.unlink()
    partial.replace(out)
    emit_json({"out": str(out), "lines": counts[0], "tree_size": counts[1]})


def cmd_accesses(args: argparse.Namespace) -> None:
    async def work(client: Client) -> None:
        page = await client.request(f.AuditListAccesses, limit=args.limit)
        await _events_out(args, client, page.events)

    _as_device(args, work, deliveries=False)


def register(commands: Any) -> None:
    """Add ``gchat audit ...`` to the top-level subcommands."""
    audit = commands.add_parser("audit", help="audit log: verify, query, proofs").add_subparsers(
        dest="audit_command", required=True
    )
    verify = audit.add_parser("verify", help="verify an export offline (no server)")
    verify.add_argument("--export", required=True, type=Path, help="JSON Lines export")
    verify.add_argument("--key", required=True, help="audit public key: hex, or a file")
    verify.add_argument(
        "--known-head", action="append", help="a tree head saved earlier (JSON), repeatable"
    )
    verify.set_defaults(func=cmd_verify)

    public = audit.add_parser("public-key", help="print the audit public key (server host)")
    public.add_argument("--keys-dir", type=Path)
    public.add_argument("--json", action="store_true", help="JSON with the key id")
    public.set_defaults(func=cmd_public_key)

    archive = audit.add_parser(
        "archive", help="archive and drop months past retention (server host, database owner)"
    )
    archive.add_argument("--out", required=True, type=Path, help="folder for the archives")
    archive.add_argument("--before", help="archive months that ended by this date (YYYY-MM-DD); "
                         "default: now minus audit_retention_days")
    archive.add_argument("--keys-dir", type=Path)
    archive.add_argument("--json", action="store_true", help="JSON lines for scripts")
    archive.set_defaults(func=cmd_archive)

    kinds = audit.add_parser("kinds", help="the event kinds --kind accepts")
    kinds.set_defaults(func=cmd_kinds)

    query = audit.add_parser("query", help="events by official, device, agency, kind, time")
    _device_args(query)
    query.add_argument("--json", action="store_true", help="JSON lines for scripts")
    query.add_argument("--official", help="official id")
    query.add_argument("--device", help="device id")
    query.add_argument("--agency", help="agency code or id (with its sub-agencies)")
    query.add_argument("--kind", action="append", help="event kind, repeatable (gchat audit kinds)")
    query.add_argument("--since", help="from (inclusive): 2026-11-01, 2026-11-01T08:00, 24h, 7d")
    query.add_argument("--until", help="until (exclusive), same forms as --since")
    query.add_argument("--limit", type=int, default=100)
    query.add_argument("--all", action="store_true", help="follow every page")
    query.set_defaults(func=cmd_query)

    head = audit.add_parser("tree-head", help="the latest signed tree head (save it)")
    _device_args(head)
    head.add_argument("--cached", action="store_true", help="do not ask for a fresh one")
    head.set_defaults(func=cmd_tree_head)

    inclusion = audit.add_parser("inclusion", help="inclusion proof of one entry")
    _device_args(inclusion)
    inclusion.add_argument("--index", type=int, required=True)
    inclusion.add_argument("--size", type=int, required=True)
    inclusion.set_defaults(func=cmd_inclusion)

    consistency = audit.add_parser("consistency", help="consistency proof of two sizes")
    _device_args(consistency)
    consistency.add_argument("--old", type=int, required=True)
    consistency.add_argument("--new", type=int, required=True)
    consistency.set_defaults(func=cmd_consistency)

    export = audit.add_parser("export", help="export a range as JSON Lines with proofs")
    _device_args(export)
    export.add_argument("--out", type=Path, required=True)
    export.add_argument("--start", type=int, default=0)
    export.add_argument("--end", type=int)
    export.add_argument("--size", type=int, help="tree size of a signed head (default: fresh)")
    export.set_defaults(func=cmd_export)

    accesses = audit.add_parser("accesses", help="auditors' queries about me (after a delay)")
    _device_args(accesses)
    accesses.add_argument("--json", action="store_true", help="JSON lines for scripts")
    accesses.add_argument("--limit", type=int, default=100)
    accesses.set_defaults(func=cmd_accesses)
