"""The authorisation matrix: every admin operation, tried by every role.

Each operation builds a fresh target (as the superadmin), snapshots the
directory tables and the count of ``admin.*`` audit events, then makes the
one call as the actor. An allowed call must succeed; a refused one must
fail with ``forbidden`` and leave every table and the audit log exactly as
they were. Targets live in DIV-A1 (inside admin_in's and the auditor's
subtree DEPT-A, outside admin_out's DEPT-B) unless the row says otherwise.

The suspended admin (agency_admin over DEPT-A, then suspended) cannot reach
the handlers over the protocol at all: its connection is closed and it cannot
authenticate again (checked first). Its calls are then made straight into
the handler table with the principal its old connection held (stale roles),
which is what a connection open across the suspension would hold; the
services re-read status and roles, so each is refused.
"""

import itertools
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from gchat.client.sdk import Client
from protocol import frames as f
from tests.directory.conftest import Refused, Tree, call_as, principal_of

ACTORS = ("official", "admin_in", "admin_out", "auditor", "superadmin", "suspended_admin")
ADMINS = {"admin_in", "superadmin"}
READERS = {"admin_in", "auditor", "superadmin"}
SUPER = {"superadmin"}

Call = Callable[..., Awaitable[Any]]
Op = Callable[[Tree, Call], Awaitable[Any]]
_n = itertools.count(1)


def unique(prefix: str) -> str:
    return f"{prefix}{next(_n)}"


# --- the operations (setup as the superadmin; the last line is the actor's call) ---


async def create_agency(t: Tree, call: Call) -> Any:
    return await call(f.CreateAgency, code=unique("NEW-"), name_en="New",
                      parent_id=t.agencies["DEPT-A"])


async def create_top_agency(t: Tree, call: Call) -> Any:
    return await call(f.CreateAgency, code=unique("TOP-"), name_en="Top")


async def rename_agency(t: Tree, call: Call) -> Any:
    agency = await t.agency(unique("REN-"), "DEPT-A")
    return await call(f.UpdateAgency, agency_id=agency, name_th="กองใหม่", name_en="Renamed")


async def move_agency_within(t: Tree, call: Call) -> Any:
    agency = await t.agency(unique("MV-"), "DEPT-A")
    return await call(f.MoveAgency, agency_id=agency, parent_id=t.agencies["DIV-A1"])


async def move_agency_out(t: Tree, call: Call) -> Any:
    agency = await t.agency(unique("MVO-"), "DEPT-A")
    return await call(f.MoveAgency, agency_id=agency, parent_id=t.agencies["DEPT-B"])


async def list_agencies(t: Tree, call: Call) -> Any:
    return await call(f.ListAgencies, root_id=t.agencies["DEPT-A"])


async def create_official(t: Tree, call: Call) -> Any:
    return await call(f.CreateOfficial, name="สมหญิง ทดสอบ", agency_id=t.agencies["DIV-A1"])


async def update_official(t: Tree, call: Call) -> Any:
    target = await t.official("Target", "DIV-A1")
    return await call(f.UpdateOfficial, official_id=target, position="Director")


async def move_official(t: Tree, call: Call) -> Any:
    target = await t.official("Target", "DIV-A1")
    return await call(f.MoveOfficial, official_id=target, agency_id=t.agencies["DEPT-A"])


async def suspend_official(t: Tree, call: Call) -> Any:
    target = await t.official("Target", "DIV-A1")
    return await call(f.SetOfficialStatus, official_id=target, status="suspended")


async def reinstate_official(t: Tree, call: Call) -> Any:
    target = await t.official("Target", "DIV-A1")
    await t.sa(f.SetOfficialStatus, official_id=target, status="suspended")
    return await call(f.SetOfficialStatus, official_id=target, status="active")


async def retire_official(t: Tree, call: Call) -> Any:
    target = await t.official("Target", "DIV-A1")
    return await call(f.SetOfficialStatus, official_id=target, status="retired")


