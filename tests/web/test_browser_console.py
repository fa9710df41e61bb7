"""The console in the web app: views follow the official's roles, the node refuses anyway.

One node and one superadmin (the deployment's first, a Python device) per
module; its browser is a second device of the same superadmin, enrolled
with a code it issued itself. An ordinary official's browser shows no
console entry, and the admin frames it sends by hand on its own
authenticated connection are refused.
"""

from __future__ import annotations

import contextlib
import io
import os
import re
from collections.abc import Iterator
from typing import Any

import msgspec
import pytest
import zxingcpp
from PIL import Image
from playwright.sync_api import Browser, BrowserContext, Page, expect

from gchat.client.rpc import ClientError
from protocol import frames as f
from tests.web import ui
from tests.web.harness import Loop, Node, PyDevice, admin_device, new_official

# Records every WebSocket the app opens and every frame it receives, so a
# test can speak on the app's own authenticated connection as a person with
# the devtools open would.
SPY = """
window.__sockets = [];
window.__received = [];
const Original = window.WebSocket;
window.WebSocket = class extends Original {
  constructor(...args) {
    super(...args);
    window.__sockets.push(this);
    this.addEventListener("message", (e) => {
      window.__received.push(Array.from(new Uint8Array(e.data)));
    });
  }
};
"""


@pytest.fixture(scope="module")
def admin(node: Node, loop: Loop) -> PyDevice:
    return admin_device(node, loop)


@contextlib.contextmanager
def superadmin_browser(
    browser: Browser, node: Node, admin: PyDevice, device_name: str
) -> Iterator[Page]:
    """The superadmin's browser: a second device of the same official, with a code it issued."""
    code = admin.request(f.IssueCode, official_id=admin.official_id).code
    context = browser.new_context(viewport=ui.DESKTOP, locale="th-TH", accept_downloads=True)
    context.add_init_script(SPY)
    try:
        page = context.new_page()
        ui.enrol(page, node.http, code, device_name)
        yield page
    finally:
        context.close()


@pytest.fixture(scope="module")
def superadmin_page(browser: Browser, node: Node, admin: PyDevice) -> Iterator[Page]:
    with superadmin_browser(browser, node, admin, "คอมพิวเตอร์สำนักงาน") as page:
        yield page


def official_context(browser: Browser) -> BrowserContext:
    context = browser.new_context(viewport=ui.PHONE, locale="th-TH")
    context.add_init_script(SPY)
    return context


def send_by_hand(page: Page, rid: int, frame: dict[str, Any]) -> dict[str, Any]:
    """Send a frame on the app's own open connection; the node's reply to it."""
    data = list(msgspec.msgpack.encode({**frame, "rid": rid}))
    page.evaluate(
        "(bytes) => window.__sockets.find((s) => s.readyState === 1).send(new Uint8Array(bytes))",
        data,
    )
    for _ in range(100):
        for raw in page.evaluate("window.__received"):
            reply = msgspec.msgpack.decode(bytes(raw))
            if isinstance(reply, dict) and reply.get("rid") == rid:
                return reply
        page.wait_for_timeout(100)
    raise AssertionError(f"no reply to rid {rid}")


def test_superadmin_sees_the_admin_entry_and_the_tree(superadmin_page: Page) -> None:
    page = superadmin_page
    nav = page.get_by_role("navigation", name="ส่วนของแอป")
    expect(nav.get_by_role("link", name="ผู้ดูแลระบบ")).to_be_visible()
    expect(nav.get_by_role("link", name="ตรวจสอบ")).to_have_count(0)  # not an auditor
    nav.get_by_role("link", name="ผู้ดูแลระบบ").click()
    assert page.url.endswith("#/admin")
    tree = page.get_by_test_id("agency-tree")
    expect(tree.locator("li[data-code=MOI]")).to_contain_text("กระทรวงมหาดไทย")
    # In English too, and back.
    page.get_by_role("button", name="เปลี่ยนภาษา").click()
    english = page.get_by_role("navigation", name="App sections")
    english.get_by_role("link", name="Administration").click()
    expect(page.get_by_role("navigation", name="Administration sections")).to_contain_text(
        "AgenciesOfficialsEnrolment codesPolicyImportExport"
    )
    expect(page.get_by_role("heading", name="Agency tree")).to_be_visible()
    page.get_by_role("button", name="Change language").click()
    nav.get_by_role("link", name="แชต").click()
    expect(page.get_by_role("heading", name="การสนทนา")).to_be_visible()


