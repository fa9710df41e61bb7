"""What the audit backlog refuses so that the sequencer can always append it.

A pack stores an entry after a two-byte length: an entry of more than 65,535
bytes can never be appended, and a pass that meets one fails whole, for
ever. Migration 0024 refuses such a row at its INSERT (``audit_entries_fit``).
"""

import os
import uuid
from datetime import UTC, datetime

import asyncpg
import pytest

from gchat.audit.log import AuditEvent, AuditLog, entry_fields, involved
from gchat.store import audit_codec as codec
from gchat.store.database import Database
from protocol.limits import MAX_GROUP_MEMBERS
from tests.audit.conftest import sequence

LIMIT = 0xFFFF


async def test_an_entry_too_long_for_a_pack_cannot_stop_the_log(database_url: str) -> None:
    """Whoever holds the node's database role writes a backlog row with one entry
    a byte over the limit (last in its row, and through the view older nodes
    write through): the row is refused, and the events written after it are
    sequenced as usual. Had the row been taken, no pass could append them."""
    db = await Database.connect(database_url, min_size=1, max_size=3)
    try:
        at = datetime.now(UTC)
        small, huge = os.urandom(100), os.urandom(LIMIT + 1)
        attacks = (
            ("INSERT INTO audit_backlog (created_at, leaf_hashes, entries) VALUES ($1, $2, $3)",
             (at, os.urandom(64), [small, huge])),
            ("INSERT INTO audit_pending (created_at, leaf_hash, entry) VALUES ($1, $2, $3)",
             (at, os.urandom(32), huge)),
        )
        for sql, args in attacks:
            with pytest.raises(asyncpg.CheckViolationError) as refused:
                await db.pool.execute(sql, *args)
            assert refused.value.constraint_name == "audit_backlog_entries_fit"
        assert await db.pool.fetchval("SELECT count(*) FROM audit_backlog") == 0
        async with db.transaction() as conn:
            await AuditLog().record(conn, *(AuditEvent("test.after") for _ in range(3)))
        await sequence(db, 3)
    finally:
        await db.close()


async def test_an_entry_of_the_longest_length_is_packed_whole(database_url: str) -> None:
    """The limit is the pack's, not less: an entry of exactly 65,535 bytes is
    taken, appended, and its pack holds it byte for byte. (The sequencer reads
    no entry, only leaf hashes, so bytes that decode to nothing will do.)"""
    db = await Database.connect(database_url, min_size=1, max_size=3)
    try:
        at = datetime.now(UTC)
        longest = os.urandom(LIMIT)
        await db.pool.execute(
            "INSERT INTO audit_backlog (created_at, leaf_hashes, entries) VALUES ($1, $2, $3)",
            at, os.urandom(32), [longest],
        )
        row = await db.pool.fetchrow("SELECT id, created_at FROM audit_backlog")
        await sequence(db, 1)
        events = await db.pool.fetchval("SELECT events FROM audit_packs WHERE first_leaf = 0")
        assert bytes(events) == codec.pack_events([(row["id"], row["created_at"], longest)])
    finally:
        await db.close()


def test_the_largest_event_the_node_writes_fits_a_pack() -> None:
    """A group of the most members the protocol allows, created across as many
    agencies (each member's agency id is stored in the entry): its
    "conversation.group_created" event stays under the limit, or the backlog
    would refuse the group's creation. Raising MAX_GROUP_MEMBERS past what
    fits fails here first."""
    members = [uuid.uuid4() for _ in range(MAX_GROUP_MEMBERS)]
    event = AuditEvent(
        kind="conversation.group_created", actor_official=members[0],
        actor_device=uuid.uuid4(), agency_id=uuid.uuid4(),
        details={"conversation_id": str(uuid.uuid4()), "conversation_kind": "group",
                 "seq": 1, "action": "created", "subject_officials": [str(m) for m in members],
                 "member_count": len(members)})
    time = codec.time_text(datetime.now(UTC))
    officials, devices = involved(event)
    assert set(members) <= set(officials)
    scope = sorted({uuid.uuid4() for _ in officials} | {event.agency_id})  # one agency each
    stored = codec.encode_fields(entry_fields(event, time), event.kind, officials, scope,
                                 devices, time)
    assert 35_000 < len(stored) <= LIMIT
