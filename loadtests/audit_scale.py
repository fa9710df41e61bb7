"""The audit log at national scale: a million leaves, measured as ratios in one run.

    python -m loadtests.audit_scale [--leaves 1000000] [--samples 300]
                                    [--export 100000]

Fills a database made for this run (``GCHAT_LOADTEST_DATABASE_URL`` /
``GCHAT_TEST_DATABASE_URL``, default postgres@127.0.0.1) with generated
messages' ``message.accepted`` and ``message.delivered`` events, their packs
and the stored subtree roots (:func:`fill`: about 95 s per million here), and never
analyses it -- as a fresh database with autovacuum off is.  A second
database holds a 1,000-leaf log, so every figure comes with its ratio:

- **takeover**: a sequencer elected on the big log vs on the small one
  (and what the old takeover -- reading every leaf hash -- costs);
- **inclusion proof** p50/p95 from storage, a fresh pool (a restarted node),
  and this process's RSS growth over all the proofs;
- **idle poll**: PostgreSQL CPU and wall time per idle sequencer poll
  without statistics, vs the statement it replaced, and both after
  ``ANALYZE``; then a real idle node (``gchat serve``) for 20 s: node and
  PostgreSQL CPU as a share of a core;
- **export / verify**: ``gchat audit export`` of ``--export`` entries through
  that node and ``gchat audit verify`` of the file, each its own process,
  peak RSS and time, vs the same for a range a tenth of the size.

Prints one JSON object (the figures in docs/PERFORMANCE.md come from it).
The tests use :func:`fill` at 65,000+ leaves (two tile levels).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import json
import os
import random
import statistics
import sys
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg

from gchat.audit import proofs
from gchat.audit.log import AuditEvent, encode_entry, involved
from gchat.audit.merkle import MerkleAccumulator, leaf_hash
from gchat.audit.sequencer import Sequencer, resume
from gchat.runtime.server_keys import ServerKeys
from gchat.store import audit as store
from gchat.store import audit_codec as codec
from gchat.store import migrations
from gchat.store.database import Database
from loadtests.harness import (
    REPO,
    TempDatabase,
    Workspace,
    cpu_seconds,
    node_env,
    rss_kib,
    start_node,
)

#: One generated ``message.accepted`` event per row of generate_series: ids
#: derived from the row number (5,000 senders in 50 agencies), an entry of
#: the size and shape the node writes (about 420 bytes).  The tables of
#: migrations before 0010 (:func:`fill_old_layout`: a log an older node left).
_EVENTS = r"""
INSERT INTO audit_events (kind, created_at, actor_official, actor_device, subject_official,
                          officials, devices, agencies, entry)
