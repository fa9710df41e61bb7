"""Messages and per-device inboxes.

A batch of sends from many connections is written in one transaction (group
commit). Positions in a device's inbox come from ``devices.inbox_head``,
bumped under that row's lock in device-id order (so concurrent batches on
several nodes cannot deadlock), which makes each inbox's positions
contiguous and committed in order: a reader that has seen position P never
later finds a smaller one appear.
"""

import os
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, NamedTuple
from uuid import UUID

import asyncpg
from asyncpg.pgproto.pgproto import UUID as PgUUID

from gchat.store.audit import ROW_EVENTS, EncodedEvents, insert_events
from gchat.store.audit_codec import delivered_sql, time_text
from gchat.store.database import Executor
from gchat.store.policies import SendStanding, standings_parameters, unchanged_cte

#: The last 80 bits of a version-7 id: random but for the version's 4 bits
#: and the variant's 2, which are set to 0b0111 and 0b10.
_V7_RANDOM = 0x0FFF_3FFF_FFFF_FFFF_FFFF
_V7_VERSION_VARIANT = 0x7000_8000_0000_0000_0000


#: Ids whose random bits one ``os.urandom`` call draws.
_IDS_PER_DRAW = 256


class MessageIds:
    """Makes new message ids: time-ordered (version 7, RFC 9562), as asyncpg's own UUID type.

    An id's first 48 bits are the Unix time in milliseconds and 74 of the
    others random, so ids made close in time are close in order: each
    message's entries in the ``messages`` primary key and the ``inbox``
    index by message land on the index's newest pages, which stay cached,
    instead of on a random page of an index that grows with every message
    kept for the retention period (with 3,000,000 messages kept, a
    128-send batch cost PostgreSQL 0.82x the CPU of random version-4 ids,
    its acks 0.87x: docs/PERFORMANCE.md). The id tells no one anything the
    message's ``sent_at`` does not; 74 random bits keep it unguessable.

    The random bits of ``_IDS_PER_DRAW`` ids come from one ``os.urandom``
    call (a ``getrandom`` system call each: half an id's 1.5 us when made
    one at a time), kept in this object until used; each id is used once.

    asyncpg's UUID type is a ``uuid.UUID`` (equal, hashed and encoded
    alike), made in C from the 16 bytes, and asyncpg writes it to
    PostgreSQL without calling back into Python, where a ``uuid.UUID`` costs
    a ``UUID.__init__`` and, for each of the three parameters a send writes
    it in, a ``.bytes``.
    """

    __slots__ = ("_lows",)

    def __init__(self) -> None:
        #: The last 80 bits of ids to come, version and variant set.
        self._lows: list[int] = []

    def new(self) -> UUID:
        lows = self._lows
        if not lows:
            drawn = os.urandom(10 * _IDS_PER_DRAW)
            lows.extend(
                int.from_bytes(drawn[at : at + 10], "big") & _V7_RANDOM | _V7_VERSION_VARIANT
                for at in range(0, len(drawn), 10)
            )
        made: UUID = PgUUID(
            (((time.time_ns() // 1_000_000) << 80) | lows.pop()).to_bytes(16, "big")
        )
        return made


class StandingsChanged(Exception):
    """The standings a send check read changed before the store: nothing was stored."""


@dataclass(slots=True)
class NewMessage:
    """A validated send, ready to store.

    Not frozen: a frozen dataclass's ``__init__`` sets each of its 13
    fields through ``object.__setattr__`` (2.4 us against 0.6 us here), once
    per send. Nothing changes it after the handler made it, except the
    store filling ``fanned_out`` and ``placed``.
    """

    message_id: UUID
    sender_device: UUID
    sender_official: UUID
    recipient_official: UUID | None
    client_message_id: str
    sent_at: datetime
    #: (device id, ciphertext); a None ciphertext means "this message's body".
    envelopes: list[tuple[UUID, bytes | None]]
    # --- conversations (0004_groups.sql) ---
    #: "pairwise", "group" (a sender-key send) or "membership" (a signed event).
    kind: str = "pairwise"
    #: With a conversation, every active device of its members gets an inbox
    #: row pointing at ``body`` (expanded in SQL at commit time); a "group"
    #: send skips the sending device and needs the sender still a member.
    conversation_id: UUID | None = None
    #: Stored once in message_bodies (group sends, membership events).
    body: bytes | None = None
    #: A group send: the membership seq the sender encrypted its sender key for.
    conversation_seq: int | None = None
    #: Filled by store_batch: the member devices the conversation expanded to.
    fanned_out: list[UUID] = field(default_factory=list)
    #: Filled by store_batch: each inbox row written, as (device, position,
    #: ciphertext; None for this message's body), so the node can hand them
    #: to connections it holds without reading them back.
    placed: list[tuple[UUID, int, bytes | None]] = field(default_factory=list)


@dataclass(slots=True)
class StoredMessage:
    """What the sender is told: the message id and time, new or original.

    Not frozen, for the reason ``NewMessage`` is not (0.6 against 0.2 us,
    once per send); nothing changes one once made.
    """

    message_id: UUID
    sent_at: datetime
    duplicate: bool


class InboxEntry(NamedTuple):
    """One envelope of a device's inbox, as it is pushed.

    A named tuple, not a dataclass: a drain makes one per envelope, and a
    frozen dataclass's ``__init__`` (plus the row copied into a dict for
    it) cost about 5% of the node there; this one is made from the row's
    columns as they come (:func:`fetch_inboxes` selects them in this order).
    """

    position: int
    message_id: UUID
    sender_official: UUID
    sender_device: UUID
    sent_at: datetime
    ciphertext: bytes
    kind: str = "pairwise"
    conversation_id: UUID | None = None


async def store_batch(
    conn: Executor,
    batch: list[NewMessage],
    expires_at: datetime,
    accepted: EncodedEvents | None = None,
    standings: Mapping[UUID, SendStanding] | None = None,
) -> list[StoredMessage]:
    """Store a batch (inside the caller's transaction); one result per send.

    A send whose (sender device, client message id) is already stored, in an
    earlier batch or earlier in this one, stores nothing and gets the first
    send's id and time back. ``accepted`` holds one audit event per send,
    in order; those of the sends stored are appended to the audit log, by
    the same statement as pairwise messages (a retry logs nothing).

    ``standings``: the ones the batch's check decided on, read before this
    call and outside its transaction. A pairwise batch is then written by one
    statement that is its own transaction (``conn`` in no transaction, a
    pinned connection) and that first reads them again: if they changed,
    it writes nothing and :class:`StandingsChanged` is raised, so the
    check must be made again. Conversation sends need a transaction.
    """
    first: dict[tuple[UUID, str], NewMessage] = {}
    for message in batch:
        first.setdefault((message.sender_device, message.client_message_id), message)
    unique = list(first.values())
    conversations = sorted({m.conversation_id for m in unique if m.conversation_id})
    if conversations and standings is not None:
        raise ValueError("conversation sends are checked and stored in one transaction")
    if conversations:
        # Membership stays as it is until this batch commits (a change waits
        # for it, or it waits for the change): lock order conversations, then
        # devices, as in every membership transaction.
        await conn.execute(
            """SELECT id FROM conversations WHERE id = ANY($1::uuid[])
               ORDER BY id FOR SHARE""",
            conversations,
        )
    if conversations:
        inserted = await conn.fetch(
            """INSERT INTO messages (id, sender_device, sender_official, recipient_official,
                                     client_message_id, sent_at, kind, conversation_id)
               SELECT * FROM unnest($1::uuid[], $2::uuid[], $3::uuid[], $4::uuid[],
                                    $5::text[], $6::timestamptz[], $7::text[], $8::uuid[])
               ON CONFLICT (sender_device, client_message_id) DO NOTHING
               RETURNING id""",
            *_message_columns(unique),
        )
        new_ids = {row["id"] for row in inserted}
    else:  # the common case: messages, inbox rows and audit events in one statement
        written = await _store_and_enqueue(conn, unique, expires_at, batch, accepted, standings)
        # Every send new (none a retry, none with a shared body): each its own answer.
        if len(written) == len(batch) and all(m.body is None for m in batch):
            return [StoredMessage(m.message_id, m.sent_at, False) for m in batch]
        new_ids = set(written)
    fresh = [m for m in unique if m.message_id in new_ids]
    stored = {
        (m.sender_device, m.client_message_id): StoredMessage(m.message_id, m.sent_at, False)
        for m in fresh
    }
    repeats = [m for m in unique if m.message_id not in new_ids]
    if repeats:
        rows = await conn.fetch(
            """SELECT m.id, m.sender_device, m.client_message_id, m.sent_at
               FROM messages m
               JOIN unnest($1::uuid[], $2::text[]) AS r(device, cid)
                 ON m.sender_device = r.device AND m.client_message_id = r.cid""",
            [m.sender_device for m in repeats],
            [m.client_message_id for m in repeats],
        )
        for row in rows:
            key = (row["sender_device"], row["client_message_id"])
            stored[key] = StoredMessage(row["id"], row["sent_at"], True)
    if fresh:
        bodies = [m for m in fresh if m.body is not None]
        if bodies:
            await conn.execute(
                """INSERT INTO message_bodies (message_id, body)
                   SELECT * FROM unnest($1::uuid[], $2::bytea[])""",
                [m.message_id for m in bodies],
                [m.body for m in bodies],
            )
        if conversations:
            await _enqueue_with_conversations(conn, fresh, expires_at)
            if accepted is not None:
                kept = [i for i, m in enumerate(batch) if m.message_id in new_ids]
                await insert_events(
                    conn,
                    EncodedEvents(
                        accepted.at,
                        [accepted.hashes[i] for i in kept],
                        [accepted.entries[i] for i in kept],
                    ),
                )
    results = []
    for message in batch:
        original = stored[(message.sender_device, message.client_message_id)]
        is_first = first[(message.sender_device, message.client_message_id)] is message
        if not is_first:
            original = StoredMessage(original.message_id, original.sent_at, True)
        results.append(original)
    return results


def _message_columns(messages: list[NewMessage]) -> list[list[Any]]:
    return [
        [m.message_id for m in messages],
        [m.sender_device for m in messages],
        [m.sender_official for m in messages],
        [m.recipient_official for m in messages],
        [m.client_message_id for m in messages],
        [m.sent_at for m in messages],
        [m.kind for m in messages],
        [m.conversation_id for m in messages],
    ]


# The end of both enqueue statements: given ``per_device`` (device_id, n,
# and the arrays named in ``carried``), lock those device rows in id order
# (so concurrent batches on several nodes cannot deadlock) and bump their
# inbox heads by n; ``bumped`` has each device's base position and the arrays.
def _lock_and_bump(carried: list[str]) -> str:
    from_p = ", ".join(f"p.{name}" for name in carried)
    from_l = ", ".join(f"l.{name}" for name in carried)
    return f"""locked AS (
    SELECT d.id, p.n, {from_p} FROM per_device p JOIN devices d ON d.id = p.device_id
    ORDER BY d.id FOR NO KEY UPDATE OF d),
bumped AS (
    UPDATE devices d SET inbox_head = d.inbox_head + l.n
    FROM locked l WHERE d.id = l.id
    RETURNING d.id, d.inbox_head - l.n AS base, {from_l})
"""  # noqa: S608 - constant SQL


# Pairwise sends in one statement: insert the messages (a retry's client id
# inserts nothing), then append the envelopes of those inserted to their
# devices' inboxes. Device rows are locked in id order and their inbox heads
# bumped, as in ``_FAN_OUT``, so positions stay contiguous and in commit
# order; a device that vanished since the check gets nothing. The
# "message.accepted" audit events of the messages inserted go in with
# them, as one audit backlog row (per ``ROW_EVENTS``, migration 0021:
# ``_AUDITED_ROW``), so a send batch is one statement after its check. Every join is
# on a primary key, so the plan does not depend on table statistics.
# Nothing is inserted unless the standings given ($14-$18, none: any) are
# still those read (``unchanged``); ``ok`` says whether they were.
#
# What it answers is one row of numbers: the messages inserted and the
# envelopes placed, each by its place in the parameters, and each
# envelope's position. The node has the ids, devices and ciphertexts
# already; read back as a row per envelope and per message, they cost it a
# record and two or three UUIDs made each (about 0.5 us a message), and a
# map from id to message to find each one's own. A device's envelopes are
# gathered in batch order by two ordered aggregates, their places and
# ciphertexts, and each one's message id is looked up in $1 through $9
# (fixed-width elements: no walk along the array). PostgreSQL 15 sorts for
# each ordered aggregate of each device on its own: a third, for the ids,
# cost it about 8% more of the statement (a throw-away timing, 13:10).
#
# The parameters carry each value once, in the form asyncpg encodes
# cheaply: it makes a few ``collections.abc`` checks per element of an
# array (0.18-0.33 us of the node's CPU for an id, a number or a hash, 0.76
# for a time; docs/PERFORMANCE.md), nothing per character of a text or
# byte of a bytea. So an envelope and an event name their message by its
# place in $1 (``u.o``, ``a.o``), not by its id again; the client message
# ids travel as one text (``a,b,...``: the protocol allows no comma in
# one) and the leaf hashes as one bytea (32 bytes each); kind and
# conversation are a pairwise message's own. The times go as seconds since
# the epoch (``float8``, half a time's cost): a double holds today's
# times to an eighth of a microsecond, and ``to_timestamp`` rounds them back to
# the very microsecond (checked for 300,000 times from 1990 to 2070).
#
# The messages inserted (``kept``: their places in $1), then the envelopes
# and events of those, are picked in one of two ways (``:inserted_m``,
# ``:inserted_e``, ``:inserted_a``). A join is a nested loop (pinned
# sessions have no hash join) that compares every row with every inserted
# message: nothing to set up, but quadratic, a fifth of the statement at
# 100 sends (docs/PERFORMANCE.md). A hashed SubPlan (the ``IS TRUE`` keeps
# PostgreSQL from making it a join) builds one hash table per execution:
# linear, for a set-up that costs more than a few comparisons.
_STORE_AND_ENQUEUE_SQL = f"""
WITH {unchanged_cte(14)},
ins AS (
    INSERT INTO messages (id, sender_device, sender_official, recipient_official,
                          client_message_id, sent_at)
    SELECT m.id, m.sd, m.so, m.ro, m.cid, to_timestamp(m.at)
    FROM unnest($1::uuid[], $2::uuid[], $3::uuid[], $4::uuid[],
                string_to_array($5, ','), $6::float8[]) AS m(id, sd, so, ro, cid, at)
    WHERE (SELECT ok FROM unchanged) :not_stored
    RETURNING id),
kept AS (
    SELECT m.o FROM unnest($1::uuid[]) WITH ORDINALITY AS m(id, o)
    :inserted_m),
per_device AS (
    SELECT u.d AS device_id, count(*) AS n,
           array_agg(u.k ORDER BY u.k) AS ks, array_agg(u.c ORDER BY u.k) AS cts
    FROM unnest($7::uuid[], $8::bytea[], $9::int[]) WITH ORDINALITY AS u(d, c, o, k)
    :inserted_e
    GROUP BY u.d),
{_lock_and_bump(["ks", "cts"])},
placed AS (
    INSERT INTO inbox (device_id, position, message_id, ciphertext, expires_at)
    SELECT b.id, b.base + x.i, ($1::uuid[])[($9::int[])[x.k]], x.c, $10
    FROM bumped b, unnest(b.ks, b.cts) WITH ORDINALITY AS x(k, c, i)),
picked AS (
    SELECT a.o, a.e FROM unnest($13::bytea[]) WITH ORDINALITY AS a(e, o)
    :inserted_a),
audited AS (:audited)
SELECT (SELECT ok FROM unchanged), (SELECT array_agg(o) FROM kept), p.ks, p.positions
FROM (SELECT array_agg(x.k) AS ks, array_agg(b.base + x.i) AS positions
      FROM bumped b, unnest(b.ks) WITH ORDINALITY AS x(k, i)) p
"""  # noqa: S608 - constant SQL

# The batch's "message.accepted" events (``picked``: those of the messages
# inserted) as one backlog row. When every message was inserted, the row is
# the parameters as they are, and ``picked`` is never read: aggregating the
# events in order (two sorts) cost a lone send's statement about 10 us of
# PostgreSQL more than the row per event did (EXPLAIN ANALYZE, 13:30).
_AUDITED_ROW = """
    INSERT INTO audit_backlog (created_at, leaf_hashes, entries)
    SELECT $11,
           CASE WHEN w.n = cardinality($13::bytea[]) THEN $12::bytea
                ELSE (SELECT string_agg(substring($12::bytea FROM 32 * o::int - 31 FOR 32),
                                        ''::bytea ORDER BY o) FROM picked) END,
           CASE WHEN w.n = cardinality($13::bytea[]) THEN $13::bytea[]
                ELSE ARRAY(SELECT e FROM picked ORDER BY o) END
    FROM (SELECT count(*) AS n FROM kept) AS w
    WHERE w.n > 0 AND cardinality($13::bytea[]) > 0"""
# More events than a backlog row holds (a batch larger than ``ROW_EVENTS``):
# rows of ``ROW_EVENTS``, in order.
_AUDITED_ROWS = f"""
    INSERT INTO audit_backlog (created_at, leaf_hashes, entries)
    SELECT $11, string_agg(substring($12::bytea FROM 32 * o::int - 31 FOR 32), ''::bytea
                           ORDER BY o),
           array_agg(e ORDER BY o)
    FROM picked GROUP BY (o - 1) / {ROW_EVENTS} ORDER BY (o - 1) / {ROW_EVENTS}"""  # noqa: S608

#: Batches of up to this many envelopes and events each are written with
#: the join (at most 16 comparisons each), larger ones with the hash.
_FEW = 4

# A message already stored (a retry's client id) is skipped in one of two
# ways (``:not_stored``). The statement that is its own transaction (given
# standings) looks it up and inserts the rest as plain rows. ``ON CONFLICT
# DO NOTHING`` would instead insert each row speculatively: a lock taken
# and released per row and one WAL record more to confirm it (10.25
# records and 1,450 bytes of WAL per send against 11.26 and 1,519 for 100
# sends; its CPU the same within noise: docs/PERFORMANCE.md, pgsend). A
# send of the same client id by another transaction still in flight is
# not seen by the look-up; the
# unique index then makes the statement fail whole (it wrote nothing), and
# it runs again with ``ON CONFLICT``, which waits for that transaction and
# skips the message if it committed. Inside the caller's transaction a
# failure would end the transaction, so there the statement is always the
# ``ON CONFLICT`` one. The look-up is a subquery per send, not ``NOT
# EXISTS``: PostgreSQL makes that an anti-join, which a generic plan made
# while ``messages`` was empty ran as a full read of its unique index, once
# per batch (a 100-send batch took 80 ms once 20,000 messages were kept).
_NOT_STORED = """
      AND (SELECT true FROM messages x
           WHERE x.sender_device = m.sd AND x.client_message_id = m.cid) IS NULL"""
_ON_CONFLICT = """
    ON CONFLICT (sender_device, client_message_id) DO NOTHING"""
#: The unique index of (sender device, client message id).
_CLIENT_ID_KEY = "messages_sender_device_client_message_id_key"

#: The statement for larger batches (any batch, in fact: both are correct).
_STORE_AND_ENQUEUE_MANY = (
    _STORE_AND_ENQUEUE_SQL.replace(":not_stored", _NOT_STORED)
    .replace(":inserted_m", "WHERE (m.id = ANY (SELECT id FROM ins)) IS TRUE")
    .replace(":inserted_e", "WHERE (u.o = ANY (SELECT o FROM kept)) IS TRUE")
    .replace(":inserted_a", "WHERE (a.o = ANY (SELECT o FROM kept)) IS TRUE")
)
_STORE_AND_ENQUEUE = _STORE_AND_ENQUEUE_MANY.replace(":audited", _AUDITED_ROW)
#: The statement for batches of more than ``ROW_EVENTS`` sends.
_STORE_AND_ENQUEUE_LARGE = _STORE_AND_ENQUEUE_MANY.replace(":audited", _AUDITED_ROWS)
#: The statement for batches of up to ``_FEW`` (a lone send at low load).
_STORE_AND_ENQUEUE_FEW = (
    _STORE_AND_ENQUEUE_SQL.replace(":not_stored", _NOT_STORED)
    .replace(":inserted_m", "JOIN ins ON ins.id = m.id")
    .replace(":inserted_e", "JOIN kept ON kept.o = u.o")
    .replace(":inserted_a", "JOIN kept ON kept.o = a.o")
    .replace(":audited", _AUDITED_ROW)
)
#: Each of the three with ``ON CONFLICT``: in a transaction, and after a race.
_SKIPPING_CONFLICTS = {
    statement: statement.replace(_NOT_STORED, _ON_CONFLICT)
    for statement in (_STORE_AND_ENQUEUE_FEW, _STORE_AND_ENQUEUE, _STORE_AND_ENQUEUE_LARGE)
}


async def _store_and_enqueue(
    conn: Executor,
    messages: list[NewMessage],
    expires_at: datetime,
    batch: list[NewMessage],
    accepted: EncodedEvents | None,
    standings: Mapping[UUID, SendStanding] | None,
) -> list[UUID]:
    """Insert these messages (pairwise, each send of ``batch`` once), their
    envelopes and the ``accepted`` events (one per send of ``batch``) of
    those inserted, if ``standings`` are unchanged; returns the ids
    inserted, each once (and fills each inserted message's ``placed``)."""
    envelopes = [
        (device, ciphertext, order)
        for order, m in enumerate(messages, 1)
        for device, ciphertext in m.envelopes
    ]
    cids = [m.client_message_id for m in messages]
    joined = ",".join(cids)
    if joined.count(",") != len(cids) - 1 or "" in cids:
        raise ValueError("a client message id is empty or holds a comma")
    hashes: list[bytes] = []
    entries: list[bytes] = []
    if accepted is not None:  # the events of ``messages``, in their order
        hashes, entries = accepted.hashes, accepted.entries
        if len(messages) != len(batch):
            kept = {id(m) for m in messages}
            picked = [i for i, m in enumerate(batch) if id(m) in kept]
            hashes, entries = [hashes[i] for i in picked], [entries[i] for i in picked]
    leaves = b"".join(hashes)
    if len(leaves) != 32 * len(hashes):
        raise ValueError("a leaf hash is not 32 bytes")
    few = len(envelopes) <= _FEW and len(messages) <= _FEW
    statement = (
        _STORE_AND_ENQUEUE_FEW if few
        else _STORE_AND_ENQUEUE if len(entries) <= ROW_EVENTS else _STORE_AND_ENQUEUE_LARGE
    )
    arguments = (
        [m.message_id for m in messages],
        [m.sender_device for m in messages],
        [m.sender_official for m in messages],
        [m.recipient_official for m in messages],
        joined,
        [m.sent_at.timestamp() for m in messages],
        [e[0] for e in envelopes],
        [e[1] for e in envelopes],
        [e[2] for e in envelopes],
        expires_at,
        accepted.at if accepted is not None else expires_at,
        leaves,
        entries,
        *standings_parameters(standings or {}),
    )
    in_transaction = not isinstance(conn, asyncpg.Pool) and conn.is_in_transaction()
    if in_transaction:  # the caller's, which a failure would end
        statement = _SKIPPING_CONFLICTS[statement]
    try:
        ok, kept, placed, positions = await conn.fetchrow(statement, *arguments)
    except asyncpg.UniqueViolationError as error:
        if in_transaction or error.constraint_name != _CLIENT_ID_KEY:
            raise
        # A send of one of these client ids committed meanwhile (see ``_NOT_STORED``).
        ok, kept, placed, positions = await conn.fetchrow(
            _SKIPPING_CONFLICTS[statement], *arguments
        )
    if not ok:
        raise StandingsChanged()
    # Each envelope placed, by its place in ``envelopes``: one device's
    # positions grow with the batch's order, which ``ORDER BY u.k`` made.
    for k, position in zip(placed or (), positions or (), strict=True):
        device, ciphertext, order = envelopes[k - 1]
        messages[order - 1].placed.append((device, position, ciphertext))
    return [messages[o - 1].message_id for o in kept or ()]


# One statement fans a whole batch out: the pairwise envelopes as given, and
# every conversation message expanded to its members' active devices (minus
# the sending device for a group send, whose sender must still be a member).
# Device rows are locked in id order and their inbox heads bumped, exactly
# as pairwise sends do, so positions stay contiguous and in commit order.
_FAN_OUT = f"""
WITH targets AS MATERIALIZED (
    SELECT e.d AS device_id, e.m AS message_id, e.c AS ciphertext, e.o AS ord
    FROM unnest($1::uuid[], $2::uuid[], $3::bytea[], $4::int[]) AS e(d, m, c, o)
    UNION ALL
    SELECT dv.id, g.m, NULL::bytea, g.o
    FROM unnest($5::uuid[], $6::uuid[], $7::uuid[], $8::uuid[], $9::boolean[], $10::int[])
         AS g(m, conv, sender_device, sender_official, is_group, o)
    JOIN conversation_members cm ON cm.conversation_id = g.conv
    JOIN devices dv ON dv.official_id = cm.official_id AND dv.status = 'active'
    WHERE NOT g.is_group
       OR (dv.id <> g.sender_device
           AND EXISTS (SELECT 1 FROM conversation_members s
                       WHERE s.conversation_id = g.conv AND s.official_id = g.sender_official))
),
per_device AS (
    SELECT device_id, count(*) AS n,
           array_agg(message_id ORDER BY ord) AS mids,
           array_agg(ciphertext ORDER BY ord) AS cts
    FROM targets GROUP BY device_id),
{_lock_and_bump(["mids", "cts"])}
INSERT INTO inbox (device_id, position, message_id, ciphertext, expires_at)
SELECT b.id, b.base + u.k, u.m, u.c, $11
FROM bumped b, unnest(b.mids, b.cts) WITH ORDINALITY AS u(m, c, k)
RETURNING device_id, message_id, position, ciphertext IS NULL AS shared
"""  # noqa: S608 - constant SQL


async def _enqueue_with_conversations(
    conn: Executor, messages: list[NewMessage], expires_at: datetime
) -> None:
    """Like ``_store_and_enqueue``, with conversation messages expanded to their members."""
    pairwise = [
        (device, m.message_id, ciphertext, order)
        for order, m in enumerate(messages)
        for device, ciphertext in m.envelopes
    ]
    shared = [(order, m) for order, m in enumerate(messages) if m.conversation_id]
    rows = await conn.fetch(
        _FAN_OUT,
        [p[0] for p in pairwise],
        [p[1] for p in pairwise],
        [p[2] for p in pairwise],
        [p[3] for p in pairwise],
        [m.message_id for _, m in shared],
        [m.conversation_id for _, m in shared],
        [m.sender_device for _, m in shared],
        [m.sender_official for _, m in shared],
        [m.kind == "group" for _, m in shared],
        [order for order, _ in shared],
        expires_at,
    )
    by_id = {m.message_id: m for _, m in shared}
    every = {m.message_id: m for m in messages}
    for row in rows:
        message = by_id.get(row["message_id"])
        if message is not None:
            message.fanned_out.append(row["device_id"])
        owner = every[row["message_id"]]
        ciphertext = None if row["shared"] else dict(owner.envelopes)[row["device_id"]]
        owner.placed.append((row["device_id"], row["position"], ciphertext))


async def fetch_inboxes(
    db: Executor, requests: Sequence[tuple[UUID, int, int]]
) -> list[list[InboxEntry]]:
    """For each (device, after, limit): its envelopes after ``after``, in order.

    One statement for any number of devices: a node reads the inboxes of
    every device a commit batch woke at once.
    """
    rows = await db.fetch(
        """SELECT r.n, e.* FROM unnest($1::uuid[], $2::bigint[], $3::int[])
                WITH ORDINALITY AS r(device_id, after, lim, n)
           CROSS JOIN LATERAL (
               SELECT i.position, i.message_id, m.sender_official, m.sender_device, m.sent_at,
                      COALESCE(i.ciphertext, b.body) AS ciphertext, m.kind, m.conversation_id
               FROM inbox i JOIN messages m ON m.id = i.message_id
               LEFT JOIN message_bodies b
                 ON i.ciphertext IS NULL AND b.message_id = i.message_id
               WHERE i.device_id = r.device_id AND i.position > r.after
                 AND i.expires_at > now()
                 AND (i.ciphertext IS NOT NULL OR b.body IS NOT NULL)
               ORDER BY i.position LIMIT r.lim) e
           ORDER BY r.n, e.position""",
        [device for device, _, _ in requests],
        [after for _, after, _ in requests],
        [limit for _, _, limit in requests],
    )
    found: list[list[InboxEntry]] = [[] for _ in requests]
    make = InboxEntry._make
    for row in rows:  # (n, then InboxEntry's fields in order)
        found[row[0] - 1].append(make(row[1:]))
    return found


# An ack batch's delete. Its acks are given as arrays of one element per
# ack ($3: the acking device; $4: its official) and of one per position
# acked ($1: the ack's place in those, from 1; $2: the position), so a row
# finds its ack's device, official and agency by subscript, and asyncpg
# writes a number, not an id, per position. What comes back is a row per ack
# that deleted something: its place, how many rows it deleted, and the
# message ids of those that pointed at a shared body.
_ACK_DELETED = """d AS (
    DELETE FROM inbox i USING unnest($1::int[], $2::bigint[]) AS a(k, position)
    WHERE i.device_id = ($3::uuid[])[a.k] AND i.position = a.position
    RETURNING a.k, i.message_id, i.ciphertext IS NULL AS shared)"""
_ACK_ANSWER = """SELECT k, count(*)::int AS deleted,
       array_agg(message_id) FILTER (WHERE shared) AS shared
FROM d GROUP BY k"""

#: The delete when nothing is audited (``audit_enabled`` off).
ACK_DELETE = f"WITH {_ACK_DELETED}\n{_ACK_ANSWER}"

#: An ack batch's delete with its "message.delivered" audit events, in one
#: statement, autocommitted: no transaction stays open while the node's loop
#: turns (as a DELETE, the node's encoding of its rows, then the events'
#: INSERT did, "idle in transaction" most of its time; docs/PERFORMANCE.md,
#: "acks"). The events' bytes are made in SQL from the deleted rows
#: (:func:`audit_codec.delivered_sql`, tested against the node's encoder),
#: in the order of the positions given, and written as backlog rows of up to
#: ``ROW_EVENTS`` (by the positions' places: a row of fewer if some deleted
#: nothing) at the node's time ($5; $6 as entries write it), as
#: :func:`insert_events` writes them. The officials' agencies are looked up
#: once per pair of devices, not per row (a draining device acks hundreds of
#: one sender's envelopes at once; a relay's batch, two or three of each
#: pair's), each by primary key so that no plan depends on statistics.
#: An official's agency, looked up by primary key (no plan on statistics).
_AGENCY_OF = "(SELECT o.agency_id FROM officials o WHERE o.id = {official})"
ACK_DELETE_AUDITED = f"""WITH d AS (
    DELETE FROM inbox i
    USING unnest($1::int[], $2::bigint[]) WITH ORDINALITY AS a(k, position, n), messages m
    WHERE i.device_id = ($3::uuid[])[a.k] AND i.position = a.position
      AND m.id = i.message_id
    RETURNING a.k, a.n, i.device_id, i.message_id, i.position,
              i.ciphertext IS NULL AS shared, m.sender_official, m.sender_device),
events AS (
    SELECT d.n, ($4::uuid[])[d.k] AS official, d.device_id AS device, d.message_id,
           d.position, d.sender_official, d.sender_device
    FROM d),
entries AS ({delivered_sql("events", "$6", _AGENCY_OF)}),
audited AS (
    INSERT INTO audit_backlog (created_at, leaf_hashes, entries)
    SELECT $5, string_agg(leaf_hash, ''::bytea ORDER BY n), array_agg(entry ORDER BY n)
    FROM entries GROUP BY (n - 1) / {ROW_EVENTS} ORDER BY (n - 1) / {ROW_EVENTS})
{_ACK_ANSWER}"""  # noqa: S608 - constant SQL


async def delete_acked_many(
    db: Executor,
    acks: Sequence[tuple[UUID, UUID, Sequence[int]]],
    audited_at: datetime | None = None,
) -> list[int]:
    """Delete the envelopes of each ack (device, its official, positions) in one
    statement; returns how many rows each ack deleted.

    An ack names the acking device's own envelopes, so no device can delete
    another's. With ``audited_at`` the statement also appends one
    "message.delivered" audit event per row deleted, at that time
    (:data:`ACK_DELETE_AUDITED`), the device's official as its actor. A
    shared body (group send, membership event) goes with its last inbox row.
    Call it outside a transaction (with the pool): the body check is its own
    statement after the delete committed, so of two devices acking the last
    two rows at once, the later check sees both deletes and drops the body.
    Pass the pinned pool (``Database.pinned``): the delete's plan must not
    scan the inbox.
    """
    places = [k for k, (_, _, positions) in enumerate(acks, 1) for _ in positions]
    positions = [position for _, _, acked in acks for position in acked]
    devices = [device for device, _, _ in acks]
    if audited_at is None:
        rows = await db.fetch(ACK_DELETE, places, positions, devices)
    else:
        rows = await db.fetch(
            ACK_DELETE_AUDITED, places, positions, devices, [official for _, official, _ in acks],
            audited_at, time_text(audited_at))
    deleted = [0] * len(acks)
    shared = set()
    for k, count, bodies in rows:
        deleted[k - 1] = count
        if bodies:
            shared.update(bodies)
    if shared:
        await db.execute(
            """DELETE FROM message_bodies b WHERE b.message_id = ANY($1::uuid[])
               AND NOT EXISTS (SELECT 1 FROM inbox i WHERE i.message_id = b.message_id)""",
            list(shared),
        )
    return deleted


async def expire(db: Executor, retention_cutoff: datetime) -> tuple[int, int]:
    """Drop undelivered envelopes past their expiry and old message metadata."""
    envelopes = await db.execute("DELETE FROM inbox WHERE expires_at <= now()")
    await db.execute(  # shared bodies whose last delivery expired (or never had one)
        """DELETE FROM message_bodies b
           WHERE NOT EXISTS (SELECT 1 FROM inbox i WHERE i.message_id = b.message_id)"""
    )
    messages = await db.execute(
        """DELETE FROM messages m WHERE m.sent_at < $1
           AND NOT EXISTS (SELECT 1 FROM inbox i WHERE i.message_id = m.id)""",
        retention_cutoff,
    )
    return int(envelopes.split()[-1]), int(messages.split()[-1])


async def inbox_size_estimate(db: Executor) -> int:
    """Envelopes in all inboxes, from PostgreSQL's statistics (no table scan)."""
    value = await db.fetchval("SELECT n_live_tup FROM pg_stat_user_tables WHERE relname = 'inbox'")
    return int(value or 0)


async def find_sent(
    db: Executor, sender_device: UUID, client_message_id: str
) -> StoredMessage | None:
    """The stored answer to an earlier send with this client message id."""
    row = await db.fetchrow(
        "SELECT id, sent_at FROM messages WHERE sender_device = $1 AND client_message_id = $2",
        sender_device,
        client_message_id,
    )
    return StoredMessage(row["id"], row["sent_at"], True) if row else None
