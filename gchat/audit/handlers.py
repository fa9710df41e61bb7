"""Request handlers of the audit operations.

Auditors (role ``auditor``, within its scope) query events, fetch signed
tree heads, inclusion and consistency proofs, and export ranges; any
official may list auditors' accesses to their metadata (access
transparency).  The service (``gchat.audit.service.AuditService``) checks roles and
records every request in the audit log.
"""

from datetime import UTC, datetime

from gchat.audit.service import AuditService, EventFilter, SignedHead
from gchat.handling import handles
from gchat.identity.principal import Principal
from gchat.store.audit import EventRow
from protocol import frames as f


def _time(value: int | None) -> datetime | None:
    return None if value is None else datetime.fromtimestamp(value / 1000, UTC)


def _info(row: EventRow) -> f.AuditEventInfo:
    return f.AuditEventInfo(
        id=row.id,
        leaf_index=row.leaf_index,
        kind=row.kind,
        time=f.wire_time(row.created_at),
        entry=row.entry.decode(),
    )


def _head(head: SignedHead | None) -> f.SignedTreeHead | None:
    if head is None:
        return None
    return f.SignedTreeHead(
        tree_size=head.tree_size,
        timestamp_ms=head.timestamp_ms,
        root_hash=head.root_hash,
        signature=head.signature,
        key_id=head.key_id,
    )


class AuditHandlers:
    def __init__(self, service: AuditService) -> None:
        self._audit = service

    @handles(f.AuditQuery)
    async def query(self, actor: Principal, frame: f.AuditQuery) -> f.AuditEvents:
        flt = EventFilter(
            official=frame.official_id,
            device=frame.device_id,
            agency=frame.agency_id,
            kinds=tuple(frame.kinds),
            since=_time(frame.since),
            until=_time(frame.until),
        )
        rows = await self._audit.query(actor, flt, frame.after, frame.limit)
        return f.AuditEvents(
            rid=frame.rid,
            events=[_info(r) for r in rows],
            next_after=rows[-1].id if len(rows) == frame.limit else None,
        )

    @handles(f.AuditGetTreeHead)
    async def tree_head(self, actor: Principal, frame: f.AuditGetTreeHead) -> f.AuditTreeHead:
        head = _head(await self._audit.tree_head(actor, frame.fresh))
        assert head is not None
        return f.AuditTreeHead(rid=frame.rid, head=head)

    @handles(f.AuditGetInclusion)
    async def inclusion(self, actor: Principal, frame: f.AuditGetInclusion) -> f.AuditInclusion:
        row, hash_, proof, head = await self._audit.inclusion(
            actor, frame.leaf_index, frame.tree_size
        )
        return f.AuditInclusion(
            rid=frame.rid,
            leaf_index=frame.leaf_index,
            tree_size=frame.tree_size,
            entry=row.entry.decode(),
            leaf_hash=hash_,
            proof=proof,
            head=_head(head),
        )

    @handles(f.AuditGetConsistency)
    async def consistency(
        self, actor: Principal, frame: f.AuditGetConsistency
    ) -> f.AuditConsistency:
        proof, old, new = await self._audit.consistency(actor, frame.old_size, frame.new_size)
        return f.AuditConsistency(
            rid=frame.rid,
            old_size=frame.old_size,
            new_size=frame.new_size,
            proof=proof,
            old_head=_head(old),
            new_head=_head(new),
        )

    @handles(f.AuditExport)
    async def export(self, actor: Principal, frame: f.AuditExport) -> f.AuditExportPage:
        lines, cursor, size = await self._audit.export(
            actor, frame.start, frame.end, frame.tree_size, frame.cursor
        )
        return f.AuditExportPage(rid=frame.rid, tree_size=size, lines=lines, cursor=cursor)

    @handles(f.AuditListAccesses)
    async def accesses(self, actor: Principal, frame: f.AuditListAccesses) -> f.AuditEvents:
        rows, names = await self._audit.accesses(actor, frame.after, frame.limit)
        return f.AuditEvents(
            rid=frame.rid,
            events=[_info(r) for r in rows],
            next_after=rows[-1].id if len(rows) == frame.limit else None,
            auditors=[
                f.AuditorName(
                    official_id=n.id,
                    name_th=n.name_th,
                    name_en=n.name_en,
                    agency_code=n.agency_code,
                )
                for n in names
            ],
        )
