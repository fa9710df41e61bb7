"""When to push: envelopes committed for a device with no live connection.

``notify`` is called after a commit and returns at once: the pushes run
as background tasks, so a slow, hanging or failing push service never
delays ``accepted``. Who is connected is asked of the broker (``Presence``)
in two steps, so that the per-commit work stays small: on the commit path
only "connected here?" (a set lookup per recipient; most recipients of a
busy node are online); in the background, at most once per
``lookup_interval`` for all the devices gathered meanwhile, which of them
have a subscription (one query), and for those "connected on any node?"
(the Redis broker asks Redis who is subscribed to their channels). A device
gets at most one push per window (the ``Coalescer``: in process, or Redis
``SET NX PX`` shared by every node so a cluster sends one in total).
404/410 removes the subscription; 429, 5xx and network errors are retried
with exponential backoff, then given up (the device still finds its
messages when it next connects).
"""

import asyncio
import logging
import time
from collections.abc import Coroutine, Iterable
from typing import Any, Protocol
from uuid import UUID

from redis.asyncio import Redis

from gchat.push.sender import WebPushSender
from gchat.store import push as store
from gchat.store.database import Database

log = logging.getLogger("gchat.push")


class Presence(Protocol):
    """Where devices are connected (``gchat.runtime.broker.Broker`` is one)."""

    def has_listeners(self, device_id: UUID) -> bool: ...

    async def connected(self, device_ids: Iterable[UUID]) -> set[UUID]: ...


class Coalescer(Protocol):
    async def claim(self, device_id: UUID) -> bool:
        """True if no push went to ``device_id`` within the window (and claims it)."""
        ...


class LocalCoalescer:
    def __init__(self, window_seconds: float) -> None:
        self._window = window_seconds
        self._until: dict[UUID, float] = {}

    async def claim(self, device_id: UUID) -> bool:
        now = time.monotonic()
        if self._until.get(device_id, 0.0) > now:
            return False
        self._until = {d: t for d, t in self._until.items() if t > now}
        self._until[device_id] = now + self._window
        return True


class RedisCoalescer:
    def __init__(self, redis: Redis, prefix: str, window_seconds: float) -> None:
        self._redis = redis
        self._prefix = prefix
        self._window_ms = max(1, int(window_seconds * 1000))

    async def claim(self, device_id: UUID) -> bool:
        key = f"{self._prefix}push:{device_id}"
        return bool(await self._redis.set(key, b"1", nx=True, px=self._window_ms))


class PushNotifier:
    def __init__(
        self,
        db: Database,
        sender: WebPushSender,
        coalescer: Coalescer,
        presence: Presence,
        attempts: int = 4,
        backoff_seconds: float = 1.0,
        lookup_interval: float = 0.5,
    ) -> None:
        self._db = db
        self._sender = sender
        self._coalescer = coalescer
        self._presence = presence
        self._attempts = attempts
        self._backoff = backoff_seconds
        self._tasks: set[asyncio.Task[None]] = set()
        # Devices not connected here, gathered over commits: one lookup of
        # subscriptions per ``lookup_interval`` at most, not one per commit
        # batch (docs/PERFORMANCE.md, "Push check").
        self._interval = lookup_interval
        self._waiting: set[UUID] = set()
        self._ready = asyncio.Event()
        self._runner: asyncio.Task[None] | None = None

    async def idle(self) -> None:
        """Wait until the waiting devices were looked up and pushed to (load tests)."""
        while self._waiting or self._tasks:
            if self._tasks:
                await asyncio.gather(*list(self._tasks), return_exceptions=True)
            else:
                await asyncio.sleep(self._interval / 10)  # noqa: ASYNC110 - test helper

    def notify(self, device_ids: Iterable[UUID]) -> None:
        """Push, in the background, to those of ``device_ids`` connected nowhere."""
        has_listeners = self._presence.has_listeners
        before = len(self._waiting)
        self._waiting.update(d for d in device_ids if not has_listeners(d))
        if len(self._waiting) == before:
            return
        if self._runner is None:
            self._runner = asyncio.create_task(self._look_up_forever(), name="push-lookups")
        self._ready.set()

    async def _look_up_forever(self) -> None:
        while True:
            await self._ready.wait()
            self._ready.clear()
            devices, self._waiting = list(self._waiting), set()
            await self._spawn(self._push_all(devices))
            await asyncio.sleep(self._interval)

    def _spawn(self, work: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
        task = asyncio.create_task(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    async def _push_all(self, device_ids: list[UUID]) -> None:
        try:
            subscriptions = await store.of_devices(self._db.pool, device_ids)
            if not subscriptions:
                return
            online = await self._presence.connected(s.device_id for s in subscriptions)
            for subscription in subscriptions:
                if subscription.device_id in online:
                    continue
                if await self._coalescer.claim(subscription.device_id):
                    self._spawn(self._push(subscription))
        except Exception as error:  # noqa: BLE001 - a push never fails a send
            log.warning("push lookup failed: %s", type(error).__name__)

    async def _push(self, subscription: store.Subscription) -> None:
        for attempt in range(self._attempts):
            try:
                status = await self._sender.send(subscription)
            except Exception as error:  # noqa: BLE001 - network errors are retried
                status, reason = 0, type(error).__name__
            else:
                reason = str(status)
            if status in (404, 410):
                await store.remove_if_same(
                    self._db.pool, subscription.device_id, subscription.endpoint
                )
                return
            if 200 <= status < 300 or (400 <= status < 500 and status != 429):
                return
            if attempt + 1 < self._attempts:
                await asyncio.sleep(self._backoff * 2**attempt)
        # The endpoint is a capability; log the device only.
        log.info("push to device %s given up (%s)", subscription.device_id, reason)

    async def close(self) -> None:
        if self._runner is not None:
            self._runner.cancel()
            await asyncio.gather(self._runner, return_exceptions=True)
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
