"""Pushes from a real node (real PostgreSQL) to a real local HTTPS push service."""

import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from gchat.app import App
from gchat.client.sdk import Client
from protocol import frames as f
from tests.support import World, eventually, node_config, stays

from .service import PushService, push_service


@pytest.fixture
async def push_world(database_url: str, tmp_path: Path) -> AsyncIterator[tuple[World, PushService]]:
    async with push_service(tmp_path) as service:
        app = App(node_config(database_url, tmp_path / "node", push_ca_file=str(service.ca_file)))
        await app.start()
        world = World(app)
        await world.start()
        try:
            yield world, service
        finally:
            await world.close()
            await app.stop()


async def registered(world: World, service: PushService, name: str, path: str) -> Client:
    client = await world.official_with_device(name)
    config = await client.request(f.GetPushConfig)
    service.vapid = config.vapid_public_key
    await client.request(f.RegisterPush, **service.subscription(path))
    return client


async def test_offline_device_gets_one_push_per_window_online_device_none(
    push_world: tuple[World, PushService],
) -> None:
    world, service = push_world
    alice = await world.official_with_device("alice")
    bob = await registered(world, service, "bob", "/bob")
    carol = await registered(world, service, "carol", "/carol")  # stays online
    assert bob.state.official_id and carol.state.official_id
    await bob.close()
    for i in range(5):
        await alice.send_message(bob.state.official_id, f"m{i}".encode(), f"b{i}")
        await alice.send_message(carol.state.official_id, f"m{i}".encode(), f"c{i}")
    await eventually(lambda: service.count("/bob") == 1, within=10)
    await stays(lambda: service.count("/bob") == 1 and service.count("/carol") == 0, during=1.0)
    assert service.received[0] == ("/bob", b'{"type":"new_messages"}')


async def test_gone_subscription_is_removed(push_world: tuple[World, PushService]) -> None:
    world, service = push_world
    alice = await world.official_with_device("alice")
    dave = await registered(world, service, "dave", "/gone")
    assert dave.state.official_id
    await dave.close()
    await alice.send_message(dave.state.official_id, b"hi", "g1")
    assert world.app.db is not None
    pool = world.app.db.pool
    await eventually(
        lambda: pool.fetchval("SELECT count(*) = 0 FROM push_subscriptions"), within=10
    )
    assert service.count("/gone") == 1


async def test_hanging_push_service_does_not_delay_accepted(
    push_world: tuple[World, PushService],
) -> None:
    world, service = push_world
    alice = await world.official_with_device("alice")
    erin = await registered(world, service, "erin", "/hang")
    assert erin.state.official_id
    await erin.close()
    started = time.monotonic()
    for i in range(3):
        await alice.send_message(erin.state.official_id, b"x", f"h{i}")
    assert time.monotonic() - started < 5  # the push service holds each request 60 s


async def test_5xx_is_retried_with_backoff_until_accepted(
    push_world: tuple[World, PushService],
) -> None:
    world, service = push_world
    alice = await world.official_with_device("alice")
    frank = await registered(world, service, "frank", "/flaky")
    assert frank.state.official_id
    await frank.close()
    await alice.send_message(frank.state.official_id, b"x", "f1")
    await eventually(lambda: service.count("/flaky") == 3, within=10)  # 503, 503, 201
    await stays(lambda: service.count("/flaky") == 3, during=1.0)
    assert world.app.db is not None
    assert await world.app.db.pool.fetchval("SELECT count(*) FROM push_subscriptions") == 1