async def suspend_a_superadmin_in_subtree(t: Tree, call: Call) -> Any:
    target = await t.official("Other superadmin", "DEPT-A")
    await t.sa(f.GrantRole, official_id=target, role="superadmin")
    return await call(f.SetOfficialStatus, official_id=target, status="suspended")


async def get_official(t: Tree, call: Call) -> Any:
    target = await t.official("Target", "DIV-A1")
    return await call(f.GetOfficial, official_id=target)


async def list_officials(t: Tree, call: Call) -> Any:
    return await call(f.ListOfficials, agency_id=t.agencies["DEPT-A"])


async def list_pending_codes(t: Tree, call: Call) -> Any:
    return await call(f.ListPendingCodes, agency_id=t.agencies["DEPT-A"])


async def grant_admin_in_subtree(t: Tree, call: Call) -> Any:
    target = await t.official("Target", "DIV-A1")
    return await call(f.GrantRole, official_id=target, role="agency_admin",
                      scope_agency_id=t.agencies["DIV-A1"])


async def grant_auditor_in_subtree(t: Tree, call: Call) -> Any:
    target = await t.official("Target", "DIV-A1")
    return await call(f.GrantRole, official_id=target, role="auditor",
                      scope_agency_id=t.agencies["DEPT-A"])


async def grant_admin_wider_than_own(t: Tree, call: Call) -> Any:
    target = await t.official("Target", "DIV-A1")
    return await call(f.GrantRole, official_id=target, role="agency_admin",
                      scope_agency_id=t.agencies["MIN"])


async def grant_global_auditor(t: Tree, call: Call) -> Any:
    target = await t.official("Target", "DIV-A1")
    return await call(f.GrantRole, official_id=target, role="auditor")


async def grant_superadmin(t: Tree, call: Call) -> Any:
    target = await t.official("Target", "DIV-A1")
    return await call(f.GrantRole, official_id=target, role="superadmin")


async def revoke_role(t: Tree, call: Call) -> Any:
    target = await t.official("Target", "DIV-A1")
    await t.sa(f.GrantRole, official_id=target, role="auditor",
               scope_agency_id=t.agencies["DIV-A1"])
    return await call(f.RevokeRole, official_id=target, role="auditor")


async def list_devices(t: Tree, call: Call) -> Any:
    return await call(f.ListDevices, official_id=t.officials["official"])


async def revoke_device(t: Tree, call: Call) -> Any:
    target = await t.official("Target", "DIV-A1")
    device = await t.enrolled(target)
    assert device.state.device_id is not None
    return await call(f.RevokeDevice, device_id=device.state.device_id)


async def issue_code(t: Tree, call: Call) -> Any:
    target = await t.official("Target", "DIV-A1")
    return await call(f.IssueCode, official_id=target)


async def list_codes(t: Tree, call: Call) -> Any:
    target = await t.official("Target", "DIV-A1")
    await t.sa(f.IssueCode, official_id=target)
    return await call(f.ListCodes, official_id=target)


async def cancel_code(t: Tree, call: Call) -> Any:
    target = await t.official("Target", "DIV-A1")
    await t.sa(f.IssueCode, official_id=target)
    codes = await t.sa(f.ListCodes, official_id=target)
    return await call(f.CancelCode, code_id=codes.codes[0].code_id)


async def set_policy(t: Tree, call: Call) -> Any:
    return await call(f.SetPolicy, agency_id=t.agencies["DEPT-A"],
                      policy=f.PolicyInfo(max_devices=4 + next(_n) % 50))


async def set_global_policy(t: Tree, call: Call) -> Any:
    return await call(f.SetPolicy, policy=f.PolicyInfo(max_devices=5 + next(_n) % 50))


async def get_policy(t: Tree, call: Call) -> Any:
    return await call(f.GetPolicy, agency_id=t.agencies["DEPT-A"])


