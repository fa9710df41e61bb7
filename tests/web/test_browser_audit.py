"""The auditor's console in a real browser against a real node (issue 14, items 5-6).

An auditor pins the audit key the node's host prints, queries events and
sees names, agency codes and local times; the browser verifies the signed
head, a consistency proof from the head it saw before and an inclusion proof
per event, and the export it downloads passes ``gchat audit verify``. Then
an attacker with database access alters audit rows by SQL, and the console
says which event failed and what that means. An official sees no audit view
and the node refuses the audit frames sent by hand; the official's "who
looked at my records" lists the auditor's query.
"""

from __future__ import annotations

import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from playwright.sync_api import Browser, BrowserContext, Locator, Page, expect

from gchat.client.rpc import ClientError
from protocol import frames as f
from tests.fixtures import TestDatabases
from tests.support import run_sync
from tests.web import ui
from tests.web.harness import REPO, Loop, Node, PyDevice, admin_device, new_official

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def node(test_databases: TestDatabases, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Node]:
    """This module's own node: its log gets tampered with. Auditors' requests
    are shown to officials at once (no transparency delay) so the test can see them."""
    tmp: Path = tmp_path_factory.mktemp("audit-node")
    tmp.chmod(0o755)
    started = Node(test_databases, tmp, GCHAT_AUDIT_TRANSPARENCY_DELAY_SECONDS="0")
    try:
        yield started
    finally:
        started.stop()


class People:
    def __init__(self, node: Node, loop: Loop) -> None:
        self.admin = admin_device(node, loop)
        # Two officials who talk (from Python), one of them also in the browser later.
        self.arunee, code = new_official(self.admin, "อรุณี ทดสอบระบบ")
        self.arunee_py = PyDevice(loop, node.ws).enroll(code, "เครื่องของอรุณี")
        self.somchai, code = new_official(self.admin, "สมชาย ใจดี")
        self.somchai_py = PyDevice(loop, node.ws).enroll(code, "เครื่องของสมชาย")
        self.arunee_py.call(
            self.arunee_py.client.send_message, self.somchai, "สวัสดี".encode(), uuid.uuid4().hex
        )
        self.auditor, self.auditor_code = new_official(self.admin, "วิภา ตรวจสอบ")
        self.admin.request(f.GrantRole, official_id=self.auditor, role="auditor")


@pytest.fixture(scope="module")
def people(node: Node, loop: Loop) -> People:
    return People(node, loop)


@pytest.fixture(scope="module")
def auditor_context(browser: Browser) -> Iterator[BrowserContext]:
    """The auditor's browser profile, kept across the tests: its sealed store keeps the head."""
    context = browser.new_context(viewport=ui.DESKTOP, locale="th-TH", accept_downloads=True)
    try:
        yield context
    finally:
        context.close()


def audit_public_key(node: Node) -> str:
    """What the node's host prints with `gchat audit public-key` (the key's hex)."""
    out = subprocess.run(
        [sys.executable, "-m", "gchat", "audit", "public-key"],
        cwd=REPO, env=node.env, capture_output=True, text=True, timeout=60, check=True,
    )
    assert "key id" in out.stderr
    return out.stdout.strip()


def as_attacker(node: Node, *statements: str) -> None:
    """SQL as a database superuser who bypasses the append-only triggers."""

    async def go() -> None:
        conn = await asyncpg.connect(node.database_url)
        try:
            async with conn.transaction():
                await conn.execute("SET LOCAL session_replication_role = replica")
                for sql in statements:
                    await conn.execute(sql)
        finally:
            await conn.close()

    run_sync(go())


def open_audit(page: Page) -> None:
    """The console's Audit entry appears once the node has said the roles."""
    expect(page.locator("[data-status=online]")).to_be_visible(timeout=30_000)
    page.get_by_role("navigation").get_by_role("link", name="ตรวจสอบ").click()
    expect(page.get_by_role("heading", name="ตรวจสอบบันทึกการใช้งาน")).to_be_visible()


