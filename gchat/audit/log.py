"""The tamper-evident audit log: recording metadata events (DESIGN.md section 7).

Services call :meth:`AuditLog.record` with the connection of the transaction
that makes the change, so an event exists if and only if the change it
records was committed, and no event costs a commit of its own.  Events carry
metadata only (ids, sizes, counts), never content and never key material.

Each event is stored in ``audit_events`` as the canonical JSON bytes of its
entry (the Merkle leaf data); the sequencer (:mod:`gchat.audit.sequencer`)
later gives every committed event a contiguous leaf index in ``audit_log``
and signs tree heads.  See docs/AUDIT.md for the catalogue and formats.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID

import msgspec

from gchat.audit import proofs
from gchat.errors import ServiceError
from gchat.identity.principal import Principal
from gchat.store import audit as store
from gchat.store import devices as device_store
from gchat.store import directory as directory_store
from gchat.store.database import Database, Executor
from gchat.store.messages import NewMessage, StoredMessage
from protocol.errors import ErrorCode

log = logging.getLogger("gchat.audit.log")

__all__ = ["ENTRY_VERSION", "AuditEvent", "AuditLog", "encode_entry"]

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


def _enc_hook(value: Any) -> Any:
    if isinstance(value, (set, frozenset)):
        return sorted(value, key=str)
    raise TypeError(f"audit details cannot hold {type(value).__name__}")


_encoder = msgspec.json.Encoder(enc_hook=_enc_hook, order="sorted")


def encode_entry(event: AuditEvent, at: datetime) -> bytes:
    """The canonical JSON bytes of one entry: sorted keys, no spaces, UTF-8, no nulls."""
    entry: dict[str, object] = {
        "v": ENTRY_VERSION,
        "kind": event.kind,
        "time": at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
    }
    for name in ("actor_official", "actor_device", "subject_official", "subject_device"):
        value = getattr(event, name)
        if value is not None:
            entry[name] = value
    if event.agency_id is not None:
        entry["agency"] = event.agency_id
    if event.details:
        entry["details"] = dict(event.details)
    return _encoder.encode(entry)


def _ids(values: Iterable[object]) -> set[str]:
    return {str(v) for v in values if v is not None}


def involved(event: AuditEvent) -> tuple[list[str], list[str]]:
    """The officials and devices an event is about (for the query indexes)."""
    officials = _ids((event.actor_official, event.subject_official))
    devices = _ids((event.actor_device, event.subject_device))
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
        if isinstance(value, (list, tuple, set, frozenset)):
            target |= _ids(value)
        elif isinstance(value, (UUID, str)):
            target.add(str(value))
    return sorted(officials), sorted(devices)


class AuditLog:
    """Appends audit events inside the caller's transaction.

    With ``enabled=False`` (config ``audit_enabled``) :meth:`record` does
    nothing: that exists to measure the cost of auditing, not for production.
    """

    def __init__(self, enabled: bool = True) -> None:
        self.enabled = enabled

    async def record(self, conn: Executor, *events: AuditEvent) -> None:
        """Append ``events`` with one statement on ``conn`` (the caller's transaction).

        Pass the pool only for events that have no transaction of their own
        (an authentication failure): they are then committed at once.
        """
        if not self.enabled or not events:
            return
        at = datetime.now(UTC)
        columns: list[list[Any]] = [[] for _ in range(10)]
        parties = [involved(event) for event in events]
        # One look-up of every involved official's agency for the whole batch
        # (an auditor's scope is checked against the agencies of an event).
        agency_of = await store.agencies_of(conn, sorted({o for os, _ in parties for o in os}))
        for event, (officials, devices) in zip(events, parties, strict=True):
            agencies = sorted(
                {agency_of[o] for o in officials if o in agency_of}
                | ({str(event.agency_id)} if event.agency_id else set())
            )
            row = (
                event.kind,
                at,
                event.actor_official,
                event.actor_device,
                event.subject_official,
                event.subject_device,
                msgspec.json.encode(officials).decode(),
                msgspec.json.encode(devices).decode(),
                msgspec.json.encode(agencies).decode(),
                encode_entry(event, at),
            )
            for column, value in zip(columns, row, strict=True):
                column.append(value)
        await store.insert_events(conn, columns)


def accepted_events(
    sends: Sequence[NewMessage], results: Sequence[StoredMessage]
) -> list[AuditEvent]:
    """One "message.accepted" event per newly stored send (retries log nothing)."""
    events = []
    for message, result in zip(sends, results, strict=True):
        if result.duplicate:
            continue
        devices = [device for device, _ in message.envelopes]
        fanned = getattr(message, "fanned_out", None) or []
        size = sum(len(c) for _, c in message.envelopes if c is not None)
        body = getattr(message, "body", None)
        details: dict[str, object] = {
            "message_id": message.message_id,
            "sent_at": int(message.sent_at.timestamp() * 1000),
            "ciphertext_bytes": size + (len(body) if body is not None else 0),
            "recipient_devices": sorted({*devices, *fanned}, key=str),
        }
        kind = getattr(message, "kind", "pairwise")
        if kind != "pairwise":
            details["message_kind"] = kind
        conversation = getattr(message, "conversation_id", None)
        if conversation is not None:
            details["conversation_id"] = conversation
        events.append(
            AuditEvent(
                "message.accepted",
                actor_official=message.sender_official,
                actor_device=message.sender_device,
                subject_official=message.recipient_official,
                details=details,
            )
        )
    return events


# --- what auditors call (over the protocol, see gchat.audit.handlers) -----------

#: Channel on which any node asks the sequencer for a fresh signed tree head.
SIGN_CHANNEL = "gchat_audit_sign"
#: Largest number of events one query page returns.
MAX_PAGE = 500


@dataclass(frozen=True)
class SignedHead:
    tree_size: int
    timestamp_ms: int
    root_hash: bytes
    signature: bytes
    key_id: bytes


@dataclass(frozen=True)
class EventFilter:
    official: UUID | None = None
    device: UUID | None = None
    agency: UUID | None = None
    kinds: tuple[str, ...] = ()
    since: datetime | None = None
    until: datetime | None = None


def _signed(row: store.TreeHeadRow) -> SignedHead:
    return SignedHead(row.tree_size, row.timestamp_ms, row.root_hash, row.signature, row.key_id)


def _ms(moment: datetime) -> int:
    return int(moment.timestamp() * 1000)


class AuditService:
    """Auditor operations, each checked against the auditor's scope and audited."""

    def __init__(
        self,
        db: Database,
        log: AuditLog,
        public_key: bytes,
        transparency_delay_seconds: float,
        fresh_head_timeout: float = 5.0,
    ) -> None:
        self._db = db
        self._log = log
        self.public_key = public_key
        self._delay = timedelta(seconds=transparency_delay_seconds)
        self._fresh_timeout = fresh_head_timeout

    async def _scope(self, actor: Principal) -> list[UUID] | None:
        """None for a global auditor, else the agencies of the auditor's subtree.

        Read from the database on every request, not from the roles the
        connection authenticated with: a revoked or narrowed auditor role,
        or a suspended official, takes effect on open connections too.
        """
        device = await device_store.get(self._db.pool, actor.device_id)
        roles = await directory_store.roles_of(self._db.pool, actor.official_id)
        role = next((r for r in roles if r.role == "auditor"), None)
        if device is None or not device.usable or role is None:
            raise ServiceError(ErrorCode.FORBIDDEN, "auditor role required")
        if role.scope_agency_id is None:
            return None
        return await store.agency_subtree(self._db.pool, role.scope_agency_id)

    def _event(self, actor: Principal, kind: str, **details: object) -> AuditEvent:
        return AuditEvent(
            kind,
            actor_official=actor.official_id,
            actor_device=actor.device_id,
            agency_id=actor.agency_id,
            details={k: v for k, v in details.items() if v is not None},
        )

    async def query(
        self, actor: Principal, flt: EventFilter, after_id: int, limit: int
    ) -> list[store.EventRow]:
        scope = await self._scope(actor)
        agencies = None
        if flt.agency is not None:
            if scope is not None and flt.agency not in scope:
                raise ServiceError(ErrorCode.FORBIDDEN, "agency outside the auditor's scope")
            agencies = await store.agency_subtree(self._db.pool, flt.agency)
        async with self._db.transaction() as conn:
            rows = await store.query_events(
                conn,
                scope=scope,
                official=flt.official,
                device=flt.device,
                agencies=agencies,
                kinds=list(flt.kinds) or None,
                since=flt.since,
                until=flt.until,
                after_id=after_id,
                limit=max(1, min(limit, MAX_PAGE)),
            )
            returned = {o for r in rows for o in r.officials}
            if flt.official is not None:
                returned.add(flt.official)
            await self._log.record(
                conn,
                self._event(
                    actor,
                    "audit.query",
                    filter_official=flt.official,
                    filter_device=flt.device,
                    filter_agency=flt.agency,
                    filter_kinds=list(flt.kinds),
                    filter_since=_ms(flt.since) if flt.since else None,
                    filter_until=_ms(flt.until) if flt.until else None,
                    after_id=after_id,
                    returned=len(rows),
                    queried_officials=sorted(returned - {actor.official_id}, key=str),
                ),
            )
        return rows

    async def tree_head(self, actor: Principal, fresh: bool = True) -> SignedHead:
        """The latest signed tree head; with ``fresh`` the sequencer signs one now."""
        await self._scope(actor)
        await self._log.record(self._db.pool, self._event(actor, "audit.tree_head", fresh=fresh))
        head = await self.latest_head(fresh)
        if head is None:
            raise ServiceError(ErrorCode.NOT_FOUND, "no signed tree head yet")
        return head

    async def latest_head(self, fresh: bool) -> SignedHead | None:
        if not fresh:
            row = await store.latest_tree_head(self._db.pool)
            return None if row is None else _signed(row)
        asked = int(time.time() * 1000)
        await self._db.pool.execute("SELECT pg_notify($1, $2)", SIGN_CHANNEL, str(asked))
        deadline = asyncio.get_running_loop().time() + self._fresh_timeout
        while True:
            row = await store.latest_tree_head(self._db.pool)
            if row is not None and row.timestamp_ms >= asked:
                return _signed(row)
            if asyncio.get_running_loop().time() >= deadline:
                log.warning("no fresh tree head within %.1fs: is a sequencer running?",
                            self._fresh_timeout)
                return None if row is None else _signed(row)
            await asyncio.sleep(0.02)

    async def _head_of_size(self, size: int) -> SignedHead | None:
        row = await store.tree_head_of_size(self._db.pool, size)
        return None if row is None else _signed(row)

    async def inclusion(
        self, actor: Principal, leaf_index: int, tree_size: int
    ) -> tuple[store.EventRow, bytes, list[bytes], SignedHead | None]:
        scope = await self._scope(actor)
        if not 0 <= leaf_index < tree_size <= await proofs.stored_size(self._db.pool):
            raise ServiceError(ErrorCode.NOT_FOUND, "no such leaf or tree size")
        row = await store.event_at(self._db.pool, leaf_index, scope)
        if row is None or not row.in_scope or row.leaf_hash is None:
            raise ServiceError(ErrorCode.FORBIDDEN, "entry outside the auditor's scope")
        try:
            proof = await proofs.inclusion_proof(self._db.pool, leaf_index, tree_size)
        except KeyError:
            raise ServiceError(ErrorCode.NOT_FOUND, "the stored log is missing leaves") from None
        await self._log.record(
            self._db.pool,
            self._event(
                actor,
                "audit.inclusion_proof",
                leaf_index=leaf_index,
                tree_size=tree_size,
                queried_officials=sorted(set(row.officials) - {actor.official_id}, key=str),
            ),
        )
        return row, row.leaf_hash, proof, await self._head_of_size(tree_size)

    async def consistency(
        self, actor: Principal, old_size: int, new_size: int
    ) -> tuple[list[bytes], SignedHead | None, SignedHead | None]:
        await self._scope(actor)
        if not 0 <= old_size <= new_size <= await proofs.stored_size(self._db.pool):
            raise ServiceError(ErrorCode.NOT_FOUND, "no such tree size")
        try:
            proof = await proofs.consistency_proof(self._db.pool, old_size, new_size)
        except KeyError:
            raise ServiceError(ErrorCode.NOT_FOUND, "the stored log is missing leaves") from None
        await self._log.record(
            self._db.pool,
            self._event(actor, "audit.consistency_proof", old_size=old_size, new_size=new_size),
        )
        return proof, await self._head_of_size(old_size), await self._head_of_size(new_size)

    async def export(
        self, actor: Principal, start: int, end: int | None, tree_size: int | None,
        cursor: int | None,
    ) -> tuple[list[str], int | None, int]:
        """One page of the JSON Lines export of leaves [start, end) against a signed head.

        Returns (lines, next cursor or None when done, tree size).  Pages stay
        under the frame limit whatever the range (``gchat.audit.proofs``): the
        header and the signed heads with their consistency proofs come first,
        then entries with inclusion proofs.  Entries outside the auditor's
        scope are exported as their leaf hash only.
        """
        scope = await self._scope(actor)
        if tree_size is None:
            head = await self.latest_head(fresh=True)
        else:
            head = await self._head_of_size(tree_size)
        if head is None:
            raise ServiceError(ErrorCode.NOT_FOUND, "no signed tree head of that size")
        size = head.tree_size
        end = size if end is None else min(end, size)
        if not 0 <= start <= end:
            raise ServiceError(ErrorCode.NOT_FOUND, "range outside the signed tree")
        signed = store.TreeHeadRow(
            head.tree_size, head.timestamp_ms, head.root_hash, head.signature, head.key_id
        )
        try:
            page = await proofs.export_page(self._db.pool, signed, start, end, cursor, scope)
        except ValueError as error:
            raise ServiceError(ErrorCode.NOT_FOUND, str(error)) from None
        if page.cursor is None and page.end_leaf < end:
            log.error("audit log has fewer leaves than the signed head of size %d", size)
        await self._log.record(
            self._db.pool,
            self._event(
                actor,
                "audit.export",
                start=page.first_leaf,
                end=page.end_leaf,
                tree_size=size,
                queried_officials=sorted(page.officials - {actor.official_id}, key=str),
            ),
        )
        return page.lines, page.cursor, size

    async def accesses(
        self, actor: Principal, after_id: int, limit: int
    ) -> list[store.EventRow]:
        """Access transparency: auditors' queries that concerned the caller's metadata.

        Only queries older than the configured delay are shown, so an
        investigation is not tipped off while it runs; and each is shown as
        who asked, what and when, without the other officials it concerned
        (their metadata is theirs, not the caller's).
        """
        before = datetime.now(UTC) - self._delay
        rows = await store.audit_queries_about(
            self._db.pool, actor.official_id, before, after_id, max(1, min(limit, MAX_PAGE))
        )
        return [replace(row, entry=_redacted(row.entry), officials=[]) for row in rows]


def _redacted(entry: bytes) -> bytes:
    """An auditor-query entry reduced to the auditor, the kind of request and the time."""
    full = json.loads(entry)
    keep = ("v", "kind", "time", "actor_official", "actor_device")
    return _encoder.encode({k: full[k] for k in keep if k in full})


def _line(data: Mapping[str, object]) -> str:
    return json.dumps(data, separators=(",", ":"), ensure_ascii=False)
