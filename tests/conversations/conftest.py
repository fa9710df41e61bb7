"""Real node, real PostgreSQL: the integration fixtures, plus nodes with group settings."""

from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from pathlib import Path

import pytest

from gchat.app import App
from tests.integration.conftest import World, node, node_config, world  # noqa: F401

WorldFactory = Callable[..., AbstractAsyncContextManager[World]]


@pytest.fixture
def world_with(database_url: str, tmp_path: Path) -> WorldFactory:
    """``async with world_with(max_group_members=3) as w``: a node with these settings."""

    @asynccontextmanager
    async def make(**overrides: object) -> AsyncIterator[World]:
        app = App(node_config(database_url, tmp_path, **overrides))
        await app.start()
        w = World(app)
        try:
            await w.start()
            yield w
        finally:
            await w.close()
            await app.stop()

    return make
