"""The PostgreSQL LISTEN/NOTIFY broker in one process: two brokers stand for
two workers, on a real database (each test its own)."""

import asyncio
import json
import logging
import uuid
from collections.abc import AsyncIterator, Callable

import asyncpg
import pytest

from gchat.runtime.broker import Signal, SignalKind
from gchat.runtime.metrics import NodeMetrics
from gchat.runtime.postgres_broker import MAX_PAYLOAD, PostgresBroker, payloads
from gchat.store.database import Database
from tests.support import eventually, stays


class Recorder:
    def __init__(self, broker: PostgresBroker | None = None) -> None:
        self.signals: list[Signal] = []
        self.broker = broker
        self.degraded_wakes = 0  # wake-ups received while the broker was not listening

    def __call__(self, signal: Signal) -> None:
        self.signals.append(signal)
        if signal.kind is SignalKind.WAKE and self.broker is not None and not self.broker.healthy:
            self.degraded_wakes += 1

    def kinds(self) -> list[SignalKind]:
        return [s.kind for s in self.signals]


Make = Callable[..., "asyncio.Future[PostgresBroker]"]


@pytest.fixture
async def brokers(database_url: str) -> AsyncIterator[Make]:
    db = await Database.connect(database_url, min_size=1, max_size=4)
    made: list[PostgresBroker] = []

    async def make(name: str, **kw: float) -> PostgresBroker:
        broker = PostgresBroker(database_url, db.pool, name, NodeMetrics(), **kw)
        await broker.start(wait=5)
        made.append(broker)
        return broker

    try:
        yield make  # type: ignore[misc]
    finally:
        for broker in made:
            await broker.close()
        await db.close()


def test_payloads_stay_under_the_notify_limit_and_carry_every_device() -> None:
    devices = [uuid.uuid4() for _ in range(1000)]
    out = payloads("worker-1#abcdef", "connected", "x" * 200, devices)
    assert len(out) > 1
    assert all(len(p.encode()) < MAX_PAYLOAD < 8000 for p in out)
    carried = []
    for p in out:
        origin, kind, value, hexes = json.loads(p)
        assert (origin, kind, value) == ("worker-1#abcdef", "connected", "x" * 200)
        carried += [uuid.UUID(hex=hexes[i : i + 32]) for i in range(0, len(hexes), 32)]
    assert carried == devices
    with pytest.raises(ValueError, match="too long"):
        payloads("w", "connected", "x" * 8000, devices)


async def test_a_thousand_devices_hear_one_signal_across_processes(brokers: Make) -> None:
    a = await brokers("a")
    b = await brokers("b")
    assert a.healthy and b.healthy
    devices = [uuid.uuid4() for _ in range(1000)]
    heard = {d: Recorder() for d in devices}
    for device, recorder in heard.items():
        b.subscribe(device, recorder)
    # Several NOTIFYs of up to 8000 bytes each; every device on b hears it once.
    await a.publish(devices + [uuid.uuid4()], Signal(SignalKind.PREKEYS_LOW, 3))
    await eventually(lambda: all(r.signals for r in heard.values()), what="every device")
    once = [Signal(SignalKind.PREKEYS_LOW, 3)]
    await stays(lambda: all(r.signals == once for r in heard.values()))


async def test_own_signals_are_not_delivered_twice(brokers: Make) -> None:
    a = await brokers("a")
    await brokers("b")
    device = uuid.uuid4()
    here = Recorder()
    a.subscribe(device, here)
    await a.publish([device], Signal(SignalKind.WAKE))
    assert here.kinds() == [SignalKind.WAKE]  # at once, locally
    await stays(lambda: here.kinds() == [SignalKind.WAKE], during=0.5)


async def test_a_killed_listen_connection_is_replaced_and_its_devices_reread(
    brokers: Make, database_url: str
) -> None:
    a = await brokers("a", backoff_min=0.05, backoff_max=0.2)
    b = await brokers("b", poll_interval=0.1, backoff_min=0.5, backoff_max=0.5)
    device = uuid.uuid4()
    on_b = Recorder(b)
    b.subscribe(device, on_b)
    old = b.listener_pid
    conn = await asyncpg.connect(database_url)
    try:
        assert await conn.fetchval("SELECT pg_terminate_backend($1)", old)
        await eventually(lambda: not b.healthy, what="b notices its connection is gone")
        # While b cannot LISTEN, a signal from a is lost to it; b polls instead.
        await a.publish([device], Signal(SignalKind.PREKEYS_LOW, 1))
        # (Not the re-LISTEN's wake: this one comes while b is still not listening.)
        await eventually(lambda: on_b.degraded_wakes >= 1, what="a degraded poll")
        await eventually(lambda: b.healthy, within=10, what="b listens again")
        assert b.listener_pid not in (None, old)
        listening = await conn.fetchval(
            "SELECT count(*) FROM pg_stat_activity WHERE pid = $1", b.listener_pid
        )
        assert listening == 1
        # Listening again: signals arrive, and no polling goes on.
        on_b.signals.clear()
        await a.publish([device], Signal(SignalKind.PREKEYS_LOW, 2))
        await eventually(lambda: Signal(SignalKind.PREKEYS_LOW, 2) in on_b.signals)
        on_b.signals.clear()
        await stays(lambda: SignalKind.WAKE not in on_b.kinds(), during=0.5)
    finally:
        await conn.close()


async def test_the_reconnect_itself_wakes_every_device(brokers: Make, database_url: str) -> None:
    b = await brokers("b", poll_interval=30, backoff_min=0.05, backoff_max=0.1)
    device = uuid.uuid4()
    on_b = Recorder()
    b.subscribe(device, on_b)
    conn = await asyncpg.connect(database_url)
    try:
        old = b.listener_pid
        await conn.fetchval("SELECT pg_terminate_backend($1)", old)
        # No poll happens in this test (30 s): only the re-LISTEN wakes the device.
        await eventually(lambda: b.listener_pid != old and b.healthy, within=10)
        await eventually(lambda: on_b.kinds() == [SignalKind.WAKE])
    finally:
        await conn.close()


async def test_a_process_falling_silent_wakes_the_others_devices(
    brokers: Make, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, "gchat.runtime.postgres_broker")
    a = await brokers("a", ping_interval=0.2)
    b = await brokers("b", ping_interval=0.2, poll_interval=0.05)
    device = uuid.uuid4()
    on_b = Recorder()
    b.subscribe(device, on_b)
    await eventually(lambda: "process a#" in caplog.text, what="b hears a")
    assert on_b.signals == []
    await a.close()  # stands for a worker killed between a commit and its NOTIFY
    await eventually(lambda: SignalKind.WAKE in on_b.kinds(), within=5, what="wake on silence")
