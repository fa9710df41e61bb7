"""The console in the web app: views follow the official's roles, the node refuses anyway.

One node and one superadmin (the deployment's first, a Python device) per
module; its browser is a second device of the same superadmin, enrolled
with a code it issued itself. An ordinary official's browser shows no
console entry, and the admin frames it sends by hand on its own
authenticated connection are refused.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import msgspec
import pytest
from playwright.sync_api import Browser, BrowserContext, Page, expect

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


@pytest.fixture(scope="module")
def superadmin_page(browser: Browser, node: Node, admin: PyDevice) -> Iterator[Page]:
    code = admin.request(f.IssueCode, official_id=admin.official_id).code
    context = browser.new_context(viewport=ui.DESKTOP, locale="th-TH")
    try:
        page = context.new_page()
        ui.enrol(page, node.http, code, "คอมพิวเตอร์สำนักงาน")
        yield page
    finally:
        context.close()


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
