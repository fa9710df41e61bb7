"""``gchat admin ...`` as an admin device, and Thai names through create, search,
export and import, unchanged.

The CLI runs in a helper thread (it calls ``asyncio.run`` itself) with a state
file of the superadmin's second device, against the test's real node.
"""

import asyncio
import csv
import io
import json
import threading
import unicodedata
from collections.abc import AsyncIterator
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path

import pytest

from gchat import cli
from gchat.client.state import StateFile
from protocol import frames as f
from tests.directory.conftest import Tree

#: Names that exercise Thai: tone marks, above/below vowels, sara am, a glued
#: title, a Thai digit, and a non-breaking space is NOT used (it would be trimmed).
THAI = [
    ("นายสมชาย ใจดี", "Somchai Jaidee", "นักวิเคราะห์นโยบายและแผนชำนาญการพิเศษ"),
    ("นางสาวพิมพ์ชนก ศรีสุข", "Pimchanok Srisuk", "นิติกร"),
    ("ดร.กำพล น้ำใจ", "Kamphon Namjai", "ผู้อำนวยการกองที่ ๓"),
]


class Cli:
    def __init__(self, state: Path) -> None:
        self.state = state

    def run(self, *argv: str) -> tuple[int, str, str]:
        out, err = io.StringIO(), io.StringIO()
        status: list[int] = []

        def target() -> None:
            with redirect_stdout(out), redirect_stderr(err):
                try:
                    cli.main([*argv, "--state", str(self.state)])
                    status.append(0)
                except SystemExit as done:
                    if isinstance(done.code, str):
                        print(done.code, file=err)
                    status.append(1 if done.code not in (None, 0) else 0)

        thread = threading.Thread(target=target)
        thread.start()
        thread.join()
        return status[0], out.getvalue(), err.getvalue()


@pytest.fixture
async def admin_cli(tree: Tree, tmp_path: Path) -> AsyncIterator[Cli]:
    device = await tree.enrolled(tree.officials["superadmin"], "admin-laptop")
    path = tmp_path / "admin.state"
    StateFile.with_key_file(path, tmp_path / "admin.state.key").save(device.state)
    await device.close()
    yield Cli(path)


async def run(cli_: Cli, *argv: str) -> tuple[int, str, str]:
    return await asyncio.to_thread(cli_.run, *argv)


async def test_admin_commands_tables_and_errors(tree: Tree, admin_cli: Cli) -> None:
    status, out, _ = await run(admin_cli, "admin", "agency", "list")
    assert status == 0 and "DEPT-A" in out and "  DIV-A1" in out  # indented under its parent
    status, out, _ = await run(admin_cli, "admin", "agency", "create", "--code", "DIV-A2",
                               "--name-th", "กองสอง", "--name-en", "Division Two",
                               "--parent", "DEPT-A")
    assert status == 0 and "กองสอง" in out
    status, out, _ = await run(admin_cli, "admin", "official", "add", "--agency", "DIV-A2",
                               "--name-th", "วิไล ทองคำ", "--name-en", "Wilai Thongkham",
                               "--employee-id", "CLI-1", "--json")
    assert status == 0
    official = json.loads(out.splitlines()[0])["id"]
    status, out, _ = await run(admin_cli, "admin", "role", "grant", official, "agency_admin",
                               "--scope", "DIV-A2")
    assert status == 0 and "agency_admin@DIV-A2" in out
    status, out, _ = await run(admin_cli, "admin", "code", "issue", official)
    assert status == 0 and "enrolment code" in out
    status, out, _ = await run(admin_cli, "admin", "policy", "set", "--agency", "DIV-A2",
                               "--message-scope", "ministry", "--max-devices", "2")
    assert status == 0 and "ministry" in out
    status, out, _ = await run(admin_cli, "admin", "official", "suspend", official)
    assert status == 0 and "suspended" in out
    status, out, _ = await run(admin_cli, "admin", "official", "show", official)
    assert status == 0 and "วิไล ทองคำ" in out and "suspended" in out
    # A clear error: a superadmin cannot retire itself.
    status, _, err = await run(admin_cli, "admin", "official", "retire",
                               str(tree.officials["superadmin"]))
    assert status == 1 and "refused: you cannot change your own status (forbidden)" in err
    status, _, err = await run(admin_cli, "admin", "agency", "move", "DEPT-A", "--parent", "NOPE")
    assert status == 1 and "no agency with the code NOPE" in err


