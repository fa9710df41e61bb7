"""Pairwise send, durable inbox, delivery and acks against a real node."""

import asyncio
from uuid import uuid4

import asyncpg

from gchat.client.rpc import ClientError
from gchat.client.sdk import Client
from protocol import frames as f
from tests.support import World, drain, eventually, stays, unread


async def db_holds(pool: asyncpg.Pool, query: str, wait: float = 5.0) -> None:
    """Poll until ``query`` is true (acks are processed asynchronously)."""
    await eventually(lambda: pool.fetchval(query), within=wait, what=query)


async def next_of(client: Client, kind: type, wait: float = 5.0) -> object:
    while True:
        frame = await client.receive(wait)
        if isinstance(frame, kind):
            return frame


async def test_offline_recipient_gets_each_message_once_in_order(world: World) -> None:
    alice = await world.official_with_device("alice")
    bob = await world.official_with_device("bob")
    assert bob.state.official_id is not None
    await bob.close()  # bob goes offline
    for i in range(5):
        await alice.send_message(bob.state.official_id, f"m{i}".encode(), f"cid-{i}")

    bob2 = await world.reconnect(bob)
    delivered = await drain(bob2, 5)
    opened = [(await bob2.open(d)).plaintext for d in delivered]  # type: ignore[union-attr]
    assert opened == [f"m{i}".encode() for i in range(5)]
    positions = [d.position for d in delivered]
    assert positions == sorted(positions)
    assert isinstance(await next_of(bob2, f.QueueEmpty), f.QueueEmpty)
    await bob2.close()
    assert world.app.db is not None
    await db_holds(world.app.db.pool, "SELECT count(*) = 0 FROM inbox")

    bob3 = await world.reconnect(bob)  # acked envelopes are gone for good
    assert isinstance(await bob3.receive(5), f.QueueEmpty)
    assert bob3.pushed.empty()


async def test_online_recipient_is_pushed_and_queue_empty_comes_first(world: World) -> None:
    alice = await world.official_with_device("alice")
    bob = await world.official_with_device("bob")
    assert isinstance(await next_of(bob, f.QueueEmpty), f.QueueEmpty)
    assert bob.state.official_id is not None
    await alice.send_message(bob.state.official_id, b"live", "live-1")
    [delivered] = await drain(bob, 1)
    received = await bob.open(delivered)
    assert received.plaintext == b"live"
    assert received.sender_official == alice.state.official_id
    assert received.sender_device == alice.state.device_id


async def test_retry_with_same_client_id_stores_nothing_twice(world: World) -> None:
    alice = await world.official_with_device("alice")
    bob = await world.official_with_device("bob")
    assert bob.state.official_id is not None
    first = await alice.send_message(bob.state.official_id, b"once", "retry-me")
    await alice.close()  # the connection drops before the client saw... anything
    alice2 = await world.reconnect(alice)
    again = await alice2.send_message(bob.state.official_id, b"once", "retry-me")
    assert again.message_id == first.message_id
    assert again.server_time == first.server_time
    assert world.app.db is not None
    count = await world.app.db.pool.fetchval(
        "SELECT count(*) FROM inbox WHERE message_id = $1", first.message_id
    )
    assert count == 1
    assert await world.app.db.pool.fetchval(  # the retry logged nothing
        "SELECT count(*) FROM audit_events WHERE kind = 'message.accepted'") == 1
    delivered = await drain(bob, 1)
    assert [d.message_id for d in delivered] == [first.message_id]
    await stays(lambda: not unread(bob, f.Deliver))  # and no second copy follows


async def _alice_and_bob(world: World) -> tuple[Client, Client, list[f.Envelope]]:
    """Alice with a session to Bob, and one envelope of b"x" for each of his devices."""
    alice = await world.official_with_device("alice")
    bob = await world.official_with_device("bob")
    assert bob.state.official_id is not None
    await alice.sessions.establish(bob.state.official_id)
    envelopes = [
        f.Envelope(device_id=d, ciphertext=alice.sessions.encrypt_for(d, b"x"))
        for d in alice.state.devices_of(bob.state.official_id)
    ]
    return alice, bob, envelopes


