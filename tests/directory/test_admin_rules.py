"""A walk through the admin operations, and the rules the matrix does not show."""

import pytest

from gchat.client.rpc import ClientError
from protocol import frames as f
from tests.directory.conftest import Tree


async def test_walkthrough(tree: Tree) -> None:
    admin = tree.clients["admin_in"]
    agencies = await admin.request(f.ListAgencies)
    assert [a.code for a in agencies.agencies] == ["DEPT-A", "DIV-A1"]
    created = await admin.request(
        f.CreateOfficial, name="สมชาย ใจดี", name_en="Somchai Jaidee",
        agency_id=tree.agencies["DIV-A1"], position="Analyst", employee_id="E1",
    )
    shown = await admin.request(f.GetOfficial, official_id=created.official_id)
    assert shown.official.name_th == "สมชาย ใจดี"
    found = await tree.clients["official"].request(f.SearchOfficials, query="somch")
    assert [c.official_id for c in found.results] == [created.official_id]
    found = await tree.clients["official"].request(f.SearchOfficials, query="ใจ")
    assert [c.official_id for c in found.results] == [created.official_id]
    await admin.request(f.SetPolicy, agency_id=tree.agencies["DEPT-A"],
                        policy=f.PolicyInfo(message_scope="agency", max_devices=2))
    policy = await admin.request(f.GetPolicy, agency_id=tree.agencies["DIV-A1"])
    assert policy.effective.message_scope == "agency"
    assert policy.effective.max_devices == 2
    codes = await admin.request(f.ListCodes, official_id=created.official_id)
    assert codes.codes == []
    await admin.request(f.IssueCode, official_id=created.official_id)
    codes = await admin.request(f.ListCodes, official_id=created.official_id)
    assert [c.state for c in codes.codes] == ["pending"]
    await admin.request(f.CancelCode, code_id=codes.codes[0].code_id)
    listed = await admin.request(f.ListOfficials)
    assert len(listed.officials) >= 3
    begun = await admin.request(f.ImportBegin)
    checked = await admin.request(f.ImportRows, import_id=begun.import_id, rows=[
        f.ImportRow(line=2, employee_id="E2", name_en="Jane Doe", agency_code="DIV-A1"),
        f.ImportRow(line=3, employee_id="E1", name_en="Dup", agency_code="DEPT-B"),
    ])
    assert {(e.line, e.field) for e in checked.errors} == {(3, "employee_id"), (3, "agency_code")}


async def refused(coro: object, code: str) -> str:
    with pytest.raises(ClientError) as error:
        await coro  # type: ignore[misc]
    assert error.value.code == code, error.value
    return str(error.value)


async def test_rules(tree: Tree) -> None:
    sa = tree.superadmin
    dept_a, div_a1 = tree.agencies["DEPT-A"], tree.agencies["DIV-A1"]
    # No cycles: an agency cannot move under its own subtree.
    await refused(sa.request(f.MoveAgency, agency_id=dept_a, parent_id=div_a1), "invalid_field")
    await refused(tree.clients["admin_in"].request(f.MoveAgency, agency_id=dept_a,
                                                   parent_id=None), "forbidden")
    # Codes are unique; so are employee ids.
    await refused(sa.request(f.CreateAgency, code="DEPT-A", name_en="Again"), "conflict")
    await sa.request(f.CreateOfficial, name="Unique", employee_id="U-1")
    await refused(sa.request(f.CreateOfficial, name="Twin", employee_id="U-1"), "conflict")
    # name_th must be Thai; an official keeps at least one name.
    await refused(sa.request(f.CreateOfficial, name="x", name_th="Somchai"), "invalid_field")
    await refused(sa.request(f.UpdateOfficial, official_id=tree.officials["official"],
                             name_en=""), "invalid_field")
    # The last active superadmin stays; nobody changes their own roles.
    other = await tree.official("Second Super", "MIN")
    await sa.request(f.GrantRole, official_id=other, role="superadmin")
    await sa.request(f.SetOfficialStatus, official_id=other, status="suspended")
    await refused(sa.request(f.RevokeRole, official_id=tree.officials["superadmin"],
                             role="superadmin"), "forbidden")
    await sa.request(f.RevokeRole, official_id=other, role="superadmin")
    # An agency admin demoted mid-connection loses its powers at once.
    admin_in = tree.clients["admin_in"]
    await sa.request(f.RevokeRole, official_id=tree.officials["admin_in"], role="agency_admin")
    await refused(admin_in.request(f.ListAgencies), "forbidden")
    # Every admin write above was audited; the refusals were not.
    db = tree.world.app.db
    assert db is not None
    kinds = [r["kind"] for r in await db.pool.fetch(
        "SELECT kind FROM audit_events WHERE kind LIKE 'admin.%' ORDER BY id")]
    assert kinds[-4:] == ["admin.role_granted", "admin.official_suspended",
                          "admin.role_revoked", "admin.role_revoked"]
