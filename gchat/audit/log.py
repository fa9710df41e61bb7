"""The tamper-evident audit log: recording metadata events (docs/AUDIT.md).

Services call :meth:`AuditLog.record` with the connection of the transaction
that makes the change, so an event exists if and only if the change it
records was committed, and no event costs a commit of its own.  Events carry
metadata only (ids, sizes, counts), never content and never key material.

Each event's entry is its canonical JSON (the Merkle leaf data), written to
the backlog (``audit_backlog``, one row per statement's events) in its
compact stored form (:mod:`gchat.store.audit_codec`) with its leaf hash; the
sequencer (:mod:`gchat.audit.sequencer`) later
moves every committed event into the log with a contiguous leaf index and
signs tree heads.  See docs/AUDIT.md for the catalogue and formats.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from operator import attrgetter
from uuid import UUID

from gchat.audit.merkle import leaf_hash
from gchat.store import audit as store
from gchat.store import audit_codec as codec
from gchat.store.database import Executor
from gchat.store.messages import NewMessage
from protocol.frames import wire_time

log = logging.getLogger("gchat.audit.log")

__all__ = [
    "ENTRY_VERSION",
    "AuditEvent",
    "AuditLog",
    "accepted_events",
    "encode_entry",
    "involved",
]

ENTRY_VERSION = 1
"""Version of the entry format (field ``v`` of every entry)."""


@dataclass(frozen=True)
class AuditEvent:
    kind: str  # dotted name from the catalogue, e.g. "device.enrolled"
    actor_official: UUID | None = None
    actor_device: UUID | None = None
    subject_official: UUID | None = None
    subject_device: UUID | None = None
    agency_id: UUID | None = None
    #: Metadata only: ids, sizes, counts; JSON-serialisable (UUIDs allowed).
    #: Lists under keys ending in ``_officials`` / ``_devices`` (and single
    #: ids under keys ending in ``_official`` / ``_device``) are indexed, so
    #: auditors can find the event by those officials and devices too.
    details: Mapping[str, object] = field(default_factory=dict)


def entry_fields(event: AuditEvent, time: str) -> dict[str, object]:
    """The fields of an entry whose ``time`` is ``time`` (:func:`codec.time_text`)."""
    entry: dict[str, object] = {"v": ENTRY_VERSION, "kind": event.kind, "time": time}
    for name in ("actor_official", "actor_device", "subject_official", "subject_device"):
        value = getattr(event, name)
        if value is not None:
            entry[name] = value
    if event.agency_id is not None:
        entry["agency"] = event.agency_id
    if event.details:
        entry["details"] = dict(event.details)
    return entry


def encode_entry(event: AuditEvent, at: datetime) -> bytes:
    """The canonical JSON bytes of one entry: sorted keys, no spaces, UTF-8, no nulls."""
    return codec.canonical_json(entry_fields(event, codec.time_text(at)))


#: An id as the server writes one (``str(UUID)``): the only text indexed as an id.
_CANONICAL_UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


def _ids(values: Iterable[object]) -> Iterator[UUID]:
    """The ids among ``values``: UUIDs and UUIDs written in canonical form.

    Anything else under an id-named key (a typo, an empty string) is not an
    id: it stays in the entry's details but is not indexed, since the stored
    form keeps indexed ids as 16 raw bytes.
    """
    for v in values:
        if isinstance(v, UUID):
            yield v
        elif isinstance(v, str) and _CANONICAL_UUID.fullmatch(v):
            yield UUID(v)


def involved(event: AuditEvent) -> tuple[list[UUID], list[UUID]]:
    """The officials and devices an event is about (for the query indexes), sorted.

    Sorted as UUIDs they are in the order of their canonical text.
    """
    officials = set(_ids((event.actor_official, event.subject_official)))
    devices = set(_ids((event.actor_device, event.subject_device)))
    for key, value in event.details.items():
        target = (
            officials
            if key.endswith(("_official", "_officials"))
            else devices
            if key.endswith(("_device", "_devices"))
            else None
        )
        if target is None:
            continue
        target.update(_ids(value if isinstance(value, (list, tuple, set, frozenset)) else (value,)))
    return sorted(officials), sorted(devices)


class AuditLog:
    """Appends audit events inside the caller's transaction.

    With ``enabled=False`` (config ``audit_enabled``) :meth:`record` does
    nothing: that exists to measure the cost of auditing, not for production.
    """

    def __init__(self, enabled: bool = True) -> None:
        self.enabled = enabled

    async def record(
        self, conn: Executor, *events: AuditEvent, agencies: Mapping[UUID, UUID] | None = None
    ) -> None:
        """Append ``events`` with one statement on ``conn`` (the caller's transaction).

        Pass the pool only for events that have no transaction of their own
        (an authentication failure): they are then committed at once.
        ``agencies``: see :meth:`encode`.
        """
        encoded = await self.encode(conn, list(events), agencies)
        if encoded is not None:
            await store.insert_events(conn, encoded)

    async def encode(
        self,
        conn: Executor,
        events: Sequence[AuditEvent],
        agencies: Mapping[UUID, UUID] | None = None,
    ) -> store.EncodedEvents | None:
        """``events`` as a statement appends them (None: nothing to write).

        For a caller that writes them with its own statement (a send batch:
        with its messages). ``agencies`` are officials' agencies the caller
        read in the same transaction (a send's policy check, an ack's
        delete): those are not read again, so such a batch costs no
        statement here.
        """
        if not self.enabled or not events:
            return None
        at = datetime.now(UTC)
        time = codec.time_text(at)
        # "message.accepted" events (a commit batch's) from their template.
        accepted = [_accepted(event) for event in events]
        parties = [
            involved(e) if a is None else None for e, a in zip(events, accepted, strict=True)
        ]
        # An auditor's scope is checked against the agencies of an event: one
        # look-up for the whole batch of the officials the caller did not know.
        agency_of = dict(agencies or {})
        unknown = list(
            {o for p in parties if p is not None for o in p[0] if o not in agency_of}
            | {o for a in accepted if a is not None for o in _ACCEPTED.officials(a)
               if o not in agency_of}
        )
        if unknown:
            agency_of.update(await store.agencies_of(conn, unknown))
        hashes, stored = [], []
        for event, values, involves in zip(events, accepted, parties, strict=True):
            if values is not None:
                entry, stored_form = _ACCEPTED.encode(values, agency_of, time)
                hashes.append(leaf_hash(entry))
                stored.append(stored_form)
                continue
            assert involves is not None
            officials, devices = involves
            scope = sorted(
                {agency_of[o] for o in officials if o in agency_of}
                | set(_ids((event.agency_id,)))
            )
            fields = entry_fields(event, time)
            hashes.append(leaf_hash(codec.canonical_json(fields)))
            stored.append(codec.encode_fields(fields, event.kind, officials, scope, devices, time))
        return store.EncodedEvents(at, hashes, stored)


    async def encode_accepted(
        self, conn: Executor, sends: Sequence[NewMessage], agencies: Mapping[UUID, UUID]
    ) -> store.EncodedEvents | None:
        """The "message.accepted" events of ``sends`` (a commit batch's), as
        :meth:`encode` of :func:`accepted_events` gives them, byte for byte.

        Made from the sends themselves: no event object, details checked
        against the template's shape or entry dict copied per send, and no
        dict per entry for its canonical JSON either (the template writes
        it): less than half of what that cost per send (docs/PERFORMANCE.md,
        nodecpu3), still the committer's largest piece of Python after
        asyncpg.  ``agencies``: those the batch's
        check read (an official missing from it is looked up).
        """
        if not self.enabled or not sends:
            return None
        at = datetime.now(UTC)
        time = codec.time_text(at)
        values = [_accepted_of(message) for message in sends]
        agency_of = agencies
        unknown = list({o for v in values for o in (v[0], v[2])
                        if o is not None and o not in agencies})
        if unknown:
            agency_of = {**agencies, **await store.agencies_of(conn, unknown)}
        entries, stored = _ACCEPTED.encode_all(values, agency_of, time)
        return store.EncodedEvents(at, [leaf_hash(entry) for entry in entries], stored)


_ACCEPTED = codec.AcceptedCodec()
_ACCEPTED_DETAILS = frozenset(
    ("message_id", "sent_at", "ciphertext_bytes", "recipient_devices", "message_kind",
     "conversation_id"))


def _accepted(event: AuditEvent) -> codec.Accepted | None:
    """The values of a "message.accepted" event of the shape :func:`accepted_events`
    gives it, which :class:`codec.AcceptedCodec` writes; None for any other event
    (the general encoder writes it)."""
    details = event.details
    if (event.kind != "message.accepted" or event.agency_id is not None
            or event.subject_device is not None or not details.keys() <= _ACCEPTED_DETAILS):
        return None
    official, device, recipient = event.actor_official, event.actor_device, event.subject_official
    message_id, sent_at = details.get("message_id"), details.get("sent_at")
    size, devices = details.get("ciphertext_bytes"), details.get("recipient_devices")
    kind, conversation = details.get("message_kind"), details.get("conversation_id")
    if not (
        isinstance(official, UUID) and isinstance(device, UUID)
        and (recipient is None or isinstance(recipient, UUID))
        and isinstance(message_id, UUID) and type(sent_at) is int and type(size) is int
        and type(devices) is list and all(isinstance(d, UUID) for d in devices)
        and (kind in codec.MESSAGE_KINDS if "message_kind" in details else kind is None)
        and (isinstance(conversation, UUID) if "conversation_id" in details else True)
    ):
        return None
    return (official, device, recipient, message_id, sent_at, size, devices,
            kind, conversation)  # type: ignore[return-value]


_AS_INT = attrgetter("int")


def _accepted_of(message: NewMessage) -> codec.Accepted:
    """The values of ``message``'s "message.accepted" event (:func:`accepted_events`),
    as :class:`codec.AcceptedCodec` takes them."""
    envelopes = message.envelopes
    devices: tuple[UUID, ...]
    if len(envelopes) == 1 and message.body is None and not message.fanned_out:
        # A 1:1 send to a recipient's one device (the relay's): no set, sort or sum.
        devices, ciphertext = (envelopes[0][0],), envelopes[0][1]
        size = 0 if ciphertext is None else len(ciphertext)
    else:
        size = sum(len(c) for _, c in envelopes if c is not None)
        if message.body is not None:
            size += len(message.body)
        devices = tuple(
            sorted({*(device for device, _ in envelopes), *message.fanned_out}, key=_AS_INT))
    kind = message.kind
    return (message.sender_official, message.sender_device, message.recipient_official,
            message.message_id, wire_time(message.sent_at), size, devices,
            None if kind == "pairwise" else kind, message.conversation_id)


def _accepted_details(values: codec.Accepted) -> dict[str, object]:
    """The details of a "message.accepted" event of these values."""
    _, _, _, message_id, sent_at, size, devices, kind, conversation = values
    details: dict[str, object] = {
        "message_id": message_id,
        "sent_at": sent_at,
        "ciphertext_bytes": size,
        # In the order of their text: an id's text sorts as its int does,
        # which is read without writing the text.
        "recipient_devices": list(devices),
    }
    if kind is not None:
        details["message_kind"] = kind
    if conversation is not None:
        details["conversation_id"] = conversation
    return details


def accepted_events(sends: Sequence[NewMessage]) -> list[AuditEvent]:
    """One "message.accepted" event per send; the store writes those of the
    sends it inserts (a retry logs nothing)."""
    events = []
    for message in sends:
        values = _accepted_of(message)
        events.append(
            AuditEvent(
                "message.accepted",
                actor_official=values[0],
                actor_device=values[1],
                subject_official=values[2],
                details=_accepted_details(values),
            )
        )
    return events
