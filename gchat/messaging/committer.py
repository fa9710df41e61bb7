"""Group commit (the database sense, not chat groups): many sends, one transaction.

Sends queue on a ``Batcher``: everything that arrived while the previous
transaction ran is checked and written in the next one, and every sender is
answered after that commit. Throughput is then bound by rows per second,
not commits (or round trips) per message. The ``prepare`` hook checks a
whole batch inside the same transaction (directory policy, device lists,
earlier sends), so the check costs a few statements per batch and cannot
race the write. A failed batch fails each of its sends, which the senders
may retry (the client message id keeps retries idempotent).

A batch of pairwise sends (all of them at low load, where a batch is one
send) is one statement, its own transaction, instead of four round trips
(BEGIN, check, store, COMMIT): the check decides on the parties' standings
as this committer last saw them, and the store writes only if it reads the
same standings in its own snapshot (``messages.store_batch``), so nothing
the check relied on differs at the write, as in one transaction. If they
differ (or the check refused a send on them), the batch is checked again on
standings read now, a second statement; after a few such losses it is
checked and stored in one transaction.

Batches run in ``lanes`` (``commit_lanes``), each one batch at a time on a
pinned connection of its own, so with two one lane's batch is checked and
written while the other's waits for its durable commit. That pays where a
commit's round trip is long (a remote or busy database: 1.3-1.5x the
relay's capacity on a loaded machine); beside a quiet local PostgreSQL the
node's own event loop is the bound, and a second lane only splits a
half-capacity load into smaller, dearer batches, so one is the default
(docs/PERFORMANCE.md). A send goes to the
lane of its sending device, always the same one, which is the simplest
split that keeps what one lane gave for free: one device's sends commit,
are answered and reach each inbox in the order sent, and a retry (same
sender device and client message id) can never race its original in the
other lane. Between lanes nothing new can deadlock: a batch locks its
recipients' ``devices`` rows in id order in one statement (and
conversations only ``FOR SHARE``, before), as concurrent batches of
several nodes always did. Two lanes commit one recipient's rows in position
order still (its ``devices`` row is locked until commit), but their
wake-ups may come out of order; a delivery stream then reads the inbox
instead of taking what it is handed (``Inbox.hand_over``).

The kept standings are shared by the lanes. A lane may keep standings the
other has just found stale (read before the change, remembered after):
that costs the next batch relying on them a second statement, never a
wrong send, since every store re-reads what it relied on in its own
snapshot; and a refusal is only final on standings read for it.

A batch's wake-up of its recipients (``after_commit``) is called as soon
as the batch commits, before the lane takes its next batch and before the
senders are answered: what it does before it returns (the node hands the
rows to its delivery streams, which frame them for their sockets) is done
then, within the callback that took the commit's result; the awaitable it
returns (signals to other nodes, pushes) runs in a task, after the lane's
next batch has been sent. Wake-ups keep their lane's commit order
(``_hand_over``). Handing the rows over from the task instead cost every
envelope a loop turn (an I/O pass over every readable socket) at half
capacity, for little: at capacity the node's CPU is the bound, not its
lane (a second lane gave 1.01x, docs/PERFORMANCE.md).

A fixed lane per device, not one queue from which a free lane takes the
sends of devices no batch in flight holds: that needs more code in
``Batcher`` (keys in flight, a queue scanned past them), and in a closed
loop it gained less over one lane (1.25x against 1.68x; docs/PERFORMANCE.md).
"""

import asyncio
import functools
import logging
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from uuid import UUID

import asyncpg

from gchat.audit.log import AuditLog
from gchat.runtime.batcher import Batcher
from gchat.runtime.metrics import NodeMetrics
from gchat.runtime.quietlog import QuietLog
from gchat.store import messages
from gchat.store.database import Database, Executor
from gchat.store.messages import NewMessage, StandingsChanged, StoredMessage
from gchat.store.policies import SendStanding

log = logging.getLogger("gchat.messaging.committer")

#: Called with a batch's written sends as it commits; the awaitable it returns
#: runs afterwards, in commit order (see the module docstring); None: nothing
#: is left to run.
AfterCommit = Callable[[list[NewMessage]], Awaitable[None] | None]