def test_an_official_sees_no_console_and_its_admin_frames_are_refused(
    browser: Browser, node: Node, admin: PyDevice
) -> None:
    official, code = new_official(admin, "สมศรี ธรรมดา")
    context = official_context(browser)
    try:
        page = context.new_page()
        ui.enrol(page, node.http, code)
        expect(page.get_by_role("navigation", name="ส่วนของแอป")).to_have_count(0)
        # Typing the route gives the chats, not a console.
        page.goto(node.http + "/#/admin")
        expect(page.get_by_role("heading", name="การสนทนา")).to_be_visible(timeout=20_000)
        expect(page.get_by_role("heading", name="ผู้ดูแลระบบ")).to_have_count(0)
        expect(page.locator("[data-status=online]")).to_be_visible(timeout=20_000)
        # The devtools way: admin frames on the app's own authenticated socket.
        attempts = [
            {"type": "create_agency", "code": "ROGUE", "name_th": "หน่วยงานปลอม"},
            {"type": "list_agencies"},
            {"type": "grant_role", "official_id": str(official), "role": "superadmin"},
            {"type": "create_official", "name": "บัญชีปลอม"},
        ]
        for rid, frame in enumerate(attempts, start=70001):
            reply = send_by_hand(page, rid, frame)
            assert (reply["type"], reply["code"]) == ("error", "forbidden"), (frame, reply)
        # Nothing changed: no agency, no role, no official.
        agencies = admin.request(f.ListAgencies).agencies
        assert [a.code for a in agencies if a.code == "ROGUE"] == []
        me = admin.request(f.GetOfficial, official_id=official).official
        assert [r.role for r in me.roles] == ["official"]
        found = admin.request(f.SearchOfficials, query="บัญชีปลอม").results
        assert found == []
    finally:
        context.close()


def open_admin(page: Page, tab: str) -> None:
    page.get_by_role("navigation", name="ส่วนของแอป").get_by_role("link", name="ผู้ดูแลระบบ").click()
    page.get_by_role("navigation", name="ส่วนงานผู้ดูแล").get_by_role("link", name=tab).click()


def create_agency(page: Page, parent: str, code: str, name_th: str, name_en: str) -> None:
    form = page.locator("form", has=page.get_by_role("heading", name="เพิ่มหน่วยงาน"))
    form.get_by_label("สังกัด").select_option(label=parent)
    form.get_by_label("รหัสหน่วยงาน").fill(code)
    form.get_by_label("ชื่อภาษาไทย").fill(name_th)
    form.get_by_label("ชื่อภาษาอังกฤษ").fill(name_en)
    form.get_by_role("button", name="สร้าง").click()
    expect(page.get_by_test_id("agency-tree").locator(f"li[data-code='{code}']")).to_be_visible()


def add_official(page: Page, agency_label: str, **fields: str) -> None:
    open_admin(page, "เจ้าหน้าที่")
    page.get_by_role("link", name="เพิ่มเจ้าหน้าที่").click()
    form = page.locator("form", has=page.get_by_role("heading", name="เพิ่มเจ้าหน้าที่"))
    form.get_by_label("หน่วยงาน").select_option(label=agency_label)
    labels = {
        "name_th": "ชื่อภาษาไทย",
        "name_en": "ชื่อภาษาอังกฤษ",
        "position": "ตำแหน่ง",
        "employee_id": "รหัสพนักงาน",
        "email": "อีเมล",
        "phone": "โทรศัพท์",
    }
    for key, value in fields.items():
        form.get_by_label(labels[key], exact=True).fill(value)
    form.get_by_role("button", name="สร้าง").click()
    expect(page.get_by_test_id("official-page").locator("h3")).to_contain_text(fields["name_th"])


