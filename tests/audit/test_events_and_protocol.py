"""Every event kind comes from exercising the real operation over the real
protocol, none holds plaintext or ciphertext, and auditors' operations work
(and are scoped, audited and visible to the officials concerned)."""

import base64
import json
import time
import uuid
from datetime import timedelta
from uuid import UUID

import pytest

from crypto.identity import verify_signature
from gchat.app import App
from gchat.audit.merkle import TreeHead, leaf_hash, verify_consistency, verify_inclusion
from gchat.audit.verify import verify_export
from gchat.client.rpc import ClientError
from gchat.client.sdk import Client
from gchat.client.state import DeviceState
from gchat.store import directory as store_directory
from protocol import frames as f
from tests.support import World, eventually

PLAINTEXT = b"the minister's secret: XYZZY-PLUGH-42"


async def _auditor(world: World, scope: UUID | None = None, name: str = "Auditor") -> Client:
    official = await world.new_official(name)
    assert world.app.db is not None
    await store_directory.grant_role(world.app.db.pool, official, "auditor", scope)
    return await world.enroll(await world.new_code(official), f"{name}-laptop")


async def _entries(app: App) -> list[dict[str, object]]:
    assert app.db is not None
    rows = await app.db.pool.fetch("SELECT entry FROM audit_events ORDER BY id")
    return [json.loads(bytes(r[0])) for r in rows]


async def _sequenced(app: App) -> None:
    """Wait until every committed event is in the Merkle log: auditors'
    queries read the log, so an event is found once the sequencer moved it."""
    assert app.db is not None
    pool = app.db.pool

    async def empty_backlog() -> bool:
        return await pool.fetchval("SELECT count(*) FROM audit_pending") == 0

    await eventually(empty_backlog, within=30.0, what="the sequencer empties the backlog")


async def _kinds(app: App) -> set[str]:
    return {str(e["kind"]) for e in await _entries(app)}


async def test_every_event_kind_and_no_content(world: World) -> None:
    app = world.app
    assert app.db is not None
    alice = await world.official_with_device("Alice")
    bob = await world.official_with_device("Bob")
    assert bob.state.official_id is not None and alice.state.official_id is not None

    # authentication: one failure (unknown device), one success (token)
    stranger = Client(DeviceState(url=world.url, identity_seed=bytes(32)))
    await stranger.connect()
    world.clients.append(stranger)
    with pytest.raises(ClientError):
        await stranger.request(f.Auth, device_id=uuid.uuid4(), signature=bytes(64))
    alice = await world.reconnect(alice)

    # a message: bundle fetched, accepted, delivered (acked)
    await alice.send_message(bob.state.official_id, PLAINTEXT, "m-1")
    ciphertexts = [bytes(r[0]) for r in await app.db.pool.fetch(
        "SELECT ciphertext FROM inbox WHERE ciphertext IS NOT NULL")]
    assert ciphertexts
    got = [m async for m in bob.messages(idle_timeout=1.0)]
    assert [m.plaintext for m in got] == [PLAINTEXT]

    async def delivered() -> bool:
        return "message.delivered" in await _kinds(app)

    await eventually(delivered)

    # auditor queries are audited too
    auditor = await _auditor(world)
    await auditor.request(f.AuditQuery, official_id=bob.state.official_id)
    await auditor.request(f.AuditGetTreeHead)
    head = (await auditor.request(f.AuditGetTreeHead)).head
    await auditor.request(f.AuditGetInclusion, leaf_index=0, tree_size=head.tree_size)
    await auditor.request(f.AuditGetConsistency, old_size=1, new_size=head.tree_size)
    await auditor.request(f.AuditExport, end=3)

    # directory administration: a device revoked, an official suspended
    assert world.admin is not None
    carol = await world.official_with_device("Carol")
    await world.admin.request(f.RevokeDevice, device_id=carol.state.device_id)
    await world.admin.request(f.SetOfficialStatus, official_id=carol.state.official_id,
                              status="suspended")

    assert app.failures is not None
    await app.failures.flush()  # refused attempts are written per address and window
    kinds = await _kinds(app)
    expected = {
        "admin.device_revoked", "admin.official_suspended",
        "admin.bootstrap", "admin.official_created", "admin.code_issued",
        "device.enrolled", "auth.failed", "auth.succeeded",
        "keys.bundle_fetched", "message.accepted", "message.delivered",
        "audit.query", "audit.tree_head", "audit.inclusion_proof",
        "audit.consistency_proof", "audit.export",
    }
    assert expected <= kinds, expected - kinds

    entries = await _entries(app)
    accepted = next(e for e in entries if e["kind"] == "message.accepted")
    details = accepted["details"]
    assert isinstance(details, dict)
    assert accepted["actor_official"] == str(alice.state.official_id)
    assert accepted["subject_official"] == str(bob.state.official_id)
    assert str(bob.state.device_id) in details["recipient_devices"]
    assert details["ciphertext_bytes"] == sum(len(c) for c in ciphertexts)

    # never content, never a ciphertext in any encoding
    raw = b"\n".join(bytes(r[0]) for r in await app.db.pool.fetch("SELECT entry FROM audit_events"))
    assert PLAINTEXT not in raw and b"XYZZY" not in raw
    for c in ciphertexts:
        for form in (c, base64.b64encode(c), c.hex().encode(), base64.urlsafe_b64encode(c)):
            assert form[:24] not in raw


