"""The reference client acks a burst of deliveries in a few frames (docs/PROTOCOL.md §4.9).

Against a real node: every position is acked once and deleted, with one
"message.delivered" event each, and a window smaller than the client's ack
batch never stalls the drain.
"""

import json
from pathlib import Path

import asyncpg

from gchat.app import App
from gchat.client import sdk
from gchat.client.sdk import Client
from tests.support import World, eventually, node_config


def count_acks(client: Client) -> list[list[int]]:
    """The positions of each ``ack`` frame ``client`` sends from now on."""
    frames: list[list[int]] = []
    send = client.rpc.ack

    async def recording(positions: list[int]) -> None:
        frames.append(list(positions))
        await send(positions)

    client.rpc.ack = recording  # type: ignore[method-assign]
    return frames


async def backlog(world: World, count: int) -> tuple[Client, Client]:
    """Alice sends ``count`` messages to bob while he is offline; returns (alice, bob offline)."""
    alice = await world.official_with_device("alice")
    bob = await world.official_with_device("bob")
    assert bob.state.official_id is not None
    await bob.close()
    for i in range(count):
        await alice.send_message(bob.state.official_id, f"m{i}".encode(), f"b-{i}")
    return alice, bob


async def read_all(client: Client, count: int) -> list[bytes]:
    got = [m.plaintext async for m in client.messages(idle_timeout=5.0)]
    assert len(got) == count
    return got


async def reconnect_reading(
    world: World, bob: Client, count: int
) -> tuple[Client, list[list[int]]]:
    """Bob back online on a new connection, having read all ``count`` messages in
    order; returns that client and the positions of each ``ack`` frame it sent."""
    bob2 = Client(bob.state)
    frames = count_acks(bob2)
    await bob2.connect()
    await bob2.authenticate()
    world.clients.append(bob2)
    assert await read_all(bob2, count) == [f"m{i}".encode() for i in range(count)]
    return bob2, frames


async def inbox_of(pool: asyncpg.Pool, client: Client) -> int:
    query = "SELECT count(*) FROM inbox WHERE device_id = $1"
    return int(await pool.fetchval(query, client.state.device_id))


async def emptied(pool: asyncpg.Pool, client: Client) -> None:
    async def empty() -> bool:
        return await inbox_of(pool, client) == 0

    await eventually(empty, what="every acked envelope deleted")


async def delivered_events(pool: asyncpg.Pool) -> int:
    await eventually(
        lambda: pool.fetchval("SELECT count(*) = 0 FROM audit_pending"),
        within=30.0,
        what="the sequencer empties the backlog",
    )
    rows = await pool.fetch("SELECT entry FROM audit_events")
    return sum(json.loads(bytes(r[0]))["kind"] == "message.delivered" for r in rows)


async def test_a_burst_is_acked_in_fewer_frames_and_every_envelope_deleted(world: World) -> None:
    count = 40
    _, bob = await backlog(world, count)
    assert world.app.db is not None
    pool = world.app.db.pool
    assert await inbox_of(pool, bob) == count

    bob2, frames = await reconnect_reading(world, bob, count)

    positions = [p for frame in frames for p in frame]
    assert len(frames) <= count // 4  # one per burst read, not one per envelope
    assert all(len(frame) <= sdk.ACK_BATCH for frame in frames)
    assert len(positions) == len(set(positions)) == count  # each acked once
    await emptied(pool, bob2)
    assert await delivered_events(pool) == count  # one event per envelope, not per frame


async def test_a_window_smaller_than_the_ack_batch_never_stalls(
    database_url: str, tmp_path: Path
) -> None:
    window = 4
    assert window < sdk.ACK_BATCH  # the client would wait for more acks than the node pushes
    app = App(node_config(database_url, tmp_path, max_unacked=window))
    await app.start()
    world = World(app)
    try:
        await world.start()
        count = 30
        _, bob = await backlog(world, count)
        bob2, frames = await reconnect_reading(world, bob, count)
        assert all(len(frame) <= window for frame in frames)
        positions = [p for frame in frames for p in frame]
        assert len(positions) == len(set(positions)) == count  # each acked once
        assert app.db is not None
        await emptied(app.db.pool, bob2)
    finally:
        await world.close()
        await app.stop()
