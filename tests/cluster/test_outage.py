"""PostgreSQL stopped for ten seconds under load: quiet logs, nothing accepted lost.

A real node process on its own private PostgreSQL cluster
(``EmbeddedPostgres``, which this test stops and starts) and its own
redis-server (the shared services are never touched). Four devices send to
each other all the time, retrying refused sends with the same client
message id, while PostgreSQL is stopped for 10 s. Then:

- the node's log holds at most a few dozen lines from the outage's start
  until it has recovered, and no traceback at all (every failure in an
  outage is an expected one);
- every send the node accepted reached every recipient device, exactly once
  per connection and in per-sender order.
"""

import asyncio
import os
import shutil
import tempfile
import time
from collections import Counter, defaultdict
from collections.abc import AsyncIterator
from pathlib import Path
from uuid import UUID

import pytest

from gchat.client.events import Received
from gchat.client.reconnecting import Reconnecting
from gchat.client.rpc import ClientError
from gchat.client.sdk import Client
from gchat.runtime.embedded_postgres import EmbeddedPostgres, find_binaries
from tests.cluster.harness import Cluster, People
from tests.cluster.support import PrivateRedis
from tests.support import eventually

OUTAGE_SECONDS = 10.0
#: "A few dozen": what the log may hold for the whole outage.
MAX_OUTAGE_LINES = 40


@pytest.fixture
async def private_postgres() -> AsyncIterator[EmbeddedPostgres]:
    """A cluster under /tmp (the postgres account must be able to enter it)."""
    if find_binaries() is None:
        pytest.fail("PostgreSQL server binaries are missing (make services installs them)")
    base = Path(tempfile.mkdtemp(prefix="gchat-outage-", dir="/tmp"))  # noqa: S108
    os.chmod(base, 0o711)  # noqa: ASYNC240 (a fixture's one-off setup)
    pg = EmbeddedPostgres(base / "pg", fsync=False)
    await pg.start()
    try:
        yield pg
    finally:
        await pg.stop()
        shutil.rmtree(base, ignore_errors=True)


async def test_postgres_outage_under_load_is_quiet_and_loses_nothing(
    tmp_path: Path, private_postgres: EmbeddedPostgres
) -> None:
    pg = private_postgres
    redis = PrivateRedis()
    redis.start()
    cluster = Cluster(tmp_path, pg.dsn(), redis.url, "gchat-outage:", size=1)
    people = People(cluster)
    online: list[Reconnecting] = []
    collectors: list[asyncio.Task[None]] = []
    try:
        await cluster.start()
        await people.bootstrap()
        devices: list[Client] = []
        for n in range(4):
            devices += await people.official(f"P{n}", [0])
        official_of = {c.state.device_id: c.state.official_id for c in devices}
        for c in devices:
            await c.close()
            rc = Reconnecting(c.state, cluster.urls, backoff_base=0.05, backoff_cap=0.5)
            await rc.start()
            online.append(rc)
        for rc in online:
            await rc.online(10)

        accepted: dict[UUID, tuple[UUID, UUID]] = {}  # message id -> (sender device, to)
        refused: Counter[str] = Counter()
        stop = asyncio.Event()

        async def lane(rc: Reconnecting) -> None:
            me, mine = rc.state.device_id, rc.state.official_id
            assert me is not None and mine is not None
            others = sorted(o for o in set(official_of.values()) if o != mine)  # type: ignore[type-var]
            seq = 0
            while not stop.is_set():
                target = others[seq % len(others)]
                body, cid = f"{me}:{seq}".encode(), f"c-{seq}"
                try:
                    reply = await rc.call(
                        lambda c, t=target, b=body, i=cid: c.send_message(t, b, i), within=60
                    )
                except ClientError as error:  # refused while the database is down
                    refused[error.code] += 1
                    await asyncio.sleep(0.1)
                    continue  # the same seq again: the same client message id
                accepted[reply.message_id] = (me, target)
                seq += 1
                await asyncio.sleep(0.03)

        got: dict[UUID, list[Received]] = defaultdict(list)  # device -> messages, in order

        async def collect(rc: Reconnecting) -> None:
            assert rc.state.device_id is not None
            while True:
                got[rc.state.device_id].append(await rc.received.get())

        collectors = [asyncio.create_task(collect(rc)) for rc in online]
        lanes = [asyncio.create_task(lane(rc)) for rc in online]
        await eventually(lambda: len(accepted) >= 20, within=30, what="traffic before the outage")
        log_path = cluster[0].log_path
        outage_offset = log_path.stat().st_size
        before = len(accepted)
        await pg.stop()
        down_at = time.monotonic()
        await asyncio.sleep(OUTAGE_SECONDS)  # the scenario itself, not a wait for anything
        await pg.start()
        up_after = time.monotonic() - down_at
        # Until sends are accepted again, then a little longer.
        during = len(accepted)
        await eventually(lambda: len(accepted) > during + 8, within=30, what="sends resume")
        resumed = len(accepted)
        await eventually(lambda: len(accepted) >= resumed + 40, within=30, what="traffic after")
        stop.set()
        await asyncio.wait_for(asyncio.gather(*lanes), 90)

        outage_log = log_path.read_bytes()[outage_offset:].decode(errors="replace")
        lines = [line for line in outage_log.splitlines() if line.strip()]

        want: dict[UUID, set[UUID]] = defaultdict(set)
        devices_of: dict[UUID, set[UUID]] = defaultdict(set)
        for device, official in official_of.items():
            devices_of[official].add(device)  # type: ignore[index,arg-type]
        for message_id, (_, to) in accepted.items():
            for device in devices_of[to]:
                want[device].add(message_id)

        def received(device: UUID) -> set[UUID]:
            return {m.message_id for m in got[device]}

        await eventually(
            lambda: all(received(d) >= ids for d, ids in want.items()),
            within=30, what="every accepted message delivered",
        )
        missing = sum(len(ids - received(d)) for d, ids in want.items())
        print(
            f"\noutage: postgres down {up_after:.1f}s; {len(accepted)} accepted "
            f"({before} before it), refused during it: {dict(refused)}; missing={missing}; "
            f"{len(lines)} log lines for the outage:\n" + "\n".join(lines)
        )
        assert missing == 0
        assert refused, "the outage refused nothing: was the database really stopped?"
        whole_log = log_path.read_text(errors="replace")
        assert "Traceback" not in whole_log
        assert "released back to the pool" not in whole_log  # the sequencer let go in time
        assert len(lines) <= MAX_OUTAGE_LINES, f"{len(lines)} lines"
        for rc in online:
            assert rc.undecryptable == []
            order: dict[str, list[int]] = defaultdict(list)
            assert rc.state.device_id is not None
            for message in got[rc.state.device_id]:
                sender, seq = message.plaintext.decode().rsplit(":", 1)
                order[sender].append(int(seq))
            for sender, numbers in order.items():
                assert numbers == sorted(numbers), f"out of order from {sender}"
                assert len(numbers) == len(set(numbers)), f"duplicate from {sender}"
    finally:
        for task in collectors:
            task.cancel()
        for rc in online:
            await rc.close()
        await people.close()
        cluster.close()
        redis.kill()
