"""Audit tests run against real PostgreSQL; the shared node and world fixtures are reused."""

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any
from uuid import UUID, uuid4

import pytest

from crypto.identity import IdentityKeyPair
from gchat.audit.log import AuditEvent, AuditLog
from gchat.audit.sequencer import Sequencer
from gchat.audit.service import AuditService
from gchat.identity.principal import Principal
from gchat.runtime.server_keys import ServerKeys
from gchat.store import migrations
from gchat.store.database import Database, Executor
from gchat.store.directory import Role
from tests.support import World, eventually, node_config, url_of

__all__ = ["World", "node_config", "url_of"]


async def sequence(db: Database, events: int, **options: Any) -> None:
    """Run a sequencer (``options``: its settings) until it has sequenced
    ``events``, then stop it; the test fails if it never does."""
    sequencer = Sequencer(db, IdentityKeyPair.generate(), **{
        "sign_interval": 3600, "poll_interval": 0.02, **options})
    try:
        sequencer.start()
        await eventually(
            lambda: sequencer.sequenced == events, what=f"the {events} events are sequenced"
        )
    finally:
        await sequencer.stop()


async def registered_auditor(db: Executor, scope: UUID | None = None) -> Principal:
    """An auditor that exists in the directory, with an active device.

    The audit service re-reads roles and device status on every request, so
    a service-level test needs the rows, not just a Principal.
    """
    agency, official, device = uuid4(), uuid4(), uuid4()
    await db.execute(
        "INSERT INTO agencies (id, code, name_en) VALUES ($1, $2, 'Audit office')",
        agency, f"AUD-{agency.hex[:8]}",
    )
    await db.execute(
        "INSERT INTO officials (id, agency_id, name_en) VALUES ($1, $2, 'Auditor')",
        official, agency,
    )
    await db.execute(
        """INSERT INTO official_roles (official_id, role, scope_agency_id)
           VALUES ($1, 'auditor', $2)""",
        official, scope,
    )
    await db.execute(
        """INSERT INTO devices (id, official_id, identity_key, certificate, name, platform)
           VALUES ($1, $2, $3, '\\x00', 'phone', 'test')""",
        device, official, device.bytes * 2,
    )
    return Principal(device, official, agency, (Role("auditor", scope),))


class LogBench:
    """A database with the audit schema, a sequencer and an auditor service."""

    def __init__(self, db: Database, keys: ServerKeys) -> None:
        self.db = db
        self.keys = keys
        self.log = AuditLog()
        self.sequencer = Sequencer(db, keys.audit, sign_interval=3600, poll_interval=0.02,
                                   retry_seconds=0.05)

    def service(self) -> AuditService:
        """A fresh service (a restarted node: no cached tree)."""
        return AuditService(self.db, self.log, self.keys.audit.public_key, 0,
                            fresh_head_timeout=2.0)

    async def add(self, n: int, kind: str = "test.event") -> None:
        async with self.db.transaction() as conn:
            await self.log.record(
                conn, *(AuditEvent(kind, actor_official=uuid4(), details={"n": i})
                        for i in range(n))
            )

    async def settle(self) -> int:
        """Wait until every committed event has a leaf; returns the tree size."""
        pool = self.db.pool

        async def caught_up() -> bool:
            waiting = await pool.fetchval("SELECT count(*) FROM audit_pending")
            assert waiting == 0, f"sequencer behind: {waiting} events wait"
            return True

        await eventually(caught_up, within=30.0, step=0.01, what="the sequencer catches up")
        return int(await pool.fetchval("SELECT audit_log_size()"))

    async def sign(self) -> int:
        """Have the sequencer sign a head now; returns its size."""
        head = await self.service().latest_head(fresh=True)
        assert head is not None
        return head.tree_size


@pytest.fixture
async def bench(database_url: str, tmp_path: Path) -> AsyncIterator[LogBench]:
    db = await Database.connect(database_url, min_size=1, max_size=5)
    async with db.pool.acquire() as conn:
        await migrations.migrate(conn)
    b = LogBench(db, ServerKeys.load_or_create(tmp_path / "keys"))
    b.sequencer.start()
    try:
        yield b
    finally:
        await b.sequencer.stop()
        await db.close()
