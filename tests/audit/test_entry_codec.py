"""The stored form of an entry gives back its canonical JSON byte for byte.

A stored entry that decoded to other bytes would hash to another leaf: its
inclusion proof would fail as if it had been tampered with.  So the codec is
tested on arbitrary entries (hypothesis: ids, times, phrases, lookalikes and
unicode in any place), and the SQL decoder of migration 0010 against the
Python one on a real database.
"""

from datetime import UTC, datetime, timedelta
from uuid import UUID, uuid4

import asyncpg
from asyncpg.pgproto.pgproto import UUID as PgUUID
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gchat.audit.log import (
    AuditEvent,
    AuditLog,
    _accepted,
    accepted_events,
    encode_entry,
    entry_fields,
    involved,
)
from gchat.audit.merkle import leaf_hash
from gchat.store import audit_codec as codec
from gchat.store import migrations
from gchat.store.messages import NewMessage

_AT = datetime(2026, 12, 4, 9, 15, 2, 123456, tzinfo=UTC)

def delivered_event(delivered: codec.Delivered) -> AuditEvent:
    """The "message.delivered" event of one acked envelope as :meth:`AuditLog.record`
    would take it: the general encoder's side of the template comparison."""
    official, device, message_id, position, sender_official, sender_device = delivered
    return AuditEvent(
        "message.delivered",
        actor_official=official,
        actor_device=device,
        details={
            "message_id": message_id,
            "position": position,
            "sender_official": sender_official,
            "sender_device": sender_device,
        },
    )


_uuids = st.uuids().map(str)
_times = st.datetimes(
    min_value=datetime(1000, 1, 1), max_value=datetime(9999, 12, 31)
).map(lambda d: d.replace(tzinfo=UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ"))
_texts = st.one_of(
    st.text(max_size=40),
    _uuids,
    _times,
    _uuids.map(lambda u: f"x{u}y"),
    _uuids.map(str.upper),
    _times.map(lambda t: f"at {t}!"),
    st.sampled_from(["2026-02-30T00:00:00.000000Z", "0999-01-01T00:00:00.000000Z", "true"]),
    st.sampled_from(codec.KINDS),
    st.sampled_from(codec.PHRASES),
)
_values = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(), _texts),
    lambda inner: st.one_of(
        st.lists(inner, max_size=4),
        st.dictionaries(st.one_of(_texts, st.sampled_from(["message_id", "sent_at", "n"])),
                        inner, max_size=4),
    ),
    max_leaves=12,
)


@settings(max_examples=400, deadline=None)
@given(
    kind=st.one_of(st.sampled_from(codec.KINDS), st.text(min_size=1, max_size=20)),
    details=st.dictionaries(st.text(max_size=12), _values, max_size=5),
    who=st.lists(st.uuids(), min_size=0, max_size=4),
    agency=st.lists(st.uuids(), max_size=2, unique=True),
    at=st.datetimes(min_value=datetime(1971, 1, 1), max_value=datetime(2200, 1, 1)),
)
def test_stored_form_decodes_to_the_exact_entry(
    kind: str, details: dict[str, object], who: list[UUID], agency: list[UUID], at: datetime
) -> None:
    """Both encoders: the scanning one, and the one the node runs (from the fields)."""
    actor_official, actor_device, subject_official, subject_device = (who + [None] * 4)[:4]
    event = AuditEvent(
        kind, actor_official, actor_device, subject_official, subject_device, details=details
    )
    when = at.replace(tzinfo=UTC)
    entry = encode_entry(event, when)
    officials, devices = involved(event)
    fields = entry_fields(event, codec.time_text(when))
    assert codec.canonical_json(fields) == entry
    for stored in (
        codec.encode(entry, kind, officials, agency, devices, when),
        codec.encode_fields(fields, kind, officials, agency, devices, codec.time_text(when)),
    ):
        assert codec.decode(stored, when) == entry
        assert codec.leaf_hash_of(stored, when) == leaf_hash(entry)
        assert codec.parties(stored) == (officials, agency, devices)
        assert codec.kind_of(stored) == (kind if kind in codec.KINDS else None)


