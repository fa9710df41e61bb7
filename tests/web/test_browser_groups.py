"""Groups with the Python CLI client as a member, safety numbers, device changes, revocation, a11y.

A group of three: two officials in browsers and one with the reference
Python client; messages flow every way. The safety number the browser shows
equals the one the Python implementation computes. A verified peer's new
device raises the banner and blocks sending until accepted. A device the
admin revokes is signed out with a clear message and wiped. The main
screens pass an axe-core check with no serious or critical violations.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from uuid import UUID

import pytest
from playwright.sync_api import Browser, Page, expect

from protocol.frames import IssueCode, ListDevices, RevokeDevice
from tests.web import ui
from tests.web.harness import CliDevice, Loop, Node, Team

AXE = Path(__file__).resolve().parents[2] / "web" / "node_modules" / "axe-core" / "axe.min.js"


def axe_problems(page: Page) -> list[str]:
    """Serious or critical axe-core violations on the page as it is now."""
    if not page.evaluate("typeof window.axe !== 'undefined'"):
        page.evaluate(AXE.read_text() + "\n;undefined")
    result = page.evaluate(
        "axe.run(document, {resultTypes: ['violations']}).then(r => r.violations"
        ".filter(v => v.impact === 'serious' || v.impact === 'critical')"
        ".map(v => v.id + ': ' + v.nodes.map(n => n.target.join(' ')).join(', ')))"
    )
    return list(result)


@pytest.fixture(scope="module")
def team(node: Node, loop: Loop) -> Team:
    return Team(node, loop)


CSP_VIOLATIONS: list[str] = []


@pytest.fixture(scope="module")
def anong(browser: Browser) -> Iterator[Page]:
    context = browser.new_context(viewport=ui.PHONE_LARGE, locale="th-TH", is_mobile=True)
    page = context.new_page()
    page.on("console", lambda m: CSP_VIOLATIONS.append(m.text)
            if "Content Security Policy" in m.text else None)
    try:
        yield page
    finally:
        context.close()


@pytest.fixture(scope="module")
def boon(browser: Browser) -> Iterator[Page]:
    context = browser.new_context(viewport=ui.DESKTOP, locale="th-TH")
    try:
        yield context.new_page()
    finally:
        context.close()


def test_enrol_screen_is_accessible(node: Node, anong: Page) -> None:
    anong.goto(node.http)
    expect(anong.get_by_role("heading", name="ลงทะเบียนอุปกรณ์นี้")).to_be_visible()
    assert axe_problems(anong) == []


def test_group_of_three_with_the_cli_client(
    node: Node, team: Team, anong: Page, boon: Page
) -> None:
    ui.enrol(anong, node.http, team.anong_code, "โทรศัพท์อนงค์")
    ui.enrol(boon, node.http, team.boon_code, "คอมพิวเตอร์บุญมี")
    ui.create_group(anong, "คณะทำงานงบประมาณ", [("บุญมี", "บุญมี มั่นคง"), ("ชัยวัฒน์", "ชัยวัฒน์ พึ่งธรรม")])
    ui.send(anong, "เริ่มประชุมกลุ่มครับ")

    expect(boon.get_by_test_id("chat-row")).to_contain_text("เริ่มประชุมกลุ่มครับ", timeout=15_000)
    ui.open_first_chat(boon)
    ui.send(boon, "บุญมีรับทราบ")
    got = team.cli.listen(count=2)
    assert [(m["kind"], m["text"], m["from_official"]) for m in got] == [
        ("group", "เริ่มประชุมกลุ่มครับ", str(team.anong)),
        ("group", "บุญมีรับทราบ", str(team.boon)),
    ]
    cid = got[0]["conversation_id"]
    team.cli.run("group", "send", "--conversation", cid, "--message", "ชัยวัฒน์จาก CLI")
    expect(anong.get_by_text("ชัยวัฒน์จาก CLI", exact=True)).to_be_visible(timeout=15_000)
    expect(boon.get_by_text("ชัยวัฒน์จาก CLI", exact=True)).to_be_visible(timeout=15_000)
    assert axe_problems(anong) == []
    ui.shot(anong, "phone-group")


def test_safety_number_equals_the_clis_and_new_device_banner(
    node: Node, team: Team, anong: Page
) -> None:
    ui.back_home(anong)
    assert axe_problems(anong) == []
    ui.open_chat_by_search(anong, "ชัยวัฒน์", "ชัยวัฒน์ พึ่งธรรม")
    ui.send(anong, "ขอเทียบรหัสความปลอดภัยครับ")
    assert [m["text"] for m in team.cli.listen(count=1)] == ["ขอเทียบรหัสความปลอดภัยครับ"]
    anong.get_by_role("button", name="รหัสความปลอดภัย").click()
    shown = anong.get_by_test_id("safety-number")
    cli_number = team.cli.safety_number(team.anong)  # `gchat client safety-number --with`
    assert len(cli_number) == 71
    expect(shown).to_have_text(cli_number, timeout=15_000)
    assert len(shown.inner_text().split(" ")) == 12
    assert axe_problems(anong) == []
    ui.shot(anong, "phone-safety-number")
    assert CSP_VIOLATIONS == []  # the QR code and every screen so far run under the strict CSP
    anong.get_by_role("button", name="ยืนยันว่าตรงกัน").click()
    expect(anong.get_by_text("✓ ยืนยันแล้ว")).to_be_visible()
    anong.get_by_role("button", name="กลับ").click()

    # Chai enrols a second device: Anong's next message finds it, warns and holds back.
    code = str(team.admin.request(IssueCode, official_id=team.chai).code)
    second = CliDevice(node, node.tmp / "chai-tablet.state")
    second.enroll(code)
    anong.get_by_label("พิมพ์ข้อความ").fill("ถึงอุปกรณ์ใหม่")
    anong.get_by_role("button", name="ส่ง", exact=True).click()
    banner = anong.get_by_test_id("device-change-banner")
    expect(banner).to_be_visible(timeout=15_000)
    expect(banner).to_contain_text("ชัยวัฒน์ พึ่งธรรม")
    expect(anong.locator("[data-testid=message][data-state=failed]")).to_have_count(1)
    ui.shot(anong, "phone-device-change")
    banner.get_by_role("button", name="รับทราบ").click()
    expect(banner).to_have_count(0)
    anong.get_by_role("button", name="ส่งอีกครั้ง").click()
    sent = anong.locator("[data-testid=message][data-state=sent]", has_text="ถึงอุปกรณ์ใหม่")
    expect(sent).to_be_visible(timeout=15_000)
    assert [m["text"] for m in second.listen(count=1)] == ["ถึงอุปกรณ์ใหม่"]
    # The number changed with the new device, and the verified mark is gone.
    anong.get_by_role("button", name="รหัสความปลอดภัย").click()
    expect(anong.get_by_text("ยังไม่ยืนยัน")).to_be_visible()


def test_remove_member_then_announcement_only_group(
    node: Node, team: Team, anong: Page, boon: Page
) -> None:
    ui.back_home(anong)
    anong.get_by_test_id("chat-row").filter(has_text="คณะทำงานงบประมาณ").click()
    anong.get_by_role("button", name="สมาชิก").click()
    anong.get_by_role("button", name="นำออก: ชัยวัฒน์ พึ่งธรรม").click()
    expect(anong.get_by_role("button", name="นำออก: ชัยวัฒน์ พึ่งธรรม")).to_have_count(0)
    anong.get_by_role("button", name="กลับ").click()
    # After the removal Anong's sender key is rotated and sent to Boon only.
    ui.send(anong, "หลังนำชัยวัฒน์ออกจากกลุ่ม")
    expect(boon.get_by_text("หลังนำชัยวัฒน์ออกจากกลุ่ม", exact=True)).to_be_visible(timeout=15_000)

    ui.back_home(anong)
    ui.create_group(
        anong, "ประกาศของกอง", [("บุญมี", "บุญมี มั่นคง")], announcement_only=True
    )
    ui.send(anong, "ประกาศ: ประชุมพรุ่งนี้ 9 โมง")
    ui.back_home(boon)
    boon.get_by_test_id("chat-row").filter(has_text="ประกาศของกอง").click()
    expect(boon.get_by_text("ประกาศ: ประชุมพรุ่งนี้ 9 โมง", exact=True)).to_be_visible(timeout=15_000)
    expect(boon.get_by_text("กลุ่มนี้ให้เฉพาะผู้ดูแลกลุ่มส่งข้อความ")).to_be_visible()
    expect(boon.get_by_label("พิมพ์ข้อความ")).to_have_count(0)

    # The group admin renames it; a member leaves on their own.
    anong.get_by_role("button", name="สมาชิก").click()
    anong.get_by_label("ชื่อกลุ่ม").fill("ประกาศของกองคลัง")
    anong.get_by_role("button", name="เปลี่ยนชื่อ").click()
    expect(anong.get_by_role("heading", name="ประกาศของกองคลัง")).to_be_visible(timeout=15_000)
    expect(boon.get_by_test_id("chat-title")).to_have_text("ประกาศของกองคลัง", timeout=15_000)
    boon.get_by_role("button", name="สมาชิก").click()
    boon.get_by_role("button", name="ออกจากกลุ่ม").click()
    expect(boon.get_by_text("คุณไม่ได้เป็นสมาชิกกลุ่มนี้แล้ว")).to_be_visible(timeout=15_000)
    expect(anong.get_by_role("listitem")).to_have_count(1, timeout=15_000)  # Anong alone


def test_revoked_device_is_signed_out_and_wiped(node: Node, team: Team, boon: Page) -> None:
    devices = team.admin.request(ListDevices, official_id=team.boon).devices
    (device,) = [d for d in devices if d.status == "active"]
    team.admin.request(RevokeDevice, device_id=device.device_id)
    expect(boon.get_by_test_id("revoked")).to_be_visible(timeout=15_000)
    expect(boon.get_by_test_id("revoked")).to_contain_text("เพิกถอน")
    boon.reload()
    # Nothing is left: the app starts at enrolment again.
    expect(boon.get_by_role("heading", name="ลงทะเบียนอุปกรณ์นี้")).to_be_visible()
    assert UUID(str(device.device_id))