def scroll_to(element: Locator) -> None:
    """For a screenshot: this element near the top, below the sticky header."""
    element.evaluate("e => scrollTo(0, e.getBoundingClientRect().top + scrollY - 140)")


def query_all(page: Page) -> None:
    page.get_by_role("button", name="ค้นหา", exact=True).click()
    expect(page.get_by_test_id("audit-events-verify")).to_be_visible(timeout=30_000)


def all_verified(page: Page) -> None:
    """Every row shown verified. Rows logged after the signed head (the
    auditor's own reads of the names it shows are logged too) are "pending"
    until the next head: the auditor presses "check again", as the screen says."""
    checks = page.get_by_test_id("audit-events-verify")
    for _ in range(5):
        try:
            expect(checks).to_have_attribute("data-result", "ok", timeout=10_000)
            return
        except AssertionError:
            again = checks.get_by_role("button", name="ตรวจอีกครั้ง")
            if again.count() > 0:
                again.click()
    expect(checks).to_have_attribute("data-result", "ok")


def test_auditor_sees_names_and_the_browser_verifies_the_log(
    node: Node, people: People, auditor_context: BrowserContext, tmp_path: Path
) -> None:
    problems: list[str] = []
    page = auditor_context.new_page()
    page.on("console", lambda m: problems.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda e: problems.append(str(e)))
    ui.enrol(page, node.http, people.auditor_code, "เครื่องผู้ตรวจสอบ")
    open_audit(page)

    # Nothing is believed before the auditor pins the key the host prints.
    key = audit_public_key(node)
    page.get_by_label("กุญแจ (เลขฐานสิบหก 64 ตัว)").fill(key[:60])
    page.get_by_role("button", name="ตรึงกุญแจ").click()
    expect(page.get_by_role("alert")).to_contain_text("เลขฐานสิบหก 64 ตัว")
    page.get_by_label("กุญแจ (เลขฐานสิบหก 64 ตัว)").fill(key)
    page.get_by_role("button", name="ตรึงกุญแจ").click()
    expect(page.get_by_test_id("audit-key-hex")).to_have_text(key)
    verify = page.get_by_test_id("audit-verify")
    expect(verify).to_have_attribute("data-result", "ok", timeout=30_000)
    expect(verify).to_contain_text("เป็นการเปิดครั้งแรก")

    # Events of one official: names and agency codes next to the ids, Buddhist-era times.
    page.get_by_label("ค้นหาชื่อเจ้าหน้าที่").fill("อรุณี")
    page.get_by_role("button", name="ค้นหาชื่อเจ้าหน้าที่").click()
    page.get_by_role("button", name="อรุณี ทดสอบระบบ").click()
    query_all(page)
    rows = page.get_by_test_id("audit-event")
    expect(rows.first).to_be_visible()
    table = page.get_by_test_id("audit-events")
    arunee = table.locator(f"[data-official='{people.arunee}']").first
    expect(arunee).to_contain_text("อรุณี ทดสอบระบบ")
    expect(arunee).to_contain_text("MOI")
    device = table.locator("[data-device]", has_text="เครื่องของอรุณี").first
    expect(device).to_contain_text("(cli)")  # the device's name and platform next to its id
    somchai = table.locator(f"[data-official='{people.somchai}']").first
    expect(somchai).to_contain_text("สมชาย ใจดี")
    expect(table).to_contain_text("message.accepted")
    expect(table).to_contain_text("device.enrolled")
    buddhist_year = str(time.gmtime().tm_year + 543)
    expect(rows.first.locator("td").first).to_contain_text(buddhist_year)
    all_verified(page)
    checks = page.get_by_test_id("audit-events-verify")
    assert rows.count() >= 4
    assert rows.evaluate_all("rs => rs.every(r => r.dataset.check === 'verified')")
    expect(page.get_by_test_id("audit-chart").locator("canvas")).to_be_visible()
    scroll_to(checks)
    ui.shot(page, "audit-events-desktop")
    scroll_to(page.get_by_test_id("audit-chart"))
    ui.shot(page, "audit-chart-desktop")

    # In English too, with Gregorian years.
    page.get_by_role("button", name="เปลี่ยนภาษา").click()
    expect(rows.first.locator("td").first).to_contain_text(str(time.gmtime().tm_year))
    expect(page.get_by_test_id("audit-events-verify")).to_contain_text(
        "in the signed log exactly as shown"
    )
    page.get_by_role("button", name="Change language").click()

    # Export the shown range with proofs: `gchat audit verify` accepts the file.
    with page.expect_download() as download:
        page.get_by_role("button", name="ส่งออก", exact=True).click()
    path = tmp_path / "export.jsonl"
    download.value.save_as(path)
    out = subprocess.run(
        [sys.executable, "-m", "gchat", "audit", "verify", "--export", str(path), "--key", key],
        cwd=REPO, env=node.env, capture_output=True, text=True, timeout=60,
    )
    assert out.returncode == 0, out.stdout + out.stderr
    assert out.stdout.startswith("OK")

    # A second visit: the head the browser remembered must be extended by the new one.
    page.reload()
    open_audit(page)
    expect(verify).to_have_attribute("data-result", "ok", timeout=30_000)
    expect(verify).to_contain_text("สอดคล้องกับหัวต้นไม้ที่เบราว์เซอร์นี้เห็นครั้งก่อน")
    assert problems == []  # uPlot and the rest under the CSP: a violation would show here


