"""Group fan-out: one sender-key message to a 1,000-member group, every device online.

``python -m loadtests.group_fanout [--members 1000] [--messages 10]``

Sets up like the other scenarios (``loadtests.scenarios.Run``: a fresh
database, a G-Chat node subprocess, officials and devices enrolled through
the protocol, one device per official, each from its own loopback address),
then in this process:

1. connects every device (token authentication) and starts a reader per
   connection that records when each group message arrives;
2. the first official creates a group of all ``--members`` officials with
   ``create_group`` (one server-signed ``created`` event to every device);
3. sends ``--messages`` group messages one after the other, each one real
   sender-key ciphertext (``crypto.sender_keys``: encrypted and signed once),
   and for each measures the time from ``send_group`` to ``accepted`` and to
   the arrival at the last of the other member devices. Before the devices
   ack, it checks in PostgreSQL that the message has exactly one body row
   and one body-less inbox row per recipient device; after the acks, that the
   body is gone. Every recipient then decrypts what it got with the sender's
   distribution (handed over in-process here: the pairwise distribution is
   the client's business and is covered by tests/conversations).

It prints the figures and a JSON line (and writes it with ``--out``).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any
from uuid import UUID

import asyncpg
from websockets.exceptions import ConnectionClosed

from crypto.sender_keys import SenderKeyState
from loadtests.clients import Dev, GChatConn
from loadtests.scenarios import Run, percentile
from protocol import frames as f


class Member:
    """One device's connection: replies by rid, deliveries recorded, acks on demand."""

    def __init__(self, conn: GChatConn) -> None:
        self.conn = conn
        self.dev = conn.dev
        self.replies: dict[int, asyncio.Future[Any]] = {}
        self.arrivals: dict[UUID, float] = {}
        self.ciphertexts: dict[UUID, bytes] = {}
        self.unacked: list[int] = []
        self.events = 0
        self.task = asyncio.create_task(self._read())

    async def _read(self) -> None:
        try:
            async for raw in self.conn.ws:
                frame = self.conn.decode(raw)
                if isinstance(frame, f.Deliver):
                    if frame.kind == "group":
                        self.arrivals[frame.message_id] = time.perf_counter()
                        self.ciphertexts[frame.message_id] = frame.ciphertext
                        self.unacked.append(frame.position)  # acked after the DB check
                    else:
                        self.events += frame.kind == "membership"
                        await self.conn.ws.send(self.conn.encode(f.Ack(positions=[frame.position])))
                    continue
                rid = getattr(frame, "rid", None)
                if rid is not None and rid in self.replies:
                    self.replies.pop(rid).set_result(frame)
        except ConnectionClosed:
            pass

    async def request(self, frame: Any) -> Any:
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self.replies[frame.rid] = future
        await self.conn.ws.send(self.conn.encode(frame))
        reply = await asyncio.wait_for(future, 60)
        if isinstance(reply, f.Error):
            raise RuntimeError(f"{type(frame).__name__}: {reply.code}: {reply.message}")
        return reply

    async def ack_all(self) -> None:
        positions, self.unacked = self.unacked, []
        for i in range(0, len(positions), 500):
            await self.conn.ws.send(self.conn.encode(f.Ack(positions=positions[i : i + 500])))

    async def close(self) -> None:
        await self.conn.close()
        self.task.cancel()


async def connect_all(url: str, devs: list[Dev], concurrency: int = 50) -> list[Member]:
    gate = asyncio.Semaphore(concurrency)

    async def one(dev: Dev) -> Member:
        async with gate:
            return Member(await GChatConn.open(url, dev))

    return list(await asyncio.gather(*(one(d) for d in devs)))


async def wait_for(predicate: Any, within: float, step: float = 0.002) -> bool:
    deadline = time.perf_counter() + within
    while time.perf_counter() < deadline:
        if predicate():
            return True
        await asyncio.sleep(step)
    return bool(predicate())


