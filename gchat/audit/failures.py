"""Refused authentication and enrolment attempts, aggregated per address and window.

An unauthenticated client could grow the permanent audit log by one row
per ``auth`` frame (hundreds a second from one connection). The log must
still say that someone tried, from where, how often and why, but not pay
a row, a commit and a Merkle leaf per guess. So services only ``note`` a
refusal here (in memory, no I/O, also while the address is throttled), and
every ``window`` seconds each (kind, address) with refusals becomes one
event: ``auth.failed`` / ``device.enrolment_refused`` with ``count``,
``reasons`` (count per reason), the window's first and last refusal and up
to ``MAX_CLAIMED`` distinct claimed device ids. A hostile client therefore
adds at most one row per address and window, whatever it sends.

Memory is bounded too: past ``max_addresses`` pending addresses, further
addresses are counted under the address ``"other"`` for that window. If
the database is down at a flush, the counts are kept and merged into the
next one, so nothing is lost to an outage (bounded the same way), and the
outage is logged once (``QuietLog``), not once per flush.
"""

import asyncio
import contextlib
import logging
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from uuid import UUID

from gchat.audit.log import AuditEvent, AuditLog
from gchat.runtime.quietlog import QuietLog
from gchat.store.database import Database

log = logging.getLogger("gchat.audit.failures")

#: Distinct claimed device ids kept per address and window (they are chosen
#: by the client, so a flood of random ids must not grow the event).
MAX_CLAIMED = 10
AUTH_FAILED = "auth.failed"
ENROLMENT_REFUSED = "device.enrolment_refused"
OVERFLOW_ADDRESS = "other"


@dataclass
class _Tally:
    first_ms: int
    last_ms: int
    count: int = 0
    reasons: Counter[str] = field(default_factory=Counter)
    claimed: set[UUID] = field(default_factory=set)

    def add(self, reason: str, device: UUID | None, at_ms: int, count: int = 1) -> None:
        self.count += count
        self.reasons[reason] += count
        self.first_ms = min(self.first_ms, at_ms)
        self.last_ms = max(self.last_ms, at_ms)
        if device is not None and len(self.claimed) < MAX_CLAIMED:
            self.claimed.add(device)

    def merge(self, other: "_Tally") -> None:
        self.count += other.count
        self.reasons.update(other.reasons)
        self.first_ms = min(self.first_ms, other.first_ms)
        self.last_ms = max(self.last_ms, other.last_ms)
        for device in other.claimed:
            if len(self.claimed) >= MAX_CLAIMED:
                break
            self.claimed.add(device)


class FailureAudit:
    """Counts refusals in memory; writes one audit event per (kind, address) and window."""

    def __init__(
        self,
        db: Database,
        audit: AuditLog,
        window_seconds: float = 60.0,
        max_addresses: int = 10_000,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._db = db
        self._audit = audit
        self.window_seconds = window_seconds
        self._max_addresses = max_addresses
        self._clock = clock
        self._pending: dict[tuple[str, str], _Tally] = {}
        self._task: asyncio.Task[None] | None = None
        self._quiet = QuietLog(log)

    def note(self, kind: str, remote: str, reason: str, device: UUID | None = None) -> None:
        """Count one refused attempt (no I/O: safe to call for every frame)."""
        at_ms = int(self._clock() * 1000)
        key = (kind, remote)
        if key not in self._pending and len(self._pending) >= self._max_addresses:
            key = (kind, OVERFLOW_ADDRESS)
        tally = self._pending.get(key)
        if tally is None:
            tally = self._pending[key] = _Tally(first_ms=at_ms, last_ms=at_ms)
        tally.add(reason, device, at_ms)

    @property
    def pending(self) -> int:
        """Refusals counted and not yet written."""
        return sum(t.count for t in self._pending.values())

    async def flush(self) -> int:
        """Write the pending tallies as events (one transaction); returns how many."""
        if not self._pending:
            return 0
        batch, self._pending = self._pending, {}
        events = [
            AuditEvent(
                kind,
                subject_device=next(iter(t.claimed)) if len(t.claimed) == 1 else None,
                details={
                    "remote": remote,
                    "count": t.count,
                    "reasons": dict(sorted(t.reasons.items())),
                    "first_at": t.first_ms,
                    "last_at": t.last_ms,
                    "window_seconds": self.window_seconds,
                    "claimed_devices": sorted(t.claimed, key=str),
                },
            )
            for (kind, remote), t in sorted(batch.items())
        ]
        try:
            async with self._db.transaction() as conn:
                await self._audit.record(conn, *events)
        except Exception as error:
            self._quiet.failure("recording refused attempts", error)
            self._restore(batch)
            return 0
        self._quiet.recovered("recording refused attempts")
        for (kind, remote), t in sorted(batch.items()):
            log.warning(
                "refused attempts kind=%s remote=%s count=%d reasons=%s",
                kind,
                remote,
                t.count,
                ",".join(f"{r}:{n}" for r, n in sorted(t.reasons.items())),
            )
        return len(events)

    def _restore(self, batch: dict[tuple[str, str], _Tally]) -> None:
        """Put unwritten tallies back (merged with newer ones), within the bound."""
        for key, tally in batch.items():
            if key not in self._pending and len(self._pending) >= self._max_addresses:
                key = (key[0], OVERFLOW_ADDRESS)
            if key in self._pending:
                self._pending[key].merge(tally)
            else:
                self._pending[key] = tally

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="failure-audit")

    async def stop(self) -> None:
        """Stop the timer and write what is pending (best effort)."""
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None
        with contextlib.suppress(Exception):
            await self.flush()

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.window_seconds)
            await self.flush()