@dataclass(frozen=True)
class Checked:
    """What the prepare hook decided for a batch, inside its transaction."""

    #: Per send: None to store it, a StoredMessage to answer with (an
    #: earlier send), or an exception to refuse it with.
    verdicts: Sequence[object]
    #: Agencies of officials the check read: their "message.accepted"
    #: events need them, and reading them again costs a statement per batch.
    agencies: Mapping[UUID, UUID] = field(default_factory=dict)
    #: The standings the verdicts were decided on; the store writes only if
    #: they still hold (none: the verdicts depend on nothing read).
    standings: Mapping[UUID, SendStanding] = field(default_factory=dict)


#: Checks a batch on ``conn``, taking the standings it is given as read.
Prepare = Callable[[Executor, list[NewMessage], Mapping[UUID, SendStanding]], Awaitable[Checked]]


async def _accept_all(
    conn: Executor, sends: list[NewMessage], known: Mapping[UUID, SendStanding]
) -> Checked:
    return Checked([None] * len(sends))


#: Checks of a pairwise batch outside a transaction, after which (each time
#: its standings had changed before the store) it runs in one.
_CHECKS_OUTSIDE = 3


def _lost(conn: asyncpg.Connection) -> bool:
    """Is the connection closed? The pool takes back (and detaches) a pooled
    connection when PostgreSQL ends it; using it then raises."""
    try:
        return bool(conn.is_closed())
    except asyncpg.InterfaceError:
        return True


