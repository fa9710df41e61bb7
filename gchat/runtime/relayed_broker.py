"""What a broker that relays signals between processes does, whatever carries them.

Why one base: the Redis broker (``redis_broker.py``, a PUBLISH per device
channel) and the PostgreSQL broker (``postgres_broker.py``, NOTIFY on one
shared channel) differ in how a signal travels and how they learn that it
can travel again, but not in the recovery rules, which are written once
here so that the two cannot drift apart:

- listeners in this process are called at once by ``publish`` (no round
  trip); a process ignores its own signals when they come back;
- publishes are queued and sent by one flusher task (``_flush``, the
  transport's), so a commit never waits for the transport;
- while the transport is down (``healthy`` False) every local device is
  woken every ``poll_interval``, so delivery goes on from PostgreSQL;
- a publish that was lost sets ``_missed``; the transport sends a
  ``resync`` once it can, and every process that hears one wakes all of
  its devices;
- every process says ``alive`` each ``ping_interval``; when one falls
  silent (killed between a commit and its publish, say), the others wake
  all of their devices once.

A transport supplies the connection (``_supervise``, which calls
``_set_healthy``), the sending (``_flush``), the encoding of queued items
(``_queue``, ``_control``), when there is room to queue (``_room_for``), and
what it logs when it comes back (``_came_up``).
"""

import asyncio
import logging
import random
import secrets
from collections.abc import Iterable
from typing import ClassVar, Generic, TypeVar
from uuid import UUID

from gchat.runtime.broker import InProcessBroker, Listener, Signal, SignalKind
from gchat.runtime.metrics import NodeMetrics

#: Control messages every process understands, on whichever transport.
RESYNC = "resync"
ALIVE = "alive"

#: What the transport queues for its flusher (a channel and payload, a payload).
Item = TypeVar("Item")