def test_superadmin_builds_a_three_level_tree_and_manages_officials(
    superadmin_page: Page, admin: PyDevice, node: Node, loop: Loop
) -> None:
    page = superadmin_page
    open_admin(page, "หน่วยงาน")
    create_agency(
        page,
        "MOI กระทรวงมหาดไทย",
        "DOPA",
        "กรมการปกครอง",
        "Department of Provincial Administration",
    )
    create_agency(
        page, "\u00a0\u00a0DOPA กรมการปกครอง", "DOPA-REG", "สำนักทะเบียน", "Registration Office"
    )
    create_agency(
        page, "MOI กระทรวงมหาดไทย", "DLA", "กรมส่งเสริมการปกครองท้องถิ่น", "Local Administration"
    )
    tree = page.get_by_test_id("agency-tree")
    expect(tree.locator("li[data-code='DOPA-REG']")).to_have_attribute("data-depth", "2")
    # Rename, then move a whole branch: DLA goes under DOPA and back.
    tree.get_by_role("button", name="แก้ไข: DLA").click()
    edit = tree.locator("li[data-code=DLA] form")
    edit.get_by_label("ชื่อภาษาไทย").fill("กรมส่งเสริมการปกครองท้องถิ่น (ใหม่)")
    edit.get_by_label("ย้ายไปอยู่ใต้").select_option(label="DOPA กรมการปกครอง")
    edit.get_by_role("button", name="บันทึก").click()
    expect(tree.locator("li[data-code=DLA]")).to_contain_text("(ใหม่)")
    expect(tree.locator("li[data-code=DLA]")).to_have_attribute("data-depth", "2")
    by_code = {a.code: a for a in admin.request(f.ListAgencies).agencies}
    assert by_code["DLA"].parent_id == by_code["DOPA"].id
    assert by_code["DOPA-REG"].parent_id == by_code["DOPA"].id
    ui.shot(page, "console-agencies")

    add_official(
        page,
        "\u00a0\u00a0\u00a0\u00a0DOPA-REG สำนักทะเบียน",
        name_th="นายสมชาย ใจดี",
        name_en="Somchai Jaidee",
        position="นายทะเบียน",
        employee_id="E-1001",
        email="somchai@dopa.go.th",
        phone="+66 2 123 4567",
    )
    add_official(
        page,
        "\u00a0\u00a0DOPA กรมการปกครอง",
        name_th="นางสาวมาลี รักงาน",
        name_en="Malee Rakngan",
        position="นักวิเคราะห์",
        employee_id="E-1002",
    )
    # Search, in Thai (the title glued on) and in English.
    open_admin(page, "เจ้าหน้าที่")
    rows = page.get_by_test_id("officials").locator("tbody tr")
    search = page.get_by_label("ค้นหา (ชื่อไทยหรืออังกฤษ ตำแหน่ง รหัสพนักงาน)")
    search.fill("สมชาย")
    expect(rows).to_have_count(1)
    expect(rows.first).to_contain_text("นายสมชาย ใจดี")
    search.fill("malee")
    expect(rows).to_have_count(1)
    expect(rows.first).to_contain_text("Malee Rakngan")
    search.fill("")
    ui.shot(page, "console-officials")
    search.fill("malee")
    rows.first.get_by_role("link").click()
    official_page = page.get_by_test_id("official-page")
    # Edit, move, grant a scoped role, revoke it.
    official_page.get_by_label("ตำแหน่ง").fill("นักวิเคราะห์นโยบายชำนาญการ")
    official_page.get_by_role("button", name="บันทึก").click()
    expect(official_page.get_by_role("status")).to_have_text("บันทึกแล้ว")
    official_page.locator("select[name=move]").select_option(
        label="\u00a0\u00a0\u00a0\u00a0DOPA-REG สำนักทะเบียน"
    )
    official_page.get_by_role("button", name="ย้ายหน่วยงาน").click()
    roles = official_page.locator("form", has=page.locator("select[name=role]"))
    roles.locator("select[name=role]").select_option("agency_admin")
    roles.locator("select[name=scope]").select_option(
        label="\u00a0\u00a0\u00a0\u00a0DOPA-REG สำนักทะเบียน"
    )
    roles.get_by_role("button", name="มอบบทบาท").click()
    expect(official_page.get_by_test_id("roles")).to_contain_text("ผู้ดูแลหน่วยงาน · ขอบเขต: DOPA-REG")
    malee = next(o for o in admin.request(f.ListOfficials).officials if o.employee_id == "E-1002")
    assert malee.position == "นักวิเคราะห์นโยบายชำนาญการ"
    assert malee.agency_code == "DOPA-REG"
    assert {(r.role, r.scope_agency_id) for r in malee.roles} == {
        ("official", None),
        ("agency_admin", by_code["DOPA-REG"].id),
    }
    official_page.get_by_test_id("roles").get_by_role("button", name="เพิกถอน").click()
    expect(official_page.get_by_test_id("roles")).not_to_contain_text("ผู้ดูแลหน่วยงาน")
    # Devices: one enrolled by a Python device, listed with its name; revoked from here.
    code = admin.request(f.IssueCode, official_id=malee.id).code
    PyDevice(loop, node.ws).enroll(code, "แท็บเล็ตมาลี")
    page.reload()
    devices = official_page.get_by_test_id("devices")
    expect(devices).to_contain_text("แท็บเล็ตมาลี")
    expect(official_page.get_by_test_id("codes").locator("tr[data-state=used]")).to_have_count(1)
    page.once("dialog", lambda d: d.accept())
    devices.get_by_role("button", name="เพิกถอน: แท็บเล็ตมาลี").click()
    expect(devices).to_contain_text("เพิกถอนแล้ว")
    page.evaluate("window.scrollTo(0, 0)")
    ui.shot(page, "console-official")
    # Suspend, reinstate, retire (the confirmation names the person).
    official_page.get_by_role("button", name="ระงับชั่วคราว").click()
    expect(official_page.locator(".pill")).to_have_text("ระงับชั่วคราว")
    official_page.get_by_role("button", name="คืนสถานะปฏิบัติงาน").click()
    expect(official_page.locator(".pill")).to_have_text("ปฏิบัติงาน")
    official_page.get_by_role("button", name="ให้พ้นจากระบบ").click()
    dialog = page.get_by_role("alertdialog")
    expect(dialog).to_contain_text("ให้ นางสาวมาลี รักงาน พ้นจากระบบถาวร?")
    dialog.get_by_role("button", name="ยืนยัน: ให้ นางสาวมาลี รักงาน พ้นจากระบบ").click()
    expect(official_page.locator(".pill")).to_have_text("พ้นจากระบบ")
    assert admin.request(f.GetOfficial, official_id=malee.id).official.status == "retired"