_pool = st.lists(st.uuids(), min_size=6, max_size=6, unique=True)


@settings(max_examples=300, deadline=None)
@given(
    pool=_pool,
    picks=st.tuples(*[st.integers(0, 5)] * 5),
    position=st.integers(1, 2**63 - 1),
    with_agency=st.tuples(st.booleans(), st.booleans(), st.booleans()),
    as_asyncpg=st.booleans(),
    at=st.datetimes(min_value=datetime(1971, 1, 1), max_value=datetime(2200, 1, 1)),
)
def test_delivered_template_writes_what_the_general_encoder_writes(
    pool: list[UUID], picks: tuple[int, ...], position: int,
    with_agency: tuple[bool, bool, bool], as_asyncpg: bool, at: datetime,
) -> None:
    """Ids drawn from a small pool, so the recipient may be its own sender (same
    official, same device), an agency may be shared, or an official have none;
    ids as asyncpg returns them, as the ack's delete hands them over."""
    ids = [PgUUID(str(u)) if as_asyncpg else u for u in pool]
    official, device, message_id, sender_official, sender_device = (ids[i] for i in picks)
    agencies = {o: a for o, a, on in zip((official, sender_official), (ids[4], ids[5]),
                                          with_agency[:2], strict=True) if on}
    if with_agency[2] and agencies:  # both in one agency
        agencies = dict.fromkeys(agencies, ids[4])
    time = codec.time_text(at.replace(tzinfo=UTC))
    event = delivered_event(
        (official, device, message_id, position, sender_official, sender_device))
    officials, devices = involved(event)
    scope = sorted({agencies[o] for o in officials if o in agencies})
    fields = entry_fields(event, time)
    template = codec.DeliveredCodec()
    delivered = (official, device, message_id, position, sender_official, sender_device)
    # Twice in one call: the second is written from what the first shared.
    for entry, stored in template.encode([delivered, delivered], agencies, time):
        assert entry == codec.canonical_json(fields)
        assert stored == codec.encode_fields(fields, event.kind, officials, scope, devices, time)
        assert codec.decode(stored, at.replace(tzinfo=UTC)) == entry


def _general(event: AuditEvent, agencies: dict[UUID, UUID], time: str) -> tuple[bytes, bytes]:
    """(canonical JSON, stored form) of ``event`` by the general encoder, as
    :meth:`AuditLog.encode` writes an event of any other kind."""
    officials, devices = involved(event)
    scope = sorted({agencies[o] for o in officials if o in agencies})
    fields = entry_fields(event, time)
    return (codec.canonical_json(fields),
            codec.encode_fields(fields, event.kind, officials, scope, devices, time))


