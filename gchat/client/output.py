"""What the admin and auditor commands print: tables for people, JSON for machines.

Why one module: every command prints the same way, so a person reads
aligned tables with names and local times, and a script that passes
``--json`` gets JSON only on stdout (one object a line), with every note
and progress line on stderr.
"""

import json
import sys
import unicodedata
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from typing import Any, TextIO

import msgspec

from protocol import frames as f


def width(text: str) -> int:
    """Display width: Thai vowel and tone marks take no column, wide CJK two."""
    total = 0
    for ch in text:
        if unicodedata.combining(ch) or unicodedata.category(ch) in ("Mn", "Me", "Cf"):
            continue
        total += 2 if unicodedata.east_asian_width(ch) in ("W", "F") else 1
    return total


def table(
    headers: Sequence[str], rows: Iterable[Sequence[object]], out: TextIO | None = None
) -> None:
    """An aligned table (Thai-aware widths); ``(none)`` when there are no rows."""
    out = out or sys.stdout
    cells = [[("" if v is None else str(v)) for v in row] for row in rows]
    widths = [width(h) for h in headers]
    for row in cells:
        widths = [max(w, width(c)) for w, c in zip(widths, row, strict=True)]

    def line(values: Sequence[str]) -> str:
        return "  ".join(v + " " * (w - width(v)) for v, w in zip(values, widths, strict=True))

    print(line(headers).rstrip(), file=out)
    print("  ".join("-" * w for w in widths), file=out)
    for row in cells:
        print(line(row).rstrip(), file=out)
    if not cells:
        print("(none)", file=out)


def when(ms: int | None) -> str:
    """Epoch milliseconds as this machine's local time, with its zone (e.g. +07)."""
    if ms is None:
        return ""
    moment = datetime.fromtimestamp(ms / 1000, UTC).astimezone()
    return moment.strftime("%Y-%m-%d %H:%M:%S %Z")


def emit(data: Any) -> None:
    """One JSON line on stdout: a frame, a struct, or plain data."""
    print(msgspec.json.encode(data).decode(), flush=True)


def emit_json(data: dict[str, Any]) -> None:
    """One JSON line on stdout, non-ASCII kept readable."""
    print(json.dumps(data, ensure_ascii=False), flush=True)


def note(text: str) -> None:
    """A line for the person (stderr, so ``--json`` output stays pure)."""
    print(text, file=sys.stderr, flush=True)


def roles_text(roles: Sequence[f.RoleInfo], codes: dict[Any, str]) -> str:
    """``agency_admin@MOI,auditor``: roles beyond ``official``, scopes by agency code."""
    parts = []
    for r in roles:
        if r.role == "official":
            continue
        scope = (
            ""
            if r.scope_agency_id is None
            else "@" + codes.get(r.scope_agency_id, str(r.scope_agency_id))
        )
        parts.append(r.role + scope)
    return ",".join(parts)
