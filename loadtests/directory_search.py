"""Directory search over 10,000 officials: latency, index use, and policy.

    python -m loadtests.directory_search [--officials 10000] [--queries 2000] [--admin]

Creates a database for the run (on GCHAT_LOADTEST_DATABASE_URL /
GCHAT_TEST_DATABASE_URL, default postgresql://postgres@127.0.0.1:5432/postgres),
migrates it, fills a directory of two ministries with departments and
divisions and N officials with Thai and English names (one insert per chunk,
as the bulk import does), sets a policy that confines one ministry's
officials to their own agency, then times ``Directory.search`` (the same
service the ``search_officials`` frame calls) for a mix of queries: English
and Thai prefixes, case variations, two-word queries, an agency name,
browsing an agency. It prints p50/p95/p99/max, the EXPLAIN plan of one
query (to show the term index drives it), and checks every answer against
the policy: no result the viewer may not message. Drops the database at the
end.

With ``--admin`` it times the admins' search instead (``list_officials``
with ``query``: ``store.search_records``, any status, no policy), 100 a page,
over the whole directory and over one department's subtree, first pages and
the page after one, and checks each answer against a brute-force filter.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import secrets
import statistics
import sys
import time
import uuid
from urllib.parse import urlsplit, urlunsplit

import asyncpg

from gchat.directory.service import Directory
from gchat.identity.principal import Principal
from gchat.store import devices, migrations, policies, terms
from gchat.store import directory as store
from gchat.store.database import Database
from gchat.store.directory import NewOfficial, SearchQuery

GIVEN_TH = ["สมชาย", "สมหญิง", "ประยุทธ", "วิไล", "อนันต์", "กาญจนา", "ธนพล", "ศิริพร", "ณัฐวุฒิ",
            "พิมพ์ชนก", "วรวุฒิ", "อรุณี"]
FAMILY_TH = ["ใจดี", "รักชาติ", "ทองคำ", "แสงทอง", "บุญมา", "ศรีสุข", "วงศ์ใหญ่", "พงษ์ไพร"]
GIVEN_EN = ["Somchai", "Somying", "Prayut", "Wilai", "Anan", "Kanchana", "Thanaphon", "Siriporn",
            "Nattawut", "Pimchanok", "Worawut", "Arunee"]
FAMILY_EN = ["Jaidee", "Rakchat", "Thongkham", "Saengthong", "Boonma", "Srisuk", "Wongyai",
             "Pongprai"]
POSITIONS = [("นักวิเคราะห์นโยบายและแผน", "Policy Analyst"), ("นิติกร", "Legal Officer"),
             ("ผู้อำนวยการกอง", "Division Director"), ("นักวิชาการคอมพิวเตอร์", "IT Officer")]
QUERIES = ["som", "SOMCH", "Somchai J", "jai", "สม", "สมชาย", "สมชาย ใจ", "ใจดี", "ทอง",
           "analyst", "นิติ", "พิมพ์", "wor", "policy an", "กรม", "Department 3", "x", "ณัฐ"]


def _dsn(database: str) -> str:
    base = (os.environ.get("GCHAT_LOADTEST_DATABASE_URL")
            or os.environ.get("GCHAT_TEST_DATABASE_URL")
            or "postgresql://postgres@127.0.0.1:5432/postgres")
    return urlunsplit(urlsplit(base)._replace(path="/" + database))


async def populate(db: Database, count: int) -> tuple[list[uuid.UUID], dict[uuid.UUID, uuid.UUID]]:
    """Two ministries x 5 departments x 4 divisions; officials spread over them."""
    agencies: list[uuid.UUID] = []
    async with db.transaction() as conn:
        for m in range(2):
            ministry = uuid.uuid4()
            await store.create_agency(conn, ministry, f"M{m}", None, None,
                                      name_th=f"กระทรวงที่ {m}", name_en=f"Ministry {m}")
            for d in range(5):
                dept = uuid.uuid4()
                await store.create_agency(conn, dept, f"M{m}-D{d}", None, ministry,
                                          name_th=f"กรมที่ {d}", name_en=f"Department {d}")
                agencies.append(dept)
                for v in range(4):
                    division = uuid.uuid4()
                    await store.create_agency(conn, division, f"M{m}-D{d}-V{v}", None, dept,
                                              name_th=f"กองที่ {v}", name_en=f"Division {v}")
                    agencies.append(division)
        rng = random.Random(7)
        new = []
        for i in range(count):
            g, fam = rng.randrange(len(GIVEN_TH)), rng.randrange(len(FAMILY_TH))
            pos = POSITIONS[rng.randrange(len(POSITIONS))]
            new.append(NewOfficial(
                id=uuid.uuid4(), agency_id=agencies[i % len(agencies)],
                name_th=f"{GIVEN_TH[g]} {FAMILY_TH[fam]}{i}",
                name_en=f"{GIVEN_EN[g]} {FAMILY_EN[fam]}{i}",
                position=pos[i % 2], employee_id=f"B{i:06d}",
            ))
        for start in range(0, count, 2000):
            await store.create_officials(conn, new[start:start + 2000])
        # Ministry 0 confines its officials to their own agency.
        m0 = await conn.fetchval("SELECT id FROM agencies WHERE code = 'M0'")
        await policies.put(conn, policies.PolicyRow(m0, "agency", None, None), None)
    await db.pool.execute("ANALYZE")
    return [o.id for o in new], {o.id: o.agency_id for o in new}


async def run(officials: int, queries: int, admin_search: bool = False) -> int:
    name = f"gchat_bench_{secrets.token_hex(4)}"
    admin = await asyncpg.connect(_dsn("postgres"))
    await admin.execute(f'CREATE DATABASE "{name}"')
    try:
        db = await Database.connect(_dsn(name), max_size=4)
        try:
            async with db.pool.acquire() as conn:
                await migrations.migrate(conn)
            started = time.perf_counter()
            ids, agency_of = await populate(db, officials)
            print(f"populated {officials} officials in 50 agencies in "
                  f"{time.perf_counter() - started:.2f}s")
            if admin_search:
                return await measure_admin(db, queries)
            return await measure(db, ids, agency_of, queries)
        finally:
            await db.close()
    finally:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()


async def measure(db: Database, ids: list[uuid.UUID], agency_of: dict[uuid.UUID, uuid.UUID],
                  queries: int) -> int:
    directory = Directory(db, 3600)
    rng = random.Random(11)
    parties = await policies.send_standings(db.pool, ids)
    viewers = rng.sample(ids, 50)
    # Search checks the searching device's standing (authz): each viewer gets one.
    device_of = {viewer: uuid.uuid4() for viewer in viewers}
    for viewer, device in device_of.items():
        await devices.create(db.pool, device, viewer, secrets.token_bytes(32), b"-", "bench", "cli")
    for q in QUERIES[:3]:  # warm up (plans, caches)
        principal = Principal(device_of[viewers[0]], viewers[0], agency_of[viewers[0]], ())
        await directory.search(principal, q, None, 0, 20)
    timings: list[float] = []
    results = violations = 0
    for n in range(queries):
        viewer = viewers[n % len(viewers)]
        query = QUERIES[n % len(QUERIES)]
        principal = Principal(device_of[viewer], viewer, agency_of[viewer], ())
        t = time.perf_counter()
        cards, _ = await directory.search(principal, query, None, 0, 20)
        timings.append((time.perf_counter() - t) * 1000)
        results += len(cards)
        for card in cards:
            if not policies.may_message(parties[viewer], parties[card.id]):
                violations += 1
    timings.sort()

    def pct(p: float) -> float:
        return timings[min(len(timings) - 1, int(p * len(timings)))]

    print(f"{queries} searches (20 per page, {len(QUERIES)} query shapes, 50 viewers): "
          f"p50 {statistics.median(timings):.2f} ms, p95 {pct(0.95):.2f} ms, "
          f"p99 {pct(0.99):.2f} ms, max {timings[-1]:.2f} ms; "
          f"{results / queries:.1f} results per search")
    print(f"policy check: {violations} results the viewer may not message "
          f"(expected 0) out of {results}")
    sql, args = store.search_sql(viewers[0], SearchQuery(terms.words("somchai jai"), None, 0, 20))
    plan = await db.pool.fetch("EXPLAIN (ANALYZE, COSTS OFF) " + sql, *args)
    lines = [row[0] for row in plan]
    index_driven = any("official_terms_pkey" in line for line in lines)
    print("EXPLAIN ANALYZE of 'somchai jai' (each word: one range scan of the term index):")
    for line in lines:
        if any(k in line for k in ("Index", "Seq Scan", "Execution Time", "Planning Time")):
            print("   " + line.strip())
    print(f"term index used: {index_driven}")
    return 0 if violations == 0 and index_driven else 1


async def measure_admin(db: Database, queries: int) -> int:
    """The admins' search: p50/p95 per scope, each page checked against SQL brute force."""
    dept = await db.pool.fetchval("SELECT id FROM agencies WHERE code = 'M0-D1'")
    failures = 0
    for label, root in (("whole directory", None), ("one department", dept)):
        timings: list[float] = []
        for n in range(queries):
            query = QUERIES[n % len(QUERIES)]
            words = terms.words(query)
            async with db.transaction() as conn:
                t = time.perf_counter()
                first = await store.search_records(conn, root, None, words, query, 0, 101)
                assert first is not None
                if len(first) > 100:
                    after = await store.search_records(
                        conn, root, None, words, query, 0, 101, first[99].id)
                    assert after is not None
                timings.append((time.perf_counter() - t) * 1000)
            if n < len(QUERIES):  # each shape once against brute force
                got = [r.id for r in first[:100]]
                want = await _brute(db, root, words, query)
                failures += got != want[:100]
        timings.sort()
        print(f"admin search, {label}: {queries} searches (first page of 100, and the next "
              f"when there is one), p50 {statistics.median(timings):.2f} ms, "
              f"p95 {timings[int(0.95 * len(timings))]:.2f} ms, max {timings[-1]:.2f} ms")
    print(f"admin search pages differing from a brute-force filter: {failures} (expected 0)")
    return 0 if failures == 0 else 1


