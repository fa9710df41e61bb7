"""Two real node processes sharing one attachment folder: the CLI from one to the
other, and a node killed mid-upload."""

import filecmp
import json
import os
import signal
from collections.abc import AsyncIterator
from pathlib import Path
from uuid import UUID

import pytest

from gchat.client import files
from gchat.client.sdk import Client
from protocol import frames as f
from tests.attachments.transfer import download, send_from, upload
from tests.client.test_cli import ok
from tests.cluster.harness import Cluster, People

pytestmark = pytest.mark.slow


@pytest.fixture
async def two_nodes(
    tmp_path: Path, database_url: str, redis_url: str, redis_prefix: str
) -> AsyncIterator[tuple[Cluster, People, Path]]:
    shared = tmp_path / "shared-attachments"
    cluster = Cluster(
        tmp_path,
        database_url,
        redis_url,
        redis_prefix,
        size=2,
        GCHAT_ATTACHMENTS_DIR=str(shared),
    )
    people = People(cluster)
    try:
        await cluster.start()
        await people.bootstrap()
        yield cluster, people, shared
    finally:
        await people.close()
        cluster.close()
        print(cluster.logs())  # shown by pytest only when the test failed


async def test_node_killed_mid_upload_leaves_nothing_visible_and_the_upload_resumes_on_another(
    two_nodes: tuple[Cluster, People, Path],
) -> None:
    cluster, people, shared = two_nodes
    (alice,) = await people.official("alice", [0])
    (bob,) = await people.official("bob", [1])
    assert bob.state.official_id is not None
    data = os.urandom(400_000)
    ready = await upload(alice, data, recipient=bob.state.official_id, stop_at=3 * 65536)
    cluster[0].signal(signal.SIGKILL)
    cluster[0].wait()

    # Nothing half-written is visible: no blob, and the recipient cannot fetch.
    assert os.listdir(shared / "blobs") == []
    assert os.listdir(shared / "partial") == [str(ready.attachment_id)]
    with pytest.raises(Exception, match="not_found|no such attachment"):
        await bob.request(f.DownloadBegin, attachment_id=ready.attachment_id)

    alice.state.url = cluster[1].url
    again = Client(alice.state)
    people.clients.append(again)
    await again.connect()
    await again.authenticate()
    resumed: f.UploadReady = await again.request(f.UploadResume, attachment_id=ready.attachment_id)
    assert resumed.offset == 3 * 65536
    # The capability from the dead node is good on this one (shared key).
    last = await send_from(again, resumed, data)
    assert last is not None and last.complete
    assert os.listdir(shared / "blobs") == [str(ready.attachment_id)]
    assert await download(bob, ready.attachment_id) == data


async def test_the_sdk_resumes_a_file_on_another_node_and_the_recipient_gets_it_whole(
    two_nodes: tuple[Cluster, People, Path], tmp_path: Path
) -> None:
    cluster, people, shared = two_nodes
    (alice,) = await people.official("alice", [0])
    (bob,) = await people.official("bob", [1])
    assert bob.state.official_id is not None
    source = tmp_path / "report.pdf"
    source.write_bytes(os.urandom(3_000_000))
    spool = files.Spool(source, tmp_path)
    killed: list[int] = []

    def kill_midway(done: int, total: int) -> None:
        if not killed and done > total // 3:
            killed.append(done)
            cluster[0].signal(signal.SIGKILL)

    with pytest.raises(ConnectionError):
        await files.upload(alice.rpc, spool, recipient=bob.state.official_id, progress=kill_midway)
    assert killed and os.listdir(shared / "blobs") == []

    alice.state.url = cluster[1].url
    again = Client(alice.state)
    people.clients.append(again)
    await again.connect()
    await again.authenticate()
    seen: list[int] = []
    attachment = await files.upload(
        again.rpc, spool, recipient=bob.state.official_id, progress=lambda d, t: seen.append(d)
    )
    assert seen[0] > killed[0] - 8 * 128 * 1024  # went on, did not start again
    await again.send_message(bob.state.official_id, files.encode_body(spool.reference()), "f-1")
    spool.discard()

    [message] = [m async for m in bob.messages(idle_timeout=2)]
    _, reference = files.decode_body(message.plaintext)
    assert reference is not None and reference.id == attachment
    saved = await files.download(bob.rpc, reference, tmp_path / "bob")
    assert saved.name == "report.pdf"
    assert saved.read_bytes() == source.read_bytes()
    assert os.listdir(shared / "blobs") == []  # bob was the only addressed device


async def test_cli_to_cli_through_two_real_nodes(
    two_nodes: tuple[Cluster, People, Path], tmp_path: Path
) -> None:
    cluster, people, shared = two_nodes
    assert people.admin is not None
    states: dict[str, tuple[str, UUID]] = {}
    for name, node in (("alice", 0), ("bob", 1)):
        official = UUID(str((await people.admin.request(f.CreateOfficial, name=name)).official_id))
        code = (await people.admin.request(f.IssueCode, official_id=official)).code
        state = str(tmp_path / f"{name}.state")
        await ok("client", "enroll", "--url", cluster[node].url, "--code", code,
                 "--state", state, "--name", name)
        states[name] = (state, official)
    (alice, _), (bob, bob_id) = states["alice"], states["bob"]
    document = tmp_path / "minutes.pdf"
    document.write_bytes(b"%PDF-1.7\n" + os.urandom(700_000))
    await ok("client", "send", "--state", alice, "--to", str(bob_id), "--file", str(document),
             "--message", "minutes of the meeting")
    assert len(os.listdir(shared / "blobs")) == 1  # written by node 0, in the shared folder

    inbox = tmp_path / "bob-files"
    out = await ok("client", "listen", "--state", bob, "--idle", "2", "--save-dir", str(inbox))
    [line] = [json.loads(x) for x in out.splitlines()]
    assert line["text"] == "minutes of the meeting"
    assert filecmp.cmp(line["file"]["saved_to"], document, shallow=False)
    assert os.listdir(shared / "blobs") == []  # fetched through node 1, then deleted
