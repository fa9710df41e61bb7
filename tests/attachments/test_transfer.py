"""Attachments through a real node: who may fetch, resume, limits, collection, audit."""

import asyncio
import json
import os
import threading
from collections.abc import Awaitable, Callable
from pathlib import Path
from uuid import UUID

from gchat.client.rpc import ClientError
from protocol import frames as f
from tests.attachments.transfer import CHUNK, download, send_from, upload
from tests.fixtures import WorldFactory
from tests.support import World, eventually, expect_error


def blobs(world: World) -> dict[str, list[str]]:
    root = world.app.config.attachment_directory
    return {d: sorted(os.listdir(root / d)) for d in ("partial", "blobs")}


async def test_round_trip_then_deleted_once_every_addressed_device_has_it(world: World) -> None:
    alice = await world.official_with_device("alice")
    bob = await world.official_with_device("bob")
    assert bob.state.official_id is not None
    data = os.urandom(300_000)
    ready = await upload(alice, data, recipient=bob.state.official_id)
    attachment = ready.attachment_id
    assert blobs(world) == {"partial": [], "blobs": [str(attachment)]}
    # Only ciphertext the client gave is stored, byte for byte.
    stored = world.app.config.attachment_directory / "blobs" / str(attachment)
    assert stored.read_bytes() == data

    assert await download(bob, attachment) == data
    await bob.request(f.DownloadDone, attachment_id=attachment)
    assert blobs(world) == {"partial": [], "blobs": []}
    assert world.app.db is not None
    assert await world.app.db.pool.fetchval("SELECT count(*) FROM attachments") == 0
    await expect_error("not_found", bob.request(f.DownloadBegin, attachment_id=attachment))


async def test_the_senders_other_device_is_addressed_and_blob_stays_until_both_fetch(
    world: World,
) -> None:
    alice = await world.official_with_device("alice")
    assert alice.state.official_id is not None
    alice_laptop = await world.enroll(await world.new_code(alice.state.official_id), "laptop")
    bob = await world.official_with_device("bob")
    assert bob.state.official_id is not None
    data = os.urandom(1000)
    attachment = (await upload(alice, data, recipient=bob.state.official_id)).attachment_id
    # The uploading device itself is not addressed.
    await expect_error("not_found", alice.request(f.DownloadBegin, attachment_id=attachment))
    assert await download(bob, attachment) == data
    await bob.request(f.DownloadDone, attachment_id=attachment)
    assert blobs(world)["blobs"] == [str(attachment)]  # alice's laptop has not fetched yet
    assert await download(alice_laptop, attachment) == data
    await alice_laptop.request(f.DownloadDone, attachment_id=attachment)
    assert blobs(world)["blobs"] == []


async def test_a_device_not_addressed_cannot_download_even_with_a_stolen_capability(
    world: World,
) -> None:
    alice = await world.official_with_device("alice")
    bob = await world.official_with_device("bob")
    mallory = await world.official_with_device("mallory")
    assert bob.state.official_id is not None
    data = os.urandom(5000)
    attachment = (await upload(alice, data, recipient=bob.state.official_id)).attachment_id
    await expect_error("not_found", mallory.request(f.DownloadBegin, attachment_id=attachment))
    # Saying "done" for a blob not addressed to you is answered and changes nothing.
    await mallory.request(f.DownloadDone, attachment_id=attachment)
    # Bob's capability is bound to bob's device: useless on mallory's.
    stolen = await bob.request(f.DownloadBegin, attachment_id=attachment)
    await expect_error(
        "capability_invalid",
        mallory.request(
            f.DownloadChunk,
            attachment_id=attachment,
            capability=stolen.capability,
            offset=0,
            length=100,
        ),
    )
    # ... and to that attachment: not good for another one bob may not read.
    other = (await upload(alice, data, recipient=mallory.state.official_id)).attachment_id
    await expect_error(
        "capability_invalid",
        bob.request(
            f.DownloadChunk, attachment_id=other, capability=stolen.capability, offset=0, length=1
        ),
    )
    # A forged capability (one bit flipped in its MAC) is refused too.
    forged = bytearray(stolen.capability)
    forged[-1] ^= 1
    await expect_error(
        "capability_invalid",
        bob.request(
            f.DownloadChunk,
            attachment_id=attachment,
            capability=bytes(forged),
            offset=0,
            length=1,
        ),
    )
    # An upload capability does not download, nor a download capability upload.
    await expect_error(
        "capability_invalid",
        bob.request(
            f.UploadChunk,
            attachment_id=attachment,
            capability=stolen.capability,
            offset=0,
            data=b"x",
        ),
    )
    # Nothing mallory tried changed what bob gets.
    assert await download(bob, attachment) == data


