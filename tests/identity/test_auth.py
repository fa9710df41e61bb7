"""Enrolment and authentication: what must be refused is refused."""

import asyncio
import base64
import json
import time
import uuid

import pytest
from websockets.exceptions import ConnectionClosed

from crypto.identity import IdentityKeyPair
from gchat.app import App
from gchat.client.rpc import ClientError
from gchat.client.sdk import Client
from gchat.client.state import DeviceState
from gchat.identity.tokens import TokenIssuer
from gchat.runtime.server_keys import ServerKeys
from protocol import frames as f
from tests.support import World, expect_error, node_config, url_of


async def fresh_client(world: World) -> Client:
    client = Client(DeviceState(url=world.url, identity_seed=IdentityKeyPair.generate().seed))
    await client.connect()
    world.clients.append(client)
    return client


async def test_consumed_code_cannot_enrol_again(world: World) -> None:
    official = await world.new_official("alice")
    code = await world.new_code(official)
    await world.enroll(code)
    late = await fresh_client(world)
    await expect_error("enrolment_code_invalid", late.enroll(code, "second"))


async def test_expired_and_unknown_codes_are_refused_alike(world: World) -> None:
    official = await world.new_official("alice")
    code = await world.new_code(official)
    assert world.app.db is not None
    await world.app.db.pool.execute("UPDATE enrolment_codes SET expires_at = now()")
    client = await fresh_client(world)
    await expect_error("enrolment_code_invalid", client.enroll(code, "late"))
    await expect_error("enrolment_code_invalid", client.enroll("AAAAA-BBBBB-CCCCC-DDDDD", "x"))


async def test_bad_prekey_signature_refused_without_burning_the_code(world: World) -> None:
    official = await world.new_official("alice")
    code = await world.new_code(official)
    client = await fresh_client(world)
    good = client.sessions.new_signed_prekey()
    forged = f.SignedPrekey(key_id=good.key_id, public_key=good.public_key, signature=b"\1" * 64)
    assert client.challenge is not None
    await expect_error(
        "signature_invalid",
        client.request(
            f.Enroll,
            code=code,
            identity_key=client.identity.public_key,
            signature=client.sign_challenge(),
            signed_prekey=forged,
            one_time_prekeys=[],
            device_name="x",
            platform="cli",
        ),
    )
    await client.enroll(code, "retry")  # the code still works
    assert client.state.device_id is not None


async def test_wrong_signature_and_impersonation_fail(world: World) -> None:
    alice = await world.official_with_device("alice")
    bob = await world.official_with_device("bob")
    mallory = Client(DeviceState(url=world.url, identity_seed=alice.state.identity_seed))
    mallory.state.device_id = bob.state.device_id  # claim bob's device with alice's key
    await mallory.connect()
    world.clients.append(mallory)
    await expect_error("auth_failed", mallory.authenticate(use_token=False))
    mallory.state.device_id = uuid.uuid4()  # a device that does not exist
    await expect_error("auth_failed", mallory.authenticate(use_token=False))
    # A failed attempt leaves the connection usable: alice's own device id works.
    mallory.state.device_id = alice.state.device_id
    reply = await mallory.authenticate(use_token=False)
    assert reply.device_id == alice.state.device_id


def _forge(header: dict, claims: dict, signature: bytes = b"") -> str:
    def enc(data: bytes) -> str:
        return base64.urlsafe_b64encode(data).rstrip(b"=").decode()

    return ".".join(
        [enc(json.dumps(header).encode()), enc(json.dumps(claims).encode()), enc(signature)]
    )


async def test_bad_tokens_are_refused(world: World) -> None:
    alice = await world.official_with_device("alice")
    assert alice.state.device_id and alice.state.official_id
    keys = ServerKeys.load_or_create(world.app.config.key_directory)
    server = world.app.config.server_id
    expired, _ = TokenIssuer(keys.token, server, ttl_seconds=-60).issue(
        alice.state.device_id, alice.state.official_id
    )
    other, _ = TokenIssuer(IdentityKeyPair.generate(), server, 600).issue(
        alice.state.device_id, alice.state.official_id
    )
    real = TokenIssuer(keys.token, server, 600)
    now = int(time.time())
    claims = {
        "iss": server, "aud": "gchat-ws", "sub": str(alice.state.official_id),
        "did": str(alice.state.device_id), "iat": now, "nbf": now, "exp": now + 600, "jti": "x",
    }
    alg_none = _forge({"alg": "none", "kid": real.kid}, claims)
    hs256 = _forge({"alg": "HS256", "kid": real.kid}, claims, b"\0" * 32)
    for token in (expired, other, alg_none, hs256, "not-a-jwt"):
        client = await fresh_client(world)
        await expect_error("token_invalid", client.request(f.AuthToken, token=token))


