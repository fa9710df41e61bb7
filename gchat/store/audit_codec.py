"""How an audit entry is stored: its canonical JSON, compacted, exactly recoverable.

The Merkle leaf is the entry's canonical JSON (docs/AUDIT.md section 1),
about 410 bytes for a ``message.accepted``, half of it hex UUIDs and key
names.  Stored as JSON with its index columns an event cost about 1 KB.
Stored this way it takes about 155 bytes and carries its own index keys,
with nothing written twice:

    header | kind | ids (16 bytes each) | body

``header`` is three bytes ``k m n`` (when every count is below 255) or
``0xFF`` and three big-endian uint16 ``k m n``: ``k`` ids, of which the
first ``n`` are the officials the event involves, up to ``m`` the
agencies, then the devices.  The first ``m`` are what the GIN index of
``audit_packs`` holds (``audit_entry_ids()`` in migration 0010): an
auditor looks events up by official or agency; a device query goes through
the device's official.  ``kind`` is the kind's position in :data:`KINDS`
(255: another kind).  ``body`` is the JSON with these substitutions (JSON
never holds a raw byte below 0x20, so a marker cannot be taken for text):

    0x01 i       "ids[i]" (quoted), i one byte      0x02 i i  the same, i two bytes
    0x03 16 B    "<UUID>" (quoted), not an id       0x07 16 B  a UUID inside a string
    0x04         "<the row's created_at>" (the entry's "time", quoted)
    0x06 8 B     "<time>" (quoted): int64 microseconds since 1970, as
                 YYYY-MM-DDTHH:MM:SS.ffffffZ        0x08 8 B  such a time inside a string
    0x05 p       PHRASES[p]

Every substitution maps exactly the bytes it replaces, and back
(:func:`decode`; property-tested in tests/audit/test_entry_codec.py), so a
stored entry hashes to its leaf.  ``audit_entry_json()`` in the migration
decodes the same format in SQL, for operators' ad-hoc queries and the
``audit_events`` view.  KINDS and PHRASES only ever grow: stored entries
refer to positions in them.
"""

from __future__ import annotations

import re
import struct
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from hashlib import sha256
from typing import Any
from uuid import UUID

import msgspec

#: The catalogue's kinds (docs/AUDIT.md section 1).  Append only.
KINDS: tuple[str, ...] = (
    "message.accepted", "message.delivered", "auth.succeeded", "auth.failed",
    "device.enrolled", "device.enrolment_refused", "keys.bundle_fetched", "audit.query",
    "audit.tree_head", "audit.inclusion_proof", "audit.consistency_proof", "audit.export",
    "admin.bootstrap", "admin.official_created", "admin.code_issued", "admin.device_revoked",
    "admin.official_suspended", "admin.official_reinstated", "admin.official_retired",
    "admin.official_updated", "admin.official_moved", "admin.officials_imported",
    "admin.role_granted", "admin.role_revoked", "admin.agency_created", "admin.agency_updated",
    "admin.agency_moved", "admin.policy_set", "admin.code_cancelled",
    "conversation.direct_created", "conversation.group_created",
    "conversation.members_added", "conversation.members_removed",
    "conversation.members_left", "conversation.renamed", "conversation.announcement_set",
    "audit.directory_read",
)
#: Kinds an auditor's own requests are recorded under (access transparency).
AUDITOR_KINDS = tuple(k for k in KINDS if k.startswith("audit."))

_KEYS = (
    "actor_device", "actor_official", "agency", "details", "kind", "subject_device",
    "subject_official", "time", "v", "message_id", "sent_at", "ciphertext_bytes",
    "recipient_devices", "conversation_id", "message_kind", "position", "sender_official",
    "sender_device", "method", "remote", "device_name", "platform", "one_time_prekeys",
    "bundle_devices", "one_time_prekeys_claimed", "returned", "queried_officials",
    "after_id", "filter_official", "filter_device", "filter_agency", "filter_kinds",
    "filter_since", "filter_until", "leaf_index", "tree_size", "old_size", "new_size",
    "start", "end", "fresh", "count", "reasons", "first_at", "last_at", "window_seconds",
    "claimed_devices", "members", "member_devices", "agency_code", "role", "via",
)
#: Key names with what comes before them, and the kinds as values.  Append
#: only; never a single quote (the migration quotes them).
PHRASES: tuple[str, ...] = (
    *(f',"{key}":' for key in _KEYS),
    *(f'{{"{key}":' for key in _KEYS),
    *(f'"{kind}"' for kind in KINDS),
)

