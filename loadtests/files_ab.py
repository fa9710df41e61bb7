"""A big file through node checkouts and the bare file handler, alternated, each leg metered.

    python -m loadtests.files_ab --variant before=/path/to/checkout --variant after=. \\
        [--rounds 6] [--mib 100] [--quiet 0.25]

Why: the files scenario (``loadtests run files``) times an upload and a
download together against the server's CPU over both, on one node, best
of 2 rounds; on a shared 2-core machine one busy second decides it. This
starts the bare file handler and one node per checkout on one database
(the checkouts must have the same migrations; the first variant's node
enrols the two devices), then, for ``--rounds`` rounds in alternating
order (A B C, C B A, ...), uploads ``--mib`` MiB to each server with the
scenario's client (``loadtests.files.FileConn``: 128 KiB chunks, 8 in
flight, SHA-256 checked) and downloads it again. For each leg it reports
MiB/s, the server's CPU per MiB (its process, threads included; and split
into the loop's thread and the others, user and system) and this
process's (the client's) CPU per MiB; and the PostgreSQL WAL written
during each upload (PostgreSQL's, so other databases' writes count too:
on a quiet cluster it is the upload's own). Before each round it waits (up to 30 s) until the
machine's CPUs have been idle for 0.5 s (at most ``--quiet`` of them busy),
and prints how busy they were: the rounds that started on a quiet machine
are the ones whose MiB/s say something. Prints one line per leg, then the
medians (and the best MiB/s) with their ratios to the bare handler.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import resource
import statistics
import time
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

import asyncpg

from loadtests import files, harness
from loadtests.clients import Dev
from loadtests.scenarios import Run


@dataclass
class Leg:
    """One upload or download: its speed and what it cost."""

    mib_s: float
    server_ms: float  # server CPU per MiB
    client_ms: float  # this process's CPU per MiB
    #: server CPU per MiB: loop thread user, system; other threads user, system
    split: tuple[float, ...] = ()


@dataclass
class Side:
    """A server under test: the bare handler, or a node from one checkout."""

    name: str
    url: str
    pid: int
    node: bool
    up: list[Leg] = field(default_factory=list)
    down: list[Leg] = field(default_factory=list)


def _busy(seconds: float = 0.5) -> float:
    """The share of the machine's CPU time that was not idle over ``seconds``."""

    def read() -> tuple[int, int]:
        with open("/proc/stat") as stat:
            ticks = [int(n) for n in stat.readline().split()[1:]]
        return sum(ticks), ticks[3] + ticks[4]

    total0, idle0 = read()
    time.sleep(seconds)
    total1, idle1 = read()
    return 1 - (idle1 - idle0) / max(1, total1 - total0)


async def _quiet(limit: float, wait: float = 30.0) -> float:
    """Wait until the machine is at most ``limit`` busy (or ``wait`` passed); how busy."""
    end = time.monotonic() + wait
    while True:
        busy = await asyncio.to_thread(_busy)
        if busy <= limit or time.monotonic() > end:
            return busy


def _threads(pid: int) -> list[float]:
    """CPU seconds of ``pid``: loop thread user, system; other threads user, system."""
    out = [0.0] * 4
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            text = Path(f"/proc/{pid}/task/{tid}/stat").read_text()
        except OSError:
            continue
        fields = text[text.rindex(")") + 2 :].split()
        k = 0 if int(tid) == pid else 2
        out[k] += int(fields[11]) / harness.CLK_TCK
        out[k + 1] += int(fields[12]) / harness.CLK_TCK
    return out


def _own_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


async def _opener(side: Side, dev: Dev) -> files.FileConn:
    if side.node:
        return await files.FileConn.gchat(side.url, dev)
    return await files.FileConn.bare(side.url, dev)