def test_policy_is_set_per_agency_and_shows_what_applies(
    superadmin_page: Page, admin: PyDevice
) -> None:
    page = superadmin_page
    mib = 1024 * 1024
    moi = next(a for a in admin.request(f.ListAgencies).agencies if a.code == "MOI")
    admin.request(
        f.SetPolicy, agency_id=moi.id, policy=f.PolicyInfo(attachment_bytes_per_day=5 * mib)
    )
    open_admin(page, "นโยบาย")
    page.get_by_label("นโยบายของ").select_option(label="MOI กระทรวงมหาดไทย")
    expect(page.locator("input[name=attachment_mib_per_day]")).to_have_value("5")  # loaded
    page.locator("select[name=message_scope]").select_option("ministry")
    page.locator("input[name=max_devices]").fill("3")
    page.locator("input[name=retention_days]").fill("7")
    page.locator("input[name=max_attachment_mib]").fill("10")
    page.get_by_role("button", name="บันทึก").click()
    expect(page.get_by_test_id("policy-effective")).to_contain_text("ภายในกระทรวงเดียวกัน")
    row = admin.request(f.GetPolicy, agency_id=moi.id).policy
    assert row == f.PolicyInfo(
        message_scope="ministry",
        max_devices=3,
        retention_seconds=7 * 86400,
        max_attachment_bytes=10 * mib,
        attachment_bytes_per_day=5 * mib,
    )


