"""The reference CLI as an official uses it: separate processes against a real node."""

import asyncio
import dataclasses
import json
import os
import re
import sys
from pathlib import Path
from uuid import UUID

from gchat.app import App
from gchat.client.sdk import Client
from protocol import frames as f
from tests.support import World
from tests.test_make_run import REPO

ENV = {k: v for k, v in os.environ.items() if not k.startswith("GCHAT_")}


async def gchat(*args: str) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "gchat", *args, cwd=REPO, env=ENV,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


async def ok(*args: str) -> str:
    status, out, err = await gchat(*args)
    assert status == 0, err
    assert "Traceback" not in err
    return out


async def enrol(world: World, tmp_path: Path, name: str, official: UUID | None = None) -> tuple[
    str, UUID
]:
    """Enrol a device through the CLI; its state path and official id."""
    official = official or await world.new_official(name)
    state = str(tmp_path / f"{name}.state")
    out = await ok("client", "enroll", "--url", world.url, "--code",
                   await world.new_code(official), "--state", state, "--name", name)
    assert json.loads(out)["official_id"] == str(official)
    return state, official


def digits(out: str) -> str:
    [line] = [x for x in out.splitlines() if re.fullmatch(r"(\d{5} ){11}\d{5}", x)]
    return line


async def test_safety_numbers_are_equal_from_the_cli_and_guard_device_changes(
    world: World, tmp_path: Path
) -> None:
    alice, alice_id = await enrol(world, tmp_path, "alice")
    bob, bob_id = await enrol(world, tmp_path, "bob")
    from_alice = await ok("client", "safety-number", "--state", alice, "--with", str(bob_id))
    from_bob = await ok("client", "safety-number", "--state", bob, "--with", str(alice_id))
    assert digits(from_alice) == digits(from_bob)
    assert "█" in from_alice or "▀" in from_alice  # the QR code, printed with block characters
    verified = await ok("client", "verify", "--state", alice, "--with", str(bob_id))
    assert digits(from_alice) in verified
    await ok("client", "send", "--state", alice, "--to", str(bob_id), "--message", "hi")

    await enrol(world, tmp_path, "bob-laptop", bob_id)  # Bob's devices change
    status, out, err = await gchat("client", "send", "--state", alice, "--to", str(bob_id),
                                   "--message", "secret")
    assert status != 0 and out == ""
    assert len(err.strip().splitlines()) == 1 and "changed since you verified" in err
    accepted = await ok("client", "accept-devices", "--state", alice, "--with", str(bob_id))
    assert "Accepted 1 new device" in accepted
    await ok("client", "send", "--state", alice, "--to", str(bob_id), "--message", "secret")
    lines = [json.loads(x) for x in (await ok(
        "client", "listen", "--state", str(tmp_path / "bob-laptop.state"), "--idle", "1.5"
    )).splitlines()]
    assert [x["text"] for x in lines if "text" in x] == ["secret"]
    assert lines[-1]["kind"] == "pairwise" and lines[-1]["conversation_id"] is None


async def test_an_official_without_devices_is_the_clients_finding_not_a_server_refusal(
    world: World, tmp_path: Path
) -> None:
    """Nobody to encrypt for is said as what the client found, in one line, not as a
    server error with a code the protocol lacks."""
    alice, _ = await enrol(world, tmp_path, "alice")
    nobody = await world.new_official("nobody")  # in the directory, never enrolled
    for command in (["send", "--message", "hello", "--to"], ["safety-number", "--with"]):
        status, out, err = await gchat("client", command[0], "--state", alice,
                                       *command[1:], str(nobody))
        assert (status, out) == (1, "")
        assert err.strip() == f"gchat: official {nobody} has no active device to send to"


