"""Directory export by keyset pagination: complete, in order, and an index range per page.

The 400,000-official export time comes from ``python -m loadtests.scale``;
here: walking ``list_officials`` with ``after`` returns each official of the
scope exactly once, in (name, id) order, even when many share one name; a
page deep into the directory is an index range on ``officials_name`` that
stops at the page (no OFFSET, no sort of everything); a cursor naming no
official is refused.
"""

import uuid

import pytest

from gchat.store import directory as store
from protocol import frames as f
from tests.directory.conftest import Tree


async def fill(tree: Tree, count: int) -> None:
    # Only 40 distinct names: pages end in the middle of a run of equals.
    await tree.bulk([("DIV-A1" if i % 3 else "DEPT-B", f"ข้าราชการ {i % 40:02d}", None, None)
                     for i in range(count)])


async def test_keyset_pages_cover_the_scope_once_in_order(tree: Tree) -> None:
    await fill(tree, 3000)
    db0 = tree.world.app.db
    assert db0 is not None
    await db0.analyze("officials")
    admin = tree.clients["admin_in"]  # DEPT-A and below: DIV-A1's 2000 and the actors
    seen: list[uuid.UUID] = []
    after = None
    pages = 0
    while True:
        page = await admin.request(f.ListOfficials, after=after, limit=137)
        seen.extend(o.id for o in page.officials)
        pages += 1
        if page.next_after is None:
            assert page.next_offset is None
            break
        assert page.next_after == page.officials[-1].id
        after = page.next_after
    db = tree.world.app.db
    assert db is not None
    expected = [r["id"] for r in await db.pool.fetch(
        """SELECT o.id FROM officials o JOIN agencies a ON a.id = o.agency_id
           WHERE a.code IN ('DEPT-A', 'DIV-A1') ORDER BY o.name, o.id""")]
    assert len(expected) > 2000 and pages == -(-len(expected) // 137)
    assert seen == expected


async def test_a_deep_page_is_an_index_range_that_stops_at_the_page(tree: Tree) -> None:
    await fill(tree, 20_000)
    # Statistics as a fresh database has them (taken while the table was
    # nearly empty): the plan must not depend on them.
    db0 = tree.world.app.db
    assert db0 is not None
    await db0.pool.execute(
        "UPDATE pg_class SET reltuples = 10, relpages = 1"
        " WHERE relname IN ('officials', 'agencies')")
    db = tree.world.app.db
    assert db is not None
    last = await db.pool.fetchrow(
        "SELECT name, id FROM officials ORDER BY name, id OFFSET 19000 LIMIT 1")
    dept_a = await db.pool.fetchval("SELECT id FROM agencies WHERE code = 'DEPT-A'")
    for root in (None, dept_a):  # the whole directory (an export), a subtree
        async with db.transaction() as conn:  # as Administration.list_officials runs it
            await store.pin_index_order(conn, probes=True)
            plan = "\n".join(r[0] for r in await conn.fetch(
                "EXPLAIN (ANALYZE, COSTS OFF, TIMING OFF) "
                + store.list_officials_sql(keyset=True), root, None, 0, 101, last["id"]))
        assert "Index Scan using officials_name" in plan, plan
        assert "Index Cond: (ROW(name, id) > ROW(" in plan, plan
        assert "Sort" not in plan, plan
        # No row of the page is compared with every agency (a join filter over
        # the agencies table cost 58 ms a page of 500): the code is a key probe,
        # the subtree a hashed set.
        assert "Join Filter" not in plan, plan
        assert "Index Scan using agencies_pkey on agencies" in plan, plan
        if root is None:
            # It read the page it returned, not the 19,000 rows before it.
            scanned = next(line for line in plan.splitlines() if "officials_name" in line)
            assert "rows=101 " in scanned, plan
        else:
            assert "hashed SubPlan" in plan, plan


async def test_an_unknown_cursor_is_refused(tree: Tree) -> None:
    admin = tree.clients["admin_in"]
    with pytest.raises(Exception, match="no such official"):
        await admin.request(f.ListOfficials, after=uuid.uuid4())
