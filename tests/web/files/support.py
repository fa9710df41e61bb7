"""What the file tests share: pictures and PDFs and the steps with files (the team is harness.Team).

Used by test_browser_files.py and test_browser_files_resume.py beside it
(two modules, so a parallel run starts them on two workers); their shared
fixtures are in conftest.py.
"""

from __future__ import annotations

import io
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from PIL import Image
from playwright.sync_api import Browser, Page, expect

from tests.web import ui
from tests.web.harness import Node

REFUSED_TH = "ไฟล์นี้ถูกแก้ไขหรือได้รับมาไม่ครบ จึงไม่เปิดและไม่บันทึก"
REFUSED_EN = "This file was altered or arrived incomplete, so it was not opened or saved."


def photo_bytes(seed: int, fmt: str = "PNG") -> bytes:
    """A real picture the browser can decode (random pixels, so its bytes are unique)."""
    rnd = os.urandom(96 * 64 * 3)
    image = Image.frombytes("RGB", (96, 64), rnd)
    image.putpixel((0, 0), (seed % 256, 0, 0))
    out = io.BytesIO()
    image.save(out, fmt)
    return out.getvalue()


def pdf_bytes(title: str) -> bytes:
    body = f"%PDF-1.4\n% {title}\n".encode() + os.urandom(150_000)  # more than two chunks
    return body + b"\n%%EOF\n"


@contextmanager
def enrolled_page(
    browser: Browser, node: Node, code: str, name: str, **context: Any
) -> Iterator[Page]:
    """A browser context with the official's device enrolled; closed at the end."""
    made = browser.new_context(locale="th-TH", accept_downloads=True, **context)
    page = made.new_page()
    ui.enrol(page, node.http, code, name)
    try:
        yield page
    finally:
        made.close()


def attach(page: Page, input_id: str, file: Path, data: bytes) -> None:
    """Pick a file on disk in the named file input, as the official would.

    Its type comes from its name, as the browser gives it. A file on disk,
    not bytes handed over: Playwright decodes handed-over bytes inside the
    page, a character at a time, which for 12 MiB under the resume tests'
    CPU throttle took more than its 30 s on a loaded machine.
    """
    file.write_bytes(data)
    page.get_by_test_id(input_id).set_input_files(file)


def sent(page: Page, name: str) -> None:
    """The message carrying this file shows as sent (upload done, message accepted)."""
    expect(
        page.locator("[data-testid=message][data-state=sent]", has_text=name)
    ).to_be_visible(timeout=90_000)


def blobs(node: Node) -> list[Path]:
    return sorted((node.tmp / "data" / "attachments" / "blobs").iterdir())


def shown_image_bytes(page: Page, name: str) -> bytes:
    """The photo is shown by itself (decoded from its decrypted blob: URL); the bytes Save gives."""
    image = page.locator(f"img[data-testid=file-image][alt='{name}']").last
    expect(image).to_be_visible(timeout=20_000)
    assert (image.get_attribute("src") or "").startswith("blob:")
    page.wait_for_function(
        "img => img.complete && img.naturalWidth === 96", arg=image.element_handle()
    )
    return saved_bytes(page, name)


def saved_bytes(page: Page, name: str) -> bytes:
    """Press Save on the named file; the bytes the browser downloads."""
    box = page.locator("[data-testid=file]", has_text=name).last
    if box.get_by_role("button", name="ดาวน์โหลด").count() > 0:
        box.get_by_role("button", name="ดาวน์โหลด").click()
    save = box.get_by_test_id("file-save")
    expect(save).to_be_visible(timeout=20_000)
    with page.expect_download() as download:
        save.click()
    assert download.value.suggested_filename == name
    return Path(download.value.path()).read_bytes()