def test_rows_altered_by_sql_are_reported_and_located(
    node: Node, people: People, auditor_context: BrowserContext
) -> None:
    page = auditor_context.pages[0] if auditor_context.pages else auditor_context.new_page()
    # The attacker rewrites Arunee's enrolment event: another device name.
    event_id = run_sync(_event_id(node, "device.enrolled", people.arunee))
    old, new = "เครื่องของอรุณี".encode(), "เครื่องของมาลี!!!".encode()
    assert len(old) == len(new)
    as_attacker(
        node,
        # The stored entry keeps string values as UTF-8 (gchat/store/audit_codec.py).
        f"""UPDATE audit_packs SET events = overlay(events placing '\\x{new.hex()}'::bytea
               from position('\\x{old.hex()}'::bytea in events) for {len(old)})
           WHERE position('\\x{old.hex()}'::bytea in events) > 0""",
    )
    page.goto(node.http)
    open_audit(page)
    verify = page.get_by_test_id("audit-verify")
    expect(verify).to_have_attribute("data-result", "ok", timeout=30_000)
    page.get_by_label("ประเภท").select_option("device.enrolled")
    query_all(page)
    failed = page.get_by_test_id("audit-events-verify")
    expect(failed).to_have_attribute("data-result", "failed")
    expect(failed).to_contain_text(f"#{event_id}")
    expect(failed).to_contain_text("ถูกแก้หลังบันทึก")
    row = page.locator(f"[data-testid=audit-event][data-event-id='{event_id}']")
    expect(row).to_have_attribute("data-check", "failed")
    expect(row).to_contain_text("ถูกแก้")
    expect(row).to_contain_text("เครื่องของมาลี!!!")  # shown, and marked as not what was logged
    others = page.locator("[data-testid=audit-event][data-check=verified]")
    assert others.count() >= 3  # the other enrolments still verify
    scroll_to(failed)
    ui.shot(page, "audit-tampered-desktop")

    # Now the stored leaf hash of an early event too: the log no longer
    # extends the head this browser remembered, and the console says so.
    as_attacker(
        node,
        """UPDATE audit_packs SET hashes = overlay(hashes placing sha256('forged'::bytea)
               from (32 * (1 - first_leaf) + 1)::integer for 32)
           WHERE first_leaf <= 1 AND first_leaf + length(hashes) / 32 > 1""",
    )
    page.reload()
    open_audit(page)
    head = page.get_by_test_id("audit-verify")
    expect(head).to_have_attribute("data-result", "failed", timeout=30_000)
    expect(head).to_have_attribute("data-problem", "inconsistent")
    expect(head).to_contain_text("บันทึกไม่ต่อเนื่องจากที่เบราว์เซอร์นี้เห็นครั้งก่อน")
    expect(page.get_by_test_id("audit-events")).to_have_count(0)  # nothing shown as if trusted
    ui.shot(page, "audit-inconsistent-desktop")


