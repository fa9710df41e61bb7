"""Search at scale, scaled down: complete pages in the documented order, read off an index.

The 400,000-official latencies come from ``python -m loadtests.scale``.
Here, over 6,000 officials: paging through a broad, a narrow, a two-word
and an agency query returns every match exactly once (checked against a
brute-force reading of the terms), in the documented order (own matches by
matched term, then agency matches); and the page of a prefix that matches
thousands is an index range on ``official_terms_page`` that stops after
the page, under statistics as stale as a fresh database's.
"""

import uuid

from gchat.runtime.ratelimit import LocalRateLimiter
from gchat.store import directory as store
from gchat.store import terms
from gchat.store.directory import SearchQuery
from protocol import frames as f
from tests.directory.conftest import Tree

GIVEN = ["สมชาย", "สมหญิง", "สมศักดิ์", "วิไล", "อนันต์", "กาญจนา"]
FAMILY = ["ใจดี", "รักชาติ", "ทองคำ", "แสงทอง", "บุญมา"]


async def fill(tree: Tree, count: int) -> None:
    await tree.bulk([
        ("DIV-A1" if i % 2 else "DEPT-B",
         f"{GIVEN[i % 6]} {FAMILY[i % 5]}{'x' if i % 97 == 0 else ''}",
         f"Official {i:05d}",
         "นิติกร" if i % 400 == 0 else None)
        for i in range(count)
    ])


async def every_page(tree: Tree, query: str) -> list[uuid.UUID]:
    me = tree.clients["official"]
    seen: list[uuid.UUID] = []
    offset: int | None = 0
    limiter = tree.world.app.limiter
    while offset is not None:
        if isinstance(limiter, LocalRateLimiter):
            limiter._buckets.clear()  # hundreds of pages: more than the per-device search limit
        page = await me.request(f.SearchOfficials, query=query, offset=offset, limit=100)
        seen.extend(c.official_id for c in page.results)
        offset = page.next_offset
    return seen


async def brute_force(tree: Tree, query: str) -> set[uuid.UUID]:
    """Every active official of whom each word starts a term (own or agency's)."""
    db = tree.world.app.db
    assert db is not None
    rows = await db.pool.fetch(
        """SELECT o.id, array_agg(DISTINCT t.term) AS own, array_agg(DISTINCT g.term) AS via
           FROM officials o LEFT JOIN official_terms t ON t.official_id = o.id
           LEFT JOIN agency_terms g ON g.agency_id = o.agency_id
           WHERE o.status = 'active' GROUP BY o.id""")
    words = terms.words(query)
    return {
        r["id"] for r in rows
        if all(any(x and x.startswith(w) for x in (*r["own"], *r["via"])) for w in words)
    }


async def test_pages_hold_every_match_once_in_the_documented_order(tree: Tree) -> None:
    await fill(tree, 6_000)
    for query in ("สม", "สมชาย บุญ", "official 01", "นิติ", "ใจดีx", "agency dept-b"):
        seen = await every_page(tree, query)
        assert len(seen) == len(set(seen)), query
        assert set(seen) == await brute_force(tree, query), query
    # The documented order: own matches by the term that matched, then name.
    db = tree.world.app.db
    assert db is not None
    seen = await every_page(tree, "สม")
    assert len(seen) == 3_000
    first_terms = {r["official_id"]: r["term"] for r in await db.pool.fetch(
        """SELECT official_id, min(term) AS term FROM official_terms
           WHERE term >= 'สม' AND term < 'สย' GROUP BY official_id""")}
    matched = [first_terms[i] for i in seen]
    assert matched == sorted(matched)


async def test_a_broad_prefix_reads_its_page_off_the_index_and_stops(tree: Tree) -> None:
    await fill(tree, 6_000)
    db = tree.world.app.db
    assert db is not None
    # Statistics as a fresh database has them: the plan must not depend on them.
    await db.pool.execute(
        "UPDATE pg_class SET reltuples = 10, relpages = 1 "
        "WHERE relname IN ('officials', 'official_terms', 'official_terms_page')")
    query = SearchQuery(terms.words("สม"), None, 0, 20)
    sql, args = store.search_sql(tree.officials["official"], query)
    async with db.transaction() as conn:  # as Directory.search runs it
        await store.pin_index_order(conn)
        plan = "\n".join(r[0] for r in await conn.fetch(
            "EXPLAIN (ANALYZE, COSTS OFF, TIMING OFF) " + sql, *args))
    scan = next(line for line in plan.splitlines() if "official_terms_page" in line)
    assert "Index Scan using official_terms_page" in scan, plan
    # 3,000 officials match; the read stopped at the page (21 rows: one more
    # tells the caller there is a next page).
    assert "rows=21 " in scan, plan
    assert "Seq Scan on official_terms" not in plan and "Seq Scan on officials" not in plan, plan
