"""Load-generator processes and what they do.

The generator runs in several processes (``Workers``), so that one Python
event loop on the client side is not what limits the figures. Each worker
keeps one uvloop event loop for its whole life and runs one operation at a
time, sent by the parent over a pipe as a dict (``{"op": ...}``). An
operation that needs every worker to start together first reports
``ready`` and waits for ``go`` (with a common start time on the system-wide
monotonic clock, which every process on the host shares), then reports its
result. Each result carries the worker's own CPU time for the measured
phase (``os.times``).
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import itertools
import multiprocessing
import os
import threading
import time
import traceback
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from multiprocessing.connection import Connection
from typing import Any, cast

from loadtests.clients import (
    PLAINTEXT_BYTES,
    Acks,
    Dev,
    GChatConn,
    RawConn,
    RawMsg,
    authenticate,
    enroll_device,
    hello,
    opener,
    raw_decode,
    raw_encode,
    seal_pool,
)
from loadtests.harness import raise_nofile
from loadtests.wire import Wire
from protocol import frames as f
from protocol.codec import client_codec
from protocol.version import MSGPACK_SUBPROTOCOL

Gate = Callable[[dict[str, Any]], Awaitable[dict[str, Any]]]

#: Ciphertexts sealed per pair in advance (distinct; cycled through).
POOL = 64
#: Every n-th delivered envelope is opened by its recipient, to prove it is real.
VERIFY_EVERY = 500
#: Fixed rate: least seconds between two wake-ups of the sending loop (see ``_fixed_rate``).
TICK = 0.001
#: Seconds of send time per window: each latency sample carries its window, so
#: that a phase's report tells a lump (a stall that held up every message in
#: flight) from a broad distribution (``loadtests.scenarios.spread``).
WINDOW_S = 0.1


class Aborted(Exception):
    pass


class Collections:
    """The generator's own garbage collections while it is installed
    (``gc.callbacks``): a pass stalls the worker's loop, and so every
    message of its pairs in flight, as one of the server would."""

    def __init__(self) -> None:
        self.passes = 0
        self.full = 0
        self.max_s = 0.0
        self._began = 0.0

    def __call__(self, phase: str, info: dict[str, int]) -> None:
        now = time.perf_counter()
        if phase == "start":
            self._began = now
            return
        self.passes += 1
        self.full += info["generation"] == 2
        self.max_s = max(self.max_s, now - self._began)

    def __enter__(self) -> Collections:
        gc.callbacks.append(self)
        return self

    def __exit__(self, *_: object) -> None:
        gc.callbacks.remove(self)


def cpu_now() -> float:
    t = os.times()
    return t.user + t.system


async def gather_limited(coros: Sequence[Awaitable[Any]], limit: int) -> list[Any]:
    """Run awaitables with at most ``limit`` at once; exceptions are returned."""
    semaphore = asyncio.Semaphore(limit)

    async def one(c: Awaitable[Any]) -> Any:
        async with semaphore:
            return await c

    return await asyncio.gather(*(one(c) for c in coros), return_exceptions=True)


async def sleep_until(moment: float) -> None:
    delay = moment - time.monotonic()
    if delay > 0:
        await asyncio.sleep(delay)


# --- enrolment --------------------------------------------------------------------


async def op_enroll(spec: dict[str, Any], gate: Gate) -> dict[str, Any]:
    url = spec["url"]
    items: list[tuple[int, str]] = spec["items"]
    results = await gather_limited(
        [enroll_device(url, index, code) for index, code in items], spec.get("concurrency", 16)
    )
    devs = [r for r in results if isinstance(r, Dev)]
    errors = [repr(r) for r in results if not isinstance(r, Dev)]
    return {"devs": devs, "errors": errors[:5], "failed": len(errors)}


# --- 1:1 relay -----------------------------------------------------------------------


class Stats:
    """One worker's counters and latency samples for one load phase."""

    def __init__(self, measure_from: float, measure_to: float) -> None:
        self.measure_from = measure_from
        self.measure_to = measure_to
        self.sent = 0
        self.accepted = 0
        self.rejected: Counter[str] = Counter()
        self.delivered = 0
        self.acked = 0
        self.delivered_in_window = 0
        self.verified = 0
        self.bad_plaintext = 0
        self.latencies: list[float] = []
        #: The window of send time (``WINDOW_S``) of each latency sample.
        self.windows: list[int] = []
        #: Fixed rate: the most the sending loop woke after a send was due, in
        #: the measured window (a stall of the generator, not of the server).
        self.late_max = 0.0

    def record(self, sent_at: float, received_at: float) -> None:
        if self.measure_from <= sent_at < self.measure_to:
            self.latencies.append((received_at - sent_at) * 1000.0)
            self.windows.append(int((sent_at - self.measure_from) / WINDOW_S))
        if self.measure_from <= received_at < self.measure_to:
            self.delivered_in_window += 1


