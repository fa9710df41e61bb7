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
from typing import Any
from uuid import UUID

import asyncpg

from gchat.runtime.broker import Signal, SignalKind
from gchat.runtime.metrics import NodeMetrics
from gchat.runtime.relayed_broker import ALIVE, RESYNC, RelayedBroker

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


class PostgresBroker(RelayedBroker[str]):
    """The ``Broker`` for processes sharing a database and no Redis.

    The recovery rules are ``RelayedBroker``'s; this class holds the
    LISTENing connection and the batched NOTIFYs.
    """

    log = log
    task_name = "pg-broker"
    peer = "process"
    transport = "signals"
    degraded_at_start = "cannot LISTEN yet: polling PostgreSQL every %.0f ms until it can"

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
        super().__init__(
            node_id,
            metrics,
            poll_interval=poll_interval,
            backoff_min=backoff_min,
            backoff_max=backoff_max,
            ping_interval=ping_interval,
        )
        self._dsn = dsn
        self._pool = pool
        self._channel = channel
        #: The listening connection's backend pid (tests terminate it).
        self.listener_pid: int | None = None

    # --- publishing -----------------------------------------------------------

    def _room_for(self, devices: int) -> bool:
        # Queued even while not listening: NOTIFY goes through the pool.
        return len(self._outbox) < MAX_OUTBOX

    def _queue(self, device_ids: list[UUID], signal: Signal) -> None:
        self._outbox.extend(payloads(self._node, signal.kind.value, signal.value, device_ids))
        self._metrics.broker_published.inc(len(device_ids))

    def _control(self, kind: str) -> str:
        return json.dumps([self._node, kind, None, ""])

    async def _flush(self, batch: list[str]) -> None:
        missed = self._missed
        if missed:
            batch = [self._control(RESYNC), *batch]
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
            await self._back_off(attempt)
            attempt += 1

    async def _watch(self, lost: asyncio.Event) -> None:
        """Say ``alive`` every ping interval; return when the connection is lost
        or has heard nothing (not even our own ``alive``) for too long."""
        loop = asyncio.get_running_loop()
        while True:
            self._enqueue(ALIVE)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(lost.wait(), self._ping_interval)
            if lost.is_set():
                raise ConnectionError("listening connection closed")
            if loop.time() - self._last_heard > 3 * self._ping_interval + 1:
                raise ConnectionError("heard no notification, not even our own")

    def _on_notify(self, _conn: Any, _pid: int, _channel: str, payload: str) -> None:
        self._last_heard = asyncio.get_running_loop().time()
        try:
            origin, kind, value, hexes = json.loads(payload)
        except (ValueError, TypeError):
            log.warning("malformed notification on %s", self._channel)
            return
        if origin == self._node:
            return  # our own: local listeners were called when it was published
        if kind == ALIVE:
            self._heard_alive(origin)
            return
        self._metrics.broker_received.inc()
        if kind == RESYNC:
            self._heard_resync(origin)
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

    def _came_up(self, again: bool) -> None:
        if again:
            log.warning("LISTEN back: waking every device, leaving PostgreSQL polling")
        else:
            log.info("listening for signals on %s as %s", self._channel, self._node)
