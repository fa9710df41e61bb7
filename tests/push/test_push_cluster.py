"""Push across two real node processes sharing PostgreSQL and Redis.

- a device connected to node B gets no push for a message sent through
  node A (node A asks Redis who is subscribed to the device's channel);
- an offline device gets exactly one push per window in total, however
  many messages arrive through both nodes (the shared coalescing key).
"""

from collections.abc import AsyncIterator
from pathlib import Path
from uuid import UUID

import pytest
from redis.asyncio import Redis

from gchat.client.sdk import Client
from protocol import frames as f
from tests.cluster.harness import Cluster, People
from tests.support import eventually, stays

from .service import PushService, push_service

pytestmark = pytest.mark.slow  # two real node processes


@pytest.fixture
async def nodes(
    tmp_path: Path, database_url: str, redis_url: str, redis_prefix: str
) -> AsyncIterator[tuple[People, PushService]]:
    async with push_service(tmp_path) as service:
        cluster = Cluster(
            tmp_path, database_url, redis_url, redis_prefix, size=2,
            GCHAT_PUSH_CA_FILE=str(service.ca_file),
        )
        people = People(cluster)
        try:
            await cluster.start()
            await people.bootstrap()
            yield people, service
        finally:
            await people.close()
            cluster.close()
            print(cluster.logs())  # shown by pytest only when the test failed


async def register(client: Client, service: PushService, path: str) -> None:
    service.vapid = (await client.request(f.GetPushConfig)).vapid_public_key
    await client.request(f.RegisterPush, **service.subscription(path))


async def test_connected_on_another_node_no_push_offline_one_push_from_both_nodes(
    nodes: tuple[People, PushService], redis_url: str, redis_prefix: str
) -> None:
    people, service = nodes
    (alice,) = await people.official("alice", [0])
    (carol,) = await people.official("carol", [1])
    (bob,) = await people.official("bob", [1])  # stays connected, to node 1 only
    (dave,) = await people.official("dave", [0])  # goes offline
    await register(bob, service, "/bob")
    await register(dave, service, "/dave")
    await dave.close()
    bob_id, dave_id = bob.state.official_id, dave.state.official_id
    assert isinstance(bob_id, UUID) and isinstance(dave_id, UUID)

    # Node 1 has told Redis it holds bob (its SUBSCRIBE follows the login).
    redis = Redis.from_url(redis_url)
    try:
        channel = f"{redis_prefix}dev:{bob.state.device_id}"
        await eventually(lambda: _subscribers(redis, channel), what="bob subscribed")
    finally:
        await redis.aclose()

    for i in range(3):
        await alice.send_message(bob_id, f"a{i}".encode(), f"ab{i}")  # through node 0
        await alice.send_message(dave_id, f"a{i}".encode(), f"ad{i}")  # through node 0
        await carol.send_message(dave_id, f"c{i}".encode(), f"cd{i}")  # through node 1
    await eventually(lambda: service.count("/dave") >= 1, within=10)
    await stays(lambda: service.count("/dave") == 1 and service.count("/bob") == 0, during=2.0)
    assert service.received == [("/dave", b'{"type":"new_messages"}')]


async def _subscribers(redis: Redis, channel: str) -> bool:
    [(_, count)] = await redis.pubsub_numsub(channel)
    return int(count) == 1
