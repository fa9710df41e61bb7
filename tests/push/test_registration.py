"""register_push / unregister_push / get_push_config against a real node and database."""

import base64
import os
import stat

import msgspec
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from gchat.runtime.server_keys import ServerKeys
from protocol import frames as f
from tests.support import World, expect_error


def subscription_keys() -> tuple[bytes, bytes]:
    key = ec.generate_private_key(ec.SECP256R1())
    return key.public_key().public_bytes(Encoding.X962, PublicFormat.UncompressedPoint), os.urandom(
        16
    )


async def test_register_then_config_then_unregister(world: World) -> None:
    alice = await world.official_with_device("alice")
    config = await alice.request(f.GetPushConfig)
    assert config.registered is False
    # The key browsers subscribe with is a P-256 point and the node's own.
    ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), config.vapid_public_key)
    keys = ServerKeys.load_or_create(world.app.config.key_directory)
    assert config.vapid_public_key == keys.vapid.public_key().public_bytes(
        Encoding.X962, PublicFormat.UncompressedPoint
    )

    p256dh, auth = subscription_keys()
    await alice.request(
        f.RegisterPush, endpoint="https://push.example/s/1", p256dh=p256dh, auth=auth
    )
    assert (await alice.request(f.GetPushConfig)).registered is True
    # Registering again replaces: still one row, the new endpoint.
    await alice.request(
        f.RegisterPush, endpoint="https://push.example/s/2", p256dh=p256dh, auth=auth
    )
    assert world.app.db is not None
    rows = await world.app.db.pool.fetch("SELECT endpoint FROM push_subscriptions")
    assert [r[0] for r in rows] == ["https://push.example/s/2"]

    assert (await alice.request(f.UnregisterPush)).removed is True
    assert (await alice.request(f.UnregisterPush)).removed is False
    assert (await alice.request(f.GetPushConfig)).registered is False


async def test_bad_subscriptions_are_refused_with_invalid_field(world: World) -> None:
    mallory = await world.official_with_device("mallory")
    p256dh, auth = subscription_keys()
    for endpoint in (
        "https://user:pw@push.example/s",
        "https://:443/s",
        "https://push.example:99999/s",
    ):
        await expect_error(
            "invalid_field",
            mallory.request(f.RegisterPush, endpoint=endpoint, p256dh=p256dh, auth=auth),
        )
    not_on_curve = b"\x04" + b"\x01" * 64
    await expect_error(
        "invalid_field",
        mallory.request(
            f.RegisterPush, endpoint="https://p.example/", p256dh=not_on_curve, auth=auth
        ),
    )
    assert world.app.db is not None
    assert await world.app.db.pool.fetchval("SELECT count(*) FROM push_subscriptions") == 0


async def test_device_listing_shows_the_push_service_origin_never_the_endpoint(
    world: World,
) -> None:
    alice = await world.official_with_device("alice")
    assert world.admin is not None and alice.state.official_id is not None

    async def listing() -> f.DeviceList:
        assert world.admin is not None and alice.state.official_id is not None
        return await world.admin.request(f.ListDevices, official_id=alice.state.official_id)

    (before,) = (await listing()).devices
    assert (before.push, before.push_origin) == (False, None)

    p256dh, auth = subscription_keys()
    endpoint = "https://Push.Example:8443/wpush/v2/gAAAA-capability-token?x=1#frag"
    await alice.request(f.RegisterPush, endpoint=endpoint, p256dh=p256dh, auth=auth)
    reply = await listing()
    (device,) = reply.devices
    assert (device.push, device.push_origin) == (True, "https://push.example:8443")
    # Nothing of the capability or the keys, in any field or encoding.
    wire = msgspec.json.encode(reply) + msgspec.msgpack.encode(reply)
    for secret in (b"capability-token", b"wpush", p256dh, auth):
        assert secret not in wire
        assert base64.b64encode(secret)[:20] not in wire
        assert base64.urlsafe_b64encode(secret).rstrip(b"=")[:20] not in wire

    await alice.request(f.UnregisterPush)
    (after,) = (await listing()).devices
    assert (after.push, after.push_origin) == (False, None)


def test_vapid_key_is_created_once_private_and_kept(tmp_path) -> None:  # noqa: ANN001
    first = ServerKeys.load_or_create(tmp_path / "keys")
    path = tmp_path / "keys" / "vapid.key"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    again = ServerKeys.load_or_create(tmp_path / "keys")
    assert first.vapid.private_numbers() == again.vapid.private_numbers()
