"""Abuse is capped: connections per address, frames per connection, searches, HTTP methods.

Written as the attacker would run them, against a real node on real
PostgreSQL; each would pass unhindered without its cap.
"""

import asyncio
import contextlib
import http.client
import json
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from gchat.app import App
from gchat.client.rpc import ClientError
from protocol import frames as f
from protocol.errors import CloseCode
from tests.support import World, eventually, node_config, unread, url_of

JSON = "gchat.v1+json"


@pytest.fixture
async def capped(database_url: str, tmp_path: Path) -> AsyncIterator[App]:
    """A node whose per-address cap applies to loopback too (tests connect from there)."""
    app = App(node_config(database_url, tmp_path, max_connections_per_address=3,
                          connection_cap_exempt=""))
    await app.start()
    try:
        yield app
    finally:
        await app.stop()


async def test_one_address_cannot_hold_more_than_its_connections(capped: App) -> None:
    url = url_of(capped)
    held = [await connect(url, subprotocols=[JSON], compression=None)  # type: ignore[list-item]
            for _ in range(3)]
    try:
        for ws in held:
            assert json.loads(await ws.recv())["type"] == "challenge"
        for _ in range(5):  # refused before the upgrade, every time
            with pytest.raises(InvalidStatus) as refused:
                await connect(url, subprotocols=[JSON], compression=None)  # type: ignore[list-item]
            assert refused.value.response.status_code == 429
            assert refused.value.response.headers["Retry-After"] == "10"
        # Plain HTTP (health checks) is not a connection slot.
        status, _, _ = await asyncio.to_thread(_http, capped, "GET", "/healthz")
        assert status == 200
        await held.pop().close()

        async def slot_free() -> ClientConnection | None:
            try:
                return await connect(url, subprotocols=[JSON], compression=None)  # type: ignore[list-item]
            except InvalidStatus as error:
                assert error.response.status_code == 429
                return None

        again = await eventually(slot_free, what="the closed connection's slot is free")
        held.append(again)
        assert json.loads(await again.recv())["type"] == "challenge"
    finally:
        for ws in held:
            await ws.close()


async def test_concurrent_handshakes_cannot_overrun_the_cap(capped: App) -> None:
    """Twenty upgrades at once pass the HTTP check together; the cap still holds."""
    url = url_of(capped)

    async def attempt() -> object:
        try:
            ws = await connect(url, subprotocols=[JSON], compression=None)  # type: ignore[list-item]
        except InvalidStatus as error:
            return error.response.status_code
        try:
            await ws.recv()
        except ConnectionClosed:
            return ws.close_code
        return ws

    outcomes = await asyncio.gather(*(attempt() for _ in range(20)))
    sessions = [o for o in outcomes if not isinstance(o, int)]
    try:
        assert len(sessions) <= 3
        assert {o for o in outcomes if isinstance(o, int)} <= {429, CloseCode.TRY_AGAIN_LATER}
        late = await attempt()  # once the burst is settled, the cap still counts them
        if not isinstance(late, int):
            sessions.append(late)
        assert len(sessions) <= 3
    finally:
        for ws in sessions:
            await ws.close()  # type: ignore[attr-defined]


