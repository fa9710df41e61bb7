"""Bulk import of 10,000 officials through the CLI's import path, over the protocol.

As admin_in (agency_admin over DEPT-A): a file with a few deliberately bad
rows gets a dry run that names each one with its reason; applying it changes
nothing; the same file without the bad rows creates all 10,000. Timings are
printed (run with -s to see them).
"""

import csv
import time
from pathlib import Path

import pytest

from gchat.client.admin_import import run_import
from gchat.client.hr_csv import read_import
from tests.directory.conftest import Tree

ROWS = 10_000
GIVEN = ["สมชาย", "สมหญิง", "ประยุทธ", "วิไล", "อนันต์", "กาญจนา", "ธนพล", "ศิริพร"]
FAMILY = ["ใจดี", "รักชาติ", "ทองคำ", "แสงทอง", "บุญมา", "ศรีสุข"]
LATIN_GIVEN = ["Somchai", "Somying", "Prayut", "Wilai", "Anan", "Kanchana", "Thanaphon", "Siriporn"]
LATIN_FAMILY = ["Jaidee", "Rakchat", "Thongkham", "Saengthong", "Boonma", "Srisuk"]

#: line (in the file; the header is line 1) -> (column, change, reason fragment)
BAD = {
    120: ("employee_id", {"employee_id": ""}, "employee_id is missing"),
    1503: ("employee_id", {"employee_id": "HR000010"}, "repeats line 11"),
    2999: ("agency_code", {"agency_code": "NO-SUCH"}, "no agency with code NO-SUCH"),
    4500: ("name_th", {"name_th": "Somchai"}, "has no Thai characters"),
    6001: ("email", {"email": "not-an-address"}, "email is not an address"),
    7777: ("agency_code", {"agency_code": "DEPT-B"}, "outside your scope"),
    9998: ("phone", {"phone": "call me"}, "not a phone number"),
}
#: line -> the stable code (and the line a repeat refers to) a client words it from
CODES = {
    120: ("missing", None),
    1503: ("repeated", 11),
    2999: ("unknown_agency", None),
    4500: ("no_thai", None),
    6001: ("not_email", None),
    7777: ("outside_scope", None),
    9998: ("not_phone", None),
}


def write_file(path: Path, bad: bool) -> None:
    with path.open("w", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["employee_id", "name_th", "name_en", "position", "agency_code",
                         "email", "phone"])
        for i in range(ROWS):
            line = i + 2
            row = {
                "employee_id": f"HR{i + 1:06d}",
                "name_th": f"{GIVEN[i % 8]} {FAMILY[i % 6]}{i}",
                "name_en": f"{LATIN_GIVEN[i % 8]} {LATIN_FAMILY[i % 6]}{i}",
                "position": "นักวิเคราะห์นโยบายและแผน" if i % 2 else "Policy Analyst",
                "agency_code": "DIV-A1" if i % 3 else "DEPT-A",
                "email": f"official{i}@example.go.th",
                "phone": f"+66 2 {i % 900 + 100} {i:04d}"[:20],
            }
            if bad and line in BAD:
                row.update(BAD[line][1])
            writer.writerow(row.values())


async def count_imported(t: Tree) -> int:
    db = t.world.app.db
    assert db is not None
    return int(await db.pool.fetchval(
        "SELECT count(*) FROM officials WHERE employee_id LIKE 'HR%'"))


@pytest.mark.slow  # ten thousand rows through the real import
async def test_import_ten_thousand(tree: Tree, tmp_path: Path) -> None:
    admin = tree.clients["admin_in"]
    bad_file, clean_file = tmp_path / "bad.csv", tmp_path / "clean.csv"
    write_file(bad_file, bad=True)
    write_file(clean_file, bad=False)
    log = tmp_path / "log.txt"

    hr = read_import(bad_file)
    rows = hr.rows
    assert len(rows) == ROWS and hr.ignored == [] and hr.problems == []
    before = await tree.snapshot()
    started = time.perf_counter()
    with log.open("w") as out:
        result, problems = await run_import(admin, rows, apply=False, out=out)
    dry_run_s = time.perf_counter() - started
    assert result.error_count == len(BAD)
    named = {(p.line, p.field): p.reason for p in problems}
    assert set(named) == {(line, column) for line, (column, _, _) in BAD.items()}
    for line, (column, _, reason) in BAD.items():
        assert reason in named[(line, column)], (line, named[(line, column)])
    assert {p.line: (p.code, p.ref_line) for p in problems} == CODES

    started = time.perf_counter()
    with log.open("a") as out:
        result, _ = await run_import(admin, rows, apply=True, out=out)
    refused_s = time.perf_counter() - started
    assert not result.applied and result.created == 0
    assert await tree.snapshot() == before, "a file with bad rows changed something"
    assert await count_imported(tree) == 0

    rows = read_import(clean_file).rows
    started = time.perf_counter()
    with log.open("a") as out:
        result, problems = await run_import(admin, rows, apply=True, out=out)
    apply_s = time.perf_counter() - started
    assert problems == [] and result.applied and result.created == ROWS
    assert await count_imported(tree) == ROWS
    print(f"\nimport of {ROWS} rows: dry run with {len(BAD)} bad rows {dry_run_s:.2f}s; "
          f"refused apply {refused_s:.2f}s; clean apply (stage + check + create) "
          f"{apply_s:.2f}s\n" + log.read_text())

    # The staging area is emptied (staged rows are personal data).
    db = tree.world.app.db
    assert db is not None
    assert await db.pool.fetchval("SELECT count(*) FROM directory_import_rows") == 0
    # Every created official is audited, with the import as a whole.
    events = await db.pool.fetchval(
        "SELECT count(*) FROM audit_events WHERE kind = 'admin.official_created' "
        "AND convert_from(entry, 'UTF8') LIKE '%\"import\"%'")
    assert events == ROWS
