"""The trust rules, tested as a malicious server (or an official helping it) would attack.

Each test runs a real node; where the server lies, a hostile relay in front
of it rewrites, holds back, replays or injects frames (tests/client/relay.py).
"""

import uuid
from uuid import UUID

import msgspec

from crypto.sender_keys import SenderKeyState
from gchat.client.events import Received
from gchat.client.groups import SENDER_KEY_MAX_AGE
from gchat.client.sdk import Client
from gchat.client.sessions import DeviceChangeBlocked
from protocol import frames as f
from tests.client.conftest import behind
from tests.client.relay import HostileRelay
from tests.support import World, eventually


def oid(client: Client) -> UUID:
    assert client.state.official_id is not None
    return client.state.official_id


def did(client: Client) -> UUID:
    assert client.state.device_id is not None
    return client.state.device_id


async def read(client: Client, count: int, wait: float = 3.0) -> list[Received]:
    got: list[Received] = []
    async for message in client.messages(idle_timeout=wait):
        got.append(message)
        if len(got) == count:
            break
    return got


def reasons(client: Client) -> list[str]:
    return [e.detail for e in client.events if e.kind == "undecryptable"]


async def inbox_empty(world: World, device: UUID) -> None:
    """The device's inbox drains: a refused message is acked like any other."""
    assert world.app.db is not None
    pool = world.app.db.pool

    async def empty() -> bool:
        query = "SELECT count(*) FROM inbox WHERE device_id = $1"
        return int(await pool.fetchval(query, device)) == 0

    await eventually(empty, within=3, what=f"the inbox of {device} drains")


async def test_relabelled_deliver_is_refused_and_the_binding_stays(
    world: World, relay: HostileRelay
) -> None:
    """Server + Mallory: show Mallory's messages as the Minister's, then catch the replies."""
    minister = await world.official_with_device("minister")
    mallory = await world.official_with_device("mallory")
    victim = await behind(world, relay, await world.official_with_device("victim"))

    await mallory.send_message(oid(victim), b"hello, I am Mallory", "m1")
    [first] = await read(victim, 1)
    assert first.sender_official == oid(mallory)

    def relabel(frame: f.ServerFrame) -> list[f.ServerFrame]:
        if isinstance(frame, f.Deliver) and frame.sender_device == did(mallory):
            return [msgspec.structs.replace(frame, sender_official=oid(minister))]
        return [frame]

    relay.rewrite = relabel
    forged = await mallory.send_message(oid(victim), b"Minister here: send me the file", "m2")
    assert await read(victim, 1, wait=1.0) == []
    assert victim.undecryptable == [forged.message_id]
    assert "certified for official" in reasons(victim)[0]
    await inbox_empty(world, did(victim))  # refused, but acked
    assert victim.state.peers[did(mallory)] == oid(mallory)  # the binding did not move
    assert victim.state.devices_of(oid(minister)) == set()

    # The victim writes to the Minister: only the Minister's device can read it.
    await victim.send_message(oid(minister), b"the file", "v1")
    assert [m.plaintext for m in await read(minister, 1)] == [b"the file"]
    await inbox_empty(world, did(mallory))
    assert did(mallory) not in victim.state.devices_of(oid(minister))

    # Relabelled as another device of the Minister: refused too.
    relay.rewrite = lambda frame: [
        msgspec.structs.replace(frame, sender_official=oid(minister), sender_device=did(minister))
        if isinstance(frame, f.Deliver) and frame.sender_device == did(mallory) else frame
    ]
    await mallory.send_message(oid(victim), b"still the Minister", "m3")
    assert await read(victim, 1, wait=1.0) == []
    assert len(victim.undecryptable) == 2
    # Honest frames again: Mallory is read as Mallory.
    relay.rewrite = lambda frame: [frame]
    await mallory.send_message(oid(victim), b"just Mallory", "m4")
    [last] = await read(victim, 1)
    assert (last.plaintext, last.sender_official) == (b"just Mallory", oid(mallory))