#: Standings kept between batches (officials who sent or were sent to
#: lately); the oldest go first. About 300 bytes each.
_STANDINGS_KEPT = 10_000


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
        lanes: int = 1,
    ) -> None:
        self._db = db
        self._audit = audit if audit is not None else AuditLog(enabled=False)
        self._metrics = metrics
        self._retention = retention
        self._after_commit = after_commit
        self._prepare = prepare
        self._quiet = QuietLog(log)
        #: The standings of officials as the last batches read them; a
        #: store checks them again (a stale one costs a second statement).
        self._standings: dict[UUID, SendStanding] = {}
        #: Per lane, the pinned connection its batches run on, kept between
        #: them: taking one from the pool and giving it back costs more of
        #: the node's CPU (0.055 ms) than a round trip.
        self._conns: list[asyncpg.Connection | None] = [None] * lanes
        self._lanes: list[Batcher[NewMessage, StoredMessage]] = [
            Batcher("commit", functools.partial(self._commit, lane), max_batch)
            for lane in range(lanes)
        ]
        #: Per lane, the wake-up of its last written batch (``_hand_over``).
        self._handing: list[asyncio.Task[None] | None] = [None] * lanes

    @property
    def batches(self) -> int:
        return sum(lane.batches for lane in self._lanes)

    @property
    def committed(self) -> int:
        return sum(lane.items for lane in self._lanes)

    def start(self) -> None:
        for lane in self._lanes:
            lane.start()

    async def stop(self) -> None:
        """Commit what is queued, then stop."""
        await asyncio.gather(*(lane.stop() for lane in self._lanes))
        await asyncio.gather(*(t for t in self._handing if t is not None))
        for lane, conn in enumerate(self._conns):
            if conn is not None:
                await self._db.pinned.release(conn)
                self._conns[lane] = None

    async def _connection(self, lane: int) -> asyncpg.Connection:
        """The lane's kept connection; a new one once it was lost (the pool replaces it)."""
        conn = self._conns[lane]
        if conn is not None and _lost(conn):
            await self._db.pinned.release(conn)  # nothing if the pool took it back
            conn = self._conns[lane] = None
        if conn is None:
            conn = self._conns[lane] = await self._db.pinned.acquire()
        return conn

    def submit(self, message: NewMessage) -> asyncio.Future[StoredMessage]:
        """Queue a send now (keeping the caller's order); the future is its answer.

        It resolves to the stored message (or the original of a retry) once
        committed, or to the reason the send was refused. The sending
        device's lane takes it (see the module docstring).
        """
        lanes = self._lanes
        if len(lanes) == 1:  # the default: no ``UUID.int`` to make per send
            return lanes[0].submit(message)
        return lanes[message.sender_device.int % len(lanes)].submit(message)

    async def _commit(
        self, lane: int, sends: list[NewMessage]
    ) -> list[StoredMessage | BaseException]:
        started = asyncio.get_running_loop().time()
        try:
            results, written = await self._check_and_store(await self._connection(lane), sends)
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
            self._hand_over(lane, written)
        return results

    def _hand_over(self, lane: int, written: list[NewMessage]) -> None:
        """Wake the recipients of a written batch: now, and what remains in a task.

        ``after_commit`` is called here, before the senders are answered, so
        what it does at once (this node's streams take the rows) needs no
        loop turn of its own; what it returns is awaited in a task, after
        the lane's next batch is sent. A lane's tasks stay in the order of
        its commits (each waits for the one before).
        """
        try:
            rest = self._after_commit(written)
        except Exception as error:  # devices catch up on the next signal
            self._quiet.failure("after-commit wake-up", error)
            return
        if rest is None:  # nothing to await: no task (nothing to keep in order either)
            return
        before = self._handing[lane]
        self._handing[lane] = asyncio.create_task(self._wake(before, rest))

    async def _wake(self, before: "asyncio.Task[None] | None", rest: Awaitable[None]) -> None:
        if before is not None and not before.done():
            await asyncio.wait([before])
        try:
            await rest
        except Exception as error:  # devices catch up on the next signal
            self._quiet.failure("after-commit wake-up", error)
        else:
            self._quiet.recovered("after-commit wake-up")

    async def _check_and_store(
        self, conn: asyncpg.Connection, sends: list[NewMessage]
    ) -> tuple[list[StoredMessage | BaseException], list[NewMessage]]:
        """The batch's results, and the sends it wrote, once committed."""
        expires = datetime.now(UTC) + self._retention
        if all(m.kind == "pairwise" for m in sends):
            known: Mapping[UUID, SendStanding] = self._standings
            for _ in range(_CHECKS_OUTSIDE):
                checked = await self._prepare(conn, sends, known)
                if known and any(isinstance(v, BaseException) for v in checked.verdicts):
                    # A refusal is decided on the standings as they are now.
                    known = self._forget(checked.standings)
                    continue
                try:
                    done = await self._store(conn, sends, checked, expires, recheck=True)
                except StandingsChanged:
                    known = self._forget(checked.standings)
                    continue
                self._remember(checked.standings)
                return done
        async with conn.transaction():
            checked = await self._prepare(conn, sends, {})
            return await self._store(conn, sends, checked, expires, recheck=False)

    def _forget(self, standings: Mapping[UUID, SendStanding]) -> Mapping[UUID, SendStanding]:
        """Drop these officials' standings; nothing is known (for the next check)."""
        for official in standings:
            self._standings.pop(official, None)
        return {}

    def _remember(self, standings: Mapping[UUID, SendStanding]) -> None:
        self._standings.update(standings)
        while len(self._standings) > _STANDINGS_KEPT:
            del self._standings[next(iter(self._standings))]

    async def _store(
        self,
        conn: Executor,
        sends: list[NewMessage],
        checked: Checked,
        expires: datetime,
        recheck: bool,
    ) -> tuple[list[StoredMessage | BaseException], list[NewMessage]]:
        """Store what ``checked`` allows: in ``conn``'s transaction, or with
        ``recheck`` in a statement that first checks ``checked.standings``."""
        verdicts = list(checked.verdicts)
        fresh = [m for m, v in zip(sends, verdicts, strict=True) if v is None]
        # Their "message.accepted" events, written by the store's statement
        # for the sends it inserts (not for retries).
        accepted = await self._audit.encode_accepted(conn, fresh, checked.agencies)
        standings = checked.standings if recheck else None
        answers = (
            await messages.store_batch(conn, fresh, expires, accepted, standings) if fresh else []
        )
        if len(answers) == len(sends):  # every send was stored or is a retry: no refusal
            written = [m for m, r in zip(sends, answers, strict=True) if not r.duplicate]
            return list(answers), written
        stored = iter(answers)
        results: list[StoredMessage | BaseException] = [
            next(stored) if v is None else v  # type: ignore[misc]
            for v in verdicts
        ]
        written = [
            m
            for m, r in zip(sends, results, strict=True)
            if isinstance(r, StoredMessage) and not r.duplicate
        ]
        return results, written
