"""The group fan-out in the store: one body, expanded at commit, cleaned on ack and expiry."""

import json
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import asyncpg
import pytest

from gchat.config import load
from gchat.store import conversations, directory, messages, migrations
from gchat.store.messages import NewMessage


async def seed(pool: asyncpg.Pool, officials: int) -> tuple[list[uuid.UUID], list[uuid.UUID]]:
    """``officials`` officials with one device each, all in one group; (officials, devices)."""
    agency = uuid.uuid4()
    await directory.create_agency(pool, agency, "A", "Agency")
    offs, devs = [], []
    for i in range(officials):
        official, device = uuid.uuid4(), uuid.uuid4()
        await directory.create_official(pool, official, agency, f"O{i}")
        await pool.execute(
            """INSERT INTO devices (id, official_id, identity_key, certificate, name, platform)
               VALUES ($1, $2, $3, '\\x00', 'd', 'p')""",
            device, official, bytes([i]) * 32,
        )
        offs.append(official)
        devs.append(device)
    return offs, devs


def group_message(cid: uuid.UUID, official: uuid.UUID, device: uuid.UUID, n: int) -> NewMessage:
    return NewMessage(
        uuid.uuid4(), device, official, None, f"g{n}", datetime.now(UTC), [],
        kind="group", conversation_id=cid, body=b"sender-key ciphertext %d" % n,
    )


async def test_batch_mixes_pairwise_and_group_with_contiguous_positions(
    database_url: str,
) -> None:
    pool = await asyncpg.create_pool(database_url, min_size=1, max_size=3)
    try:
        async with pool.acquire() as conn:
            await migrations.migrate(conn)
        offs, devs = await seed(pool, 4)
        cid = uuid.uuid4()
        await conversations.create(pool, cid, "group", (await directory.get_official(
            pool, offs[0])).agency_id, offs[0], "g", False)  # type: ignore[union-attr]
        await conversations.add_members(pool, cid, offs[:3], {offs[0]}, 1)  # not offs[3]
        batch = [
            group_message(cid, offs[0], devs[0], 1),
            NewMessage(uuid.uuid4(), devs[0], offs[0], offs[1], "p1", datetime.now(UTC),
                       [(devs[1], b"pairwise"), (devs[3], b"pairwise too")]),
            group_message(cid, offs[1], devs[1], 2),
            group_message(cid, offs[3], devs[3], 3),  # not a member: delivered to nobody
        ]
        async with pool.acquire() as conn, conn.transaction():
            results = await messages.store_batch(conn, batch, datetime.now(UTC) + timedelta(1))
        assert not any(r.duplicate for r in results)
        assert sorted(batch[0].fanned_out) == sorted(devs[1:3])  # not the sender's device
        assert sorted(batch[2].fanned_out) == sorted([devs[0], devs[2]])
        assert batch[3].fanned_out == []
        rows = await pool.fetch("SELECT device_id, position, message_id FROM inbox")
        by_device: dict[uuid.UUID, list[tuple[int, uuid.UUID]]] = {}
        for row in rows:
            by_device.setdefault(row["device_id"], []).append((row["position"], row["message_id"]))
        order = {m.message_id: i for i, m in enumerate(batch)}
        for device, entries in by_device.items():
            entries.sort()
            assert [p for p, _ in entries] == list(range(1, len(entries) + 1)), device
            assert [order[m] for _, m in entries] == sorted(order[m] for _, m in entries)
        assert [m for _, m in sorted(by_device[devs[1]])] == [
            batch[0].message_id, batch[1].message_id]
        assert await pool.fetchval("SELECT count(*) FROM message_bodies") == 3
        # What a device is pushed: the body for group rows, its own ciphertext otherwise.
        inbox = (await messages.fetch_inboxes(pool, [(devs[1], 0, 10)]))[0]
        assert [(e.kind, e.ciphertext, e.conversation_id) for e in inbox] == [
            ("group", b"sender-key ciphertext 1", cid), ("pairwise", b"pairwise", None)]
        # The body goes with the last delivery that needs it.
        first = batch[0].message_id
        await messages.delete_acked_many(pool, [(devs[1], uuid.uuid4(), [inbox[0].position])])
        assert await pool.fetchval(
            "SELECT count(*) FROM message_bodies WHERE message_id = $1", first) == 1
        position = (await messages.fetch_inboxes(pool, [(devs[2], 0, 10)]))[0][0].position
        await messages.delete_acked_many(pool, [(devs[2], uuid.uuid4(), [position])])
        assert await pool.fetchval(
            "SELECT count(*) FROM message_bodies WHERE message_id = $1", first) == 0
        # Expiry drops undelivered rows, then the bodies nobody needs any more.
        await pool.execute("UPDATE inbox SET expires_at = now() - interval '1 second'")
        await messages.expire(pool, datetime.now(UTC) - timedelta(days=1))
        assert await pool.fetchval("SELECT count(*) FROM message_bodies") == 0
    finally:
        await pool.close()