async def test_a_message_is_in_the_scope_of_both_parties_agencies(world: World) -> None:
    """Both of a message's events are found by an auditor of the sender's
    agency and by one of the recipient's: the send's policy check and the
    ack's delete supply the agencies (no look-up of their own), and each
    must supply both."""
    app = world.app
    assert app.db is not None and world.admin is not None
    root = world.admin.state.agency_id
    parties = []
    for code, name in (("SA", "Alice"), ("SB", "Bob")):
        agency = uuid.uuid4()
        await store_directory.create_agency(app.db.pool, agency, code, f"Agency {code}", root)
        official = await world.admin.request(f.CreateOfficial, name=name, agency_id=agency)
        client = await world.enroll(await world.new_code(official.official_id), f"{name}-phone")
        parties.append((agency, client))
    (sender_agency, alice), (recipient_agency, bob) = parties
    assert bob.state.official_id is not None
    await alice.send_message(bob.state.official_id, PLAINTEXT, "scoped-1")
    assert [m.plaintext async for m in bob.messages(idle_timeout=1.0)] == [PLAINTEXT]

    async def delivered() -> bool:
        return "message.delivered" in await _kinds(app)

    await eventually(delivered)
    await _sequenced(app)
    for agency in (sender_agency, recipient_agency):
        auditor = await _auditor(world, agency, f"Auditor-{agency.hex[:6]}")
        found = await auditor.request(f.AuditQuery, official_id=bob.state.official_id,
                                      kinds=["message.accepted", "message.delivered"])
        assert sorted(e.kind for e in found.events) == ["message.accepted",
                                                        "message.delivered"], agency


