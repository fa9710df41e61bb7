"""``gchat audit ...``: auditors' commands, and the offline verifier.

    gchat audit verify --export FILE --key HEX|FILE [--known-head FILE ...]
    gchat audit public-key [--keys-dir DIR]      (on the server host)
    gchat audit query --state FILE [--official ID] [--device ID] [--agency ID]
                      [--kind K ...] [--since ISO] [--until ISO] [--limit N] [--all]
    gchat audit tree-head --state FILE [--cached]
    gchat audit inclusion --state FILE --index I --size N
    gchat audit consistency --state FILE --old M --new N
    gchat audit export --state FILE --out FILE [--start I] [--end J] [--size N]
    gchat audit accesses --state FILE        (any official: who audited me)

``verify`` needs no server: it reads an export (JSON Lines) and the audit
public key (hex, or a file holding it) and exits 0 only if everything
verifies; otherwise it names the first failing entry and why (exit 1).
The other commands run as an enrolled device (see ``gchat client``) whose
official has the ``auditor`` role, and print JSON.
"""

import argparse
import json
import sys
import uuid
from datetime import datetime
from pathlib import Path
from typing import Any

from gchat.audit.verify import verify_export
from gchat.client.cli import _as_device, _device_args, _print
from gchat.client.sdk import Client
from protocol import frames as f


def _ms(text: str | None) -> int | None:
    if text is None:
        return None
    return int(datetime.fromisoformat(text).timestamp() * 1000)


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
    path = Path(value)
    text = path.read_text().strip() if path.exists() else value.strip()
    key = bytes.fromhex(text)
    if len(key) != 32:
        sys.exit("the audit public key must be 32 bytes, in hex")
    return key


def cmd_verify(args: argparse.Namespace) -> None:
    known = [json.loads(Path(p).read_text()) for p in args.known_head or []]
    with Path(args.export).open("rb") as file:
        report = verify_export(file, _public_key(args.key), known)
    print(report.summary())
    sys.exit(0 if report.ok else 1)


def cmd_public_key(args: argparse.Namespace) -> None:
    """On the server host: print the audit public key auditors verify with."""
    from gchat import config
    from gchat.audit.verify import key_id
    from gchat.runtime.server_keys import ServerKeys

    cfg = config.load(toml_path=args.config)
    if args.keys_dir is not None:
        keys_dir = args.keys_dir
    else:
        keys_dir = cfg.key_directory
    public = ServerKeys.load_or_create(keys_dir).audit.public_key
    _print({"audit_public_key": public.hex(), "key_id": key_id(public).hex()})


def cmd_query(args: argparse.Namespace) -> None:
    async def work(client: Client) -> None:
        after = 0
        while True:
            page = await client.request(
                f.AuditQuery,
                official_id=args.official,
                device_id=args.device,
                agency_id=args.agency,
                kinds=args.kind or [],
                since=_ms(args.since),
                until=_ms(args.until),
                after=after,
                limit=args.limit,
            )
            for event in page.events:
                _print(_event(event))
            if page.next_after is None or not args.all:
                if page.next_after is not None:
                    _print({"next_after": page.next_after})
                return
            after = page.next_after

    _as_device(args, work)


def cmd_tree_head(args: argparse.Namespace) -> None:
    async def work(client: Client) -> None:
        reply = await client.request(f.AuditGetTreeHead, fresh=not args.cached)
        _print(_head(reply.head) or {})

    _as_device(args, work)


def cmd_inclusion(args: argparse.Namespace) -> None:
    async def work(client: Client) -> None:
        r = await client.request(f.AuditGetInclusion, leaf_index=args.index, tree_size=args.size)
        _print(
            {
                "leaf_index": r.leaf_index,
                "tree_size": r.tree_size,
                "entry": r.entry,
                "leaf_hash": r.leaf_hash.hex(),
                "proof": [p.hex() for p in r.proof],
                "tree_head": _head(r.head),
            }
        )

    _as_device(args, work)


def cmd_consistency(args: argparse.Namespace) -> None:
    async def work(client: Client) -> None:
        r = await client.request(f.AuditGetConsistency, old_size=args.old, new_size=args.new)
        _print(
            {
                "old_size": r.old_size,
                "new_size": r.new_size,
                "proof": [p.hex() for p in r.proof],
                "old_head": _head(r.old_head),
                "new_head": _head(r.new_head),
            }
        )

    _as_device(args, work)


def cmd_export(args: argparse.Namespace) -> None:
    async def work(client: Client) -> None:
        lines: list[str] = []
        page = await client.request(
            f.AuditExport, start=args.start, end=args.end, tree_size=args.size
        )
        while True:
            lines += page.lines
            if page.cursor is None:
                break
            page = await client.request(
                f.AuditExport,
                start=args.start,
                end=args.end,
                tree_size=page.tree_size,
                cursor=page.cursor,
            )
        result.extend(lines)
        sizes.append(page.tree_size)

    result: list[str] = []
    sizes: list[int] = []
    _as_device(args, work)
    Path(args.out).write_text("".join(line + "\n" for line in result), encoding="utf-8")
    _print({"out": str(args.out), "lines": len(result), "tree_size": sizes[-1]})


def cmd_accesses(args: argparse.Namespace) -> None:
    async def work(client: Client) -> None:
        page = await client.request(f.AuditListAccesses, limit=args.limit)
        for event in page.events:
            _print(_event(event))

    _as_device(args, work)


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
    public.set_defaults(func=cmd_public_key)

    query = audit.add_parser("query", help="events by official, device, agency, kind, time")
    _device_args(query)
    query.add_argument("--official", type=uuid.UUID)
    query.add_argument("--device", type=uuid.UUID)
    query.add_argument("--agency", type=uuid.UUID)
    query.add_argument("--kind", action="append", help="event kind, repeatable")
    query.add_argument("--since", help="ISO 8601 time (inclusive)")
    query.add_argument("--until", help="ISO 8601 time (exclusive)")
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
    accesses.add_argument("--limit", type=int, default=100)
    accesses.set_defaults(func=cmd_accesses)