@settings(max_examples=300, deadline=None)
@given(
    pool=st.lists(st.uuids(), min_size=8, max_size=8, unique=True),
    picks=st.lists(st.tuples(st.integers(0, 7), st.integers(0, 7), st.integers(0, 7),
                             st.integers(0, 7), st.integers(0, 7)), min_size=1, max_size=5),
    recipients=st.lists(st.integers(0, 7), max_size=4),
    fanned=st.lists(st.integers(0, 7), max_size=3),
    sizes=st.lists(st.one_of(st.none(), st.binary(max_size=3)), max_size=4),
    body=st.one_of(st.none(), st.binary(max_size=5)),
    kind=st.sampled_from(["pairwise", "group", "membership"]),
    with_agency=st.lists(st.booleans(), min_size=8, max_size=8),
    as_asyncpg=st.booleans(),
    at=st.datetimes(min_value=datetime(1971, 1, 1), max_value=datetime(2200, 1, 1)),
    sent=st.datetimes(min_value=datetime(1971, 1, 1), max_value=datetime(2200, 1, 1)),
)
async def test_accepted_template_writes_what_the_general_encoder_writes(
    pool: list[UUID], picks: list[tuple[int, ...]], recipients: list[int], fanned: list[int],
    sizes: list[bytes | None], body: bytes | None, kind: str, with_agency: list[bool],
    as_asyncpg: bool, at: datetime, sent: datetime,
) -> None:
    """A commit batch's "message.accepted" events (:func:`accepted_events` of random
    sends: 1:1 or to a conversation, ids from a small pool so that a recipient may be
    the sender, an id may also be an agency, a message id, a conversation) as
    :meth:`AuditLog.encode` writes them -- from the template -- are byte for byte the
    general encoder's: leaf hashes and stored forms.  An official out of
    ``agencies`` is looked up: here every one has an agency; the template alone is
    also run with officials that have none."""
    ids = [PgUUID(str(u)) if as_asyncpg else u for u in pool]
    sends = []
    for message, sender, device, recipient, conversation in picks:
        envelopes = [(ids[r], None if s is None else s)
                     for r, s in zip(recipients, sizes + [b""] * 4, strict=False)]
        sends.append(NewMessage(
            message_id=ids[message], sender_device=ids[device], sender_official=ids[sender],
            recipient_official=ids[recipient] if kind == "pairwise" else None,
            client_message_id="c", sent_at=sent.replace(tzinfo=UTC), envelopes=envelopes,
            kind=kind, conversation_id=ids[conversation] if kind != "pairwise" else None,
            body=body if kind != "pairwise" else None, fanned_out=[ids[f] for f in fanned]))
    events = accepted_events(sends)
    assert all(_accepted(event) is not None for event in events)  # the template writes them
    for send, event in zip(sends, events, strict=True):  # in the order of their text
        assert event.details["recipient_devices"] == sorted(
            {d for d, _ in send.envelopes} | set(send.fanned_out), key=str)
    every = {o: ids[(i + 3) % 8] for i, o in enumerate(ids)}
    encoded = await AuditLog().encode(None, events, agencies=every)
    assert encoded is not None
    time = codec.time_text(encoded.at)
    for event, leaf, stored in zip(events, encoded.hashes, encoded.entries, strict=True):
        entry, general = _general(event, every, time)
        assert (leaf, stored) == (leaf_hash(entry), general)
        assert codec.decode(stored, encoded.at) == entry
    # The committer's way (from the sends, no events): the same bytes.
    direct = await AuditLog().encode_accepted(None, sends, every)
    assert direct is not None
    time = codec.time_text(direct.at)
    for event, leaf, stored in zip(events, direct.hashes, direct.entries, strict=True):
        entry, general = _general(event, every, time)
        assert (leaf, stored) == (leaf_hash(entry), general)
    some = {o: ids[(i + 3) % 8] for i, o in enumerate(ids) if with_agency[i]}
    when = codec.time_text(at.replace(tzinfo=UTC))
    for event in events:
        values = _accepted(event)
        assert values is not None
        assert codec.AcceptedCodec().encode(values, some, when) == _general(event, some, when)


def test_accepted_shapes_kept_follow_the_agencies_and_stay_bounded() -> None:
    """The template keeps what sends of one shape share across commit batches: a
    send after its official moved to another agency is written with the new one
    (as the general encoder writes it), and no more than ``SHAPES_KEPT`` shapes
    are kept however many there were."""
    template = codec.AcceptedCodec()
    sender, device, recipient, rdevice, first, moved = (uuid4() for _ in range(6))
    send = NewMessage(uuid4(), device, sender, recipient, "c", _AT, [(rdevice, b"abc")])
    (event,) = accepted_events([send])
    values = _accepted(event)
    assert values is not None
    time = codec.time_text(_AT)
    for agencies in ({sender: first, recipient: first}, {sender: moved, recipient: first},
                     {sender: moved}, {sender: first, recipient: first}):
        entry, stored = _general(event, agencies, time)
        assert template.encode_all([values], agencies, time) == ([entry], [stored])
    for _ in range(codec.SHAPES_KEPT + 10):
        other = NewMessage(uuid4(), uuid4(), uuid4(), uuid4(), "c", _AT, [(uuid4(), b"")])
        other_values = _accepted(accepted_events([other])[0])
        assert other_values is not None
        template.encode_all([other_values], {}, time)
        assert len(template._shapes) <= codec.SHAPES_KEPT


