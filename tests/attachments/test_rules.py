"""Who may fetch an attachment over time, and what the node forgets when.

Each test is written as the party who should be refused would try it: a
device enrolled after the upload, a member removed from the group, an
uploader who abandons uploads to try to get their quota back sooner; and
the node's side: a blob nobody active can still fetch is collected, and an
abandoned upload gives back the quota it reserved.
"""

import os
from uuid import UUID

from protocol import frames as f
from tests.attachments.test_transfer import blobs
from tests.attachments.transfer import download, upload
from tests.support import World, eventually, expect_error


async def test_a_device_enrolled_after_the_upload_cannot_fetch_it(world: World) -> None:
    alice = await world.official_with_device("alice")
    bob = await world.official_with_device("bob")
    assert bob.state.official_id is not None
    data = os.urandom(2000)
    attachment = (await upload(alice, data, recipient=bob.state.official_id)).attachment_id
    # Bob enrols a laptop after the upload: it was not among the addressed devices.
    laptop = await world.enroll(await world.new_code(bob.state.official_id), "bob-laptop")
    await expect_error("not_found", laptop.request(f.DownloadBegin, attachment_id=attachment))
    # Saying "done" from the laptop changes nothing: the blob waits for the phone.
    await laptop.request(f.DownloadDone, attachment_id=attachment)
    assert blobs(world)["blobs"] == [str(attachment)]
    assert await download(bob, attachment) == data
    await bob.request(f.DownloadDone, attachment_id=attachment)
    # The phone was the only addressed device: the blob goes, the laptop never counted.
    assert blobs(world)["blobs"] == []


async def test_a_member_removed_after_the_upload_cannot_download(world: World) -> None:
    alice = await world.official_with_device("alice")
    bob = await world.official_with_device("bob")
    carol = await world.official_with_device("carol")
    assert bob.state.official_id is not None and carol.state.official_id is not None
    group = await alice.create_group("plans", [bob.state.official_id, carol.state.official_id])
    data = os.urandom(3000)
    attachment = (await upload(alice, data, conversation_id=group.conversation_id)).attachment_id
    await alice.remove_members(group.conversation_id, [carol.state.official_id])
    await expect_error("not_found", carol.request(f.DownloadBegin, attachment_id=attachment))
    # Bob, still a member, gets it; carol's never fetching does not keep it stored
    # once bob has it (her device was addressed, but she may no longer fetch).
    assert await download(bob, attachment) == data
    await bob.request(f.DownloadDone, attachment_id=attachment)
    assert blobs(world)["blobs"] == []


async def test_a_blob_goes_once_no_active_addressed_device_lacks_it(world: World) -> None:
    alice = await world.official_with_device("alice")
    bob = await world.official_with_device("bob")
    assert bob.state.official_id is not None and bob.state.device_id is not None
    assert world.admin is not None and world.app.attachments is not None
    attachment = (
        await upload(alice, os.urandom(900), recipient=bob.state.official_id)
    ).attachment_id
    # While bob's phone may still fetch it, collection keeps it.
    assert await world.app.attachments.collect() == 0
    assert blobs(world)["blobs"] == [str(attachment)]
    # Bob's phone is lost and revoked before it fetched: no one left to fetch it.
    await world.admin.request(f.RevokeDevice, device_id=bob.state.device_id)
    assert await world.app.attachments.collect() == 1
    assert blobs(world) == {"partial": [], "blobs": []}


async def test_an_abandoned_upload_gives_its_quota_back_when_collected(world_with) -> None:  # noqa: ANN001
    async with world_with(
        attachment_bytes_per_day=10_000, attachment_upload_ttl_seconds=1
    ) as world:
        alice = await world.official_with_device("alice")
        bob = await world.official_with_device("bob")
        to_bob = {"recipient": bob.state.official_id}
        pool = world.app.db.pool
        # A finished upload keeps counting, fetched or not.
        done = (await upload(alice, os.urandom(3000), **to_bob)).attachment_id
        await download(bob, done)
        await bob.request(f.DownloadDone, attachment_id=done)
        # An announced upload counts at once: a second one cannot overshoot the day.
        abandoned = await upload(alice, os.urandom(6000), stop_at=1000, **to_bob)
        await expect_error("quota_exceeded", alice.request(f.UploadBegin, size=2000, **to_bob))
        assert blobs(world)["partial"] == [str(abandoned.attachment_id)]

        # Once collected (unfinished for longer than the upload TTL), the 6000 come back.
        async def collected() -> bool:
            await world.app.attachments.collect()  # the node's own sweep may come first
            return blobs(world) == {"partial": [], "blobs": []}

        await eventually(collected, within=15, what="the abandoned upload collected")
        used = await pool.fetchval(
            "SELECT bytes FROM attachment_usage WHERE official_id = $1",
            UUID(str(alice.state.official_id)),
        )
        assert used == 3000
        await alice.request(f.UploadBegin, size=7000, **to_bob)
        await expect_error("quota_exceeded", alice.request(f.UploadBegin, size=1, **to_bob))
        # The collected upload cannot be resumed or fetched.
        await expect_error(
            "not_found", alice.request(f.UploadResume, attachment_id=abandoned.attachment_id)
        )