async def _brute(
    db: Database, root: uuid.UUID | None, words: list[str], whole: str
) -> list[uuid.UUID]:
    rows = await db.pool.fetch(
        """WITH RECURSIVE down AS (
               SELECT id FROM agencies WHERE $1::uuid IS NULL OR id = $1
               UNION SELECT a.id FROM agencies a JOIN down d ON a.parent_id = d.id)
           SELECT o.id, o.name, o.employee_id, o.name_th, o.name_en, o.position, a.code,
                  a.name_th AS a_th, a.name_en AS a_en
           FROM officials o JOIN agencies a ON a.id = o.agency_id
           WHERE o.agency_id IN (SELECT id FROM down) ORDER BY o.name, o.id""", root)
    out = []
    for r in rows:
        own = terms.terms_of((r["name_th"], r["name_en"], r["position"]))
        via = terms.terms_of((r["code"], r["a_th"], r["a_en"]))
        if r["employee_id"] == whole.strip() or all(
                any(t.startswith(w) for t in own | via) for w in words):
            out.append(r["id"])
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m loadtests.directory_search")
    parser.add_argument("--officials", type=int, default=10_000)
    parser.add_argument("--queries", type=int, default=2_000)
    parser.add_argument("--admin", action="store_true", help="time the admins' search")
    args = parser.parse_args(argv)
    return asyncio.run(run(args.officials, args.queries, args.admin))


if __name__ == "__main__":
    sys.exit(main())