def test_delivered_pairs_kept_follow_the_agencies_and_the_time() -> None:
    """The delivered template keeps what a pair of devices shares across ack
    batches: an ack after an official moved is written with the new agency, each
    batch's entries with its own time, and at most ``SHAPES_KEPT`` pairs are kept."""
    template = codec.DeliveredCodec()
    official, device, sender, sender_device, first, moved = (uuid4() for _ in range(6))
    for minute, agencies in enumerate(({official: first, sender: first},
                                       {official: moved, sender: first}, {sender: first},
                                       {official: first, sender: first})):
        at = _AT + timedelta(minutes=minute)
        time = codec.time_text(at)
        delivered = (official, device, uuid4(), minute, sender, sender_device)
        event = delivered_event(delivered)
        ((entry, stored),) = template.encode([delivered], agencies, time)
        assert (entry, stored) == _general(event, agencies, time)
        assert codec.decode(stored, at) == entry
    for n in range(codec.SHAPES_KEPT + 10):
        list(template.encode([(uuid4(), uuid4(), uuid4(), n, uuid4(), uuid4())], {}, time))
        assert len(template._pairs) <= codec.SHAPES_KEPT


_accepted_details = st.dictionaries(
    st.sampled_from(["message_id", "sent_at", "ciphertext_bytes", "recipient_devices",
                     "message_kind", "conversation_id", "position"]),
    st.one_of(_values, st.uuids(), st.lists(st.uuids(), max_size=3),
              st.integers(-(2**63), 2**63 - 1), st.sampled_from(["group", "membership"])),
    max_size=2,
)


@settings(max_examples=300, deadline=None)
@given(
    changed=_accepted_details,
    removed=st.lists(st.sampled_from(["message_id", "sent_at", "ciphertext_bytes",
                                      "recipient_devices"]), max_size=1),
    who=st.lists(st.one_of(st.none(), st.uuids()), min_size=5, max_size=5),
    kind=st.sampled_from(["message.accepted", "message.accepted", "message.delivered"]),
)
async def test_an_event_the_template_does_not_fit_is_written_by_the_general_encoder(
    changed: dict[str, object], removed: list[str], who: list[UUID | None], kind: str
) -> None:
    """Any event of a shape near the accepted one's (a detail missing, null or of
    another type, an unknown key, an agency or subject device, another kind): what
    :meth:`AuditLog.encode` writes is the general encoder's, whichever encoder took it."""
    details = {"message_id": UUID(int=7), "sent_at": 1764851234123, "ciphertext_bytes": 412,
               "recipient_devices": [UUID(int=8)], **changed}
    for key in removed:
        del details[key]
    event = AuditEvent(kind, actor_official=who[0], actor_device=who[1], subject_official=who[2],
                       subject_device=who[3], agency_id=who[4], details=details)
    officials, _ = involved(event)
    agencies = {o: UUID(int=i) for i, o in enumerate(officials)}
    encoded = await AuditLog().encode(None, [event], agencies=agencies)
    assert encoded is not None
    time = codec.time_text(encoded.at)
    fields = entry_fields(event, time)
    entry = codec.canonical_json(fields)
    officials, devices = involved(event)
    scope = sorted({agencies[o] for o in officials} | ({who[4]} if who[4] else set()))
    assert encoded.hashes == [leaf_hash(entry)]
    assert encoded.entries == [
        codec.encode_fields(fields, kind, officials, scope, devices, time)]


@given(value=st.sampled_from(
    ["", "0", "0" * 32, str(UUID(int=0xABC)).upper(), f"x{UUID(int=0xABC)}"]
))
def test_text_that_is_not_an_id_under_an_id_key_is_kept_but_not_indexed(value: str) -> None:
    # Found by hypothesis in CI: "_device": "" made the stored form decode to other bytes.
    event = AuditEvent("message.accepted", actor_device=UUID(int=1),
                       details={"_device": value, "other_devices": [value, UUID(int=2)]})
    entry = encode_entry(event, _AT)
    officials, devices = involved(event)
    assert devices == [UUID(int=1), UUID(int=2)]
    for stored in (
        codec.encode(entry, event.kind, officials, [], devices, _AT),
        codec.encode_fields(entry_fields(event, codec.time_text(_AT)), event.kind, officials, [],
                            devices, codec.time_text(_AT)),
    ):
        assert codec.decode(stored, _AT) == entry
        assert codec.parties(stored)[2] == devices


