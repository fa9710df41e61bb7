"""Files end to end through the reference CLI: separate processes against a real node."""

import asyncio
import json
import os
import subprocess
from pathlib import Path
from uuid import UUID

import pytest

from tests.client.test_cli import enrol, gchat, ok
from tests.support import World

MARKER = b"GCHAT-PLAINTEXT-MARKER-5d1c"


def lines(out: str) -> list[dict]:  # type: ignore[type-arg]
    return [json.loads(x) for x in out.splitlines()]


def stored(world: World) -> list[Path]:
    root = world.app.config.attachment_directory
    return sorted((root / "blobs").iterdir())


async def test_cli_to_cli_file_round_trip_then_the_server_forgets_it(
    world: World, tmp_path: Path
) -> None:
    alice, _ = await enrol(world, tmp_path, "alice")
    bob, bob_id = await enrol(world, tmp_path, "bob")
    document = tmp_path / "memo 2026.pdf"
    document.write_bytes(b"%PDF-1.7\n" + os.urandom(200_000))
    sent = await ok("client", "send", "--state", alice, "--to", str(bob_id),
                    "--file", str(document), "--message", "the memo")
    assert "message_id" in json.loads(sent)
    assert len(stored(world)) == 1

    inbox = tmp_path / "bob-files"
    [line] = lines(await ok("client", "listen", "--state", bob, "--idle", "1.5",
                            "--save-dir", str(inbox)))
    assert line["text"] == "the memo"
    assert line["file"]["name"] == "memo 2026.pdf"
    assert line["file"]["media_type"] == "application/pdf"
    assert line["file"]["size"] == document.stat().st_size
    saved = Path(line["file"]["saved_to"])
    assert saved == inbox / "memo 2026.pdf"
    assert _sha256(saved) == _sha256(document)
    assert os.listdir(inbox) == ["memo 2026.pdf"]  # no temporary file left
    assert stored(world) == []  # every addressed device has it: deleted


async def test_a_file_to_a_group_of_three(world: World, tmp_path: Path) -> None:
    alice, _ = await enrol(world, tmp_path, "alice")
    bob, bob_id = await enrol(world, tmp_path, "bob")
    carol, carol_id = await enrol(world, tmp_path, "carol")
    created = json.loads(await ok("client", "group", "create", "--state", alice,
                                  "--title", "site visit", "--member", str(bob_id),
                                  "--member", str(carol_id)))
    conversation = created["conversation_id"]
    photo = tmp_path / "site.jpg"
    photo.write_bytes(b"\xff\xd8\xff\xe0" + os.urandom(150_000))
    await ok("client", "group", "send", "--state", alice, "--conversation", conversation,
             "--file", str(photo))
    for name, state in (("bob", bob), ("carol", carol)):
        inbox = tmp_path / f"{name}-files"
        got = [x for x in lines(await ok("client", "listen", "--state", state, "--idle", "1.5",
                                         "--save-dir", str(inbox))) if "file" in x]
        assert len(got) == 1 and got[0]["conversation_id"] == conversation
        assert got[0]["file"]["media_type"] == "image/jpeg"
        assert (inbox / "site.jpg").read_bytes() == photo.read_bytes()
    assert stored(world) == []


@pytest.mark.parametrize("attack", ["flip", "truncate", "cut-on-disk", "swap"])
async def test_a_tampered_or_truncated_file_is_refused_with_a_clear_message(
    world: World, tmp_path: Path, attack: str
) -> None:
    alice, _ = await enrol(world, tmp_path, "alice")
    bob, bob_id = await enrol(world, tmp_path, "bob")
    document = tmp_path / "order.txt"
    document.write_bytes(os.urandom(150_000))
    await ok("client", "send", "--state", alice, "--to", str(bob_id), "--file", str(document))
    [blob] = stored(world)
    data = bytearray(blob.read_bytes())
    pool = world.app.db.pool  # type: ignore[union-attr]
    if attack == "flip":  # whoever holds the disk changes one bit
        data[100_000] ^= 0x01
    elif attack == "truncate":  # or cuts the end off, on disk and in the database alike
        del data[-20_000:]
        await pool.execute("UPDATE attachments SET size = $1", len(data))
    elif attack == "cut-on-disk":  # or only on disk: the node serves short chunks
        del data[-20_000:]
    else:  # or puts other bytes of the same length in its place
        data = bytearray(os.urandom(len(data)))
    blob.write_bytes(bytes(data))

    inbox = tmp_path / "bob-files"
    status, out, err = await gchat("client", "listen", "--state", bob, "--idle", "1.5",
                                   "--save-dir", str(inbox))
    assert status == 0 and "Traceback" not in err
    [line] = lines(out)
    refused = line["file"]["refused"]
    assert "saved_to" not in line["file"]
    if attack in ("flip", "swap"):
        assert "was altered" in refused
    else:
        assert "refused" in refused and ("not the" in refused or "truncated" in refused)
    assert not inbox.exists() or os.listdir(inbox) == []  # no plaintext left behind
    # The refused file is not reported as fetched: the server keeps it (for the retention).
    assert len(stored(world)) == 1


