"""Two officials chat in Thai from two browsers (one a phone), end-to-end encrypted.

Real node, real PostgreSQL, Debian's chromium. The admin (the reference
Python client) creates the officials and issues their enrolment codes; each
official enrols in the browser with the code, finds the other in the
directory and they write both ways. Then the recipient's browser is closed
while messages are sent; reopened, it receives each of them once, keeps its
history and sessions across a reload.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from playwright.sync_api import Browser, BrowserContext, BrowserType, Page, expect

from protocol.frames import IssueCode
from tests.web import ui
from tests.web.harness import Loop, Node, PyDevice, admin_device, chromium_path, new_official
from tests.web.storage import read_storage


class People:
    def __init__(self, node: Node, loop: Loop) -> None:
        self.admin: PyDevice = admin_device(node, loop)
        self.somchai, self.somchai_code = new_official(self.admin, "สมชาย ใจดี")
        self.somying, self.somying_code = new_official(self.admin, "สมหญิง รักชาติ")


@pytest.fixture(scope="module")
def people(node: Node, loop: Loop) -> People:
    return People(node, loop)


@pytest.fixture(scope="module")
def phone(browser: Browser) -> Iterator[Page]:
    context = browser.new_context(viewport=ui.PHONE, locale="th-TH", is_mobile=True, has_touch=True)
    try:
        yield context.new_page()
    finally:
        context.close()


class Desktop:
    """Somying's desktop browser: a persistent profile, so it can be closed and reopened."""

    def __init__(self, browser_type: BrowserType, profile: Path) -> None:
        self.browser_type = browser_type
        self.profile = profile
        self.context: BrowserContext | None = None

    def open(self) -> Page:
        self.context = self.browser_type.launch_persistent_context(
            str(self.profile), executable_path=chromium_path(), viewport=ui.DESKTOP,
            locale="th-TH", headless=True,
        )
        return self.context.pages[0] if self.context.pages else self.context.new_page()

    def close(self) -> None:
        if self.context is not None:
            self.context.close()
            self.context = None


@pytest.fixture(scope="module")
def desktop(
    browser_type: BrowserType, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Desktop]:
    d = Desktop(browser_type, tmp_path_factory.mktemp("somying-profile"))
    try:
        yield d
    finally:
        d.close()


def test_two_officials_enrol_and_chat_both_ways_in_thai(
    node: Node, people: People, phone: Page, desktop: Desktop
) -> None:
    ui.enrol(phone, node.http, people.somchai_code, "โทรศัพท์สมชาย")
    ui.shot(phone, "phone-conversations-empty")
    page = desktop.open()
    ui.enrol(page, node.http, people.somying_code, "คอมพิวเตอร์สมหญิง")

    ui.open_chat_by_search(phone, "สมหญิง", "สมหญิง รักชาติ")
    ui.send(phone, "สวัสดีครับ คุณสมหญิง ประชุมบ่ายนี้ 14:00 น.")

    row = page.get_by_test_id("chat-row")
    expect(row).to_contain_text("สวัสดีครับ คุณสมหญิง", timeout=15_000)
    expect(row.locator(".badge")).to_have_text("1")
    ui.open_first_chat(page)
    expect(page.get_by_text("สวัสดีครับ คุณสมหญิง ประชุมบ่ายนี้ 14:00 น.")).to_be_visible()
    ui.send(page, "รับทราบค่ะ แล้วพบกันค่ะ")
    expect(phone.get_by_text("รับทราบค่ะ แล้วพบกันค่ะ")).to_be_visible(timeout=15_000)
    # Thai dates in the Buddhist era.
    buddhist_year = str(datetime.now(UTC).year + 543)
    expect(phone.locator(".msg .meta").first).to_contain_text(buddhist_year)
    ui.shot(phone, "phone-chat")
    ui.shot(page, "desktop-chat")


def test_closed_browser_receives_each_message_once_on_reopen(
    node: Node, people: People, phone: Page, desktop: Desktop
) -> None:
    desktop.close()
    texts = [f"ข้อความขณะออฟไลน์ {i}" for i in range(3)]
    for text in texts:
        ui.send(phone, text)
    page = desktop.open()
    page.goto(node.http)
    row = page.get_by_test_id("chat-row")
    expect(row).to_contain_text(texts[-1], timeout=20_000)
    ui.open_first_chat(page)
    for text in texts:
        expect(page.get_by_text(text, exact=True)).to_have_count(1)
    # A reload keeps history and sessions: the same messages once, and the session still works.
    page.reload()
    ui.open_first_chat(page)
    for text in [*texts, "สวัสดีครับ คุณสมหญิง ประชุมบ่ายนี้ 14:00 น."]:
        expect(page.get_by_text(text, exact=True)).to_have_count(1)
    ui.send(page, "กลับมาออนไลน์แล้วค่ะ")
    expect(phone.get_by_text("กลับมาออนไลน์แล้วค่ะ")).to_be_visible(timeout=15_000)


