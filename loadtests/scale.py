"""The national-scale scenario: 400,000 officials and a million audit events on one node.

    python -m loadtests.scale [--officials 400000] [--measured-import 300000]
                              [--events 1000000] [--relay-seconds 60] [--pairs 100]
                              [--import-only] [--directory import|store]
                              [--audit-rounds 5] [--relay-rounds 2]

One database made for the run (``GCHAT_LOADTEST_DATABASE_URL`` /
``GCHAT_TEST_DATABASE_URL``, default postgres@127.0.0.1), dropped after,
and one real node (``gchat serve``), filled the way an operator fills it:

1. **Directory**: ``gchat admin bootstrap``, a four-level agency tree
   (4 ministries x 5 departments x 4 bureaus x 3 divisions: 344 agencies),
   then ``--officials`` officials with Thai and English names imported
   through ``gchat admin import --apply`` (the CLI as its own process,
   against the node): first the rest, then ``--measured-import`` rows into
   a directory that already holds them.  Reports import time, the CLI's peak
   RSS, the node's RSS (sampled every 0.2 s) before and at its peak, and the
   CPU seconds of the node and of its PostgreSQL backends.  ``--import-only``
   stops here.  ``--directory store`` writes the same officials through the
   node's store code (``directory.create_officials``, 5,000 a statement)
   instead, and measures no import: for the other stages without the
   import's minutes (then analyses the tables the importer analyses after
   an import).
2. **Search** through the node (``search_officials`` from an official's
   device): p50/p95 of narrow queries (a family name with its number, Thai
   or English: 1 to 11 matches) and of broad ones (prefixes matching tens of thousands).
3. **Export**: ``gchat admin export --output`` of the whole directory (time,
   CLI peak RSS, rows written, and the CPU seconds of the CLI, the node and
   the database's backends: what the time is made of on a loaded machine).
4. **Audit log**: the node stopped, ``--events`` events appended the way the
   node builds them (``audit_scale.fill``: the node's codec, packing and
   Merkle accumulator; messages' accepted and delivered events), the node
   started again (restart time includes the sequencer's takeover). An
   official's last-day query (the node's ``query_events``, 50 officials,
   ``--audit-rounds`` times on the same log: wall p50/p95 of each round with
   the load average beside it, and the CPU per query of the querying process
   and of its PostgreSQL backend, which the machine's load does not change),
   inclusion proofs from storage, bytes per event on disk
   (``audit_storage.audit_bytes``, the measure ``loadtests.audit_storage``
   reports: every audit table, partitions, indexes, TOAST).
5. **Send throughput, statistics as a fresh database has them** (those
   migrations took of empty tables, and ``agencies``'; autovacuum off
   here), against the same after ``ANALYZE``, alternated ``--relay-rounds``
   times in one run so that a change of the machine's load between phases
   cannot make the ratio: a closed-loop relay (``--pairs`` pairs, window 2)
   for ``--relay-seconds`` with the fresh statistics, ``ANALYZE``, the
   same again, then the statistics put back as they were before the
   directory was filled (``pg_class`` sizes restored, column statistics
   taken since deleted; partitions made since as never analysed), and so
   on.  Bytes per message: the growth of the audit tables (what stays) and
   of the whole database over all phases, per message accepted.

Node RSS after each stage.  Prints one JSON object (the figures in
docs/PERFORMANCE.md and the sizing table in docs/OPERATIONS.md come from
it); progress goes to stderr.  ``tests/test_loadtests_smoke.py`` runs it
scaled down.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import csv
import json
import os
import random
import resource
import sys
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg

from crypto.identity import IdentityKeyPair
from gchat.client.state import DeviceState
from gchat.store import audit as store
from gchat.store import directory
from gchat.store.directory import NewOfficial
from loadtests import harness
from loadtests.audit_scale import _last_json, _proof_latency, _run_measured, _uuid, fill
from loadtests.audit_storage import audit_bytes
from loadtests.clients import local_client
from loadtests.scenarios import Run, percentile
from protocol import frames as f

GIVEN_TH = ["สมชาย", "สมหญิง", "สมศักดิ์", "ประยุทธ", "วิไล", "อนันต์", "กาญจนา", "ธนพล",
            "ศิริพร", "ณัฐวุฒิ", "พิมพ์ชนก", "วรวุฒิ", "อรุณี", "สุรชัย", "มาลี", "ปกรณ์"]
FAMILY_TH = ["ใจดี", "รักชาติ", "ทองคำ", "แสงทอง", "บุญมา", "ศรีสุข", "วงศ์ใหญ่", "พงษ์ไพร",
             "สุขสวัสดิ์", "ธรรมรักษ์"]
GIVEN_EN = ["Somchai", "Somying", "Somsak", "Prayut", "Wilai", "Anan", "Kanchana", "Thanaphon",
            "Siriporn", "Nattawut", "Pimchanok", "Worawut", "Arunee", "Surachai", "Malee",
            "Pakorn"]
FAMILY_EN = ["Jaidee", "Rakchat", "Thongkham", "Saengthong", "Boonma", "Srisuk", "Wongyai",
             "Pongprai", "Suksawat", "Thammarak"]
POSITIONS = ["นักวิเคราะห์นโยบายและแผน", "นิติกร", "ผู้อำนวยการกอง", "นักวิชาการคอมพิวเตอร์",
             "เจ้าพนักงานธุรการ", "นักทรัพยากรบุคคล"]
#: Prefixes that match tens of thousands of officials each (own names, positions,
#: agency names): the searches whose cost used to follow the matches.
BROAD = ["สม", "som", "กรม", "สำนักงาน", "นิติ", "กอง", "jai", "ส"]
#: Agency tree: ministries x departments x bureaus x divisions (344 agencies).
SHAPE = (4, 5, 4, 3)
AUDIT_OFFICIALS = 5000  # the generated audit events' officials (audit_scale.generated_events)


def agency_tree() -> list[tuple[str, str, str, str | None]]:
    """(code, Thai name, English name, parent code), parents first."""
    out: list[tuple[str, str, str, str | None]] = []
    for m in range(SHAPE[0]):
        mc = f"M{m}"
        out.append((mc, f"กระทรวงที่ {m}", f"Ministry {m}", None))
        for d in range(SHAPE[1]):
            dc = f"{mc}-D{d}"
            out.append((dc, f"กรมที่ {d}", f"Department {d}", mc))
            for b in range(SHAPE[2]):
                bc = f"{dc}-B{b}"
                out.append((bc, f"สำนักงานที่ {b}", f"Bureau {b}", dc))
                for v in range(SHAPE[3]):
                    out.append((f"{bc}-V{v}", f"กองที่ {v}", f"Division {v}", bc))
    return out


def write_officials(path: Path, first: int, count: int, codes: list[str]) -> None:
    """An HR file of officials ``first``..``first + count - 1`` (UTF-8, the import's columns).

    Every name is a common given name and a family name with the official's
    number (E0000123 is ``... ใจดี123``), so a family name with its number
    is a narrow query and a given name's first letters a broad one.
    """
    with path.open("w", encoding="utf-8", newline="") as out:
        w = csv.writer(out)
        w.writerow(["employee_id", "name_th", "name_en", "position", "agency_code", "email",
                    "phone"])
        w.writerows(officials_rows(first, count, codes))


def officials_rows(first: int, count: int, codes: list[str]) -> list[list[str]]:
    """The rows of :func:`write_officials` (same names, same agencies)."""
    rng = random.Random(first)
    out = []
    for i in range(first, first + count):
        g, fam = rng.randrange(len(GIVEN_TH)), i % len(FAMILY_TH)
        out.append([f"E{i:07d}", f"{GIVEN_TH[g]} {FAMILY_TH[fam]}{i}",
                    f"{GIVEN_EN[g]} {FAMILY_EN[fam]}{i}", POSITIONS[i % len(POSITIONS)],
                    codes[i % len(codes)], "", ""])
    return out


async def _store_officials(url: str, count: int, codes: list[str],
                           chunk: int = 5000) -> float:
    """``count`` officials through ``directory.create_officials`` (no import); seconds.

    Then ANALYZE of the tables the importer analyses after an import
    (``officials``, ``official_terms``, ``official_roles``), so the later
    stages see the directory as an import leaves it.
    """
    started = time.perf_counter()
    conn = await asyncpg.connect(url)
    try:
        ids = {r["code"]: r["id"] for r in await conn.fetch("SELECT code, id FROM agencies")}
        for first in range(0, count, chunk):
            rows = officials_rows(first, min(chunk, count - first), codes)
            async with conn.transaction():
                await directory.create_officials(conn, [
                    NewOfficial(id=uuid.uuid4(), agency_id=ids[r[4]], name_th=r[1], name_en=r[2],
                                position=r[3], employee_id=r[0]) for r in rows])
        await conn.execute("ANALYZE officials, official_terms, official_roles")
    finally:
        await conn.close()
    return time.perf_counter() - started


async def _create_agencies(url: str) -> list[str]:
    """The agency tree, written directly (the subject here is officials); leaf codes."""
    conn = await asyncpg.connect(url)
    ids: dict[str, uuid.UUID] = {}
    try:
        async with conn.transaction():
            for code, th, en, parent in agency_tree():
                ids[code] = uuid.uuid4()
                await directory.create_agency(conn, ids[code], code, None,
                                              ids[parent] if parent else None,
                                              name_th=th, name_en=en)
        await conn.execute("ANALYZE agencies")
    finally:
        await conn.close()
    # Most officials in divisions, some directly in a bureau or a department,
    # in an order that mixes them even in a small run.
    tree = [c for c, _, _, _ in agency_tree()]
    codes = [c for c in tree if "-V" in c] * 12 + [c for c in tree if c.count("-") in (1, 2)]
    random.Random(1).shuffle(codes)
    return codes


async def _import(path: Path, state: Path, env: dict[str, str],
                  node: harness.ServerProcess, url: str) -> dict[str, Any]:
    """``gchat admin import PATH --apply``: time, CLI peak RSS, node RSS before and at
    peak, and the CPU seconds the node and its PostgreSQL backends spent on it (on a
    shared machine the wall time follows the load; CPU seconds much less)."""
    backends = harness.cpu_seconds_of(await _node_backends(url))
    node_cpu = harness.cpu_seconds(node.pid)
    before = node.rss_kib()
    peak = before
    done = asyncio.Event()

    async def sample() -> None:
        nonlocal peak
        while not done.is_set():
            with contextlib.suppress(OSError):
                peak = max(peak, node.rss_kib())
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(done.wait(), 0.2)

    sampler = asyncio.create_task(sample())
    try:
        out, took, cli_peak = await _run_measured(
            ["admin", "import", str(path), "--apply", "--json", "--state", str(state)], env)
    finally:
        done.set()
        await sampler
    node_cpu = harness.cpu_seconds(node.pid) - node_cpu
    # Backends the node opened during the import are counted from zero.
    backend_cpu = sum(cpu - backends.get(pid, 0.0)
                      for pid, cpu in harness.cpu_seconds_of(await _node_backends(url)).items())
    return {"seconds": round(took, 1),
            **{f"{step}_s": s for step, s in _last_json(out).get("seconds", {}).items()},
            "cli_peak_rss_mib": round(cli_peak / 1024, 1), "node_cpu_s": round(node_cpu, 1),
            "postgres_cpu_s": round(backend_cpu, 1),
            "node_rss_before_mib": round(before / 1024, 1),
            "node_rss_peak_mib": round(peak / 1024, 1),
            "node_rss_after_mib": round(node.rss_kib() / 1024, 1)}


async def _node_backends(url: str) -> list[int]:
    probe = await asyncpg.connect(url, server_settings={"application_name": harness.PROBE_APP})
    try:
        return await harness.backend_pids(probe)
    finally:
        await probe.close()


async def _searches(url: str, code: str, officials: int, rounds: int) -> dict[str, Any]:
    """search_officials through the node from an official's device, narrow and broad."""
    client = local_client(DeviceState(url=url, identity_seed=IdentityKeyPair.generate().seed),
                          "127.0.0.1")
    await client.connect()
    try:
        await client.enroll(code, "searcher", "loadtest")
        rng = random.Random(5)
        narrow: list[str] = []
        for _ in range(rounds):
            i = rng.randrange(officials)
            fam = i % len(FAMILY_TH)
            narrow.append(rng.choice([f"{FAMILY_TH[fam]}{i}", f"{FAMILY_EN[fam].lower()}{i}"]))
        broad = [BROAD[k % len(BROAD)] for k in range(rounds)]
        out: dict[str, Any] = {}
        for name, queries in (("narrow", narrow), ("broad", broad)):
            for q in queries[:3]:  # warm up
                await client.request(f.SearchOfficials, query=q, limit=20)
            times: list[float] = []
            found = 0
            pages: dict[str, int] = {}
            for q in queries:
                t = time.perf_counter()
                page = await client.request(f.SearchOfficials, query=q, limit=20)
                times.append((time.perf_counter() - t) * 1000)
                found += len(page.results)
                pages[q] = len(page.results)
            out[name] = {"queries": len(queries), "p50_ms": round(percentile(times, 50), 2),
                         "p95_ms": round(percentile(times, 95), 2),
                         "max_ms": round(max(times), 2),
                         "results_per_page": round(found / len(queries), 1)}
            if name == "broad":
                out[name]["page_of"] = pages
        return out
    finally:
        await client.close()


async def _auditor_queries(url: str, first: int, events: int, samples: int = 50,
                           rounds: int = 1) -> dict[str, Any]:
    """An official's last day (the node's query_events, first page of 100), no ANALYZE.

    The officials are senders of generated events ``first`` .. ``first + events - 1``
    (audit_scale.generated_events: an even event g is a message's acceptance,
    whose sender is official g mod 5,000).
    ``rounds`` passes over the same officials on the same log: the wall time
    of each with the load average, and the CPU each query took in this
    process and in its PostgreSQL backend (what a quiet machine's wall time
    would be made of).
    """
    conn = await asyncpg.connect(url)
    try:
        backend = int(await conn.fetchval("SELECT pg_backend_pid()"))
        since = datetime.now(UTC) - timedelta(days=1)
        rows: list[store.EventRow] = []
        step = max(1, min(events - 1, AUDIT_OFFICIALS) // (samples + 3))
        per_round: list[dict[str, Any]] = []
        cpu: list[float] = []
        db_cpu: list[float] = []
        for _ in range(rounds):
            load = os.getloadavg()[0]
            times: list[float] = []
            for i in range(samples + 3):
                accepted = first + i * step + (first + i * step) % 2  # an even event
                official = uuid.UUID(_uuid(f"o{accepted % AUDIT_OFFICIALS}"))
                t, c, d = time.perf_counter(), time.process_time(), harness.cpu_seconds(backend)
                rows = await store.query_events(
                    conn, scope=None, official=official, device=None, agencies=None,
                    kinds=None, since=since, until=None, after_id=0, limit=100)
                if i >= 3:  # the first three warm the caches
                    times.append((time.perf_counter() - t) * 1000)
                    cpu.append((time.process_time() - c) * 1000)
                    db_cpu.append((harness.cpu_seconds(backend) - d) * 1000)
                if not rows:
                    raise RuntimeError(f"official {official}: no events")
            per_round.append({"p50_ms": round(percentile(times, 50), 2),
                              "p95_ms": round(percentile(times, 95), 2),
                              "load_before": round(load, 1),
                              "load_after": round(os.getloadavg()[0], 1)})
        middle = sorted(per_round, key=lambda r: r["p50_ms"])[len(per_round) // 2]
        return {"officials": samples, "page": 100, "rows_last": len(rows), "rounds": per_round,
                "p50_ms": middle["p50_ms"], "p95_ms": middle["p95_ms"],  # the median round's
                "query_cpu_ms_p50": round(percentile(cpu, 50), 2),
                "query_cpu_ms_p95": round(percentile(cpu, 95), 2),
                "backend_cpu_ms_mean": round(sum(db_cpu) / len(db_cpu), 2)}
    finally:
        await conn.close()


async def _bytes(url: str) -> tuple[dict[str, Any], int]:
    """(the audit log's bytes: ``audit_storage.audit_bytes``, the database's bytes)."""
    conn = await asyncpg.connect(url)
    try:
        audit = await audit_bytes(conn)
        return audit, int(await conn.fetchval("SELECT pg_database_size(current_database())"))
    finally:
        await conn.close()


async def _pack_compression(url: str, first_leaf: int) -> dict[str, Any]:
    """The packs of the node's own events from leaf ``first_leaf`` on: how many, how
    many compressed, and their stored size over their size (the generated log's
    packs give about 0.8 with LZ4, migration 0015)."""
    conn = await asyncpg.connect(url)
    try:
        packs, compressed, stored, raw = await conn.fetchrow(
            """SELECT count(*), count(*) FILTER (WHERE pg_column_compression(events) IS NOT NULL),
                      sum(pg_column_size(events)), sum(length(events))
               FROM audit_packs WHERE first_leaf >= $1""", first_leaf)
        return {"packs": packs, "compressed": compressed,
                "stored_over_raw": round(stored / raw, 3) if raw else None}
    finally:
        await conn.close()


#: Tables, indexes and partitions whose statistics the relay's phases set (public schema).
_RELATIONS = """SELECT c.oid, c.reltuples, c.relpages, c.relallvisible,
                       EXISTS (SELECT FROM pg_statistic s WHERE s.starelid = c.oid) AS has_stats
                FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
                WHERE n.nspname = 'public' AND c.relkind IN ('r', 'i', 'p', 'I', 't')"""


#: How many officials the planner believes there are (-1: never analysed).
_PLANNED_OFFICIALS = "SELECT reltuples FROM pg_class WHERE oid = 'officials'::regclass"


async def _statistics(url: str) -> list[tuple[int, float, int, int, bool]]:
    """What the planner knows of each relation's size, and which have column statistics."""
    conn = await asyncpg.connect(url)
    try:
        return [tuple(r) for r in await conn.fetch(_RELATIONS)]
    finally:
        await conn.close()


async def _restore_statistics(conn: asyncpg.Connection,
                              saved: list[tuple[int, float, int, int, bool]]) -> None:
    """Put the planner's statistics back as ``saved`` (a superuser's catalog writes).

    Sizes in ``pg_class`` as they were; column statistics taken since
    deleted; relations made since (the audit log's new partitions) as never
    analysed.  The node's cached plans are invalidated by the ``pg_class``
    updates, as by an ANALYZE.
    """
    before = {oid: (tuples, pages, visible, stats) for oid, tuples, pages, visible, stats in saved}
    async with conn.transaction():
        for oid, *_ in await conn.fetch(_RELATIONS):
            tuples, pages, visible, stats = before.get(oid, (-1.0, 0, 0, False))
            await conn.execute(
                "UPDATE pg_class SET reltuples = $2, relpages = $3, relallvisible = $4"
                " WHERE oid = $1", oid, tuples, pages, visible)
            if not stats:
                await conn.execute("DELETE FROM pg_statistic WHERE starelid = $1", oid)


async def _relay(url: str, node: harness.ServerProcess, code: str, pairs: int, seconds: float,
                 rounds: int, fresh: list[tuple[int, float, int, int, bool]],
                 log: Callable[[str], None]) -> dict[str, Any]:
    """Closed-loop send throughput with fresh statistics and after ANALYZE, alternated.

    ``fresh``: the statistics as the new database had them (see
    :func:`_restore_statistics`); each round runs a phase with them, then
    ANALYZE, then a phase after it.
    """
    run = Run(short=True, workers_count=2, database_url=url, log=log,
              overrides={"pairs": pairs, "capacity_s": seconds, "warmup_s": min(3.0, seconds / 4)})
    keep = ("throughput", "p50_ms", "p99_ms", "sent", "accepted", "delivered", "rejected",
            "outstanding_at_end")
    try:
        await run.setup(2 * pairs, raw_relay=False, node=node, admin_code=code)
        audit0, total0 = await _bytes(url)
        phases: list[dict[str, Any]] = []
        analyze_s: list[float] = []
        conn = await asyncpg.connect(url)
        try:
            for k in range(rounds):
                await _restore_statistics(conn, fresh)
                log(f"relay round {k + 1}, statistics as the fresh database had them")
                planned = await conn.fetchval(_PLANNED_OFFICIALS)
                stale = await run.relay_phase("gchat", "closed", label=f"stale{k}")
                phases.append({"statistics": "fresh database", "officials_planned": planned,
                               "load": round(os.getloadavg()[0], 1),
                               **{key: stale[key] for key in keep}})
                started = time.perf_counter()
                await conn.execute("ANALYZE")
                analyze_s.append(round(time.perf_counter() - started, 1))
                log(f"relay round {k + 1} after ANALYZE ({analyze_s[-1]}s)")
                planned = await conn.fetchval(_PLANNED_OFFICIALS)
                fresh_phase = await run.relay_phase("gchat", "closed", label=f"analysed{k}")
                phases.append({"statistics": "analysed", "officials_planned": planned,
                               "load": round(os.getloadavg()[0], 1),
                               **{key: fresh_phase[key] for key in keep}})
        finally:
            await conn.close()
        inbox_emptied_s = await run.inbox_emptied_after()
        await run.audit_drained_after()
        audit1, total1 = await _bytes(url)
        packed = await _pack_compression(url, audit0["events"])
        messages = sum(p["accepted"] for p in phases)
        stale_rate = [p["throughput"] for p in phases if p["statistics"] != "analysed"]
        analysed_rate = [p["throughput"] for p in phases if p["statistics"] == "analysed"]
        return {
            "pairs": pairs, "seconds": seconds, "rounds": rounds, "phases": phases,
            "analyze_s": analyze_s,
            "stale_over_analysed": round(sum(stale_rate) / sum(analysed_rate), 3),
            "stale_over_analysed_per_round": [round(a / b, 3) for a, b in
                                              zip(stale_rate, analysed_rate, strict=True)],
            "inbox_emptied_after_s": round(inbox_emptied_s, 3),
            "messages": messages, "audit_events": audit1["events"] - audit0["events"],
            "audit_bytes_per_message": round((audit1["total"] - audit0["total"]) / messages, 1),
            "database_bytes_per_message": round((total1 - total0) / messages, 1),
            "relay_packs": packed,
        }
    finally:
        run.node = None  # the caller's node: it stops it
        await run.teardown()


async def _export(admin: Path, env: dict[str, str], node: harness.ServerProcess,
                  url: str, path: Path) -> dict[str, Any]:
    """``gchat admin export --output``: time, rows, CLI peak RSS, and CPU by process."""
    conn = await asyncpg.connect(url)
    try:
        backends = await harness.backend_pids(conn)
        db0, node0 = harness.cpu_seconds_of(backends), harness.cpu_seconds(node.pid)
        children = resource.getrusage(resource.RUSAGE_CHILDREN)
        load = os.getloadavg()[0]
        _, took, peak = await _run_measured(
            ["admin", "export", "--output", str(path), "--state", str(admin)], env)
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        db1 = harness.cpu_seconds_of(backends)
        node_cpu = harness.cpu_seconds(node.pid) - node0
    finally:
        await conn.close()
    rows, size = _written(path)
    result = {"seconds": round(took, 1), "rows": rows,
              "cli_peak_rss_mib": round(peak / 1024, 1),
              "file_mib": round(size / 2**20, 1),
              "cli_cpu_s": round(after.ru_utime + after.ru_stime
                                 - children.ru_utime - children.ru_stime, 2),
              "node_cpu_s": round(node_cpu, 2),
              "database_cpu_s": round(sum(db1[p] - db0[p] for p in db1 if p in db0), 2),
              "load_before": round(load, 1), "load_after": round(os.getloadavg()[0], 1)}
    return result


def _written(path: Path) -> tuple[int, int]:
    """(rows, bytes) of an export file, which is then deleted."""
    with path.open(encoding="utf-8-sig") as written:
        rows = sum(1 for _ in csv.reader(written)) - 1
    size = path.stat().st_size
    path.unlink()
    return rows, size


async def run(officials: int, measured: int, events: int, relay_seconds: float, pairs: int,
              rounds: int, log: Callable[[str], None],
              database_url: str | None = None, import_only: bool = False,
              by_import: bool = True, audit_rounds: int = 1,
              relay_rounds: int = 1) -> dict[str, Any]:
    """The scenario; on ``database_url`` (an empty database, kept) if given;
    ``import_only`` stops after the import (stage 1)."""
    db = None if database_url is not None else harness.TempDatabase()
    work = harness.Workspace()
    data, logs = work.path("node"), work.path("logs")
    node: harness.ServerProcess | None = None
    result: dict[str, Any] = {"officials": officials,
                              "measured_import": measured if by_import else None,
                              "directory": "import" if by_import else "store",
                              "events": events, "started": datetime.now(UTC).isoformat(),
                              "load_at_start": round(os.getloadavg()[0], 1)}
    try:
        url = await db.create() if db is not None else str(database_url)
        env = harness.node_env(url, data, 0)
        out, _, _ = await _run_measured(
            ["admin", "bootstrap", "--agency-code", "OPS", "--agency-name", "Operations",
             "--name", "Scale admin", "--json"], env)
        boot = _last_json(out)
        codes = await _create_agencies(url)
        fresh_statistics = await _statistics(url)
        node = harness.start_node("node", url, data, logs)
        env = harness.node_env(url, data, node.port)
        result["node_rss_start_mib"] = round(node.rss_kib() / 1024, 1)
        admin = work.root / "admin.state"
        await _run_measured(["client", "enroll", "--url", node.url, "--code", boot["code"],
                             "--state", str(admin)], env)

        async def cli(*args: str) -> dict[str, Any]:
            return _last_json((await _run_measured([*args, "--state", str(admin)], env))[0])

        if by_import:
            base, rest = officials - measured, work.root / "base.csv"
            measured_file = work.root / "measured.csv"
            write_officials(rest, 0, base, codes)
            write_officials(measured_file, base, measured, codes)
            log(f"importing {base} officials, then {measured} measured")
            result["import_base"] = await _import(rest, admin, env, node, url) if base else None
            result["import_measured"] = await _import(measured_file, admin, env, node, url)
            result["import_measured"]["rows_per_s"] = round(
                measured / result["import_measured"]["seconds"])
            log(f"import: {result['import_measured']}")
            if import_only:
                result["finished"] = datetime.now(UTC).isoformat()
                return result
        else:
            log(f"writing {officials} officials through the store (no import)")
            result["store_officials_s"] = round(await _store_officials(url, officials, codes), 1)

        searcher = (await cli("admin", "official", "add", "--agency", codes[0], "--name-th",
                              "ผู้ค้นหา ทดสอบ", "--json"))["id"]
        code = (await cli("admin", "code", "issue", searcher, "--json"))["code"]
        log("searches")
        result["search"] = await _searches(node.url, code, officials, rounds)
        log(f"search: {result['search']}")

        result["export"] = await _export(admin, env, node, url, work.root / "export.csv")
        result["node_rss_after_directory_mib"] = round(node.rss_kib() / 1024, 1)
        log(f"export: {result['export']}")

        # The relay's admin code, while the admin's state file still names this
        # node's port (the restarted node gets another).
        relay_code = (await cli("admin", "code", "issue", boot["official_id"], "--json"))["code"]
        node.stop()
        log(f"appending {events} audit events")
        conn = await asyncpg.connect(url)
        try:
            first_event = await store.log_size(conn) + 1  # fill's first generated event
            started = time.perf_counter()
            await fill(conn, events, log=log)
            filled = time.perf_counter() - started
        finally:
            await conn.close()
        started = time.perf_counter()
        node = harness.start_node("node", url, data, logs)
        result["audit_fill_s"] = round(filled, 1)
        result["node_restart_s"] = round(time.perf_counter() - started, 2)
        result["node_rss_restarted_mib"] = round(node.rss_kib() / 1024, 1)
        result["auditor_last_day"] = await _auditor_queries(url, first_event, events,
                                                            rounds=audit_rounds)
        log(f"auditor query: {result['auditor_last_day']}")
        result["inclusion_proof"] = await _proof_latency(url, 200)
        audit, total = await _bytes(url)
        result["audit_log"] = {**audit, "database_mib": round(total / 2**20, 1)}
        log(f"audit log: {result['audit_log']}")

        result["relay"] = await _relay(url, node, relay_code, pairs, relay_seconds,
                                       relay_rounds, fresh_statistics, log)
        result["node_rss_end_mib"] = round(node.rss_kib() / 1024, 1)
        result["finished"] = datetime.now(UTC).isoformat()
        return result
    finally:
        if node is not None:
            node.stop()
        if db is not None:
            with contextlib.suppress(Exception):
                await db.drop()
        work.cleanup()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m loadtests.scale")
    parser.add_argument("--officials", type=int, default=400_000)
    parser.add_argument("--measured-import", type=int, default=300_000)
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--relay-seconds", type=float, default=60.0)
    parser.add_argument("--pairs", type=int, default=100)
    parser.add_argument("--searches", type=int, default=200, help="of each kind")
    parser.add_argument("--import-only", action="store_true",
                        help="stop after the directory import (stage 1)")
    parser.add_argument("--directory", choices=("import", "store"), default="import",
                        help="fill the directory by the CLI's import (measured), or through "
                             "the store's code (not measured; for the other stages)")
    parser.add_argument("--audit-rounds", type=int, default=5,
                        help="passes of the auditor query over the same log")
    parser.add_argument("--relay-rounds", type=int, default=2,
                        help="fresh-statistics / ANALYZE phase pairs, alternated")
    args = parser.parse_args(argv)
    if not 0 < args.measured_import <= args.officials:
        parser.error("--measured-import must be between 1 and --officials")

    def log(line: str) -> None:
        print(f"{time.strftime('%H:%M:%S')} {line}", file=sys.stderr, flush=True)

    result = asyncio.run(run(args.officials, args.measured_import, args.events,
                             args.relay_seconds, args.pairs, args.searches, log,
                             import_only=args.import_only,
                             by_import=args.directory == "import",
                             audit_rounds=args.audit_rounds, relay_rounds=args.relay_rounds))
    print(json.dumps(result, indent=1, ensure_ascii=False))
    return 0


if __name__ == "__main__":
    sys.exit(main())
