"""A pairwise send checked outside its store's transaction: the store writes only on
the standings the check decided on, and the committer checks again when they changed."""

import os
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta

import pytest

from gchat.audit.log import AuditLog, accepted_events
from gchat.errors import ServiceError
from gchat.messaging import service as messaging
from gchat.messaging.committer import SendCommitter
from gchat.store import devices, directory, messages, policies
from gchat.store.database import Database
from gchat.store.messages import NewMessage, StandingsChanged, StoredMessage
from protocol.errors import ErrorCode

Ids = tuple[uuid.UUID, uuid.UUID, uuid.UUID, uuid.UUID, uuid.UUID]


async def _seed(db: Database) -> Ids:
    """An agency, a sender official with a device, a recipient official with a device."""
    agency = uuid.uuid4()
    await directory.create_agency(db.pool, agency, "A" + uuid.uuid4().hex[:6], "Agency")
    ids: list[uuid.UUID] = [agency]
    for name in ("sender", "recipient"):
        official, device = uuid.uuid4(), uuid.uuid4()
        await directory.create_official(db.pool, official, agency, name)
        await _enrol(db, official, device)
        ids += [official, device]
    return ids[0], ids[1], ids[2], ids[3], ids[4]


async def _enrol(db: Database, official: uuid.UUID, device: uuid.UUID) -> None:
    await devices.create(db.pool, device, official, os.urandom(32), b"c", "d", "p")


async def _revoke(db: Database, device: uuid.UUID) -> None:
    await db.pool.execute("UPDATE devices SET status = 'revoked' WHERE id = $1", device)


def _send(ids: Ids, to: list[uuid.UUID]) -> NewMessage:
    _, sender_official, sender, recipient_official, _ = ids
    return NewMessage(uuid.uuid4(), sender, sender_official, recipient_official,
                      uuid.uuid4().hex, datetime.now(UTC), [(d, b"ct") for d in to])


async def _rows(db: Database) -> list[int]:
    return [await db.pool.fetchval(f"SELECT count(*) FROM {table}")  # noqa: S608
            for table in ("messages", "inbox", "audit_pending")]


async def _suspend_recipient(db: Database, ids: Ids) -> None:
    await db.pool.execute("UPDATE officials SET status = 'suspended' WHERE id = $1", ids[3])


async def _revoke_sender_device(db: Database, ids: Ids) -> None:
    await _revoke(db, ids[2])


async def _enrol_recipient_device(db: Database, ids: Ids) -> None:
    await _enrol(db, ids[3], uuid.uuid4())


async def _restrict_policy(db: Database, ids: Ids) -> None:
    await policies.put(db.pool, policies.PolicyRow(ids[0], "agency", None, None), None)


async def _move_recipient(db: Database, ids: Ids) -> None:
    other = uuid.uuid4()
    await directory.create_agency(db.pool, other, "B" + uuid.uuid4().hex[:6], "Other")
    await db.pool.execute("UPDATE officials SET agency_id = $2 WHERE id = $1", ids[3], other)


async def _move_agency(db: Database, ids: Ids) -> None:
    """The agency goes under a new ministry: its officials' root changes, nothing of theirs."""
    ministry = uuid.uuid4()
    await directory.create_agency(db.pool, ministry, "M" + uuid.uuid4().hex[:6], "Ministry")
    await db.pool.execute("UPDATE agencies SET parent_id = $2 WHERE id = $1", ids[0], ministry)


async def _restrict_global_policy(db: Database, ids: Ids) -> None:
    await policies.put(db.pool, policies.PolicyRow(None, "agency", None, None), None)