_UUID = rb"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}"
_TIME = rb"[1-9][0-9]{3}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}\.[0-9]{6}Z"
_PHRASE_INDEX = {p.encode(): i for i, p in enumerate(PHRASES)}
_KIND_INDEX = {k: i for i, k in enumerate(KINDS)}
_ENCODE = re.compile(
    b'"(' + _UUID + b')"|(' + _UUID + b')|"(' + _TIME + b')"|(' + _TIME + b")"
    + rb'|([,{]"[a-z_]+":|"[a-z]+\.[a-z_.]+")'
)
_DECODE = re.compile(
    rb"\x01(.)|\x02(..)|\x03(.{16})|(\x04)|\x05(.)|\x06(.{8})|\x07(.{16})|\x08(.{8})", re.DOTALL
)
EPOCH = _EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_TIME_FORMAT = "%Y-%m-%dT%H:%M:%S.%fZ"
OTHER_KIND = 255


def time_text(at: datetime) -> str:
    """An entry's time as entries write it (UTC, microseconds)."""
    return at.astimezone(UTC).strftime(_TIME_FORMAT)


def _header(k: int, m: int, n: int) -> bytes:
    if k < 255:
        return bytes((k, m, n))
    if k > 0xFFFF:
        raise ValueError("an audit event involves at most 65,535 ids")
    return b"\xff" + struct.pack(">HHH", k, m, n)


def _layout(stored: bytes) -> tuple[int, int, int, int]:
    """(k, m, n, offset of the kind byte)."""
    if stored[0] < 255:
        return stored[0], stored[1], stored[2], 3
    k, m, n = struct.unpack(">HHH", stored[1:7])
    return k, m, n, 7


def _enc_hook(value: Any) -> Any:
    if isinstance(value, (set, frozenset)):
        return sorted(value, key=str)
    raise TypeError(f"audit details cannot hold {type(value).__name__}")


canonical_json = msgspec.json.Encoder(enc_hook=_enc_hook, order="sorted").encode
"""The canonical JSON of an entry or of a value in it: sorted keys, no spaces, UTF-8."""


def _substitution(ref: dict[bytes, int], own_time: bytes) -> Callable[[re.Match[bytes]], bytes]:
    """What :data:`_ENCODE` puts in place of each match, given the row's ids and time."""

    def substitute(match: re.Match[bytes]) -> bytes:
        quoted, bare, qtime, btime, phrase = match.groups()
        if quoted is not None:
            i = ref.get(quoted)
            if i is None:
                return b"\x03" + bytes.fromhex(quoted.replace(b"-", b"").decode())
            return bytes((1, i)) if i < 256 else b"\x02" + i.to_bytes(2, "big")
        if bare is not None:
            return b"\x07" + bytes.fromhex(bare.replace(b"-", b"").decode())
        moment = qtime or btime
        if moment is not None:
            if qtime == own_time:
                return b"\x04"
            try:
                parsed = datetime.strptime(moment.decode(), _TIME_FORMAT).replace(tzinfo=UTC)
            except ValueError:
                return match.group(0)
            micros = (parsed - _EPOCH) // timedelta(microseconds=1)
            return (b"\x06" if qtime else b"\x08") + struct.pack(">q", micros)
        p = _PHRASE_INDEX.get(phrase)
        return phrase if p is None else bytes((5, p))

    return substitute


def _head(kind: str, officials: Sequence[UUID], agencies: Sequence[UUID],
          devices: Sequence[UUID]) -> tuple[list[UUID], bytes]:
    ids = [*officials, *agencies, *devices]
    head = _header(len(ids), len(officials) + len(agencies), len(officials))
    head += bytes((_KIND_INDEX.get(kind, OTHER_KIND),))
    return ids, head + b"".join([i.bytes for i in ids])


def encode(
    entry: bytes,
    kind: str,
    officials: Sequence[UUID],
    agencies: Sequence[UUID],
    devices: Sequence[UUID],
    at: datetime,
) -> bytes:
    """The stored form of ``entry`` (canonical JSON of ``kind``) recorded at ``at``.

    ``officials``, ``agencies``, ``devices``: the ids the event involves
    (each once).  This scans the JSON with :data:`_ENCODE`; the node writes
    events with :func:`encode_fields`, whose form decodes to the same bytes
    and costs about a third of this.
    """
    ids, head = _head(kind, officials, agencies, devices)
    ref = {str(u).encode(): i for i, u in enumerate(ids)}
    return head + _ENCODE.sub(_substitution(ref, time_text(at).encode()), entry)


#: ``{"key":`` and ``,"key":`` as stored (a phrase, or the bytes themselves),
#: by (first?, key); filled as keys are met.
_KEY_FORMS: dict[tuple[bool, object], bytes] = {}
_SIMPLE_KEY = re.compile(r"[a-z_][a-z0-9_]*")
_QUOTED_PHRASE = {p.encode(): bytes((5, i)) for i, p in enumerate(PHRASES) if p[0] == '"'}


def _key_form(first: bool, key: object) -> bytes | None:
    """The stored ``{"key":`` / ``,"key":``; None for a key that JSON might escape
    or that might sort otherwise than in Python (then the dict takes the slow path)."""
    form = _KEY_FORMS.get((first, key))
    if form is None:
        if type(key) is not str or _SIMPLE_KEY.fullmatch(key) is None:
            return None
        text = ("{" if first else ",") + f'"{key}":'
        p = _PHRASE_INDEX.get(text.encode())
        form = text.encode() if p is None else bytes((5, p))
        if len(_KEY_FORMS) < 4096:
            _KEY_FORMS[(first, key)] = form
    return form


