"""Measure the web app's budgets (docs/PERFORMANCE.md, "Web app").

Run from the repository root after a build (``make web-budgets``):

1. application code without libsodium, gzip-compressed (budget 150 KiB);
2. time to interactive on Debian's chromium, phone viewport (375x812), 4x CPU
   throttling, against a local node: a first visit with no cache (the
   enrolment screen) and a returning, enrolled device (its conversations)
   (budget 2 s);
3. 1,000 messages of history: received and decrypted as they arrive, then,
   after a reload, opening the conversation (the 1,000-message history
   decrypted from IndexedDB, newest page rendered) and rendering all 1,000
   (budget 1 s).

It starts its own node and database (PostgreSQL as for the tests) and
prints a Markdown table. Timings are medians of a few runs, measured inside
the page with performance marks the app sets (``gchat:interactive``,
``gchat:history:<messages>:<rendered>``).
"""

from __future__ import annotations

import gzip
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

from playwright.sync_api import Page, sync_playwright

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from tests.web.harness import (  # noqa: E402
    Loop,
    Node,
    PyDevice,
    admin_device,
    chromium_path,
    new_official,
)

PHONE = {"width": 375, "height": 812}
RUNS = 5


def code_sizes() -> tuple[int, int]:
    """(application bytes gzipped, libsodium bytes gzipped) of the built assets."""
    meta = json.loads((REPO / "web" / "build-meta.json").read_text())
    app = sodium = 0
    for path, output in meta["outputs"].items():
        if not path.endswith((".js", ".css")):
            continue
        size = len(gzip.compress((REPO / "web" / path).read_bytes(), 9))
        if any("libsodium" in name for name in output.get("inputs", {})):
            sodium += size
        else:
            app += size
    return app, sodium


def mark_time(page: Page, name: str, timeout: float = 30) -> float:
    page.wait_for_function(
        "n => performance.getEntriesByName(n).length > 0", arg=name, timeout=timeout * 1000
    )
    return float(page.evaluate(f"performance.getEntriesByName({name!r})[0].startTime"))


def timed_click(page: Page, selector: str, mark_prefix: str, timeout: float = 30) -> float:
    """Milliseconds from clicking to the first mark starting with ``mark_prefix``."""
    return float(page.evaluate(
        """async ([selector, prefix, timeout]) => {
            performance.clearMarks();
            const t0 = performance.now();
            document.querySelector(selector).click();
            const deadline = t0 + timeout;
            for (;;) {
                const m = performance.getEntriesByType("mark").find(e => e.name.startsWith(prefix));
                if (m) return m.startTime - t0;
                if (performance.now() > deadline) throw new Error("no mark " + prefix);
                await new Promise(r => setTimeout(r, 5));
            }
        }""",
        [selector, mark_prefix, timeout * 1000],
    ))


