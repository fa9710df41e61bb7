"""The prekey directory: caps, single hand-out under concurrency, low stock."""

import asyncio
from collections import Counter

from protocol import frames as f
from tests.support import World, expect_error


async def test_upload_cap_and_stock(world: World) -> None:
    alice = await world.official_with_device("alice")  # enrolled with 50 keys
    assert await alice.refill_prekeys(100) == 150
    config_cap = world.app.config.max_prekeys_per_device
    uploads = (config_cap - 150) // 100
    for _ in range(uploads):
        await alice.refill_prekeys(100)
    await expect_error("prekey_limit", alice.refill_prekeys(100))


async def test_concurrent_claims_never_share_a_one_time_key(world: World) -> None:
    bob = await world.official_with_device("bob")
    assert bob.state.official_id is not None
    claimers = [await world.official_with_device(f"c{i}") for i in range(4)]

    async def claim(client) -> list[int | None]:  # noqa: ANN001
        got = []
        for _ in range(20):
            bundle = await client.request(f.GetBundle, official_id=bob.state.official_id)
            [device] = bundle.devices
            got.append(device.one_time_prekey.key_id if device.one_time_prekey else None)
        return got

    results = await asyncio.gather(*(claim(c) for c in claimers))
    handed = [k for r in results for k in r if k is not None]
    assert len(handed) == 50  # every key handed out...
    assert max(Counter(handed).values()) == 1  # ...exactly once
    assert sum(k is None for r in results for k in r) == 80 - 50


async def test_low_stock_notice_and_refill(world: World) -> None:
    bob = await world.official_with_device("bob")
    alice = await world.official_with_device("alice")
    assert bob.state.official_id is not None
    threshold = world.app.config.prekey_low_threshold
    # Several officials: one alone may take only 20 of bob's bundles.
    fetchers = [alice, *[await world.official_with_device(f"f{i}") for i in range(2)]]
    for i in range(50 - threshold + 1):
        await fetchers[i % 3].request(f.GetBundle, official_id=bob.state.official_id)
    while True:
        frame = await bob.receive(5)
        if isinstance(frame, f.PrekeysLow):
            break
    assert frame.available == threshold - 1
    assert await bob.refill_prekeys(50) == threshold - 1 + 50


async def test_bundle_carries_a_verifiable_certificate(world: World) -> None:
    bob = await world.official_with_device("bob")
    alice = await world.official_with_device("alice")
    assert bob.state.official_id is not None
    bundles = await alice.sessions.device_keys(bob.state.official_id)
    assert set(bundles) == {bob.state.device_id}
    [bundle] = bundles.values()
    assert bob.state.device_id is not None
    certified = alice.sessions.verified(
        bundle.certificate, bob.state.official_id, bob.state.device_id
    )
    assert certified == bob.identity.public_key


async def test_one_official_cannot_empty_another_officials_one_time_prekeys(
    world: World,
) -> None:
    """The attack: fetch a target's bundle in a loop to leave it no one-time prekeys."""
    bob = await world.official_with_device("bob")
    carol = await world.official_with_device("carol")
    mallory = await world.official_with_device("mallory")
    # Mallory enrols a second device: the limit is per official, not per device.
    assert mallory.state.official_id is not None
    mallory2 = await world.enroll(await world.new_code(mallory.state.official_id), "m2")
    claimed = 0
    refused = 0
    for i in range(50):
        try:
            bundle = await (mallory, mallory2)[i % 2].request(
                f.GetBundle, official_id=bob.state.official_id
            )
        except Exception as error:  # noqa: BLE001
            assert getattr(error, "code", None) == "rate_limited"
            refused += 1
            continue
        claimed += bundle.devices[0].one_time_prekey is not None
    assert claimed == 20 and refused == 30
    # Bob keeps most of his stock, and Mallory may still reach someone else.
    other = await mallory.request(f.GetBundle, official_id=carol.state.official_id)
    assert other.devices[0].one_time_prekey is not None
    honest = await carol.request(f.GetBundle, official_id=bob.state.official_id)
    assert honest.devices[0].one_time_prekey is not None
