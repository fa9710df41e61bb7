"""The disk's own flush stalls, timed beside a phase by a process that is not G-Chat.

A node answers ``accepted`` only once PostgreSQL's commit is on disk, so
every send waits for a WAL flush (``fdatasync``), and while one flush is
slow every message in flight waits with it. On the virtual machines these
tests run on, a flush now and then takes 10-80 ms whatever runs: this probe,
alone on a quiet machine with nothing dirty in the page cache, saw a few a
minute (docs/PERFORMANCE.md). One such stall in a phase at half capacity
holds up a few hundred messages, which is the 1% a p99 counts.

So each relay phase runs this probe beside it, in its own process (a thread
of the harness would wait for the GIL after each flush and report its own
stalls): it writes 8 KiB and flushes them every ``INTERVAL_S`` into a file
in the directory it is given (the run's workspace; the run says whether
that is on PostgreSQL's file system, :func:`same_device`), and times each
flush. A flush slower than ``STALL_MS`` is a stall; a lump of the phase's
latency whose messages were in flight during a stall, or while the commits
queued behind it cleared, is the disk's, not the node's
(:func:`overlapping`). The probe's own flushes are 100 a second of 8 KiB:
a node at half capacity flushes its WAL several hundred times a second.
PostgreSQL's ``pg_test_fsync`` reports a disk's average flush rate, not
when each slow flush happened, which lining lumps up needs.

:class:`DiskProbe` runs ``python -m loadtests.disk_probe DIR``, which flushes
until its standard input closes, then prints every flush's start and length
as JSON and removes its file.
"""

from __future__ import annotations

import asyncio
import json
import os
import select
import sys
import time
from pathlib import Path

#: Seconds between the end of one flush and the next write.
INTERVAL_S = 0.01
#: A flush slower than this (milliseconds) is a stall; a quiet flush on
#: these machines takes 0.1-0.5 ms.
STALL_MS = 10.0
#: Bytes written before each flush: one PostgreSQL page, as a lone commit's
#: WAL flush writes.
WRITE_BYTES = 8192
#: The file cycles over this many bytes, so it stays small.
FILE_BYTES = 1 << 20


def overlapping(stalls: list[tuple[float, float]], measure_from: float, window_s: float,
                window_ids: list[int], window_max_ms: list[float],
                lump_ids: list[int]) -> dict[str, int]:
    """How many lump windows, and how many other windows, a stall held up.

    Window ``i`` holds the messages sent in ``[measure_from + i * window_s,
    + window_s)``; they were in flight until at most its slowest message's
    latency (``window_max_ms``, in ``window_ids``' order) later. A stall
    held the window up if it overlapped that span, or its catch-up did: the
    commits queued behind a stall of S ms take about as long again to clear
    at half capacity, so a stall counts from its start to 2 S after. The
    other windows' count is the base rate: with stalls in most windows, an
    overlap would say nothing.
    """
    spans = [(t, t + 2 * ms / 1000) for t, ms in stalls]
    lumps = set(lump_ids)
    counts = {"lump_windows": 0, "lump_windows_in_stall": 0,
              "other_windows": 0, "other_windows_in_stall": 0}
    for i, worst_ms in zip(window_ids, window_max_ms, strict=True):
        begin = measure_from + i * window_s
        end = begin + window_s + worst_ms / 1000
        kind = "lump_windows" if i in lumps else "other_windows"
        counts[kind] += 1
        counts[f"{kind}_in_stall"] += any(a < end and b > begin for a, b in spans)
    return counts


def same_device(a: Path, b: Path) -> bool | None:
    """Whether two paths are on one file system; None if either cannot be seen."""
    try:
        return os.stat(a).st_dev == os.stat(b).st_dev
    except OSError:
        return None


def run(directory: Path) -> list[tuple[float, float]]:
    """Write and flush until standard input closes; each flush's start
    (``time.monotonic()``) and milliseconds."""
    path = directory / f"disk-probe-{os.getpid()}"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    page = os.urandom(WRITE_BYTES)
    flushes: list[tuple[float, float]] = []
    offset = 0
    try:
        while True:
            os.pwrite(fd, page, offset)
            offset = (offset + WRITE_BYTES) % FILE_BYTES
            began = time.monotonic()
            os.fdatasync(fd)
            flushes.append((round(began, 4), round((time.monotonic() - began) * 1000, 3)))
            # The wait is the check: standard input turns readable (EOF) when
            # the harness is done with the probe.
            if select.select([sys.stdin], [], [], INTERVAL_S)[0]:
                return flushes
    finally:
        os.close(fd)
        path.unlink(missing_ok=True)


class DiskProbe:
    """The probe's process, started before a phase and stopped after it."""

    def __init__(self, directory: Path) -> None:
        self._directory = directory
        self._process: asyncio.subprocess.Process | None = None

    async def start(self) -> None:
        self._process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "loadtests.disk_probe", str(self._directory),
            stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE)

    async def stop(self) -> list[tuple[float, float]]:
        """Its flushes since :meth:`start`: ``(began, milliseconds)`` each."""
        process, self._process = self._process, None
        assert process is not None and process.stdin is not None
        process.stdin.close()
        out, _ = await process.communicate()
        if process.returncode:
            raise RuntimeError(f"the disk probe failed (exit {process.returncode})")
        return [(t, ms) for t, ms in json.loads(out)]


if __name__ == "__main__":
    print(json.dumps(run(Path(sys.argv[1]))), flush=True)