def test_an_agency_admin_sees_and_changes_only_its_subtree(
    browser: Browser, node: Node, admin: PyDevice
) -> None:
    mof = admin.request(f.CreateAgency, code="MOF", name_th="กระทรวงการคลัง").agency
    tax = admin.request(
        f.CreateAgency, code="MOF-TAX", name_th="กรมสรรพากร", parent_id=mof.id
    ).agency
    other = admin.request(
        f.CreateAgency, code="MOF-CUS", name_th="กรมศุลกากร", parent_id=mof.id
    ).agency
    outsider = admin.request(
        f.CreateOfficial, name="นายศุลกากร ภายนอก", agency_id=other.id
    ).official_id
    insider = admin.request(f.CreateOfficial, name="นางภาษี ภายใน", agency_id=tax.id).official_id
    boss = admin.request(f.CreateOfficial, name="นายหัวหน้า สรรพากร", agency_id=tax.id).official_id
    admin.request(f.GrantRole, official_id=boss, role="agency_admin", scope_agency_id=tax.id)
    code = admin.request(f.IssueCode, official_id=boss).code
    context = official_context(browser)
    context.set_default_timeout(15_000)
    try:
        page = context.new_page()
        page.set_viewport_size(ui.DESKTOP)
        ui.enrol(page, node.http, code)
        open_admin(page, "หน่วยงาน")
        tree = page.get_by_test_id("agency-tree")
        expect(tree.locator("li")).to_have_count(1)
        expect(tree.locator("li[data-code='MOF-TAX']")).to_be_visible()
        # What it may not do is not offered: no new ministry.
        expect(page.locator("select[name=parent] option[value='']")).to_have_count(0)
        open_admin(page, "เจ้าหน้าที่")
        rows = page.get_by_test_id("officials").locator("tbody tr")
        expect(rows).to_have_count(2)
        expect(page.get_by_test_id("officials")).not_to_contain_text("ภายนอก")
        # The node's search looks only inside its subtree: the outsider is not found by name.
        search = page.get_by_label("ค้นหา (ชื่อไทยหรืออังกฤษ ตำแหน่ง รหัสพนักงาน)")
        search.fill("ภายนอก")
        expect(page.get_by_text("ไม่พบเจ้าหน้าที่")).to_be_visible()
        search.fill("ภาษี")
        expect(rows).to_have_count(1)
        expect(rows.first).to_contain_text("นางภาษี ภายใน")
        search.fill("")
        # A link typed by hand to an outsider's page shows a refusal, not the official.
        page.goto(f"{node.http}/#/admin/officials/{outsider}")
        expect(page.get_by_role("alert")).to_have_text("คุณไม่มีสิทธิ์ทำรายการนี้")
        # Its own official, it may change.
        page.goto(f"{node.http}/#/admin/officials/{insider}")
        # Nor a superadmin role, nor a global scope.
        expect(page.locator("select[name=role] option")).to_have_count(2)
        expect(page.locator("select[name=role] option[value=superadmin]")).to_have_count(0)
        expect(page.locator("select[name=scope] option[value='']")).to_have_count(0)
        page.get_by_test_id("official-page").get_by_label("ตำแหน่ง").fill("นักวิชาการภาษี")
        page.get_by_test_id("official-page").get_by_role("button", name="บันทึก").click()
        expect(page.get_by_test_id("official-page").get_by_role("status")).to_have_text("บันทึกแล้ว")
        # Frames by hand against another agency are refused and change nothing.
        attempts = [
            {"type": "update_official", "official_id": str(outsider), "position": "ถูกแก้"},
            {"type": "move_official", "official_id": str(insider), "agency_id": str(other.id)},
            {"type": "create_agency", "code": "MOF-X", "name_th": "ปลอม", "parent_id": str(mof.id)},
            {"type": "update_agency", "agency_id": str(other.id), "name_th": "ถูกแก้"},
            {"type": "set_official_status", "official_id": str(outsider), "status": "suspended"},
            {
                "type": "grant_role",
                "official_id": str(insider),
                "role": "agency_admin",
                "scope_agency_id": str(mof.id),
            },
            {"type": "list_officials", "agency_id": str(other.id)},
        ]
        for rid, frame in enumerate(attempts, start=71001):
            reply = send_by_hand(page, rid, frame)
            assert (reply["type"], reply["code"]) == ("error", "forbidden"), (frame, reply)
        seen = admin.request(f.GetOfficial, official_id=outsider).official
        assert (seen.position, seen.status) == (None, "active")
        mine = admin.request(f.GetOfficial, official_id=insider).official
        assert (mine.agency_id, mine.position) == (tax.id, "นักวิชาการภาษี")
        assert [r.role for r in mine.roles] == ["official"]
        codes = {a.code: a for a in admin.request(f.ListAgencies).agencies}
        assert "MOF-X" not in codes and codes["MOF-CUS"].name_th == "กรมศุลกากร"
    finally:
        context.close()