def test_outbox_survives_going_offline(
    node: Node, people: People, phone: Page, desktop: Desktop
) -> None:
    phone.context.set_offline(True)
    phone.get_by_label("พิมพ์ข้อความ").fill("ส่งตอนกลับมาออนไลน์")
    phone.get_by_role("button", name="ส่ง", exact=True).click()
    expect(phone.locator("[data-testid=message][data-state=sending]")).to_have_count(1)
    phone.context.set_offline(False)
    sent = phone.locator("[data-testid=message][data-state=sent]", has_text="ส่งตอนกลับมาออนไลน์")
    expect(sent).to_be_visible(timeout=40_000)
    page = desktop.context.pages[0] if desktop.context else desktop.open()
    expect(page.get_by_text("ส่งตอนกลับมาออนไลน์", exact=True)).to_have_count(1, timeout=15_000)


def test_history_opens_offline_from_the_app_shell_cache(phone: Page) -> None:
    # The service worker cached the shell; history and keys come from IndexedDB.
    phone.evaluate("() => navigator.serviceWorker.ready.then(() => true)")
    phone.reload()
    phone.wait_for_function("() => navigator.serviceWorker.controller !== null")
    phone.context.set_offline(True)
    try:
        phone.reload()
        expect(phone.locator("[data-status=offline]")).to_be_visible(timeout=15_000)
        ui.open_first_chat(phone)
        expect(phone.get_by_text("รับทราบค่ะ แล้วพบกันค่ะ", exact=True)).to_be_visible()
        # The cache holds the shell only: no message text, no key material.
        cached = phone.evaluate(
            "caches.keys().then(ks => Promise.all(ks.map(k => caches.open(k)"
            ".then(c => c.keys()).then(rs => rs.map(r => new URL(r.url).pathname)))))"
            ".then(a => a.flat())"
        )
        assert "/" in cached and all(p == "/" or p.startswith(("/assets/", "/icons/", "/manifest"))
                                     for p in cached), cached
    finally:
        phone.context.set_offline(False)


def test_storage_holds_no_plaintext_and_the_key_cannot_be_read(phone: Page) -> None:
    """As someone with the browser profile would look: records sealed, the key unreadable."""
    needles = ["รับทราบค่ะ", "สวัสดีครับ", "identitySeed", "sessions", "token"]
    stored = read_storage(phone, [n.encode() for n in needles])
    assert stored.records >= 4 and stored.sealed_shapes
    assert stored.found == [False] * len(needles)
    assert stored.key_extractable is False and stored.key_exported is False
    assert stored.local_storage == 0


def test_a_message_sent_from_another_own_device_shows_in_its_chat(
    node: Node, loop: Loop, people: People, phone: Page
) -> None:
    """Somchai writes to Somying from a second device: his phone shows it, as his,
    in the chat with Somying (the copy names the recipient, PROTOCOL.md §E6a)."""
    second = PyDevice(loop, node.ws).enroll(
        str(people.admin.request(IssueCode, official_id=people.somchai).code), "somchai-cli"
    )
    text = "ส่งจากเครื่องที่สองของสมชาย"
    second.call(second.client.send_message, people.somying, text.encode(), uuid.uuid4().hex)
    ui.back_home(phone)
    rows = phone.get_by_test_id("chat-row")
    expect(rows.filter(has_text=text)).to_have_count(1, timeout=15_000)
    expect(rows.filter(has_text=text)).to_contain_text("สมหญิง")
    expect(rows.filter(has_text=text).locator(".badge")).to_have_count(0)  # ours: nothing unread
    rows.filter(has_text=text).click()
    expect(phone.locator(".msg.mine", has_text=text)).to_have_count(1)
    expect(phone.get_by_text("สวัสดีครับ คุณสมหญิง ประชุมบ่ายนี้ 14:00 น.")).to_be_visible()


def test_sign_out_wipes_the_device(node: Node, phone: Page) -> None:
    ui.back_home(phone)
    phone.get_by_role("button", name="ตั้งค่า").click()
    expect(phone.get_by_text("อุปกรณ์นี้: โทรศัพท์สมชาย")).to_be_visible()
    phone.once("dialog", lambda dialog: dialog.accept())
    phone.get_by_role("button", name="ออกจากระบบ").click()
    expect(phone.get_by_role("heading", name="ลงทะเบียนอุปกรณ์นี้")).to_be_visible()
    names = phone.evaluate("() => indexedDB.databases().then(ds => ds.map(d => d.name))")
    assert "gchat" not in names
    phone.reload()
    expect(phone.get_by_role("heading", name="ลงทะเบียนอุปกรณ์นี้")).to_be_visible()
