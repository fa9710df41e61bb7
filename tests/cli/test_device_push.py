"""``gchat admin device list`` shows a device's push service, never its endpoint."""

import asyncio
import os

from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from gchat.client.sdk import Client
from gchat.client.state import StateFile
from protocol import frames as f

from .conftest import Node


def _store(node: Node) -> StateFile:
    return StateFile.with_key_file(node.admin, node.admin.with_name(node.admin.name + ".key"))


async def _as_admin(node: Node, frame: type, **fields: object) -> None:
    """Send one request from the superadmin's own device (its state stays in step)."""
    store = _store(node)
    client = Client(store.load())
    await client.connect()
    try:
        await client.authenticate()
        await client.request(frame, **fields)
    finally:
        await client.close()
        store.save(client.state)


def test_device_list_shows_push_origin_only(node: Node) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    p256dh = key.public_key().public_bytes(Encoding.X962, PublicFormat.UncompressedPoint)
    endpoint = "https://updates.push.example/wpush/v2/secret-capability"
    official = str(_store(node).load().official_id)

    def listing() -> str:
        return node.run("admin", "device", "list", official, "--state", str(node.admin),
                        check=True).stdout

    assert "push" in listing().splitlines()[0]
    assert "https://updates.push.example" not in listing()
    asyncio.run(_as_admin(node, f.RegisterPush, endpoint=endpoint, p256dh=p256dh,
                          auth=os.urandom(16)))
    try:
        table = listing()
        assert "https://updates.push.example" in table
        assert "secret-capability" not in table and "wpush" not in table
        as_json = node.run("admin", "device", "list", official, "--json",
                           "--state", str(node.admin), check=True).stdout
        assert '"push_origin":"https://updates.push.example"' in as_json.replace(" ", "")
        assert "secret-capability" not in as_json
    finally:
        asyncio.run(_as_admin(node, f.UnregisterPush))
    assert "https://updates.push.example" not in listing()
