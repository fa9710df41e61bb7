"""``gchat admin import`` and ``gchat admin export``: the HR file in and out.

Import is a dry run unless ``--apply``, and all or nothing: the server
checks every row (again, at apply) and changes nothing if any row is bad.
``--update`` syncs officials already in the directory by employee id, so an
export, edited, imports again. People read a summary and a table of
problems by line and column; ``--json`` prints one JSON object and nothing
else on stdout (progress goes to stderr either way).
"""

import argparse
import asyncio
import contextlib
import json
import sys
import time
import uuid
from collections import deque
from collections.abc import Callable, Iterable
from typing import TextIO

import msgspec

from gchat.client import hr_csv
from gchat.client.cli import _as_device
from gchat.client.cli_errors import UserError
from gchat.client.lookup import agency_id, official_pages
from gchat.client.output import emit, note, roles_text, table
from gchat.client.rpc import ClientError
from gchat.client.sdk import Client
from protocol import frames as f

#: Problems kept from staging replies (the dry run's count is exact anyway).
MAX_KEPT = 10_000


#: Seconds between progress lines while staging.
PROGRESS_EVERY = 2.0
#: Chunks in flight at most: two wait at the node while the next is read.
IN_FLIGHT = 3


async def run_import(
    client: Client,
    rows: Iterable[f.ImportRow],
    apply: bool,
    out: TextIO,
    update: bool = False,
    expected: int = 0,
    clean: Callable[[], bool] = lambda: True,
    seconds: dict[str, float] | None = None,
) -> tuple[f.ImportResult, list[f.RowError]]:
    """Stage, dry-run, and (if asked and clean) apply; progress lines go to ``out``.

    ``rows`` may be a stream (read as it is sent: the CLI never holds the
    whole file as rows); ``expected`` (about how many) sizes the progress
    line; ``clean()``, asked once every row is read, says whether the reader
    found no problems of its own (if it did, nothing is applied);
    ``seconds``, if given, gets the time staging and the final check took.
    """
    started = time.perf_counter()
    begun: f.ImportStarted = await client.request(f.ImportBegin)
    import_id = begun.import_id
    problems: list[f.RowError] = []
    applied = False
    try:
        sent = 0
        shown = started
        # Chunks sent ahead (the node answers in order): it stages them while
        # this process reads and encodes the next, so neither waits for the other.
        waiting: deque[tuple[int, asyncio.Future[f.ImportChecked]]] = deque()
        try:
            for chunk in hr_csv.chunks(rows):
                waiting.append(
                    (
                        len(chunk),
                        await client.rpc.submit(
                            f.ImportRows, import_id=import_id, rows=chunk, update=update
                        ),
                    )
                )
                while waiting and (len(waiting) >= IN_FLIGHT or waiting[0][1].done()):
                    sent += await _checked(waiting.popleft(), problems)
                if time.perf_counter() - shown >= PROGRESS_EVERY:
                    shown = time.perf_counter()
                    print(_progress(sent, expected, shown - started), file=out, flush=True)
            while waiting:
                sent += await _checked(waiting.popleft(), problems)
        finally:
            for _, reply in waiting:  # an error or the file's: the rest are not wanted
                reply.cancel()
        apply = apply and clean()
        staged = time.perf_counter()
        # A real apply checks every row again and changes nothing if one is
        # bad, so with --apply the dry run would only be the same check twice.
        result: f.ImportResult = await client.request(
            f.ImportApply, import_id=import_id, dry_run=not apply, update=update
        )
        applied = result.applied
        done = time.perf_counter()
        if result.error_count and len(result.errors) > len(problems):
            problems = list(result.errors)  # the full check saw more (a concurrent change)
        timing = f"staged in {staged - started:.2f}s, checked in {done - staged:.2f}s"
        if seconds is not None:
            seconds.update(staging=round(staged - started, 2), checking=round(done - staged, 2))
        if result.error_count:
            print(
                f"{'not applied' if apply else 'dry run'}: {result.rows} rows; "
                f"{result.error_count} problems in {result.bad_rows} rows ({timing})",
                file=out,
            )
            if apply:
                print("not applied: the file has problems; nothing was changed", file=out)
        elif applied:
            print(
                f"applied: {result.created} officials created, {result.updated} updated, "
                f"{result.unchanged} unchanged; {result.rows} rows ({timing}, "
                f"total {done - started:.2f}s)",
                file=out,
            )
        else:
            print(
                f"dry run: {result.rows} rows; would create {result.created}, update "
                f"{result.updated}, leave {result.unchanged} unchanged ({timing})",
                file=out,
            )
    finally:
        if not applied:
            with contextlib.suppress(ClientError, ConnectionError):
                await client.request(f.ImportDiscard, import_id=import_id)
    return result, problems