async def test_database_and_disk_hold_only_ciphertext_of_a_sent_file(
    world: World, tmp_path_factory: pytest.TempPathFactory, database_url: str
) -> None:
    clients = tmp_path_factory.mktemp("clients")  # outside the node's data folder
    alice, _ = await enrol(world, clients, "alice")
    _, bob_id = await enrol(world, clients, "bob")
    secret = clients / f"{MARKER.decode()}.txt"
    secret.write_bytes((MARKER + b" budget line 42\n") * 5000)
    await ok("client", "send", "--state", alice, "--to", str(bob_id), "--file", str(secret),
             "--message", f"caption {MARKER.decode()}")
    assert len(stored(world)) == 1  # stored, not yet fetched

    dump = (
        await asyncio.to_thread(
            subprocess.run,
            ["pg_dump", "--data-only", database_url],
            capture_output=True,
            check=True,
        )
    ).stdout
    assert len(dump) > 10_000  # the dump holds the directory, messages and audit log
    assert MARKER not in dump
    assert MARKER.hex().encode() not in dump  # nor as bytea hex
    data_dir = world.app.config.data_dir
    scanned = 0
    for folder, _, names in os.walk(data_dir):
        for name in names:
            assert MARKER.decode() not in name
            scanned += (Path(folder) / name).stat().st_size
            assert MARKER not in (Path(folder) / name).read_bytes(), Path(folder) / name
    assert scanned >= secret.stat().st_size  # the blob itself was among what was scanned
    assert world.app.config.attachment_directory.is_relative_to(data_dir)


@pytest.mark.slow
async def test_a_100_mib_file_through_the_cli(world: World, tmp_path: Path) -> None:
    alice, _ = await enrol(world, tmp_path, "alice")
    bob, bob_id = await enrol(world, tmp_path, "bob")
    big = tmp_path / "scan.bin"
    with big.open("wb") as out:
        for _ in range(100):
            out.write(os.urandom(1024 * 1024))
    await ok("client", "send", "--state", alice, "--to", str(bob_id), "--file", str(big))
    inbox = tmp_path / "bob-files"
    [line] = lines(await ok("client", "listen", "--state", bob, "--idle", "2",
                            "--save-dir", str(inbox)))
    saved = Path(line["file"]["saved_to"])
    assert _sha256(saved) == _sha256(big)
    assert stored(world) == []


def _sha256(path: Path) -> str:
    import hashlib

    digest = hashlib.sha256()
    with path.open("rb") as file:
        while block := file.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()


async def test_cli_mistakes_get_one_sentence(world: World, tmp_path: Path) -> None:
    alice, _ = await enrol(world, tmp_path, "alice")
    _, bob_id = await enrol(world, tmp_path, "bob")
    for extra, words in (
        (["--file", str(tmp_path / "missing.pdf")], "is not a readable file"),
        ([], "give --message, --file or both"),
    ):
        status, out, err = await gchat("client", "send", "--state", alice, "--to", str(bob_id),
                                       *extra)
        assert status != 0 and out == "" and "Traceback" not in err
        assert len(err.strip().splitlines()) == 1 and words in err, err
    assert isinstance(bob_id, UUID)


async def test_a_full_disk_is_one_sentence_at_the_cli_and_loses_nothing_stored(
    world_with, tiny_disk: Path, tmp_path: Path  # noqa: ANN001
) -> None:
    async with world_with(attachments_dir=tiny_disk) as world:
        alice, _ = await enrol(world, tmp_path, "alice")
        bob, bob_id = await enrol(world, tmp_path, "bob")
        first = tmp_path / "first.bin"
        first.write_bytes(os.urandom(600_000))
        await ok("client", "send", "--state", alice, "--to", str(bob_id), "--file", str(first))
        second = tmp_path / "second.bin"
        second.write_bytes(os.urandom(600_000))  # does not fit beside the first on 1 MiB
        status, out, err = await gchat("client", "send", "--state", alice, "--to", str(bob_id),
                                       "--file", str(second), "--message", "second")
        assert status != 0 and out == "" and "Traceback" not in err
        assert len(err.strip().splitlines()) == 1 and "storage is full" in err, err

        inbox = tmp_path / "bob-files"
        [line] = lines(await ok("client", "listen", "--state", bob, "--idle", "1.5",
                                "--save-dir", str(inbox)))  # the second was never sent
        assert _sha256(Path(line["file"]["saved_to"])) == _sha256(first)
