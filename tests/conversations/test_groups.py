"""Group conversations through a real node: sender keys, membership events, policy.

Every official and device is enrolled through the protocol (``World``); every
message is encrypted by the reference client and read back by it.
"""

import copy
import uuid
from uuid import UUID

import asyncpg
import msgspec
import pytest

from crypto.errors import CryptoError
from crypto.sender_keys import SenderKeyState
from gchat.client.rpc import ClientError
from gchat.client.sdk import Client
from gchat.store import directory as directory_store
from protocol import frames as f
from tests.fixtures import WorldFactory
from tests.support import World, eventually


async def read(client: Client, count: int, wait: float = 5.0) -> list[bytes]:
    """The next ``count`` messages' plaintexts (fewer if none comes for ``wait`` s)."""
    got: list[bytes] = []
    if count == 0:
        return got
    async for message in client.messages(idle_timeout=wait):
        got.append(message.plaintext)
        if len(got) == count:
            break
    return got


async def settle(*clients: Client, wait: float = 0.3) -> list[bytes]:
    """Process whatever is pending (events, sender keys); the messages among it."""
    got: list[bytes] = []
    for client in clients:
        async for message in client.messages(idle_timeout=wait):
            got.append(message.plaintext)
    return got


def oid(client: Client) -> UUID:
    assert client.state.official_id is not None
    return client.state.official_id


def did(client: Client) -> UUID:
    assert client.state.device_id is not None
    return client.state.device_id


async def official_with_devices(world: World, name: str, count: int = 2) -> list[Client]:
    first = await world.official_with_device(name)
    rest = [
        await world.enroll(await world.new_code(oid(first)), f"{name}-{i}")
        for i in range(1, count)
    ]
    return [first, *rest]


async def body_of(pool: asyncpg.Pool, message_id: UUID) -> bytes:
    body = await pool.fetchval("SELECT body FROM message_bodies WHERE message_id = $1", message_id)
    assert body is not None, "the group body is stored (once)"
    return bytes(body)


async def test_three_officials_two_devices_each_every_device_reads_every_message(
    world: World,
) -> None:
    assert world.app.db is not None
    pool = world.app.db.pool
    a1, a2 = await official_with_devices(world, "alice")
    b1, b2 = await official_with_devices(world, "bob")
    c1, c2 = await official_with_devices(world, "carol")
    group = await a1.create_group("ministry staff", [oid(b1), oid(c1)])
    cid = group.conversation_id
    assert group.seq == 1 and group.action == "created"
    assert {m.official_id for m in group.members or []} == {oid(a1), oid(b1), oid(c1)}
    everyone = [a1, a2, b1, b2, c1, c2]
    sent_ids = []
    for round_ in range(2):
        for sender in everyone:
            text = f"รอบ {round_} from {sender.state.device_id}".encode()
            accepted = await sender.send_group(cid, text, f"g{round_}-{did(sender).hex[:8]}")
            sent_ids.append(accepted.message_id)
            # Stored once, one inbox row (without a ciphertext) per other member device.
            assert await pool.fetchval(
                "SELECT count(*) FROM message_bodies WHERE message_id = $1", accepted.message_id
            ) == 1
            rows = await pool.fetch(
                "SELECT device_id, ciphertext FROM inbox WHERE message_id = $1",
                accepted.message_id,
            )
            assert {r["device_id"] for r in rows} == {did(c) for c in everyone} - {did(sender)}
            assert all(r["ciphertext"] is None for r in rows)
            for reader in everyone:
                if reader is not sender:
                    assert await read(reader, 1) == [text]
    for client in everyone:
        assert client.undecryptable == [], [e.detail for e in client.events]
    # The body goes with its last delivery (every device has acked by now).
    query = "SELECT count(*) FROM message_bodies WHERE message_id = ANY($1)"
    await eventually(lambda: _zero(pool, query, sent_ids), step=0.05)


async def _zero(pool: asyncpg.Pool, query: str, *args: object) -> bool:
    return bool(await pool.fetchval(query, *args) == 0)


