"""Signals between nodes over Redis pub/sub (redis.asyncio with hiredis).

Design: **one channel per device**, ``<prefix>dev:<device id>``, and one
pub/sub connection per node that is SUBSCRIBEd to exactly the devices
connected to this node (plus the cluster channel ``<prefix>cluster``).

Why per-device channels rather than one channel per node plus a
device->node map:

- Redis does the routing. A publisher needs to know nothing about where a
  device is; there is no map to write on every connect and disconnect, to
  expire when a node dies without cleaning up, or to get wrong during a
  displacement (the same device briefly on two nodes: both are subscribed,
  both hear CONNECTED, the older one yields).
- A node that dies takes its subscriptions with its TCP connection: nothing
  stale is left behind, and nothing has to be repaired when it comes back.
- The cost is one SUBSCRIBE per connecting device and one PUBLISH per
  recipient device per commit. Subscriptions are sent in batches from one
  task (a connect storm becomes a few multi-channel SUBSCRIBEs), and the
  PUBLISHes of a whole commit batch go out as one script call (``EVAL``,
  one PUBLISH per channel inside Redis), not one command and round trip
  each. Redis handles hundreds of thousands of channels and messages a
  second, far beyond what one PostgreSQL primary commits. (With a device
  map, a wake-up would cost a map lookup per device and still a publish per
  node: no cheaper for 1:1 traffic.) With Redis Cluster, sharded pub/sub
  (SSUBSCRIBE/SPUBLISH) keeps the same design scalable; not done here.

Delivery guarantees, since Redis pub/sub is at-most-once: a signal is only
a hint; envelopes are in PostgreSQL. Every way a wake-up can be lost is
covered by a later inbox read:

- listeners on this node are called directly by ``publish`` (no Redis hop;
  this node's own messages coming back from Redis are ignored);
- when a device channel's SUBSCRIBE is confirmed, its listeners are woken,
  so anything committed before the subscription took effect is read;
- while Redis is unreachable (``healthy`` False) every local listener is
  woken every ``poll_interval`` (250 ms), so delivery goes on from
  PostgreSQL; the node reconnects with jittered exponential backoff and
  resubscribes (which wakes every device again, see above);
- a node that could not publish (Redis down, or a failed pipeline) sends a
  ``resync`` on the cluster channel once it is back, and every node then
  wakes all of its devices;
- every node says ``alive`` on the cluster channel each ``ping_interval``;
  when a node falls silent (killed between a commit and its PUBLISH, say),
  the others wake all of their devices once.

Revocations (SignalKind.REVOKED) and displacements (CONNECTED) travel on
the same device channels.
"""

import asyncio
import contextlib
import json
import logging
import math
from collections.abc import Iterable
from uuid import UUID

from redis.asyncio import Redis
from redis.asyncio.client import PubSub
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from gchat.runtime.broker import Listener, Signal, SignalKind
from gchat.runtime.metrics import NodeMetrics
from gchat.runtime.redis_pool import IdlePool
from gchat.runtime.relayed_broker import ALIVE, RESYNC, RelayedBroker

log = logging.getLogger("gchat.runtime.redis_broker")

#: Publishes waiting for the flusher beyond this are dropped (and a resync
#: is sent later): memory stays bounded when Redis is slow.
MAX_OUTBOX = 200_000

#: Decoded payloads kept (``_on_message``); all are forgotten when full.
_HEARD_PAYLOADS = 64

#: PUBLISHes its first argument to each of the channels that follow; returns
#: how many channels it published to (``_publish_chunk_once``).
_PUBLISH_ALL = (
    "for i = 2, #ARGV do redis.call('PUBLISH', ARGV[i], ARGV[1]) end return #ARGV - 1"
)


def connect_redis(url: str, timeout: float = 1.0, max_connections: int = 32) -> Redis:
    """A client for ``url`` that fails fast instead of retrying on its own.

    The broker and the rate limiter each decide what to do when Redis is
    unreachable (poll PostgreSQL, count locally), so a command must not
    hang in redis-py's own retry loop meanwhile.  At most
    ``max_connections`` (the pub/sub one included; a command beyond them
    waits up to ``timeout`` for one, then fails as if Redis were down),
    closed again when idle (:class:`~gchat.runtime.redis_pool.IdlePool`:
    the node runs its reaper).
    """
    pool = IdlePool.from_url(
        url,
        max_connections=max_connections,
        timeout=timeout,
        socket_connect_timeout=timeout,
        socket_timeout=timeout,
        socket_keepalive=True,
        retry=Retry(NoBackoff(), 0),
        decode_responses=False,
    )
    client: Redis = Redis.from_pool(pool)
    return client