async def test_concurrent_retries_in_one_batch_store_once(world: World) -> None:
    alice, bob, envelopes = await _alice_and_bob(world)
    second = await world.reconnect(alice)
    replies = await asyncio.gather(
        *(
            c.request(f.Send, client_message_id="same", recipient=bob.state.official_id,
                      envelopes=envelopes)
            for c in (alice, second)
        ),
        return_exceptions=True,
    )
    accepted = [r for r in replies if isinstance(r, f.Accepted)]
    assert accepted and len({a.message_id for a in accepted}) == 1
    assert world.app.db is not None
    assert await world.app.db.pool.fetchval("SELECT count(*) FROM messages") == 1
    assert await world.app.db.pool.fetchval(  # and one audit event for it
        "SELECT count(*) FROM audit_events WHERE kind = 'message.accepted'") == 1


async def test_pipelined_sends_are_answered_in_order_refusals_included(world: World) -> None:
    """Each answer is written when its commit is done (from the commit's callback,
    or by a task if the socket must drain first): still one per send, in order."""
    alice, bob, envelopes = await _alice_and_bob(world)
    stale = [f.Envelope(device_id=uuid4(), ciphertext=b"x")]  # refused by the commit's check
    answered: list[int] = []
    replies = []
    for i in range(40):
        reply = await alice.rpc.submit(
            f.Send, client_message_id=f"p{i}", recipient=bob.state.official_id,
            envelopes=stale if i % 10 == 3 else envelopes,
        )
        reply.add_done_callback(lambda _, i=i: answered.append(i))
        replies.append(reply)
    results = await asyncio.gather(*replies, return_exceptions=True)
    assert answered == list(range(40))
    for i, result in enumerate(results):
        if i % 10 == 3:
            assert isinstance(result, ClientError) and result.code == "device_mismatch"
        else:
            assert isinstance(result, f.Accepted), result
    assert world.app.db is not None
    assert await world.app.db.pool.fetchval("SELECT count(*) FROM messages") == 36


async def test_sends_whose_connection_closes_before_their_commit_are_stored(
    world: World,
) -> None:
    alice, bob, envelopes = await _alice_and_bob(world)
    for i in range(20):
        await alice.rpc.submit(
            f.Send, client_message_id=f"c{i}", recipient=bob.state.official_id,
            envelopes=envelopes,
        )
    await alice.close()  # before (most of) their answers could be written
    assert world.app.db is not None
    await db_holds(world.app.db.pool, "SELECT count(*) = 20 FROM messages")
    assert len(await drain(bob, 20)) == 20
    again = await world.reconnect(alice)  # the node answers as before
    accepted = await again.request(
        f.Send, client_message_id="c0", recipient=bob.state.official_id, envelopes=envelopes
    )
    assert isinstance(accepted, f.Accepted)


async def test_stale_or_incomplete_device_list_is_refused_and_nothing_stored(
    world: World,
) -> None:
    alice = await world.official_with_device("alice")
    bob = await world.official_with_device("bob")
    bob_official = bob.state.official_id
    assert bob_official is not None
    bob_second = await world.enroll(await world.new_code(bob_official), "bob-tablet")
    keys = await alice.sessions.device_keys(bob_official)
    only_first = [
        f.Envelope(device_id=bob.state.device_id, ciphertext=b"c")  # type: ignore[arg-type]
    ]
    bogus = alice.state.agency_id  # a UUID that is no device
    try:
        await alice.request(
            f.Send,
            client_message_id="mismatch",
            recipient=bob_official,
            envelopes=[*only_first, f.Envelope(device_id=bogus, ciphertext=b"c")],  # type: ignore[arg-type]
        )
        raise AssertionError("accepted a mismatched device list")
    except ClientError as error:
        assert error.code == "device_mismatch"
        assert error.frame.missing == [bob_second.state.device_id]
        assert error.frame.stale == [bogus]
    assert set(keys) == {bob.state.device_id, bob_second.state.device_id}
    assert world.app.db is not None
    assert await world.app.db.pool.fetchval("SELECT count(*) FROM messages") == 0
    assert await world.app.db.pool.fetchval("SELECT count(*) FROM inbox") == 0


async def test_sender_own_other_devices_get_a_copy(world: World) -> None:
    alice = await world.official_with_device("alice")
    assert alice.state.official_id is not None
    alice_laptop = await world.enroll(await world.new_code(alice.state.official_id), "laptop")
    bob = await world.official_with_device("bob")
    assert bob.state.official_id is not None
    await alice.send_message(bob.state.official_id, b"to bob", "sync-1")
    [mine] = await drain(alice_laptop, 1)
    assert (await alice_laptop.open(mine)).plaintext == b"to bob"
    [theirs] = await drain(bob, 1)
    assert theirs.message_id == mine.message_id