def _id_form(ref: Mapping[int, int], value: UUID) -> bytes:
    """A UUID as a stored body writes it: a reference to one of the row's ids
    (``ref``: id's ``int`` -> position; an int hashes in C, a UUID in Python),
    or 0x03 and its 16 bytes."""
    i = ref.get(value.int)
    if i is None:
        return b"\x03" + value.bytes
    return bytes((1, i)) if i < 256 else b"\x02" + i.to_bytes(2, "big")


def _key_forms(*keys: tuple[bool, str]) -> dict[str, bytes]:
    """The stored ``{"key":`` (first) or ``,"key":`` of each plain key, for templates."""
    forms = {}
    for first, key in keys:
        form = _key_form(first, key)
        assert form is not None  # plain keys
        forms[key] = form
    return forms


def _quoted_kind(kind: str) -> bytes:
    """A kind as a stored body writes the value ``"kind"``."""
    quoted = canonical_json(kind)
    return _QUOTED_PHRASE.get(quoted, quoted)


class _Fields:
    """Writes the stored body of an entry from its fields (see :func:`encode_fields`)."""

    def __init__(self, ids: list[UUID], own_time: str) -> None:
        self.ids = ids
        self.ref = {u.int: i for i, u in enumerate(ids)}
        self.own_time = own_time
        self.out = bytearray()
        self._slow: Callable[[re.Match[bytes]], bytes] | None = None

    def _substitute(self) -> Callable[[re.Match[bytes]], bytes]:
        if self._slow is None:
            self._slow = _substitution(
                {str(u).encode(): i for i, u in enumerate(self.ids)}, self.own_time.encode()
            )
        return self._slow

    def slow(self, value: object) -> None:
        """Any value: its canonical JSON through the scanning encoder."""
        self.out += _ENCODE.sub(self._substitute(), canonical_json(value))

    def value(self, value: object) -> None:
        out = self.out
        kind = type(value)
        if kind is UUID:
            out += _id_form(self.ref, value)  # type: ignore[arg-type]
        elif kind is int or kind is bool or value is None:
            out += canonical_json(value)  # digits, true, false, null: no marker
        elif kind is str:
            if value == self.own_time:
                out.append(4)
                return
            quoted = canonical_json(value)
            phrase = _QUOTED_PHRASE.get(quoted)
            if phrase is not None:
                out += phrase
            else:
                out += _ENCODE.sub(self._substitute(), quoted)
        elif kind is list or kind is tuple:
            out.append(0x5B)  # [
            first = True
            for item in value:  # type: ignore[attr-defined]
                if not first:
                    out.append(0x2C)  # ,
                first = False
                self.value(item)
            out.append(0x5D)  # ]
        elif kind is dict:
            self.mapping(value)  # type: ignore[arg-type]
        else:
            self.slow(value)

    def mapping(self, fields: Mapping[str, object]) -> None:
        out = self.out
        start = len(out)
        first = True
        try:
            keys = sorted(fields)
        except TypeError:  # keys of several types: msgspec says what it makes of them
            self.slow(fields)
            return
        for key in keys:
            form = _KEY_FORMS.get((first, key)) or _key_form(first, key)
            if form is None:  # a key to escape, or one not sorted as Python sorts it
                del out[start:]
                self.slow(fields)
                return
            out += form
            self.value(fields[key])
            first = False
        if first:
            out += b"{}"
        else:
            out.append(0x7D)  # }


def encode_fields(
    fields: Mapping[str, object],
    kind: str,
    officials: Sequence[UUID],
    agencies: Sequence[UUID],
    devices: Sequence[UUID],
    own_time: str,
) -> bytes:
    """A stored form of the entry whose canonical JSON is ``canonical_json(fields)``.

    It decodes to exactly those bytes, like :func:`encode`'s, but is written
    from the fields (ids, times, kinds and keys of the common shapes looked
    up, anything else through the scanning encoder) instead of scanning the
    JSON: this runs for every event inside the sender's transaction.
    ``own_time`` is :func:`time_text` of the row's ``created_at``.
    """
    ids, head = _head(kind, officials, agencies, devices)
    body = _Fields(ids, own_time)
    body.mapping(fields)
    return head + bytes(body.out)


#: What the "message.delivered" entries of a pair of devices share
#: (:meth:`DeliveredCodec._pair`).
_Pair = tuple[str, str, bytes, bytes, dict[int, int]]
#: How many shapes (the pieces events of one sender and recipients share)
#: :class:`AcceptedCodec` and :class:`DeliveredCodec` each keep, about 1 KB
#: each; when full, they start anew.
SHAPES_KEPT = 1024

#: One acked envelope as its "message.delivered" event records it: (recipient
#: official, recipient device, message id, inbox position, sender official,
#: sender device).
Delivered = tuple[UUID, UUID, UUID, int, UUID, UUID]


