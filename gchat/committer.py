"""Group commit: many connections' sends, one transaction.

A send waits at most ``window`` seconds (or until ``max_batch`` sends are
waiting) for company, then the whole batch is written in one transaction
and every sender is answered. Throughput is then bound by batches per
second, not commits per message. A failed batch fails each of its sends,
which the senders may retry (the client message id keeps retries
idempotent).
"""

import asyncio
import logging
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta

from gchat.audit import AuditLog, accepted_events
from gchat.metrics import NodeMetrics
from gchat.store import messages
from gchat.store.database import Database
from gchat.store.messages import NewMessage, StoredMessage

log = logging.getLogger("gchat.committer")

AfterCommit = Callable[[list[NewMessage]], Awaitable[None]]


class GroupCommitter:
    def __init__(
        self,
        db: Database,
        window_seconds: float,
        max_batch: int,
        retention: timedelta,
        after_commit: AfterCommit,
        metrics: NodeMetrics | None = None,
        audit: AuditLog | None = None,
    ) -> None:
        self._db = db
        self._audit = audit if audit is not None else AuditLog(enabled=False)
        self._metrics = metrics
        self._window = window_seconds
        self._max_batch = max_batch
        self._retention = retention
        self._after_commit = after_commit
        self._queue: asyncio.Queue[tuple[NewMessage, asyncio.Future[StoredMessage]]] = (
            asyncio.Queue()
        )
        self._task: asyncio.Task[None] | None = None
        self.batches = 0
        self.committed = 0

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="group-committer")

    async def stop(self) -> None:
        """Commit what is queued, then stop."""
        if self._task is None:
            return
        await self._queue.join()
        self._task.cancel()
        await asyncio.gather(self._task, return_exceptions=True)
        self._task = None

    async def submit(self, message: NewMessage) -> StoredMessage:
        """Queue a send; returns once it (or its original) is committed."""
        future: asyncio.Future[StoredMessage] = asyncio.get_running_loop().create_future()
        await self._queue.put((message, future))
        return await future

    async def _run(self) -> None:
        while True:
            batch = [await self._queue.get()]
            deadline = asyncio.get_running_loop().time() + self._window
            while len(batch) < self._max_batch:
                timeout = deadline - asyncio.get_running_loop().time()
                if timeout <= 0:
                    while len(batch) < self._max_batch and not self._queue.empty():
                        batch.append(self._queue.get_nowait())
                    break
                try:
                    batch.append(await asyncio.wait_for(self._queue.get(), timeout))
                except TimeoutError:
                    break
            await self._commit(batch)
            for _ in batch:
                self._queue.task_done()

    async def _commit(
        self, batch: list[tuple[NewMessage, asyncio.Future[StoredMessage]]]
    ) -> None:
        sends = [message for message, _ in batch]
        expires = datetime.now(UTC) + self._retention
        started = asyncio.get_running_loop().time()
        try:
            async with self._db.transaction() as conn:
                results = await messages.store_batch(conn, sends, expires)
                # One multi-row insert for the batch's "message.accepted" events.
                await self._audit.record(conn, *accepted_events(sends, results))
        except Exception as error:
            if self._metrics is not None:
                self._metrics.commit_failures.inc()
            log.exception("batch of %d failed", len(batch))
            for _, future in batch:
                if not future.done():
                    future.set_exception(error)
            return
        self.batches += 1
        self.committed += len(batch)
        if self._metrics is not None:
            self._metrics.commit_batches.inc()
            self._metrics.messages_committed.inc(len(batch))
            self._metrics.commit_batch_size.observe(len(batch))
            self._metrics.commit_latency.observe(asyncio.get_running_loop().time() - started)
        for (_, future), result in zip(batch, results, strict=True):
            if not future.done():
                future.set_result(result)
        fresh = [m for m, r in zip(sends, results, strict=True) if not r.duplicate]
        if fresh:
            try:
                await self._after_commit(fresh)
            except Exception:
                log.exception("after-commit hook failed; devices catch up on next signal")