def test_the_officials_list_is_searched_and_paged_on_the_node(
    superadmin_page: Page, admin: PyDevice
) -> None:
    """150 officials named alike: the first page of 100 comes with "show
    more", the next page completes it; an exact employee id finds one;
    English in any case; retired officials too (any status)."""
    agency = admin.request(f.CreateAgency, code="PG", name_th="กองทดสอบหน้า").agency
    begun = admin.request(f.ImportBegin)
    rows = [
        f.ImportRow(line=i + 2, employee_id=f"PG-{i:04d}", name_th=f"นายเพจจิ้ง ลำดับ{i:04d}",
                    name_en=f"Paging Number{i:04d}", agency_code="PG")
        for i in range(150)
    ]
    admin.request(f.ImportRows, import_id=begun.import_id, rows=rows)
    assert admin.request(f.ImportApply, import_id=begun.import_id, dry_run=False).created == 150
    page = superadmin_page
    open_admin(page, "เจ้าหน้าที่")
    search = page.get_by_label("ค้นหา (ชื่อไทยหรืออังกฤษ ตำแหน่ง รหัสพนักงาน)")
    table = page.get_by_test_id("officials").locator("tbody tr")
    search.fill("เพจจิ้ง")
    expect(page.get_by_test_id("officials-count")).to_have_text("แสดง 100 คนแรก ยังมีอีก")
    expect(table).to_have_count(100)
    expect(table.first).to_contain_text("นายเพจจิ้ง ลำดับ0000")
    page.get_by_role("button", name="แสดงเพิ่ม").click()
    expect(page.get_by_test_id("officials-count")).to_have_text("พบ 150 คน")
    expect(table).to_have_count(150)
    expect(table.last).to_contain_text("นายเพจจิ้ง ลำดับ0149")
    expect(page.get_by_role("button", name="แสดงเพิ่ม")).to_have_count(0)
    search.fill("PG-0123")
    expect(table).to_have_count(1)
    expect(table.first).to_contain_text("Paging Number0123")
    last = admin.request(f.ListOfficials, agency_id=agency.id, query="number0149").officials
    admin.request(f.SetOfficialStatus, official_id=last[0].id, status="retired")
    search.fill("paging NUMBER0149")
    expect(table).to_have_count(1)
    expect(table.first).to_have_attribute("data-status", "retired")
    search.fill("")


def decode_qr(png: bytes) -> str:
    found = zxingcpp.read_barcodes(Image.open(io.BytesIO(png)))
    assert len(found) == 1, found
    return found[0].text


def test_letters_for_a_selection_print_on_a4_and_their_qr_enrols(
    superadmin_page: Page, admin: PyDevice, node: Node, loop: Loop
) -> None:
    page = superadmin_page
    agency = admin.request(f.CreateAgency, code="LTR", name_th="สำนักงานจดหมาย").agency
    for name, employee in (("นายจดหมาย หนึ่ง", "L-1"), ("นางจดหมาย สอง", "L-2")):
        admin.request(
            f.CreateOfficial,
            name=name,
            agency_id=agency.id,
            employee_id=employee,
            position="เจ้าพนักงานธุรการ",
        )
    open_admin(page, "เจ้าหน้าที่")
    page.get_by_label("ค้นหา (ชื่อไทยหรืออังกฤษ ตำแหน่ง รหัสพนักงาน)").fill("จดหมาย")
    expect(page.get_by_test_id("officials").locator("tbody tr")).to_have_count(2)
    page.get_by_label("เลือกทั้งหมดที่แสดง").check()
    page.get_by_role("button", name="ออกรหัสและพิมพ์หนังสือแจ้ง (2 คน)").click()
    letters = page.get_by_test_id("letter")
    expect(letters).to_have_count(2)
    first = letters.first
    expect(first).to_contain_text("เรียน นางจดหมาย สอง")
    expect(first).to_contain_text(node.http + "/")
    expect(first).to_contain_text("ใช้ได้ครั้งเดียว ภายใน")
    if os.environ.get("GCHAT_WEB_SCREENSHOTS") == "1":
        first.screenshot(path=str(ui.SHOTS / "console-letter.png"))
    codes = []
    for i in range(2):
        letter = letters.nth(i)
        text = letter.get_by_test_id("letter-code").inner_text().strip()
        assert re.fullmatch(r"[0-9A-Z]{5}(-[0-9A-Z]{5}){3}", text), text
        assert decode_qr(letter.get_by_test_id("letter-qr").screenshot()) == text
        codes.append(text)
    assert len(set(codes)) == 2
    # Printed: A4, one page per letter, nothing of the app's chrome.
    page.emulate_media(media="print")
    expect(page.locator("header.bar")).to_be_hidden()
    expect(page.get_by_role("button", name="พิมพ์")).to_be_hidden()
    pdf = page.pdf(prefer_css_page_size=True)
    page.emulate_media(media="screen")
    assert len(re.findall(rb"/Type\s*/Page[^s]", pdf)) == 2
    box = re.search(rb"/MediaBox\s*\[\s*0 0 ([\d.]+) ([\d.]+)", pdf)
    assert box is not None and (round(float(box[1])), round(float(box[2]))) == (595, 842)  # A4
    # The code from the QR enrols the official it was printed for.
    device = PyDevice(loop, node.ws).enroll(
        decode_qr(letters.nth(1).get_by_test_id("letter-qr").screenshot())
    )
    assert str(device.official_id) == letters.nth(1).get_attribute("data-official")
    # Closed, the codes are gone from the page.
    page.get_by_role("button", name="ปิด (รหัสจะไม่แสดงอีก)").click()
    expect(page.get_by_test_id("letter")).to_have_count(0)
    assert codes[0] not in page.content()


