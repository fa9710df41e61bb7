"""Node ids: kept across restarts, and two nodes that share one still hear each other.

An operator may start two nodes on one shared data folder (the docs tell
them to share the keys folder) without naming them; they then read the same
``node-id`` file. The Redis broker drops its own signals by origin, so the
origin must be the process, not the name, or wake-ups between the two nodes
would silently vanish.
"""

import asyncio
from dataclasses import replace
from pathlib import Path

from gchat.app import App
from gchat.client.sdk import Client
from gchat.config import Config
from gchat.runtime import node_id
from tests.support import World, node_config, url_of


def test_an_id_is_made_once_and_kept(tmp_path: Path) -> None:
    first = node_id.load_or_create(tmp_path)
    assert first == node_id.load_or_create(tmp_path)
    assert (tmp_path / "node-id").read_text().strip() == first
    assert node_id.load_or_create(tmp_path, "named") == "named"
    (tmp_path / "node-id").write_text("bad id with spaces\n")
    try:
        node_id.load_or_create(tmp_path)
    except ValueError as error:
        assert "node-id" in str(error)
    else:
        raise AssertionError("a damaged node-id file was accepted")


async def test_two_nodes_sharing_a_node_id_still_wake_each_other(
    database_url: str, redis_url: str, redis_prefix: str, tmp_path: Path
) -> None:
    def config() -> Config:
        named = node_config(database_url, tmp_path, redis_url=redis_url, redis_prefix=redis_prefix)
        return replace(named, node_id="")  # nobody named them

    a, b = App(config()), App(config())
    assert a.node_id == b.node_id  # one data folder, one node-id file
    await a.start()
    await b.start()
    world = World(a)
    try:
        await world.start()
        alice = await world.official_with_device("alice")
        bob = await world.official_with_device("bob")
        assert bob.state.official_id is not None
        await bob.close()
        bob.state.url = url_of(b)
        on_b = Client(bob.state)
        await on_b.connect()
        world.clients.append(on_b)
        await on_b.authenticate()
        await alice.send_message(bob.state.official_id, b"across nodes", "x1")  # commits on A
        got = await asyncio.wait_for(anext(on_b.messages(idle_timeout=5)), 10)
        assert got.plaintext == b"across nodes"
    finally:
        await world.close()
        await b.stop()
        await a.stop()
