"""The admins' list of pending enrolment codes (``list_pending_codes``).

Only pending codes (not used, cancelled or expired) of the caller's subtree,
soonest to expire first; keyset pages give each once; a cancelled code
leaves the list; an auditor's read of it is audited.
"""

import json
import uuid
from datetime import timedelta

import pytest

from protocol import frames as f
from tests.directory.conftest import Tree


async def walk(tree: Tree, who: str, limit: int, **extra: object) -> list[f.PendingCode]:
    out: list[f.PendingCode] = []
    after = None
    while True:
        page = await tree.clients[who].request(
            f.ListPendingCodes, after=after, limit=limit, **extra
        )
        out += page.codes
        if page.next_after is None:
            return out
        assert page.next_after == page.codes[-1].code_id
        after = page.next_after


async def test_pending_codes_of_the_subtree_soonest_first(tree: Tree) -> None:
    db = tree.world.app.db
    assert db is not None
    inside = [await tree.official(f"ข้าราชการ {i}", "DIV-A1") for i in range(7)]
    outside = await tree.official("ข้าราชการ นอก", "DEPT-B")
    codes = {}
    for i, official in enumerate(inside):
        issued = await tree.sa(f.IssueCode, official_id=official)
        codes[official] = issued
        # Expiries in reverse order of issue: the list is by expiry, not issue.
        await db.pool.execute(
            "UPDATE enrolment_codes SET expires_at = now() + $2 WHERE official_id = $1",
            official, timedelta(hours=10 - i))
    await tree.sa(f.IssueCode, official_id=outside)
    # Not pending: one used (enrolled), one cancelled, one expired.
    await tree.world.enroll(codes[inside[0]].code, "phone")
    cancelled = (await tree.sa(f.ListCodes, official_id=inside[1])).codes[-1].code_id
    await tree.sa(f.CancelCode, code_id=cancelled)
    await db.pool.execute(
        "UPDATE enrolment_codes SET expires_at = now() - interval '1 second' "
        "WHERE official_id = $1", inside[2])

    listed = await walk(tree, "admin_in", limit=2)
    assert [c.official_id for c in listed] == list(reversed(inside[3:]))
    assert [c.expires_at for c in listed] == sorted(c.expires_at for c in listed)
    assert listed[0].name_th == "ข้าราชการ 6" and listed[0].agency_code == "DIV-A1"
    assert outside in {c.official_id for c in await walk(tree, "superadmin", limit=500)}
    assert outside in {c.official_id for c in await walk(tree, "admin_out", limit=500)}
    # Cancelled from the list, it leaves it.
    await tree.clients["admin_in"].request(f.CancelCode, code_id=listed[0].code_id)
    assert [c.official_id for c in await walk(tree, "admin_in", limit=100)] == list(
        reversed(inside[3:6]))


async def test_an_auditors_read_is_audited_and_a_bad_cursor_refused(tree: Tree) -> None:
    official = await tree.official("ข้าราชการ ตรวจ", "DIV-A1")
    await tree.sa(f.IssueCode, official_id=official)
    listed = await walk(tree, "auditor", limit=100)
    assert official in {c.official_id for c in listed}
    db = tree.world.app.db
    assert db is not None
    entries = [json.loads(bytes(r[0])) for r in await db.pool.fetch(
        "SELECT entry FROM audit_events ORDER BY id")]
    reads = [e for e in entries if e["kind"] == "audit.directory_read"
             and e["details"]["request"] == "list_pending_codes"]
    assert reads and str(official) in reads[-1]["details"]["queried_officials"]
    with pytest.raises(Exception, match="no such code"):
        await tree.clients["auditor"].request(f.ListPendingCodes, after=uuid.uuid4())