SELECT 'message.accepted', at, a, d, s, ARRAY[a, s], ARRAY[d, r], ARRAY[ag],
       convert_to(
         '{"actor_device":"' || d || '","actor_official":"' || a
         || '","details":{"ciphertext_bytes":' || (300 + g % 700)
         || ',"message_id":"' || md5('m' || g)::uuid || '","recipient_devices":["' || r
         || '"],"sent_at":' || (extract(epoch FROM at) * 1000)::bigint
         || '},"kind":"message.accepted","subject_official":"' || s
         || '","time":"' || to_char(at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"')
         || '","v":1}', 'UTF8')
FROM (SELECT g, now() - make_interval(secs => ($2 - g) * 0.05) AS at,
             md5('o' || g % 5000)::uuid AS a, md5('d' || g % 5000)::uuid AS d,
             md5('o' || (g * 7 + 1) % 5000)::uuid AS s, md5('d' || (g * 7 + 1) % 5000)::uuid AS r,
             md5('g' || g % 50)::uuid AS ag
      FROM generate_series($1::bigint, $2::bigint) AS g) AS x
"""

_LEAVES = r"""
INSERT INTO audit_log (leaf_index, event_id, leaf_hash, low_xid)
SELECT $1 + row_number() OVER (ORDER BY e.id) - 1, e.id, sha256('\x00'::bytea || e.entry),
       pg_snapshot_xmin(pg_current_snapshot())
FROM audit_events e WHERE e.id > $2 ORDER BY e.id
"""


async def fill_old_layout(conn: asyncpg.Connection, leaves: int, chunk: int = 100_000) -> None:
    """``leaves`` sequenced events in the tables before migration 0010 (set-based SQL)."""
    done = 0
    while done < leaves:
        n = min(chunk, leaves - done)
        last_id = await conn.fetchval("SELECT coalesce(max(id), 0) FROM audit_events")
        size = await conn.fetchval("SELECT coalesce(max(leaf_index) + 1, 0) FROM audit_log")
        await conn.execute(_EVENTS, done + 1, done + n)
        await conn.execute(_LEAVES, size, last_id)
        done += n


def _uuid(seed: str) -> str:
    return str(uuid.UUID(bytes=hashlib.md5(seed.encode()).digest()))  # noqa: S324 - ids, not security


#: How many messages later a message's "message.delivered" event is written
#: than its "message.accepted": 64 messages, 128 events, eight packs.  At
#: national scale (about 1,000 messages a second) a pack of 16 events spans
#: a few milliseconds and an acknowledgement comes tens of milliseconds to
#: hours after the send, so a message's two events are never in one pack.
DELIVERY_LAG = 64


def message_events(k: int, at: datetime) -> tuple[AuditEvent, AuditEvent]:
    """The two events of generated message ``k`` (sent at ``at``): accepted, then
    delivered.  Its sender is official ``k`` mod 5,000, its recipient official
    ``7k + 1`` mod 5,000, each with one device; official j is in agency j mod 50."""
    a, s = uuid.UUID(_uuid(f"o{k % 5000}")), uuid.UUID(_uuid(f"o{(k * 7 + 1) % 5000}"))
    d, r = uuid.UUID(_uuid(f"d{k % 5000}")), uuid.UUID(_uuid(f"d{(k * 7 + 1) % 5000}"))
    message = uuid.UUID(_uuid(f"m{k}"))
    return (
        AuditEvent("message.accepted", actor_official=a, actor_device=d, subject_official=s,
                   details={"message_id": message, "sent_at": int(at.timestamp() * 1000),
                            "ciphertext_bytes": 300 + k % 700, "recipient_devices": [r]}),
        AuditEvent("message.delivered", actor_official=s, actor_device=r,
                   details={"message_id": message, "position": 1 + abs(k) // 5000,
                            "sender_official": a, "sender_device": d}),
    )


def generated_events(
    first: int, n: int, end: int, until: datetime | None = None
) -> list[tuple[int, datetime, bytes, bytes]]:
    """Events ``first``..``first + n - 1`` as the node writes them: (id, time, leaf hash,
    stored entry), one every 50 ms, event ``end`` at ``until`` (default now).

    The mix a node writes for messages to one device: an even event g is
    message g's "message.accepted" (its sender is official g mod 5,000), an
    odd one the "message.delivered" of the message accepted
    :data:`DELIVERY_LAG` messages earlier (:func:`message_events`), between
    5,000 officials in 50 agencies.
    """
    now = until or datetime.now(UTC)
    out = []
    for g in range(first, first + n):
        at = now - timedelta(seconds=(end - g) * 0.05)
        k = g if g % 2 == 0 else g - 1 - 2 * DELIVERY_LAG
        event = message_events(k, at)[g % 2]
        entry = encode_entry(event, at)
        officials, devices = involved(event)
        agencies = sorted({uuid.UUID(_uuid(f"g{j % 50}")) for j in (k, k * 7 + 1)})
        stored = codec.encode(entry, event.kind, officials, agencies, devices, at)
        out.append((g, at, leaf_hash(entry), stored))
    return out


async def fill(
    conn: asyncpg.Connection, leaves: int, *, subtrees: bool = True, chunk: int = 50_000,
    log: Any = None, until: datetime | None = None,
) -> None:
    """Append ``leaves`` generated events, sequenced, to the log.

    Entries, leaf hashes, packs and subtree roots are made by the node's own
    code (:mod:`gchat.store.audit_codec`, the sequencer's packing, the
    Merkle accumulator), copied in without the backlog table.  Without
    ``subtrees`` the roots are left out, as a node older than 0006 left them.
    ``until``: the time of the last event (default now).
    """
    size = await store.log_size(conn)
    tree = await resume(conn, size) if subtrees else MerkleAccumulator()
    done = 0
    while done < leaves:
        n = min(chunk, leaves - done)
        events = generated_events(size + done + 1, n, size + leaves, until)
        rows = []
        last_at = None
        for start in range(0, n, codec.PACK):
            part = events[start : start + codec.PACK]
            at = max(e[1] for e in part)
            last_at = at if last_at is None else max(last_at, at)
            rows.append((size + done + start, last_at, min(e[1] for e in part),
                         part[0][0], part[-1][0], b"".join(e[2] for e in part),
                         codec.pack_events([(e[0], e[1], e[3]) for e in part])))
        await store.ensure_partitions(conn, sorted({r[1] for r in rows}))
        await conn.copy_records_to_table(
            "audit_packs", records=rows,
            columns=["first_leaf", "at", "min_at", "min_id", "max_id", "hashes", "events"])
        roots = tree.extend([e[2] for e in events])
        if subtrees and roots:
            await conn.executemany(
                "INSERT INTO audit_subtrees (height, idx, hash) VALUES ($1, $2, $3)", roots)
        done += n
        if log:
            log(f"filled {done} leaves")
    await conn.execute(
        "SELECT setval('audit_events_id_seq', greatest($1, (SELECT last_value"
        " FROM audit_events_id_seq)))", size + leaves + 1)


# --- measurements ---------------------------------------------------------------




def _ms(seconds: float) -> float:
    return round(seconds * 1000, 3)


def _median(values: list[float]) -> float:
    return statistics.median(values)


def _p95(values: list[float]) -> float:
    return sorted(values)[max(0, int(len(values) * 0.95) - 1)]


async def _takeover(url: str, keys: ServerKeys) -> dict[str, float]:
    """Election of a sequencer on this log: resume() alone, and start to leading."""
    db = await Database.connect(url, min_size=1, max_size=2)
    try:
        async with db.pool.acquire() as conn:
            size = await store.log_size(conn)
            times = []
            for _ in range(5):
                started = time.perf_counter()
                await resume(conn, size)
                times.append(time.perf_counter() - started)
        sequencer = Sequencer(db, keys.audit, sign_interval=3600, retry_seconds=0.05)
        started = time.perf_counter()
        sequencer.start()
        while not sequencer.leading:  # noqa: ASYNC110 - a flag the sequencer's task sets
            await asyncio.sleep(0.001)
        elected = time.perf_counter() - started
        await sequencer.stop()
        return {"leaves": size, "resume_ms": _ms(_median(times)), "elected_ms": _ms(elected)}
    finally:
        await db.close()


async def _proof_latency(url: str, samples: int) -> dict[str, float]:
    """Inclusion proofs of random leaves from storage, as a fresh node serves them."""
    db = await Database.connect(url, min_size=1, max_size=2)
    try:
        size = await proofs.stored_size(db.pool)
        rng = random.Random(7)
        rss_before = rss_kib(os.getpid())
        times = []
        for _ in range(samples):
            index = rng.randrange(size)
            started = time.perf_counter()
            await store.event_at(db.pool, index, None)
            await proofs.inclusion_proof(db.pool, index, size)
            times.append(time.perf_counter() - started)
        return {"leaves": size, "p50_ms": _ms(_median(times)), "p95_ms": _ms(_p95(times)),
                "first_ms": _ms(times[0]),
                "rss_growth_kib": rss_kib(os.getpid()) - rss_before}
    finally:
        await db.close()


async def _backend_cost(
    conn: asyncpg.Connection, sql: str, args: tuple[Any, ...], n: int
) -> dict[str, float]:
    pid = await conn.fetchval("SELECT pg_backend_pid()")
    await conn.fetch(sql, *args)  # plan and cache once
    cpu, started = cpu_seconds(pid), time.perf_counter()
    for _ in range(n):
        await conn.fetch(sql, *args)
    return {"wall_ms": _ms((time.perf_counter() - started) / n),
            "pg_cpu_ms": _ms((cpu_seconds(pid) - cpu) / n)}


async def _idle_polls(url: str) -> dict[str, Any]:
    """PostgreSQL cost of one idle poll: now (pinned) vs before, without and with ANALYZE."""
    out: dict[str, Any] = {}
    for phase in ("no_statistics", "after_analyze"):
        pinned = await asyncpg.connect(url)
        plain = await asyncpg.connect(url)
        try:
            await store.pin_index_plans(pinned)
            horizon, _ = await store.idle_check(pinned, store.Horizon("0"))  # as the 1st poll
            out[phase] = {
                "idle_check": await _backend_cost(
                    pinned, store.IDLE_CHECK, (horizon.xmax, list(horizon.running)), 2000),
            }
            if phase == "no_statistics":
                await plain.execute("ANALYZE audit_backlog; ANALYZE audit_packs")
        finally:
            await pinned.close()
            await plain.close()
    return out


def _peak_kib(pid: int) -> int:
    """VmHWM: the peak RSS of the program ``pid`` runs now (reset by exec, unlike ru_maxrss,
    which a child inherits from the parent it was forked from)."""
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    return 0


async def _run_measured(args: list[str], env: dict[str, str]) -> tuple[str, float, int]:
    """``gchat ARGS`` as a child process: (stdout, seconds, its peak RSS in KiB)."""
    started = time.perf_counter()
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "gchat", *args, cwd=REPO, env=env,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    peak = 0

    async def sample() -> None:
        nonlocal peak
        while True:
            with contextlib.suppress(OSError):
                peak = max(peak, _peak_kib(proc.pid))
            await asyncio.sleep(0.05)

    sampler = asyncio.create_task(sample())
    try:
        out, err = await proc.communicate()
    finally:
        sampler.cancel()
    elapsed = time.perf_counter() - started
    if proc.returncode != 0:
        raise RuntimeError(f"gchat {' '.join(args[:2])} failed: {err.decode()[-500:]}")
    return out.decode(), elapsed, peak


def _last_json(text: str) -> dict[str, Any]:
    result: dict[str, Any] = json.loads(text.strip().splitlines()[-1])
    return result


async def _auditor(env: dict[str, str], url: str, work: Path) -> str:
    """An auditor's device state file, made with the admin CLI as an operator would."""
    admin, auditor = str(work / "admin.state"), str(work / "auditor.state")

    async def gchat(*args: str) -> dict[str, Any]:
        out, _, _ = await _run_measured(list(args), env)
        try:
            return _last_json(out)
        except (ValueError, IndexError):
            return {}  # a command that prints a sentence

    boot = await gchat("admin", "bootstrap", "--agency-code", "OAG", "--agency-name", "Audit",
                       "--name", "Admin", "--json")
    await gchat("client", "enroll", "--url", url, "--code", boot["code"], "--state", admin)
    official = (await gchat("admin", "official", "add", "--state", admin, "--name-en",
                            "Auditor", "--json"))["id"]
    await gchat("admin", "role", "grant", official, "auditor", "--state", admin)
    code = (await gchat("admin", "code", "issue", official, "--state", admin,
                        "--json"))["code"]
    await gchat("client", "enroll", "--url", url, "--code", code, "--state", auditor)
    return auditor


async def _idle_node_and_export(url: str, ranges: list[int], work: Workspace) -> dict[str, Any]:
    data = work.path("node")
    node = start_node("node", url, data, work.path("logs"))
    out: dict[str, Any] = {}
    try:
        env = node_env(url, data, node.port)
        # Idle: no clients; the sequencer polls, the samplers sample.
        await asyncio.sleep(5)
        conn = await asyncpg.connect(url)
        try:
            pids = [r[0] for r in await conn.fetch(
                """SELECT pid FROM pg_stat_activity
                   WHERE datname = current_database() AND pid <> pg_backend_pid()""")]
        finally:
            await conn.close()
        seconds = 20.0
        node_cpu, pg_cpu = cpu_seconds(node.pid), sum(cpu_seconds(p) for p in pids)
        await asyncio.sleep(seconds)
        node_cpu = cpu_seconds(node.pid) - node_cpu
        pg_cpu = sum(cpu_seconds(p) for p in pids) - pg_cpu
        out["idle_node"] = {
            "seconds": seconds, "node_core_pct": round(100 * node_cpu / seconds, 2),
            "postgres_core_pct": round(100 * pg_cpu / seconds, 2),
            "node_rss_kib": node.rss_kib(), "statistics": "none (never analysed)",
        }
        auditor = await _auditor(env, node.url, work.root)
        key = work.root / "audit.pub"
        key.write_text((await _run_measured(
            ["audit", "public-key", "--keys-dir", str(data / "keys")], env))[0])
        exports: list[dict[str, Any]] = []
        for count in ranges:
            file = work.root / f"export-{count}.jsonl"
            printed, took, peak = await _run_measured(
                ["audit", "export", "--state", auditor, "--out", str(file),
                 "--start", "1000", "--end", str(1000 + count)], env)
            verified, vtook, vpeak = await _run_measured(
                ["audit", "verify", "--export", str(file), "--key", str(key)], env)
            exports.append({
                "entries": count, "file_mib": round(file.stat().st_size / 2**20, 1),
                "export_s": round(took, 1), "export_peak_rss_mib": round(peak / 1024, 1),
                "verify_s": round(vtook, 1), "verify_peak_rss_mib": round(vpeak / 1024, 1),
                "verify": verified.strip().splitlines()[0][:80],
                "node_rss_mib_after": round(node.rss_kib() / 1024, 1),
            })
            file.unlink()
        out["export_verify"] = exports
        small, big = exports[0], exports[-1]
        out["export_verify_ratios"] = {
            "entries": round(big["entries"] / small["entries"], 1),
            "export_rss": round(big["export_peak_rss_mib"] / small["export_peak_rss_mib"], 2),
            "verify_rss": round(big["verify_peak_rss_mib"] / small["verify_peak_rss_mib"], 2),
        }
    finally:
        node.stop()
    return out


async def run(leaves: int, samples: int, export: int, log: Any) -> dict[str, Any]:
    big, small = TempDatabase(), TempDatabase()
    work = Workspace()
    result: dict[str, Any] = {"leaves": leaves}
    try:
        for db in (big, small):
            await db.create()
            conn = await asyncpg.connect(db.url)
            try:
                await migrations.migrate(conn)
                started = time.perf_counter()
                await fill(conn, leaves if db is big else 1000, log=log if db is big else None)
                if db is big:
                    result["fill_s"] = round(time.perf_counter() - started, 1)
            finally:
                await conn.close()
        keys = ServerKeys.load_or_create(work.path("keys"))
        log("takeover")
        took_big, took_small = await _takeover(big.url, keys), await _takeover(small.url, keys)
        result["takeover"] = {
            "big": took_big, "small": took_small,
            "big_over_small_resume": round(took_big["resume_ms"] / took_small["resume_ms"], 2),
        }
        log("proofs")
        proof_big = await _proof_latency(big.url, samples)
        proof_small = await _proof_latency(small.url, samples)
        result["inclusion_proof"] = {
            "big": proof_big, "small": proof_small,
            "big_over_small_p50": round(proof_big["p50_ms"] / proof_small["p50_ms"], 2),
        }
        # The idle node and the exports run on the big log, never analysed.
        log("idle node, export and verify")
        result |= await _idle_node_and_export(big.url, [max(1, export // 10), export], work)
        log("idle polls")  # last: it runs ANALYZE
        result["idle_poll"] = await _idle_polls(big.url)
    finally:
        await big.drop()
        await small.drop()
        work.cleanup()
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m loadtests.audit_scale")
    parser.add_argument("--leaves", type=int, default=1_000_000)
    parser.add_argument("--samples", type=int, default=300)
    parser.add_argument("--export", type=int, default=100_000)
    args = parser.parse_args(argv)
    started = time.perf_counter()

    def log(line: str) -> None:
        print(f"[{time.perf_counter() - started:7.1f}s] {line}", file=sys.stderr, flush=True)

    result = asyncio.run(run(args.leaves, args.samples, args.export, log))
    result["command"] = "python -m loadtests.audit_scale " + " ".join(argv or sys.argv[1:])
    result["elapsed_s"] = round(time.perf_counter() - started, 1)
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