async def test_a_frame_flood_is_cut_off_without_slowing_others(world: World) -> None:
    alice = await world.official_with_device("alice")
    mallory = await world.official_with_device("mallory")
    # Authenticated and schema-valid: each one costs a database query if processed.
    frame = mallory.rpc.encode(f.GetConversation(rid=1, conversation_id=uuid.uuid4()))
    latencies: list[float] = []
    flood_done = asyncio.Event()

    async def probe() -> None:
        while not flood_done.is_set():
            started = time.monotonic()
            with contextlib.suppress(ClientError):  # not_a_member: the answer is the point
                await alice.request(f.GetConversation, conversation_id=uuid.uuid4())
            latencies.append(time.monotonic() - started)
            await asyncio.sleep(0.02)

    probing = asyncio.create_task(probe())
    await eventually(lambda: len(latencies) >= 3, what="the probe runs")
    started = time.monotonic()
    with contextlib.suppress(ConnectionClosed):
        for _ in range(50_000):
            await mallory.ws.send(frame)
    await asyncio.wait_for(mallory.ws.wait_closed(), 30)
    flood_seconds = time.monotonic() - started
    after = len(latencies)
    await eventually(lambda: len(latencies) >= after + 3, what="probes after the flood")
    flood_done.set()
    await probing
    assert mallory.ws.close_code == CloseCode.TOO_MANY_FRAMES == 4429
    replies = unread(mallory, f.Error)
    refused = [e for e in replies if e.code == "rate_limited"]
    processed = [e for e in replies if e.code != "rate_limited"]
    # 300 frames in a burst plus 100 a second were processed; 50,000 were sent.
    assert len(processed) <= 300 + 100 * flood_seconds + 1
    assert len(refused) <= 101  # max_refused_frames answers, then the close
    worst = max(latencies)
    print(f"\nflood: {len(processed)} of 50000 frames processed, {len(refused)} refused, "
          f"closed after {flood_seconds:.2f}s; probe worst {worst * 1000:.0f} ms "
          f"over {len(latencies)} round trips")
    # The documented bound (PROTOCOL.md §8) is on the work a flood costs the
    # node, asserted above; the probe's latency is reported, and only checked
    # loosely here (the flooder, the probe and the node share one event loop
    # on a shared machine; an unbounded flood held probes for about 1 s).
    assert len(latencies) > 5 and worst < 2.0


async def test_acks_are_not_counted_against_the_frame_limit(world: World) -> None:
    """A device syncing a backlog acks each envelope in its own frame: never throttled."""
    alice = await world.official_with_device("alice")
    for position in range(1, 2001):  # far past 300 + 100/s, as fast as we can
        await alice.ws.send(alice.rpc.encode(f.Ack(positions=[position])))
    with contextlib.suppress(ClientError):
        await alice.request(f.GetConversation, conversation_id=uuid.uuid4())
    assert unread(alice, f.Error) == [] and alice.ws.close_code is None


async def test_search_is_rate_limited_per_device(world: World) -> None:
    alice = await world.official_with_device("alice")
    # Pipelined, as a scraper would: 70 one at a time took over 2 s on a busy
    # machine, long enough for the bucket to refill the 10 over its burst.
    replies = [await alice.rpc.submit(f.SearchOfficials, query="a") for _ in range(70)]
    codes = []
    for reply in replies:
        try:
            await reply
        except ClientError as error:
            codes.append(error.code)
            assert error.frame.retry_after is not None and error.frame.retry_after > 0
    assert codes and set(codes) == {"rate_limited"}
    assert len(codes) <= 10  # 60 in a burst, then 5 a second


def _http(app: App, method: str, path: str) -> tuple[int, list[tuple[str, str]], bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", app.port, timeout=5)
    try:
        conn.request(method, path)
        response = conn.getresponse()
        return response.status, response.getheaders(), response.read()
    finally:
        conn.close()


async def test_health_and_metrics_answer_get_and_head_only(node: App) -> None:
    for path in ("/healthz", "/readyz", "/metrics"):
        status, headers, body = await asyncio.to_thread(_http, node, "GET", path)
        assert status == 200, path
        assert [v for k, v in headers if k.lower() == "content-type"].__len__() == 1, headers
        status, head_headers, head_body = await asyncio.to_thread(_http, node, "HEAD", path)
        assert status == 200 and head_body == b""
        for method in ("DELETE", "OPTIONS", "TRACE", "POST", "PUT"):
            status, headers, _ = await asyncio.to_thread(_http, node, method, path)
            assert status == 405, (method, path, status)
            assert dict((k.lower(), v) for k, v in headers)["allow"] == "GET, HEAD"