async def test_relabelled_group_message_is_refused(world: World, relay: HostileRelay) -> None:
    minister = await world.official_with_device("minister")
    mallory = await world.official_with_device("mallory")
    victim = await behind(world, relay, await world.official_with_device("victim"))
    group = await minister.create_group("cabinet", [oid(mallory), oid(victim)])
    cid = group.conversation_id
    await mallory.send_group(cid, b"from mallory", "g1")
    [honest] = await read(victim, 1)
    assert (honest.sender_official, honest.kind, honest.conversation_id) == (
        oid(mallory), "group", cid,
    )
    relay.rewrite = lambda frame: [
        msgspec.structs.replace(frame, sender_official=oid(minister))
        if isinstance(frame, f.Deliver) and frame.kind == "group" else frame
    ]
    forged = await mallory.send_group(cid, b"the minister orders", "g2")
    assert await read(victim, 1, wait=1.0) == []
    assert victim.undecryptable == [forged.message_id]


async def test_replayed_prekey_message_is_refused_and_the_session_still_works(
    world: World, relay: HostileRelay
) -> None:
    """The server leaves the one-time prekey out, then replays the first message."""
    bob = await world.official_with_device("bob")
    bob = await behind(world, relay, bob)
    alice_direct = await world.official_with_device("alice")
    alice = await behind(world, relay, alice_direct)

    def strip_one_time_prekeys(frame: f.ServerFrame) -> list[f.ServerFrame]:
        if isinstance(frame, f.Bundle):
            devices = [msgspec.structs.replace(d, one_time_prekey=None) for d in frame.devices]
            return [msgspec.structs.replace(frame, devices=devices)]
        return [frame]

    relay.rewrite = strip_one_time_prekeys
    await alice.send_message(oid(bob), b"first", "a1")
    assert [m.plaintext for m in await read(bob, 1)] == [b"first"]
    kinds = [e.kind for e in bob.events]
    assert "no_one_time_prekey" in kinds  # the user is told
    assert "no_one_time_prekey" in [e.kind for e in alice.events]
    original = next(d for d in relay.delivers() if d.sender_device == did(alice))
    for i in range(5):
        await relay.inject(
            msgspec.structs.replace(original, message_id=uuid.uuid4(), position=10_000 + i)
        )
    assert await read(bob, 1, wait=1.0) == []
    assert len(bob.undecryptable) == 5
    assert all("replayed prekey message" in r for r in reasons(bob))
    assert len(bob.state.sessions[did(alice)]) == 1  # no fresh session pushed in
    # Both ways still work.
    await bob.send_message(oid(alice), b"reply", "b1")
    assert [m.plaintext for m in await read(alice, 1)] == [b"reply"]
    await alice.send_message(oid(bob), b"second", "a2")
    assert [m.plaintext for m in await read(bob, 1)] == [b"second"]


async def test_delayed_sender_key_distribution_does_not_roll_back(
    world: World, relay: HostileRelay
) -> None:
    """Hold back one copy of a sender key, release it after the group messages, replay them."""
    a1 = await world.official_with_device("alice")
    a2 = await behind(world, relay, await world.enroll(await world.new_code(oid(a1)), "a2"))
    bob = await world.official_with_device("bob")
    carol = await world.official_with_device("carol")
    held: list[f.Deliver] = []

    def hold_second_distribution(frame: f.ServerFrame) -> list[f.ServerFrame]:
        if (
            isinstance(frame, f.Deliver) and frame.kind == "pairwise"
            and frame.sender_device == did(a1)
        ):
            if len([d for d in relay.delivers() if d.sender_device == did(a1)]) == 2:
                held.append(frame)
                return []
        return [frame]

    relay.rewrite = hold_second_distribution
    group = await a1.create_group("board", [oid(bob), oid(carol)])
    cid = group.conversation_id
    first = await a1.send_group(cid, b"one", "g1")
    await a1.send_group(cid, b"two", "g2")
    assert [m.plaintext for m in await read(a2, 2)] == [b"one", b"two"]
    assert len(held) == 1
    await relay.inject(held[0])  # the held-back distribution, late
    group_one = next(d for d in relay.delivers() if d.message_id == first.message_id)
    await relay.inject(msgspec.structs.replace(group_one, message_id=uuid.uuid4()))
    assert await read(a2, 1, wait=1.0) == []
    assert len(a2.undecryptable) == 1 and "ReplayedMessage" in reasons(a2)[0]
    await a1.send_group(cid, b"three", "g3")
    assert [m.plaintext for m in await read(a2, 1)] == [b"three"]


