"""The scenarios, and the run that sets up what they share.

A ``Run`` makes a fresh database (or uses one it is given), starts a G-Chat
node and the raw relay as subprocesses, bootstraps an admin with ``gchat
admin bootstrap``, and enrols a pool of simulated devices through the
protocol (one device per official, so a 1:1 send is one envelope). Each
scenario then borrows devices from the pool and returns its rows for the
report (G-Chat figure, raw-relay figure from the same run, ratio, target).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import os
import time
import urllib.request
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg

from crypto.identity import IdentityKeyPair
from gchat.client.sdk import ACK_BATCH
from gchat.client.state import DeviceState
from gchat.store.audit import sequencing_backlog
from loadtests import files, harness
from loadtests.clients import Dev, local_client, seal_pool
from loadtests.disk_probe import INTERVAL_S, STALL_MS, DiskProbe, overlapping, same_device
from loadtests.worker import WINDOW_S, Workers
from protocol.frames import CreateOfficial, IssueCode

SCENARIOS = ("relay", "backlog", "idle", "fanout", "storm", "cluster", "workers", "files")

#: Seconds over which the CPU of a node holding idle connections is metered.
IDLE_CPU_S = 5.0

#: Per-device message limit of the server (gchat.runtime.ratelimit.Limits.MESSAGES):
#: a sender device may not exceed this sustained rate.
DEVICE_MESSAGE_RATE = 50.0


@dataclass(frozen=True)
class Params:
    pairs: int
    window: int
    capacity_s: float
    rate_s: float
    warmup_s: float
    fractions: tuple[float, ...]
    backlog: int
    backlog_devices: int
    idle: int
    fanout: int
    storm: int
    storm_queued: int
    #: files: the big file (MiB), rounds of it per side, pairs moving files at once, MiB each
    files_big_mib: float = 100
    files_rounds: int = 2
    files_pairs: int = 50
    files_each_mib: float = 5
    #: backlog, storm: most positions a draining device acks in one frame, as the
    #: reference client does (1: each envelope in a frame of its own)
    ack_batch: int = ACK_BATCH

    @classmethod
    def for_mode(cls, short: bool) -> Params:
        if short:
            return cls(pairs=100, window=2, capacity_s=6, rate_s=5, warmup_s=1,
                       fractions=(0.1, 0.5, 0.9), backlog=20_000, backlog_devices=10,
                       idle=1_000, fanout=1_000, storm=300, storm_queued=5)
        return cls(pairs=200, window=2, capacity_s=20, rate_s=15, warmup_s=3,
                   fractions=(0.1, 0.5, 0.9), backlog=100_000, backlog_devices=10,
                   idle=10_000, fanout=1_000, storm=2_000, storm_queued=5)

    def pool_size(self, scenarios: tuple[str, ...]) -> int:
        need = {
            "relay": 2 * self.pairs,
            "cluster": 2 * self.pairs,
            "workers": 2 * self.pairs,
            "backlog": self.backlog_devices + 1,
            "idle": self.idle,
            "fanout": self.fanout + 1,
            "storm": self.storm + 1,
            "files": 2 * self.files_pairs,
        }
        return max(need[s] for s in scenarios)


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100) of unsorted values; NaN if none."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    rank = max(1, min(len(ordered), round(q / 100 * len(ordered) + 0.5)))
    return ordered[rank - 1]


#: A window of send time (``loadtests.worker.WINDOW_S``) whose slowest message
#: took more than this many times as long as the slowest of the median window
#: holds a lump.
LUMP_FACTOR = 3.0


def spread(latencies: list[float], windows: list[int]) -> dict[str, Any]:
    """How a phase's latency is spread over its windows of send time.

    The same p99 can come from a broad distribution (every window has a few
    slow messages) or from lumps: a stall of tens of milliseconds (a full
    garbage collection, a long callback, a slow commit) that holds up every
    message in flight, so that one or two windows hold most of the slowest
    messages. The slowest message of each window tells them apart: flat
    maxima are a broad distribution; a few windows far over the median
    window's maximum are lumps, and the p99 of the messages outside them is
    what the phase would have had without. ``latencies[i]`` was sent in
    window ``windows[i]``."""
    worst: dict[int, float] = {}
    for latency, window in zip(latencies, windows, strict=True):
        if latency > worst.get(window, 0.0):
            worst[window] = latency
    typical = percentile(list(worst.values()), 50)
    lumps = {w for w, v in worst.items() if v > LUMP_FACTOR * typical}
    outside = [x for x, w in zip(latencies, windows, strict=True) if w not in lumps]
    in_lumps = len(latencies) - len(outside)
    return {
        "windows": len(worst),
        "window_max_p50_ms": typical,
        "lump_windows": len(lumps),
        "lump_share": in_lumps / len(latencies) if latencies else float("nan"),
        "p99_outside_lumps_ms": percentile(outside, 99),
        "window_ids": sorted(worst),
        "window_max_ms": [round(worst[w], 1) for w in sorted(worst)],
        "lump_ids": sorted(lumps),
    }


#: ``gchat_event_loop_delay_seconds`` buckets the load test reads: how many of
#: the node's lag samples (``gchat.runtime.samplers``) were later than these.
LOOP_LATE = ("0.025", "0.05", "0.1")


async def loop_delays(port: int) -> dict[str, float]:
    """From a node's /metrics: its event-loop lag samples so far (``count``)
    and how many were later than each of :data:`LOOP_LATE` seconds."""
    def scrape() -> str:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
            return str(r.read().decode())

    text = await asyncio.to_thread(scrape)
    name = "gchat_event_loop_delay_seconds"
    buckets = {}
    for line in text.splitlines():
        if line.startswith(f'{name}_bucket{{le="'):
            le, _, value = line[len(name) + 12:].partition('"} ')
            buckets[le] = float(value)
        elif line.startswith(f"{name}_count "):
            buckets["count"] = float(line.split()[1])
    count = buckets.get("count", 0.0)
    return {"count": count} | {le: count - buckets.get(le, count) for le in LOOP_LATE}


def _loop_late(late: dict[str, float] | None) -> str:
    if not late:
        return ""
    return (f"; node's loop late > 25/50/100 ms in "
            f"{'/'.join(f'{late[le]:.0f}' for le in LOOP_LATE)} of {late['count']:.0f} samples")


def row(scenario: str, metric: str, unit: str, gchat: float | None, raw: float | None = None,
        target: str = "", met: bool | None = None, ratio: float | None = None) -> dict[str, Any]:
    if ratio is None and gchat is not None and raw:
        ratio = gchat / raw
    return {"scenario": scenario, "metric": metric, "unit": unit, "gchat": gchat, "raw": raw,
            "ratio": ratio, "target": target, "met": met}


async def _seconds_until(done: Callable[[], Awaitable[bool]], within: float) -> float:
    """Seconds until ``done()`` holds, asked every 0.1 s (NaN if not ``within``)."""
    started = time.monotonic()
    while time.monotonic() - started < within:
        if await done():
            return time.monotonic() - started
        await asyncio.sleep(0.1)
    return float("nan")


@dataclass
class Run:
    short: bool
    workers_count: int = 2
    database_url: str | None = None  # given: use it (and do not drop it)
    out_dir: Path | None = None
    log: Callable[[str], None] = print
    overrides: dict[str, Any] = field(default_factory=dict)  # Params fields
    node_env: dict[str, str] = field(default_factory=dict)  # GCHAT_* for the node(s)
    params: Params = field(init=False)
    devs: list[Dev] = field(default_factory=list)
    results: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.params = dataclasses.replace(Params.for_mode(self.short), **self.overrides)
        self._db: harness.TempDatabase | None = None
        self.workspace = harness.Workspace()
        self.node: harness.ServerProcess | None = None
        self.raw: harness.ServerProcess | None = None
        self.workers: Workers | None = None
        self._extra: list[harness.ServerProcess] = []
        self._probe: asyncpg.Pool | None = None  # the load test's own connections

    # --- set-up and tear-down ----------------------------------------------------

    async def setup(self, pool: int, raw_relay: bool = True,
                    node: harness.ServerProcess | None = None,
                    admin_code: str | None = None) -> None:
        """Node (started here, or ``node`` with a superadmin's ``admin_code``),
        raw relay, load generators, and ``pool`` enrolled devices."""
        self.log(f"open files limit: {harness.raise_nofile()}")
        if self.database_url is None:
            self._db = harness.TempDatabase()
            self.database_url = await self._db.create()
            self.log(f"database {self._db.name} created")
        started = time.monotonic()
        self.node = node or harness.start_node(
            "gchat-node", self.database_url, self.workspace.path("node"),
            self.workspace.path("logs"), **self.node_env)
        if raw_relay:
            self.raw = harness.start_raw_relay(self.workspace.path("logs"))
        self._probe = await asyncpg.create_pool(
            self.database_url, min_size=2, max_size=2,
            server_settings={"application_name": harness.PROBE_APP})
        self.workers = Workers(self.workers_count)
        if admin_code is None:
            boot = await asyncio.to_thread(
                harness.bootstrap_admin, self.database_url, self.workspace.path("node"))
            admin_code = str(boot["code"])
        async with self._probe.acquire() as conn:
            with contextlib.suppress(asyncpg.PostgresError):  # a role that may not see it
                data = await conn.fetchval("SELECT current_setting('data_directory')")
                same = same_device(self.workspace.path("probe"), Path(data))
                self.log("disk probe: flushes beside each relay phase on "
                         + {True: "PostgreSQL's file system", False: "another file system than "
                            "PostgreSQL's", None: "a file system it could not compare with "
                            "PostgreSQL's"}[same])
        self.log(f"node up (pid {self.node.pid}), admin bootstrapped "
                 f"in {time.monotonic() - started:.1f}s; enrolling {pool} devices")
        started = time.monotonic()
        self.devs = await self._enrol(admin_code, pool)
        self.results["setup"] = {"devices": len(self.devs),
                                 "enrol_s": round(time.monotonic() - started, 2)}
        self.log(f"enrolled {len(self.devs)} devices through the protocol in "
                 f"{time.monotonic() - started:.1f}s")

    async def _enrol(self, admin_code: str, count: int) -> list[Dev]:
        assert self.node is not None and self.workers is not None
        admin = local_client(
            DeviceState(url=self.node.url, identity_seed=IdentityKeyPair.generate().seed),
            "127.0.0.1")
        await admin.connect()
        try:
            await admin.enroll(admin_code, "load-admin")
            officials = await _chunked(
                [admin.request(CreateOfficial, name=f"Official {i}") for i in range(count)])
            codes = await _chunked(
                [admin.request(IssueCode, official_id=o.official_id) for o in officials])
        finally:
            await admin.close()
        items = [(i, c.code) for i, c in enumerate(codes)]
        n = self.workers.count
        results = await self.workers.run(
            [{"op": "enroll", "url": self.node.url, "items": items[k::n], "concurrency": 16}
             for k in range(n)])
        failed = sum(r["failed"] for r in results)
        if failed:
            errors = [e for r in results for e in r["errors"]]
            raise RuntimeError(f"{failed} enrolments failed, e.g. {errors[:2]}")
        return sorted((d for r in results for d in r["devs"]), key=lambda d: d.index)

    async def teardown(self) -> None:
        if self.workers is not None:
            self.workers.close()
        for server in [self.node, self.raw, *self._extra]:
            if server is not None:
                server.stop()
        if self._probe is not None:
            await self._probe.close()
        if self._db is not None:
            try:
                await self._db.drop()
                self.log(f"database {self._db.name} dropped")
            except Exception as error:  # the figures matter more than the sweep
                self.log(f"could not drop {self._db.name}: {error!r}")
        logs = self.out_dir / "logs" if self.out_dir is not None else None
        self.workspace.cleanup(keep_logs_in=logs)

    # --- helpers --------------------------------------------------------------------------

    async def restart_node(self) -> None:
        """A fresh node process on the same database and data directory (the
        figures of a fixed rate must not carry a closed loop's leftovers)."""
        assert self.node is not None and self.database_url is not None
        self.node.stop()
        started = time.monotonic()
        self.node = harness.start_node(
            "gchat-node", self.database_url, self.workspace.path("node"),
            self.workspace.path("logs"), **self.node_env)
        self.log(f"  node restarted (pid {self.node.pid}) in "
                 f"{time.monotonic() - started:.1f}s")

    def restart_raw(self) -> None:
        """A fresh raw relay process, as :meth:`restart_node` for the node."""
        if self.raw is None:
            return
        self.raw.stop()
        self.raw = harness.start_raw_relay(self.workspace.path("logs"))

    async def audit_backlog(self) -> tuple[int, float]:
        """(audit events not yet in the Merkle log, age of the oldest in s):
        the statement behind the node's ``gchat_audit_sequencer_lag_seconds``."""
        assert self._probe is not None
        async with self._probe.acquire() as conn:
            return await sequencing_backlog(conn)

    async def audit_drained_after(self, within: float = 60.0) -> float:
        """Seconds until every audit event is sequenced (NaN if not ``within``)."""

        async def drained() -> bool:
            return (await self.audit_backlog())[0] == 0

        return await _seconds_until(drained, within)

    async def inbox_emptied_after(self, within: float = 30.0) -> float:
        """Seconds until no envelope is left in any inbox (NaN if not ``within``).

        A phase ends when the clients have every message and have closed,
        but their last acks may still be on their way through the node (read,
        batched, committed with their "message.delivered" events): a count
        of the audit log must wait for them first.
        """
        assert self._probe is not None
        probe = self._probe

        async def empty() -> bool:
            async with probe.acquire() as conn:
                return not await conn.fetchval("SELECT EXISTS (SELECT 1 FROM inbox)")

        return await _seconds_until(empty, within)

    async def pg_writes(self) -> dict[str, int]:
        """The PostgreSQL server's counters a phase's p99 depends on, for any
        database: checkpoints begun (each writes out every dirty page and can
        hold up commits for a moment; another database's ``CREATE DATABASE``
        forces one) and the WAL written, with its full-page images: for a
        while after a checkpoint begins, the first change to each page carries
        a copy of it, and every commit's flush is that much longer; and the
        WAL's flushes (``fdatasync``), each of which a commit may wait for
        (``loadtests.disk_probe``). (The pages
        a checkpoint writes are counted only once its writes end, so they
        say nothing of a phase in the middle of one.)"""
        assert self._probe is not None
        async with self._probe.acquire() as conn:
            try:
                count = await conn.fetchval(
                    "SELECT checkpoints_timed + checkpoints_req FROM pg_stat_bgwriter")
            except asyncpg.UndefinedColumnError:  # PostgreSQL 17 moved them
                count = await conn.fetchval(
                    "SELECT num_timed + num_requested FROM pg_stat_checkpointer")
            try:
                wal = await conn.fetchrow("SELECT wal_bytes, wal_fpi, wal_sync FROM pg_stat_wal")
            except asyncpg.UndefinedColumnError:  # PostgreSQL 18 moved the flushes
                wal = await conn.fetchrow(
                    "SELECT wal_bytes, wal_fpi, (SELECT sum(fsyncs) FROM pg_stat_io"
                    " WHERE object = 'wal') AS wal_sync FROM pg_stat_wal")
        return {"checkpoints": int(count), "wal_bytes": int(wal["wal_bytes"]),
                "wal_fpi": int(wal["wal_fpi"]), "wal_syncs": int(wal["wal_sync"] or 0)}

    async def _watch_audit(self, stop: asyncio.Event, into: dict[str, Any],
                           interval: float = 0.5) -> None:
        """Sample the sequencer's backlog until ``stop``; keep the worst."""
        into.update(max_waiting=0, max_age_s=0.0, samples=0)
        while not stop.is_set():
            waiting, age = await self.audit_backlog()
            into["max_waiting"] = max(into["max_waiting"], waiting)
            into["max_age_s"] = round(max(into["max_age_s"], age), 3)
            into["samples"] += 1
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), interval)

    def split(self, items: list[Any]) -> list[list[Any]]:
        n = self.workers_count
        return [items[k::n] for k in range(n)]

    async def gated(
        self, specs: list[dict[str, Any]], lead: float = 0.5,
        measure: tuple[float, float | None] | None = None,
        servers: list[harness.ServerProcess] | None = None, lag: bool = False,
    ) -> tuple[list[dict[str, Any]], dict[str, Any]]:
        """Run gated worker ops with a common start; meter CPU over ``measure``
        (offsets from the start; an end of None: until every op has returned)
        on ``servers`` (default: the node), and with ``lag`` how late their
        event loops ran over it (``loop_delays``: single-process nodes)."""
        assert self.workers is not None and self.node is not None
        meter_result: dict[str, Any] = {}
        tasks: list[asyncio.Task[None]] = []
        target = servers or [self.node]
        returned = asyncio.Event()

        async def on_ready(infos: list[dict[str, Any]]) -> dict[str, Any]:
            start = time.monotonic() + lead
            if measure is not None:
                tasks.append(asyncio.create_task(self._meter(target, start, measure,
                                                             meter_result, returned, lag)))
            return {"start_at": start}

        try:
            results = await self.workers.run(specs, on_ready)
        finally:
            returned.set()
        await asyncio.gather(*tasks)
        return results, meter_result

    async def _meter(self, servers: list[harness.ServerProcess], start: float,
                     span: tuple[float, float | None], into: dict[str, Any],
                     returned: asyncio.Event | None = None, lag: bool = False) -> None:
        assert self.workers is not None
        assert self._probe is not None
        meter = harness.CpuMeter([s.pid for s in servers])
        nodes = servers if lag else []
        await harness.sleep_until(start + span[0])
        delays0 = await asyncio.gather(*(loop_delays(s.port) for s in nodes))
        async with self._probe.acquire() as conn:
            backends0 = harness.cpu_seconds_of(await harness.backend_pids(conn))
        meter.begin()
        workers0 = sum(harness.cpu_seconds(p) for p in self.workers.pids)
        if span[1] is None:
            assert returned is not None
            await returned.wait()
        else:
            await harness.sleep_until(start + span[1])
        into.update(meter.end())
        delays1 = await asyncio.gather(*(loop_delays(s.port) for s in nodes))
        if nodes:
            # The node's own lag samples in the window: a lump the generator
            # saw with none here was not a stall of the node's event loop.
            into["node_loop_late"] = {
                le: sum(a.get(le, 0.0) - b.get(le, 0.0) for a, b in zip(delays1, delays0,
                                                                       strict=True))
                for le in delays1[0]}
        seconds = into["wall_s"]
        async with self._probe.acquire() as conn:
            backends1 = harness.cpu_seconds_of(await harness.backend_pids(conn))
        # A backend that started during the window used all its CPU in it.
        used_db = sum(v - backends0.get(pid, 0.0) for pid, v in backends1.items())
        into["db_backends_cpu_s"] = round(used_db, 3)
        into["db_backends_cores"] = round(used_db / seconds, 3)
        into["db_backends"] = len(backends1)
        # A connection opened inside the window (a pool growing) costs its
        # first statements a plan and asyncpg's type introspection.
        into["db_backends_opened"] = len(backends1.keys() - backends0.keys())
        used = sum(harness.cpu_seconds(p) for p in self.workers.pids) - workers0
        into["generator_cpu_s"] = round(used, 3)
        into["generator_cores"] = round(used / seconds, 3)
        into["other_cores"] = round(into["host_busy_cores"] - into["server_cores"]
                                    - into["postgres_cores"] - into["generator_cores"], 3)

    # --- relay ------------------------------------------------------------------------------

    async def relay_phase(self, target: str, mode: str, rate: float = 0.0, label: str = "",
                          send_url: str | None = None, recv_url: str | None = None,
                          pairs: int | None = None,
                          servers: list[harness.ServerProcess] | None = None,
                          ) -> dict[str, Any]:
        """One closed-loop or fixed-rate phase against ``target`` (gchat | raw)."""
        p = self.params
        assert self.node is not None
        server = self.node if target == "gchat" else self.raw
        assert server is not None
        count = pairs or p.pairs
        devs = self.devs
        all_pairs = [(devs[2 * k], devs[2 * k + 1]) for k in range(count)]
        duration = p.capacity_s if mode == "closed" else p.rate_s
        n = self.workers_count
        specs = [{
            "op": "relay", "target": target, "mode": mode, "pairs": chunk,
            "send_url": send_url or server.url, "recv_url": recv_url or server.url,
            "window": p.window, "rate": rate / n, "duration": duration,
            "warmup": p.warmup_s, "prefix": f"{label or mode}-{uuid.uuid4().hex[:8]}",
        } for chunk in self.split(all_pairs)]
        audit: dict[str, Any] = {}
        writes = await self.pg_writes()
        stop = asyncio.Event()
        watch = (asyncio.create_task(self._watch_audit(stop, audit))
                 if target == "gchat" else None)
        disk = DiskProbe(self.workspace.path("probe"))
        await disk.start()
        try:
            results, cpu = await self.gated(specs, measure=(p.warmup_s, duration),
                                            servers=servers or [server],
                                            lag=target == "gchat" and not servers)
        finally:
            stop.set()
            flushes = await disk.stop()
            if watch is not None:
                await watch
        if watch is not None:
            audit["drained_after_s"] = round(await self.audit_drained_after(), 3)
        writes = {k: v - writes[k] for k, v in (await self.pg_writes()).items()}
        checkpoints = writes["checkpoints"]
        latencies = [x for r in results for x in r["latencies_ms"]]
        lumps = spread(latencies, [w for r in results for w in r["windows"]])
        window = duration - p.warmup_s
        measure_from = min(r["measure_from"] for r in results)
        flushed = [ms for t, ms in flushes if measure_from <= t < measure_from + window]
        stalls = [(t, ms) for t, ms in flushes if ms > STALL_MS]
        disk_flushes = {
            "flushes": len(flushed), "p50_ms": percentile(flushed, 50),
            "p99_ms": percentile(flushed, 99), "max_ms": max(flushed, default=float("nan")),
            "stalls": sum(1 for ms in flushed if ms > STALL_MS),
            # Each stall's (start, ms), the warm-up's too: one just before the
            # measured window can hold up its first messages.
            "stall_times": [[t, ms] for t, ms in stalls],
        } | overlapping(stalls, measure_from, WINDOW_S, lumps["window_ids"],
                        lumps["window_max_ms"], lumps["lump_ids"])
        delivered = sum(r["delivered_in_window"] for r in results)
        node_ms = 1000 * cpu.get("server_cpu_s", 0.0) / delivered if delivered else float("nan")
        db_ms = (1000 * cpu.get("db_backends_cpu_s", 0.0) / delivered
                 if delivered and target == "gchat" else 0.0)
        summary = {
            "target": target, "mode": mode, "offered_rate": rate or None,
            "throughput": sum(r["delivered_in_window"] for r in results) / window,
            "p50_ms": percentile(latencies, 50), "p90_ms": percentile(latencies, 90),
            "p99_ms": percentile(latencies, 99), "max_ms": max(latencies, default=float("nan")),
            "samples": len(latencies),
            "lump_windows": lumps["lump_windows"],
            "p99_outside_lumps_ms": lumps["p99_outside_lumps_ms"],
            "disk_flushes": disk_flushes,
            "lumps": lumps | {"measure_from": measure_from,
                              "generator_late_max_ms": max(r["late_max_ms"] for r in results),
                              "pg_checkpoints": checkpoints,
                              "pg_writes": writes,
                              "generator_gc": {
                                  "passes": sum(r["gc"]["passes"] for r in results),
                                  "full": sum(r["gc"]["full"] for r in results),
                                  "max_ms": max(r["gc"]["max_ms"] for r in results)},
                              "node_loop_late": cpu.get("node_loop_late")},
            "sent": sum(r["sent"] for r in results),
            "accepted": sum(r["accepted"] for r in results),
            "delivered": sum(r["delivered"] for r in results),
            "acked": sum(r["acked"] for r in results),
            "rejected": _sum_counters(r["rejected"] for r in results),
            "outstanding_at_end": sum(r["outstanding_at_end"] for r in results),
            "verified_decryptions": sum(r["verified"] for r in results),
            "bad_plaintext": sum(r["bad_plaintext"] for r in results),
            "pairs": sum(r["pairs"] for r in results),
            "cpu": cpu,
            # CPU per delivered message in the measured window: the server
            # process(es), and the PostgreSQL backends serving this database.
            "server_ms_per_msg": node_ms, "db_ms_per_msg": db_ms,
            "cpu_ms_per_msg": node_ms + db_ms,
            "audit": audit or None,
        }
        self.log(
            f"  {target:5s} {mode:6s} rate={rate:7.0f} -> {summary['throughput']:7.0f} msg/s "
            f"p50={summary['p50_ms']:.1f} p90={summary['p90_ms']:.1f} "
            f"p99={summary['p99_ms']:.1f} ms  server={cpu.get('server_cores', 0):.2f} "
            f"pg={cpu.get('postgres_cores', 0):.2f} gen={cpu.get('generator_cores', 0):.2f} "
            f"other={cpu.get('other_cores', 0):.2f} cores  rejected={summary['rejected']}")
        self.log(
            f"        cpu/msg: server {node_ms:.3f} ms + db backends {db_ms:.3f} ms"
            + (f"; audit lag max {audit['max_age_s']:.2f}s ({audit['max_waiting']} events), "
               f"drained {audit['drained_after_s']:.2f}s after" if audit else ""))
        collected = summary["lumps"]["generator_gc"]
        self.log(
            f"        lumps: {lumps['lump_windows']} of {lumps['windows']} windows of "
            f"{WINDOW_S * 1000:.0f} ms ({100 * lumps['lump_share']:.1f}% of messages) slowest "
            f"over {LUMP_FACTOR:.0f}x the median window's {lumps['window_max_p50_ms']:.1f} ms; "
            f"worst {summary['max_ms']:.1f} ms; p99 outside lumps "
            f"{lumps['p99_outside_lumps_ms']:.1f} ms; generator late <= "
            f"{summary['lumps']['generator_late_max_ms']:.1f} ms, its collections "
            f"{collected['passes']} ({collected['full']} full, longest "
            f"{collected['max_ms']:.1f} ms); PostgreSQL checkpoints {checkpoints}, WAL "
            f"{writes['wal_bytes'] / 1e6:.1f} MB with {writes['wal_fpi']} full-page images in "
            f"{writes['wal_syncs']} flushes, "
            f"connections opened {cpu.get('db_backends_opened', 0)}"
            + _loop_late(cpu.get("node_loop_late")))
        self.log(
            f"        disk (probe's own fdatasync every {1000 * INTERVAL_S:.0f} ms): "
            f"p50 {disk_flushes['p50_ms']:.2f} p99 {disk_flushes['p99_ms']:.2f} max "
            f"{disk_flushes['max_ms']:.1f} ms, {disk_flushes['stalls']} over {STALL_MS:.0f} ms; "
            f"held up by a stall or its catch-up: {disk_flushes['lump_windows_in_stall']} of "
            f"{disk_flushes['lump_windows']} lump windows, "
            f"{disk_flushes['other_windows_in_stall']} of {disk_flushes['other_windows']} others")
        return summary

    async def scenario_relay(self) -> dict[str, Any]:
        p = self.params
        self.log(f"relay: {p.pairs} pairs, closed loop window {p.window}, then fixed rates, "
                 "each on a freshly started node with the audit log sequenced")
        await self.audit_drained_after()
        g = await self.relay_phase("gchat", "closed", label="cap")
        r = await self.relay_phase("raw", "closed", label="rawcap")
        capacity = g["throughput"]
        phases = []
        for fraction in p.fractions:
            rate = max(1.0, fraction * capacity)
            if rate / p.pairs > DEVICE_MESSAGE_RATE:
                self.log(f"  note: {rate / p.pairs:.0f}/s per sender exceeds the server's "
                         f"per-device limit ({DEVICE_MESSAGE_RATE:.0f}/s)")
            await self.restart_node()
            await self.audit_drained_after()
            gp = await self.relay_phase("gchat", "rate", rate, label=f"r{int(fraction * 100)}")
            rp = await self.relay_phase("raw", "rate", rate, label=f"w{int(fraction * 100)}")
            phases.append({"fraction": fraction, "rate": rate, "gchat": gp, "raw": rp})
        ratio = g["throughput"] / r["throughput"] if r["throughput"] else 0.0
        rows = [
            row("relay", "throughput (closed loop)", "msg/s", g["throughput"], r["throughput"],
                ">= 0.40x raw (goal 0.70x)", ratio >= 0.4),
            row("relay", "p99 at capacity", "ms", g["p99_ms"], r["p99_ms"]),
            row("relay", "CPU per message at capacity (server + its PG backends)", "ms",
                g["cpu_ms_per_msg"], r["cpu_ms_per_msg"]),
            row("relay", "audit sequencer lag at capacity, max", "s", g["audit"]["max_age_s"]),
            row("relay", "audit backlog after capacity drained in", "s",
                g["audit"]["drained_after_s"]),
        ]
        for phase in phases:
            pct = int(phase["fraction"] * 100)
            gp, rp = phase["gchat"], phase["raw"]
            for q in ("p50", "p90", "p99"):
                target, met = "", None
                if pct == 10 and q == "p50":
                    target, met = "<= 2 ms", gp["p50_ms"] <= 2.0
                if pct == 50 and q == "p99":
                    target, met = "<= 5x raw", gp["p99_ms"] <= 5 * rp["p99_ms"]
                rows.append(row("relay", f"{q} at {pct}% of capacity",
                                f"ms @{phase['rate']:.0f}/s",
                                gp[f"{q}_ms"], rp[f"{q}_ms"], target, met))
            rows.append(row("relay", f"{WINDOW_S * 1000:.0f} ms windows with a lump at {pct}%",
                            f"of {gp['lumps']['windows']}", gp["lump_windows"],
                            rp["lump_windows"]))
            rows.append(row("relay", f"p99 at {pct}% outside lump windows", "ms",
                            gp["p99_outside_lumps_ms"], rp["p99_outside_lumps_ms"]))
            disk = gp["disk_flushes"]
            rows.append(row("relay", f"  of the lumps, held up by a disk stall ({pct}%)",
                            f"of {disk['lump_windows']}", disk["lump_windows_in_stall"]))
            rows.append(row("relay", f"slowest disk flush beside G-Chat at {pct}% (probe)", "ms",
                            disk["max_ms"]))
            rows.append(row("relay", f"CPU per message at {pct}% (server + its PG backends)",
                            "ms", gp["cpu_ms_per_msg"], rp["cpu_ms_per_msg"]))
            vs_cap = (gp["cpu_ms_per_msg"] / g["cpu_ms_per_msg"]
                      if g["cpu_ms_per_msg"] else float("nan"))
            target, met = ("<= 1.5x", vs_cap <= 1.5) if pct == 10 else ("", None)
            rows.append(row("relay", f"CPU per message at {pct}% vs at capacity", "ratio",
                            None, None, target, met, ratio=vs_cap))
            if pct == 10:  # what a server that only forwards reads on the same ratio
                rows.append(row("relay", "  the raw relay's, at this rate vs at its capacity",
                                "ratio",
                                None, None, ratio=rp["cpu_ms_per_msg"] / r["cpu_ms_per_msg"]
                                if r["cpu_ms_per_msg"] else float("nan")))
            lag = gp["audit"]
            target, met = ("< 1 s", lag["max_age_s"] < 1.0) if pct == 90 else ("", None)
            rows.append(row("relay", f"audit sequencer lag at {pct}%, max", "s",
                            lag["max_age_s"], None, target, met))
            target, met = ("<= 5 s", lag["drained_after_s"] <= 5.0) if pct == 90 else ("", None)
            rows.append(row("relay", f"audit backlog after {pct}% drained in", "s",
                            lag["drained_after_s"], None, target, met))
        return {"status": "ok", "rows": rows,
                "details": {"capacity": {"gchat": g, "raw": r}, "phases": phases}}

    # --- backlog ----------------------------------------------------------------------------

    async def backlog_phase(self, label: str = "") -> dict[str, Any]:
        """Queue ``backlog`` envelopes for the offline devices (SQL), then let
        them reconnect and drain, acking up to ``ack_batch`` envelopes per
        frame; CPU is metered from the start until the last device is done."""
        p = self.params
        assert self.node is not None and self.database_url is not None
        recipients = self.devs[-p.backlog_devices:]
        sender = self.devs[-p.backlog_devices - 1]
        per = [p.backlog // len(recipients)] * len(recipients)
        per[0] += p.backlog - sum(per)
        self.log(f"backlog{label and ' ' + label}: inserting {p.backlog} envelopes for "
                 f"{len(recipients)} offline devices directly via SQL (COPY)")
        inserted_s = await insert_backlog(self.database_url, sender, list(zip(recipients, per,
                                                                              strict=True)))
        self.log(f"  inserted in {inserted_s:.1f}s; reconnecting and draining")
        chunks = self.split(list(zip(recipients, per, strict=True)))
        specs = [{"op": "drain", "url": self.node.url, "devs": [d for d, _ in c],
                  "expected": [n for _, n in c], "timeout": 600.0, "ack_batch": p.ack_batch}
                 for c in chunks if c]
        results, cpu = await self.gated(specs, measure=(0.0, None))
        done = [t for r in results for t in r["done_s"]]
        received = sum(r["received"] for r in results)
        ack_frames = sum(r["ack_frames"] for r in results)
        failed = sum(r["failed"] for r in results)
        total = max(done, default=float("nan"))
        rate = received / total if total else 0.0
        await asyncio.sleep(1.0)
        left = await inbox_left(self.database_url, [d.device_id for d in recipients])

        def per_env(key: str) -> float:
            return 1000 * cpu.get(key, 0.0) / received if received else float("nan")

        node_ms, db_ms, gen_ms = (per_env("server_cpu_s"), per_env("db_backends_cpu_s"),
                                  per_env("generator_cpu_s"))
        self.log(f"  drained {received}/{p.backlog} in {total:.2f}s = {rate:.0f} env/s "
                 f"in {ack_frames} ack frames (at most {p.ack_batch} positions each; "
                 f"left in inbox after acks: {left}, failed devices: {failed}); "
                 f"cpu/env: node {node_ms:.3f} ms + db backends {db_ms:.3f} ms, "
                 f"load generator {gen_ms:.3f} ms; host busy {cpu.get('host_busy_cores', 0):.2f}"
                 f" cores, other {cpu.get('other_cores', 0):.2f}")
        return {"env_per_s": rate, "slowest_s": total, "server_ms_per_env": node_ms,
                "db_ms_per_env": db_ms, "cpu_ms_per_env": node_ms + db_ms,
                "generator_ms_per_env": gen_ms, "insert_s": inserted_s, "received": received,
                "ack_frames": ack_frames, "ack_batch": p.ack_batch,
                "expected": p.backlog, "per_device_done_s": done, "left_in_inbox": left,
                "failed_devices": failed, "errors": [e for r in results for e in r["errors"]],
                "cpu": cpu}

    async def scenario_backlog(self) -> dict[str, Any]:
        p = self.params
        got = await self.backlog_phase()
        rate = got["env_per_s"]
        rows = [
            row("backlog", f"drain {p.backlog} envelopes / {p.backlog_devices} devices",
                "env/s", rate, None, ">= 20000", rate >= 20_000),
            row("backlog", "slowest device drained after", "s", got["slowest_s"]),
            row("backlog", "CPU per envelope, node + its PostgreSQL backends", "ms",
                got["cpu_ms_per_env"]),
        ]
        ok = not got["failed_devices"] and not got["left_in_inbox"]
        return {"status": "ok" if ok else "failed", "rows": rows, "details": {
            "inserted_via": "SQL COPY into messages + inbox, inbox_head bumped", **got}}

    # --- idle connections -----------------------------------------------------------------

    async def idle_phase(self, target: str, count: int) -> dict[str, Any]:
        server = self.node if target == "gchat" else self.raw
        assert server is not None
        await asyncio.sleep(1.0)
        before = server.rss_kib()
        after: dict[str, int] = {}

        cpu: dict[str, Any] = {}

        async def measure(infos: list[dict[str, Any]]) -> dict[str, Any]:
            await asyncio.sleep(3.0)  # let the server settle
            after["rss"] = server.rss_kib()
            if target == "gchat":  # what the idle connections cost, node + PostgreSQL
                start = time.monotonic()
                await self._meter([server], start, (0.0, IDLE_CPU_S), cpu)
            return {"start_at": time.monotonic()}

        assert self.workers is not None
        specs = [{"op": "idle", "target": target, "url": server.url, "devs": chunk,
                  "concurrency": 64} for chunk in self.split(self.devs[:count])]
        results = await self.workers.run(specs, measure)
        opened = sum(r["open"] for r in results)
        failed = sum(r["failed"] for r in results)
        delta = after["rss"] - before
        per = delta / opened if opened else float("nan")
        self.log(f"  {target:5s} idle: {opened} open ({failed} failed) in "
                 f"{max(r['opened_in_s'] for r in results):.1f}s; RSS {before} -> "
                 f"{after['rss']} KiB = {per:.1f} KiB/connection")
        if cpu:
            cores = cpu["server_cores"] + cpu["db_backends_cores"]
            self.log(f"        idle CPU over {IDLE_CPU_S:.0f}s: server "
                     f"{cpu['server_cores']:.3f} + db backends {cpu['db_backends_cores']:.3f} "
                     f"= {100 * cores:.1f}% of a core")
        return {"cpu": cpu or None, "open": opened, "failed": failed, "rss_before_kib": before,
                "rss_after_kib": after["rss"], "per_connection_kib": per,
                "opened_in_s": max(r["opened_in_s"] for r in results),
                "errors": [e for r in results for e in r["errors"]]}

    async def scenario_idle(self) -> dict[str, Any]:
        count = min(self.params.idle, len(self.devs))
        self.log(f"idle: {count} authenticated idle connections")
        # Both servers freshly started: memory an earlier scenario's
        # connections freed stays in the process and would be reused, so a
        # server that had carried load showed 0.1 KiB per connection.
        await self.restart_node()
        self.restart_raw()
        g = await self.idle_phase("gchat", count)
        r = await self.idle_phase("raw", count)
        per = g["per_connection_kib"]
        cpu = g["cpu"]
        busy = 100 * (cpu["server_cores"] + cpu["db_backends_cores"])
        rows = [row("idle", f"memory per idle connection ({g['open']})", "KiB", per,
                    r["per_connection_kib"], "<= 32 KiB", per <= 32 and g["open"] == count),
                row("idle", f"node + its PG backends CPU, {g['open']} idle connections",
                    "% of a core", busy, None, "< 2%", busy < 2.0)]
        return {"status": "ok" if not g["failed"] else "failed", "rows": rows,
                "details": {"gchat": g, "raw": r}}

    # --- fan-out, pairwise ---------------------------------------------------------------------

    async def scenario_fanout(self) -> dict[str, Any]:
        count = min(self.params.fanout, len(self.devs) - 1)
        assert self.node is not None
        self.log(f"fanout (pairwise; group sends: python -m loadtests.group_fanout): one sender "
                 f"sends one pairwise message to each of {count} officials")
        sender, recipients = self.devs[0], self.devs[1:count + 1]
        specs = [{"op": "fanout", "url": self.node.url, "recipients": chunk,
                  "timeout": 60.0} for chunk in self.split(recipients)]
        specs[0] |= {"sender": sender, "all_recipients": recipients}
        results, cpu = await self.gated(specs)
        times = sorted(t for r in results for t in r["received_s"])
        missing = sum(r["missing"] for r in results)
        s = results[0]["sender"]
        last = times[-1] if times else float("nan")
        within = sum(1 for t in times if t <= 1.0)
        first_pass = s["first_pass_accepted"]
        burst_last = times[first_pass - 1] if 0 < first_pass <= len(times) else float("nan")
        self.log(f"  last of {count} delivered after {last:.2f}s; {within} within 1 s; "
                 f"first pass accepted {first_pass}, rejected {s['rejected']}; "
                 f"the {first_pass} unthrottled ones all delivered after {burst_last:.2f}s")
        rows = [
            row("fanout*", f"time to last of {count} devices (pairwise)", "s", last,
                None, "<= 1 s", last <= 1.0 and not missing),
            row("fanout*", "devices reached within 1 s", "count", within),
            row("fanout*", "time to last of the sends inside the rate limit",
                f"s ({first_pass})", burst_last),
        ]
        return {"status": "ok" if not missing else "failed", "rows": rows, "details": {
            "note": "N pairwise sends from one device, one per official (a group's "
                    "fan-out, one sender-key body, is loadtests.group_fanout); bounded by "
                    "the per-device message limit (200 burst, 50/s)",
            "sender": s, "missing": missing, "received_s_p50": percentile(times, 50),
            "cpu": cpu}}

    # --- reconnect storm ---------------------------------------------------------------------

    async def scenario_storm(self) -> dict[str, Any]:
        p = self.params
        assert self.node is not None and self.database_url is not None
        count = min(p.storm, len(self.devs) - 1)
        devices, sender = self.devs[:count], self.devs[count]
        self.log(f"storm: {count} devices with {p.storm_queued} queued envelopes each "
                 "(inserted via SQL) reconnect at once")
        await insert_backlog(self.database_url, sender,
                             [(d, p.storm_queued) for d in devices])
        specs = [{"op": "drain", "url": self.node.url, "devs": chunk,
                  "expected": [p.storm_queued] * len(chunk), "timeout": 300.0,
                  "ack_batch": p.ack_batch}
                 for chunk in self.split(devices)]
        results, cpu = await self.gated(specs)
        auth = [t for r in results for t in r["auth_s"]]
        done = [t for r in results for t in r["done_s"]]
        failed = sum(r["failed"] for r in results)
        total = max(done, default=float("nan"))
        self.log(f"  all {len(done)} authenticated+drained after {total:.2f}s (auth p50 "
                 f"{percentile(auth, 50):.2f}s p99 {percentile(auth, 99):.2f}s), failed {failed}")
        rows = [
            row("storm", f"{count} reconnect: all authenticated and drained", "s", total),
            row("storm", "time to authenticated p50", "s", percentile(auth, 50)),
            row("storm", "time to authenticated p99", "s", percentile(auth, 99)),
        ]
        return {"status": "ok" if not failed else "failed", "rows": rows, "details": {
            "auth_max_s": max(auth, default=None), "failed": failed,
            "errors": [e for r in results for e in r["errors"]], "cpu": cpu}}

    # --- attachments ----------------------------------------------------------------------------

    async def files_phase(self) -> dict[str, Any]:
        """The figures of ``loadtests.files``: a big file against the bare file
        handler, the node's memory meanwhile, many files at once."""
        p = self.params
        assert self.node is not None
        bare = harness.start_raw_relay(self.workspace.path("logs"), "loadtests.bare_files",
                                       "bare-files")
        self._extra.append(bare)
        node_url = self.node.url

        async def to_node(dev: Dev) -> files.FileConn:
            return await files.FileConn.gchat(node_url, dev)

        async def to_bare(dev: Dev) -> files.FileConn:
            return await files.FileConn.bare(bare.url, dev)

        openers = {"gchat": to_node, "raw": to_bare}
        sender, recipient = self.devs[0], self.devs[1]
        for opener in openers.values():  # warm-up: connections, worker threads, plans
            await files.one_file(opener, sender, recipient, files.MIB, files.new_tag())
        big = int(p.files_big_mib * files.MIB)
        rounds: dict[str, list[dict[str, Any]]] = {"gchat": [], "raw": []}
        # What the node spends doing nothing (sequencer, gauges, samplers), per second.
        idle0, idle_t0 = harness.cpu_seconds(self.node.pid), time.monotonic()
        await asyncio.sleep(IDLE_CPU_S)
        idle_rate = ((harness.cpu_seconds(self.node.pid) - idle0)
                     / (time.monotonic() - idle_t0))
        watch = files.RssWatch(self.node.pid)
        pids = {"gchat": self.node.pid, "raw": bare.pid}
        cpu = {"gchat": 0.0, "raw": 0.0}  # each server's CPU during its own rounds
        wall = {"gchat": 0.0, "raw": 0.0}
        watch.start()
        for n in range(p.files_rounds):
            for side in ("raw", "gchat") if n % 2 == 0 else ("gchat", "raw"):
                cpu0, t0 = harness.cpu_seconds(pids[side]), time.monotonic()
                rounds[side].append(await files.one_file(openers[side], sender, recipient, big,
                                                         files.new_tag()))
                cpu[side] += harness.cpu_seconds(pids[side]) - cpu0
                wall[side] += time.monotonic() - t0
                done = rounds[side][-1]
                self.log(f"  {side} {p.files_big_mib:g} MiB: upload "
                         f"{files.mib_per_s(big, done['upload_s']):.0f} MiB/s, download "
                         f"{files.mib_per_s(big, done['download_s']):.0f} MiB/s, "
                         f"verified {done['verified']}")
        growth = await watch.stop()

        def best(side: str, leg: str) -> float:
            return max(files.mib_per_s(big, r[f"{leg}_s"]) for r in rounds[side])

        pairs = [(self.devs[2 * k], self.devs[2 * k + 1]) for k in range(p.files_pairs)]
        each = int(p.files_each_mib * files.MIB)
        many: dict[str, dict[str, Any]] = {}
        many["raw"] = await files.many_files(to_bare, pairs, each, files.new_tag())
        many_watch = files.RssWatch(self.node.pid)
        many_watch.start()
        many["gchat"] = await files.many_files(to_node, pairs, each, files.new_tag())
        many_growth = await many_watch.stop()
        total = each * len(pairs)
        for side, got in many.items():
            self.log(f"  {side} {len(pairs)} x {p.files_each_mib:g} MiB at once: upload "
                     f"{files.mib_per_s(total, got['upload_s']):.0f} MiB/s, download "
                     f"{files.mib_per_s(total, got['download_s']):.0f} MiB/s, "
                     f"verified {got['verified']}/{got['files']}")
        blobs = self.workspace.path("node") / "attachments" / "blobs"
        verified_big = all(r["verified"] for side in rounds.values() for r in side)
        return {
            "big_bytes": big, "rounds": rounds, "node_rss_growth_mib": round(growth, 2),
            "node_rss_samples": watch.samples, "node_cpu_s_big": round(cpu["gchat"], 2),
            "bare_cpu_s_big": round(cpu["raw"], 2),
            "node_idle_cores": round(idle_rate, 4),
            "node_cpu_s_big_net": round(cpu["gchat"] - idle_rate * wall["gchat"], 2),
            "verified_big": verified_big,
            "best_mib_s": {side: {leg: round(best(side, leg), 1) for leg in ("upload", "download")}
                           for side in rounds},
            "many": many, "many_bytes_each": each, "many_rss_growth_mib": round(many_growth, 2),
            "blobs_left": len(os.listdir(blobs)) if blobs.exists() else 0,
        }

    async def scenario_files(self) -> dict[str, Any]:
        p = self.params
        s = await self.files_phase()
        big = f"{p.files_big_mib:g} MiB"
        rows = []
        for leg in ("upload", "download"):
            gchat, raw = s["best_mib_s"]["gchat"][leg], s["best_mib_s"]["raw"][leg]
            rows.append(row("files", f"{big} {leg} (best of {p.files_rounds})", "MiB/s", gchat,
                            raw, ">= 0.5x", gchat / raw >= 0.5 and s["verified_big"]))
        rows.append(row("files", f"node RSS growth moving {big}", "MiB",
                        s["node_rss_growth_mib"], None, "<= 16 MiB",
                        s["node_rss_growth_mib"] <= 16))
        # Server CPU per MiB: what the node adds, whatever else the machine runs (the
        # MiB/s above are bound by the shared client and scheduler on a busy machine).
        moved = 2 * p.files_rounds * p.files_big_mib  # MiB up and down through each server
        node_ms, bare_ms = (1000 * s[k] / moved for k in ("node_cpu_s_big", "bare_cpu_s_big"))
        rows.append(row("files", f"server CPU per MiB moved ({big} files)", "ms/MiB",
                        node_ms, bare_ms, "<= 2x", node_ms <= 2 * bare_ms))
        net_ms = 1000 * s["node_cpu_s_big_net"] / moved
        rows.append(row("files", "  the same, less the node's idle CPU", "ms/MiB",
                        net_ms, bare_ms, "<= 2x", net_ms <= 2 * bare_ms))
        total = s["many_bytes_each"] * p.files_pairs
        many = s["many"]
        for leg in ("upload", "download"):
            gchat = files.mib_per_s(total, many["gchat"][f"{leg}_s"])
            raw = files.mib_per_s(total, many["raw"][f"{leg}_s"])
            rows.append(row("files", f"{p.files_pairs} x {p.files_each_mib:g} MiB {leg} at once",
                            "MiB/s", gchat, raw, "all verified",
                            many["gchat"]["verified"] == p.files_pairs))
        rows.append(row("files", f"node RSS growth, {p.files_pairs} at once", "MiB",
                        s["many_rss_growth_mib"]))
        return s | {"rows": rows}

    # --- two nodes through Redis --------------------------------------------------------------

    async def scenario_cluster(self) -> dict[str, Any]:
        if not harness.redis_broker_available():
            self.log("cluster: skipped: redis broker not available")
            return {"status": "skipped: redis broker not available", "rows": []}
        redis_url = os.environ.get("GCHAT_LOADTEST_REDIS_URL", harness.DEFAULT_REDIS_URL)
        if not harness.redis_available(redis_url):
            self.log(f"cluster: skipped: no Redis answering at {redis_url}")
            return {"status": f"skipped: no Redis at {redis_url}", "rows": []}
        assert self.database_url is not None and self.node is not None
        single = self.results.get("relay", {}).get("details", {}).get("capacity", {}).get(
            "gchat")
        if single is None:
            single = await self.relay_phase("gchat", "closed", label="single")
        data, logs = self.workspace.path("node"), self.workspace.path("logs")
        self.log(f"cluster: two nodes sharing PostgreSQL and Redis ({redis_url}); senders on "
                 "node A, recipients on node B")
        prefix = f"gchat-lt-{uuid.uuid4().hex[:8]}:"
        nodes = [harness.start_node(f"gchat-node-{n}", self.database_url, data, logs,
                                    GCHAT_REDIS_URL=redis_url, GCHAT_REDIS_PREFIX=prefix,
                                    GCHAT_NODE_ID=f"load-{n}", **self.node_env)
                 for n in ("a", "b")]
        self._extra.extend(nodes)
        try:
            two = await self.relay_phase("gchat", "closed", label="cluster",
                                         send_url=nodes[0].url, recv_url=nodes[1].url,
                                         servers=nodes)
        finally:
            for node in nodes:
                node.stop()
        rows = [
            row("cluster", "throughput, 2 nodes via Redis (ratio: vs 1 node)", "msg/s",
                two["throughput"], None, ratio=two["throughput"] / single["throughput"]),
            row("cluster", "p99, 2 nodes (closed loop)", "ms", two["p99_ms"]),
        ]
        return {"status": "ok", "rows": rows, "details": {"two_nodes": two,
                                                          "single_node": single}}

    async def scenario_workers(self) -> dict[str, Any]:
        """``gchat serve --workers N`` at N = 1 and 2 (without ``--node-env
        GCHAT_REDIS_URL=...``, N = 2 signals through PostgreSQL LISTEN/NOTIFY),
        closed loop, alternating 1, 2, 1, 2 on fresh processes; each figure is
        the mean of its two runs. The run's own node is stopped meanwhile, so
        that the audit sequencer (and its CPU) is in the measured processes."""
        assert self.database_url is not None and self.node is not None
        data, logs = self.workspace.path("node"), self.workspace.path("logs")
        broker = ("Redis" if self.node_env.get("GCHAT_REDIS_URL")
                  else "no Redis: 2 workers signal through LISTEN/NOTIFY")
        self.log(f"workers: gchat serve --workers 1 and 2 ({broker}), closed loop, alternating")
        self.node.stop()
        runs: dict[int, list[dict[str, Any]]] = {1: [], 2: []}
        try:
            for n in (1, 2, 1, 2):
                server = harness.start_node(
                    f"gchat-workers-{n}", self.database_url, data, logs,
                    GCHAT_WORKERS=str(n), **self.node_env)
                try:
                    await self.audit_drained_after()
                    runs[n].append(await self.relay_phase(
                        "gchat", "closed", label=f"workers{n}", send_url=server.url,
                        recv_url=server.url, servers=[server]))
                finally:
                    server.stop(timeout=40)
        finally:
            await self.restart_node()

        def mean(n: int, key: str) -> float:
            return float(sum(r[key] for r in runs[n])) / len(runs[n])

        one, two = (
            {k: mean(n, k) for k in ("throughput", "p99_ms", "server_ms_per_msg",
                                     "db_ms_per_msg", "cpu_ms_per_msg")}
            for n in (1, 2))
        cores = {n: sum(r["cpu"].get("server_cores", 0.0) for r in runs[n]) / len(runs[n])
                 for n in (1, 2)}
        rows = [
            row("workers", "throughput, 2 workers (ratio: vs 1)", "msg/s",
                two["throughput"], None, ratio=two["throughput"] / one["throughput"]),
            row("workers", "throughput, 1 worker", "msg/s", one["throughput"]),
            row("workers", "CPU per message, 2 workers (server + PG; ratio: vs 1)", "ms",
                two["cpu_ms_per_msg"], None,
                ratio=two["cpu_ms_per_msg"] / one["cpu_ms_per_msg"]),
            row("workers", "CPU per message, 1 worker (server + PG)", "ms",
                one["cpu_ms_per_msg"]),
            row("workers", "node CPU per message, 2 workers (ratio: vs 1)", "ms",
                two["server_ms_per_msg"], None,
                ratio=two["server_ms_per_msg"] / one["server_ms_per_msg"]),
            row("workers", "node cores used, 2 workers (ratio: vs 1)", "cores", cores[2], None,
                ratio=cores[2] / cores[1] if cores[1] else float("nan")),
            row("workers", "p99, 2 workers (ratio: vs 1)", "ms", two["p99_ms"], None,
                ratio=two["p99_ms"] / one["p99_ms"]),
        ]
        return {"status": "ok", "rows": rows,
                "details": {"one": runs[1], "two": runs[2], "load": os.getloadavg()}}

    # --- driver ---------------------------------------------------------------------------------

    async def run(self, scenarios: tuple[str, ...]) -> dict[str, Any]:
        started = time.monotonic()
        wants_raw = any(s in ("relay", "idle") for s in scenarios)
        try:
            await self.setup(self.params.pool_size(scenarios), raw_relay=wants_raw)
            for name in scenarios:
                t0 = time.monotonic()
                method: Callable[[], Awaitable[dict[str, Any]]] = getattr(
                    self, f"scenario_{name}")
                try:
                    self.results[name] = await method()
                except Exception as error:
                    self.log(f"{name}: FAILED: {error!r}")
                    self.results[name] = {"status": f"failed: {error!r}", "rows": []}
                self.results[name]["elapsed_s"] = round(time.monotonic() - t0, 1)
        finally:
            await self.teardown()
        self.results["elapsed_s"] = round(time.monotonic() - started, 1)
        return self.results


async def _chunked(coros: list[Awaitable[Any]], size: int = 200) -> list[Any]:
    out: list[Any] = []
    for i in range(0, len(coros), size):
        out.extend(await asyncio.gather(*coros[i:i + size]))
    return out


def _sum_counters(counters: Any) -> dict[str, int]:
    total: dict[str, int] = {}
    for c in counters:
        for k, v in c.items():
            total[k] = total.get(k, 0) + v
    return total


async def insert_backlog(dsn: str, sender: Dev, per_device: list[tuple[Dev, int]]) -> float:
    """Queue envelopes for offline devices straight into PostgreSQL, as the
    committer would (message row + inbox row at the device's next position);
    returns the seconds it took. Ciphertexts are real sealed boxes to each
    device (a pool of up to 256 distinct ones per device, cycled)."""
    started = time.monotonic()
    pools = {d.device_id: seal_pool(d.identity_key(), min(n, 256)) for d, n in per_device}
    now = datetime.now(UTC)
    expires = now + timedelta(days=30)
    tag = uuid.uuid4().hex[:8]
    conn = await asyncpg.connect(dsn)
    try:
        async with conn.transaction():
            rows = await conn.fetch(
                "SELECT id, inbox_head FROM devices WHERE id = ANY($1::uuid[]) "
                "ORDER BY id FOR UPDATE", [d.device_id for d, _ in per_device])
            heads = {r["id"]: r["inbox_head"] for r in rows}
            messages, inbox = [], []
            for dev, count in per_device:
                pool = pools[dev.device_id]
                head = heads[dev.device_id]
                for j in range(count):
                    mid = uuid.uuid4()
                    messages.append((mid, sender.device_id, sender.official_id,
                                     dev.official_id, f"backlog.{tag}.{dev.index}.{j}", now))
                    inbox.append((dev.device_id, head + j + 1, mid, pool[j % len(pool)],
                                  expires))
            await conn.copy_records_to_table(
                "messages", records=messages,
                columns=["id", "sender_device", "sender_official", "recipient_official",
                         "client_message_id", "sent_at"])
            await conn.copy_records_to_table(
                "inbox", records=inbox,
                columns=["device_id", "position", "message_id", "ciphertext", "expires_at"])
            await conn.execute(
                "UPDATE devices d SET inbox_head = d.inbox_head + c.n "
                "FROM unnest($1::uuid[], $2::bigint[]) AS c(id, n) WHERE d.id = c.id",
                [d.device_id for d, _ in per_device], [n for _, n in per_device])
    finally:
        await conn.close()
    return time.monotonic() - started


async def inbox_left(dsn: str, device_ids: list[uuid.UUID]) -> int:
    conn = await asyncpg.connect(dsn)
    try:
        return int(await conn.fetchval(
            "SELECT count(*) FROM inbox WHERE device_id = ANY($1::uuid[])", device_ids))
    finally:
        await conn.close()


async def smoke_files(database_url: str, log: Callable[[str], None] = print,
                      **overrides: Any) -> dict[str, Any]:
    """The files scenario, small, against a node on ``database_url`` (for the test suite)."""
    params = {"files_big_mib": 2, "files_rounds": 1, "files_pairs": 3,
              "files_each_mib": 0.25} | overrides
    run = Run(short=True, workers_count=1, database_url=database_url, log=log,
              overrides=params)
    try:
        await run.setup(run.params.pool_size(("files",)), raw_relay=False)
        return await run.files_phase()
    finally:
        await run.teardown()


async def smoke_backlog(database_url: str, backlog: int, ack_batch: int, window: int,
                        log: Callable[[str], None] = print) -> dict[str, Any]:
    """The backlog's drain, small, against a node on ``database_url`` whose
    delivery window is ``window`` envelopes (for the test suite)."""
    run = Run(short=True, workers_count=1, database_url=database_url, log=log,
              overrides={"backlog": backlog, "backlog_devices": 2, "ack_batch": ack_batch},
              node_env={"GCHAT_MAX_UNACKED": str(window)})
    try:
        await run.setup(run.params.pool_size(("backlog",)), raw_relay=False)
        return await run.backlog_phase(label="smoke")
    finally:
        await run.teardown()


async def smoke_relay(database_url: str, pairs: int = 4, seconds: float = 3.0,
                      log: Callable[[str], None] = print) -> dict[str, Any]:
    """A small closed-loop relay against a node on ``database_url`` (for the test
    suite): the counts, and how many envelopes are left in the inbox after."""
    run = Run(short=True, workers_count=1, database_url=database_url, log=log,
              overrides={"pairs": pairs, "capacity_s": seconds, "warmup_s": 0.5})
    try:
        await run.setup(2 * pairs, raw_relay=False)
        summary = await run.relay_phase("gchat", "closed", label="smoke")
        await run.inbox_emptied_after(5.0)
        summary["left_in_inbox"] = await inbox_left(database_url,
                                                    [d.device_id for d in run.devs])
        return summary
    finally:
        await run.teardown()