def test_more_than_255_ids_and_a_message_are_stored_and_indexed() -> None:
    queried = sorted(str(uuid4()) for _ in range(300))
    event = AuditEvent("audit.query", actor_official=uuid4(),
                       details={"queried_officials": queried, "returned": 300})
    entry = encode_entry(event, _AT)
    officials, devices = involved(event)
    stored = codec.encode(entry, event.kind, officials, [], devices, _AT)
    assert codec.decode(stored, _AT) == entry
    assert len(codec.parties(stored)[0]) == 301


def test_a_message_event_takes_under_half_its_json() -> None:
    event = AuditEvent("message.accepted", actor_official=uuid4(), actor_device=uuid4(),
                       subject_official=uuid4(),
                       details={"message_id": uuid4(), "sent_at": 1764851234123,
                                "ciphertext_bytes": 412, "recipient_devices": [uuid4()]})
    entry = encode_entry(event, _AT)
    officials, devices = involved(event)
    fields = entry_fields(event, codec.time_text(_AT))
    for stored in (codec.encode(entry, event.kind, officials, [uuid4()], devices, _AT),
                   codec.encode_fields(fields, event.kind, officials, [uuid4()], devices,
                                       codec.time_text(_AT))):
        assert len(stored) < 0.4 * len(entry), (len(stored), len(entry))


def test_packs_keep_every_event_in_order() -> None:
    records = [(i * 7, _AT + timedelta(microseconds=i), bytes([i]) * i) for i in range(16)]
    assert codec.unpack_events(codec.pack_events(records)) == records


@settings(max_examples=200, deadline=None)
@given(
    parties=st.lists(st.lists(st.uuids(), min_size=1, max_size=4), min_size=1, max_size=16),
    mentioned=st.lists(st.booleans(), min_size=16, max_size=16),
    key_pick=st.integers(min_value=0, max_value=63),
)
def test_the_byte_search_finds_every_event_that_holds_a_key(
    parties: list[list[UUID]], mentioned: list[bool], key_pick: int
) -> None:
    """scan_involving (an auditor's query reads only the events it yields) yields
    exactly the events whose ids or body hold a key, in order, with their fields --
    the key as an id, inside the body only, or nowhere."""
    every = [u for ids in parties for u in ids]
    key = every[key_pick % len(every)]
    records = []
    for n, ids in enumerate(parties):
        body = {"other": str(key)} if mentioned[n] else {}
        event = AuditEvent("keys.bundle_fetched", actor_official=ids[0], details=body)
        entry = encode_entry(event, _AT)
        officials, devices = involved(event)
        stored = codec.encode(entry, event.kind, officials, ids[1:], devices,
                              _AT)
        records.append((100 + n, _AT + timedelta(seconds=n), stored))
    found = list(codec.scan_involving(codec.pack_events(records), [key.bytes]))
    assert found == [
        (n, 100 + n, codec.micros_of(at), stored)
        for n, (_, at, stored) in enumerate(records) if key.bytes in stored
    ]
    assert [codec.time_of(micros) for _, _, micros, _ in found] == [
        records[n][1] for n, *_ in found]
    for n, _, _, stored in found:
        involved_ids, _ = codec.raw_ids(stored)
        assert (key.bytes in involved_ids) == (key in parties[n])


