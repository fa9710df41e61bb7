"""Directory search (prefix, case, Thai, paging, visibility) and policy enforcement."""

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from gchat.client.rpc import ClientError
from gchat.client.sdk import Client
from gchat.directory import policy
from protocol import frames as f
from tests.directory.conftest import Tree


async def names(client: Client, query: str, **fields: Any) -> list[str]:
    reply = await client.request(f.SearchOfficials, query=query, **fields)
    return sorted(c.name_en or c.name_th for c in reply.results)


async def test_prefix_case_insensitive_thai_and_english(tree: Tree) -> None:
    await tree.official("สมชาย ใจดี", "DIV-A1", name_en="Somchai Jaidee",
                        position="นักวิเคราะห์นโยบาย")
    await tree.official("นางสาวสมหญิง รักชาติ", "DEPT-A", name_en="Somying Rakchat",
                        position="Legal Officer")
    await tree.official("วิไล ทองคำ", "DEPT-B", name_en="Wilai Thongkham")
    me = tree.clients["official"]
    assert await names(me, "som") == ["Somchai Jaidee", "Somying Rakchat"]
    assert await names(me, "SOMCH") == ["Somchai Jaidee"]
    assert await names(me, "jAiD") == ["Somchai Jaidee"]
    assert await names(me, "สม") == ["Somchai Jaidee", "Somying Rakchat"]
    assert await names(me, "สมหญิง") == ["Somying Rakchat"]  # title glued on: นางสาวสมหญิง
    assert await names(me, "นางสาวสม") == ["Somying Rakchat"]
    assert await names(me, "ใจ") == ["Somchai Jaidee"]
    assert await names(me, "som rak") == ["Somying Rakchat"]  # every word must match
    assert await names(me, "legal") == ["Somying Rakchat"]  # position
    assert await names(me, "นักวิเคราะห์") == ["Somchai Jaidee"]
    assert await names(me, "agency dept-b") == ["Actor admin_out", "Wilai Thongkham"]  # agency
    assert await names(me, "mchai") == []  # a prefix, not a substring
    # Sara am typed as one code point or as nikhahit + sara aa: the same search.
    await tree.official("กำพล ทองดี", "DIV-A1", name_en="Kamphon Thongdee")
    assert await names(me, "กำ") == ["Kamphon Thongdee"]
    assert await names(me, "ก\u0e4d\u0e32") == ["Kamphon Thongdee"]


async def test_paging_and_only_active(tree: Tree) -> None:
    ids = [await tree.official(f"Pager {i:02d}", "DIV-A1") for i in range(25)]
    await tree.sa(f.SetOfficialStatus, official_id=ids[3], status="suspended")
    await tree.sa(f.SetOfficialStatus, official_id=ids[4], status="retired")
    me = tree.clients["official"]
    first = await me.request(f.SearchOfficials, query="pager", limit=10)
    assert len(first.results) == 10 and first.next_offset == 10
    seen = [c.official_id for c in first.results]
    offset = first.next_offset
    while offset is not None:
        page = await me.request(f.SearchOfficials, query="pager", limit=10, offset=offset)
        seen.extend(c.official_id for c in page.results)
        offset = page.next_offset
    assert len(seen) == len(set(seen)) == 23
    assert ids[3] not in seen and ids[4] not in seen
    card = first.results[0]
    assert card.agency_code == "DIV-A1" and card.active_devices == 0


async def test_a_revoked_device_whose_close_signal_was_lost_searches_nothing(
    tree: Tree,
) -> None:
    """Search asks authz for the actor's standing, as every request does."""
    await tree.official("Somchai Jaidee", "DIV-A1")
    me = tree.clients["official"]
    assert await names(me, "som") == ["Somchai Jaidee"]
    # Revoked in the database only: no REVOKED signal, the connection stays open.
    await tree.world.app.db.pool.execute(  # type: ignore[union-attr]
        "UPDATE devices SET status = 'revoked' WHERE id = $1", me.state.device_id
    )
    with pytest.raises(ClientError) as refused:
        await names(me, "som")
    assert refused.value.code == "forbidden"