def main() -> None:
    app_bytes, sodium_bytes = code_sizes()
    rows = [("Application code (gzip, without libsodium)", f"{app_bytes / 1024:.1f} KiB",
             "150 KiB"), ("libsodium chunk (gzip, for reference)",
                          f"{sodium_bytes / 1024:.1f} KiB", "-")]
    tmp = Path(tempfile.mkdtemp(prefix="gchat-budgets-", dir="/tmp"))
    tmp.chmod(0o755)
    admin_dsn = (os.environ.get("GCHAT_TEST_DATABASE_URL")
                 or "postgresql://postgres@127.0.0.1:5432/postgres")
    node = Node(admin_dsn, tmp, GCHAT_RATE_LIMITS="messages=5000/5000")
    loop = Loop()
    try:
        admin = admin_device(node, loop)
        reader, reader_code = new_official(admin, "ผู้อ่าน ทดสอบ")
        writer, writer_code = new_official(admin, "ผู้เขียน ทดสอบ")
        python = PyDevice(loop, node.ws).enroll(writer_code, "writer-cli")
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=chromium_path())
            context = browser.new_context(viewport=PHONE, is_mobile=True, has_touch=True,
                                          locale="th-TH", service_workers="block")
            page = context.new_page()
            cdp = context.new_cdp_session(page)
            cdp.send("Emulation.setCPUThrottlingRate", {"rate": 4})
            cdp.send("Network.setCacheDisabled", {"cacheDisabled": True})
            cold = []
            for _ in range(RUNS):
                page.goto(node.http)
                cold.append(mark_time(page, "gchat:interactive"))
            rows.append(("First visit, no cache: enrolment screen interactive (4x CPU)",
                         f"{statistics.median(cold):.0f} ms", "2 s"))
            cdp.send("Network.setCacheDisabled", {"cacheDisabled": False})
            page.get_by_label("รหัสลงทะเบียน").fill(reader_code)
            page.get_by_role("button", name="ลงทะเบียน").click()
            page.wait_for_selector("[data-status=online]", timeout=60_000)
            warm = []
            for _ in range(RUNS):
                page.reload()
                warm.append(mark_time(page, "gchat:interactive"))
            rows.append(("Returning device: conversations interactive (4x CPU)",
                         f"{statistics.median(warm):.0f} ms", "2 s"))

            cdp.send("Emulation.setCPUThrottlingRate", {"rate": 1})
            page.wait_for_selector("[data-status=online]", timeout=60_000)
            count = 1000
            started = time.monotonic()

            async def send_all() -> None:
                for i in range(count):
                    await python.client.send_message(reader, f"ข้อความที่ {i + 1}".encode(), f"b-{i}")

            loop.run(send_all(), timeout=600)
            sent = time.monotonic() - started
            page.wait_for_function(
                "t => document.querySelector('[data-testid=chat-row]')?.textContent.includes(t)",
                arg=f"ข้อความที่ {count}", timeout=600_000,
            )
            received = time.monotonic() - started
            rows.append((f"{count} messages sent by the Python client (one after another)",
                         f"{sent:.1f} s", "-"))
            rows.append(("... received, decrypted, stored by the browser (no throttling)",
                         f"{received:.1f} s ({count / received:.0f}/s)", "-"))
            for rate in (1, 4):
                cdp.send("Emulation.setCPUThrottlingRate", {"rate": rate})
                opened, everything = [], []
                for _ in range(RUNS):
                    page.reload()
                    page.wait_for_selector("[data-testid=chat-row]")
                    row = "[data-testid=chat-row]"
                    opened.append(timed_click(page, row, f"gchat:history:{count}:"))
                    page.wait_for_selector("text=ข้อความก่อนหน้า")
                    everything.append(float(page.evaluate(
                        """async (done) => {
                            const t0 = performance.now();
                            for (;;) {
                                const older = [...document.querySelectorAll("button")]
                                    .find(b => b.textContent === "ข้อความก่อนหน้า");
                                if (!older) break;
                                older.click();
                                await new Promise(r => setTimeout(r, 0));
                            }
                            while (performance.getEntriesByName(done).length === 0) {
                                await new Promise(r => setTimeout(r, 5));
                            }
                            return performance.getEntriesByName(done)[0].startTime - t0;
                        }""",
                        f"gchat:history:{count}:{count}",
                    )))
                rows.append((f"Open a {count}-message conversation: decrypt history, "
                             f"render newest page ({rate}x CPU)",
                             f"{statistics.median(opened):.0f} ms", "1 s"))
                rows.append((f"... then page back to render all {count} ({rate}x CPU)",
                             f"{statistics.median(everything):.0f} ms", "-"))
            assert writer
            browser.close()
    finally:
        loop.close()
        node.stop()
    print("| Measure | Result | Budget |")
    print("|---|---|---|")
    for name, value, budget in rows:
        print(f"| {name} | {value} | {budget} |")


if __name__ == "__main__":
    main()