def test_pending_codes_of_the_scope_are_listed_cancelled_and_reissued(
    superadmin_page: Page, admin: PyDevice, node: Node, loop: Loop
) -> None:
    """Every pending code of the scope on one screen, soonest to expire first,
    with whose it is; one is cancelled (it leaves the list and cannot enrol),
    another is reissued with its letter."""
    agency = admin.request(f.CreateAgency, code="PC", name_th="กองรหัสรอใช้").agency
    people = [
        admin.request(f.CreateOfficial, name=f"นายรอรหัส คนที่{i}", agency_id=agency.id).official_id
        for i in range(3)
    ]
    issued = [admin.request(f.IssueCode, official_id=o) for o in people]
    page = superadmin_page
    open_admin(page, "รหัสลงทะเบียน")
    # The screen's own filter: while the admin area switches screens, the one
    # before it may still be on the page with a label of the same words.
    screen = page.get_by_role("region", name="รหัสลงทะเบียนที่ยังไม่ใช้")
    table = screen.get_by_test_id("pending-codes")
    screen.get_by_label("หน่วยงาน").select_option(label="PC กองรหัสรอใช้")
    rows = table.locator("tbody tr")
    expect(rows).to_have_count(3)
    expect(rows.first).to_contain_text("นายรอรหัส คนที่0")  # issued first, expires first
    expect(rows.first).to_contain_text("PC")
    listed = admin.request(f.ListPendingCodes, agency_id=agency.id).codes
    assert [r.get_attribute("data-code") for r in rows.all()] == [str(c.code_id) for c in listed]
    assert [c.expires_at for c in listed] == sorted(c.expires_at for c in listed)
    ui.shot(page, "console-pending-codes")
    # Cancel the second: it leaves the list, and its code no longer enrols.
    page.once("dialog", lambda d: d.accept())
    rows.nth(1).get_by_role("button", name="ยกเลิกรหัส").click()
    expect(page.get_by_role("status").filter(has_text="ยกเลิกรหัสของ")).to_contain_text(
        "นายรอรหัส คนที่1")
    expect(rows).to_have_count(2)
    expect(table).not_to_contain_text("คนที่1")
    codes = admin.request(f.ListCodes, official_id=people[1]).codes
    assert [c.state for c in codes] == ["cancelled"]
    with pytest.raises(ClientError):  # the cancelled letter's code enrols nothing
        PyDevice(loop, node.ws).enroll(str(issued[1].code), "stolen letter")
    # Reissue for the third: a new code and its letter.
    rows.nth(1).get_by_role("button", name="ออกรหัสและพิมพ์หนังสือแจ้ง").click()
    letter = page.get_by_test_id("letter")
    expect(letter).to_have_count(1)
    expect(letter).to_contain_text("นายรอรหัส คนที่2")
    expect(letter.get_by_test_id("letter-code")).not_to_have_text(issued[2].code)
    page.get_by_role("button", name="ปิด (รหัสจะไม่แสดงอีก)").click()
    states = sorted(c.state for c in admin.request(f.ListCodes, official_id=people[2]).codes)
    assert states == ["pending", "pending"]
