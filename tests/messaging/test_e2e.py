"""End-to-end encryption through a real node: what the devices read, what the server holds."""

import time
from uuid import UUID

import asyncpg
import pytest

from crypto.certificate import DeviceCertificate, issue_certificate
from crypto.errors import CryptoError
from crypto.identity import IdentityKeyPair
from gchat.client.sdk import Client
from tests.support import World


async def read(client: Client, count: int, wait: float = 5.0) -> list[bytes]:
    got = []
    async for message in client.messages(idle_timeout=wait):
        got.append(message.plaintext)
        if len(got) == count:
            break
    return got


async def all_rows_text(database_url: str) -> str:
    conn = await asyncpg.connect(database_url)
    try:
        tables = await conn.fetch("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")
        texts = []
        for table in tables:
            rows = await conn.fetch(f'SELECT t::text AS r FROM "{table["tablename"]}" t')  # noqa: S608
            texts.extend(row["r"] for row in rows)
        return "\n".join(texts)
    finally:
        await conn.close()


async def test_two_officials_two_devices_each_all_read_everything(
    world: World, database_url: str
) -> None:
    a1 = await world.official_with_device("alice")
    b1 = await world.official_with_device("bob")
    assert a1.state.official_id and b1.state.official_id
    a2 = await world.enroll(await world.new_code(a1.state.official_id), "alice-laptop")
    b2 = await world.enroll(await world.new_code(b1.state.official_id), "bob-laptop")
    plaintexts = []
    # Alternate directions so the ratchet takes DH steps, from every device.
    for round_ in range(3):
        for sender, recipient, readers in (
            (a1, b1.state.official_id, (a2, b1, b2)),
            (b2, a1.state.official_id, (a1, a2, b1)),
            (a2, b1.state.official_id, (a1, b1, b2)),
            (b1, a1.state.official_id, (a1, a2, b2)),
        ):
            text = f"ความลับ round {round_} from {sender.state.device_id}".encode()
            plaintexts.append(text)
            await sender.send_message(recipient, text, f"r{round_}-{sender.state.device_id}")
            for reader in readers:
                assert await read(reader, 1) == [text]
    everything = await all_rows_text(database_url)
    for text in plaintexts:
        assert text.decode() not in everything
        assert text.hex() not in everything


async def test_client_refuses_a_device_whose_certificate_does_not_verify(world: World) -> None:
    alice = await world.official_with_device("alice")
    bob = await world.official_with_device("bob")
    assert bob.state.official_id and bob.state.device_id and world.app.db
    impostor_directory = IdentityKeyPair.generate()
    forged = issue_certificate(
        impostor_directory, bob.state.official_id, bob.state.agency_id,  # type: ignore[arg-type]
        bob.state.device_id, IdentityKeyPair.generate().public_key, int(time.time()),
    ).to_bytes()
    await world.app.db.pool.execute(
        "UPDATE devices SET certificate = $1 WHERE id = $2", forged, bob.state.device_id
    )
    with pytest.raises(CryptoError):
        await alice.send_message(bob.state.official_id, b"never", "forged-1")
    assert alice.state.devices_of(bob.state.official_id) == set()
    assert await world.app.db.pool.fetchval("SELECT count(*) FROM messages") == 0


async def test_recipient_refuses_a_session_from_an_uncertified_key(world: World) -> None:
    alice = await world.official_with_device("alice")
    bob = await world.official_with_device("bob")
    assert alice.state.certificate and bob.state.official_id
    real = DeviceCertificate.from_bytes(alice.state.certificate)
    # Alice's device presents a certificate for a key that is not hers.
    alice.state.certificate = issue_certificate(
        IdentityKeyPair.generate(), real.official_id, real.agency_id, real.device_id,
        real.identity_key, real.issued_at,
    ).to_bytes()
    accepted = await alice.send_message(bob.state.official_id, b"trust me", "bad-cert")
    assert await read(bob, 1, wait=1.0) == []
    assert bob.undecryptable == [accepted.message_id]
    assert bob.state.sessions.get(alice.state.device_id) is None  # type: ignore[arg-type]


async def test_state_survives_a_restart_of_the_client(world: World, tmp_path) -> None:  # noqa: ANN001
    from gchat.client.state import StateFile

    alice = await world.official_with_device("alice")
    bob = await world.official_with_device("bob")
    assert alice.state.official_id and bob.state.official_id
    store = StateFile.with_key_file(tmp_path / "bob.state", tmp_path / "bob.key")
    bob.store = store
    await alice.send_message(bob.state.official_id, b"one", "s1")
    assert await read(bob, 1) == [b"one"]
    await bob.send_message(alice.state.official_id, b"reply", "s2")
    assert await read(alice, 1) == [b"reply"]
    await bob.close()
    restored = Client(store.load(), store=store)
    await restored.connect()
    world.clients.append(restored)
    await restored.authenticate()
    await alice.send_message(bob.state.official_id, b"two", "s3")
    assert await read(restored, 1) == [b"two"]
    assert (tmp_path / "bob.state").stat().st_mode & 0o777 == 0o600
    assert b"identity_seed" not in (tmp_path / "bob.state").read_bytes()  # sealed at rest
    assert UUID(str(restored.state.device_id)) == bob.state.device_id