class DeliveredCodec:
    """The canonical JSON and stored form of "message.delivered" entries, written
    from a template.

    A device draining its inbox acks thousands of envelopes a second and each
    ack's delete writes one such event in its transaction: through the
    general :func:`encode_fields` (a dict per entry, sorted, walked value by
    value) that cost about a third of a node's CPU in a drain.  The entry's
    shape is fixed (docs/AUDIT.md: recipient official and device, message
    id, position, sender official and device), so the bytes are its
    constant pieces with the values put in; both forms are exactly what
    :func:`canonical_json` of :func:`gchat.audit.log.entry_fields` and
    :func:`encode_fields` write (tested against them on random events).

    Since 2026-12-05 the node does not run it: an ack batch's delete makes
    these entries in SQL (:func:`delivered_sql`, from this class's constant
    pieces), and this is the Python form they are tested against.
    """

    def __init__(self) -> None:
        k = _key_forms((True, "actor_device"), (False, "actor_official"),
                       (False, "details"), (True, "message_id"), (False, "position"),
                       (False, "sender_device"), (False, "sender_official"),
                       (False, "kind"), (False, "time"), (False, "v"))
        self._parts = (
            k["actor_device"], k["actor_official"], k["details"] + k["message_id"],
            k["position"], k["sender_device"], k["sender_official"],
            b"}" + k["kind"] + _quoted_kind("message.delivered") + k["time"]
            + b"\x04" + k["v"] + b"1}",
        )
        #: Pairs written, by (recipient official and device, sender official and
        #: device, the two officials' agencies).
        self._pairs: dict[tuple[int | None, ...], _Pair] = {}

    def encode(
        self,
        deliveries: Iterable[Delivered],
        agencies: Mapping[UUID, UUID],
        own_time: str,
    ) -> Iterator[tuple[bytes, bytes]]:
        """(canonical JSON, stored form) of each (recipient official, recipient
        device, message id, position, sender official, sender device);
        ``agencies``: the officials' agencies.

        What a pair of devices shares (ids, header, their keys and values,
        with the two officials' agencies) is written once and kept for the
        next acks (up to :data:`SHAPES_KEPT` pairs): a drain acks many
        envelopes of one sender, and a conversation's acks come in runs.
        """
        pairs = self._pairs
        p = self._parts
        ending = f'{own_time}","v":1}}'
        # Keyed by the ids' int: a uuid.UUID hashes and compares in Python.
        agency = {o.int: a.int for o, a in agencies.items()}
        for official, device, message_id, position, sender_official, sender_device in deliveries:
            o, s = official.int, sender_official.int
            key = (o, device.int, s, sender_device.int, agency.get(o), agency.get(s))
            shared = pairs.get(key)
            if shared is None:
                if len(pairs) >= SHAPES_KEPT:
                    pairs.clear()
                shared = pairs[key] = self._pair(
                    official, device, sender_official, sender_device, agencies)
            head, tail, stored_head, stored_tail, ref = shared
            yield (f'{head}{message_id}","position":{position}{tail}{ending}'.encode(),
                   b"".join((stored_head, _id_form(ref, message_id), p[3], b"%d" % position,
                             stored_tail)))

    def _pair(
        self, official: UUID, device: UUID, sender_official: UUID, sender_device: UUID,
        agencies: Mapping[UUID, UUID],
    ) -> _Pair:
        """What the entries of this pair share: the JSON up to the message id and
        from the position to the time; the stored form's, the same; its id
        references."""
        officials = sorted({official, sender_official})
        devices = sorted({device, sender_device})
        scope = sorted({agencies[o] for o in officials if o in agencies})
        ids, head_ids = _head("message.delivered", officials, scope, devices)
        ref = {u.int: i for i, u in enumerate(ids)}
        p = self._parts
        stored_head = b"".join((head_ids, p[0], _id_form(ref, device), p[1],
                                _id_form(ref, official), p[2]))
        stored_tail = b"".join((p[4], _id_form(ref, sender_device), p[5],
                                _id_form(ref, sender_official), p[6]))
        head = (f'{{"actor_device":"{device}","actor_official":"{official}",'
                '"details":{"message_id":"')
        tail = (f',"sender_device":"{sender_device}","sender_official":"{sender_official}"}},'
                '"kind":"message.delivered","time":"')
        return head, tail, stored_head, stored_tail, ref


def _bytea(value: bytes) -> str:
    """A bytea literal of ``value`` (for SQL written here from constants)."""
    return f"'\\x{value.hex()}'::bytea"


#: SQL: the place (from 0) of ``{x}`` among an event's ids (``s.o1`` to
#: ``s.d2``: officials, agencies, devices, each set sorted, a NULL for each
#: one fewer than two), the last if it is there more than once (as
#: :func:`_id_form`'s ``ref`` finds it); NULL if it is not there.
_ID_PLACE = """CASE WHEN {x} = s.d2 THEN s.officials + s.agencies + 1
     WHEN {x} = s.d1 THEN s.officials + s.agencies
     WHEN {x} = s.a2 THEN s.officials + 1 WHEN {x} = s.a1 THEN s.officials
     WHEN {x} = s.o2 THEN 1 WHEN {x} = s.o1 THEN 0 END"""