async def test_an_unfinished_upload_is_invisible_and_resumes_on_a_new_connection(
    world: World,
) -> None:
    alice = await world.official_with_device("alice")
    bob = await world.official_with_device("bob")
    assert bob.state.official_id is not None
    data = os.urandom(200_000)
    ready = await upload(alice, data, recipient=bob.state.official_id, stop_at=65536)
    attachment = ready.attachment_id
    assert blobs(world) == {"partial": [str(attachment)], "blobs": []}
    await expect_error("not_found", bob.request(f.DownloadBegin, attachment_id=attachment))
    await alice.close()

    again = await world.reconnect(alice)
    resumed: f.UploadReady = await again.request(f.UploadResume, attachment_id=attachment)
    assert resumed.offset == 65536 and resumed.size == len(data)
    # A chunk that is not at the stored offset is refused; nothing changes.
    await expect_error(
        "offset_mismatch",
        again.request(
            f.UploadChunk,
            attachment_id=attachment,
            capability=resumed.capability,
            offset=0,
            data=data[:10],
        ),
    )
    last = await send_from(again, resumed, data)
    assert last is not None and last.complete and last.offset == len(data)
    assert (await again.request(f.UploadResume, attachment_id=attachment)).offset == len(data)
    assert await download(bob, attachment) == data
    # Another device may not resume (or even learn of) alice's upload.
    await expect_error("not_found", bob.request(f.UploadResume, attachment_id=attachment))


async def test_a_chunk_past_the_announced_size_is_refused(world: World) -> None:
    alice = await world.official_with_device("alice")
    bob = await world.official_with_device("bob")
    ready = await alice.request(f.UploadBegin, size=10, recipient=bob.state.official_id)
    await expect_error(
        "invalid_field",
        alice.request(
            f.UploadChunk,
            attachment_id=ready.attachment_id,
            capability=ready.capability,
            offset=0,
            data=b"x" * 11,
        ),
    )
    await expect_error(
        "invalid_field",
        alice.request(f.UploadBegin, size=10, recipient=None, conversation_id=None),
    )


async def _until_expired(call: Callable[[], Awaitable[object]]) -> None:
    """Repeat ``call`` (a request the node refuses with ``invalid_field`` while its
    capability is good, so it changes nothing) until ``capability_expired``."""

    async def expired() -> bool:
        error = await expect_error_any(call())
        assert error.code in ("invalid_field", "capability_expired"), error
        return error.code == "capability_expired"

    await eventually(expired, within=10, what="the capability to expire")


async def expect_error_any(call: Awaitable[object]) -> ClientError:
    try:
        await call
    except ClientError as error:
        return error
    raise AssertionError("not refused")


async def test_capabilities_expire(world_with) -> None:  # noqa: ANN001
    async with world_with(attachment_capability_seconds=0.3) as world:
        alice = await world.official_with_device("alice")
        bob = await world.official_with_device("bob")
        data = os.urandom(1000)
        ready = await alice.request(f.UploadBegin, size=len(data), recipient=bob.state.official_id)

        def chunk(capability: bytes, data: bytes) -> Awaitable[object]:
            return alice.request(
                f.UploadChunk,
                attachment_id=ready.attachment_id,
                capability=capability,
                offset=0,
                data=data,
            )

        # One byte past the size: refused (and nothing stored) while the capability holds.
        await _until_expired(lambda: chunk(ready.capability, data + b"x"))
        await expect_error("capability_expired", chunk(ready.capability, data))
        fresh = await alice.request(f.UploadResume, attachment_id=ready.attachment_id)
        assert fresh.offset == 0
        await send_from(alice, fresh, data)
        grant = await bob.request(f.DownloadBegin, attachment_id=ready.attachment_id)

        def fetch(offset: int) -> Awaitable[object]:
            return bob.request(
                f.DownloadChunk,
                attachment_id=ready.attachment_id,
                capability=grant.capability,
                offset=offset,
                length=10,
            )

        await _until_expired(lambda: fetch(len(data)))  # past the end: refused meanwhile
        await expect_error("capability_expired", fetch(0))
        # A fresh one works again.
        assert await download(bob, ready.attachment_id) == data


