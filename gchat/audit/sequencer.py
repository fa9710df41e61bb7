"""The audit sequencer: gives committed events contiguous leaf indexes, signs heads.

One node at a time is the sequencer: the holder of a PostgreSQL advisory
lock (session-level, on a connection it keeps).  Every node runs this loop;
the others retry the lock every ``retry_seconds``, so when the holder stops
or dies (its session ends, the lock is released) another takes over and
continues from the last leaf in ``audit_log``.

Order: leaves are assigned in the order the sequencer *sees events commit*.
Each pass reads, in one statement (one snapshot), that snapshot's horizon
(``xmax`` and the transactions still running: every other transaction has
finished) and the visible events that have no leaf yet and whose inserting
transaction is past the previous pass's horizon, appends them in (xid, id)
order, and writes their leaves in one more statement, which refuses unless
they are still pending exactly as read.  An event that commits
late (smaller id, later commit) is simply picked up by a later pass, with a
later index: nothing is skipped, nothing is sequenced twice
(``audit_log.event_id`` is unique), and indexes stay contiguous
(``leaf_index`` is the primary key, written from the in-memory tree size).
The horizon's lowest xid is stored with each leaf so a new sequencer resumes
its search where the last one stood.  An idle poll is one cheap statement
(:func:`gchat.store.audit.idle_check`), whatever the log's size, whether or
not the planner has statistics, and however long another transaction in
the cluster has been running.

State: the sequencer keeps only the compact range of the tree (one root per
set bit of its size) and stores, with the leaves, the root of every subtree
of height 8, 16, ... they complete (``audit_subtrees``).  A new sequencer
rebuilds its compact range from those rows and a few leaf hashes -- a few
hundred rows at most, not the whole log.

A pass hashes its events into the tree on the node's event loop, which
every connection of the node shares, and leaves the rest to PostgreSQL: it
reads only their backlog rows' ids and addresses and the leaf hashes (one
statement, a few values, not a row per event), and ``audit_append_backlog``
(migration 0023; 0018, 0019 and 0021 before it) packs the entries where they are,
moves them out of the backlog and writes the packs and subtree roots. Until
0018 the node read every entry, packed it in Python and sent the packs
back: 6-9 us of the loop per event, two events per message, and a PL/pgSQL
append whose cached plan stalled the sequencer once the backlog grew
(docs/PERFORMANCE.md). A backlog row holds the events one statement wrote
(a commit batch's, an ack batch's), in order; about ``batch`` events (whole
rows) per read and append; the tree is extended a slice of ``slice_events``
leaves at a time with the loop let run between slices, so a pass that
catches up a backlog does not hold the node for its whole length.

When passes come: an event waits at most ``poll_interval`` (250 ms) for
one, and while events keep coming a pass carries about ``pass_events``
(256) of them: it follows the last one that found some after as long as
that many took to arrive at the rate it saw, but not sooner than
``busy_poll_interval`` (25 ms) nor later than ``poll_interval``. Each pass
has a fixed cost besides its events' (a wake-up of the node, two statements
and their commits): at a tenth of the relay's capacity, passes every 25 ms
of about 40 events each kept the sequencer's PostgreSQL backend at 31-42 ms
of CPU a second, against 19-20 for passes of about 256 (docs/PERFORMANCE.md,
"lowload"). Passes of many more events are lumps of work (on the loop and
in PostgreSQL) that set the sends' p99 at half capacity (a 100 ms pass of
800 events: 11.9 ms against 9.8 with 25 ms, at the same CPU), which
``pass_events`` bounds: from about 10,000 events a second passes come every
25 ms, as before. An idle node polls every ``poll_interval``, one cheap
statement each.

Tree heads (size, root, timestamp) are signed with the audit key every
``sign_interval`` seconds when the tree grew, and at once when any node asks
(``NOTIFY gchat_audit_sign``, sent for an auditor's tree-head request); it
announces every head it signs on ``gchat_audit_signed``, which the asking
node waits for.
"""

