"""Group commit (the database sense, not chat groups): many sends, one transaction.

Sends queue on a ``Batcher``: everything that arrived while the previous
transaction ran is checked and written in the next one, and every sender is
answered after that commit. Throughput is then bound by rows per second,
not commits (or round trips) per message. The ``prepare`` hook checks a
whole batch inside the same transaction (directory policy, device lists,
earlier sends), so the check costs a few statements per batch and cannot
race the write. A failed batch fails each of its sends, which the senders
may retry (the client message id keeps retries idempotent).
"""

import asyncio
import logging
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from uuid import UUID

from gchat.audit.log import AuditLog, accepted_events
from gchat.runtime.batcher import Batcher
from gchat.runtime.metrics import NodeMetrics
from gchat.runtime.quietlog import QuietLog
from gchat.store import messages
from gchat.store.database import Database, Executor
from gchat.store.messages import NewMessage, StoredMessage

log = logging.getLogger("gchat.messaging.committer")

AfterCommit = Callable[[list[NewMessage]], Awaitable[None]]


@dataclass(frozen=True)
class Checked:
    """What the prepare hook decided for a batch, inside its transaction."""

    #: Per send: None to store it, a StoredMessage to answer with (an
    #: earlier send), or an exception to refuse it with.
    verdicts: Sequence[object]
    #: Agencies of officials the check read: their "message.accepted"
    #: events need them, and reading them again costs a statement per batch.
    agencies: Mapping[UUID, UUID] = field(default_factory=dict)


Prepare = Callable[[Executor, list[NewMessage]], Awaitable[Checked]]


async def _accept_all(conn: Executor, sends: list[NewMessage]) -> Checked:
    return Checked([None] * len(sends))


class SendCommitter:
    def __init__(
        self,
        db: Database,
        max_batch: int,
        retention: timedelta,
        after_commit: AfterCommit,
        metrics: NodeMetrics | None = None,
        audit: AuditLog | None = None,
        prepare: Prepare = _accept_all,
    ) -> None:
        self._db = db
        self._audit = audit if audit is not None else AuditLog(enabled=False)
        self._metrics = metrics
        self._retention = retention
        self._after_commit = after_commit
        self._prepare = prepare
        self._quiet = QuietLog(log)
        self._batcher: Batcher[NewMessage, StoredMessage] = Batcher(
            "commit", self._commit, max_batch
        )

    @property
    def batches(self) -> int:
        return self._batcher.batches

    @property
    def committed(self) -> int:
        return self._batcher.items

    def start(self) -> None:
        self._batcher.start()

    async def stop(self) -> None:
        """Commit what is queued, then stop."""
        await self._batcher.stop()

    def submit(self, message: NewMessage) -> asyncio.Future[StoredMessage]:
        """Queue a send now (keeping the caller's order); the future is its answer.

        It resolves to the stored message (or the original of a retry) once
        committed, or to the reason the send was refused.
        """
        return self._batcher.submit(message)

    async def _commit(self, sends: list[NewMessage]) -> list[StoredMessage | BaseException]:
        expires = datetime.now(UTC) + self._retention
        started = asyncio.get_running_loop().time()
        try:
            async with self._db.pinned_transaction() as conn:
                checked = await self._prepare(conn, sends)
                verdicts = list(checked.verdicts)
                fresh = [m for m, v in zip(sends, verdicts, strict=True) if v is None]
                # Their "message.accepted" events, written by the store's
                # statement for the sends it inserts (not for retries).
                accepted = await self._audit.encode(
                    conn, accepted_events(fresh), agencies=checked.agencies
                )
                stored = iter(
                    await messages.store_batch(conn, fresh, expires, accepted) if fresh else []
                )
                results: list[StoredMessage | BaseException] = [
                    next(stored) if v is None else v  # type: ignore[misc]
                    for v in verdicts
                ]
                written = [
                    m
                    for m, r in zip(sends, results, strict=True)
                    if isinstance(r, StoredMessage) and not r.duplicate
                ]
        except Exception:
            if self._metrics is not None:
                self._metrics.commit_failures.inc()
            raise
        if self._metrics is not None:
            self._metrics.commit_batches.inc()
            self._metrics.messages_committed.inc(len(sends))
            self._metrics.commit_batch_size.observe(len(sends))
            self._metrics.commit_latency.observe(asyncio.get_running_loop().time() - started)
        if written:
            try:
                await self._after_commit(written)
            except Exception as error:  # devices catch up on the next signal
                self._quiet.failure("after-commit wake-up", error)
            else:
                self._quiet.recovered("after-commit wake-up")
        return results