class Pair:
    """A sender and a recipient device, each on a ``Wire``; subclasses speak
    G-Chat or the raw relay, with the same client code around it so that
    their ratio compares the servers. Every reply is handled in the read
    that brought it (``Wire``): sending is a call, not a task."""

    def __init__(self, number: int, stats: Stats, sender: Wire, recipient: Wire) -> None:
        self.number = number
        self.stats = stats
        self.s = sender
        self.r = recipient
        self.rids = itertools.count(1)
        self.pending: dict[int, float] = {}
        self.outstanding = 0
        self.backoff_until = 0.0
        #: Closed loop: messages kept in flight, until when (0: a fixed rate sends).
        self.window = 0
        self.until = 0.0
        self._retry: asyncio.TimerHandle | None = None

    def start(self) -> None:
        """Hand both connections' messages to this pair (after their set-up)."""
        self.s.handle(self.on_sender)
        self.r.handle(self.on_recipient)

    def send(self, intended: float) -> None:
        raise NotImplementedError

    def on_sender(self, data: bytes) -> None:
        raise NotImplementedError

    def on_recipient(self, data: bytes) -> None:
        raise NotImplementedError

    def closed_loop(self, window: int, until: float) -> None:
        """Keep ``window`` messages in flight until ``until``: each completed
        message sends the next, from the callback that completed it."""
        self.window, self.until = window, until
        self._refill()

    def _refill(self) -> None:
        self._retry = None
        now = time.monotonic()
        while self.outstanding < self.window and now < self.until:
            if self.backoff_until > now:
                if self._retry is None:
                    self._retry = asyncio.get_running_loop().call_later(
                        self.backoff_until - now, self._refill)
                return
            self.send(now)

    def _completed(self) -> None:
        self.outstanding -= 1
        if self.window:
            self._refill()

    def _failed(self, retry_after: float | None) -> None:
        if retry_after:
            self.backoff_until = time.monotonic() + retry_after
        self._completed()

    async def close(self) -> None:
        if self._retry is not None:
            self._retry.cancel()
        await asyncio.gather(self.s.close(), self.r.close(), return_exceptions=True)