async def test_revoked_device_token_fails(world: World) -> None:
    alice = await world.official_with_device("alice")
    assert world.app.db is not None
    await world.app.db.pool.execute(
        "UPDATE devices SET status = 'revoked' WHERE id = $1", alice.state.device_id
    )
    client = Client(alice.state)
    await client.connect()
    world.clients.append(client)
    await expect_error("token_invalid", client.request(f.AuthToken, token=alice.state.token))
    await expect_error("auth_failed", client.authenticate(use_token=False))


async def test_second_connection_displaces_the_first_with_4409(world: World) -> None:
    alice = await world.official_with_device("alice")
    await world.reconnect(alice)
    with pytest.raises(ConnectionClosed):
        await asyncio.wait_for(alice.ws.wait_closed(), 5)
        await alice.ws.recv()
    assert alice.ws.close_code == 4409


async def test_a_request_only_connection_neither_displaces_nor_is_displaced(
    world: World,
) -> None:
    """An admin's long import runs on a request-only connection of the same device."""
    alice = await world.official_with_device("alice")
    tool = Client(alice.state)
    await tool.connect()
    world.clients.append(tool)
    await tool.authenticate(deliveries=False)
    # Had it displaced alice's connection, that one would be closing by now.
    await alice.request(f.GetBundle, official_id=alice.state.official_id)
    assert alice.ws.close_code is None
    # Alice's device connects again, as a phone does: the old delivery
    # connection yields (4409), the request-only one carries on.
    fresh = await world.reconnect(alice)
    await asyncio.wait_for(alice.ws.wait_closed(), 5)
    assert alice.ws.close_code == 4409
    await tool.request(f.GetBundle, official_id=alice.state.official_id)
    assert tool.ws.close_code is None
    # Revoking the device closes it like any other connection of the device.
    assert world.admin is not None
    await world.admin.request(f.RevokeDevice, device_id=alice.state.device_id)
    await asyncio.wait_for(tool.ws.wait_closed(), 5)
    assert tool.ws.close_code == 4403
    await asyncio.wait_for(fresh.ws.wait_closed(), 5)


async def test_frames_before_auth_are_refused_but_connection_lives(world: World) -> None:
    client = await fresh_client(world)
    await expect_error(
        "not_authenticated",
        client.request(f.GetBundle, official_id=uuid.uuid4()),
    )
    official = await world.new_official("late")
    await client.enroll(await world.new_code(official), "still-here")


async def test_auth_timeout_closes_with_4001(database_url: str, tmp_path) -> None:  # noqa: ANN001
    app = App(node_config(database_url, tmp_path, auth_timeout_seconds=0.3))
    await app.start()
    try:
        client = Client(DeviceState(url=url_of(app), identity_seed=b"\1" * 32))
        await client.connect()
        await asyncio.wait_for(client.ws.wait_closed(), 5)
        assert client.ws.close_code == 4001
    finally:
        await app.stop()


async def test_enrolment_attempts_are_rate_limited(world: World) -> None:
    client = await fresh_client(world)
    codes = []
    for _ in range(12):
        try:
            await client.enroll("AAAAA-AAAAA-AAAAA-AAAAA", "guess")
        except ClientError as error:
            codes.append(error.code)
    # Successful enrolments (the admin's) cost nothing; wrong codes do.
    assert codes == ["enrolment_code_invalid"] * 10 + ["rate_limited"] * 2


async def test_client_refuses_to_sign_another_deployments_challenge(world: World) -> None:
    from crypto.errors import CryptoError

    alice = await world.official_with_device("alice")
    assert alice.state.server_id == world.app.config.server_id
    alice.state.server_id = "another-deployment"  # as if this node were not ours
    client = Client(alice.state)
    await client.connect()
    world.clients.append(client)
    with pytest.raises(CryptoError):
        await client.authenticate(use_token=False)


async def _audit_rows(world: World, kind: str) -> int:
    assert world.app.db is not None
    return int(await world.app.db.pool.fetchval(
        "SELECT count(*) FROM audit_events WHERE kind = $1", kind
    ))


