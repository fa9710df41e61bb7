"""``gchat admin import`` and ``gchat admin export``: the HR file in and out.

Import is a dry run unless ``--apply``, and all or nothing: the server
checks every row (again, at apply) and changes nothing if any row is bad.
``--update`` syncs officials already in the directory by employee id, so an
export, edited, imports again. People read a summary and a table of
problems by line and column; ``--json`` prints one JSON object and nothing
else on stdout (progress goes to stderr either way).
"""

import argparse
import contextlib
import io
import json
import sys
import time
import uuid
from collections.abc import Sequence
from typing import Any, TextIO

import msgspec

from gchat.client import hr_csv
from gchat.client.cli import _as_device
from gchat.client.cli_errors import UserError
from gchat.client.lookup import agency_id, all_officials
from gchat.client.output import emit, note, roles_text, table
from gchat.client.rpc import ClientError
from gchat.client.sdk import Client
from protocol import frames as f


async def run_import(
    client: Client, rows: Sequence[f.ImportRow], apply: bool, out: TextIO, update: bool = False
) -> tuple[f.ImportResult, list[f.RowError]]:
    """Stage, dry-run, and (if asked and clean) apply; progress lines go to ``out``."""
    started = time.perf_counter()
    begun: f.ImportStarted = await client.request(f.ImportBegin)
    import_id = begun.import_id
    problems: list[f.RowError] = []
    applied = False
    try:
        for chunk in hr_csv.chunks(rows):
            checked: f.ImportChecked = await client.request(
                f.ImportRows, import_id=import_id, rows=chunk, update=update
            )
            problems.extend(checked.errors)
        staged = time.perf_counter()
        result: f.ImportResult = await client.request(
            f.ImportApply, import_id=import_id, dry_run=True, update=update
        )
        checked_at = time.perf_counter()
        if result.error_count and len(result.errors) > len(problems):
            problems = list(result.errors)  # the full check saw more (a concurrent change)
        if result.error_count:
            print(
                f"dry run: {result.rows} rows; {result.error_count} problems in "
                f"{result.bad_rows} rows (staged in {staged - started:.2f}s, checked in "
                f"{checked_at - staged:.2f}s)",
                file=out,
            )
        else:
            print(
                f"dry run: {result.rows} rows; would create {result.created}, update "
                f"{result.updated}, leave {result.unchanged} unchanged (staged in "
                f"{staged - started:.2f}s, checked in {checked_at - staged:.2f}s)",
                file=out,
            )
        if apply and result.error_count == 0:
            result = await client.request(
                f.ImportApply, import_id=import_id, dry_run=False, update=update
            )
            applied = result.applied
            print(
                f"applied: {result.created} officials created, {result.updated} updated in "
                f"{time.perf_counter() - checked_at:.2f}s "
                f"(total {time.perf_counter() - started:.2f}s)",
                file=out,
            )
        elif apply:
            print("not applied: the file has problems; nothing was changed", file=out)
    finally:
        if not applied:
            with contextlib.suppress(ClientError, ConnectionError):
                await client.request(f.ImportDiscard, import_id=import_id)
    return result, problems


def cmd_import(args: argparse.Namespace) -> None:
    try:
        hr = hr_csv.read_import(args.file, args.encoding)
    except hr_csv.ImportFileError as error:
        raise UserError(str(error)) from None
    note(
        f"read {args.file} as {hr.encoding}: "
        f"{len(hr.rows) + len({p.line for p in hr.problems})} rows"
    )
    if hr.ignored:
        note(f"note: ignoring columns {', '.join(hr.ignored)}")
    if hr.skipped:
        note(
            f"note: passing over {hr.skipped} exported officials without an employee_id "
            "(nothing to match them by)"
        )
    apply = args.apply and not hr.problems

    async def work(client: Client) -> None:
        result, problems = await run_import(client, hr.rows, apply, sys.stderr, args.update)
        found = [(p.line, hr.column(p.field) if p.field else "", p.reason) for p in hr.problems]
        found += [(p.line, hr.column(p.field), p.reason) for p in problems]
        found.sort(key=lambda p: p[0])
        unread = len({p.line for p in hr.problems})  # rows not sent
        error_count = result.error_count + len(hr.problems)
        bad_rows = result.bad_rows + unread
        if args.json:
            data = msgspec.to_builtins(result)
            data.update(
                error_count=error_count,
                bad_rows=bad_rows,
                rows=result.rows + unread,
                encoding=hr.encoding,
                errors=[
                    {"line": line, "column": column, "reason": reason}
                    for line, column, reason in found
                ],
            )
            emit(data)
        elif found:
            table(("line", "column", "problem"), found)
            if error_count > len(found):
                print(f"... and {error_count - len(found)} more")
        if hr.problems:
            note(
                f"in all: {result.rows + unread} rows; {error_count} problems in {bad_rows} "
                f"rows ({unread} rows could not be read and were not sent)"
            )
            if args.apply:
                note("not applied: the file has problems; nothing was changed")
        if error_count:
            sys.exit(1)
        if not args.apply:
            note("the file is clean; run again with --apply to make these changes")

    _as_device(args, work)


async def export_directory(client: Client, agency: uuid.UUID | None) -> dict[str, Any]:
    agencies: f.AgencyList = await client.request(f.ListAgencies, root_id=agency)
    officials = await all_officials(client, agency, None)
    return {"agencies": agencies.agencies, "officials": officials}


def cmd_export(args: argparse.Namespace) -> None:
    async def work(client: Client) -> None:
        data = await export_directory(client, await agency_id(client, args.agency))
        codes = {a.id: a.code for a in data["agencies"]}
        buffer = io.StringIO()
        if args.format == "json":
            buffer.write(json.dumps(msgspec.to_builtins(data), ensure_ascii=False, indent=1))
            buffer.write("\n")
        else:
            officials = data["officials"]
            hr_csv.write_csv(officials, [roles_text(o.roles, codes) for o in officials], buffer)
        if args.output:
            args.output.write_text(buffer.getvalue(), encoding="utf-8", newline="")
            note(
                f"wrote {len(data['officials'])} officials and {len(data['agencies'])} "
                f"agencies to {args.output}"
            )
        else:
            sys.stdout.write(buffer.getvalue())

    _as_device(args, work)
