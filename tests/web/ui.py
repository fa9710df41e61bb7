"""What an official does in the app, as Playwright steps (shared by the browser tests)."""

from __future__ import annotations

import os
from pathlib import Path

from playwright.sync_api import Page, expect

SHOTS = Path(__file__).resolve().parents[2] / "docs" / "screenshots"
PHONE = {"width": 375, "height": 812}
PHONE_LARGE = {"width": 412, "height": 915}
DESKTOP = {"width": 1280, "height": 800}


def enrol(page: Page, url: str, code: str, device_name: str = "โทรศัพท์") -> None:
    page.goto(url)
    page.get_by_label("รหัสลงทะเบียน").fill(code)
    page.get_by_label("ชื่ออุปกรณ์").fill(device_name)
    page.get_by_role("button", name="ลงทะเบียน").click()
    expect(page.get_by_role("heading", name="การสนทนา")).to_be_visible(timeout=20_000)
    expect(page.locator("[data-status=online]")).to_be_visible()


def open_chat_by_search(page: Page, query: str, name: str) -> None:
    page.get_by_role("button", name="แชตใหม่").click()
    page.get_by_label("ค้นหาเจ้าหน้าที่").fill(query)
    page.get_by_role("button", name="ค้นหาเจ้าหน้าที่").click()
    page.get_by_role("button", name=name).click()
    expect(page.get_by_test_id("chat-title")).to_contain_text(name)


def send(page: Page, text: str) -> None:
    page.get_by_label("พิมพ์ข้อความ").fill(text)
    page.get_by_role("button", name="ส่ง", exact=True).click()
    expect(page.locator("[data-testid=message][data-state=sent]", has_text=text)).to_be_visible(
        timeout=15_000
    )


def create_group(
    page: Page, title: str, members: list[tuple[str, str]], *, announcement_only: bool = False
) -> None:
    """Create a group from the home screen: each member found by a search
    ``query`` and added by its ``name``; the new group's chat is open after."""
    page.get_by_role("button", name="กลุ่มใหม่").click()
    page.get_by_label("ชื่อกลุ่ม").fill(title)
    for query, name in members:
        page.get_by_role("button", name="เพิ่มสมาชิก").click()
        page.get_by_label("ค้นหาเจ้าหน้าที่").fill(query)
        page.get_by_role("button", name="ค้นหาเจ้าหน้าที่").click()
        page.get_by_role("button", name=f"เพิ่มสมาชิก: {name}").click()
    if announcement_only:
        page.get_by_label("เฉพาะผู้ดูแลกลุ่มโพสต์ได้").check()
    page.get_by_role("button", name="สร้าง").click()
    expect(page.get_by_test_id("chat-title")).to_contain_text(title)


def open_first_chat(page: Page) -> None:
    page.get_by_test_id("chat-row").first.click()


def back_home(page: Page) -> None:
    home = page.get_by_role("heading", name="การสนทนา")
    for _ in range(3):
        if home.count() > 0:
            break
        page.get_by_role("button", name="กลับ").first.click()
    expect(home).to_be_visible()


def shot(page: Page, name: str) -> None:
    """A screenshot for README/docs (made by the tests, so it shows what really runs).

    Written to docs/screenshots only with GCHAT_WEB_SCREENSHOTS=1 (so that
    an ordinary test run leaves the work tree clean).
    """
    if os.environ.get("GCHAT_WEB_SCREENSHOTS") == "1":
        SHOTS.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(SHOTS / f"{name}.png"))