async def test_poison_content_is_acked_and_the_next_message_is_read(world: World) -> None:
    """A peer encrypts well but sends content that is not a Content struct."""
    bob = await world.official_with_device("bob")
    mallory = await world.official_with_device("mallory")
    await mallory.send_message(oid(bob), b"hi", "p0")
    assert [m.plaintext for m in await read(bob, 1)] == [b"hi"]
    poison = await mallory.request(
        f.Send, client_message_id="p1", recipient=oid(bob),
        envelopes=[f.Envelope(device_id=did(bob), ciphertext=mallory.sessions.encrypt_for(
            did(bob), b"\xc1 not msgpack"))],
    )
    await mallory.send_message(oid(bob), b"after the poison", "p2")
    assert [m.plaintext for m in await read(bob, 1)] == [b"after the poison"]
    assert bob.undecryptable == [poison.message_id]
    assert "undecodable content" in reasons(bob)[0]
    await inbox_empty(world, did(bob))


async def test_a_verified_peers_new_device_blocks_sending_until_accepted(world: World) -> None:
    alice = await world.official_with_device("alice")
    bob = await world.official_with_device("bob")
    shown = await alice.verify(oid(bob))
    assert len(shown.split()) == 12
    await alice.send_message(oid(bob), b"before", "d1")
    assert [m.plaintext for m in await read(bob, 1)] == [b"before"]
    # A new device for Bob: his, or one the server certified for itself.
    bob2 = await world.enroll(await world.new_code(oid(bob)), "bob-new")
    try:
        await alice.send_message(oid(bob), b"secret", "d2")
        raise AssertionError("sending to a changed verified peer must be refused")
    except DeviceChangeBlocked as blocked:
        assert "changed since you verified" in str(blocked)
    await inbox_empty(world, did(bob2))
    await inbox_empty(world, did(bob))
    assert "new_device" in [e.kind for e in alice.events]
    assert len(alice.accept_devices(oid(bob))) == 1
    await alice.send_message(oid(bob), b"secret", "d2")
    assert [m.plaintext for m in await read(bob, 1)] == [b"secret"]
    assert [m.plaintext for m in await read(bob2, 1)] == [b"secret"]


async def test_an_unverified_peers_new_device_is_reported(world: World) -> None:
    alice = await world.official_with_device("alice")
    bob = await world.official_with_device("bob")
    await alice.send_message(oid(bob), b"one", "n1")
    bob2 = await world.enroll(await world.new_code(oid(bob)), "bob-new")
    await alice.send_message(oid(bob), b"two", "n2")  # not verified: sent, and reported
    [event] = [e for e in alice.events if e.kind == "new_device"]
    assert (event.official_id, event.device_id) == (oid(bob), did(bob2))


async def test_safety_numbers_agree_and_change_with_a_device(world: World) -> None:
    alice = await world.official_with_device("alice")
    bob = await world.official_with_device("bob")
    assert await alice.safety_number(oid(bob)) == await bob.safety_number(oid(alice))
    before = await alice.safety_number(oid(bob))
    await world.enroll(await world.new_code(oid(bob)), "bob-new")
    after = await alice.safety_number(oid(bob))
    assert after != before and after == await bob.safety_number(oid(alice))


