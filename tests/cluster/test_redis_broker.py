"""The Redis broker in one process: two brokers stand for two nodes.

Real Redis: the shared one (isolated by ``redis_prefix``) for the normal
paths, a private redis-server for the failures: killed and restarted for the
outage, and an ACL user per node where one node alone must fail (its
PUBLISH denied, or its connections cut and its login disabled). The tests
see what a node shows: its listeners, its metrics and its log.
"""

import asyncio
import logging
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from signal import SIGCONT, SIGSTOP

import pytest
from redis.asyncio import Redis

from gchat.runtime.broker import Signal, SignalKind
from gchat.runtime.metrics import NodeMetrics
from gchat.runtime.redis_broker import RedisBroker, connect_redis
from tests.cluster.support import PrivateRedis
from tests.support import eventually, stays


class Recorder:
    def __init__(self, broker: RedisBroker | None = None) -> None:
        self.signals: list[Signal] = []
        self.event = asyncio.Event()
        self.broker = broker
        self.healthy_wakes = 0  # wake-ups received while the broker was healthy

    def __call__(self, signal: Signal) -> None:
        self.signals.append(signal)
        if signal.kind is SignalKind.WAKE and self.broker is not None and self.broker.healthy:
            self.healthy_wakes += 1
        self.event.set()

    def kinds(self) -> list[SignalKind]:
        return [s.kind for s in self.signals]

    async def until(self, predicate: Callable[[], bool], within: float = 5.0) -> None:
        async with asyncio.timeout(within):
            while not predicate():
                self.event.clear()
                await self.event.wait()


@dataclass
class Node:
    """One node's broker with the Redis client and metrics it was given."""

    broker: RedisBroker
    redis: Redis
    metrics: NodeMetrics

    def count(self, name: str) -> float:
        return self.metrics.value(name)

    async def close(self) -> None:
        await self.broker.close()
        await self.redis.aclose()


async def make_node(url: str, prefix: str, name: str, **kw: float) -> Node:
    redis, metrics = connect_redis(url, timeout=0.5), NodeMetrics()
    node = Node(RedisBroker(redis, prefix, name, metrics, **kw), redis, metrics)
    await node.broker.start(wait=5)
    return node


@pytest.fixture
async def two_nodes(redis_url: str, redis_prefix: str) -> AsyncIterator[tuple[Node, Node]]:
    a = await make_node(redis_url, redis_prefix, "node-a")
    b = await make_node(redis_url, redis_prefix, "node-b")
    try:
        yield a, b
    finally:
        await a.close()
        await b.close()


@pytest.fixture
async def redis_with_user_a() -> AsyncIterator[tuple[PrivateRedis, Redis, str]]:
    """A private Redis, an admin client on it, and the URL node a logs in with
    (ACL user ``node-a``, which the test may restrict; node b is ``default``)."""
    server = PrivateRedis()
    server.start()
    admin = Redis.from_url(server.url)
    try:
        await admin.execute_command(
            "ACL", "SETUSER", "node-a", "on", ">a-secret", "~*", "&*", "+@all"
        )
        yield server, admin, f"redis://node-a:a-secret@127.0.0.1:{server.port}/0"
    finally:
        await admin.aclose()
        server.kill()


async def subscribed(broker: RedisBroker, device: uuid.UUID, listener: Recorder) -> None:
    """Subscribe and wait for the confirmation (which wakes the listener)."""
    broker.subscribe(device, listener)
    await listener.until(lambda: SignalKind.WAKE in listener.kinds())
    listener.signals.clear()


async def test_signal_reaches_the_node_holding_the_device(two_nodes) -> None:  # noqa: ANN001
    a, b = (node.broker for node in two_nodes)
    assert a.healthy and b.healthy
    device, other = uuid.uuid4(), uuid.uuid4()
    on_b = Recorder()
    await subscribed(b, device, on_b)
    await a.publish([device, other], Signal(SignalKind.PREKEYS_LOW, 7))
    await on_b.until(lambda: bool(on_b.signals))
    assert on_b.signals == [Signal(SignalKind.PREKEYS_LOW, 7)]
    await a.publish([device], Signal(SignalKind.CONNECTED, "node-a:1"))
    await on_b.until(lambda: len(on_b.signals) == 2)
    assert on_b.signals[1] == Signal(SignalKind.CONNECTED, "node-a:1")