async def test_size_limit_and_daily_quota_from_agency_policy(world_with) -> None:  # noqa: ANN001
    async with world_with(attachment_bytes_per_day=10_000) as world:
        alice = await world.official_with_device("alice")
        bob = await world.official_with_device("bob")
        assert world.admin is not None and world.admin.state.agency_id is not None
        await world.admin.request(
            f.SetPolicy,
            agency_id=world.admin.state.agency_id,
            policy=f.PolicyInfo(max_attachment_bytes=4000),
        )
        shown = await world.admin.request(f.GetPolicy, agency_id=world.admin.state.agency_id)
        assert shown.policy.max_attachment_bytes == 4000
        assert shown.effective.max_attachment_bytes == 4000
        to_bob = {"recipient": bob.state.official_id}
        await expect_error("too_large", alice.request(f.UploadBegin, size=4001, **to_bob))
        await alice.request(f.UploadBegin, size=4000, **to_bob)
        await alice.request(f.UploadBegin, size=4000, **to_bob)
        # 8000 of today's 10 000 used (announced uploads count, finished or not).
        await expect_error("quota_exceeded", alice.request(f.UploadBegin, size=2001, **to_bob))
        await alice.request(f.UploadBegin, size=2000, **to_bob)
        # Bob's quota is his own.
        await bob.request(f.UploadBegin, size=4000, recipient=alice.state.official_id)


async def test_group_members_download_and_others_cannot(world: World) -> None:
    alice = await world.official_with_device("alice")
    bob = await world.official_with_device("bob")
    carol = await world.official_with_device("carol")
    dave = await world.official_with_device("dave")
    members = [bob.state.official_id, carol.state.official_id]
    group = await alice.create_group("files", members)  # type: ignore[arg-type]
    data = os.urandom(70_000)
    attachment = (await upload(alice, data, conversation_id=group.conversation_id)).attachment_id
    for member in (bob, carol):
        assert await download(member, attachment) == data
    await expect_error("not_found", dave.request(f.DownloadBegin, attachment_id=attachment))
    await expect_error(
        "not_a_member",
        dave.request(f.UploadBegin, size=10, conversation_id=group.conversation_id),
    )
    for member in (bob, carol):
        await member.request(f.DownloadDone, attachment_id=attachment)
    assert blobs(world)["blobs"] == []


async def test_collection_of_expired_unfinished_and_orphaned_blobs(world_with) -> None:  # noqa: ANN001
    async with world_with(attachment_upload_ttl_seconds=3600) as world:
        alice = await world.official_with_device("alice")
        bob = await world.official_with_device("bob")
        to_bob = {"recipient": bob.state.official_id}
        done = (await upload(alice, os.urandom(100), **to_bob)).attachment_id
        kept = (await upload(alice, os.urandom(100), **to_bob)).attachment_id
        unfinished = (await upload(alice, os.urandom(100), stop_at=50, **to_bob)).attachment_id
        orphan = UUID(int=7)
        root = world.app.config.attachment_directory
        (root / "blobs" / str(orphan)).write_bytes(b"left behind")
        old = 1_000_000_000
        os.utime(root / "blobs" / str(orphan), (old, old))
        pool = world.app.db.pool
        await pool.execute(
            "UPDATE attachments SET expires_at = now() - interval '1s' WHERE id = $1", done
        )
        await pool.execute(
            "UPDATE attachments SET created_at = now() - interval '2h' WHERE id = $1", unfinished
        )
        assert await world.app.attachments.collect() == 3
        assert blobs(world) == {"partial": [], "blobs": [str(kept)]}
        assert [r[0] for r in await pool.fetch("SELECT id FROM attachments")] == [kept]


async def test_audit_records_ids_sizes_and_parties_only(world: World) -> None:
    alice = await world.official_with_device("alice")
    bob = await world.official_with_device("bob")
    attachment = (
        await upload(alice, os.urandom(777), recipient=bob.state.official_id)
    ).attachment_id
    await download(bob, attachment)
    await bob.request(f.DownloadDone, attachment_id=attachment)
    rows = await world.app.db.pool.fetch(
        "SELECT kind, officials, entry FROM audit_events WHERE kind LIKE 'attachment.%' ORDER BY id"
    )
    assert [r["kind"] for r in rows] == ["attachment.uploaded", "attachment.fetched"]
    uploaded, fetched = rows
    # audit_events is a view over the stored log (migration 0010): the entry
    # is the canonical JSON, ``officials`` the officials and agencies indexed.
    upload_entry, fetch_entry = (json.loads(bytes(r["entry"])) for r in rows)
    assert upload_entry["actor_device"] == str(alice.state.device_id)
    assert bob.state.official_id in uploaded["officials"]
    assert str(bob.state.device_id).encode() in bytes(uploaded["entry"])
    assert fetch_entry["actor_device"] == str(bob.state.device_id)
    for row in rows:
        entry = bytes(row["entry"])
        assert str(attachment).encode() in entry or attachment.bytes in entry
        assert b"777" in entry or (777).to_bytes(2, "big") in entry


