"""Background samplers that keep the node's runtime gauges fresh.

Some health signals cannot be counted where things happen: how late the
event loop runs (a blocked or saturated loop delays every connection), how
many envelopes wait in inboxes, and how far the audit sequencer is behind
the events being committed. Each sampler is a plain coroutine that loops
until cancelled; ``gchat.app`` starts them with the node and cancels them
when it stops. A failed sample is logged and retried: a metric must never
take the node down.
"""

import asyncio
import logging
from collections.abc import Callable

from gchat.runtime.metrics import NodeMetrics
from gchat.store import audit, messages
from gchat.store.database import Database

log = logging.getLogger("gchat.runtime.samplers")


#: Seconds between two samples of the event loop's lag. A stall shows only if
#: it holds up a sample's timer, so it is caught for sure only if it lasts at
#: least this long: at 0.5 s a 50 ms stall (a full collection, a long
#: callback: what sets the relay's p99, docs/PERFORMANCE.md) went unseen nine
#: times in ten. 20 wake-ups a second cost an idle node about 0.1% of a core.
LAG_INTERVAL = 0.05


async def event_loop_lag(metrics: NodeMetrics, interval: float = LAG_INTERVAL) -> None:
    """Sleep ``interval`` again and again; how much later than asked we wake is the lag."""
    loop = asyncio.get_running_loop()
    while True:
        started = loop.time()
        await asyncio.sleep(interval)
        lag = max(0.0, loop.time() - started - interval)
        metrics.event_loop_lag.set(lag)
        metrics.event_loop_lag_histogram.observe(lag)


async def database_gauges(db: Database, metrics: NodeMetrics, interval: float = 15.0) -> None:
    """Inbox depth (a growing inbox means stuck devices)."""
    while True:
        try:
            async with db.pool.acquire() as conn:
                metrics.inbox_envelopes.set(await messages.inbox_size_estimate(conn))
        except Exception as error:  # the database may be restarting: try again later
            log.warning("database gauges not sampled: %s", type(error).__name__)
        await asyncio.sleep(interval)


async def audit_backlog(
    db: Database,
    metrics: NodeMetrics,
    leading: Callable[[], bool],
    interval: float = 1.0,
    follower_interval: float = 15.0,
) -> None:
    """Events not yet in the Merkle log and the age of the oldest of them.

    Every ``interval`` on the node that sequences (a load test reads the lag
    second by second, and the statement's cost follows the backlog, not the
    log), every ``follower_interval`` on the others (they show the same
    figure; a node that never leads still tells when nobody sequences).
    """
    while True:
        try:
            async with db.pool.acquire() as conn:
                waiting, age = await audit.sequencing_backlog(conn)
            metrics.audit_unsequenced.set(waiting)
            metrics.audit_sequencer_lag.set(age)
        except Exception as error:  # the database may be restarting: try again later
            log.warning("audit backlog not sampled: %s", type(error).__name__)
        await asyncio.sleep(interval if leading() else follower_interval)