async def test_local_listeners_are_called_once_without_a_redis_hop(two_nodes) -> None:  # noqa: ANN001
    a = two_nodes[0].broker
    device = uuid.uuid4()
    here = Recorder()
    await subscribed(a, device, here)
    await a.publish([device], Signal(SignalKind.REVOKED))
    assert here.kinds() == [SignalKind.REVOKED]  # synchronously, before any round trip
    # Its own message comes back from Redis and is ignored.
    await stays(lambda: here.kinds() == [SignalKind.REVOKED])


async def test_unsubscribed_device_hears_nothing(two_nodes) -> None:  # noqa: ANN001
    a, b = (node.broker for node in two_nodes)
    device = uuid.uuid4()
    on_b = Recorder()
    await subscribed(b, device, on_b)
    b.unsubscribe(device, on_b)

    async def gone() -> bool:
        return await a.connected([device]) == set()

    await eventually(gone, what="Redis no longer lists b's subscription")
    await a.publish([device], Signal(SignalKind.WAKE))
    await stays(lambda: on_b.signals == [])


async def test_connected_sees_devices_on_any_node(two_nodes) -> None:  # noqa: ANN001
    a, b = (node.broker for node in two_nodes)
    here, there, nowhere = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
    on_a, on_b = Recorder(), Recorder()
    await subscribed(a, here, on_a)
    await subscribed(b, there, on_b)
    assert await a.connected([here, there, nowhere]) == {here, there}
    assert a.has_listeners(here) and not a.has_listeners(there)
    b.unsubscribe(there, on_b)


    async def gone() -> bool:
        return await a.connected([there]) == set()

    await eventually(gone)


async def test_publishes_of_a_batch_share_a_pipeline(two_nodes) -> None:  # noqa: ANN001
    node_a, node_b = two_nodes
    a, b = node_a.broker, node_b.broker
    devices = [uuid.uuid4() for _ in range(300)]
    recorders = [Recorder() for _ in devices]
    for device, recorder in zip(devices, recorders, strict=True):
        b.subscribe(device, recorder)
    await eventually(lambda: all(r.signals for r in recorders), what="every subscription confirmed")
    for recorder in recorders:
        recorder.signals.clear()
    await a.publish(devices, Signal(SignalKind.WAKE))
    for recorder in recorders:
        await recorder.until(lambda r=recorder: bool(r.signals))  # type: ignore[misc]
    # The pipeline's replies may come after the messages.
    await eventually(lambda: node_a.count("gchat_broker_published_total") == 300)
    assert node_b.count("gchat_broker_received_total") == 300


@pytest.fixture
async def private_redis() -> AsyncIterator[tuple[PrivateRedis, Redis]]:
    """A Redis of this test's own (its command counts are the test's alone), and a client."""
    server = PrivateRedis()
    server.start()
    admin = Redis.from_url(server.url)
    try:
        yield server, admin
    finally:
        await admin.aclose()
        server.kill()


async def command_calls(admin: Redis, command: str) -> int:
    stats = await admin.info("commandstats")
    return int(stats.get(f"cmdstat_{command}", {}).get("calls", 0))


async def test_a_flush_publishes_one_payload_to_many_devices_in_one_command(
    private_redis: tuple[PrivateRedis, Redis], redis_prefix: str
) -> None:
    server, admin = private_redis
    quiet = {"ping_interval": 30.0}  # no heartbeat among the counted commands
    node_a = await make_node(server.url, redis_prefix, "node-a", **quiet)
    node_b = await make_node(server.url, redis_prefix, "node-b", **quiet)
    try:
        devices = [uuid.uuid4() for _ in range(300)]
        recorders = [Recorder() for _ in devices]
        for device, recorder in zip(devices, recorders, strict=True):
            await subscribed(node_b.broker, device, recorder)
        await admin.config_resetstat()
        await node_a.broker.publish(devices, Signal(SignalKind.WAKE))
        await eventually(lambda: all(r.signals for r in recorders), what="every device woken")
        assert await command_calls(admin, "eval") == 1
        assert await command_calls(admin, "publish") == 300  # the script's, one per device
        await stays(lambda: all(r.signals == [Signal(SignalKind.WAKE)] for r in recorders))
    finally:
        await node_a.close()
        await node_b.close()


