"""A real node (App over real sockets and a real PostgreSQL database) per test.

``world`` bootstraps a superadmin and enrols devices through the reference
client, the way a person would, so every test starts from real enrolments.
"""

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from uuid import UUID

import pytest

from crypto.identity import IdentityKeyPair
from gchat.app import App
from gchat.client.sdk import Client
from gchat.client.state import DeviceState
from gchat.config import Config
from gchat.directory.service import Directory
from protocol.frames import CreateOfficial, IssueCode


def node_config(database_url: str, data_dir: Path, **overrides: object) -> Config:
    return Config(
        host="127.0.0.1",
        port=0,
        data_dir=data_dir,
        database_url=database_url,
        node_id="test-node",
        db_pool_size=5,
        **overrides,  # type: ignore[arg-type]
    )


@pytest.fixture
async def node(database_url: str, tmp_path: Path) -> AsyncIterator[App]:
    app = App(node_config(database_url, tmp_path))
    await app.start()
    try:
        yield app
    finally:
        await app.stop()


def url_of(app: App) -> str:
    return f"ws://127.0.0.1:{app.port}"


@dataclass
class World:
    """Officials and devices of one test, made through the real protocol."""

    app: App
    admin: Client | None = None
    clients: list[Client] = field(default_factory=list)

    @property
    def url(self) -> str:
        return url_of(self.app)

    async def start(self) -> None:
        assert self.app.db is not None
        directory = Directory(self.app.db, 3600, self.app.audit)
        _, _, code = await directory.bootstrap("MIN", "Ministry", "Admin")
        self.admin = await self.enroll(code, "admin-phone")

    async def enroll(self, code: str, name: str = "phone") -> Client:
        client = Client(DeviceState(url=self.url, identity_seed=IdentityKeyPair.generate().seed))
        await client.connect()
        await client.enroll(code, name)
        self.clients.append(client)
        return client

    async def new_code(self, official_id: UUID) -> str:
        assert self.admin is not None
        reply = await self.admin.request(IssueCode, official_id=official_id)
        return str(reply.code)

    async def new_official(self, name: str) -> UUID:
        assert self.admin is not None
        reply = await self.admin.request(CreateOfficial, name=name)
        return UUID(str(reply.official_id))

    async def official_with_device(self, name: str) -> Client:
        official = await self.new_official(name)
        return await self.enroll(await self.new_code(official), f"{name}-phone")

    async def reconnect(self, client: Client) -> Client:
        """The same device on a fresh connection (token auth)."""
        fresh = Client(client.state)
        await fresh.connect()
        await fresh.authenticate()
        self.clients.append(fresh)
        return fresh

    async def close(self) -> None:
        await asyncio.gather(*(c.close() for c in self.clients), return_exceptions=True)


@pytest.fixture
async def world(node: App) -> AsyncIterator[World]:
    w = World(node)
    await w.start()
    try:
        yield w
    finally:
        await w.close()