async def test_an_auth_flood_adds_one_audit_row_per_address_and_window(world: World) -> None:
    """200 random device ids and 100 junk tokens from one connection, as an attacker would."""
    assert world.app.failures is not None
    await world.app.failures.flush()
    before = await _audit_rows(world, "auth.failed")
    stranger = await fresh_client(world)
    replies: list[str] = []
    for i in range(300):
        try:
            if i % 3 == 2:
                await stranger.request(f.AuthToken, token=f"junk-{i}")
            else:
                await stranger.request(
                    f.Auth, device_id=uuid.uuid4(), signature=bytes(64)
                )
        except ClientError as error:
            replies.append(error.code)
    # Failures spend the address's 20 tokens; after that nothing is looked at.
    assert replies[:20] == [("token_invalid" if i % 3 == 2 else "auth_failed") for i in range(20)]
    assert set(replies[21:]) == {"rate_limited"}
    assert await _audit_rows(world, "auth.failed") == before  # nothing written per frame
    assert world.app.failures.pending == 300
    await world.app.failures.flush()
    assert await _audit_rows(world, "auth.failed") == before + 1
    assert world.app.db is not None
    entry = json.loads(bytes(await world.app.db.pool.fetchval(
        "SELECT entry FROM audit_events WHERE kind = 'auth.failed' ORDER BY id DESC LIMIT 1"
    )))
    details = entry["details"]
    assert details["remote"] == "127.0.0.1" and details["count"] == 300
    assert sum(details["reasons"].values()) == 300
    assert details["reasons"]["signature_throttled"] > 150
    assert len(details["claimed_devices"]) <= 10  # random ids cannot grow the event


async def test_a_throttled_address_is_refused_before_its_credentials_are_looked_at(
    world: World,
) -> None:
    alice = await world.official_with_device("alice")
    stranger = await fresh_client(world)
    for _ in range(21):  # past the AUTH_FAILURES bucket of this address
        with pytest.raises(ClientError):
            await stranger.request(f.AuthToken, token="forged")
    again = Client(alice.state)
    await again.connect()
    world.clients.append(again)
    # Even a valid signature gets rate_limited, with a retry_after that says when.
    error = await expect_error("rate_limited", again.authenticate(use_token=False))
    assert error.frame.retry_after is not None and 0 < error.frame.retry_after <= 31
    # The enrolment bucket is separate: a valid code from here still enrols.
    official = await world.new_official("late")
    await (await fresh_client(world)).enroll(await world.new_code(official), "ok")


async def test_a_throttled_address_cannot_enrol_even_with_a_valid_code(world: World) -> None:
    official = await world.new_official("carol")
    code = await world.new_code(official)
    client = await fresh_client(world)
    replies = []
    for i in range(60):
        try:
            await client.enroll(f"AAAAA-AAAAA-AAAAA-{i:05d}", "guess")
        except ClientError as error:
            replies.append(error.code)
    assert replies == ["enrolment_code_invalid"] * 10 + ["rate_limited"] * 50
    await expect_error("rate_limited", client.enroll(code, "right-code-too-late"))
    assert world.app.db is not None
    # The right code was not even looked up: it is still unused.
    assert await world.app.db.pool.fetchval(
        "SELECT count(*) FROM enrolment_codes WHERE official_id = $1 AND used_at IS NULL",
        official,
    ) == 1
    assert world.app.failures is not None
    before = await _audit_rows(world, "device.enrolment_refused")
    await world.app.failures.flush()
    assert await _audit_rows(world, "device.enrolment_refused") == before + 1


async def test_a_revoked_device_whose_close_signal_was_lost_cannot_send(world: World) -> None:
    alice = await world.official_with_device("alice")
    bob = await world.official_with_device("bob")
    assert bob.state.official_id is not None and world.app.db is not None
    await alice.send_message(bob.state.official_id, b"before", "before")
    # Revoked in the database only: no REVOKED signal, the connection stays open.
    await world.app.db.pool.execute(
        "UPDATE devices SET status = 'revoked' WHERE id = $1", alice.state.device_id
    )
    await expect_error("forbidden", alice.send_message(bob.state.official_id, b"after", "after"))
    assert await world.app.db.pool.fetchval(
        "SELECT count(*) FROM messages WHERE client_message_id = 'after'"
    ) == 0


async def test_the_revocation_sweep_closes_devices_whose_signal_was_lost(
    database_url: str, tmp_path  # noqa: ANN001
) -> None:
    app = App(node_config(database_url, tmp_path, revocation_sweep_seconds=0.2))
    await app.start()
    world = World(app)
    try:
        await world.start()
        alice = await world.official_with_device("alice")
        bob = await world.official_with_device("bob")
        assert app.db is not None
        # Revoked in the database only, as if the broadcast had been lost.
        await app.db.pool.execute(
            "UPDATE devices SET status = 'revoked' WHERE id = $1", alice.state.device_id
        )
        await asyncio.wait_for(alice.ws.wait_closed(), 5)
        assert alice.ws.close_code == 4403
        assert bob.ws.close_code is None  # everyone else stays connected
    finally:
        await world.close()
        await app.stop()
