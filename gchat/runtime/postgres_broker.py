"""Signals between processes over PostgreSQL ``LISTEN``/``NOTIFY``.

Why: ``gchat serve --workers N`` without Redis (the embedded default) still
runs several processes, and they share nothing but the database. This
broker lets them signal each other through it, with the same guarantees as
``gchat.runtime.redis_broker.RedisBroker``: a signal is a hint, the
envelopes are in PostgreSQL, and every way a hint can be lost ends in an
inbox re-read.

Design: **one channel for everybody** (``gchat_signals``), each process
LISTENing on one dedicated connection, and each notification naming its
origin, the signal and up to a few hundred devices. Every process hears
every signal and keeps those for devices it holds. PostgreSQL has no cheap
per-device routing (a backend checks each notification against its list of
LISTENed channels one by one, so thousands of per-device channels would make
every NOTIFY cost thousands of comparisons); one shared channel costs each
process one parse per commit batch, which is what a handful of processes on
one host, or a few nodes on one database, can afford. Beyond that, use Redis.

Limits handled:

- A NOTIFY payload must be shorter than 8000 bytes: the devices of one
  signal are split over as many notifications as needed (``MAX_PAYLOAD``),
  each a JSON array ``[origin, kind, value, "<32 hex><32 hex>..."]``.
- A notification sent while a listener's connection is down is never
  delivered to it. So the listener is "up" only once ``LISTEN`` has
  returned on a fresh connection, and at that moment every local device is
  woken (anything committed while it was down is then read from the inbox).
  While it is down, every local listener is woken every ``poll_interval``
  (250 ms), exactly as the Redis broker does while Redis is unreachable.
- A publish that failed (the database unreachable) marks the broker as
  having missed one: the next publish that succeeds is preceded by a
  ``resync``, and every process then wakes all of its devices.
- Every process says ``alive`` each ``ping_interval``; a process that falls
  silent (killed between a commit and its NOTIFY) makes the others wake
  all of their devices once. Hearing nothing at all, not even its own
  ``alive``, for ``3 * ping_interval + 1`` s makes a process drop its
  listening connection and open a new one.

Publishes are queued and sent by one flusher task, several notifications per
round trip (one ``SELECT pg_notify(...) FROM unnest(...)``), so a commit
never waits for them.

Presence (``connected``) answers for this process only: a device connected
to another worker may get one Web Push too many (coalesced per window),
never a message too few.
"""

import asyncio
import contextlib
import json
import logging
import secrets
from collections.abc import Iterable
from typing import Any
from uuid import UUID

import asyncpg

from gchat.runtime.broker import InProcessBroker, Listener, Signal, SignalKind
from gchat.runtime.metrics import NodeMetrics

log = logging.getLogger("gchat.runtime.postgres_broker")

#: The channel every process LISTENs on (a database holds one deployment).
CHANNEL = "gchat_signals"
#: PostgreSQL refuses payloads of 8000 bytes or more; stay clear of it.
MAX_PAYLOAD = 7900
#: Notifications waiting for the flusher beyond this are dropped (and a
#: resync is sent later): memory stays bounded when the database is slow.
MAX_OUTBOX = 20_000
#: Notifications sent in one statement.
_PER_STATEMENT = 500
_RESYNC = "resync"
_ALIVE = "alive"
_APPLICATION = "gchat-signals"


def payloads(origin: str, kind: str, value: int | str | None, devices: list[UUID]) -> list[str]:
    """The notifications that carry ``kind`` to ``devices``, each under ``MAX_PAYLOAD`` bytes."""
    if not devices:
        return [json.dumps([origin, kind, value, ""], ensure_ascii=False)]
    head = len(json.dumps([origin, kind, value, ""], ensure_ascii=False).encode())
    per = (MAX_PAYLOAD - head) // 32
    if per < 1:
        raise ValueError("signal value too long for a notification")
    out = []
    for start in range(0, len(devices), per):
        hexes = "".join(d.hex for d in devices[start : start + per])
        out.append(json.dumps([origin, kind, value, hexes], ensure_ascii=False))
    return out


