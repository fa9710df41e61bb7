"""A directory tree with one device per role, made over the real protocol.

    MIN (ministry)
    +-- DEPT-A          admin_in: agency_admin over DEPT-A; auditor: auditor over DEPT-A
    |   +-- DIV-A1      official: a plain official
    +-- DEPT-B          admin_out: agency_admin over DEPT-B

``superadmin`` is the world's bootstrap admin (in MIN).
"""

from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from uuid import UUID, uuid4

import pytest

from gchat.app import App
from gchat.client.rpc import ClientError
from gchat.client.sdk import Client
from gchat.directory.administration import Administration
from gchat.directory.handlers import DirectoryHandlers
from gchat.directory.importer import DirectoryImport
from gchat.directory.service import Directory
from gchat.errors import ServiceError
from gchat.handling import handlers_of
from gchat.identity.principal import Principal
from gchat.store import directory as store
from gchat.store.directory import NewOfficial
from protocol import frames as f
from tests.support import World, node_config

SNAPSHOT_TABLES = (
    "agencies",
    "officials",
    "official_roles",
    "official_terms",
    "agency_terms",
    "devices",
    "enrolment_codes",
    "directory_policies",
)


@pytest.fixture
async def node(database_url: str, tmp_path: Path) -> AsyncIterator[App]:
    """The shared ``node`` fixture's node, with room for the enrolments made here.

    These tests enrol more devices from 127.0.0.1 than the per-address
    enrolment limit (10 an hour) allows; a deployment raises it the same way.
    """
    app = App(node_config(database_url, tmp_path, rate_limits="enrolment_attempts=1000/1"))
    await app.start()
    try:
        yield app
    finally:
        await app.stop()


class Refused(Exception):
    def __init__(self, code: str, message: str = "") -> None:
        super().__init__(f"{code}: {message}")
        self.code = code


@dataclass
class Tree:
    world: World
    agencies: dict[str, UUID] = field(default_factory=dict)
    clients: dict[str, Client] = field(default_factory=dict)
    officials: dict[str, UUID] = field(default_factory=dict)

    @property
    def superadmin(self) -> Client:
        assert self.world.admin is not None
        return self.world.admin

    async def sa(self, make: Any, **fields: Any) -> Any:
        """A request as the superadmin (setup)."""
        return await self.superadmin.request(make, **fields)

    async def agency(self, code: str, parent: str | None, name_th: str | None = None) -> UUID:
        reply = await self.sa(
            f.CreateAgency,
            code=code,
            name_en=f"Agency {code}",
            name_th=name_th,
            parent_id=self.agencies[parent] if parent else None,
        )
        self.agencies[code] = reply.agency.id
        return UUID(str(reply.agency.id))

    async def official(self, name: str, agency: str, **fields: Any) -> UUID:
        reply = await self.sa(
            f.CreateOfficial, name=name, agency_id=self.agencies[agency], **fields
        )
        return UUID(str(reply.official_id))

    async def enrolled(self, official_id: UUID, device: str = "phone") -> Client:
        return await self.world.enroll(await self.world.new_code(official_id), device)

    async def actor(self, key: str, agency: str, role: str | None = None,
                    scope: str | None = None) -> Client:
        official_id = await self.official(f"Actor {key}", agency)
        if role is not None:
            await self.sa(f.GrantRole, official_id=official_id, role=role,
                          scope_agency_id=self.agencies[scope] if scope else None)
        client = await self.enrolled(official_id)
        self.clients[key] = client
        self.officials[key] = official_id
        return client

    async def snapshot(self) -> dict[str, Any]:
        """Every directory table's content, and how many admin events are logged."""
        db = self.world.app.db
        assert db is not None
        result: dict[str, Any] = {}
        async with db.pool.acquire() as conn:
            for name in SNAPSHOT_TABLES:
                result[name] = await conn.fetchval(
                    f"SELECT md5(coalesce(string_agg(t::text, '|' ORDER BY t::text), '')) "  # noqa: S608
                    f"FROM {name} t"
                )
            result["admin_events"] = await conn.fetchval(
                "SELECT count(*) FROM audit_events WHERE kind LIKE 'admin.%'"
            )
        return result

    async def bulk(self, officials: list[tuple[str, str, str | None, str | None]]) -> None:
        """(agency code, Thai name, English name, position) each, straight into the
        store in one statement per table (scale tests: thousands in a second)."""
        db = self.world.app.db
        assert db is not None
        async with db.transaction() as conn:
            await store.create_officials(conn, [
                NewOfficial(uuid4(), self.agencies[code], th, en, position)
                for code, th, en, position in officials
            ])

    def handlers(self) -> Any:
        """The directory request handlers over the node's database (for stale principals)."""
        app = self.world.app
        assert app.db is not None and app.revocations is not None
        config = app.config
        admin = Administration(app.db, app.audit, app.revocations, 3600,
                               config.max_devices_per_official, config.retention_seconds)
        return handlers_of(DirectoryHandlers(admin, DirectoryImport(app.db, app.audit, admin),
                                             Directory(app.db, 3600, app.audit)))


async def call_as(caller: Client | tuple[Any, Principal], make: Any, **fields: Any) -> Any:
    """A request over the protocol, or straight into the handlers as a principal."""
    if isinstance(caller, Client):
        try:
            return await caller.request(make, **fields)
        except ClientError as error:
            raise Refused(error.code, error.frame.message) from None
    handlers, principal = caller
    try:
        return await handlers[make](principal, make(rid=1, **fields))
    except ServiceError as error:
        raise Refused(error.code.value, error.message) from None


async def principal_of(tree: Tree, client: Client) -> Principal:
    db = tree.world.app.db
    assert db is not None and client.state.device_id and client.state.official_id
    official = await store.get_official(db.pool, client.state.official_id)
    assert official is not None
    roles = await store.roles_of(db.pool, client.state.official_id)
    return Principal(client.state.device_id, client.state.official_id, official.agency_id,
                     tuple(roles))


@pytest.fixture
async def tree(world: World) -> AsyncIterator[Tree]:
    t = Tree(world)
    assert world.admin is not None and world.admin.state.official_id is not None
    min_id = world.admin.state.agency_id
    assert min_id is not None
    t.agencies["MIN"] = min_id
    t.clients["superadmin"] = world.admin
    t.officials["superadmin"] = world.admin.state.official_id
    await t.agency("DEPT-A", "MIN")
    await t.agency("DIV-A1", "DEPT-A")
    await t.agency("DEPT-B", "MIN")
    await t.actor("official", "DIV-A1")
    await t.actor("admin_in", "DEPT-A", "agency_admin", "DEPT-A")
    await t.actor("admin_out", "DEPT-B", "agency_admin", "DEPT-B")
    await t.actor("auditor", "DEPT-A", "auditor", "DEPT-A")
    yield t