def delivered_sql(source: str, at_text: str, agency_of: str) -> str:
    """A SELECT of ``n``, ``leaf_hash`` and ``entry`` (the stored form) of the
    "message.delivered" event of each row of ``source``: the bytes
    :class:`DeliveredCodec` writes for it, made by PostgreSQL, so that an ack
    batch's delete writes its events in its own statement (no transaction
    left open while the node encodes them between two statements; tested
    against :class:`DeliveredCodec` on random events).

    ``source``: a relation with columns ``n`` (the event's order), ``official``,
    ``device``, ``message_id``, ``position``, ``sender_official`` and
    ``sender_device``; ``at_text``: the SQL of the events' time as
    :func:`time_text` writes it (the node's: the backlog row's
    ``created_at``, which the entry's own time refers to); ``agency_of``:
    the SQL of an official's agency (NULL: none), ``{official}`` standing
    for the official, evaluated once per pair of devices for each of its
    two officials.

    As :class:`DeliveredCodec` does, what the events of one pair of devices
    share (all but the message id and position: the ids, the header, the
    JSON around them) is written once per pair, and each event is those
    pieces with its two values put in (a relay's ack batch has two or three
    events per pair, a drain's hundreds). An event involves at most six ids
    (two officials, their agencies, two devices), kept as columns: the
    message id's reference, a coincidence of ids, is six comparisons.
    """
    p = DeliveredCodec()._parts

    def ref(value: str) -> str:  # NULL if not among them (set_byte is strict)
        return f"set_byte('\\x0100'::bytea, 1, {_ID_PLACE.format(x=value)})"

    def device_ref(value: str) -> str:
        return (f"set_byte('\\x0100'::bytea, 1, s.officials + s.agencies"
                f" + CASE WHEN {value} = s.d2 THEN 1 ELSE 0 END)")

    ids = " || ".join(
        ["uuid_send(s.o1)"]
        + [f"coalesce(uuid_send(s.{i}), ''::bytea)" for i in ("o2", "a1", "a2")]
        + ["uuid_send(s.d1)", "coalesce(uuid_send(s.d2), ''::bytea)"])
    kind = _KIND_INDEX["message.delivered"]
    return f"""
    SELECT u.n,
           sha256(t.json_head || convert_to(u.message_id::text || '","position":'
                                            || u.position::text, 'UTF8') || t.json_tail)
             AS leaf_hash,
           t.stored_head
           || coalesce({ref("u.message_id").replace("s.", "t.")},
                       '\\x03'::bytea || uuid_send(u.message_id))
           || {_bytea(p[3])} || convert_to(u.position::text, 'UTF8') || t.stored_tail AS entry
    FROM (SELECT s.o1, s.o2, s.a1, s.a2, s.d1, s.d2, s.officials, s.agencies, s.ns, s.mids,
                 s.positions,
                 '\\x00'::bytea
                 || convert_to('{{"actor_device":"' || s.device::text
                               || '","actor_official":"' || s.official::text
                               || '","details":{{"message_id":"', 'UTF8') AS json_head,
                 convert_to(',"sender_device":"' || s.sender_device::text
                            || '","sender_official":"' || s.sender_official::text
                            || '"}},"kind":"message.delivered","time":"' || {at_text}
                            || '","v":1}}', 'UTF8') AS json_tail,
                 int4send(((s.officials + s.agencies + 1 + (s.d2 IS NOT NULL)::int) << 24)
                          | ((s.officials + s.agencies) << 16) | (s.officials << 8) | {kind})
                 || {ids}
                 || {_bytea(p[0])} || {device_ref("s.device")}
                 || {_bytea(p[1])} || {ref("s.official")} || {_bytea(p[2])} AS stored_head,
                 {_bytea(p[4])} || {device_ref("s.sender_device")}
                 || {_bytea(p[5])} || {ref("s.sender_official")} || {_bytea(p[6])}
                   AS stored_tail
          FROM (SELECT r.*,
                       CASE WHEN r.official = r.sender_official THEN 1 ELSE 2 END AS officials,
                       CASE WHEN r.a1 IS NULL THEN 0 WHEN r.a2 IS NULL THEN 1 ELSE 2 END
                         AS agencies
                FROM (SELECT g.*,
                             least(g.official, g.sender_official) AS o1,
                             nullif(greatest(g.official, g.sender_official),
                                    least(g.official, g.sender_official)) AS o2,
                             least(g.official_agency, g.sender_agency) AS a1,
                             nullif(greatest(g.official_agency, g.sender_agency),
                                    least(g.official_agency, g.sender_agency)) AS a2,
                             least(g.device, g.sender_device) AS d1,
                             nullif(greatest(g.device, g.sender_device),
                                    least(g.device, g.sender_device)) AS d2
                      FROM (SELECT e.official, e.device, e.sender_official, e.sender_device,
                                   {agency_of.format(official="e.official")} AS official_agency,
                                   {agency_of.format(official="e.sender_official")}
                                     AS sender_agency,
                                   array_agg(e.n) AS ns, array_agg(e.message_id) AS mids,
                                   array_agg(e.position) AS positions
                            FROM {source} e
                            GROUP BY e.official, e.device, e.sender_official,
                                     e.sender_device) AS g
                      OFFSET 0) AS r
                OFFSET 0) AS s
          OFFSET 0) AS t,
         unnest(t.ns, t.mids, t.positions) AS u(n, message_id, position)"""  # noqa: S608