async def test_the_sql_decoder_and_index_agree_with_python(empty_database_url: str) -> None:
    """audit_entry_json() and audit_pack_ids() of migration 0010 read what Python wrote,
    for every phrase, every kind, an id list past 255 and times in and out of range."""
    conn = await asyncpg.connect(empty_database_url)
    try:
        await migrations.migrate(conn)
        events = [
            AuditEvent(kind, actor_official=uuid4(), actor_device=uuid4(),
                       details={"all": list(codec.PHRASES), "other": str(uuid4()),
                                "when": "2030-01-01T00:00:00.000001Z", "bad": "2026-02-30T00:00"
                                ":00.000000Z", "in": f"x{uuid4()}y", "thai": "สำนักงาน"})
            for kind in (*codec.KINDS, "test.other")
        ]
        events.append(AuditEvent("audit.query", actor_official=uuid4(),
                                 details={"queried_officials": [uuid4() for _ in range(300)]}))
        stored = []
        for event in events:
            entry = encode_entry(event, _AT)
            officials, devices = involved(event)
            agencies = [uuid4()]
            stored.append((entry, codec.encode(entry, event.kind, officials, agencies, devices,
                                               _AT)))
            stored.append((entry, codec.encode_fields(
                entry_fields(event, codec.time_text(_AT)), event.kind, officials, agencies,
                devices, codec.time_text(_AT))))
        for entry, form in stored:
            assert bytes(await conn.fetchval("SELECT audit_entry_json($1, $2)", form, _AT)) == entry
            officials, agencies, _ = codec.parties(form)
            pack = codec.pack_events([(1, _AT, form), (2, _AT, form)])
            ids = await conn.fetchval("SELECT audit_pack_ids($1)", pack)
            assert ids == [*officials, *agencies] * 2
    finally:
        await conn.close()


@settings(max_examples=150, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])  # a URL, nothing to reset
@given(
    pool=st.lists(st.uuids(), min_size=8, max_size=8, unique=True),
    events=st.lists(st.tuples(st.integers(0, 7), st.integers(0, 7), st.integers(0, 7),
                              st.integers(0, 7), st.integers(0, 7),
                              st.integers(0, 2**63 - 1)), min_size=1, max_size=6),
    with_agency=st.lists(st.sampled_from([None, 0, 1, 2, 3, 4, 5, 6, 7]), min_size=8,
                         max_size=8),
    at=st.datetimes(min_value=datetime(1971, 1, 1), max_value=datetime(2200, 1, 1)),
)
async def test_the_sql_delivered_encoder_writes_what_python_writes(
    empty_database_url: str, pool: list[UUID], events: list[tuple[int, ...]],
    with_agency: list[int | None], at: datetime,
) -> None:
    """An ack's delete makes its "message.delivered" entries in SQL
    (:func:`codec.delivered_sql`): their leaf hashes and stored forms are the
    node's encoder's and the general encoder's, byte for byte -- ids drawn
    from a small pool, so the recipient may be its own sender, an agency or a
    message id may be one of the event's other ids, an official may have no
    agency or share one."""
    at = at.replace(tzinfo=UTC)
    agencies = {pool[i]: pool[a] for i, a in enumerate(with_agency) if a is not None}
    delivered: list[codec.Delivered] = [
        (pool[o], pool[d], pool[m], position, pool[so], pool[sd])
        for o, d, m, so, sd, position in events]
    conn = await asyncpg.connect(empty_database_url)
    try:
        rows = await conn.fetch(
            codec.delivered_sql(
                """(SELECT * FROM unnest($1::uuid[], $2::uuid[], $3::uuid[], $4::bigint[],
                                         $5::uuid[], $6::uuid[])
                    WITH ORDINALITY AS e(official, device, message_id, position,
                                         sender_official, sender_device, n))""", "$7::text",
                "(SELECT a.agency FROM unnest($8::uuid[], $9::uuid[]) AS a(official, agency)"
                " WHERE a.official = {official})")
            + " ORDER BY 1",
            *([e[i] for e in delivered] for i in range(6)), codec.time_text(at),
            list(agencies), list(agencies.values()))
    finally:
        await conn.close()
    time = codec.time_text(at)
    template = list(codec.DeliveredCodec().encode(delivered, agencies, time))
    assert len(rows) == len(delivered)
    for row, one, (entry, stored) in zip(rows, delivered, template, strict=True):
        assert (bytes(row["leaf_hash"]), bytes(row["entry"])) == (leaf_hash(entry), stored)
        assert (entry, stored) == _general(delivered_event(one), agencies, time)