async def test_signals_flushed_together_arrive_in_the_order_they_were_published(
    two_nodes,  # noqa: ANN001
) -> None:
    a, b = (node.broker for node in two_nodes)
    device, other = uuid.uuid4(), uuid.uuid4()
    on_b, on_other = Recorder(), Recorder()
    await subscribed(b, device, on_b)
    await subscribed(b, other, on_other)
    sent = [
        Signal(SignalKind.PREKEYS_LOW, 1),
        Signal(SignalKind.WAKE),
        Signal(SignalKind.PREKEYS_LOW, 1),  # the same payload as the first, later
        Signal(SignalKind.CONNECTED, "node-a:9"),
        Signal(SignalKind.WAKE),
    ]
    for signal in sent:  # one loop turn: the flusher sends them in one pipeline
        await a.publish([device, other], signal)
    await on_b.until(lambda: len(on_b.signals) == len(sent))
    await on_other.until(lambda: len(on_other.signals) == len(sent))
    assert on_b.signals == sent
    assert on_other.signals == sent


async def test_a_redis_that_stops_answering_is_noticed_though_the_read_has_no_timeout(
    private_redis: tuple[PrivateRedis, Redis], redis_prefix: str
) -> None:
    server, _ = private_redis
    assert server.proc is not None
    fast = {"ping_interval": 0.2, "backoff_min": 0.05, "backoff_max": 0.2}
    node = await make_node(server.url, redis_prefix, "node-a", poll_interval=0.05, **fast)
    try:
        device = uuid.uuid4()
        listener = Recorder(node.broker)
        await subscribed(node.broker, device, listener)
        server.proc.send_signal(SIGSTOP)  # the TCP connection stays up, silent
        try:
            await eventually(lambda: not node.broker.healthy, within=5, what="silence noticed")
            await listener.until(lambda: len(listener.signals) >= 2)  # polled meanwhile
        finally:
            server.proc.send_signal(SIGCONT)
        await eventually(lambda: node.broker.healthy, within=10, what="back once it answers")
    finally:
        await node.close()


async def test_redis_outage_polls_then_resubscribes_and_resyncs(redis_prefix: str) -> None:
    redis = PrivateRedis()
    redis.start()
    node_a = node_b = None
    try:
        fast = {"poll_interval": 0.1, "backoff_min": 0.05, "backoff_max": 0.3,
                "ping_interval": 0.3}
        node_a = await make_node(redis.url, redis_prefix, "node-a", **fast)
        node_b = await make_node(redis.url, redis_prefix, "node-b", **fast)
        a, b = node_a.broker, node_b.broker
        device = uuid.uuid4()
        on_b = Recorder(b)
        await subscribed(b, device, on_b)

        redis.kill()
        await on_b.until(lambda: not b.healthy, within=5)
        # Degraded: node b wakes its devices itself so they read PostgreSQL.
        await on_b.until(lambda: on_b.kinds().count(SignalKind.WAKE) >= 3, within=3)
        assert node_b.count("gchat_broker_degraded_polls_total") >= 3
        await a.publish([device], Signal(SignalKind.PREKEYS_LOW, 1))  # lost: Redis is down
        assert node_a.count("gchat_broker_publish_failures_total") >= 1

        on_b.healthy_wakes = 0
        redis.start()
        await eventually(lambda: a.healthy and b.healthy, within=10)
        # Back: b resubscribed, and the confirmation woke the device (its
        # poller only wakes while degraded), so whatever was missed is read.
        await eventually(lambda: on_b.healthy_wakes >= 1, within=3, what="wake after resubscribe")
        polls = node_b.count("gchat_broker_degraded_polls_total")
        # Polling stopped: four poll intervals and not one more.
        await stays(lambda: node_b.count("gchat_broker_degraded_polls_total") == polls, 0.4)
        assert node_b.count("gchat_redis_reconnects_total") == 1
        on_b.signals.clear()
        await a.publish([device], Signal(SignalKind.REVOKED))
        await on_b.until(lambda: SignalKind.REVOKED in on_b.kinds(), within=3)
    finally:
        for node in (node_a, node_b):
            if node is not None:
                await node.close()
        redis.kill()