async def import_officials(t: Tree, call: Call) -> Any:
    """Begin, stage two rows into DIV-A1, apply: allowed means created."""
    begun = await call(f.ImportBegin)
    rows = [f.ImportRow(line=2 + i, employee_id=unique("EMP"), name_th="ทดสอบ นำเข้า",
                        agency_code="DIV-A1") for i in range(2)]
    await call(f.ImportRows, import_id=begun.import_id, rows=rows)
    result = await call(f.ImportApply, import_id=begun.import_id, dry_run=False)
    if not result.applied:  # a refused real apply deletes the import itself
        raise Refused("forbidden", "; ".join(e.reason for e in result.errors))
    return result


#: operation -> the actors allowed. Everyone else must be refused, changing nothing.
MATRIX: dict[Op, set[str]] = {
    create_agency: ADMINS,
    create_top_agency: SUPER,
    rename_agency: ADMINS,
    move_agency_within: ADMINS,
    move_agency_out: SUPER,
    list_agencies: READERS,
    create_official: ADMINS,
    update_official: ADMINS,
    move_official: ADMINS,
    suspend_official: ADMINS,
    reinstate_official: ADMINS,
    retire_official: ADMINS,
    suspend_a_superadmin_in_subtree: SUPER,
    get_official: READERS,
    list_officials: READERS,
    grant_admin_in_subtree: ADMINS,
    grant_auditor_in_subtree: ADMINS,
    grant_admin_wider_than_own: SUPER,
    grant_global_auditor: SUPER,
    grant_superadmin: SUPER,
    revoke_role: ADMINS,
    list_devices: READERS,
    revoke_device: ADMINS,
    issue_code: ADMINS,
    list_codes: READERS,
    list_pending_codes: READERS,
    cancel_code: ADMINS,
    set_policy: ADMINS,
    set_global_policy: SUPER,
    get_policy: READERS,
    import_officials: ADMINS,
}


async def _suspended_admin(t: Tree) -> tuple[Any, Any]:
    """An agency admin over DEPT-A, suspended: refused at the door, and its stale principal."""
    client = await t.actor("suspended_admin", "DEPT-A", "agency_admin", "DEPT-A")
    stale = await principal_of(t, client)
    await t.sa(f.SetOfficialStatus, official_id=t.officials["suspended_admin"],
               status="suspended")
    await client.ws.wait_closed()
    assert client.ws.close_code == 4403
    again = Client(client.state)
    await again.connect()
    with pytest.raises(Exception, match="token_invalid|auth_failed"):
        await again.authenticate()
    await again.close()
    return t.handlers(), stale


async def test_every_operation_by_every_role(tree: Tree) -> None:
    callers: dict[str, Any] = {key: tree.clients[key] for key in ACTORS[:-1]}
    callers["suspended_admin"] = await _suspended_admin(tree)
    mismatches: list[str] = []
    rows: list[str] = []
    for op, allowed in MATRIX.items():
        outcomes = []
        for actor in ACTORS:
            caller = callers[actor]

            async def call(make: Any, _caller: Any = caller, **fields: Any) -> Any:
                return await call_as(_caller, make, **fields)

            before: dict[str, Any] | None = None
            # Setup happens inside op before the actor's first call: snapshot there.
            first_call = True

            async def guarded(make: Any, **fields: Any) -> Any:
                nonlocal first_call, before
                if first_call:
                    first_call = False
                    before = await tree.snapshot()
                return await call(make, **fields)

            try:
                await op(tree, guarded)
                outcome = "allowed"
            except Refused as refusal:
                outcome = f"refused:{refusal.code}"
                assert before is not None
                after = await tree.snapshot()
                if after != before:
                    changed = [k for k in before if before[k] != after[k]]
                    mismatches.append(f"{op.__name__} by {actor}: refused but changed {changed}")
            expected = "allowed" if actor in allowed else "refused:forbidden"
            if outcome != expected:
                mismatches.append(f"{op.__name__} by {actor}: {outcome}, expected {expected}")
            outcomes.append("ok" if outcome == "allowed" else "--")
        rows.append(f"{op.__name__:<34}" + " ".join(f"{o:^9}" for o in outcomes))
    print("\n" + " " * 34 + " ".join(f"{a[:9]:^9}" for a in ACTORS))
    print("\n".join(rows))
    assert not mismatches, "\n".join(mismatches)