async def test_auditor_operations(world: World) -> None:
    app = world.app
    assert app.db is not None and app.audit_service is not None
    alice = await world.official_with_device("Alice")
    bob = await world.official_with_device("Bob")
    await alice.send_message(bob.state.official_id, b"hello", "m-1")  # type: ignore[arg-type]
    auditor = await _auditor(world)
    public_key = app.audit_service.public_key
    await _sequenced(app)

    # query by official, device, kind, time range; paged
    page = await auditor.request(f.AuditQuery, official_id=bob.state.official_id, limit=2)
    assert len(page.events) == 2 and page.next_after is not None
    rest = await auditor.request(f.AuditQuery, official_id=bob.state.official_id,
                                 after=page.next_after, limit=500)
    bob_events = page.events + rest.events
    assert {e.kind for e in bob_events} >= {"admin.official_created", "device.enrolled",
                                            "message.accepted", "keys.bundle_fetched"}
    assert all(str(bob.state.official_id) in e.entry for e in bob_events)
    by_device = await auditor.request(f.AuditQuery, device_id=alice.state.device_id)
    assert by_device.events and all(str(alice.state.device_id) in e.entry
                                    for e in by_device.events)
    sends = await auditor.request(f.AuditQuery, kinds=["message.accepted"])
    assert [e.kind for e in sends.events] == ["message.accepted"]
    now = int(time.time() * 1000)
    assert not (await auditor.request(f.AuditQuery, since=now + 60_000)).events
    assert (await auditor.request(f.AuditQuery, until=now + 60_000)).events
    by_agency = await auditor.request(f.AuditQuery, agency_id=alice.state.agency_id)
    assert by_agency.events

    # signed tree head, inclusion and consistency proofs
    old = (await auditor.request(f.AuditGetTreeHead)).head
    await alice.send_message(bob.state.official_id, b"again", "m-2")  # type: ignore[arg-type]
    head = (await auditor.request(f.AuditGetTreeHead)).head
    assert head.tree_size > old.tree_size
    verify_signature(public_key, TreeHead(head.tree_size, head.root_hash,
                                          head.timestamp_ms).signing_message(), head.signature)
    sequenced = await auditor.request(f.AuditQuery, official_id=bob.state.official_id,
                                      kinds=["message.accepted"])
    accepted = sequenced.events[0]  # sequenced now: the fresh head covers it
    assert accepted.leaf_index is not None
    proof = await auditor.request(f.AuditGetInclusion, leaf_index=accepted.leaf_index,
                                  tree_size=head.tree_size)
    assert proof.entry == accepted.entry and proof.head == head
    assert verify_inclusion(leaf_hash(proof.entry.encode()), accepted.leaf_index,
                            head.tree_size, proof.proof, head.root_hash)
    cons = await auditor.request(f.AuditGetConsistency, old_size=old.tree_size,
                                 new_size=head.tree_size)
    assert verify_consistency(old.tree_size, head.tree_size, old.root_hash, head.root_hash,
                              cons.proof)

    # export in pages, verified offline
    lines: list[str] = []
    page = await auditor.request(f.AuditExport, tree_size=head.tree_size)
    lines += page.lines
    while page.cursor is not None:
        page = await auditor.request(f.AuditExport, tree_size=head.tree_size,
                                     cursor=page.cursor)
        lines += page.lines
    report = verify_export(lines, public_key)
    assert report.ok and report.entries == head.tree_size, report.summary()

    # scope: an auditor of an empty sub-agency sees nothing of theirs
    sub = uuid.uuid4()
    await store_directory.create_agency(app.db.pool, sub, "SUB", "Sub-agency",
                                        alice.state.agency_id)
    scoped = await _auditor(world, sub, "Scoped")
    mine = await scoped.request(f.AuditQuery, official_id=bob.state.official_id)
    assert mine.events == []
    with pytest.raises(ClientError) as refused:
        await scoped.request(f.AuditGetInclusion, leaf_index=accepted.leaf_index,
                             tree_size=head.tree_size)
    assert refused.value.code == "forbidden"
    with pytest.raises(ClientError):
        await scoped.request(f.AuditQuery, agency_id=alice.state.agency_id)
    scoped_export = await scoped.request(f.AuditExport, tree_size=head.tree_size, end=20)
    assert all('"entry":' not in line for line in scoped_export.lines)
    assert verify_export(scoped_export.lines, public_key).ok
    # ...and a plain official may not audit at all
    with pytest.raises(ClientError) as denied:
        await alice.request(f.AuditQuery)
    assert denied.value.code == "forbidden"

    # access transparency: bob sees the auditor's queries about him, after the delay
    assert (await bob.request(f.AuditListAccesses)).events == []
    app.audit_service._delay = timedelta(0)  # noqa: SLF001 (the configured delay has passed)
    seen = await bob.request(f.AuditListAccesses)
    assert seen.events and {e.kind for e in seen.events} >= {"audit.query"}
    assert all(json.loads(e.entry)["actor_official"] == str(auditor.state.official_id)
               or json.loads(e.entry)["actor_official"] == str(scoped.state.official_id)
               for e in seen.events)
    # ...as who asked, what and when: not whom else the query concerned
    assert all(set(json.loads(e.entry)) <= {"v", "kind", "time", "actor_official",
                                            "actor_device"} for e in seen.events)
    assert all(str(alice.state.official_id) not in e.entry for e in seen.events)


