"""Files cut off by a killed node go on where they stopped; cancel sends nothing (issue 16).

The browser uploads (and downloads) a file of several MiB; the test
SIGKILLs the node while the progress bar is between empty and full, starts
it again on the same port and data, and the app reconnects and goes on
from the byte the node holds (`upload_resume`, a new `download_begin`). The
CLI (and the browser) then get exactly the original bytes, and the node
holds one upload, resumed rather than begun again.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import asyncpg
import pytest
from playwright.sync_api import Page, expect

from tests.support import run_sync
from tests.web import ui
from tests.web.files.support import attach, saved_bytes, sent
from tests.web.harness import Node, Team

pytestmark = pytest.mark.slow


@pytest.fixture(autouse=True)
def fresh_start(team: Team, anong: Page) -> Iterator[None]:
    """Each test starts on the home screen with its node up, whatever the one before left.

    A test that failed between kill and restart must not leave the next one
    without a node, nor inside its chat (one failure cascaded that way).
    """
    ui.back_home(anong)
    yield
    if team.node.proc.poll() is not None:
        team.node.restart()


@contextmanager
def slowed(page: Page, rate: int = 10) -> Iterator[None]:
    """Run the page's JavaScript ``rate`` times slower (CDP CPU throttling).

    The page encrypts, decrypts and hashes every chunk, so this stretches a
    transfer from a fraction of a second on a quiet machine to seconds: the
    kill lands mid-transfer instead of racing its end (it lost that race in CI).
    A transfer enters it before it starts (a download before its click, an
    upload before its file is picked): started unthrottled, one could end
    before the throttle arrived, and no progress bar was ever seen (the
    download's timeouts in full runs under load; the upload's, in a quiet
    fresh-clone CI run, although it hashes the whole file first).
    """
    cdp = page.context.new_cdp_session(page)
    cdp.send("Emulation.setCPUThrottlingRate", {"rate": rate})
    try:
        yield
    finally:
        cdp.send("Emulation.setCPUThrottlingRate", {"rate": 1})
        cdp.detach()


#: Large enough that a transfer is still moving when the test kills the node.
BIG = 12 * 1024 * 1024


def attachment_rows(node: Node) -> int:
    async def count() -> int:
        connection = await asyncpg.connect(node.env["GCHAT_DATABASE_URL"])
        try:
            return int(await connection.fetchval("SELECT count(*) FROM attachments"))
        finally:
            await connection.close()

    return run_sync(count())


def mid_transfer(page: Page, selector: str) -> None:
    """Wait until a progress bar shows some bytes moved, and not most (a loaded machine is slow)."""
    page.wait_for_function(
        "s => [...document.querySelectorAll(s)].some(p => p.value > 0 && p.value < p.max * 0.8)",
        arg=selector, timeout=90_000, polling=10,
    )


def test_an_upload_cut_by_a_killed_node_resumes_where_it_stopped(
    team: Team, anong: Page, tmp_path: Path
) -> None:
    ui.open_chat_by_search(anong, "ชัยวัฒน์", "ชัยวัฒน์ พึ่งธรรม")
    rows = attachment_rows(team.node)
    data = os.urandom(BIG)
    with slowed(anong):
        attach(anong, "attach-file", tmp_path / "survey.bin", data)
        mid_transfer(anong, "[data-testid=upload] progress")
        team.node.kill()
    # Cut before its end: still uploading, nothing sent; it waits for the node.
    expect(anong.locator("[data-status=offline]")).to_be_visible(timeout=20_000)
    expect(anong.get_by_test_id("upload")).to_be_visible()
    expect(anong.locator("[data-testid=message]", has_text="survey.bin")).to_have_count(0)
    team.node.restart()
    sent(anong, "survey.bin")
    assert attachment_rows(team.node) == rows + 1  # resumed (upload_resume), not begun again
    inbox = tmp_path / "chai-big"
    [line] = team.cli_files(inbox)
    assert line["file"]["name"] == "survey.bin"
    assert (inbox / "survey.bin").read_bytes() == data


def test_a_download_cut_by_a_killed_node_resumes_and_checks_out(
    team: Team, anong: Page, tmp_path: Path
) -> None:
    data = os.urandom(BIG)
    (tmp_path / "scan.bin").write_bytes(data)
    team.cli.run("send", "--to", str(team.anong), "--file", str(tmp_path / "scan.bin"), timeout=180)
    expect(anong.get_by_test_id("chat-row").first).to_contain_text("scan.bin", timeout=20_000)
    ui.open_first_chat(anong)
    box = anong.locator("[data-testid=file]", has_text="scan.bin")
    with slowed(anong):
        box.get_by_role("button", name="ดาวน์โหลด").click()
        mid_transfer(anong, "[data-testid=file] progress")
        team.node.kill()
    expect(anong.locator("[data-status=offline]")).to_be_visible(timeout=20_000)
    expect(box.get_by_test_id("file-save")).to_have_count(0)  # cut before its end
    team.node.restart()
    expect(box.get_by_test_id("file-save")).to_be_visible(timeout=90_000)
    assert saved_bytes(anong, "scan.bin") == data


def test_cancel_stops_an_upload_and_sends_nothing(
    team: Team, anong: Page, tmp_path: Path
) -> None:
    ui.open_chat_by_search(anong, "ชัยวัฒน์", "ชัยวัฒน์ พึ่งธรรม")
    with slowed(anong):
        attach(anong, "attach-file", tmp_path / "draft.bin", os.urandom(BIG))
        mid_transfer(anong, "[data-testid=upload] progress")
        # Cancelled while it cannot finish (its node is down, it waits to resume): nothing
        # is sent, also not once the node is back.
        team.node.kill()
    expect(anong.locator("[data-status=offline]")).to_be_visible(timeout=20_000)
    anong.get_by_test_id("upload").get_by_role("button", name="ยกเลิก").click()
    expect(anong.get_by_test_id("upload")).to_have_count(0)
    team.node.restart()
    expect(anong.locator("[data-status=online]")).to_be_visible(timeout=60_000)
    expect(anong.locator("[data-testid=message]", has_text="draft.bin")).to_have_count(0)
    assert team.cli_files(tmp_path / "chai-none", idle=3) == []  # no message went out