@pytest.mark.parametrize(
    "change",
    [_suspend_recipient, _revoke_sender_device, _enrol_recipient_device, _restrict_policy,
     _move_recipient, _move_agency, _restrict_global_policy],
)
async def test_the_store_writes_nothing_when_the_standings_changed_since_the_check(
    database_url: str, change: Callable[[Database, Ids], Awaitable[None]]
) -> None:
    db = await Database.connect(database_url, min_size=1, max_size=2)
    try:
        ids = await _seed(db)
        send = _send(ids, [ids[4]])
        audit = AuditLog()
        expires = datetime.now(UTC) + timedelta(days=1)
        async with db.pinned.acquire() as conn:  # no transaction: each statement its own
            checked = await messaging.check_batch(conn, [send])
            assert checked.verdicts == [None]
            accepted = await audit.encode(conn, accepted_events([send]),
                                          agencies=checked.agencies)
            await change(db, ids)
            with pytest.raises(StandingsChanged):
                await messages.store_batch(conn, [send], expires, accepted, checked.standings)
            assert await _rows(db) == [0, 0, 0]
            assert not conn.is_in_transaction()

            # Unchanged since the check: stored, with its event.
            again = _send(ids, [ids[4]])
            checked = await messaging.check_batch(conn, [again])
            accepted = await audit.encode(conn, accepted_events([again]),
                                          agencies=checked.agencies)
            if checked.verdicts == [None]:
                stored = await messages.store_batch(conn, [again], expires, accepted,
                                                    checked.standings)
                assert [s.message_id for s in stored] == [again.message_id]
                assert await _rows(db) == [1, 1, 1]
    finally:
        await db.close()


async def test_a_one_to_one_send_names_the_recipients_device_and_not_the_senders(
    database_url: str,
) -> None:
    """With one device each (the check's short cut), a send must name exactly the
    recipient's device: not the sending device, not another, not both, not none,
    and to oneself none; a refusal says what is missing and what is stale, as
    with more devices."""
    db = await Database.connect(database_url, min_size=1, max_size=2)
    try:
        ids = await _seed(db)
        sender, recipient, stranger = ids[2], ids[4], uuid.uuid4()
        async with db.pinned.acquire() as conn:
            known = (await messaging.check_batch(conn, [_send(ids, [recipient])])).standings
            sends = [_send(ids, to) for to in
                     ([recipient], [sender], [recipient, sender], [stranger], [])]
            # To oneself, whose one device is the sending one: nothing to name.
            sends.append(_send((ids[0], ids[1], sender, ids[1], sender), [sender]))
            for standings in ({}, known):  # read now, and kept from before
                verdicts = (await messaging.check_batch(conn, sends, standings)).verdicts
                assert verdicts[0] is None
                refusals = [(v.code, v.missing, v.stale)
                            for v in verdicts[1:] if isinstance(v, ServiceError)]
                assert refusals == [
                    (ErrorCode.DEVICE_MISMATCH, [recipient], [sender]),
                    (ErrorCode.DEVICE_MISMATCH, [], [sender]),
                    (ErrorCode.DEVICE_MISMATCH, [recipient], [stranger]),
                    (ErrorCode.DEVICE_MISMATCH, [recipient], []),
                    (ErrorCode.DEVICE_MISMATCH, [], [sender]),
                ]
    finally:
        await db.close()


async def test_another_officials_device_changing_leaves_the_standings_as_read(
    database_url: str,
) -> None:
    """Enrolments and revocations are frequent: one must not make every kept
    standing stale, only its own official's."""
    db = await Database.connect(database_url, min_size=1, max_size=2)
    try:
        ids = await _seed(db)
        bystander = await _seed(db)
        send = _send(ids, [ids[4]])
        audit = AuditLog()
        async with db.pinned.acquire() as conn:
            checked = await messaging.check_batch(conn, [send])
            accepted = await audit.encode(conn, accepted_events([send]),
                                          agencies=checked.agencies)
            await _enrol(db, bystander[3], uuid.uuid4())
            await _revoke(db, bystander[4])
            stored = await messages.store_batch(conn, [send], datetime.now(UTC) + timedelta(days=1),
                                                accepted, checked.standings)
            assert [s.message_id for s in stored] == [send.message_id]
    finally:
        await db.close()


