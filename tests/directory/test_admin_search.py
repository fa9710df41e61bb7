"""The admin's search on the node (``list_officials`` with ``query``).

Within the admin's subtree only, any status, by name (Thai with its title
glued on, English in any case), position, agency code and exact employee id;
keyset pages give each match once in (name, id) order, however small the
pages.
"""

import uuid

import pytest

from gchat.store import directory as store
from protocol import frames as f
from tests.directory.conftest import Tree


async def search(tree: Tree, who: str, query: str, limit: int = 50, **extra: object) -> list[str]:
    """Every match, walked page by page with the keyset cursor; names in order."""
    names: list[str] = []
    after = None
    while True:
        page = await tree.clients[who].request(
            f.ListOfficials, query=query, after=after, limit=limit, **extra
        )
        names += [o.name_th or o.name_en or "" for o in page.officials]
        if page.next_after is None:
            return names
        after = page.next_after


async def filled(tree: Tree) -> None:
    await tree.bulk(
        [("DIV-A1" if i % 2 else "DEPT-B", f"นายสมชาย ทดสอบ{i:03d}", f"Somchai Test{i:03d}",
          "นักวิเคราะห์นโยบาย" if i % 3 else "Policy Analyst") for i in range(300)]
        + [("DIV-A1", f"นางสาวมาลี ใจดี{i:02d}", None, None) for i in range(40)]
    )


async def test_the_search_runs_on_the_node_within_the_scope(tree: Tree) -> None:
    await filled(tree)
    # admin_in administers DEPT-A and DIV-A1: DEPT-B's namesakes are not found.
    found = await search(tree, "admin_in", "สมชาย")
    assert len(found) == 150 and found == sorted(found)
    assert all(int(n[-3:]) % 2 == 1 for n in found)
    assert len(await search(tree, "superadmin", "สมชาย")) == 300
    # Every word must hold; English in any case; position and agency code count.
    assert len(await search(tree, "admin_in", "SOMCHAI test00")) == 5  # 001 003 005 007 009
    assert len(await search(tree, "admin_in", "สมชาย policy")) == 50
    assert len(await search(tree, "admin_in", "มาลี div-a1")) == 40
    assert await search(tree, "admin_out", "มาลี") == []
    assert await search(tree, "admin_in", "ไม่มีใครชื่อนี้") == []


async def test_any_status_and_the_exact_employee_id(tree: Tree) -> None:
    admin = tree.clients["admin_in"]
    made = await admin.request(f.CreateOfficial, name="วิภา เกษียณ",
                               agency_id=tree.agencies["DIV-A1"], employee_id="HR-2024/0007")
    db = tree.world.app.db
    assert db is not None
    await store.set_status(db.pool, made.official_id, "retired")
    assert await search(tree, "admin_in", "วิภา") == ["วิภา เกษียณ"]
    assert await search(tree, "admin_in", "วิภา", status="active") == []
    assert await search(tree, "admin_in", "HR-2024/0007") == ["วิภา เกษียณ"]
    assert await search(tree, "admin_out", "HR-2024/0007") == []


async def test_small_pages_walk_to_the_same_answer(tree: Tree) -> None:
    await filled(tree)
    whole = await search(tree, "admin_in", "สมชาย นักวิเคราะห์", limit=500)
    assert await search(tree, "admin_in", "สมชาย นักวิเคราะห์", limit=7) == whole
    assert len(whole) == 100


async def test_too_many_words_and_an_unknown_cursor_are_refused(tree: Tree) -> None:
    admin = tree.clients["admin_in"]
    with pytest.raises(Exception, match="at most 8 words"):
        await admin.request(f.ListOfficials, query=" ".join("abcdefghij"))
    with pytest.raises(Exception, match="no such official"):
        await admin.request(f.ListOfficials, query="สมชาย", after=uuid.uuid4())