def test_config_group_settings(tmp_path: Path) -> None:
    assert load(environ={}).max_group_members == 1000
    assert load(environ={}).allow_cross_agency_groups is True
    for text, value in (("no", False), ("0", False), ("off", False), ("YES", True), ("1", True)):
        config = load(environ={"GCHAT_ALLOW_CROSS_AGENCY_GROUPS": text})
        assert config.allow_cross_agency_groups is value
    toml = tmp_path / "g.toml"
    toml.write_text("allow_cross_agency_groups = false\nmax_group_members = 50\n")
    config = load(environ={}, toml_path=toml)
    assert (config.allow_cross_agency_groups, config.max_group_members) == (False, 50)
    with pytest.raises(ValueError):
        load(environ={"GCHAT_ALLOW_CROSS_AGENCY_GROUPS": "maybe"})
    with pytest.raises(ValueError):
        load(environ={"GCHAT_MAX_GROUP_MEMBERS": "1001"})


async def test_accepted_events_are_written_for_the_sends_stored_and_not_for_retries(
    database_url: str,
) -> None:
    """Both store statements (pairwise alone, and with group posts) append the
    batch's "message.accepted" events of exactly the messages they insert."""
    from gchat.audit.log import AuditLog, accepted_events

    pool = await asyncpg.create_pool(database_url, min_size=1, max_size=3)
    log = AuditLog()
    try:
        async with pool.acquire() as conn:
            await migrations.migrate(conn)
        offs, devs = await seed(pool, 2)
        cid = uuid.uuid4()
        await conversations.create(pool, cid, "group", (await directory.get_official(
            pool, offs[0])).agency_id, offs[0], "g", False)  # type: ignore[union-attr]
        await conversations.add_members(pool, cid, offs, {offs[0]}, 1)

        def pairwise(name: str) -> NewMessage:
            return NewMessage(uuid.uuid4(), devs[0], offs[0], offs[1], name, datetime.now(UTC),
                              [(devs[1], b"ct")])

        async def store(batch: list[NewMessage]) -> None:
            async with pool.acquire() as conn, conn.transaction():
                accepted = await log.encode(conn, accepted_events(batch))
                await messages.store_batch(conn, batch, datetime.now(UTC) + timedelta(1),
                                           accepted)

        async def logged() -> list[str]:
            rows = await pool.fetch("SELECT entry FROM audit_events WHERE kind = "
                                    "'message.accepted' ORDER BY id")
            return [json.loads(bytes(r[0]))["details"]["message_id"] for r in rows]

        p1, p2 = pairwise("p1"), pairwise("p2")
        await store([p1, pairwise("p1"), p2])  # pairwise only; a retry within the batch
        assert await logged() == [str(p1.message_id), str(p2.message_id)]
        g1, p3 = group_message(cid, offs[0], devs[0], 1), pairwise("p3")
        await store([pairwise("p2"), g1, p3, group_message(cid, offs[0], devs[0], 1)])
        assert await logged() == [str(m.message_id) for m in (p1, p2, g1, p3)]
    finally:
        await pool.close()