async def test_storage_full_is_a_clear_error_and_loses_nothing_stored(
    world_with,
    tiny_disk: Path,  # noqa: ANN001
) -> None:
    async with world_with(attachments_dir=tiny_disk) as world:
        alice = await world.official_with_device("alice")
        bob = await world.official_with_device("bob")
        first = os.urandom(600_000)
        kept = (await upload(alice, first, recipient=bob.state.official_id)).attachment_id
        second = os.urandom(600_000)
        ready = await alice.request(
            f.UploadBegin, size=len(second), recipient=bob.state.official_id
        )
        error = await expect_error("storage_full", send_from(alice, ready, second))
        assert "storage is full" in str(error)
        # The refused chunk left nothing behind: the stored offset is a chunk boundary.
        resumed = await alice.request(f.UploadResume, attachment_id=ready.attachment_id)
        assert resumed.offset % CHUNK == 0 and resumed.offset < len(second)
        assert await download(bob, kept) == first


async def test_pipelined_chunks_are_stored_in_order_and_a_wrong_one_stops_the_rest(
    world: World,
) -> None:
    """A client with every chunk in flight at once (the node reads on while
    chunks are stored, and writes those waiting together): each answer says
    what was stored by then; a chunk at the wrong offset is refused and so
    is every chunk after it, and what was stored before it is kept."""
    alice = await world.official_with_device("alice")
    bob = await world.official_with_device("bob")
    data = os.urandom(12 * CHUNK)
    ready = await alice.request(f.UploadBegin, size=len(data), recipient=bob.state.official_id)

    def chunk(offset: int) -> Awaitable[f.UploadProgress]:
        return alice.request(
            f.UploadChunk,
            attachment_id=ready.attachment_id,
            capability=ready.capability,
            offset=offset,
            data=data[offset : offset + CHUNK],
        )

    # Chunks 0-4, then chunk 6 where 5 belongs, then 6-11 as if 5 had been stored.
    offsets = [i * CHUNK for i in range(5)] + [6 * CHUNK] + [i * CHUNK for i in range(6, 12)]
    answers = await asyncio.gather(*(chunk(o) for o in offsets), return_exceptions=True)
    assert [a.offset for a in answers[:5]] == [(i + 1) * CHUNK for i in range(5)]
    refused = answers[5:]
    assert all(isinstance(a, ClientError) and a.code == "offset_mismatch" for a in refused)
    resumed = await alice.request(f.UploadResume, attachment_id=ready.attachment_id)
    assert resumed.offset == 5 * CHUNK

    rest = [i * CHUNK for i in range(5, 12)]
    answers = await asyncio.gather(*(chunk(o) for o in rest))
    assert [a.offset for a in answers] == [o + CHUNK for o in rest]
    assert [a.complete for a in answers] == [False] * 6 + [True]

    # Downloaded the same way: every chunk request in flight at once.
    down = await bob.request(f.DownloadBegin, attachment_id=ready.attachment_id)
    parts = await asyncio.gather(
        *(
            bob.request(
                f.DownloadChunk,
                attachment_id=ready.attachment_id,
                capability=down.capability,
                offset=o,
                length=CHUNK,
            )
            for o in range(0, len(data), CHUNK)
        )
    )
    assert [p.offset for p in parts] == list(range(0, len(data), CHUNK))
    assert b"".join(p.data for p in parts) == data


async def test_a_stopped_node_leaves_no_file_threads(world_with: WorldFactory) -> None:
    """The chunks' threads belong to the node: once it stops, none is left
    (a node made and stopped per test, or a worker restarted, must not pile
    them up)."""

    def file_threads() -> list[threading.Thread]:
        return [t for t in threading.enumerate() if t.name.startswith("gchat-files")]

    before = file_threads()
    async with world_with() as world:
        alice = await world.official_with_device("alice")
        bob = await world.official_with_device("bob")
        assert bob.state.official_id is not None
        await upload(alice, os.urandom(3 * CHUNK), recipient=bob.state.official_id)
        assert len(file_threads()) > len(before)  # the upload ran in them
    assert file_threads() == before