async def test_removed_member_receives_nothing_more_and_could_not_decrypt_it(
    world: World,
) -> None:
    assert world.app.db is not None
    pool = world.app.db.pool
    a1, a2 = await official_with_devices(world, "alice")
    b1, b2 = await official_with_devices(world, "bob")
    c1, c2 = await official_with_devices(world, "carol")
    cid = (await a1.create_group("desk", [oid(b1), oid(c1)])).conversation_id
    everyone = [a1, a2, b1, b2, c1, c2]
    for sender, text in ((a1, b"before from alice"), (b1, b"before from bob")):
        await sender.send_group(cid, text, f"before-{did(sender).hex[:8]}")
        for reader in everyone:
            if reader is not sender:
                assert await read(reader, 1) == [text]
    # What a removed member who ignores the removal would still hold.
    kept = {c: copy.deepcopy(c.state.group_keys[cid]) for c in (c1, c2)}
    assert did(a1) in kept[c1] and did(b1) in kept[c1]

    removed = await a1.remove_members(cid, [oid(c1)])
    assert removed.action == "removed"
    assert [m.official_id for m in removed.subjects] == [oid(c1)]
    await settle(a2, b1, b2)  # the others see the removal (and so rotate)
    after = {}
    for sender, text in ((a1, b"after from alice"), (b1, b"after from bob")):
        accepted = await sender.send_group(cid, text, f"after-{did(sender).hex[:8]}")
        after[did(sender)] = (accepted.message_id, await body_of(pool, accepted.message_id))
        for reader in (a1, a2, b1, b2):
            if reader is not sender:
                assert await read(reader, 1) == [text]
    # Carol's devices got the removal event and nothing after it.
    for carol in (c1, c2):
        assert await settle(carol, wait=0.5) == []
        assert carol.groups.events[-1].action == "removed"
        assert cid not in carol.state.group_keys  # her client forgot the group's keys
    for message_id, _ in after.values():
        assert await pool.fetchval(
            "SELECT count(*) FROM inbox WHERE message_id = $1 AND device_id = ANY($2)",
            message_id, [did(c1), did(c2)],
        ) == 0
    # And with the sender keys she had, the stored ciphertext does not open.
    for sender_device, (_, body) in after.items():
        for carol in (c1, c2):
            with pytest.raises(CryptoError):
                SenderKeyState.from_bytes(kept[carol][sender_device]).decrypt(body)
    with pytest.raises(ClientError) as refused:
        await c1.send_group(cid, b"still here?", "c-after")
    assert refused.value.code == "not_a_member"


async def test_added_member_reads_only_what_follows(world: World) -> None:
    assert world.app.db is not None
    pool = world.app.db.pool
    (a1,) = await official_with_devices(world, "alice", 1)
    (b1,) = await official_with_devices(world, "bob", 1)
    d1, d2 = await official_with_devices(world, "dan")
    cid = (await a1.create_group("desk", [oid(b1)])).conversation_id
    early = await a1.send_group(cid, b"early", "early")
    early_body = await body_of(pool, early.message_id)
    assert await read(b1, 1) == [b"early"]

    added = await a1.add_members(cid, [oid(d1)])
    assert added.action == "added" and added.seq == 2
    await a1.send_group(cid, b"later", "later")
    assert await settle(b1) == [b"later"]
    await b1.send_group(cid, b"later from bob", "later-b")
    for dan in (d1, d2):
        assert await read(dan, 3, wait=1.0) == [b"later", b"later from bob"]
        with pytest.raises(CryptoError):  # the chain he got starts after "early"
            dan.groups.decrypt(cid, did(a1), early_body)


async def test_announcement_mode_refuses_posts_from_non_admins(world: World) -> None:
    (a1,) = await official_with_devices(world, "alice", 1)
    (b1,) = await official_with_devices(world, "bob", 1)
    cid = (await a1.create_group("notices", [oid(b1)], announcement_only=True)).conversation_id
    with pytest.raises(ClientError) as refused:
        await b1.send_group(cid, b"may I?", "b1")
    assert refused.value.code == "announcement_only"
    await a1.send_group(cid, b"notice 1", "a1")
    assert await read(b1, 1) == [b"notice 1"]
    with pytest.raises(ClientError) as forbidden:
        await b1.set_announcement_only(cid, False)
    assert forbidden.value.code == "forbidden"
    await a1.set_group_admin(cid, oid(b1), True)
    await settle(b1)
    await b1.send_group(cid, b"now I may", "b2")
    assert await read(a1, 1) == [b"now I may"]
    await a1.set_announcement_only(cid, False)
    await a1.set_group_admin(cid, oid(b1), False)
    await settle(b1)
    await b1.send_group(cid, b"open again", "b3")
    assert await read(a1, 1) == [b"open again"]


async def test_group_at_the_size_limit_refuses_one_more_member(world_with: WorldFactory) -> None:
    async with world_with(max_group_members=3) as world:
        a, b, c, d = [await world.official_with_device(n) for n in ("a", "b", "c", "d")]
        with pytest.raises(ClientError) as too_big:
            await a.create_group("four", [oid(b), oid(c), oid(d)])
        assert too_big.value.code == "group_full"
        cid = (await a.create_group("three", [oid(b), oid(c)])).conversation_id
        with pytest.raises(ClientError) as full:
            await a.add_members(cid, [oid(d)])
        assert full.value.code == "group_full"
        await a.remove_members(cid, [oid(c)])
        assert len((await a.add_members(cid, [oid(d)])).members or []) == 3