async def test_window_bounds_unacked_envelopes(database_url: str, tmp_path) -> None:  # noqa: ANN001
    from gchat.app import App
    from tests.support import World, node_config

    app = App(node_config(database_url, tmp_path, max_unacked=3))
    await app.start()
    world = World(app)
    try:
        await world.start()
        alice = await world.official_with_device("alice")
        bob = await world.official_with_device("bob")
        assert bob.state.official_id is not None
        for i in range(6):
            await alice.send_message(bob.state.official_id, b"w", f"w{i}")
        await eventually(lambda: len(unread(bob, f.Deliver)) == 3)
        await stays(lambda: len(unread(bob, f.Deliver)) == 3)  # no more until an ack makes room
        await drain(bob, 6)
    finally:
        await world.close()
        await app.stop()


async def test_ack_cannot_delete_another_devices_envelopes(world: World) -> None:
    alice = await world.official_with_device("alice")
    bob = await world.official_with_device("bob")
    carol = await world.official_with_device("carol")
    assert bob.state.official_id is not None
    await alice.send_message(bob.state.official_id, b"for bob", "a1")
    assert world.app.db is not None
    position = await world.app.db.pool.fetchval(
        "SELECT position FROM inbox WHERE device_id = $1", bob.state.device_id
    )
    await carol.ack([position])
    pool = world.app.db.pool

    async def bobs_envelope_kept() -> bool:
        count = await pool.fetchval(
            "SELECT count(*) FROM inbox WHERE device_id = $1", bob.state.device_id
        )
        return bool(count == 1)

    await stays(bobs_envelope_kept)


async def test_expired_envelopes_are_not_delivered_and_are_removed(world: World) -> None:
    alice = await world.official_with_device("alice")
    bob = await world.official_with_device("bob")
    assert bob.state.official_id is not None and world.app.db is not None
    await bob.close()
    await alice.send_message(bob.state.official_id, b"old", "old-1")
    await world.app.db.pool.execute("UPDATE inbox SET expires_at = now() - interval '1 second'")
    from datetime import UTC, datetime

    from gchat.store import messages

    removed, _ = await messages.expire(world.app.db.pool, datetime.now(UTC))
    assert removed == 1
    bob2 = await world.reconnect(bob)
    assert isinstance(await bob2.receive(5), f.QueueEmpty)


async def test_database_holds_only_ciphertext(world: World, database_url: str) -> None:
    alice = await world.official_with_device("alice")
    bob = await world.official_with_device("bob")
    assert bob.state.official_id is not None
    secret = "ลับมาก top-secret budget figures 8472".encode()
    await alice.send_message(bob.state.official_id, secret, "secret-1")
    await drain(bob, 0)  # leave it queued: the ciphertext is in the database
    conn = await asyncpg.connect(database_url)
    try:
        tables = await conn.fetch(
            "SELECT tablename FROM pg_tables WHERE schemaname = 'public'"
        )
        stored_rows = 0
        for table in tables:
            rows = await conn.fetch(f'SELECT t::text AS row FROM "{table["tablename"]}" t')  # noqa: S608
            for row in rows:
                stored_rows += 1
                text = row["row"]
                assert secret.decode() not in text
                assert secret.hex() not in text  # bytea renders as hex
        assert stored_rows > 0
        ciphertexts = await conn.fetch("SELECT ciphertext FROM inbox")
        assert ciphertexts and all(secret not in bytes(c["ciphertext"]) for c in ciphertexts)
    finally:
        await conn.close()


async def test_inbox_depth_is_exposed_for_monitoring(world: World) -> None:
    import urllib.request

    from gchat.store import messages

    alice = await world.official_with_device("alice")
    bob = await world.official_with_device("bob")
    assert bob.state.official_id is not None and world.app.db is not None
    await bob.close()
    for i in range(3):
        await alice.send_message(bob.state.official_id, b"queued", f"q{i}")
    pool = world.app.db.pool
    # An idle PostgreSQL backend publishes its table counts only after 10 s
    # (a busy one within 1 s), or when it ends: renew the pool's idle
    # connections (an expired one is replaced when acquired; the pool hands
    # out the last one back first, so take them all at once), so the backends
    # that inserted end now instead of the test waiting 10 s.
    await pool.expire_connections()
    renewed = [await pool.acquire() for _ in range(pool.get_idle_size())]
    for connection in renewed:
        await pool.release(connection)

    async def estimate_is_three() -> bool:
        return bool(await messages.inbox_size_estimate(pool) == 3)

    await eventually(estimate_is_three, within=15, step=0.05, what="statistics never caught up")
    url = f"http://127.0.0.1:{world.app.port}/metrics"

    def scrape() -> str:
        with urllib.request.urlopen(url) as response:  # noqa: S310
            return str(response.read().decode())

    text = await asyncio.to_thread(scrape)
    assert "# TYPE gchat_inbox_envelopes_estimate gauge" in text