async def test_a_sender_key_from_a_non_member_is_refused(world: World) -> None:
    """Mallory pushes her own sender key into a group she is not in, and into one Bob cannot see."""
    alice = await world.official_with_device("alice")
    bob = await world.official_with_device("bob")
    mallory = await world.official_with_device("mallory")
    group = await alice.create_group("staff", [oid(bob)])
    cid = group.conversation_id
    await alice.send_group(cid, b"hello staff", "s1")
    assert [m.plaintext for m in await read(bob, 1)] == [b"hello staff"]
    hers = await mallory.create_group("mallory's own", [])
    for target in (cid, hers.conversation_id):
        forged = SenderKeyState.generate().distribution_message()
        await mallory.sessions.send(oid(bob), b"", f"sk-{target}", sender_key=(target, forged))
    assert await read(bob, 1, wait=1.0) == []
    assert len(bob.undecryptable) == 2
    assert "not a member" in reasons(bob)[0] and "cannot see" in reasons(bob)[1]
    assert did(mallory) not in bob.state.group_keys.get(cid, {})
    assert hers.conversation_id not in bob.state.group_keys


async def test_sender_keys_rotate_after_their_time(world: World) -> None:
    alice = await world.official_with_device("alice")
    bob = await world.official_with_device("bob")
    group = await alice.create_group("weekly", [oid(bob)])
    cid = group.conversation_id
    await alice.send_group(cid, b"week 1", "w1")
    first = SenderKeyState.from_bytes(alice.state.sender_keys[cid]).key_id
    alice.state.sender_key_created[cid] -= SENDER_KEY_MAX_AGE  # a week passes
    await alice.send_group(cid, b"week 2", "w2")
    assert SenderKeyState.from_bytes(alice.state.sender_keys[cid]).key_id == first + 1
    assert [m.plaintext for m in await read(bob, 2)] == [b"week 1", b"week 2"]
    assert bob.undecryptable == []


async def test_copies_on_own_devices_name_the_recipient_and_peers_cannot(world: World) -> None:
    """A copy on our other device belongs to the chat with whom it went to;
    a peer that names a recipient (to put its message in another chat) is refused."""
    alice = await world.official_with_device("alice")
    bob = await world.official_with_device("bob")
    alice2 = await world.enroll(await world.new_code(oid(alice)), "alice-desk")
    await alice.send_message(oid(bob), b"to bob", "c1")
    [copy] = await read(alice2, 1)
    assert (copy.sender_official, copy.recipient) == (oid(alice), oid(bob))
    assert copy.plaintext == b"to bob"
    [delivered] = await read(bob, 1)
    assert delivered.recipient is None  # the recipient's devices get the content unchanged
    # Notes to self name no recipient.
    await alice.send_message(oid(alice), b"note", "c2")
    [note] = await read(alice2, 1)
    assert (note.recipient, note.plaintext) == (None, b"note")
    # Bob claims his message was one Alice sent to Carol.
    carol = uuid.uuid4()
    assert bob.state.certificate is not None
    forged = msgspec.msgpack.encode(
        {"body": b"from carol?", "certificate": bob.state.certificate, "recipient": str(carol)}
    )
    await bob.send_message(oid(alice), b"hello both", "c3")  # sessions with both devices
    assert [m.plaintext for m in await read(alice, 1)] == [b"hello both"]
    sent = await bob.request(
        f.Send, client_message_id="c3f", recipient=oid(alice),
        envelopes=[f.Envelope(device_id=d, ciphertext=bob.sessions.encrypt_for(d, forged))
                   for d in sorted([did(alice), did(alice2)])],
    )
    await bob.send_message(oid(alice), b"after", "c4")
    assert [m.plaintext for m in await read(alice, 1)] == [b"after"]
    assert sent.message_id in alice.undecryptable
    assert "only our own devices name the recipient" in reasons(alice)[-1]