async def test_policy_refuses_a_cross_agency_member_where_not_allowed(
    world_with: WorldFactory,
) -> None:
    async with world_with(allow_cross_agency_groups=False) as world:
        assert world.app.db is not None and world.admin is not None
        pool = world.app.db.pool
        ministry = world.admin.state.agency_id
        department, other = uuid.uuid4(), uuid.uuid4()
        await directory_store.create_agency(pool, department, "MIN-DEPT", "Department", ministry)
        await directory_store.create_agency(pool, other, "OTHER", "Other ministry")

        async def official_in(agency: UUID, name: str) -> Client:
            reply = await world.admin.request(f.CreateOfficial, name=name, agency_id=agency)  # type: ignore[union-attr]
            return await world.enroll(await world.new_code(reply.official_id), name)

        alice = await world.official_with_device("alice")
        dept = await official_in(department, "dept-official")
        outsider = await official_in(other, "outsider")
        cid = (await alice.create_group("ministry", [oid(dept)])).conversation_id  # same tree
        for attempt in (
            alice.add_members(cid, [oid(outsider)]),
            alice.create_group("mixed", [oid(dept), oid(outsider)]),
            alice.open_direct(oid(outsider)),
        ):
            with pytest.raises(ClientError) as refused:
                await attempt
            assert refused.value.code == "policy_refused"
        members = (await alice.groups.refresh(cid)).members
        assert {m.official_id for m in members or []} == {oid(alice), oid(dept)}


async def test_cross_agency_groups_allowed_by_default(world: World) -> None:
    assert world.app.db is not None and world.admin is not None
    other = uuid.uuid4()
    await directory_store.create_agency(world.app.db.pool, other, "OTHER", "Other ministry")
    reply = await world.admin.request(f.CreateOfficial, name="outsider", agency_id=other)
    outsider = await world.enroll(await world.new_code(reply.official_id), "outsider")
    alice = await world.official_with_device("alice")
    event = await alice.create_group("joint", [oid(outsider)])
    assert {m.agency_id for m in event.members or []} == {other, alice.state.agency_id}


async def test_membership_events_are_signed_contiguous_delivered_and_audited(
    world: World,
) -> None:
    assert world.app.db is not None
    pool = world.app.db.pool
    (a1,) = await official_with_devices(world, "alice", 1)
    b1, b2 = await official_with_devices(world, "bob")
    (c1,) = await official_with_devices(world, "carol", 1)
    cid = (await a1.create_group("desk", [oid(b1)])).conversation_id
    await a1.add_members(cid, [oid(c1)])
    await a1.rename_group(cid, "the desk")
    await a1.set_group_admin(cid, oid(b1), True)
    await a1.set_announcement_only(cid, True)
    await a1.remove_members(cid, [oid(c1)])
    await a1.leave_group(cid)  # bob stays admin
    await settle(b1, b2, c1, a1, wait=0.5)
    for bob in (b1, b2):
        actions = [(e.seq, e.action) for e in bob.groups.events]
        assert actions == [
            (1, "created"), (2, "added"), (3, "renamed"), (4, "promoted"),
            (5, "announcement"), (6, "removed"), (7, "left"),
        ]
        assert bob.state.missed_events == {}
        view = bob.conversation(cid)
        assert view is not None and view.title == "the desk" and view.announcement_only
        assert [(m.official_id, m.admin) for m in view.members or []] == [(oid(b1), True)]
    # Carol saw the events while a member, then her own removal, then nothing.
    assert [e.seq for e in c1.groups.events] == [2, 3, 4, 5, 6]
    assert a1.conversation(cid).seq == 7  # type: ignore[union-attr]
    # Each event is one body, queued to every device that had to see it.
    assert await pool.fetchval("SELECT seq FROM conversations WHERE id = $1", cid) == 7
    # One audit event per change, in the change's transaction.
    kinds = [
        r["kind"]
        for r in await pool.fetch(
            "SELECT kind FROM audit_events WHERE kind LIKE 'conversation.%' ORDER BY id"
        )
    ]
    assert kinds == [
        "conversation.group_created", "conversation.members_added", "conversation.renamed",
        "conversation.admin_promoted", "conversation.announcement_set",
        "conversation.members_removed", "conversation.members_left",
    ]
    # A forged signature or event is refused by the client.
    latest = await pool.fetchval("SELECT last_event FROM conversations WHERE id = $1", cid)
    outer = msgspec.msgpack.decode(latest, type=f.SignedMembershipEvent)
    forged = msgspec.msgpack.encode(
        f.SignedMembershipEvent(event=outer.event, signature=bytes(64))
    )
    with pytest.raises(CryptoError):
        b1.groups.apply_event(forged)
    with pytest.raises(ClientError) as gone:
        await c1.groups.refresh(cid)
    assert gone.value.code == "not_a_member"