#: The values of one "message.accepted" event (docs/AUDIT.md section 1): sender
#: official, sender device, recipient official (None for a conversation),
#: message id, ``sent_at`` (ms), ``ciphertext_bytes``, recipient devices (in
#: the entry's order), ``message_kind`` (None: absent) and ``conversation_id``
#: (None: absent).
Accepted = tuple[
    UUID, UUID, UUID | None, UUID, int, int, Sequence[UUID], str | None, UUID | None
]
#: The ``message_kind`` values :class:`AcceptedCodec` writes (others: the general encoder).
MESSAGE_KINDS = ("pairwise", "group", "membership")


#: The constant pieces of "message.accepted" entries of one shape
#: (:meth:`AcceptedCodec._shape`): of the stored form, up to the size, from it to
#: the message id, from it to the time, after it; the same four of the
#: canonical JSON (its last up to the entry's time); and the id references.
_Shape = tuple[bytes, bytes, bytes, bytes, str, str, str, str, dict[int, int]]


class AcceptedCodec:
    """The canonical JSON and stored form of "message.accepted" entries, written
    from a template, like :class:`DeliveredCodec`'s.

    Every committed send writes one in the commit batch's statement, on the
    node's one event loop, and the committer (one batch at a time per lane)
    bounds a node's throughput: through the general :func:`encode_fields`
    (ids found by walking the details, the dict sorted and walked value by
    value) the stored form cost about a tenth of a node's CPU at capacity,
    and the entry's fields as dicts for :func:`canonical_json` (the leaf's
    bytes) about as much as the template's stored form.  The keys, their
    order and the kind are fixed, so both are those constant pieces with the
    values put in: exactly what :func:`canonical_json` and
    :func:`encode_fields` write for the entry (tested against them on random
    events).

    What the sends of one shape share -- sender and device, recipients,
    kind, conversation and the officials' agencies: the header, the id
    references, the JSON's ids, all but the message id, size and time -- is
    written once and kept for the next (up to :data:`SHAPES_KEPT` shapes): a
    pair's or a conversation's messages come in runs.  Shapes are found by
    the ids themselves (asyncpg's UUIDs, as the node's are, hash in C and
    keep their hash); written anew, a shape costs about what the whole
    event did; kept, an event costs a few string formats (docs/PERFORMANCE.md).
    """

    def __init__(self) -> None:
        self._k = k = _key_forms(
            (True, "actor_device"), (False, "actor_official"), (False, "details"),
            (True, "ciphertext_bytes"), (False, "conversation_id"), (False, "message_id"),
            (False, "message_kind"), (False, "recipient_devices"), (False, "sent_at"),
            (False, "kind"), (False, "subject_official"), (False, "time"), (False, "v"))
        self._kind = b"}" + k["kind"] + _quoted_kind("message.accepted")
        self._end = k["time"] + b"\x04" + k["v"] + b"1}"
        self._message_kinds: dict[str | None, bytes] = {None: b""}
        for kind in MESSAGE_KINDS:
            body = _Fields([], "")  # the general encoder's form of the text
            body.value(kind)
            self._message_kinds[kind] = k["message_kind"] + bytes(body.out)
        #: Shapes written, by (sender, device, recipient, recipient devices,
        #: kind, conversation, the two officials' agencies).
        self._shapes: dict[tuple[object, ...], _Shape] = {}

    @staticmethod
    def officials(accepted: Accepted) -> list[UUID]:
        """The officials the event involves, sorted (as the stored form lists them)."""
        sender, recipient = accepted[0], accepted[2]
        if recipient is None or recipient.int == sender.int:
            return [sender]
        return [sender, recipient] if sender.int < recipient.int else [recipient, sender]

    def encode(
        self, accepted: Accepted, agencies: Mapping[UUID, UUID], own_time: str
    ) -> tuple[bytes, bytes]:
        """(canonical JSON, stored form) of one event at ``own_time``
        (:func:`time_text`); ``agencies``: the officials' agencies (an official
        missing from it has none)."""
        ((entry,), (stored,)) = self.encode_all([accepted], agencies, own_time)
        return entry, stored

    def encode_all(
        self, events: Iterable[Accepted], agencies: Mapping[UUID, UUID], own_time: str
    ) -> tuple[list[bytes], list[bytes]]:
        """The canonical JSON and the stored forms of ``events`` (a commit
        batch's), in order; as for :meth:`encode`."""
        shapes = self._shapes
        ending = f'{own_time}","v":1}}'
        entries, out = [], []
        for official, device, recipient, message_id, sent_at, size, devices, kind, conversation \
                in events:
            key = (official, device, recipient, tuple(devices), kind, conversation,
                   agencies.get(official), None if recipient is None else agencies.get(recipient))
            shape = shapes.get(key)
            if shape is None:
                if len(shapes) >= SHAPES_KEPT:
                    shapes.clear()
                shape = shapes[key] = self._shape(
                    official, device, recipient, devices, kind, conversation, agencies)
            (before_size, before_id, before_time, tail,
             json_size, json_id, json_time, json_tail, ref) = shape
            i = ref.get(message_id.int)
            out.append(b"%b%d%b%b%b%d%b" % (
                before_size, size, before_id,
                b"\x03" + message_id.bytes if i is None else _ref_form(i),
                before_time, sent_at, tail))
            entries.append(
                f"{json_size}{size}{json_id}{message_id}{json_time}{sent_at}{json_tail}{ending}"
                .encode())
        return entries, out

    def _shape(
        self, official: UUID, device: UUID, recipient: UUID | None, devices: Sequence[UUID],
        kind: str | None, conversation: UUID | None, agencies: Mapping[UUID, UUID],
    ) -> _Shape:
        """The constant pieces of the events of this shape (see ``_Shape``)."""
        if kind not in self._message_kinds:
            raise ValueError(f"no template for message_kind {kind!r}")
        o = official.int
        r = None if recipient is None else recipient.int
        officials = [o] if r is None or r == o else [o, r] if o < r else [r, o]
        parties = (official,) if recipient is None else (official, recipient)
        scope = sorted({a.int for x in parties if (a := agencies.get(x)) is not None})
        ids = [*officials, *scope, *sorted({d.int for d in devices} | {device.int})]
        ref = {x: i for i, x in enumerate(ids)}
        head = _header(len(ids), len(officials) + len(scope), len(officials))
        head += bytes((_KIND_INDEX["message.accepted"],))
        head += b"".join([x.to_bytes(16, "big") for x in ids])
        k = self._k
        before_size = b"".join((head, k["actor_device"], _ref_form(ref[device.int]),
                                k["actor_official"], _ref_form(ref[o]), k["details"],
                                k["ciphertext_bytes"]))
        before_id = k["message_id"]
        json_id = ',"message_id":"'
        if conversation is not None:
            c = ref.get(conversation.int)
            before_id = b"".join((k["conversation_id"],
                                  b"\x03" + conversation.bytes if c is None else _ref_form(c),
                                  before_id))
            json_id = f',"conversation_id":"{conversation}"{json_id}'
        before_time = b"".join((
            self._message_kinds[kind], k["recipient_devices"], b"[",
            b",".join([_ref_form(ref[d.int]) for d in devices]), b"]", k["sent_at"]))
        json_kind = "" if kind is None else f',"message_kind":"{kind}"'
        listed = ",".join([f'"{d}"' for d in devices])
        json_time = f'"{json_kind},"recipient_devices":[{listed}],"sent_at":'
        tail = self._kind
        json_tail = '},"kind":"message.accepted"'
        if r is not None:
            tail += k["subject_official"] + _ref_form(ref[r])
            json_tail += f',"subject_official":"{recipient}"'
        json_size = (f'{{"actor_device":"{device}","actor_official":"{official}",'
                     '"details":{"ciphertext_bytes":')
        return (before_size, before_id, before_time, tail + self._end,
                json_size, json_id, json_time, json_tail + ',"time":"', ref)


