"""What suspending, retiring and revoking do: at once, on every node, history kept."""

import asyncio
from dataclasses import replace
from pathlib import Path

import pytest

from crypto.identity import IdentityKeyPair
from gchat.app import App
from gchat.client.rpc import ClientError
from gchat.client.sdk import Client
from gchat.client.state import DeviceState
from gchat.directory import policy
from gchat.directory.service import Directory
from gchat.errors import ServiceError
from protocol import frames as f
from tests.directory.conftest import Tree
from tests.support import node_config, url_of


async def closed_with(client: Client, code: int) -> None:
    await asyncio.wait_for(client.ws.wait_closed(), 5)
    assert client.ws.close_code == code


async def cannot_authenticate(client: Client) -> None:
    again = Client(client.state)
    await again.connect()
    with pytest.raises(ClientError) as refused:
        await again.authenticate()
    assert refused.value.code in ("token_invalid", "auth_failed")
    await again.close()


async def test_suspend_closes_refuses_then_reinstate(tree: Tree) -> None:
    target = await tree.official("Suspended Soon", "DIV-A1")
    phone, tablet = await tree.enrolled(target, "phone"), await tree.enrolled(target, "tablet")
    me = tree.clients["official"]
    assert me.state.official_id is not None
    await phone.send_message(me.state.official_id, b"hello", "s1")
    await tree.clients["admin_in"].request(f.SetOfficialStatus, official_id=target,
                                           status="suspended")
    await closed_with(phone, 4403)
    await closed_with(tablet, 4403)
    await cannot_authenticate(phone)
    db = tree.world.app.db
    assert db is not None
    with pytest.raises(ServiceError) as refused:  # a send from a connection that lingered
        await policy.check_send(db.pool, target, me.state.official_id)
    assert refused.value.code.value == "forbidden"
    with pytest.raises(ClientError) as gone:  # and nobody can write to them
        await me.send_message(target, b"are you there", "s2")
    assert gone.value.code == "not_found"
    await tree.clients["admin_in"].request(f.SetOfficialStatus, official_id=target,
                                           status="active")
    back = Client(phone.state)
    await back.connect()
    await back.authenticate()
    await back.close()


async def test_retire_revokes_everything_and_keeps_history(tree: Tree) -> None:
    target = await tree.official("Retiring", "DIV-A1", employee_id="R-1")
    phone = await tree.enrolled(target)
    admin = tree.clients["admin_in"]
    await admin.request(f.IssueCode, official_id=target)
    me = tree.clients["official"]
    assert me.state.official_id is not None
    await phone.send_message(me.state.official_id, b"last words", "r1")
    await admin.request(f.SetOfficialStatus, official_id=target, status="retired")
    await closed_with(phone, 4403)
    devices = await admin.request(f.ListDevices, official_id=target)
    assert [d.status for d in devices.devices] == ["revoked"]
    codes = await admin.request(f.ListCodes, official_id=target)
    assert [c.state for c in codes.codes] == ["used", "cancelled"]  # the phone's, the spare
    with pytest.raises(ClientError) as final:
        await admin.request(f.SetOfficialStatus, official_id=target, status="active")
    assert final.value.code == "forbidden"
    shown = await admin.request(f.GetOfficial, official_id=target)
    assert shown.official.status == "retired" and shown.official.employee_id == "R-1"
    db = tree.world.app.db
    assert db is not None
    kinds = {r["kind"] for r in await db.pool.fetch(
        "SELECT kind FROM audit_events WHERE $1 = ANY(officials)", target)}
    assert {"admin.official_created", "device.enrolled", "admin.official_retired"} <= kinds
    assert any(k.startswith("message.") for k in kinds), kinds


async def test_lost_phone_revoked_other_device_stays(tree: Tree) -> None:
    target = await tree.official("Lost Phone", "DIV-A1")
    phone, laptop = await tree.enrolled(target, "phone"), await tree.enrolled(target, "laptop")
    assert phone.state.device_id is not None
    await tree.clients["admin_in"].request(f.RevokeDevice, device_id=phone.state.device_id)
    await closed_with(phone, 4403)
    await cannot_authenticate(phone)
    me = tree.clients["official"]
    assert me.state.official_id is not None
    await laptop.send_message(me.state.official_id, b"still here", "l1")


async def test_suspension_closes_connections_on_every_node(
    database_url: str, tmp_path: Path, redis_url: str, redis_prefix: str
) -> None:
    """Two nodes sharing PostgreSQL and Redis: suspend on A, the device on B drops."""
    nodes = []
    for name in ("a", "b"):
        config = node_config(database_url, tmp_path / name, redis_url=redis_url,
                             redis_prefix=redis_prefix)
        app = App(replace(config, node_id=f"node-{name}"))
        await app.start()
        nodes.append(app)
    a, b = nodes
    clients: list[Client] = []
    try:
        assert a.db is not None
        _, _, code = await Directory(a.db, 3600, a.audit).bootstrap("MIN", "Ministry", "Admin")

        async def enrol(url: str, code: str) -> Client:
            client = Client(DeviceState(url=url, identity_seed=IdentityKeyPair.generate().seed))
            await client.connect()
            await client.enroll(code, "phone")
            clients.append(client)
            return client

        admin = await enrol(url_of(a), code)
        created = await admin.request(f.CreateOfficial, name="On Node B")
        issued = await admin.request(f.IssueCode, official_id=created.official_id)
        on_b = await enrol(url_of(b), issued.code)
        await admin.request(f.SetOfficialStatus, official_id=created.official_id,
                            status="suspended")
        await closed_with(on_b, 4403)
    finally:
        await asyncio.gather(*(c.close() for c in clients), return_exceptions=True)
        for app in nodes:
            await app.stop()