class RelayedBroker(Generic[Item]):
    """The transport-independent part of a ``Broker`` spanning processes."""

    #: Each transport's own logger (operators and tests read its lines).
    log: ClassVar[logging.Logger]
    #: Prefix of the task names.
    task_name: ClassVar[str]
    #: What another process is called in log lines ("node", "process").
    peer: ClassVar[str]
    #: What is degraded, in log lines ("redis pub/sub", "signals").
    transport: ClassVar[str]
    #: Logged when ``start`` gives up waiting; ``%.0f`` is the poll interval in ms.
    degraded_at_start: ClassVar[str]

    def __init__(
        self,
        node_id: str,
        metrics: NodeMetrics | None,
        *,
        poll_interval: float,
        backoff_min: float,
        backoff_max: float,
        ping_interval: float,
    ) -> None:
        # The origin of our signals names this process, not just the node:
        # two processes configured with one node id (one shared data folder)
        # would otherwise drop each other's signals as their own.
        self._node = f"{node_id}#{secrets.token_hex(3)}"
        self._metrics = metrics if metrics is not None else NodeMetrics()
        self._poll_interval = poll_interval
        self._backoff_min = backoff_min
        self._backoff_max = backoff_max
        self._ping_interval = ping_interval
        self._local = InProcessBroker()
        self._outbox: list[Item] = []
        self._outbox_ready = asyncio.Event()
        self._up = asyncio.Event()
        self._healthy = False
        self._missed = False  # a publish was lost: send a resync once back
        self._closing = False
        self._ever_up = False
        self._last_heard = 0.0
        self._peers: dict[str, float] = {}  # process -> when it last said it is alive
        self._dead_after = 3 * ping_interval + 0.5
        self._tasks: list[asyncio.Task[None]] = []
        self._flusher: asyncio.Task[None] | None = None

    # --- what the transport supplies ------------------------------------------

    async def _supervise(self) -> None:
        """Keep the connection up; ``_set_healthy`` as it comes and goes."""
        raise NotImplementedError

    async def _flush(self, batch: list[Item]) -> None:
        """Send a batch of queued items; on failure set ``_missed``."""
        raise NotImplementedError

    def _room_for(self, devices: int) -> bool:
        """Whether a signal to this many devices may be queued now."""
        raise NotImplementedError

    def _queue(self, device_ids: list[UUID], signal: Signal) -> None:
        """Add the items that carry ``signal`` to ``device_ids`` to the outbox."""
        raise NotImplementedError

    def _control(self, kind: str) -> Item:
        """The item that says ``kind`` (``ALIVE``, ``RESYNC``) to every process."""
        raise NotImplementedError

    def _came_up(self, again: bool) -> None:
        """Log (and count) that the transport works, for the first time or ``again``."""
        raise NotImplementedError

    # --- Broker -------------------------------------------------------------

    @property
    def healthy(self) -> bool:
        return self._healthy

    async def start(self, wait: float = 3.0) -> None:
        """Connect; a process whose transport is down starts degraded (polling)."""
        self._tasks = [
            asyncio.create_task(self._supervise(), name=f"{self.task_name}-supervisor"),
            asyncio.create_task(self._poll_while_degraded(), name=f"{self.task_name}-poller"),
        ]
        self._flusher = asyncio.create_task(
            self._flush_forever(), name=f"{self.task_name}-flusher"
        )
        try:
            await asyncio.wait_for(self._up.wait(), wait)
        except TimeoutError:
            self.log.warning(self.degraded_at_start, self._poll_interval * 1000)

    def subscribe(self, device_id: UUID, listener: Listener) -> None:
        self._local.subscribe(device_id, listener)

    def unsubscribe(self, device_id: UUID, listener: Listener) -> None:
        self._local.unsubscribe(device_id, listener)

    def devices(self) -> list[UUID]:
        return self._local.devices()

    def has_listeners(self, device_id: UUID) -> bool:
        return self._local.has_listeners(device_id)

    async def connected(self, device_ids: Iterable[UUID]) -> set[UUID]:
        """This process's devices (a transport that can ask the others overrides it)."""
        return await self._local.connected(device_ids)

    def deliver(self, device_ids: Iterable[UUID], signal: Signal) -> None:
        self._local.deliver(device_ids, signal)

    async def publish(
        self, device_ids: Iterable[UUID], signal: Signal, *, local: bool = True
    ) -> None:
        """Signal these devices here at once (unless ``local`` is False) and in
        every other process soon.

        Returns without waiting for the transport: the signal is queued for
        the flusher task, so a commit never waits on it and every publish of
        a busy moment shares a round trip. No room (the transport down or
        slow): counted as lost, and a resync follows.
        """
        ids = list(device_ids)
        if local:
            self._local.deliver(ids, signal)
        if self._closing or not ids:
            return
        if not self._room_for(len(ids)):
            self._missed = True
            self._metrics.broker_publish_failures.inc(len(ids))
            return
        self._queue(ids, signal)
        self._outbox_ready.set()

    async def close(self) -> None:
        """Send what is queued (briefly), then drop the connection."""
        self._closing = True
        self._outbox_ready.set()
        if self._flusher is not None:
            try:
                await asyncio.wait_for(self._flusher, 2.0)
            except (TimeoutError, asyncio.CancelledError):
                pass
            except Exception:
                self.log.exception("flush at close failed")
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._set_healthy(False, "closed")

    # --- publishing -----------------------------------------------------------

    async def _flush_forever(self) -> None:
        while True:
            await self._outbox_ready.wait()
            self._outbox_ready.clear()
            batch, self._outbox = self._outbox, []
            if batch:
                await self._flush(batch)
            if self._closing and not self._outbox:
                return

    def _enqueue(self, kind: str) -> None:
        self._outbox.append(self._control(kind))
        self._outbox_ready.set()

    # --- hearing -------------------------------------------------------------

    def _heard_alive(self, origin: str) -> None:
        """Another process said it is alive: it is watched for silence from now."""
        if origin not in self._peers:
            self.log.info("%s %s is alive", self.peer, origin)
        self._peers[origin] = asyncio.get_running_loop().time()

    def _heard_resync(self, origin: str) -> None:
        """Another process lost publishes: every local device re-reads its inbox."""
        devices = self._local.devices()
        self.log.info("resync from %s %s: waking %d devices", self.peer, origin, len(devices))
        self._local.deliver(devices, Signal(SignalKind.WAKE))

    # --- health -------------------------------------------------------------

    def _set_healthy(self, up: bool, reason: str = "") -> None:
        if up == self._healthy:
            return
        self._healthy = up
        if up:
            self._up.set()
            self._came_up(again=self._ever_up)
            self._ever_up = True
        else:
            self._up.clear()
            self._peers.clear()  # we cannot hear them: not evidence that they died
            if not self._closing:
                self.log.warning(
                    "%s degraded (%s): polling PostgreSQL every %.0f ms",
                    self.transport,
                    reason,
                    self._poll_interval * 1000,
                )

    async def _back_off(self, attempt: int) -> None:
        """Wait before reconnect ``attempt`` (from 0): exponential, jittered."""
        delay = min(self._backoff_max, self._backoff_min * 2**attempt)
        await asyncio.sleep(delay * random.uniform(0.5, 1.0))  # noqa: S311 - jitter

    async def _poll_while_degraded(self) -> None:
        """Wake every local device each poll interval while the transport is
        down; wake them once when another process falls silent."""
        wake = Signal(SignalKind.WAKE)
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(self._poll_interval)
            if self._closing:
                continue
            if self._healthy:
                now = loop.time()
                silent = [n for n, t in self._peers.items() if now - t > self._dead_after]
                for node in silent:
                    del self._peers[node]
                if silent:
                    devices = self._local.devices()
                    self.log.warning(
                        "%s %s went silent: waking %d devices in case its last "
                        "signals were lost",
                        self.peer,
                        ",".join(silent),
                        len(devices),
                    )
                    self._local.deliver(devices, wake)
                continue
            devices = self._local.devices()
            if devices:
                self._metrics.degraded_polls.inc()
                self._local.deliver(devices, wake)