_REF_FORMS = [bytes((1, i)) for i in range(256)]


def _ref_form(i: int) -> bytes:
    """A reference to the row's ``i``-th id, as a stored body writes it."""
    return _REF_FORMS[i] if i < 256 else b"\x02" + i.to_bytes(2, "big")


def _uuid_text(raw: bytes) -> bytes:
    h = raw.hex().encode()
    return h[:8] + b"-" + h[8:12] + b"-" + h[12:16] + b"-" + h[16:20] + b"-" + h[20:]


def _time_bytes(raw: bytes) -> bytes:
    micros = struct.unpack(">q", raw)[0]
    return time_text(_EPOCH + timedelta(microseconds=micros)).encode()


def decode(stored: bytes, at: datetime) -> bytes:
    """The canonical JSON of a stored entry whose row says ``created_at`` = ``at``."""
    k, _, _, o = _layout(stored)
    ids = stored[o + 1 : o + 1 + 16 * k]

    def expand(match: re.Match[bytes]) -> bytes:
        ref1, ref2, quoted, own, phrase, qtime, bare, btime = match.groups()
        if ref1 is not None or ref2 is not None:
            i = int.from_bytes(ref1 or ref2, "big")
            return b'"' + _uuid_text(ids[16 * i : 16 * i + 16]) + b'"'
        if quoted is not None:
            return b'"' + _uuid_text(quoted) + b'"'
        if own is not None:
            return b'"' + time_text(at).encode() + b'"'
        if phrase is not None:
            return PHRASES[phrase[0]].encode()
        if qtime is not None:
            return b'"' + _time_bytes(qtime) + b'"'
        if bare is not None:
            return _uuid_text(bare)
        return _time_bytes(btime)

    return _DECODE.sub(expand, stored[o + 1 + 16 * k :])


