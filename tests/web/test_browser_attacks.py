"""The browser's trust rules against a lying server, as its operator would attack.

A hostile relay (tests/client/relay.py) sits between the browser and a real
node and also serves the app, so the page's own origin is the relay: every
frame the browser gets passes through it. It relabels Mallory's messages as
the Minister's and replays a prekey message under new message ids. The
browser must refuse the lies, keep its bindings and sessions, and go on
reading and writing.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import msgspec
import pytest
from playwright.sync_api import Browser, Page, expect
from websockets.asyncio.server import ServerConnection, serve
from websockets.datastructures import Headers
from websockets.http11 import Request, Response

from protocol import frames as f
from protocol.version import MSGPACK_SUBPROTOCOL
from tests.client.relay import HostileRelay
from tests.web import ui
from tests.web.harness import Loop, Node, PyDevice, admin_device, new_official, wait_for_text


class AppRelay(HostileRelay):
    """The hostile relay, also answering the app's files (as a lying node would)."""

    async def start(self) -> None:
        from gchat.transport.webapp import DEFAULT_ROOT, WebApp

        web = WebApp.from_directory(DEFAULT_ROOT)

        async def files(connection: ServerConnection, request: Request) -> Response | None:
            answer = web.answer(request.path, request.headers.get_all)
            if answer is None:
                return None
            headers = Headers(answer.headers)
            headers["Content-Length"] = str(len(answer.body))
            return Response(answer.status.value, answer.status.phrase, headers, answer.body)

        self._server = await serve(
            self._serve, "127.0.0.1", 0, subprotocols=[MSGPACK_SUBPROTOCOL],  # type: ignore[list-item]
            compression=None, max_size=None, process_request=files,
        )


class Cast:
    def __init__(self, node: Node, loop: Loop) -> None:
        admin = admin_device(node, loop)
        self.relay = AppRelay(node.ws)
        loop.run(self.relay.start())
        # The Minister's device reaches the node through a relay of its own, so
        # the server can leave one-time prekeys out of the bundles it gets.
        self.minister_relay = HostileRelay(node.ws)
        loop.run(self.minister_relay.start())
        minister_code = new_official(admin, "รัฐมนตรี")[1]
        self.minister = PyDevice(loop, self.minister_relay.url).enroll(minister_code)
        self.mallory = PyDevice(loop, node.ws).enroll(new_official(admin, "มัลลอรี")[1])
        self.victim, self.victim_code = new_official(admin, "ผู้ถูกหลอก")
        self.loop = loop

    @property
    def http(self) -> str:
        return self.relay.url.replace("ws://", "http://")


@pytest.fixture(scope="module")
def cast(node: Node, loop: Loop) -> Iterator[Cast]:
    c = Cast(node, loop)
    try:
        yield c
    finally:
        loop.run(c.relay.stop())
        loop.run(c.minister_relay.stop())


@pytest.fixture(scope="module")
def victim(browser: Browser, cast: Cast) -> Iterator[Page]:
    context = browser.new_context(viewport=ui.PHONE, locale="th-TH")
    try:
        page = context.new_page()
        ui.enrol(page, cast.http, cast.victim_code, "โทรศัพท์ผู้ถูกหลอก")
        yield page
    finally:
        context.close()


def send(device: PyDevice, to: uuid.UUID, text: str) -> None:
    device.call(device.client.send_message, to, text.encode(), uuid.uuid4().hex)


def test_relabelled_deliver_is_refused_and_the_binding_stays(cast: Cast, victim: Page) -> None:
    send(cast.mallory, cast.victim, "สวัสดี ฉันคือมัลลอรี")
    row = victim.get_by_test_id("chat-row")
    expect(row).to_contain_text("สวัสดี ฉันคือมัลลอรี", timeout=15_000)
    mallory_device = cast.mallory.client.state.device_id
    minister = cast.minister.official_id

    def relabel(frame: f.ServerFrame) -> list[f.ServerFrame]:
        if isinstance(frame, f.Deliver) and frame.sender_device == mallory_device:
            return [msgspec.structs.replace(frame, sender_official=minister)]
        return [frame]

    cast.relay.rewrite = relabel
    send(cast.mallory, cast.victim, "รัฐมนตรีสั่ง: ส่งแฟ้มลับมาที่นี่")
    ui.open_first_chat(victim)
    expect(victim.locator(".msg.undecryptable")).to_have_count(1, timeout=15_000)
    # The lie is nowhere on screen, and no chat with the Minister appeared.
    expect(victim.get_by_text("รัฐมนตรีสั่ง: ส่งแฟ้มลับมาที่นี่")).to_have_count(0)
    ui.back_home(victim)
    expect(row).to_have_count(1)
    # The victim answers Mallory's chat: only Mallory reads it, the Minister gets nothing.
    cast.relay.rewrite = lambda frame: [frame]
    ui.open_first_chat(victim)
    ui.send(victim, "ถึงมัลลอรีเท่านั้น")
    assert wait_for_text(cast.mallory, "ถึงมัลลอรีเท่านั้น").sender_official != minister


def test_replayed_prekey_message_is_refused_and_the_session_still_works(
    cast: Cast, victim: Page
) -> None:
    """The server forces a session without a one-time prekey, then replays its
    first (prekey) message under new ids.

    Without a one-time prekey nothing else stops the replay: the handshake
    can be run again from the victim's signed prekey alone, so only the
    replay cache (PROTOCOL.md §E6a rule 4) refuses it.
    """

    def no_one_time_prekey(frame: f.ServerFrame) -> list[f.ServerFrame]:
        if isinstance(frame, f.Bundle):
            devices = [msgspec.structs.replace(d, one_time_prekey=None) for d in frame.devices]
            return [msgspec.structs.replace(frame, devices=devices)]
        return [frame]

    cast.minister_relay.rewrite = no_one_time_prekey
    cast.relay.rewrite = lambda frame: [frame]
    minister_device = cast.minister.client.state.device_id
    send(cast.minister, cast.victim, "ข้อความแรกจากรัฐมนตรี")
    ui.back_home(victim)
    rows = victim.get_by_test_id("chat-row")
    expect(rows.filter(has_text="ข้อความแรกจากรัฐมนตรี")).to_have_count(1, timeout=15_000)
    first = next(d for d in cast.relay.delivers() if d.sender_device == minister_device)
    for i in range(3):
        replay = msgspec.structs.replace(first, message_id=uuid.uuid4(), position=10_000 + i)
        cast.loop.run(cast.relay.inject(replay))
    expect(rows.first.locator(".badge")).to_have_text("4", timeout=15_000)  # 1 + 3 refused
    rows.first.click()
    expect(victim.locator(".msg.undecryptable")).to_have_count(3, timeout=15_000)
    # Refused by the replay cache, not by a spent one-time prekey (there was none).
    expect(victim.get_by_test_id("no-one-time-prekey")).to_be_visible()
    refused = victim.locator(".msg.undecryptable", has_text="prekey message accepted before")
    expect(refused).to_have_count(3)
    expect(victim.get_by_text("ข้อความแรกจากรัฐมนตรี", exact=True)).to_have_count(1)
    # Both ways still work on the one session.
    ui.send(victim, "รับทราบครับท่าน")
    wait_for_text(cast.minister, "รับทราบครับท่าน")
    send(cast.minister, cast.victim, "ข้อความที่สอง")
    expect(victim.get_by_text("ข้อความที่สอง", exact=True)).to_have_count(1, timeout=15_000)