def width_ok(line: str) -> bool:
    return all(unicodedata.category(ch) != "Cc" for ch in line)


async def test_thai_names_round_trip(tree: Tree, admin_cli: Cli, tmp_path: Path) -> None:
    # 1. create (over the protocol, through the CLI)
    for i, (th, en, position) in enumerate(THAI):
        status, _, err = await run(admin_cli, "admin", "official", "add", "--agency", "DIV-A1",
                                   "--name-th", th, "--name-en", en, "--position", position,
                                   "--employee-id", f"TH-{i}")
        assert status == 0, err
    # 2. search: a Thai prefix finds each, and the strings come back unchanged
    searcher = tree.clients["official"]
    for th, en, position in THAI:
        first_word = th.split()[0]
        prefix = first_word[:4]
        reply = await searcher.request(f.SearchOfficials, query=prefix)
        cards = [c for c in reply.results if c.name_en == en]
        assert len(cards) == 1, (prefix, reply.results)
        assert (cards[0].name_th, cards[0].position) == (th, position)
    status, out, _ = await run(admin_cli, "admin", "search", "สมชาย")
    assert status == 0 and "นายสมชาย ใจดี" in out and all(width_ok(x) for x in out.splitlines())
    # 3. export (CSV and JSON)
    exported = tmp_path / "directory.csv"
    status, _, err = await run(admin_cli, "admin", "export", "--output", str(exported))
    assert status == 0, err
    rows = {r["employee_id"]: r
            for r in csv.DictReader(io.StringIO(exported.read_text("utf-8-sig")))}
    for i, (th, en, position) in enumerate(THAI):
        row = rows[f"TH-{i}"]
        assert (row["name_th"], row["name_en"], row["position"]) == (th, en, position)
    status, out, _ = await run(admin_cli, "admin", "export", "--format", "json")
    data = json.loads(out)
    by_id = {o["employee_id"]: o for o in data["officials"]}
    assert [by_id[f"TH-{i}"]["name_th"] for i in range(3)] == [t[0] for t in THAI]
    # 4. import the export (new employee ids), then export again: identical names
    copy = tmp_path / "reimport.csv"
    with (exported.open(encoding="utf-8-sig", newline="") as src,
          copy.open("w", encoding="utf-8-sig") as dst):
        reader = csv.DictReader(src)
        writer = csv.DictWriter(dst, fieldnames=reader.fieldnames or [])
        writer.writeheader()
        for row in reader:
            if row["employee_id"].startswith("TH-"):
                row["employee_id"] = "RE-" + row["employee_id"]
                writer.writerow(row)
    status, out, err = await run(admin_cli, "admin", "import", str(copy), "--apply")
    assert status == 0, out + err
    assert "applied: 3 officials created, 0 updated" in err
    assert "ignoring columns status, roles" in err
    status, _, _ = await run(admin_cli, "admin", "export", "--output", str(exported))
    rows = {r["employee_id"]: r
            for r in csv.DictReader(io.StringIO(exported.read_text("utf-8-sig")))}
    for i, (th, en, position) in enumerate(THAI):
        again = rows[f"RE-TH-{i}"]
        assert (again["name_th"], again["name_en"], again["position"]) == (th, en, position)
        assert again["name_th"].encode() == th.encode()


async def test_import_dry_run_names_bad_rows(admin_cli: Cli, tmp_path: Path) -> None:
    path = tmp_path / "hr.csv"
    path.write_text(
        "employee_id,name_th,name_en,position,agency_code,email,phone\n"
        "E-1,สมชาย ใจดี,Somchai Jaidee,นิติกร,DIV-A1,somchai@example.go.th,+66 2 123 4567\n"
        "E-2,Somchai,,,DIV-A1,,\n"
        "E-1,วิไล ทองคำ,,,NOPE,bad-address,\n",
        encoding="utf-8",
    )
    status, out, err = await run(admin_cli, "admin", "import", str(path))
    assert status == 1
    assert "dry run: 3 rows; 4 problems in 2 rows" in err
    lines = out.splitlines()
    assert any(x.startswith("3 ") and "no Thai characters" in x for x in lines), out
    assert any(x.startswith("4 ") and "repeats line 2" in x for x in lines), out
    assert any(x.startswith("4 ") and "no agency with code NOPE" in x for x in lines), out
    assert any(x.startswith("4 ") and "email is not an address" in x for x in lines), out