async def test_group_commands_and_listen_says_which_conversation(
    world: World, tmp_path: Path
) -> None:
    alice, _ = await enrol(world, tmp_path, "alice")
    bob, bob_id = await enrol(world, tmp_path, "bob")
    carol, carol_id = await enrol(world, tmp_path, "carol")
    created = json.loads(await ok("client", "group", "create", "--state", alice, "--title",
                                  "ทีมงาน", "--member", str(bob_id)))
    cid = created["conversation_id"]
    added = json.loads(await ok("client", "group", "add", "--state", alice, "--conversation",
                                cid, "--member", str(carol_id)))
    assert str(carol_id) in added["members"]
    await ok("client", "group", "send", "--state", alice, "--conversation", cid,
             "--message", "สวัสดี")
    lines = [json.loads(x) for x in (await ok(
        "client", "listen", "--state", carol, "--count", "1", "--idle", "5"
    )).splitlines()]
    [message] = [x for x in lines if "text" in x]
    assert (message["kind"], message["conversation_id"], message["text"]) == (
        "group", cid, "สวัสดี"
    )
    listed = json.loads(await ok("client", "group", "list", "--state", carol,
                                 "--conversation", cid))
    assert len(listed["members"]) == 3 and listed["title"] == "ทีมงาน"
    [known] = [json.loads(x) for x in (await ok("client", "conversations", "--state", carol))
               .splitlines()]
    assert known["conversation_id"] == cid
    removed = json.loads(await ok("client", "group", "remove", "--state", alice,
                                  "--conversation", cid, "--member", str(carol_id)))
    assert str(carol_id) not in removed["members"]
    status, _, err = await gchat("client", "group", "send", "--state", carol, "--conversation",
                                 cid, "--message", "still here?")
    assert status != 0 and len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert (await gchat("client", "listen", "--state", bob, "--idle", "1"))[0] == 0


async def _listen(state: str) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        sys.executable, "-m", "gchat", "client", "listen", "--state", state, cwd=REPO, env=ENV,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )


async def _line(proc: asyncio.subprocess.Process, within: float = 20) -> dict:
    assert proc.stdout is not None
    while True:
        raw = await asyncio.wait_for(proc.stdout.readline(), within)
        assert raw, "listen ended"
        line = json.loads(raw)
        if "text" in line:
            return dict(line)


async def test_listen_reconnects_after_a_restart_and_exits_on_4409_and_4403(
    world: World, tmp_path: Path
) -> None:
    alice = await world.official_with_device("alice")
    bob, bob_id = await enrol(world, tmp_path, "bob")
    proc = await _listen(bob)
    await alice.send_message(bob_id, b"before", "l1")
    assert (await _line(proc))["text"] == "before"
    # The node goes away (1001) and comes back on the same port.
    port = world.app.port
    await world.app.stop()
    restarted = App(dataclasses.replace(world.app.config, port=port))
    await restarted.start()
    try:
        await alice.close()
        again = Client(alice.state)
        await again.connect()
        await again.authenticate()
        await again.send_message(bob_id, b"after", "l2")
        assert (await _line(proc))["text"] == "after"
        # Another connection of Bob's device takes over: 4409.
        from gchat.client.state import StateFile

        store = StateFile.with_key_file(Path(bob), Path(bob + ".key"))
        thief = Client(store.load())
        await thief.connect()
        await thief.authenticate()
        _, raw = await asyncio.wait_for(proc.communicate(), 20)
        err = raw.decode()
        assert proc.returncode == 4 and "took over" in err and "Traceback" not in err
        await thief.close()
        # Revoked while listening: 4403.
        proc = await _listen(bob)
        await again.send_message(bob_id, b"once more", "l3")
        assert (await _line(proc))["text"] == "once more"
        admin = Client(world.admin.state) if world.admin else None
        assert admin is not None
        await admin.connect()
        await admin.authenticate()
        devices = await admin.request(f.ListDevices, official_id=bob_id)
        await admin.request(f.RevokeDevice, device_id=devices.devices[0].device_id)
        _, raw = await asyncio.wait_for(proc.communicate(), 20)
        err = raw.decode()
        assert proc.returncode == 3 and "revoked" in err and "Traceback" not in err
        await admin.close()
        await again.close()
    finally:
        await restarted.stop()


def test_listen_names_the_recipient_of_a_copy_from_another_own_device() -> None:
    from uuid import uuid4

    from gchat.client.cli import _message_line
    from gchat.client.events import Received

    to = uuid4()
    copy = Received(uuid4(), 1, uuid4(), uuid4(), 0, b"hi", None, to)
    assert _message_line(copy)["to_official"] == str(to)
    assert "to_official" not in _message_line(dataclasses.replace(copy, recipient=None))
