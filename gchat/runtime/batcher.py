"""Natural batching: everything that queued while the last batch ran goes next.

Many connections ask for the same kind of database work (commit my send,
read my inbox, delete my acked envelopes). Doing it one statement per
request bounds a node by round trips; doing it for a whole batch bounds it
by rows, which PostgreSQL handles ~30x faster. A ``Batcher`` runs one batch
at a time: while it runs, new requests queue, and they form the next batch.
Under light load a batch is one request and waits for nothing; under heavy
load batches grow by themselves. One batch at a time also keeps the order
in which requests were submitted, which per-device ordering relies on:
the send committer, which keeps two batches in flight, runs two batchers
and submits each device's sends always to the same one.

Work nobody waits for (ack deletes: the window room is freed at once) may
``linger``: a batch then waits that long for company after its first
request, so at low load it still carries many requests instead of one.
Whoever does come to wait for it (a closing connection waits for its acks'
deletes) ends the wait with ``hurry``.
"""

import asyncio
import logging
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from typing import Generic, TypeVar

from gchat.runtime.quietlog import QuietLog

log = logging.getLogger("gchat.runtime.batcher")

In = TypeVar("In")
Out = TypeVar("Out")

#: Does the work for a batch; returns one result per item, in order. An
#: item may fail on its own by being given an exception as its result.
Work = Callable[[list[In]], Awaitable[Sequence[Out | BaseException]]]


class Batcher(Generic[In, Out]):
    """Runs ``work`` on batches of submitted items, one batch at a time.

    The queue is a deque with one waiter, not an ``asyncio.Queue``: a
    queue's ``put_nowait``, ``get_nowait`` and ``task_done`` are Python
    calls per item (about 2 us in all), and every send and ack queues one.
    """

    def __init__(
        self, name: str, work: Work[In, Out], max_batch: int, linger: float = 0.0
    ) -> None:
        self.name = name
        self._linger_seconds = linger
        self._quiet = QuietLog(log)
        self._work = work
        self._max_batch = max_batch
        self._queue: deque[tuple[In, asyncio.Future[Out]]] = deque()
        #: Set by ``submit`` when the task waits for a first item.
        self._waiter: asyncio.Future[None] | None = None
        #: Set while a batch lingers; ``hurry`` ends the linger.
        self._lingering: asyncio.Future[None] | None = None
        #: ``hurry`` was called since the last batch was taken.
        self._hurried = False
        #: A batch is taken and not yet answered.
        self._busy = False
        #: Set when nothing is queued or running (``stop`` waits for it).
        self._drained: asyncio.Future[None] | None = None
        #: Looked up once: ``get_running_loop`` is a ``getpid`` system call each time.
        self._loop: asyncio.AbstractEventLoop | None = None
        self._task: asyncio.Task[None] | None = None
        self.batches = 0
        self.items = 0

    def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._task = self._loop.create_task(self._run(), name=f"batcher-{self.name}")

    async def stop(self) -> None:
        """Finish what is queued, then stop."""
        if self._task is None:
            return
        self.hurry()
        while self._queue or self._busy:
            self._drained = asyncio.get_running_loop().create_future()
            await self._drained
        self._task.cancel()
        await asyncio.gather(self._task, return_exceptions=True)
        self._task = None

    def submit(self, item: In) -> asyncio.Future[Out]:
        """Queue ``item``; the future resolves when its batch is done.

        Not a coroutine: callers that must keep their submission order (a
        connection's sends) submit synchronously and await later.
        """
        loop = self._loop
        if loop is None:
            loop = self._loop = asyncio.get_running_loop()
        future: asyncio.Future[Out] = loop.create_future()
        self._queue.append((item, future))
        waiter = self._waiter
        if waiter is not None:
            self._waiter = None
            if not waiter.done():
                waiter.set_result(None)
        return future

    def hurry(self) -> None:
        """Somebody waits for what is queued: the batch that takes it lingers no more."""
        self._hurried = True
        self._end_linger()

    def _end_linger(self) -> None:
        lingering = self._lingering
        if lingering is not None and not lingering.done():
            lingering.set_result(None)

    async def _linger(self) -> None:
        assert self._loop is not None
        if self._hurried:
            return
        lingering = self._lingering = self._loop.create_future()
        timer = self._loop.call_later(self._linger_seconds, self._end_linger)
        try:
            await lingering
        finally:
            timer.cancel()
            self._lingering = None

    async def _run(self) -> None:
        assert self._loop is not None
        queue = self._queue
        while True:
            if not queue:
                drained = self._drained
                if drained is not None and not drained.done():
                    drained.set_result(None)
                self._waiter = self._loop.create_future()
                await self._waiter
                continue
            self._busy = True
            try:
                if self._linger_seconds:
                    await self._linger()
                batch = [queue.popleft() for _ in range(min(len(queue), self._max_batch))]
                if not queue:  # whoever hurried waits for this batch or an earlier one
                    self._hurried = False
                await self._process(batch)
            finally:
                self._busy = False

    async def _process(self, batch: list[tuple[In, asyncio.Future[Out]]]) -> None:
        try:
            results = await self._work([item for item, _ in batch])
        except Exception as error:
            # Each item's submitter gets the error; the log gets one line
            # per outage (a batch fails every time while PostgreSQL is down).
            self._quiet.failure(f"{self.name} batch", error)
            results = [error] * len(batch)
        else:
            self._quiet.recovered(f"{self.name} batch")
        self.batches += 1
        self.items += len(batch)
        for (_, future), result in zip(batch, results, strict=True):
            if future.done():  # the submitter went away
                continue
            if isinstance(result, BaseException):
                future.set_exception(result)
            else:
                future.set_result(result)
