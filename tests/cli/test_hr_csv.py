"""The HR CSV through the real ``gchat admin import/export`` against a real node:
a TIS-620 file from Thai Excel, problems by line and column, ``--json`` that
is only JSON, an export Excel opens (BOM) that cannot run formulas, and the
export imported again with ``--update``."""

import csv
import io
import json
from pathlib import Path

from tests.cli.conftest import Node, one_line_error

HEADER = "employee_id,name_th,name_en,position,agency_code,email,phone\r\n"


def officials(node: Node) -> dict[str, dict]:
    out = node.run("admin", "official", "list", "--json", "--state", str(node.admin),
                   check=True)
    found = [json.loads(line) for line in out.stdout.splitlines()]
    return {o["employee_id"]: o for o in found if o["employee_id"]}


def test_tis620_file_imports_with_thai_intact(node: Node, tmp_path: Path) -> None:
    path = tmp_path / "hr-tis620.csv"
    path.write_bytes((HEADER
                      + "T-1,นายสมชาย ใจดี,Somchai Jaidee,นิติกรชำนาญการ,MOI,,\r\n"
                      + "T-2,นางสาวพิมพ์ชนก ศรีสุข,,ผู้อำนวยการกองที่ ๓,MOI,,\r\n"
                      ).encode("cp874"))
    dry = node.run("admin", "import", str(path), "--state", str(node.admin))
    assert dry.returncode == 0, dry.stderr
    assert "as TIS-620 (cp874)" in dry.stderr and "would create 2" in dry.stderr
    applied = node.run("admin", "import", str(path), "--apply", "--state", str(node.admin))
    assert applied.returncode == 0 and "2 officials created" in applied.stderr
    found = officials(node)
    assert found["T-1"]["name_th"] == "นายสมชาย ใจดี"
    assert found["T-2"]["position"] == "ผู้อำนวยการกองที่ ๓"


def test_problems_by_line_and_column_and_pure_json(node: Node, tmp_path: Path) -> None:
    path = tmp_path / "hr.csv"
    path.write_text(
        HEADER
        + "P-1,สมชาย ใจดี,,,MOI,not-an-address,\r\n"   # line 2: email (F)
        + '"P-2","วิไล\r\nทองคำ",,,MOI,,\r\n'            # lines 3-4: a line break in a cell
        + "P-3,Somchai,,,MOI,,,extra\r\n"               # line 5: too many fields
        + "P-4,สมหญิง,,,MOI,,\r\n",                      # line 6: fine
        encoding="utf-8-sig",
    )
    out = node.run("admin", "import", str(path), "--json", "--state", str(node.admin))
    assert out.returncode == 1
    report = json.loads(out.stdout)  # the whole of stdout is one JSON object
    assert report["rows"] == 4 and report["bad_rows"] == 3 and report["error_count"] == 3
    problems = {(e["line"], e["column"]) for e in report["errors"]}
    assert problems == {(2, "F (email)"), (3, "B (name_th)"), (5, "")}, report["errors"]
    human = node.run("admin", "import", str(path), "--apply", "--state", str(node.admin))
    assert human.returncode == 1 and "Traceback" not in human.stderr
    assert "B (name_th)" in human.stdout and "nothing was changed" in human.stderr
    assert "P-4" not in officials(node)  # all or nothing


def test_unreadable_encoding_is_one_line(node: Node, tmp_path: Path) -> None:
    path = tmp_path / "broken.csv"
    path.write_bytes(HEADER.encode() + b"X-1,\xfc\xfd,,,MOI,,\r\n")
    out = node.run("admin", "import", str(path), "--state", str(node.admin))
    one_line_error(out, "neither UTF-8 nor TIS-620", "line 2", "--encoding")


def test_export_opens_in_excel_is_formula_safe_and_imports_again(
    node: Node, tmp_path: Path
) -> None:
    node.run("admin", "agency", "create", "--code", "MOI-DOPA", "--name-th", "กรมการปกครอง",
             "--parent", "MOI", "--state", str(node.admin), check=True)
    node.run("admin", "official", "add", "--agency", "MOI", "--employee-id", "F-1",
             "--name-th", "ทดสอบ สูตร", "--name-en", "=HYPERLINK(\"http://x\",\"y\")",
             "--phone", "+66 2 123 4567", "--state", str(node.admin), check=True)
    export = tmp_path / "export.csv"
    node.run("admin", "export", "--output", str(export), "--state", str(node.admin),
             check=True)
    raw = export.read_bytes()
    assert raw.startswith(b"\xef\xbb\xbf")  # BOM: Excel reads UTF-8
    rows = {r["employee_id"]: r for r in csv.DictReader(io.StringIO(raw.decode("utf-8-sig")))}
    assert rows["F-1"]["name_en"] == "'=HYPERLINK(\"http://x\",\"y\")"  # text, not a formula
    assert rows["F-1"]["phone"] == "'+66 2 123 4567"
    assert all(not v.startswith(("=", "+", "-", "@")) for r in rows.values() for v in r.values())

    # Unchanged, the export imports again as a no-op update.
    same = node.run("admin", "import", str(export), "--update", "--state", str(node.admin))
    assert same.returncode == 0, same.stdout + same.stderr
    from_hr = [r for r in rows.values() if r["employee_id"]]
    assert f"would create 0, update 0, leave {len(from_hr)} unchanged" in same.stderr
    assert "passing over 1 exported officials without an employee_id" in same.stderr
    plain = node.run("admin", "import", str(export), "--state", str(node.admin))
    assert plain.returncode == 1 and "import --update" in plain.stdout

    # Renamed and transferred in HR: edit the export, import it with --update.
    text = raw.decode("utf-8-sig").replace("Somchai Jaidee", "Somchai Jaidee-Rak")
    lines = text.split("\r\n")
    lines = [line.replace(",MOI,", ",MOI-DOPA,") if line.startswith("T-2,") else line
             for line in lines]
    export.write_bytes(b"\xef\xbb\xbf" + "\r\n".join(lines).encode())
    out = node.run("admin", "import", str(export), "--update", "--apply",
                   "--state", str(node.admin))
    assert out.returncode == 0, out.stdout + out.stderr
    assert "0 officials created, 2 updated" in out.stderr
    found = officials(node)
    assert found["T-1"]["name_en"] == "Somchai Jaidee-Rak"
    assert found["T-2"]["agency_code"] == "MOI-DOPA"
    assert found["F-1"]["phone"] == "+66 2 123 4567"  # the guard came off again
    assert found["F-1"]["name_en"] == "=HYPERLINK(\"http://x\",\"y\")"