async def test_a_missed_event_is_detected_and_forces_a_rotation(world: World) -> None:
    (a1,) = await official_with_devices(world, "alice", 1)
    (b1,) = await official_with_devices(world, "bob", 1)
    (c1,) = await official_with_devices(world, "carol", 1)
    cid = (await a1.create_group("desk", [oid(b1), oid(c1)])).conversation_id
    await b1.send_group(cid, b"hello", "h1")
    await settle(a1, b1, c1)
    key_id = SenderKeyState.from_bytes(b1.state.sender_keys[cid]).key_id
    await a1.rename_group(cid, "renamed")  # seq 2: bob will not see this one
    await a1.rename_group(cid, "renamed again")  # seq 3
    frames = []
    while True:
        try:
            frames.append(await b1.receive(1.0))
        except TimeoutError:
            break
    delivers = [fr for fr in frames if isinstance(fr, f.Deliver)]
    assert [fr.kind for fr in delivers] == ["membership", "membership"]
    await b1.open(delivers[1])  # seq 3 without seq 2
    assert b1.state.missed_events == {cid: [2]}
    assert cid in b1.state.rotate_keys
    await b1.send_group(cid, b"after the gap", "h2")
    assert SenderKeyState.from_bytes(b1.state.sender_keys[cid]).key_id == key_id + 1
    assert await read(c1, 1) == [b"after the gap"]


async def test_agency_admin_offboards_a_member_of_a_group_they_are_not_in(world: World) -> None:
    assert world.admin is not None
    (a1,) = await official_with_devices(world, "alice", 1)
    (b1,) = await official_with_devices(world, "bob", 1)
    (c1,) = await official_with_devices(world, "carol", 1)
    (d1,) = await official_with_devices(world, "dan", 1)
    cid = (await a1.create_group("desk", [oid(b1), oid(c1)])).conversation_id
    with pytest.raises(ClientError) as not_admin:
        await c1.add_members(cid, [oid(d1)])
    assert not_admin.value.code == "forbidden"
    with pytest.raises(ClientError) as outsider:
        await d1.send_group(cid, b"hi", "d1")
    assert outsider.value.code == "not_a_member"
    event = await world.admin.remove_members(cid, [oid(b1)])
    assert event.action == "removed" and event.actor_official == oid(world.admin)
    await settle(b1)
    assert b1.groups.events[-1].action == "removed"


async def test_group_send_is_idempotent_and_refuses_a_stale_membership(world: World) -> None:
    assert world.app.db is not None
    pool = world.app.db.pool
    (a1,) = await official_with_devices(world, "alice", 1)
    (b1,) = await official_with_devices(world, "bob", 1)
    (c1,) = await official_with_devices(world, "carol", 1)
    cid = (await a1.create_group("desk", [oid(b1)])).conversation_id
    await settle(b1)  # bob's view: seq 1
    first = await a1.request(
        f.SendGroup, client_message_id="same", conversation_id=cid, seq=1, ciphertext=b"x" * 80
    )
    again = await a1.request(
        f.SendGroup, client_message_id="same", conversation_id=cid, seq=1, ciphertext=b"x" * 80
    )
    assert again.message_id == first.message_id
    assert await pool.fetchval(
        "SELECT count(*) FROM message_bodies WHERE message_id = $1", first.message_id
    ) == 1
    await a1.add_members(cid, [oid(c1)])
    with pytest.raises(ClientError) as stale:
        await a1.request(
            f.SendGroup, client_message_id="new", conversation_id=cid, seq=1, ciphertext=b"y"
        )
    assert stale.value.code == "stale_membership"
    # The SDK handles it (bob has not read the addition): refresh, give carol the key, retry.
    await b1.send_group(cid, b"with carol", "b-1")
    assert b1.conversation(cid).seq == 2  # type: ignore[union-attr]
    assert await read(c1, 1) == [b"with carol"]


async def test_direct_conversation_is_one_per_pair(world: World) -> None:
    (a1,) = await official_with_devices(world, "alice", 1)
    (b1,) = await official_with_devices(world, "bob", 1)
    first = await a1.open_direct(oid(b1))
    second = await b1.open_direct(oid(a1))
    assert first.conversation_id == second.conversation_id
    assert first.kind == "direct" and first.seq == 1
    with pytest.raises(ClientError) as not_group:
        await a1.add_members(first.conversation_id, [oid(a1)])
    assert not_group.value.code == "invalid_field"
    await a1.send_group(first.conversation_id, b"direct, sender-keyed", "d1")
    assert await read(b1, 1) == [b"direct, sender-keyed"]
