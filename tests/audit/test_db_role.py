"""The application needs only SELECT and INSERT on the log tables (and the
sequencer's append function): run the recorder and the sequencer as a role
without UPDATE, DELETE or TRUNCATE."""

import asyncio
import secrets
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit
from uuid import uuid4

import asyncpg
import pytest

from gchat.audit.log import AuditEvent, AuditLog
from gchat.audit.sequencer import Sequencer
from gchat.audit.service import AuditService, EventFilter
from gchat.runtime.server_keys import ServerKeys
from gchat.store import migrations
from gchat.store.database import Database
from tests.audit.conftest import registered_auditor

GRANTS = """
GRANT SELECT ON audit_backlog TO {role};
GRANT INSERT (created_at, leaf_hashes, entries) ON audit_backlog TO {role};
GRANT SELECT, INSERT ON audit_packs, audit_tree_heads, audit_subtrees TO {role};
GRANT SELECT ON audit_archived_leaves TO {role};
GRANT EXECUTE ON FUNCTION audit_append_backlog(bigint, bigint[], tid[], bytea, timestamptz,
                                               smallint[], bigint[], bytea[]) TO {role};
GRANT EXECUTE ON FUNCTION audit_append_batches(bigint, bigint[], tid[], bytea, timestamptz,
                                               smallint[], bigint[], bytea[]) TO {role};
GRANT USAGE ON SEQUENCE audit_events_id_seq TO {role};
GRANT SELECT ON officials, agencies, devices, official_roles TO {role};
"""


async def _an_event_leaves_the_backlog_only_into_the_log(
    db: Database, sequencer: Sequencer, log: AuditLog
) -> None:
    """The append functions are the role's only way to remove a pending event
    (0023's, and 0021's for nodes of the previous version), and they pack the
    backlog's rows themselves: an attacker with the node's role who names
    pending rows with other or forged leaf hashes, or in another order than
    (xid, id), or rows that are not those, is refused, and the events stay
    pending."""
    await sequencer.stop()
    async with db.transaction() as conn:
        await log.record(conn, AuditEvent("test.evidence", details={"n": 1}),
                         AuditEvent("test.evidence", details={"n": 2}))
    async with db.transaction() as conn:
        await log.record(conn, AuditEvent("test.evidence", details={"n": 3}))
    size = await db.pool.fetchval("SELECT audit_log_size()")
    rows = await db.pool.fetch(
        "SELECT id, ctid, leaf_hashes FROM audit_backlog ORDER BY xid, id")
    ids, hashes = [r["id"] for r in rows], [bytes(r["leaf_hashes"]) for r in rows]
    slots = [r["ctid"] for r in rows]
    assert [len(h) for h in hashes] == [64, 32]
    for given, at, leaves in (
        (ids, slots, b"".join(hashes[::-1])),  # other hashes
        (ids, slots, b"".join(hashes)[:-1] + b"\x00"),  # a forged hash
        (ids[::-1], slots, b"".join(hashes[::-1])),  # another order
        (ids[:1], slots[:1], b"".join(hashes)),  # hashes of more events than named
        (ids[:1], slots[:1], hashes[0][:32]),  # fewer events than the row holds
        (ids, slots[:1] * 2, b"".join(hashes)),  # rows that are not those events
    ):
        for function in ("audit_append_backlog", "audit_append_batches"):
            with pytest.raises(asyncpg.IntegrityConstraintViolationError):
                await db.pool.execute(
                    f"SELECT {function}($1, $2, $3, $4, NULL, '{{}}', '{{}}', '{{}}')",  # noqa: S608
                    size, given, at, leaves,
                )
    assert await db.pool.fetchval(
        "SELECT sum(cardinality(entries)) FROM audit_backlog") == 3
    assert await db.pool.fetchval("SELECT audit_log_size()") == size


async def test_recorder_and_sequencer_need_only_select_and_insert(
    database_url: str, tmp_path: Path
) -> None:
    role = f"gchat_t_app_{secrets.token_hex(4)}"
    admin = await asyncpg.connect(database_url)
    try:
        await migrations.migrate(admin)
        await admin.execute(f"CREATE ROLE {role} LOGIN")
        await admin.execute(GRANTS.format(role=role))
        who = await registered_auditor(admin)
        parts = urlsplit(database_url)
        dsn = urlunsplit(parts._replace(netloc=f"{role}@{parts.hostname}:{parts.port or 5432}"))
        try:
            db = await Database.connect(dsn, min_size=1, max_size=3)
        except (asyncpg.PostgresError, OSError) as error:
            pytest.skip(f"cannot log in as a fresh role here: {error}")
        keys = ServerKeys.load_or_create(tmp_path / "keys")
        sequencer = Sequencer(db, keys.audit, sign_interval=3600, poll_interval=0.02)
        sequencer.start()
        try:
            log = AuditLog()
            async with db.transaction() as conn:
                await log.record(conn, *(AuditEvent("test.event") for _ in range(5)))
            service = AuditService(db, log, keys.audit.public_key, 0, fresh_head_timeout=3)
            head = await service.tree_head(who)
            assert head.tree_size >= 5
            # Nor may it choose a pending event's id (the backlog has no primary
            # key: ids are unique because only the sequence gives them, 256 a
            # row, the most a row holds) or its transaction.
            for sql in ("UPDATE audit_packs SET min_id = 0", "DELETE FROM audit_packs",
                        "DELETE FROM audit_backlog", "TRUNCATE audit_tree_heads",
                        "UPDATE audit_backlog SET id = id",
                        "INSERT INTO audit_backlog (id, created_at, leaf_hashes, entries)"
                        " VALUES (1, now(), sha256(''), '{}')",
                        "INSERT INTO audit_backlog (xid, created_at, leaf_hashes, entries)"
                        " VALUES ('1', now(), sha256(''), '{}')"):
                with pytest.raises(asyncpg.InsufficientPrivilegeError):
                    await db.pool.execute(sql)
            await _an_event_leaves_the_backlog_only_into_the_log(db, sequencer, log)
            # An auditor's query reads the backlog too (the table, not its view).
            someone = uuid4()
            async with db.transaction() as conn:
                await log.record(conn, AuditEvent("test.waiting", actor_official=someone))
            found = await service.query(
                who, EventFilter(official=someone, kinds=("test.waiting",)), 0, 10)
            assert [(e.kind, e.leaf_index) for e in found] == [("test.waiting", None)]
        finally:
            await sequencer.stop()
            await db.close()
    finally:
        await admin.execute(f"REVOKE ALL ON ALL TABLES IN SCHEMA public FROM {role}")
        await admin.execute(f"REVOKE ALL ON ALL SEQUENCES IN SCHEMA public FROM {role}")
        await admin.execute(f"REVOKE ALL ON ALL FUNCTIONS IN SCHEMA public FROM {role}")
        await admin.close()
        await asyncio.sleep(0)
        drop = await asyncpg.connect(database_url)
        try:
            await drop.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = $1", role
            )
            await drop.execute(f"DROP ROLE IF EXISTS {role}")
        finally:
            await drop.close()