class GChatPair(Pair):
    def __init__(self, number: int, stats: Stats, sender: Wire, recipient: Wire,
                 recipient_dev: Dev, prefix: str) -> None:
        super().__init__(number, stats, sender, recipient)
        codec = client_codec(MSGPACK_SUBPROTOCOL)
        self.decode = codec.decode
        #: A MessagePack codec encodes to bytes (``bytes | str`` is for JSON's).
        self.encode = cast(Callable[[object], bytes], codec.encode)
        self.prefix = prefix
        self.pool = seal_pool(recipient_dev.identity_key(), POOL)
        self.opener = opener(recipient_dev)
        self.sent_at: dict[Any, float] = {}
        self.received_at: dict[Any, float] = {}
        self.recipient_official = recipient_dev.official_id
        self.recipient_device = recipient_dev.device_id

    @classmethod
    async def open(cls, number: int, stats: Stats, spec: dict[str, Any], sender: Dev,
                   recipient: Dev) -> GChatPair:
        s, r = await _both(gchat_wire(spec["send_url"], sender),
                           gchat_wire(spec["recv_url"], recipient))
        return cls(number, stats, s, r, recipient, spec.get("prefix", "lt"))

    def send(self, intended: float) -> None:
        rid = next(self.rids)
        frame = f.Send(
            rid=rid,
            client_message_id=f"{self.prefix}.{self.number}.{rid}",
            recipient=self.recipient_official,
            envelopes=[f.Envelope(device_id=self.recipient_device,
                                  ciphertext=self.pool[rid % POOL])],
        )
        self.pending[rid] = intended
        self.outstanding += 1
        self.stats.sent += 1
        self.s.write(self.encode(frame))

    def on_sender(self, data: bytes) -> None:
        frame = self.decode(data)
        stats = self.stats
        if isinstance(frame, f.Accepted):
            sent = self.pending.pop(frame.rid)
            stats.accepted += 1
            received = self.received_at.pop(frame.message_id, None)
            if received is None:
                self.sent_at[frame.message_id] = sent
            else:
                stats.record(sent, received)
                self._completed()
        elif isinstance(frame, f.Error):
            stats.rejected[frame.code] += 1
            if frame.rid is not None and self.pending.pop(frame.rid, None) is not None:
                self._failed(frame.retry_after)

    def on_recipient(self, data: bytes) -> None:
        frame = self.decode(data)
        if not isinstance(frame, f.Deliver):
            return
        now = time.monotonic()
        # One ack frame per deliver, as before the wire (the closed loop's
        # figures depend on it); the acks of one read leave in one write.
        self.r.write(self.encode(f.Ack(positions=[frame.position])))
        stats = self.stats
        stats.delivered += 1
        stats.acked += 1
        if stats.delivered % VERIFY_EVERY == 1:
            if len(self.opener.decrypt(frame.ciphertext)) == PLAINTEXT_BYTES:
                stats.verified += 1
            else:
                stats.bad_plaintext += 1
        sent = self.sent_at.pop(frame.message_id, None)
        if sent is None:
            self.received_at[frame.message_id] = now
        else:
            stats.record(sent, now)
            self._completed()


class RawPair(Pair):
    def __init__(self, number: int, stats: Stats, sender: Wire, recipient: Wire,
                 names: tuple[str, str], identity_key: bytes) -> None:
        super().__init__(number, stats, sender, recipient)
        self.s_name, self.r_name = names
        self.pool = seal_pool(identity_key, POOL)

    @classmethod
    async def open(cls, number: int, stats: Stats, spec: dict[str, Any], sender: Dev,
                   recipient: Dev) -> RawPair:
        names = str(sender.device_id), str(recipient.device_id)
        s, r = await _both(raw_wire(spec["send_url"], names[0], sender.ip),
                           raw_wire(spec["recv_url"], names[1], recipient.ip))
        return cls(number, stats, s, r, names, recipient.identity_key())

    def send(self, intended: float) -> None:
        rid = next(self.rids)
        self.pending[rid] = intended
        self.outstanding += 1
        self.stats.sent += 1
        self.s.write(raw_encode(RawMsg(t="msg", to=self.r_name, sender=self.s_name, rid=rid,
                                       body=self.pool[rid % POOL])))

    def on_sender(self, data: bytes) -> None:
        message = raw_decode(data)
        if message.t == "ack" and self.pending.pop(message.rid, None) is not None:
            self.stats.accepted += 1
            self._completed()

    def on_recipient(self, data: bytes) -> None:
        message = raw_decode(data)
        if message.t != "msg":
            return
        now = time.monotonic()
        self.r.write(raw_encode(RawMsg(t="ack", to=message.sender, rid=message.rid)))
        stats = self.stats
        stats.delivered += 1
        stats.acked += 1
        sent = self.pending.get(message.rid)
        if sent is not None:
            stats.record(sent, now)


async def _both(sender: Awaitable[Wire], recipient: Awaitable[Wire]) -> tuple[Wire, Wire]:
    """Open a pair's two connections at once; if one fails, close the other."""
    got = await asyncio.gather(sender, recipient, return_exceptions=True)
    wires = [w for w in got if isinstance(w, Wire)]
    if len(wires) == 2:
        return wires[0], wires[1]
    await asyncio.gather(*(w.close() for w in wires))
    raise next(e for e in got if isinstance(e, BaseException))