async def test_search_never_returns_what_policy_hides(tree: Tree) -> None:
    """DEPT-A keeps to itself: nobody inside sees out, nobody outside sees in."""
    await tree.agency("MIN2", None)
    await tree.official("Hidden Inside", "DIV-A1")
    await tree.official("Hidden Sameagency", "DIV-A1")
    await tree.official("Hidden Outside", "DEPT-B")
    await tree.official("Hidden Faraway", "MIN2")
    me = tree.clients["official"]  # in DIV-A1
    there = tree.clients["admin_out"]  # in DEPT-B
    everyone = {"Hidden Inside", "Hidden Sameagency", "Hidden Outside", "Hidden Faraway"}
    assert set(await names(me, "hidden")) == everyone
    await tree.sa(f.SetPolicy, agency_id=tree.agencies["DEPT-A"],
                  policy=f.PolicyInfo(message_scope="agency"))
    assert set(await names(me, "hidden")) == {"Hidden Inside", "Hidden Sameagency"}
    assert set(await names(there, "hidden")) == {"Hidden Outside", "Hidden Faraway"}
    # A sub-agency cannot loosen what is above it.
    await tree.sa(f.SetPolicy, agency_id=tree.agencies["DIV-A1"],
                  policy=f.PolicyInfo(message_scope="all"))
    assert set(await names(me, "hidden")) == {"Hidden Inside", "Hidden Sameagency"}
    # Global 'ministry' (and DEPT-A back to unrestricted): MIN2 is out of reach.
    await tree.sa(f.SetPolicy, agency_id=tree.agencies["DEPT-A"], policy=f.PolicyInfo())
    await tree.sa(f.SetPolicy, policy=f.PolicyInfo(message_scope="ministry"))
    assert set(await names(me, "hidden")) == everyone - {"Hidden Faraway"}


async def test_sends_follow_policy(tree: Tree) -> None:
    me = tree.clients["official"]  # DIV-A1
    colleague = await tree.enrolled(await tree.official("Colleague", "DIV-A1"))
    there = tree.clients["admin_out"]  # DEPT-B
    assert there.state.official_id and colleague.state.official_id and me.state.official_id
    await me.send_message(there.state.official_id, b"before", "m1")
    await tree.sa(f.SetPolicy, agency_id=tree.agencies["DIV-A1"],
                  policy=f.PolicyInfo(message_scope="agency"))
    with pytest.raises(ClientError) as refused:
        await me.send_message(there.state.official_id, b"after", "m2")
    assert refused.value.code == "policy_refused"
    with pytest.raises(ClientError) as refused:  # symmetric: no way in either
        await there.send_message(me.state.official_id, b"in", "m3")
    assert refused.value.code == "policy_refused"
    with pytest.raises(ClientError) as refused:  # nor its devices' keys, nor prekeys
        await there.request(f.GetBundle, official_id=me.state.official_id)
    assert refused.value.code == "policy_refused"
    await me.send_message(colleague.state.official_id, b"same agency", "m4")


async def test_device_limit_from_policy(tree: Tree) -> None:
    target = await tree.official("Two Phones", "DIV-A1")
    await tree.enrolled(target)
    await tree.sa(f.SetPolicy, agency_id=tree.agencies["DEPT-A"],
                  policy=f.PolicyInfo(max_devices=1))
    with pytest.raises(ClientError) as refused:
        await tree.enrolled(target, "second phone")
    assert refused.value.code == "device_limit"
    await tree.sa(f.SetPolicy, agency_id=tree.agencies["DEPT-A"], policy=f.PolicyInfo())
    await tree.enrolled(target, "second phone")


async def test_retention_from_policy(tree: Tree) -> None:
    """DEPT-B keeps undelivered envelopes for one minute; DIV-A1 the node's default."""
    db = tree.world.app.db
    assert db is not None
    sender = tree.clients["superadmin"]
    b_official, a_official = tree.officials["admin_out"], tree.officials["official"]
    b_device = tree.clients["admin_out"].state.device_id
    a_device = tree.clients["official"].state.device_id
    await tree.clients["admin_out"].close()  # offline: envelopes stay queued
    await tree.clients["official"].close()
    await sender.send_message(b_official, b"to B", "r1")
    await sender.send_message(a_official, b"to A", "r2")
    await db.pool.execute("UPDATE messages SET sent_at = $1",
                          datetime.now(UTC) - timedelta(minutes=5))
    await tree.sa(f.SetPolicy, agency_id=tree.agencies["DEPT-B"],
                  policy=f.PolicyInfo(retention_seconds=60))
    expired = await policy.expire_undelivered(db.pool, tree.world.app.config.retention_seconds)
    assert expired == 1
    left = {r["device_id"] for r in await db.pool.fetch("SELECT device_id FROM inbox")}
    assert b_device not in left and a_device in left


async def test_policy_is_shown_with_what_applies(tree: Tree) -> None:
    await tree.sa(f.SetPolicy, policy=f.PolicyInfo(max_devices=8, retention_seconds=86400))
    await tree.sa(f.SetPolicy, agency_id=tree.agencies["DEPT-A"],
                  policy=f.PolicyInfo(message_scope="ministry", max_devices=3))
    reply = await tree.clients["auditor"].request(f.GetPolicy, agency_id=tree.agencies["DIV-A1"])
    assert reply.policy == f.PolicyInfo()
    assert reply.effective == f.PolicyInfo(message_scope="ministry", max_devices=3,
                                           retention_seconds=86400)
    reply = await tree.clients["auditor"].request(f.GetPolicy, agency_id=tree.agencies["DEPT-A"])
    assert reply.policy.max_devices == 3