async def test_the_committer_checks_again_when_the_standings_it_kept_are_stale(
    database_url: str,
) -> None:
    db = await Database.connect(database_url, min_size=1, max_size=2)
    try:
        ids = await _seed(db)
        recipient_official, first_device = ids[3], ids[4]
        committer = SendCommitter(db, 64, timedelta(days=1), _nothing, audit=AuditLog(),
                                  prepare=messaging.check_batch)
        committer.start()
        try:
            assert isinstance(await committer.submit(_send(ids, [first_device])), StoredMessage)

            # The committer kept the recipient's one device; it was replaced since.
            await _revoke(db, first_device)
            second_device = uuid.uuid4()
            await _enrol(db, recipient_official, second_device)
            with pytest.raises(ServiceError) as refused:
                await committer.submit(_send(ids, [first_device]))
            assert refused.value.code == ErrorCode.DEVICE_MISMATCH
            assert await _rows(db) == [1, 1, 1]

            # Kept: the second device only. A third one is not refused on that.
            third_device = uuid.uuid4()
            await _enrol(db, recipient_official, third_device)
            stored = await committer.submit(_send(ids, [second_device, third_device]))
            assert isinstance(stored, StoredMessage) and not stored.duplicate
            assert await _rows(db) == [2, 3, 2]

            # The sending device revoked after the committer last saw it.
            await _revoke(db, ids[2])
            with pytest.raises(ServiceError) as refused:
                await committer.submit(_send(ids, [second_device, third_device]))
            assert refused.value.code == ErrorCode.FORBIDDEN
            assert await _rows(db) == [2, 3, 2]
        finally:
            await committer.stop()
    finally:
        await db.close()


async def _nothing(batch: list[NewMessage]) -> None:
    return None


async def test_a_rechecked_batch_stores_every_column_of_every_send_as_given(
    database_url: str,
) -> None:
    """The statement takes each type's columns as one array, sliced in SQL: with
    several senders, recipients, envelopes and a repeat in one batch, every row
    still gets its own values, and only the sends stored get their audit events."""
    db = await Database.connect(database_url, min_size=1, max_size=2)
    try:
        first, second = await _seed(db), await _seed(db)
        extra = uuid.uuid4()
        await _enrol(db, first[3], extra)
        one = _send(first, [first[4], extra])
        one.envelopes = [(first[4], b"to first"), (extra, b"to extra")]
        two = _send(second, [second[4]])
        two.envelopes = [(second[4], b"to second")]
        repeat = _send(first, [first[4], extra])
        repeat.client_message_id = one.client_message_id
        batch = [one, two, repeat]
        audit = AuditLog()
        async with db.pinned.acquire() as conn:
            checked = await messaging.check_batch(conn, batch)
            assert checked.verdicts == [None, None, None]
            accepted = await audit.encode(conn, accepted_events(batch), agencies=checked.agencies)
            stored = await messages.store_batch(conn, batch, datetime.now(UTC) + timedelta(days=1),
                                                accepted, checked.standings)
        assert [(s.message_id, s.duplicate) for s in stored] == [
            (one.message_id, False), (two.message_id, False), (one.message_id, True)]
        rows = await db.pool.fetch(
            """SELECT id, sender_device, sender_official, recipient_official, client_message_id,
                      sent_at, kind, conversation_id FROM messages""")
        assert {tuple(row) for row in rows} == {
            (m.message_id, m.sender_device, m.sender_official, m.recipient_official,
             m.client_message_id, m.sent_at, "pairwise", None) for m in (one, two)}
        inbox = await db.pool.fetch("SELECT device_id, message_id, ciphertext FROM inbox")
        assert {tuple(row) for row in inbox} == {
            (first[4], one.message_id, b"to first"), (extra, one.message_id, b"to extra"),
            (second[4], two.message_id, b"to second")}
        events = await db.pool.fetch("SELECT leaf_hash, entry FROM audit_pending ORDER BY id")
        assert [tuple(row) for row in events] == [
            (accepted.hashes[i], accepted.entries[i]) for i in (0, 1)]
    finally:
        await db.close()