async def gchat_wire(url: str, dev: Dev) -> Wire:
    """``dev``'s authenticated connection, set up as ``GChatConn``'s is."""
    wire = await Wire.open(url, dev.ip)
    try:
        await authenticate(wire, client_codec(MSGPACK_SUBPROTOCOL), dev)
    except BaseException:
        await wire.close()
        raise
    return wire


async def raw_wire(url: str, name: str, ip: str) -> Wire:
    """A connection to the raw relay introduced as ``name``, as ``RawConn``'s is."""
    wire = await Wire.open(url, ip)
    try:
        await hello(wire, name)
    except BaseException:
        await wire.close()
        raise
    return wire


async def _open_pairs(spec: dict[str, Any], stats: Stats) -> list[Pair]:
    pairs: list[tuple[Dev, Dev]] = spec["pairs"]
    kind: type[GChatPair] | type[RawPair] = RawPair if spec["target"] == "raw" else GChatPair
    results = await gather_limited(
        [kind.open(i, stats, spec, s, r) for i, (s, r) in enumerate(pairs)],
        spec.get("concurrency", 32),
    )
    opened = [p for p in results if isinstance(p, Pair)]
    failures = [r for r in results if not isinstance(r, Pair)]
    if failures:
        await asyncio.gather(*(p.close() for p in opened), return_exceptions=True)
        raise RuntimeError(f"{len(failures)} pairs failed to connect: {failures[0]!r}")
    for pair in opened:
        pair.start()
    return opened


async def op_relay(spec: dict[str, Any], gate: Gate) -> dict[str, Any]:
    """Closed-loop (``window`` in flight per pair) or fixed-rate 1:1 relay."""
    stats = Stats(0.0, 0.0)
    pairs = await _open_pairs(spec, stats)
    go = await gate({"pairs": len(pairs)})
    start = go["start_at"]
    duration, warmup = spec["duration"], spec["warmup"]
    stats.measure_from, stats.measure_to = start + warmup, start + duration
    end = start + duration
    await sleep_until(start)
    cpu0, wall0 = cpu_now(), time.monotonic()
    with Collections() as collections:
        if spec["mode"] == "closed":
            for pair in pairs:
                pair.closed_loop(spec["window"], end)
            await sleep_until(end)
        else:
            await _fixed_rate(pairs, spec["rate"], start, end, stats)
    cpu1, wall1 = cpu_now(), time.monotonic()
    drain_until = time.monotonic() + spec.get("drain_timeout", 10.0)
    while any(p.outstanding for p in pairs) and time.monotonic() < drain_until:  # noqa: ASYNC110
        await asyncio.sleep(0.05)
    outstanding = sum(p.outstanding for p in pairs)
    await asyncio.gather(*(p.close() for p in pairs), return_exceptions=True)
    return {
        "pairs": len(pairs),
        "sent": stats.sent,
        "accepted": stats.accepted,
        "rejected": dict(stats.rejected),
        "delivered": stats.delivered,
        "acked": stats.acked,
        "outstanding_at_end": outstanding,
        "delivered_in_window": stats.delivered_in_window,
        "window_s": duration - warmup,
        "verified": stats.verified,
        "bad_plaintext": stats.bad_plaintext,
        "latencies_ms": stats.latencies,
        "windows": stats.windows,
        "measure_from": stats.measure_from,
        "late_max_ms": stats.late_max * 1000.0,
        "gc": {"passes": collections.passes, "full": collections.full,
               "max_ms": collections.max_s * 1000.0},
        "cpu_s": cpu1 - cpu0,
        "wall_s": wall1 - wall0,
    }


async def _fixed_rate(pairs: list[Pair], rate: float, start: float, end: float,
                      stats: Stats) -> None:
    """Open loop: sends at ``rate``/s round-robin over the pairs, each stamped
    with its intended time (so a late generator shows up as latency, not as
    a silently lower rate). A wake-up sends all that is due.

    uvloop's timers count whole milliseconds: a sleep under half of one is
    a zero-timeout poll, i.e. a spin. Spinning for the last fraction of a
    millisecond keeps a lone send on time, but once sends are less than a
    millisecond apart the loop would spin between all of them, at a core's
    worth of CPU taken from the node being measured. So within ``TICK`` of
    the last send the loop sleeps a whole ``TICK`` and sends what came due
    together (each still stamped with its own intended time). How late the
    loop woke, at worst, goes to ``stats.late_max``: a stall of the generator
    shows up there, one of the server does not."""
    interval = 1.0 / rate
    due = start
    sent_at = -TICK
    turn = itertools.cycle(pairs)
    while due < end:
        now = time.monotonic()
        wait = due - now
        if wait > 0:
            if wait < TICK and now - sent_at < TICK:
                wait = TICK
            await asyncio.sleep(wait)
            continue
        sent_at = now
        if now - due > stats.late_max and due >= stats.measure_from:
            stats.late_max = now - due
        while due <= now and due < end:
            pair = next(turn)
            if pair.backoff_until <= now:
                pair.send(due)
            due += interval


