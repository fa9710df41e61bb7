"""Client trust tests: a real node (the ``node``/``world`` fixtures) and a hostile relay."""

from collections.abc import AsyncIterator

import pytest

from gchat.app import App
from gchat.client.sdk import Client
from tests.client.relay import HostileRelay
from tests.support import World, url_of


@pytest.fixture
async def relay(node: App) -> AsyncIterator[HostileRelay]:
    hostile = HostileRelay(url_of(node))
    await hostile.start()
    try:
        yield hostile
    finally:
        await hostile.stop()


async def behind(w: World, relay: HostileRelay, client: Client) -> Client:
    """The same device, reconnected through the relay (what a hostile operator serves)."""
    await client.close()
    client.state.url = relay.url
    fresh = Client(client.state, store=client.store)
    await fresh.connect()
    await fresh.authenticate()
    w.clients.append(fresh)
    return fresh