async def measure(run: Run, members_count: int, messages: int) -> dict[str, Any]:
    assert run.node is not None and run.database_url is not None
    devs = run.devs[:members_count]
    started = time.monotonic()
    members = await connect_all(run.node.url, devs)
    run.log(f"connected {len(members)} devices in {time.monotonic() - started:.1f}s")
    sender, receivers = members[0], members[1:]
    db = await asyncpg.connect(run.database_url)
    try:
        t0 = time.perf_counter()
        state = await sender.request(
            f.CreateGroup(
                rid=1, title="ministry-wide", members=[d.official_id for d in devs[1:]]
            )
        )
        created_s = time.perf_counter() - t0
        everyone_has_event = await wait_for(lambda: all(m.events for m in members), 60)
        event_s = time.perf_counter() - t0
        run.log(f"group of {members_count} created in {created_s * 1000:.0f} ms; "
                f"'created' event at every device after {event_s * 1000:.0f} ms "
                f"({'all' if everyone_has_event else 'NOT all'})")
        key = SenderKeyState.generate()
        distribution = key.distribution_message()
        rounds = []
        for n in range(messages):
            plaintext = f"group message {n} ".encode() + os.urandom(200)
            ciphertext = key.encrypt(plaintext)
            t_send = time.perf_counter()
            accepted = await sender.request(
                f.SendGroup(rid=100 + n, client_message_id=f"fan-{n}",
                            conversation_id=state.conversation_id, seq=state.seq,
                            ciphertext=ciphertext)
            )
            t_accepted = time.perf_counter()
            mid = accepted.message_id
            complete = await wait_for(lambda mid=mid: all(mid in r.arrivals for r in receivers),
                                      30)
            arrivals = [r.arrivals[mid] - t_send for r in receivers if mid in r.arrivals]
            bodies = await db.fetchval(
                "SELECT count(*) FROM message_bodies WHERE message_id = $1", mid)
            rows = await db.fetchrow(
                """SELECT count(*) AS n, count(ciphertext) AS with_ciphertext
                   FROM inbox WHERE message_id = $1""", mid)
            await asyncio.gather(*(r.ack_all() for r in receivers))
            body_gone = await wait_for_async(
                lambda mid=mid: _count(db, "SELECT count(*) FROM message_bodies "
                                           "WHERE message_id = $1", mid), 10)
            rounds.append({
                "accepted_ms": (t_accepted - t_send) * 1000,
                "first_ms": min(arrivals) * 1000 if arrivals else None,
                "p50_ms": percentile(arrivals, 50) * 1000,
                "last_ms": max(arrivals) * 1000 if arrivals else None,
                "reached": len(arrivals), "complete": complete,
                "body_rows": bodies, "inbox_rows": rows["n"],
                "inbox_rows_with_ciphertext": rows["with_ciphertext"],
                "body_deleted_after_acks": body_gone,
            })
            run.log(f"  message {n}: accepted {rounds[-1]['accepted_ms']:.1f} ms, "
                    f"last of {len(receivers)} devices {rounds[-1]['last_ms']:.1f} ms, "
                    f"body rows {bodies}, inbox rows {rows['n']} "
                    f"(with own ciphertext {rows['with_ciphertext']}), "
                    f"body deleted after acks: {body_gone}")
        # Every recipient reads every message (one state per recipient, as a device would).
        failures = 0
        for r in receivers:
            copy = SenderKeyState.from_distribution(distribution)
            for mid in sorted(r.ciphertexts, key=lambda m: r.arrivals[m]):
                try:
                    copy.decrypt(r.ciphertexts[mid])
                except Exception:
                    failures += 1
        lasts = [x["last_ms"] for x in rounds if x["last_ms"] is not None]
        return {
            "members": members_count,
            "recipient_devices": len(receivers),
            "messages": messages,
            "create_group_ms": round(created_s * 1000, 1),
            "created_event_everywhere_ms": round(event_s * 1000, 1),
            "accepted_ms_median": round(statistics.median(x["accepted_ms"] for x in rounds), 1),
            "last_device_ms_median": round(statistics.median(lasts), 1) if lasts else None,
            "last_device_ms_max": round(max(lasts), 1) if lasts else None,
            "p50_device_ms_median": round(statistics.median(x["p50_ms"] for x in rounds), 1),
            "all_reached": all(x["complete"] for x in rounds),
            "body_rows_per_message": sorted({x["body_rows"] for x in rounds}),
            "inbox_rows_per_message": sorted({x["inbox_rows"] for x in rounds}),
            "inbox_rows_with_own_ciphertext": sum(x["inbox_rows_with_ciphertext"] for x in rounds),
            "bodies_deleted_after_acks": all(x["body_deleted_after_acks"] for x in rounds),
            "decryption_failures": failures,
            "rounds": rounds,
        }
    finally:
        await db.close()
        await asyncio.gather(*(m.close() for m in members), return_exceptions=True)


async def _count(db: asyncpg.Connection, query: str, *args: object) -> int:
    return int(await db.fetchval(query, *args))


async def wait_for_async(count: Any, within: float) -> bool:
    deadline = time.perf_counter() + within
    while time.perf_counter() < deadline:
        if await count() == 0:
            return True
        await asyncio.sleep(0.02)
    return False


async def main_async(args: argparse.Namespace) -> dict[str, Any]:
    run = Run(short=True, workers_count=args.workers, log=lambda line: print(line, flush=True))
    try:
        await run.setup(args.members, raw_relay=False)
        return await measure(run, args.members, args.messages)
    finally:
        await run.teardown()


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m loadtests.group_fanout")
    parser.add_argument("--members", type=int, default=1000)
    parser.add_argument("--messages", type=int, default=10)
    parser.add_argument("--workers", type=int, default=2, help="enrolment worker processes")
    parser.add_argument("--out", type=Path, help="write the JSON result here")
    args = parser.parse_args()
    result = asyncio.run(main_async(args))
    print()
    print(f"group fan-out: {result['members']} members, {result['recipient_devices']} "
          f"recipient devices online, {result['messages']} messages")
    print(f"  send -> accepted (committed): median {result['accepted_ms_median']} ms")
    print(f"  send -> last member device:   median {result['last_device_ms_median']} ms, "
          f"max {result['last_device_ms_max']} ms (median device "
          f"{result['p50_device_ms_median']} ms)")
    print(f"  every device reached: {result['all_reached']}; decryption failures: "
          f"{result['decryption_failures']}")
    print(f"  body rows per message: {result['body_rows_per_message']}; inbox rows per "
          f"message: {result['inbox_rows_per_message']} (with their own ciphertext: "
          f"{result['inbox_rows_with_own_ciphertext']}); bodies deleted after the acks: "
          f"{result['bodies_deleted_after_acks']}")
    summary = {k: v for k, v in result.items() if k != "rounds"}
    print(json.dumps(summary))
    if args.out:
        args.out.write_text(json.dumps(result, indent=2))
    ok = (result["all_reached"] and result["body_rows_per_message"] == [1]
          and result["decryption_failures"] == 0)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