# --- idle connections ---------------------------------------------------------------


async def op_idle(spec: dict[str, Any], gate: Gate) -> dict[str, Any]:
    devs: list[Dev] = spec["devs"]
    started = time.monotonic()
    opens: list[Awaitable[GChatConn | RawConn]]
    if spec["target"] == "raw":
        opens = [RawConn.open(spec["url"], str(d.device_id), d.ip) for d in devs]
    else:
        opens = [GChatConn.open(spec["url"], d) for d in devs]
    results = await gather_limited(opens, spec.get("concurrency", 64))
    conns = [c for c in results if isinstance(c, GChatConn | RawConn)]
    errors = [repr(r) for r in results if not isinstance(r, GChatConn | RawConn)]
    opened_in = time.monotonic() - started
    await gate({"open": len(conns), "failed": len(errors), "errors": errors[:3],
                "opened_in_s": opened_in})
    await gather_limited([c.close() for c in conns], 256)
    return {"open": len(conns), "failed": len(errors), "errors": errors[:3],
            "opened_in_s": opened_in}


# --- draining queued envelopes (backlog, reconnect storm) -------------------------------


async def _drain_one(url: str, dev: Dev, expected: int, t0: float, deadline: float,
                     ack_batch: int) -> tuple[float, float, int, int]:
    """Connect, authenticate, take every queued envelope until ``queue_empty``
    and ``expected`` envelopes, acking them up to ``ack_batch`` to a frame
    (``Acks``); returns (auth s, done s, envelopes, ack frames)."""
    conn = await GChatConn.open(url, dev)
    authenticated = time.monotonic() - t0
    acks = Acks(conn, ack_batch)
    received, empty = 0, False
    try:
        # One timeout for the whole drain: ``wait_for`` per frame would make
        # each receive a task of its own, which always suspends.
        async with asyncio.timeout(deadline - time.monotonic()):
            while received < expected or not empty:
                frame = conn.decode(await conn.ws.recv())
                if isinstance(frame, f.Deliver):
                    received += 1
                    await acks.add(frame.position)
                elif isinstance(frame, f.QueueEmpty):
                    empty = True
            await acks.flush()
        return authenticated, time.monotonic() - t0, received, acks.frames
    except TimeoutError:
        raise TimeoutError(f"drained {received}/{expected} before the deadline") from None
    finally:
        await conn.close()


async def op_drain(spec: dict[str, Any], gate: Gate) -> dict[str, Any]:
    devs: list[Dev] = spec["devs"]
    expected: list[int] = spec["expected"]
    go = await gate({"devices": len(devs)})
    t0 = go["start_at"]
    await sleep_until(t0)
    cpu0 = cpu_now()
    deadline = t0 + spec.get("timeout", 300.0)
    ack_batch = spec.get("ack_batch", 1)
    coros = [_drain_one(spec["url"], d, n, t0, deadline, ack_batch)
             for d, n in zip(devs, expected, strict=True)]
    results = await gather_limited(coros, spec.get("concurrency", 100_000))
    done = [r for r in results if isinstance(r, tuple)]
    errors = [repr(r) for r in results if not isinstance(r, tuple)]
    return {
        "auth_s": [r[0] for r in done],
        "done_s": [r[1] for r in done],
        "received": sum(r[2] for r in done),
        "ack_frames": sum(r[3] for r in done),
        "failed": len(errors),
        "errors": errors[:3],
        "cpu_s": cpu_now() - cpu0,
    }


# --- fan-out, pairwise ------------------------------------------------------------------