async def test_revoking_the_auditor_role_takes_effect_on_the_open_connection(
    world: World,
) -> None:
    from gchat.client.rpc import ClientError

    auditor = await _auditor(world)
    assert auditor.state.official_id is not None and world.admin is not None
    await auditor.request(f.AuditQuery)  # allowed while the role stands
    await world.admin.request(
        f.RevokeRole, official_id=auditor.state.official_id, role="auditor"
    )
    try:
        await auditor.request(f.AuditQuery)
        raise AssertionError("a revoked auditor could still query")
    except ClientError as error:
        assert error.code == "forbidden"


async def test_an_auditors_directory_reads_are_audited_and_shown_to_the_official(
    world: World,
) -> None:
    """An auditor opening an official's record, devices and codes, or listing
    officials, leaves an ``audit.directory_read`` event naming whom it read;
    the official sees it under access transparency. An admin's own reads of
    what it administers are its job and leave none."""
    app = world.app
    assert app.db is not None and world.admin is not None
    bob = await world.official_with_device("Bob")
    carol = await world.official_with_device("Carol")
    bob_id, carol_id = bob.state.official_id, carol.state.official_id
    assert bob_id is not None and carol_id is not None
    auditor = await _auditor(world)

    async def reads() -> list[dict[str, object]]:
        return [e for e in await _entries(app) if e["kind"] == "audit.directory_read"]

    await world.admin.request(f.GetOfficial, official_id=bob_id)
    await world.admin.request(f.ListDevices, official_id=bob_id)
    assert await reads() == []  # the admin's own reads

    await auditor.request(f.GetOfficial, official_id=bob_id)
    await auditor.request(f.ListDevices, official_id=bob_id)
    await auditor.request(f.ListCodes, official_id=bob_id)
    listed = await auditor.request(f.ListOfficials, limit=500)
    assert {carol_id, bob_id} <= {o.id for o in listed.officials}
    logged = await reads()
    assert [e["details"]["request"] for e in logged] == [  # type: ignore[index]
        "get_official", "list_devices", "list_codes", "list_officials",
    ]
    assert all(e["actor_official"] == str(auditor.state.official_id) for e in logged)
    assert logged[0]["details"]["queried_officials"] == [str(bob_id)]  # type: ignore[index]
    assert str(carol_id) in logged[3]["details"]["queried_officials"]  # type: ignore[index]

    await _sequenced(app)
    app.audit_service._delay = timedelta(0)  # noqa: SLF001 (the configured delay has passed)
    for official, expected in ((bob, 4), (carol, 1)):
        page = await official.request(f.AuditListAccesses)
        seen = [e for e in page.events if e.kind == "audit.directory_read"]
        assert len(seen) == expected
        assert all(json.loads(e.entry)["actor_official"] == str(auditor.state.official_id)
                   for e in seen)
        # The auditor is named (the official may not read the auditor's record).
        named = {(a.official_id, a.name_en, a.name_th) for a in page.auditors}
        assert named == {(auditor.state.official_id, "Auditor", None)}