import asyncio
import contextlib
import logging
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg

from crypto.identity import IdentityKeyPair
from gchat.audit.merkle import MerkleAccumulator, ProofPlan, StoredNodes, TreeHead
from gchat.audit.verify import key_id
from gchat.runtime.quietlog import QuietLog
from gchat.store import audit as store
from gchat.store.database import Database, unlisten

log = logging.getLogger("gchat.audit.sequencer")

#: Channel on which any node asks the sequencer for a fresh signed tree head.
SIGN_CHANNEL = "gchat_audit_sign"
#: Channel on which the sequencer announces each head it signed (its timestamp).
SIGNED_CHANNEL = "gchat_audit_signed"
#: Advisory lock key of the sequencer ("gchat" + 0x0a); migrations use "gchat".
LOCK_KEY = 0x67636861740A


class Sequencer:
    def __init__(
        self,
        db: Database,
        key: IdentityKeyPair,
        sign_interval: float = 5.0,
        poll_interval: float = 0.25,
        busy_poll_interval: float = 0.025,
        pass_events: int = 256,
        retry_seconds: float = 1.0,
        batch: int = 2_000,
        node_id: str = "",
        vacuum_every: int = 10_000,
        slice_events: int = 64,
    ) -> None:
        if slice_events <= 0:
            raise ValueError("slice_events must be positive")
        self._db = db
        self._key = key
        self._key_id = key_id(key.public_key)
        self._sign_interval = sign_interval
        self._poll = poll_interval
        self._busy_poll = min(busy_poll_interval, poll_interval)
        self._pass_events = pass_events
        self._retry = retry_seconds
        self._batch = batch
        self._node_id = node_id
        self._vacuum_every = vacuum_every
        self._slice = slice_events
        self._task: asyncio.Task[None] | None = None
        self._stopping = False
        self._sign_now = asyncio.Event()
        self._kick = asyncio.Event()
        self.leading = False
        self.sequenced = 0  # leaves this node appended (for tests and metrics)
        self._quiet = QuietLog(log)
        self._last_at: datetime | None = None  # ``at`` of the newest pack
        self._months: set[tuple[int, int]] = set()  # partitions known to exist
        self._moved_since_vacuum = 0

    def start(self) -> None:
        self._stopping = False
        self._task = asyncio.create_task(self._run(), name="audit-sequencer")

    async def stop(self) -> None:
        if self._task is None:
            return
        # The flag, not only the cancellation, ends the loops: an exception
        # raised while the cancellation unwinds (one did, see
        # ``store.database.unlisten``) replaces it, and the loop would retry
        # forever while the node's stop waits for it.
        self._stopping = True
        self._kick.set()
        self._task.cancel()
        await asyncio.gather(self._task, return_exceptions=True)
        self._task = None
        self.leading = False

    async def _run(self) -> None:
        while not self._stopping:
            try:
                async with self._db.pool.acquire() as conn:
                    locked = await conn.fetchval("SELECT pg_try_advisory_lock($1)", LOCK_KEY)
                    self._quiet.recovered("audit sequencer")  # the database answers
                    if locked:
                        try:
                            await self._lead(conn)
                        finally:
                            self.leading = False
                            with contextlib.suppress(Exception):
                                await conn.execute("SELECT pg_advisory_unlock($1)", LOCK_KEY)
                                await store.unpin_index_plans(conn)  # pooled: no reset
            except asyncio.CancelledError:
                raise
            except Exception as error:  # an outage: one line, then retry
                self._quiet.failure("audit sequencer", error)
            # A stop's kick can wake ``_lead`` just as the cancellation arrives,
            # and Python 3.11's ``wait_for`` then returns instead of raising it:
            # ``_lead`` ends on the flag, and this sleep would hold the node's
            # stop for the whole retry interval (1 s per node stop).
            if self._stopping:
                return
            await asyncio.sleep(self._retry)

    def _on_notify(self, *_: Any) -> None:
        self._sign_now.set()
        self._kick.set()

    async def _lead(self, conn: asyncpg.Connection) -> None:
        await store.pin_index_plans(conn)
        size = await store.log_size(conn)
        # Every pending row is unsequenced, so the first pass looks at all of them.
        horizon = store.Horizon("0")
        tree = await resume(conn, size)
        self._last_at = await store.last_pack_time(conn)
        self._months.clear()
        # This month's partition and the next, ahead of the first pass that needs them.
        today = datetime.now(UTC)
        await store.ensure_partitions(conn, [today, today.replace(day=28) + timedelta(days=4)])
        # When PostgreSQL ends the session, asyncpg hands the connection back
        # to the pool: note it, so the loop stops instead of using a
        # connection that is no longer ours.
        lost = asyncio.Event()
        conn.add_termination_listener(lambda _: lost.set())
        self.leading = True
        log.info("audit sequencer elected node=%s tree_size=%d", self._node_id, tree.size)
        latest = await store.latest_tree_head(conn)
        signed_size = latest.tree_size if latest else -1
        # The interval counts from election (monotonic time has no meaningful zero).
        last_sign = time.monotonic()
        await conn.add_listener(SIGN_CHANNEL, self._on_notify)
        found = 0
        began = time.monotonic()
        try:
            while not self._stopping:
                if lost.is_set():
                    raise ConnectionResetError("the sequencer's database session ended")
                wanted = self._sign_now.is_set()
                self._sign_now.clear()
                self._kick.clear()
                sequenced = self.sequenced
                last_began, began = began, time.monotonic()
                horizon = await self._pass(conn, tree, horizon, busy=found > 0)
                found = self.sequenced - sequenced
                now = time.monotonic()
                if wanted or (tree.size != signed_size and now - last_sign >= self._sign_interval):
                    await self._sign(conn, tree)
                    signed_size, last_sign = tree.size, now
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(
                        self._kick.wait(), self.next_pass_in(found, began - last_began)
                    )
                if lost.is_set():
                    raise ConnectionResetError("the sequencer's database session ended")
        finally:
            with contextlib.suppress(Exception):
                await unlisten(conn, SIGN_CHANNEL, self._on_notify)

    def next_pass_in(self, found: int, over: float) -> float:
        """Seconds to wait after a pass that found ``found`` events, ``over`` seconds
        after the pass before it began: as long as ``pass_events`` took to arrive
        at that rate, within [``busy_poll_interval``, ``poll_interval``].

        The kick (a tree head wanted, the node stopping) ends any wait early.
        """
        if not found:
            return self._poll
        return min(self._poll, max(self._busy_poll, over * self._pass_events / found))

    async def _pass(
        self,
        conn: asyncpg.Connection,
        tree: MerkleAccumulator,
        since: store.Horizon,
        busy: bool = False,
    ) -> store.Horizon:
        """Sequence everything committed so far; returns where the next pass looks.

        Two statements per ``batch`` events (whole backlog rows: a row is
        the events one statement wrote), each its own transaction: the
        read (one snapshot: its horizon and its events) and the append, which
        refuses unless those events are still pending exactly as read (only
        the lock holder moves events, so they are). A REPEATABLE READ
        transaction around them cost a BEGIN and a COMMIT more per pass.
        After a pass that found nothing, the idle check (one cheap statement)
        comes first; after a busy one, the read itself.
        """
        if not busy:
            horizon, pending = await store.idle_check(conn, since)
            if not pending:
                return horizon
        while True:
            events = await store.unsequenced(conn, since, self._batch)
            n = len(events)
            if n:
                # If this fails nothing was written and the term ends (the lock
                # is released): the next term rebuilds the tree from storage.
                first = tree.size
                subtrees = await self._extend(tree, events.hashes)
                await self._partitions(conn, events)
                self._last_at = await store.append_events(
                    conn, first, events, self._last_at, subtrees
                )
            self.sequenced += n
            self._moved_since_vacuum += n
            if events.complete:
                await self._vacuum(conn)
                return events.horizon

    async def _extend(self, tree: MerkleAccumulator, hashes: bytes) -> list[tuple[int, int, bytes]]:
        """Append the leaf hashes ``hashes`` (32 bytes each) to ``tree``; the subtrees
        they completed.

        On the loop every connection of the node shares, so a slice of
        ``slice_events`` leaves at a time, letting the loop run between slices.
        """
        subtrees: list[tuple[int, int, bytes]] = []
        step = 32 * self._slice
        for start in range(0, len(hashes), step):
            if start:
                await asyncio.sleep(0)
            chunk = hashes[start : start + step]
            subtrees += tree.extend([chunk[i : i + 32] for i in range(0, len(chunk), 32)])
        return subtrees

    async def _partitions(self, conn: asyncpg.Connection, events: store.Unsequenced) -> None:
        """Create the month partitions these events' packs need (once per month per term).

        Packs' times never go back and are not before ``_last_at``: they lie
        between the later of that and the oldest event's time, and the later
        of that and the newest's.
        """
        assert events.oldest is not None and events.newest is not None
        low = events.oldest if self._last_at is None else max(self._last_at, events.oldest)
        high = events.newest if self._last_at is None else max(self._last_at, events.newest)
        first, last = _month(low), _month(high)
        if first == last and first in self._months:  # the usual pass: nothing to do
            return
        needed = []
        while first <= last:
            needed.append(first)
            first = (first[0] + first[1] // 12, first[1] % 12 + 1)
        missing = [datetime(y, m, 1, tzinfo=UTC) for y, m in needed if (y, m) not in self._months]
        if missing:
            await store.ensure_partitions(conn, missing)
            self._months.update(needed)

    async def _vacuum(self, conn: asyncpg.Connection) -> None:
        """Reclaim moved backlog rows now and then (autovacuum may be off)."""
        if self._moved_since_vacuum < self._vacuum_every:
            return
        self._moved_since_vacuum = 0
        try:
            await store.vacuum_backlog(conn)
        except Exception as error:  # a role that may not vacuum: autovacuum's job then
            self._quiet.failure("audit backlog vacuum", error)

    async def _sign(self, conn: asyncpg.Connection, tree: MerkleAccumulator) -> None:
        head = TreeHead(tree.size, tree.root(), int(time.time() * 1000))
        signature = self._key.sign(head.signing_message())
        await store.insert_tree_head(
            conn,
            store.TreeHeadRow(
                head.tree_size, head.timestamp_ms, head.root_hash, signature, self._key_id
            ),
        )
        await conn.execute("SELECT pg_notify($1, $2)", SIGNED_CHANNEL, str(head.timestamp_ms))
        log.info("audit tree head signed size=%d", head.tree_size)


def _month(at: datetime) -> tuple[int, int]:
    """(year, month) of ``at`` in UTC (partitions are UTC months)."""
    if at.tzinfo is not UTC:
        at = at.astimezone(UTC)
    return at.year, at.month


async def resume(conn: asyncpg.Connection, size: int) -> MerkleAccumulator:
    """The compact range of the stored tree of ``size`` leaves, from O(log n) stored rows.

    If subtree roots are missing (leaves appended by a node older than
    migration 0006 during a rolling upgrade), they are computed once from
    the leaves with the migration's ``audit_backfill_subtrees()``.
    """
    plan = ProofPlan()
    plan.root(size)
    for attempt in range(2):
        nodes = StoredNodes(await store.stored_nodes(conn, plan.spans()))
        try:
            return MerkleAccumulator.from_state(size, nodes.compact_range(size))
        except KeyError as missing:
            if attempt:
                raise RuntimeError(f"audit log storage is incomplete: {missing}") from None
            log.warning("audit subtree roots missing (%s): computing them from the leaves", missing)
            added = await store.backfill_subtrees(conn)
            log.warning("audit subtree roots stored: %d", added)
    raise AssertionError("unreachable")