async def _round(side: Side, run: Run, mib: int, quiet: float) -> None:
    """Upload ``mib`` MiB to ``side`` and download it again, each leg metered."""
    sender, recipient = run.devs[0], run.devs[1]
    size = mib * files.MIB
    busy = await _quiet(quiet)
    assert run.database_url is not None
    pg = await asyncpg.connect(run.database_url)
    try:
        lsn = await pg.fetchval("SELECT pg_current_wal_lsn()")
        conn = await _opener(side, sender)
        t0, c0, k0 = time.monotonic(), _threads(side.pid), _own_cpu()
        attachment, sent = await conn.upload(files.Payload(files.new_tag(), size),
                                             recipient.official_id)
        t1, c1, k1 = time.monotonic(), _threads(side.pid), _own_cpu()
        wal = await pg.fetchval("SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), $1::pg_lsn)", lsn)
    finally:
        await pg.close()
    await conn.close()
    conn = await _opener(side, recipient)
    t2, c2, k2 = time.monotonic(), _threads(side.pid), _own_cpu()
    got, received = await conn.download(attachment)
    t3, c3, k3 = time.monotonic(), _threads(side.pid), _own_cpu()
    await conn.close()
    if got != size or received != sent:
        raise files.TransferFailed(f"{side.name}: the file came back different")
    for legs, (ta, ca, ka), (tb, cb, kb) in ((side.up, (t0, c0, k0), (t1, c1, k1)),
                                             (side.down, (t2, c2, k2), (t3, c3, k3))):
        split = tuple(1000 * (b - a) / mib for a, b in zip(ca, cb, strict=True))
        legs.append(Leg(mib / (tb - ta), sum(split), 1000 * (kb - ka) / mib, split))
    up, down = side.up[-1], side.down[-1]
    print(f"[machine {busy:.2f} busy] {side.name:10} up {up.mib_s:5.0f} MiB/s, "
          f"server {up.server_ms:.2f} ms/MiB ({' '.join(f'{x:.2f}' for x in up.split)}), "
          f"client {up.client_ms:.2f}, WAL {int(wal)} B | down {down.mib_s:5.0f} MiB/s, "
          f"server {down.server_ms:.2f}, client {down.client_ms:.2f}", flush=True)


def _summary(sides: list[Side]) -> None:
    bare = sides[0]
    print("server        best up  median up  server ms/MiB up | best down  median down  "
          "server ms/MiB down")
    for side in sides:
        row = []
        for legs, ref in ((side.up, bare.up), (side.down, bare.down)):
            best, median = max(x.mib_s for x in legs), statistics.median(x.mib_s for x in legs)
            cpu = statistics.median(x.server_ms for x in legs)
            ref_best = max(x.mib_s for x in ref)
            ref_cpu = statistics.median(x.server_ms for x in ref)
            # A small file may take less than one clock tick of /proc's CPU count.
            ratio = f"{cpu / ref_cpu:.2f}x" if ref_cpu else "-"
            row.append(f"{best:7.0f} ({best / ref_best:.2f}x) {median:7.0f}  "
                       f"{cpu:.2f} ({ratio})")
        print(f"{side.name:10} {row[0]} | {row[1]}")


async def run_variants(variants: list[tuple[str, Path]], rounds: int, mib: int,
                       quiet: float, database_url: str | None = None) -> list[Side]:
    """The bare handler and a node per (name, checkout), each with its legs;
    on ``database_url`` if given (else a database of its own, dropped after)."""
    run = Run(short=True, workers_count=1, database_url=database_url, log=lambda _: None)
    try:
        harness.REPO = variants[0][1]
        await run.setup(2, raw_relay=False)
        assert run.node is not None and run.database_url is not None
        bare = harness.start_raw_relay(run.workspace.path("logs"), "loadtests.bare_files",
                                       "bare-files")
        run._extra.append(bare)
        sides = [Side("bare", bare.url, bare.pid, node=False),
                 Side(variants[0][0], run.node.url, run.node.pid, node=True)]
        for name, checkout in variants[1:]:
            harness.REPO = checkout  # the node's working directory: its gchat
            node = harness.start_node(f"gchat-{name}", run.database_url,
                                      run.workspace.path("node"), run.workspace.path("logs"))
            run._extra.append(node)
            sides.append(Side(name, node.url, node.pid, node=True))
        for side in sides:  # warm-up: connections, threads, plans
            sender, recipient = run.devs[0], run.devs[1]
            await files.one_file(partial(_opener, side), sender, recipient, files.MIB,
                                 files.new_tag())
        for n in range(rounds):
            for side in sides if n % 2 == 0 else sides[::-1]:
                await _round(side, run, mib, quiet)
        _summary(sides)
        return sides
    finally:
        await run.teardown()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--variant", action="append", default=[], metavar="NAME=CHECKOUT")
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--mib", type=int, default=100)
    parser.add_argument("--quiet", type=float, default=0.25,
                        help="start a round once at most this share of the CPUs was busy")
    args = parser.parse_args()
    variants = []
    for spec in args.variant or ["node=."]:
        name, _, path = spec.partition("=")
        checkout = Path(path or ".").absolute()
        if not (checkout / "gchat" / "__main__.py").exists():
            raise SystemExit(f"{checkout}: not a checkout of this repository")
        variants.append((name, checkout))
    asyncio.run(run_variants(variants, args.rounds, args.mib, args.quiet))


if __name__ == "__main__":
    main()