class PostgresBroker:
    """The ``Broker`` for processes sharing a database and no Redis."""

    def __init__(
        self,
        dsn: str,
        pool: asyncpg.Pool,
        node_id: str,
        metrics: NodeMetrics | None = None,
        *,
        poll_interval: float = 0.25,
        backoff_min: float = 0.1,
        backoff_max: float = 2.0,
        ping_interval: float = 1.0,
        channel: str = CHANNEL,
    ) -> None:
        self._dsn = dsn
        self._pool = pool
        # Names this process, not just the node: two processes with one node
        # id would otherwise drop each other's signals as their own.
        self._node = f"{node_id}#{secrets.token_hex(3)}"
        self._metrics = metrics if metrics is not None else NodeMetrics()
        self._poll_interval = poll_interval
        self._backoff_min = backoff_min
        self._backoff_max = backoff_max
        self._ping_interval = ping_interval
        self._channel = channel
        self._local = InProcessBroker()
        self._outbox: list[str] = []
        self._outbox_ready = asyncio.Event()
        self._up = asyncio.Event()
        self._healthy = False
        self._missed = False  # a publish was lost: send a resync first next time
        self._closing = False
        self._ever_up = False
        self._last_heard = 0.0
        self._peers: dict[str, float] = {}  # process -> when it last said it is alive
        self._dead_after = 3 * ping_interval + 0.5
        self._tasks: list[asyncio.Task[None]] = []
        self._flusher: asyncio.Task[None] | None = None
        #: The listening connection's backend pid (tests terminate it).
        self.listener_pid: int | None = None

    # --- Broker -------------------------------------------------------------

    @property
    def healthy(self) -> bool:
        return self._healthy

    async def start(self, wait: float = 3.0) -> None:
        """Start listening; a process that cannot yet starts degraded (polling)."""
        self._tasks = [
            asyncio.create_task(self._supervise(), name="pg-broker-listener"),
            asyncio.create_task(self._poll(), name="pg-broker-poller"),
        ]
        self._flusher = asyncio.create_task(self._flush_forever(), name="pg-broker-flusher")
        try:
            await asyncio.wait_for(self._up.wait(), wait)
        except TimeoutError:
            log.warning(
                "cannot LISTEN yet: polling PostgreSQL every %.0f ms until it can",
                self._poll_interval * 1000,
            )

    def subscribe(self, device_id: UUID, listener: Listener) -> None:
        self._local.subscribe(device_id, listener)

    def unsubscribe(self, device_id: UUID, listener: Listener) -> None:
        self._local.unsubscribe(device_id, listener)

    def devices(self) -> list[UUID]:
        return self._local.devices()

    def has_listeners(self, device_id: UUID) -> bool:
        return self._local.has_listeners(device_id)

    async def connected(self, device_ids: Iterable[UUID]) -> set[UUID]:
        """This process's devices only (see the module docstring)."""
        return await self._local.connected(device_ids)

    def deliver(self, device_ids: Iterable[UUID], signal: Signal) -> None:
        self._local.deliver(device_ids, signal)

    async def publish(
        self, device_ids: Iterable[UUID], signal: Signal, *, local: bool = True
    ) -> None:
        """Signal these devices here at once (unless ``local`` is False) and in
        every other process soon (queued for the flusher; never waits)."""
        ids = list(device_ids)
        if local:
            self._local.deliver(ids, signal)
        if self._closing or not ids:
            return
        if len(self._outbox) >= MAX_OUTBOX:
            self._missed = True
            self._metrics.broker_publish_failures.inc(len(ids))
            return
        self._outbox.extend(payloads(self._node, signal.kind.value, signal.value, ids))
        self._metrics.broker_published.inc(len(ids))
        self._outbox_ready.set()

    async def close(self) -> None:
        """Send what is queued (briefly), then stop listening."""
        self._closing = True
        self._outbox_ready.set()
        if self._flusher is not None:
            try:
                await asyncio.wait_for(self._flusher, 2.0)
            except (TimeoutError, asyncio.CancelledError):
                pass
            except Exception:
                log.exception("flush at close failed")
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

    async def _flush(self, batch: list[str]) -> None:
        missed = self._missed
        if missed:
            batch = [json.dumps([self._node, _RESYNC, None, ""]), *batch]
        try:
            async with self._pool.acquire() as conn:
                for start in range(0, len(batch), _PER_STATEMENT):
                    await conn.execute(
                        "SELECT pg_notify($1, p) FROM unnest($2::text[]) AS t(p)",
                        self._channel,
                        batch[start : start + _PER_STATEMENT],
                    )
        except Exception as error:  # the database is unreachable: resync later
            self._missed = True
            self._metrics.broker_publish_failures.inc(len(batch))
            log.warning("NOTIFY failed (%s): the next one is preceded by a resync", error)
        else:
            if missed:
                self._missed = False

    # --- listening --------------------------------------------------------------

    async def _supervise(self) -> None:
        """Keep one LISTENing connection; on loss, back off and open another."""
        attempt = 0
        loop = asyncio.get_running_loop()
        while not self._closing:
            conn: asyncpg.Connection | None = None
            reason = "connection lost"
            try:
                conn = await asyncpg.connect(
                    self._dsn, timeout=5, server_settings={"application_name": _APPLICATION}
                )
                lost = asyncio.Event()
                conn.add_termination_listener(lambda _, lost=lost: lost.set())
                await conn.add_listener(self._channel, self._on_notify)
                self.listener_pid = conn.get_server_pid()
                self._last_heard = loop.time()
                # LISTEN is in effect: whatever was signalled before it (while
                # the connection was down) is read from the inbox now.
                self._set_healthy(True)
                self._local.deliver(self._local.devices(), Signal(SignalKind.WAKE))
                attempt = 0
                await self._watch(lost)
            except asyncio.CancelledError:
                raise
            except Exception as error:
                reason = f"{type(error).__name__}: {error}"
            finally:
                if conn is not None:
                    with contextlib.suppress(Exception):
                        conn.terminate()
            if self._closing:
                break
            self._set_healthy(False, reason)
            delay = min(self._backoff_max, self._backoff_min * 2**attempt)
            attempt += 1
            await asyncio.sleep(delay * (0.5 + secrets.randbelow(500) / 1000))  # jitter

    async def _watch(self, lost: asyncio.Event) -> None:
        """Say ``alive`` every ping interval; return when the connection is lost
        or has heard nothing (not even our own ``alive``) for too long."""
        loop = asyncio.get_running_loop()
        while True:
            self._enqueue(_ALIVE)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(lost.wait(), self._ping_interval)
            if lost.is_set():
                raise ConnectionError("listening connection closed")
            if loop.time() - self._last_heard > 3 * self._ping_interval + 1:
                raise ConnectionError("heard no notification, not even our own")

    def _on_notify(self, _conn: Any, _pid: int, _channel: str, payload: str) -> None:
        loop = asyncio.get_running_loop()
        self._last_heard = loop.time()
        try:
            origin, kind, value, hexes = json.loads(payload)
        except (ValueError, TypeError):
            log.warning("malformed notification on %s", self._channel)
            return
        if origin == self._node:
            return  # our own: local listeners were called when it was published
        if kind == _ALIVE:
            if origin not in self._peers:
                log.info("process %s is alive", origin)
            self._peers[origin] = loop.time()
            return
        self._metrics.broker_received.inc()
        if kind == _RESYNC:
            devices = self._local.devices()
            log.info("resync from %s: waking %d devices", origin, len(devices))
            self._local.deliver(devices, Signal(SignalKind.WAKE))
            return
        try:
            signal = Signal(SignalKind(kind), value)
        except ValueError:
            log.warning("unknown signal kind %r", kind)
            return
        here = []
        for start in range(0, len(hexes), 32):
            try:
                device = UUID(hex=hexes[start : start + 32])
            except ValueError:
                log.warning("malformed device id in a notification from %s", origin)
                return
            if self._local.has_listeners(device):
                here.append(device)
        if here:
            self._local.deliver(here, signal)

    # --- health -------------------------------------------------------------

    def _set_healthy(self, up: bool, reason: str = "") -> None:
        if up == self._healthy:
            return
        self._healthy = up
        if up:
            self._up.set()
            if self._ever_up:
                log.warning("LISTEN back: waking every device, leaving PostgreSQL polling")
            else:
                log.info("listening for signals on %s as %s", self._channel, self._node)
            self._ever_up = True
        else:
            self._up.clear()
            self._peers.clear()  # we cannot hear them: not evidence that they died
            if not self._closing:
                log.warning(
                    "signals degraded (%s): polling PostgreSQL every %.0f ms",
                    reason,
                    self._poll_interval * 1000,
                )

    def _enqueue(self, kind: str) -> None:
        self._outbox.append(json.dumps([self._node, kind, None, ""]))
        self._outbox_ready.set()

    async def _poll(self) -> None:
        """Wake every local device each poll interval while not listening;
        wake them once when another process falls silent."""
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
                    log.warning(
                        "process %s went silent: waking %d devices in case its last "
                        "signals were lost",
                        ",".join(silent),
                        len(devices),
                    )
                    self._local.deliver(devices, wake)
                continue
            devices = self._local.devices()
            if devices:
                self._metrics.degraded_polls.inc()
                self._local.deliver(devices, wake)