async def test_a_live_recipient_gets_committed_rows_without_an_inbox_read(world: World) -> None:
    """A commit hands its rows to the recipient's connection on this node: the
    inbox is not read back, and what is pushed is what a read would give."""
    alice = await world.official_with_device("alice")
    bob = await world.official_with_device("bob")
    assert isinstance(await next_of(bob, f.QueueEmpty), f.QueueEmpty)
    assert bob.state.official_id is not None
    registry = world.app.metrics.registry

    def count(name: str) -> float:
        return registry.get_sample_value(name) or 0.0

    reads = count("gchat_inbox_reads_total")
    handed = count("gchat_deliveries_handed_over_total")
    for i in range(3):
        await alice.send_message(bob.state.official_id, f"h{i}".encode(), f"h{i}")
    live = []
    while len(live) < 3:
        frame = await bob.receive(5)
        if isinstance(frame, f.Deliver):
            live.append(frame)  # not acked: a new connection gets them from the inbox
    assert count("gchat_deliveries_handed_over_total") - handed == 3
    assert count("gchat_inbox_reads_total") == reads
    assert [(await bob.open(d)).plaintext for d in live] == [b"h0", b"h1", b"h2"]

    bob2 = await world.reconnect(bob)
    read = await drain(bob2, 3)
    assert read == live  # position, ids, sender, sent_at, ciphertext, kind: all equal
    assert count("gchat_inbox_reads_total") > reads
    await stays(lambda: count("gchat_inbox_reads_total") == reads + 1)  # acks read nothing


async def test_a_connection_owed_65_answers_is_not_read_until_one_is_given(
    world: World,
) -> None:
    """Backpressure on a client that pipelines: once a 65th send arrives
    while 64 wait for their commit (held up here by a lock on
    ``messages``), the node reads nothing more from the connection, so a
    request behind them waits too; behind 64, such a request is answered
    at once."""
    alice, bob, envelopes = await _alice_and_bob(world)
    assert world.app.db is not None and bob.state.official_id is not None

    def send(i: int) -> "asyncio.Future[object]":
        return alice.rpc.submit(
            f.Send, client_message_id=f"w{i}", recipient=bob.state.official_id,
            envelopes=envelopes,
        )

    async with world.app.db.pool.acquire() as lock, lock.transaction():
        await lock.execute("LOCK TABLE messages IN EXCLUSIVE MODE")
        sends = [await send(i) for i in range(64)]
        read = await alice.rpc.submit(f.GetBundle, official_id=bob.state.official_id)
        await eventually(read.done, what="a request behind 64 waiting sends")
        sends.append(await send(64))
        behind = await alice.rpc.submit(f.GetBundle, official_id=bob.state.official_id)
        await stays(lambda: not behind.done() and not any(s.done() for s in sends))
    # The lock is gone: the commits go through, and reading resumes.
    assert isinstance(await behind, f.Bundle)
    assert all(isinstance(a, f.Accepted) for a in await asyncio.gather(*sends))


async def test_a_device_named_twice_is_refused_and_nothing_stored(world: World) -> None:
    alice = await world.official_with_device("alice")
    bob = await world.official_with_device("bob")
    assert bob.state.official_id is not None
    twice = [
        f.Envelope(device_id=bob.state.device_id, ciphertext=b"c")  # type: ignore[arg-type]
    ] * 2
    try:
        await alice.request(
            f.Send, client_message_id="twice", recipient=bob.state.official_id, envelopes=twice
        )
        raise AssertionError("accepted a device named twice")
    except ClientError as error:
        assert error.code == "invalid_field"
        assert "twice" in str(error)
    assert world.app.db is not None
    assert await world.app.db.pool.fetchval("SELECT count(*) FROM messages") == 0
