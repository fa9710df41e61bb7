"""The auditor service: queries, signed tree heads, proofs and exports, each audited.

Auditors (role ``auditor``, within its scope) call it over the protocol
(``gchat.audit.handlers``); every call is checked against the auditor's
scope, read afresh from the database, and recorded in the audit log it
reads (``gchat.audit.log``). Any official may list auditors' accesses to
their own metadata, after a delay (access transparency).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from uuid import UUID

import msgspec

from gchat.audit import proofs
from gchat.audit.log import AuditEvent, AuditLog
from gchat.audit.sequencer import SIGN_CHANNEL, SIGNED_CHANNEL
from gchat.directory import authz
from gchat.errors import ServiceError
from gchat.identity.principal import Principal
from gchat.store import audit as store
from gchat.store import directory
from gchat.store.database import Database, unlisten
from protocol.errors import ErrorCode
from protocol.frames import wire_time

log = logging.getLogger("gchat.audit.service")

#: How long to wait for a fresh tree head before asking the sequencer again.
_ASK_AGAIN_SECONDS = 0.5
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


class AuditService:
    """Auditor operations, each checked against the auditor's scope and audited."""

    def __init__(
        self,
        db: Database,
        audit_log: AuditLog,
        public_key: bytes,
        transparency_delay_seconds: float,
        fresh_head_timeout: float = 5.0,
    ) -> None:
        self._db = db
        self._log = audit_log
        self.public_key = public_key
        self._delay = timedelta(seconds=transparency_delay_seconds)
        self._fresh_timeout = fresh_head_timeout

    async def _scope(self, actor: Principal) -> list[UUID] | None:
        """None for a global auditor, else the agencies of the auditor's subtree.

        Read from the database on every request (``gchat.directory.authz``),
        not from the roles the connection authenticated with: a revoked or
        narrowed auditor role, or a suspended official, takes effect on open
        connections too.
        """
        return await (await authz.current(self._db.pool, actor)).audited_agencies()

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
                    filter_since=wire_time(flt.since) if flt.since else None,
                    filter_until=wire_time(flt.until) if flt.until else None,
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
        return await self._fresh_head()

    async def _fresh_head(self) -> SignedHead | None:
        """Ask the sequencer (on whichever node) to sign now; wait for its head.

        Listens for the sequencer's "signed" notification instead of
        polling the table, and repeats the request now and then (a
        sequencer elected after it was sent never saw it); after
        ``fresh_head_timeout`` without a head signed since the request, the
        latest head there is (or None).
        """
        signed = asyncio.Event()

        def on_signed(*_: object) -> None:
            signed.set()

        loop = asyncio.get_running_loop()
        async with self._db.pool.acquire() as conn:
            await conn.add_listener(SIGNED_CHANNEL, on_signed)
            try:
                asked = int(time.time() * 1000)
                await conn.execute("SELECT pg_notify($1, $2)", SIGN_CHANNEL, str(asked))
                deadline = loop.time() + self._fresh_timeout
                while True:
                    signed.clear()
                    row = await store.latest_tree_head(conn)
                    if row is not None and row.timestamp_ms >= asked:
                        return _signed(row)
                    left = deadline - loop.time()
                    if left <= 0:
                        log.warning(
                            "no fresh tree head within %.1fs: is a sequencer running?",
                            self._fresh_timeout,
                        )
                        return None if row is None else _signed(row)
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(signed.wait(), min(left, _ASK_AGAIN_SECONDS))
                    if not signed.is_set():  # a sequencer elected since missed the request
                        await conn.execute("SELECT pg_notify($1, $2)", SIGN_CHANNEL, str(asked))
            finally:
                await unlisten(conn, SIGNED_CHANNEL, on_signed)

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
        if row is not None and row.archived:
            raise ServiceError(
                ErrorCode.NOT_FOUND, "entry archived by retention: see its archive file"
            )
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
        self,
        actor: Principal,
        start: int,
        end: int | None,
        tree_size: int | None,
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
    ) -> tuple[list[store.EventRow], list[directory.OfficialName]]:
        """Access transparency: auditors' queries that concerned the caller's metadata.

        Only queries older than the configured delay are shown, so an
        investigation is not tipped off while it runs; and each is shown as
        who asked, what and when, without the other officials it concerned
        (their metadata is theirs, not the caller's). The auditors are named
        as the directory names them, since the caller may not read their
        records.
        """
        before = datetime.now(UTC) - self._delay
        rows = await store.audit_queries_about(
            self._db.pool, actor.official_id, before, after_id, max(1, min(limit, MAX_PAGE))
        )
        shown = [replace(row, entry=_redacted(row.entry), officials=[]) for row in rows]
        auditors = {_kind_decoder.decode(row.entry).get("actor_official") for row in shown}
        ids = sorted(UUID(a) for a in auditors if isinstance(a, str))
        return shown, await directory.names_of(self._db.pool, ids)


_redaction_encoder = msgspec.json.Encoder(order="sorted")
_kind_decoder = msgspec.json.Decoder()


def _redacted(entry: bytes) -> bytes:
    """An auditor-query entry reduced to the auditor, the kind of request and the time."""
    full = json.loads(entry)
    keep = ("v", "kind", "time", "actor_official", "actor_device")
    return _redaction_encoder.encode({k: full[k] for k in keep if k in full})


def _line(data: Mapping[str, object]) -> str:
    return json.dumps(data, separators=(",", ":"), ensure_ascii=False)
