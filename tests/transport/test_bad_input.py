"""Bad input gets its documented code; other connections carry on meanwhile."""

import asyncio
import json

import msgspec
from websockets.asyncio.client import connect

from crypto.identity import IdentityKeyPair
from gchat.client.rpc import ClientError
from gchat.client.sdk import Client
from gchat.client.state import DeviceState
from protocol import frames as f
from protocol.limits import MAX_FRAME_BYTES
from tests.support import World, drain, eventually, unread


async def test_each_bad_frame_gets_its_code_while_others_keep_working(world: World) -> None:
    alice = await world.official_with_device("alice")
    bob = await world.official_with_device("bob")
    assert bob.state.official_id is not None
    traffic_ok = asyncio.Event()

    async def steady_traffic() -> None:
        assert bob.state.official_id is not None
        for i in range(20):
            await alice.send_message(bob.state.official_id, f"t{i}".encode(), f"t{i}")
            await asyncio.sleep(0.01)
        delivered = await drain(bob, 20)
        opened = [(await bob.open(d)).plaintext for d in delivered]  # type: ignore[union-attr]
        assert opened == [f"t{i}".encode() for i in range(20)]
        traffic_ok.set()

    traffic = asyncio.create_task(steady_traffic())
    async with connect(world.url, subprotocols=["gchat.v1+json"], compression=None) as raw:  # type: ignore[list-item]
        challenge = json.loads(await raw.recv())
        assert challenge["type"] == "challenge"
        cases = [
            ("{not json", "malformed_frame"),
            ('{"type": "teleport", "rid": 1}', "unknown_frame_type"),
            ('{"rid": 1}', "unknown_frame_type"),
            ('{"type": "get_bundle", "rid": 1, "official_id": 42}', "invalid_field"),
            ('{"type": "ack", "positions": "all"}', "invalid_field"),
            ('{"type": "ack", "positions": [1], "extra": true}', "invalid_field"),
            ('{"type": "ack", "positions": [1]}', "not_authenticated"),
        ]
        for text, code in cases:
            await raw.send(text)
            reply = json.loads(await raw.recv())
            assert reply["type"] == "error" and reply["code"] == code, (text, reply)
        await raw.send("x" * (MAX_FRAME_BYTES + 1))
        await asyncio.wait_for(raw.wait_closed(), 5)
        assert raw.close_code == 1009
    await asyncio.wait_for(traffic, 30)
    assert traffic_ok.is_set()


async def test_authenticated_bad_frames_keep_the_session(world: World) -> None:
    alice = await world.official_with_device("alice")
    bob = await world.official_with_device("bob")
    assert bob.state.official_id is not None
    await alice.ws.send(msgspec.msgpack.encode({"type": "send", "rid": 9, "bogus": 1}))
    await alice.ws.send(b"\xc1\xc1\xc1")  # never valid MessagePack
    await alice.ws.send("text on a binary connection")
    errors = await eventually(lambda: len(unread(alice, f.Error)) >= 3 and unread(alice, f.Error))
    assert [e.code for e in errors] == ["invalid_field", "malformed_frame", "malformed_frame"]
    accepted = await alice.send_message(bob.state.official_id, b"still fine", "after-errors")
    [delivered] = await drain(bob, 1)
    assert delivered.message_id == accepted.message_id


async def test_missing_subprotocol_is_refused_at_handshake(world: World) -> None:
    from websockets.exceptions import InvalidStatus

    try:
        async with connect(world.url, compression=None):
            raise AssertionError("handshake without subprotocol accepted")
    except InvalidStatus as error:
        assert error.response.status_code == 400


async def test_server_honours_the_clients_subprotocol_order(world: World) -> None:
    for offered in (["gchat.v1+json", "gchat.v1+msgpack"], ["gchat.v1+msgpack", "gchat.v1+json"]):
        async with connect(world.url, subprotocols=offered, compression=None) as ws:  # type: ignore[arg-type]
            assert ws.subprotocol == offered[0]


async def test_nul_and_bidi_in_text_fields_are_invalid_field_never_internal_error(
    world: World,
) -> None:
    """The fields a hostile client used to crash into asyncpg with U+0000."""
    alice = await world.official_with_device("alice")
    group = await alice.request(f.CreateGroup, title="Budget", members=[])
    for bad in ("\x00", "\u202e", "\u200b", "\ufeff", "\x85", "\x9b"):
        attempts = [
            (f.CreateGroup, {"title": f"x{bad}y", "members": []}, "title"),
            (f.RenameGroup, {"conversation_id": group.conversation_id, "title": f"x{bad}"},
             "title"),
            (f.CreateOfficial, {"name": f"Eve{bad}"}, "name"),
        ]
        if bad in ("\x00", "\x85", "\x9b"):  # a query may hold invisible characters
            attempts.append((f.SearchOfficials, {"query": f"al{bad}"}, "query"))
        requester = {f.CreateOfficial: world.admin}
        for make, fields, name in attempts:
            client = requester.get(make, alice)
            assert client is not None
            try:
                await client.request(make, **fields)
            except ClientError as error:
                assert error.code == "invalid_field", (make, bad, error)
                assert f"`$.{name}`" in error.frame.message
            else:
                raise AssertionError(f"{make.__name__} accepted {bad!r}")
    assert world.admin is not None and alice.state.official_id is not None
    code = await world.new_code(await world.new_official("carol"))
    for field_name in ("device_name", "platform"):
        fresh = Client(DeviceState(url=world.url, identity_seed=IdentityKeyPair.generate().seed))
        await fresh.connect()
        world.clients.append(fresh)
        kwargs = {"device_name": "phone", "platform": "cli"}
        kwargs[field_name] = "p\x00"
        try:
            await fresh.enroll(code, **kwargs)
        except ClientError as error:
            assert error.code == "invalid_field" and f"`$.{field_name}`" in error.frame.message
        else:
            raise AssertionError(f"enrolled with NUL in {field_name}")
    # The code was not burnt by the refused attempts: it still enrols.
    carol = await world.enroll(code, "carol-phone")
    assert carol.state.device_id is not None