async def test_node_that_lost_publishes_asks_every_node_to_resync(
    redis_with_user_a: tuple[PrivateRedis, Redis, str], redis_prefix: str
) -> None:
    server, admin, url_a = redis_with_user_a
    fast = {"backoff_min": 0.05, "backoff_max": 0.2}
    node_a = await make_node(url_a, redis_prefix, "node-a", **fast)
    node_b = await make_node(server.url, redis_prefix, "node-b", **fast)
    a, b = node_a.broker, node_b.broker
    try:
        device = uuid.uuid4()
        on_b = Recorder(b)
        await subscribed(b, device, on_b)
        received = node_b.count("gchat_broker_received_total")

        await admin.execute_command("ACL", "SETUSER", "node-a", "-publish")
        await a.publish([device], Signal(SignalKind.PREKEYS_LOW, 1))  # its pipeline fails
        await eventually(lambda: node_a.count("gchat_broker_publish_failures_total") >= 1)
        await admin.execute_command("ACL", "SETUSER", "node-a", "+publish")

        # Back on a fresh connection, a asks for a resync and b wakes its devices.
        await eventually(
            lambda: node_b.count("gchat_broker_received_total") > received, what="resync"
        )
        await on_b.until(lambda: SignalKind.WAKE in on_b.kinds())
        assert SignalKind.PREKEYS_LOW not in on_b.kinds()  # that one was lost: only a hint
        await eventually(lambda: a.healthy)
        resyncs = node_b.count("gchat_broker_received_total")
        await stays(lambda: node_b.count("gchat_broker_received_total") == resyncs)  # just once
    finally:
        await node_a.close()
        await node_b.close()


async def test_a_node_falling_silent_makes_the_others_wake_their_devices(
    redis_with_user_a: tuple[PrivateRedis, Redis, str],
    redis_prefix: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    server, admin, url_a = redis_with_user_a
    caplog.set_level(logging.INFO, logger="gchat.runtime.redis_broker")
    fast = {"ping_interval": 0.2}
    node_a = await make_node(url_a, redis_prefix, "node-a", **fast)
    node_b = await make_node(server.url, redis_prefix, "node-b", **fast)
    b = node_b.broker

    def logged(words: str) -> bool:
        return any(
            r.getMessage().startswith("node node-a#") and words in r.getMessage()
            for r in caplog.records
        )

    try:
        device = uuid.uuid4()
        on_b = Recorder(b)
        await subscribed(b, device, on_b)
        await eventually(lambda: logged("is alive"), what="b hears a's heartbeat")
        # a vanishes as if killed: its connections cut, and it cannot log in again.
        await admin.execute_command("ACL", "SETUSER", "node-a", "off")
        await admin.execute_command("CLIENT", "KILL", "USER", "node-a")
        await eventually(lambda: logged("went silent"), within=10, what="b notices a's silence")
        assert SignalKind.WAKE in on_b.kinds()  # woken with it, synchronously
    finally:
        await node_a.close()
        await node_b.close()


async def test_node_starts_degraded_when_redis_is_down(redis_prefix: str) -> None:
    redis = PrivateRedis()  # a free port with nothing listening yet
    client = connect_redis(redis.url, timeout=0.3)
    broker = RedisBroker(client, redis_prefix, "n",
                         poll_interval=0.05, backoff_min=0.05, backoff_max=0.2)
    try:
        await broker.start(wait=0.3)
        assert not broker.healthy
        device = uuid.uuid4()
        listener = Recorder()
        broker.subscribe(device, listener)
        await listener.until(lambda: len(listener.signals) >= 2, within=2)  # polled
        redis.start()
        await eventually(lambda: broker.healthy, within=10)
    finally:
        await broker.close()
        await client.aclose()
        redis.kill()