def parties(stored: bytes) -> tuple[list[UUID], list[UUID], list[UUID]]:
    """(officials, agencies, devices) a stored entry involves."""
    k, m, n, o = _layout(stored)
    ids = [UUID(bytes=stored[o + 1 + 16 * i : o + 17 + 16 * i]) for i in range(k)]
    return ids[:n], ids[n:m], ids[m:]


def raw_ids(stored: bytes) -> tuple[list[bytes], list[bytes]]:
    """The ids a stored entry involves as 16 raw bytes each: (officials and agencies,
    devices).  What a filter compares against: no UUID objects for every candidate."""
    k, m, _, o = _layout(stored)
    ids = [stored[o + 1 + 16 * i : o + 17 + 16 * i] for i in range(k)]
    return ids[:m], ids[m:]


def kind_of(stored: bytes) -> str | None:
    """The kind, when it is one of :data:`KINDS` (None: read it from the JSON)."""
    code = stored[_layout(stored)[3]]
    return None if code == OTHER_KIND else KINDS[code]


def kind_codes(kinds: Sequence[str]) -> list[int]:
    """The kind bytes to look for (OTHER_KIND stands for every kind not in KINDS)."""
    return sorted({_KIND_INDEX.get(kind, OTHER_KIND) for kind in kinds})


def leaf_hash_of(stored: bytes, at: datetime) -> bytes:
    """RFC 9162 leaf hash of a stored entry: SHA-256(0x00 || canonical JSON)."""
    return sha256(b"\x00" + decode(stored, at)).digest()


# --- packs: up to 16 consecutive leaves in one row of audit_packs -------------------

#: Most leaves in one pack (a row of ``audit_packs``; its CHECK allows 16).
PACK = 16
_RECORD = struct.Struct(">qqH")


def pack_events(records: Sequence[tuple[int, datetime, bytes]]) -> bytes:
    """``events`` of a pack: per event int8 id, int8 microseconds, uint16 length, stored entry."""
    out = bytearray()
    for event_id, at, stored in records:
        if len(stored) > 0xFFFF:
            raise ValueError("a stored audit entry is at most 65,535 bytes")
        out += _RECORD.pack(event_id, micros_of(at), len(stored))
        out += stored
    return bytes(out)


def scan_events(events: bytes) -> Iterator[tuple[int, int, bytes]]:
    """The (id, created_at in microseconds since 1970, stored entry) of each event of a
    pack, in leaf order: what a filter reads before it keeps an event (no datetime)."""
    pos = 0
    while pos < len(events):
        event_id, micros, length = _RECORD.unpack_from(events, pos)
        pos += _RECORD.size
        yield event_id, micros, events[pos : pos + length]
        pos += length


def scan_involving(
    events: bytes, keys: Iterable[bytes]
) -> Iterator[tuple[int, int, int, bytes]]:
    """(position in the pack, id, microseconds, stored entry) of the events of a pack
    whose bytes hold one of ``keys`` (raw 16-byte ids), found by a byte search:
    the other events are passed over unread.  A hit may be a UUID in the body
    rather than an id the event involves: the caller still checks each one."""
    hits = []
    for key in keys:
        at = events.find(key)
        while at >= 0:
            hits.append(at)
            at = events.find(key, at + 1)
    if not hits:
        return
    hits.sort()
    h = 0
    pos = 0
    i = 0
    while pos < len(events) and h < len(hits):
        event_id, micros, length = _RECORD.unpack_from(events, pos)
        end = pos + _RECORD.size + length
        if hits[h] < end:
            yield i, event_id, micros, events[pos + _RECORD.size : end]
            while h < len(hits) and hits[h] < end:
                h += 1
        pos = end
        i += 1


def time_of(micros: int) -> datetime:
    """The datetime of ``micros`` (microseconds since 1970, UTC)."""
    return _EPOCH + timedelta(microseconds=micros)


def micros_of(at: datetime) -> int:
    """Microseconds since 1970 of ``at`` (the inverse of :func:`time_of`)."""
    return (at - _EPOCH) // timedelta(microseconds=1)


def unpack_events(events: bytes) -> list[tuple[int, datetime, bytes]]:
    """The (id, created_at, stored entry) of each event of a pack, in leaf order."""
    return [(event_id, time_of(micros), stored) for event_id, micros, stored in scan_events(events)]