async def _await_one(conn: GChatConn) -> float:
    while True:
        frame = conn.decode(await conn.ws.recv())
        if isinstance(frame, f.Deliver):
            now = time.monotonic()
            await conn.ws.send(conn.encode(f.Ack(positions=[frame.position])))
            return now


async def op_fanout(spec: dict[str, Any], gate: Gate) -> dict[str, Any]:
    """Recipients wait for one message each; worker 0 also runs the sender."""
    url = spec["url"]
    recipients: list[Dev] = spec["recipients"]
    opened = await gather_limited([GChatConn.open(url, d) for d in recipients], 64)
    conns = [c for c in opened if isinstance(c, GChatConn)]
    if len(conns) != len(recipients):
        bad = [repr(c) for c in opened if not isinstance(c, GChatConn)]
        raise RuntimeError(f"{len(bad)} recipients failed to connect: {bad[0]}")
    waits = [asyncio.create_task(_await_one(c)) for c in conns]
    sender_dev: Dev | None = spec.get("sender")
    sender: GChatConn | None = None
    sends: list[tuple[int, Any]] = []
    if sender_dev is not None:
        sender = await GChatConn.open(url, sender_dev)
        for n, target in enumerate(spec["all_recipients"], start=1):
            ciphertext = seal_pool(target.identity_key(), 1)[0]
            sends.append((n, f.Send(
                rid=n, client_message_id=f"fanout.{n}", recipient=target.official_id,
                envelopes=[f.Envelope(device_id=target.device_id, ciphertext=ciphertext)])))
    go = await gate({"recipients": len(conns)})
    t0 = go["start_at"]
    await sleep_until(t0)
    sender_result: dict[str, Any] = {}
    if sender is not None:
        sender_result = await _fanout_send(sender, sends, t0)
    timeout = spec.get("timeout", 120.0)
    done, pending = await asyncio.wait(waits, timeout=max(1.0, t0 + timeout - time.monotonic()))
    for task in pending:
        task.cancel()
    times = [t.result() - t0 for t in done if not t.exception()]
    await gather_limited([c.close() for c in conns], 256)
    return {"received_s": times, "missing": len(recipients) - len(times), **sender_result}


async def _fanout_send(sender: GChatConn, sends: list[tuple[int, Any]],
                       t0: float) -> dict[str, Any]:
    """Send everything back to back; then resend what was rate-limited, one by
    one, after the retry-after the server gave."""
    ws, encode, decode = sender.ws, sender.encode, sender.decode

    async def reply() -> Any:
        while True:  # skip frames pushed without a rid (queue_empty, prekeys_low)
            frame = decode(await ws.recv())
            if getattr(frame, "rid", None) is not None:
                return frame

    for _, frame in sends:
        await ws.send(encode(frame))
    burst_sent = time.monotonic() - t0
    by_rid = dict(sends)
    accepted, retry, rejected_codes = 0, [], Counter[str]()
    for _ in sends:
        answer = await reply()
        if isinstance(answer, f.Accepted):
            accepted += 1
        else:
            rejected_codes[answer.code] += 1
            retry.append(answer.rid)
    first_pass_accepted = accepted
    first_pass_s = time.monotonic() - t0
    for rid in sorted(retry):
        while True:
            await ws.send(encode(by_rid[rid]))
            answer = await reply()
            if isinstance(answer, f.Accepted):
                accepted += 1
                break
            if answer.code != "rate_limited":
                rejected_codes[f"final:{answer.code}"] += 1
                break
            await asyncio.sleep(answer.retry_after or 0.02)
    all_accepted = time.monotonic() - t0
    await sender.close()
    return {
        "sender": {
            "burst_sent_s": burst_sent,
            "first_pass_accepted": first_pass_accepted,
            "first_pass_s": first_pass_s,
            "rejected": dict(rejected_codes),
            "accepted": accepted,
            "all_accepted_s": all_accepted,
        }
    }


OPS: dict[str, Callable[[dict[str, Any], Gate], Awaitable[dict[str, Any]]]] = {
    "enroll": op_enroll,
    "relay": op_relay,
    "idle": op_idle,
    "drain": op_drain,
    "fanout": op_fanout,
}