def _chunks(items: list[bytes], size: int) -> Iterable[list[bytes]]:
    for i in range(0, len(items), size):
        yield items[i : i + size]


class RedisBroker(RelayedBroker[tuple[bytes, bytes]]):
    """The ``Broker`` for many nodes: per-device channels on one Redis.

    The recovery rules are ``RelayedBroker``'s; this class holds the
    subscriptions, the pipelined PUBLISHes and presence by ``PUBSUB NUMSUB``.
    """

    log = log
    task_name = "redis-broker"
    peer = "node"
    transport = "redis pub/sub"
    degraded_at_start = (
        "redis unreachable at start: node runs degraded, polling PostgreSQL "
        "every %.0f ms until it connects"
    )

    def __init__(
        self,
        redis: Redis,
        prefix: str,
        node_id: str,
        metrics: NodeMetrics | None = None,
        *,
        poll_interval: float = 0.25,
        backoff_min: float = 0.1,
        backoff_max: float = 2.0,
        ping_interval: float = 1.0,
        subscribe_chunk: int = 500,
        publish_chunk: int = 1000,
    ) -> None:
        super().__init__(
            node_id,
            metrics,
            poll_interval=poll_interval,
            backoff_min=backoff_min,
            backoff_max=backoff_max,
            ping_interval=ping_interval,
        )
        self._redis = redis
        self._prefix = prefix
        self._device_prefix = f"{prefix}dev:".encode()
        self._cluster = f"{prefix}cluster".encode()
        self._subscribe_chunk = subscribe_chunk
        self._publish_chunk = publish_chunk
        self._dirty: set[UUID] = set()  # devices whose subscription may need changing
        self._subscribed: set[UUID] = set()
        #: The subscribed devices by channel: a message names its device
        #: without a UUID being parsed.
        self._channels: dict[bytes, UUID] = {}
        #: Payloads heard, decoded (origin, kind, the signal if it is one): a
        #: commit batch's wake-ups from one node all carry the same one.
        self._heard: dict[bytes, tuple[str, str, Signal | None]] = {}
        self._changed = asyncio.Event()
        self._recycle = asyncio.Event()
        self._metrics.redis_up.set(0)

    # --- Broker -------------------------------------------------------------

    def subscribe(self, device_id: UUID, listener: Listener) -> None:
        first = not self._local.has_listeners(device_id)
        self._local.subscribe(device_id, listener)
        if first:
            self._dirty.add(device_id)
            self._changed.set()

    def unsubscribe(self, device_id: UUID, listener: Listener) -> None:
        self._local.unsubscribe(device_id, listener)
        if not self._local.has_listeners(device_id):
            self._dirty.add(device_id)
            self._changed.set()

    async def connected(self, device_ids: Iterable[UUID]) -> set[UUID]:
        """Devices listening here, or on a node SUBSCRIBEd to their channel.

        One ``PUBSUB NUMSUB`` for the devices not connected here: the
        subscriptions this broker keeps are the presence record, so nothing
        is written on connect and nothing is left stale when a node dies.
        A device that connected a moment ago may not be subscribed yet (one
        push too many, never a message lost). Redis unreachable: this node's
        devices only. (On Redis Cluster NUMSUB counts one shard's clients.)
        """
        ids = set(device_ids)
        here = {d for d in ids if self._local.has_listeners(d)}
        others = [d for d in ids if d not in here]
        if not others or not self._healthy:
            return here
        channels = [self._device_prefix + str(d).encode() for d in others]
        try:
            counts = await self._redis.pubsub_numsub(*channels)
        except Exception as error:  # noqa: BLE001 - presence is a hint
            log.debug("presence lookup failed (%s)", _describe(error))
            return here
        return here | {d for d, (_, n) in zip(others, counts, strict=True) if int(n) > 0}

    # --- publishing -----------------------------------------------------------

    def _room_for(self, devices: int) -> bool:
        # Down, a PUBLISH would fail: counted as lost now, resynced once back.
        return self._healthy and len(self._outbox) + devices <= MAX_OUTBOX

    def _queue(self, device_ids: list[UUID], signal: Signal) -> None:
        payload = json.dumps([self._node, signal.kind.value, signal.value]).encode()
        self._outbox.extend((self._device_prefix + str(d).encode(), payload) for d in device_ids)

    def _control(self, kind: str) -> tuple[bytes, bytes]:
        return self._cluster, json.dumps([self._node, kind, None]).encode()

    async def _flush(self, batch: list[tuple[bytes, bytes]]) -> None:
        if not self._healthy:
            self._missed = True
            self._metrics.broker_publish_failures.inc(len(batch))
            return
        sent = 0
        try:
            for start in range(0, len(batch), self._publish_chunk):
                chunk = batch[start : start + self._publish_chunk]
                try:
                    await self._publish_chunk_once(chunk)
                except Exception:
                    # Once more on a fresh connection: after a Redis restart
                    # the pool's idle connections are dead, and the first use
                    # of each fails. (A repeated PUBLISH is a harmless hint.)
                    await self._publish_chunk_once(chunk)
                sent += len(chunk)
                self._metrics.broker_published.inc(
                    sum(1 for channel, _ in chunk if channel != self._cluster)
                )
        except Exception as error:
            self._missed = True
            self._metrics.broker_publish_failures.inc(len(batch) - sent)
            log.warning("redis publish failed (%s): reconnecting", _describe(error))
            self._set_healthy(False, f"publish failed: {_describe(error)}")
            self._recycle.set()

    async def _publish_chunk_once(self, chunk: list[tuple[bytes, bytes]]) -> None:
        """One ``EVAL`` per run of items with one payload, all in one pipeline.

        A commit batch's wake-ups all carry the same payload, so they become
        one command whose script PUBLISHes to each channel: with a PUBLISH
        per device, packing the commands and parsing their replies in
        redis-py was about 8% of a sending node's CPU in the cluster
        scenario. Runs keep the queue's order, so one device's signals
        still arrive in the order they were published. (``EVAL``, not
        ``EVALSHA``: Redis caches the script by its hash, and nothing has to
        be loaded again after a Redis restart.)
        """
        runs: list[tuple[bytes, list[bytes]]] = []
        for channel, payload in chunk:
            if runs and runs[-1][0] == payload:
                runs[-1][1].append(channel)
            else:
                runs.append((payload, [channel]))
        async with self._redis.pipeline(transaction=False) as pipe:
            for payload, channels in runs:
                pipe.execute_command("EVAL", _PUBLISH_ALL, 0, payload, *channels)
            await pipe.execute()

    # --- subscribing ------------------------------------------------------------

    async def _supervise(self) -> None:
        """Keep one pub/sub connection up: connect, subscribe, read; on failure back off."""
        attempt = 0
        while not self._closing:
            pubsub = self._redis.pubsub(ignore_subscribe_messages=False)
            reason = "connection lost"
            try:
                self._recycle.clear()
                self._subscribed = set()
                self._channels = {}
                self._dirty = set(self._local.devices())
                self._last_heard = asyncio.get_running_loop().time()
                await pubsub.subscribe(self._cluster)
                await self._sync(pubsub)
                attempt = 0
                await self._run_connected(pubsub)
            except asyncio.CancelledError:
                raise
            except Exception as error:
                reason = _describe(error)
            finally:
                with contextlib.suppress(Exception):
                    await pubsub.aclose()
            if self._closing:
                break
            if self._healthy:
                log.warning("redis pub/sub lost (%s)", reason)
            self._set_healthy(False, reason)
            await self._back_off(attempt)
            attempt += 1
            log.debug("redis reconnect attempt %d", attempt)

    async def _run_connected(self, pubsub: PubSub) -> None:
        reader = asyncio.create_task(self._read(pubsub))
        manager = asyncio.create_task(self._manage(pubsub))
        try:
            done, _ = await asyncio.wait({reader, manager}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in (reader, manager):
                task.cancel()
            await asyncio.gather(reader, manager, return_exceptions=True)
        for task in done:
            error = task.exception()
            if error is not None:
                raise error
        raise ConnectionError("pub/sub stopped")

    async def _read(self, pubsub: PubSub) -> None:
        """Hear each reply on the pub/sub connection, read straight from it.

        Not ``PubSub.get_message``: per message it started a read timeout
        (a timer), went through the retry wrapper and built a dict, and in
        the cluster scenario that machinery was about 14% of a receiving
        node's CPU. The read blocks without a timeout: ``_manage`` pings
        every ``ping_interval`` and ends the connection when no reply (a
        PONG at least) was heard for three of them.
        """
        loop = asyncio.get_running_loop()
        connection = pubsub.connection
        assert connection is not None  # subscribed to the cluster channel first
        while True:
            reply = await connection.read_response(
                timeout=math.inf, disconnect_on_error=False, push_request=True
            )
            self._last_heard = loop.time()
            if isinstance(reply, list) and len(reply) == 3 and reply[0] == b"message":
                self._on_message(reply[1], reply[2])
                continue
            # Anything else (a confirmation, a PONG) is rare: redis-py keeps
            # its record of the subscriptions from it.
            message = await pubsub.handle_message(reply)
            if message is not None and message["type"] == "subscribe":
                channel = message["channel"]
                if channel == self._cluster:
                    self._set_healthy(True)
                else:
                    device = self._device_of(channel)
                    if device is not None:
                        # Anything committed before this subscription took
                        # effect was published into the void: read it now.
                        self._local.deliver([device], Signal(SignalKind.WAKE))

    async def _manage(self, pubsub: PubSub) -> None:
        """Apply subscription changes in batches; ping; notice a silent Redis."""
        loop = asyncio.get_running_loop()
        last_ping = loop.time()
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait(), self._ping_interval)
            if self._recycle.is_set():
                raise ConnectionError("reconnect requested")
            await self._sync(pubsub)
            now = loop.time()
            if now - last_ping >= self._ping_interval:
                last_ping = now
                await pubsub.ping()
                self._enqueue(ALIVE)
            if now - self._last_heard > 3 * self._ping_interval + 1:
                raise ConnectionError("redis stopped answering pings")

    async def _sync(self, pubsub: PubSub) -> None:
        self._changed.clear()
        dirty, self._dirty = self._dirty, set()
        add = [d for d in dirty if self._local.has_listeners(d) and d not in self._subscribed]
        remove = [d for d in dirty if not self._local.has_listeners(d) and d in self._subscribed]
        try:
            channels = {self._device_prefix + str(d).encode(): d for d in add}
            for chunk in _chunks(list(channels), self._subscribe_chunk):
                await pubsub.subscribe(*chunk)
            self._subscribed.update(add)
            self._channels.update(channels)
            gone = [self._device_prefix + str(d).encode() for d in remove]
            for chunk in _chunks(gone, self._subscribe_chunk):
                await pubsub.unsubscribe(*chunk)
            self._subscribed.difference_update(remove)
            for channel in gone:
                self._channels.pop(channel, None)
        except BaseException:
            self._dirty |= dirty  # retried on the next connection
            raise

    def _device_of(self, channel: bytes) -> UUID | None:
        device = self._channels.get(channel)
        if device is not None:
            return device
        if not channel.startswith(self._device_prefix):
            return None
        try:
            return UUID(channel[len(self._device_prefix) :].decode())
        except ValueError:
            return None

    def _on_message(self, channel: bytes, data: bytes) -> None:
        heard = self._heard.get(data)
        if heard is None:
            try:
                origin, kind, value = json.loads(data)
            except (ValueError, TypeError):
                log.warning("malformed broker message on %r", channel)
                return
            try:
                signal: Signal | None = Signal(SignalKind(kind), value)
            except ValueError:
                signal = None  # a control message, or a kind this node does not know
            if len(self._heard) >= _HEARD_PAYLOADS:
                self._heard.clear()
            heard = self._heard[data] = (origin, kind, signal)
        origin, kind, signal = heard
        if origin == self._node:
            return  # our own: local listeners were called when it was published
        if channel == self._cluster and kind == ALIVE:
            self._heard_alive(origin)
            return
        self._metrics.broker_received.inc()
        if channel == self._cluster:
            if kind == RESYNC:
                self._heard_resync(origin)
            return
        device = self._device_of(channel)
        if device is None:
            return
        if signal is None:
            log.warning("unknown signal kind %r on %r", kind, channel)
            return
        self._local.deliver([device], signal)

    # --- health -------------------------------------------------------------

    def _set_healthy(self, up: bool, reason: str = "") -> None:
        if up != self._healthy:
            self._metrics.redis_up.set(1 if up else 0)
        super()._set_healthy(up, reason)

    def _came_up(self, again: bool) -> None:
        if again:
            self._metrics.redis_reconnects.inc()
            log.warning(
                "redis pub/sub back: resubscribed %d devices, leaving PostgreSQL polling",
                len(self._subscribed),
            )
        else:
            log.info("redis pub/sub connected node=%s", self._node)
        if self._missed:
            self._missed = False
            self._enqueue(RESYNC)


def _describe(error: BaseException) -> str:
    text = str(error)
    return f"{type(error).__name__}: {text}" if text else type(error).__name__
