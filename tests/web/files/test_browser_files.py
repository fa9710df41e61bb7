"""Files between the browser and the Python CLI through a real node (issue 16 item 5).

An official's browser (Debian's chromium) and the reference CLI as
separate processes: a PDF and a photo from the CLI are fetched, checked and
decrypted in the browser, the photo shown and the saved bytes equal to the
original; a file attached in the browser is saved identical by the CLI; a
group of three (two browsers and the CLI) all get each other's files; and a
ciphertext altered or cut in the node's storage is refused by the browser
with one sentence and no preview or link.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Browser, Page, expect

from tests.web import ui
from tests.web.files.support import (
    REFUSED_EN,
    REFUSED_TH,
    attach,
    blobs,
    enrolled_page,
    pdf_bytes,
    photo_bytes,
    saved_bytes,
    sent,
    shown_image_bytes,
)
from tests.web.harness import Node, Team
from tests.web.storage import read_storage


@pytest.fixture(scope="module")
def boon(browser: Browser, node: Node, team: Team) -> Iterator[Page]:
    with enrolled_page(browser, node, team.boon_code, "คอมพิวเตอร์บุญมี", viewport=ui.DESKTOP) as page:
        yield page


def test_cli_sends_a_pdf_and_a_photo_the_browser_checks_shows_and_saves(
    team: Team, anong: Page, tmp_path: Path
) -> None:
    pdf, photo = tmp_path / "บันทึกข้อความ.pdf", tmp_path / "site.png"
    pdf.write_bytes(pdf_bytes("memo"))
    photo.write_bytes(photo_bytes(1))
    team.cli.run("send", "--to", str(team.anong), "--file", str(pdf), "--message", "บันทึกฉบับลงนาม")
    team.cli.run("send", "--to", str(team.anong), "--file", str(photo))

    expect(anong.get_by_test_id("chat-row")).to_contain_text("site.png", timeout=20_000)
    ui.open_first_chat(anong)
    # The photo is fetched, checked, decrypted and shown by itself; its bytes are the original's.
    assert shown_image_bytes(anong, "site.png") == photo.read_bytes()
    expect(anong.get_by_text("บันทึกฉบับลงนาม")).to_be_visible()
    # The PDF waits for a tap; then it opens in a new tab (a blob: URL) or is saved.
    assert saved_bytes(anong, "บันทึกข้อความ.pdf") == pdf.read_bytes()
    pdf_box = anong.locator("[data-testid=file]", has_text="บันทึกข้อความ.pdf")
    opener = pdf_box.get_by_test_id("file-open")
    assert (opener.get_attribute("href") or "").startswith("blob:")
    assert opener.get_attribute("target") == "_blank"
    ui.shot(anong, "phone-files")
    # Both devices said download_done after keeping the checked copy: the node deleted its blobs.
    assert blobs(team.node) == []
    # The browser keeps the two files only as ciphertext (24 + size + 17 per 64 KiB chunk),
    # and no stored byte string holds a piece of either file or the caption in clear.
    pdf_data, photo_data = pdf.read_bytes(), photo.read_bytes()
    stored = read_storage(anong, [
        pdf_data[1000:1048], photo_data[len(photo_data) // 2:][:48], "บันทึกฉบับลงนาม".encode(),
    ])
    assert stored.file_sizes == sorted(
        24 + len(d) + 17 * -(-len(d) // 65536) for d in (pdf_data, photo_data)
    )
    assert stored.found == [False, False, False]
    # After a reload the files open from the kept ciphertext (checked again), not from the node.
    anong.reload()
    ui.open_first_chat(anong)
    assert shown_image_bytes(anong, "site.png") == photo.read_bytes()
    ui.back_home(anong)


def test_a_file_and_a_photo_attached_in_the_browser_are_saved_identical_by_the_cli(
    team: Team, anong: Page, tmp_path: Path
) -> None:
    ui.open_chat_by_search(anong, "ชัยวัฒน์", "ชัยวัฒน์ พึ่งธรรม")
    report = os.urandom(300_000)  # five chunks: pipelined upload, progress
    anong.get_by_label("พิมพ์ข้อความ").fill("รายงานประจำเดือน")
    attach(anong, "attach-file", tmp_path / "report-2569.bin", report)
    sent(anong, "report-2569.bin")
    picture = photo_bytes(2, "JPEG")
    attach(anong, "attach-photo", tmp_path / "camera.jpg", picture)
    sent(anong, "camera.jpg")
    assert anong.get_by_test_id("attach-photo").get_attribute("capture") == "environment"
    assert anong.get_by_test_id("attach-photo").get_attribute("accept") == "image/*"

    inbox = tmp_path / "chai-inbox"
    got = {m["file"]["name"]: m for m in team.cli_files(inbox)}
    assert set(got) == {"report-2569.bin", "camera.jpg"}
    assert got["report-2569.bin"]["text"] == "รายงานประจำเดือน"
    assert got["camera.jpg"]["file"]["media_type"] == "image/jpeg"
    assert (inbox / "report-2569.bin").read_bytes() == report
    assert (inbox / "camera.jpg").read_bytes() == picture
    assert sorted(os.listdir(inbox)) == ["camera.jpg", "report-2569.bin"]
    ui.back_home(anong)


def test_a_group_of_three_with_two_browsers_and_the_cli_shares_files(
    team: Team, anong: Page, boon: Page, tmp_path: Path
) -> None:
    ui.create_group(anong, "ตรวจพื้นที่", [("บุญมี", "บุญมี มั่นคง"), ("ชัยวัฒน์", "ชัยวัฒน์ พึ่งธรรม")])
    ui.send(anong, "เริ่มส่งภาพ")
    picture = photo_bytes(3)
    attach(anong, "attach-photo", tmp_path / "หน้างาน.png", picture)
    sent(anong, "หน้างาน.png")

    expect(boon.get_by_test_id("chat-row")).to_contain_text("หน้างาน.png", timeout=20_000)
    ui.open_first_chat(boon)
    assert shown_image_bytes(boon, "หน้างาน.png") == picture

    inbox = tmp_path / "chai-group"
    [line] = team.cli_files(inbox)
    assert line["kind"] == "group" and line["file"]["name"] == "หน้างาน.png"
    assert (inbox / "หน้างาน.png").read_bytes() == picture
    conversation = line["conversation_id"]

    sheet = tmp_path / "ตาราง.pdf"
    sheet.write_bytes(pdf_bytes("sheet"))
    team.cli.run("group", "send", "--conversation", conversation, "--file", str(sheet))
    for page in (anong, boon):
        box = page.locator("[data-testid=file]", has_text="ตาราง.pdf")
        expect(box).to_be_visible(timeout=20_000)
        assert saved_bytes(page, "ตาราง.pdf") == sheet.read_bytes()
    ui.shot(boon, "desktop-group-files")
    ui.back_home(anong)
    ui.back_home(boon)


@pytest.mark.parametrize("attack", ["flip", "truncate"])
def test_a_tampered_or_truncated_ciphertext_is_refused_with_one_sentence(
    team: Team, anong: Page, tmp_path: Path, attack: str
) -> None:
    assert blobs(team.node) == []
    name = f"สัญญา-{attack}.png"
    photo = tmp_path / name
    photo.write_bytes(photo_bytes(4))
    team.cli.run(
        "send", "--to", str(team.anong), "--file", str(photo), "--message", f"ฉบับ {attack}"
    )
    [blob] = blobs(team.node)
    data = bytearray(blob.read_bytes())
    if attack == "flip":  # whoever holds the storage changes one bit
        data[len(data) // 2] ^= 0x01
        blob.write_bytes(bytes(data))
    else:  # or cuts the end off (the node's record still says the full size)
        blob.write_bytes(bytes(data[: len(data) - 20]))

    ui.open_first_chat(anong)
    box = anong.locator("[data-testid=file]", has_text=name)
    expect(box.get_by_test_id("file-refused")).to_have_text(REFUSED_TH, timeout=20_000)
    expect(box.get_by_test_id("file-image")).to_have_count(0)
    expect(box.get_by_test_id("file-save")).to_have_count(0)
    assert blobs(team.node) == [blob]  # not reported as fetched: the node keeps it
    if attack == "flip":
        anong.evaluate("window.scrollTo(0, document.body.scrollHeight)")
        ui.shot(anong, "phone-file-refused")
        anong.locator("button.lang").click()  # the same sentence in English
        expect(box.get_by_test_id("file-refused")).to_have_text(REFUSED_EN)
        anong.locator("button.lang").click()
    blob.unlink()  # the next case starts with an empty store
    ui.back_home(anong)