async def _checked(
    sent: tuple[int, "asyncio.Future[f.ImportChecked]"], problems: list[f.RowError]
) -> int:
    """Wait for a staged chunk's reply; keep its problems; how many rows it held."""
    rows, reply = sent
    checked = await reply
    problems.extend(checked.errors[: MAX_KEPT - len(problems)])
    return rows


def _progress(sent: int, expected: int, seconds: float) -> str:
    rate = sent / seconds if seconds else 0.0
    if expected > sent:
        share = sent * 100 // expected
        bar = "#" * (share // 5) + "." * (20 - share // 5)
        return f"staging [{bar}] {sent} of about {expected} rows, {rate:.0f} rows/s"
    return f"staging: {sent} rows, {rate:.0f} rows/s"


def cmd_import(args: argparse.Namespace) -> None:
    try:
        hr, stream = hr_csv.stream_import(args.file, args.encoding)
    except hr_csv.ImportFileError as error:
        raise UserError(str(error)) from None
    note(f"reading {args.file} as {hr.encoding}: {max(hr.lines - 1, 0)} lines")
    if hr.ignored:
        note(f"note: ignoring columns {', '.join(hr.ignored)}")

    async def work(client: Client) -> None:
        seconds: dict[str, float] = {}
        try:
            result, problems = await run_import(
                client,
                stream,
                args.apply,
                sys.stderr,
                args.update,
                expected=max(hr.lines - 1, 0),
                clean=lambda: not hr.problems,
                seconds=seconds,
            )
        except hr_csv.ImportFileError as error:
            raise UserError(f"{error}; nothing was changed") from None
        if hr.skipped:
            note(
                f"note: passing over {hr.skipped} exported officials without an employee_id "
                "(nothing to match them by)"
            )
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
                seconds=seconds,
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

    _as_device(args, work, deliveries=False)


async def export_directory(
    client: Client, agency: uuid.UUID | None, json_format: bool, out: TextIO
) -> tuple[int, int]:
    """Write the export to ``out`` page by page; (officials, agencies) written.

    Why streamed: at 400,000 officials the whole directory as objects is
    gigabytes of client memory; a page at a time it is one page.
    """
    agencies: f.AgencyList = await client.request(f.ListAgencies, root_id=agency)
    codes = {a.id: a.code for a in agencies.agencies}
    count = 0
    if json_format:
        listed = json.dumps(msgspec.to_builtins(agencies.agencies), ensure_ascii=False)
        out.write('{"agencies": ' + listed + ', "officials": [')
    else:
        hr_csv.write_csv_header(out)
    async for page in official_pages(client, agency, None):
        if json_format:
            for o in page:
                out.write(",\n " if count else "\n ")
                out.write(json.dumps(msgspec.to_builtins(o), ensure_ascii=False))
                count += 1
        else:
            hr_csv.write_csv_rows(page, [roles_text(o.roles, codes) for o in page], out)
            count += len(page)
    if json_format:
        out.write("\n]}\n")
    return count, len(agencies.agencies)


def cmd_export(args: argparse.Namespace) -> None:
    async def work(client: Client) -> None:
        agency = await agency_id(client, args.agency)
        json_format = args.format == "json"
        if not args.output:
            await export_directory(client, agency, json_format, sys.stdout)
            return
        partial = args.output.with_name(args.output.name + ".partial")
        with partial.open("w", encoding="utf-8", newline="") as out:
            officials, agencies = await export_directory(client, agency, json_format, out)
        partial.replace(args.output)  # a failed export leaves no half file under the name
        note(f"wrote {officials} officials and {agencies} agencies to {args.output}")

    _as_device(args, work, deliveries=False)
