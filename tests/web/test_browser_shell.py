"""The app loads in a real browser under its own CSP, in Thai, and switches to English."""

from __future__ import annotations

from playwright.sync_api import Page, expect

from tests.web.harness import Node


def test_app_loads_under_csp_in_thai_then_english(node: Node, page: Page) -> None:
    problems: list[str] = []
    page.on("console", lambda m: problems.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda e: problems.append(str(e)))
    page.goto(node.http + "/")
    expect(page.get_by_role("heading", name="ลงทะเบียนอุปกรณ์นี้")).to_be_visible()
    assert page.evaluate("document.documentElement.lang") == "th"
    page.get_by_role("button", name="เปลี่ยนภาษา").click()
    expect(page.get_by_role("heading", name="Enrol this device")).to_be_visible()
    assert page.evaluate("document.documentElement.lang") == "en"
    assert problems == []  # a CSP violation (inline script, wasm, other origin) would show here


def test_the_app_is_installable(node: Node, page: Page) -> None:
    """Chromium's own installability check: manifest (Thai name, icons), service worker."""
    page.goto(node.http + "/")
    page.evaluate("() => navigator.serviceWorker.ready.then(() => true)")
    cdp = page.context.new_cdp_session(page)
    errors = cdp.send("Page.getInstallabilityErrors")["installabilityErrors"]
    # Playwright's contexts are incognito profiles, where Chromium never installs apps;
    # every other reason (manifest, icons, service worker, secure origin) would be listed.
    assert [e["errorId"] for e in errors if e["errorId"] != "in-incognito"] == []
    manifest = cdp.send("Page.getAppManifest")
    assert manifest["errors"] == []
    assert "จีแชต" in manifest["data"]