# --- the worker process ---------------------------------------------------------------


def worker_main(conn: Connection, number: int) -> None:
    raise_nofile()
    try:
        import uvloop

        uvloop.run(_serve(conn, number))
    except ImportError:  # pragma: no cover
        asyncio.run(_serve(conn, number))


async def _serve(conn: Connection, number: int) -> None:
    loop = asyncio.get_running_loop()
    inbox: asyncio.Queue[Any] = asyncio.Queue()

    def read() -> None:
        while True:
            try:
                message = conn.recv()
            except (EOFError, OSError):
                message = None
            loop.call_soon_threadsafe(inbox.put_nowait, message)
            if message is None:
                return

    threading.Thread(target=read, daemon=True, name="pipe-reader").start()

    async def gate(info: dict[str, Any]) -> dict[str, Any]:
        conn.send(("ready", info))
        message = await inbox.get()
        if message is None or message[0] != "go" or message[1].get("abort"):
            raise Aborted("the run was aborted")
        payload: dict[str, Any] = message[1]
        return payload

    while True:
        message = await inbox.get()
        if message is None or message[0] == "stop":
            return
        spec = message[1]
        try:
            result = await OPS[spec["op"]](spec, gate)
        except Aborted:
            conn.send(("aborted", None))
        except BaseException:
            conn.send(("error", traceback.format_exc()))
        else:
            conn.send(("done", result))


class WorkerError(RuntimeError):
    pass


class Workers:
    """A fixed set of generator processes (spawned, so no loop is inherited)."""

    def __init__(self, count: int) -> None:
        context = multiprocessing.get_context("spawn")
        self.count = count
        self._conns: list[Connection] = []
        self._procs: list[Any] = []
        for number in range(count):
            parent, child = context.Pipe()
            proc = context.Process(target=worker_main, args=(child, number), daemon=True,
                                   name=f"loadgen-{number}")
            proc.start()
            child.close()
            self._conns.append(parent)
            self._procs.append(proc)
        self._threads = ThreadPoolExecutor(max_workers=count, thread_name_prefix="workers")

    @property
    def pids(self) -> list[int]:
        return [p.pid for p in self._procs]

    async def _recv(self, i: int) -> Any:
        return await asyncio.get_running_loop().run_in_executor(
            self._threads, self._conns[i].recv
        )

    async def run(
        self,
        specs: list[dict[str, Any]],
        on_ready: Callable[[list[dict[str, Any]]], Awaitable[dict[str, Any]]] | None = None,
    ) -> list[dict[str, Any]]:
        """Run one operation per spec (worker i gets specs[i]); gated ones report
        ready, get ``await on_ready(infos)`` as their go, then their results."""
        used = range(len(specs))
        for i in used:
            self._conns[i].send(("run", specs[i]))
        if on_ready is None:
            replies = await asyncio.gather(*(self._recv(i) for i in used))
            return self._results(replies)
        first = await asyncio.gather(*(self._recv(i) for i in used))
        failed = [m for m in first if m[0] != "ready"]
        go: dict[str, Any] = {"abort": True}
        if not failed:
            try:
                go = await on_ready([m[1] for m in first])
            except BaseException:
                for i in used:
                    self._conns[i].send(("go", {"abort": True}))
                await asyncio.gather(*(self._recv(i) for i in used))
                raise
        for i, message in zip(used, first, strict=True):
            if message[0] == "ready":
                self._conns[i].send(("go", go))
        replies = [
            m if m[0] != "ready" else await self._recv(i)
            for i, m in zip(used, first, strict=True)
        ]
        return self._results(replies)

    @staticmethod
    def _results(replies: list[Any]) -> list[dict[str, Any]]:
        errors = [m[1] for m in replies if m[0] == "error"]
        if errors:
            raise WorkerError("a load-generator worker failed:\n" + errors[0])
        return [m[1] for m in replies if m[0] == "done"]

    def close(self) -> None:
        for conn in self._conns:
            with contextlib.suppress(OSError):
                conn.send(("stop", None))
        for proc in self._procs:
            proc.join(10)
            if proc.is_alive():
                proc.terminate()
                proc.join(5)
        self._threads.shutdown(wait=False)