async def _event_id(node: Node, kind: str, official: uuid.UUID) -> int:
    conn = await asyncpg.connect(node.database_url)
    try:
        found: Any = await conn.fetchval(
            "SELECT id FROM audit_events WHERE kind = $1 AND convert_from(entry, 'UTF8') LIKE $2",
            kind, f'%"subject_official":"{official}"%',
        )
    finally:
        await conn.close()
    assert isinstance(found, int)
    return found


def test_an_official_has_no_audit_view_and_sees_who_looked(
    node: Node, people: People, loop: Loop, browser: Browser
) -> None:
    context = browser.new_context(viewport=ui.PHONE, locale="th-TH")
    try:
        page = context.new_page()
        # Made now, after the auditor's work: no auditor has read her records yet
        # (the auditor's export above read every official logged in its range).
        _, code = new_official(people.admin, "มานี มีสุข")
        ui.enrol(page, node.http, code, "โทรศัพท์ของมานี")
        expect(page.get_by_role("button", name="ตั้งค่า")).to_be_visible()
        expect(page.get_by_role("link", name="ตรวจสอบ")).to_have_count(0)
        # Nor by its address: the route is not a view for this official.
        page.goto(node.http + "/#/audit")
        expect(page.get_by_role("heading", name="การสนทนา")).to_be_visible(timeout=20_000)
        expect(page.get_by_test_id("audit-view")).to_have_count(0)
        expect(page.get_by_text("ตรวจสอบบันทึกการใช้งาน")).to_have_count(0)
        # Sent by hand, the audit frames are refused to an official.
        with pytest.raises(ClientError) as refused:
            people.arunee_py.request(f.AuditQuery)
        assert refused.value.code == "forbidden"
        with pytest.raises(ClientError):
            people.arunee_py.request(f.AuditGetTreeHead)

        page.get_by_role("button", name="ตั้งค่า").click()
        page.get_by_test_id("open-accesses").click()
        expect(page.get_by_role("heading", name="ใครดูข้อมูลของฉัน")).to_be_visible()
        expect(page.get_by_text("ยังไม่มีผู้ตรวจสอบดูข้อมูลของคุณ")).to_be_visible(timeout=20_000)
        ui.shot(page, "audit-accesses-none-phone")
    finally:
        context.close()

    # Arunee, whose records the auditor searched (first test), sees who and when.
    code = str(people.admin.request(f.IssueCode, official_id=people.arunee).code)
    context = browser.new_context(viewport=ui.PHONE, locale="th-TH")
    try:
        page = context.new_page()
        ui.enrol(page, node.http, code, "โทรศัพท์ของอรุณี")
        page.get_by_role("button", name="ตั้งค่า").click()
        page.get_by_test_id("open-accesses").click()
        rows = page.get_by_test_id("access")
        expect(rows.first).to_be_visible(timeout=20_000)
        expect(page.get_by_test_id("accesses")).to_contain_text("audit.query")
        auditor = page.get_by_test_id("accesses").locator(f"[data-official='{people.auditor}']")
        expect(auditor.first).to_be_visible()
        # Named (an official may not read an auditor's record: the node's reply names them).
        expect(auditor.first).to_contain_text("วิภา ตรวจสอบ")
        # The auditor's console opened her record to show her name: that read is listed too.
        reads = rows.filter(has_text="audit.directory_read")
        expect(reads.first).to_contain_text("เปิดดูข้อมูลในทำเนียบเจ้าหน้าที่")
        expect(reads.first).to_contain_text("วิภา ตรวจสอบ")
        ui.shot(page, "audit-accesses-phone")
    finally:
        context.close()
