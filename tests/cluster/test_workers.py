"""``gchat serve --workers 2``: real processes, real PostgreSQL, real Redis.

- two devices on different workers of one node exchange messages exactly
  once, with Redis and without it (PostgreSQL LISTEN/NOTIFY), and exactly one
  worker sequences the audit log;
- the LISTEN connections killed with ``pg_terminate_backend`` while messages
  flow: nothing is lost, and the workers listen again;
- a worker killed with SIGKILL: the other goes on serving, its devices
  reconnect, nothing is lost, and the parent starts the worker again; the
  parent killed with SIGKILL takes its workers with it;
- SIGTERM to the parent stops every worker gracefully, exit status 0;
- a worker that cannot start: the parent stops the others and says so in
  one sentence, exit status 1.

Which worker a connection landed on is read from each worker's own
/metrics (``metrics_port`` + worker index - 1). The broker matters to the
exchange, so it runs with both; the rest runs without Redis (the new path:
a killed Redis-connected node is tests/cluster/test_chaos.py's).
"""

import asyncio
import os
import signal
import socket
import subprocess
import sys
import urllib.request
from collections.abc import AsyncIterator
from pathlib import Path
from uuid import UUID

import asyncpg
import pytest

from gchat.client.reconnecting import Reconnecting
from gchat.client.sdk import Client
from tests.cluster.harness import REPO, Cluster, People
from tests.support import eventually, free_port

pytestmark = pytest.mark.slow  # a parent and two worker processes per test

WORKERS = 2


def _bindable(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def metrics_base(count: int = WORKERS) -> int:
    """A port P with P..P+count-1 all free (one /metrics per worker)."""
    for _ in range(50):
        port = free_port()
        if all(_bindable(port + i) for i in range(1, count)):
            return port
    raise RuntimeError("no run of free ports")


def samples(port: int) -> dict[str, float]:
    url = f"http://127.0.0.1:{port}/metrics"
    with urllib.request.urlopen(url, timeout=2) as response:  # noqa: S310
        text = response.read().decode()
    values: dict[str, float] = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, value = line.rsplit(" ", 1)
            key = name.split("{", 1)[0]
            values[key] = values.get(key, 0.0) + float(value)
    return values


def metrics_port_of(pid: int) -> int:
    """The metrics port a worker was given (from its environment)."""
    pairs = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    env = dict(x.split(b"=", 1) for x in pairs if b"=" in x)
    return int(env[b"GCHAT_METRICS_PORT"])


def gone(pid: int) -> bool:
    """The process has exited (reaped, or a zombie about to be)."""
    try:
        return "zombie" in Path(f"/proc/{pid}/status").read_text().lower()
    except FileNotFoundError:
        return True


def children(pid: int) -> list[int]:
    path = Path(f"/proc/{pid}/task/{pid}/children")
    return [int(p) for p in path.read_text().split()]


class Workers:
    """One ``gchat serve --workers 2`` node (a Cluster of one, by environment)."""

    def __init__(self, cluster: Cluster, metrics: int) -> None:
        self.cluster = cluster
        self.node = cluster[0]
        self.metrics = metrics

    def authenticated(self) -> list[float]:
        return [
            samples(self.metrics + i)["gchat_authenticated_connections"] for i in range(WORKERS)
        ]

    def all_up(self) -> bool:
        try:
            self.authenticated()
        except OSError:
            return False
        return True

    @property
    def parent(self) -> int:
        assert self.node.proc is not None
        return self.node.proc.pid


@pytest.fixture(params=["postgres"])
async def workers(
    request: pytest.FixtureRequest,
    tmp_path: Path,
    database_url: str,
    redis_url: str,
    redis_prefix: str,
) -> AsyncIterator[Workers]:
    metrics = metrics_base()
    cluster = Cluster(
        tmp_path,
        database_url,
        redis_url if request.param == "redis" else "",
        redis_prefix,
        size=1,
        GCHAT_WORKERS=str(WORKERS),
        GCHAT_METRICS_PORT=str(metrics),
    )
    node = Workers(cluster, metrics)
    try:
        await cluster.start()
        await eventually(node.all_up, within=30, what="every worker's /metrics")
        yield node
    finally:
        cluster.close()
        print(cluster.logs())  # shown by pytest only when the test failed


async def on_worker(node: Workers, client: Client, want: int) -> Reconnecting:
    """``client``'s device online on worker ``want`` (0-based), by retrying the
    connection until the kernel hands it to that worker."""
    for _ in range(60):
        before = await asyncio.to_thread(node.authenticated)
        rc = Reconnecting(client.state, [node.node.url], backoff_base=0.05, backoff_cap=0.5)
        await rc.start()
        await rc.online(10)

        async def landed(before: list[float] = before) -> list[float] | None:
            now = await asyncio.to_thread(node.authenticated)
            return now if sum(now) == sum(before) + 1 else None

        now = await eventually(landed, within=10, what="the connection counted")
        if now[want] == before[want] + 1:
            return rc
        await rc.close()

        async def gone(before: list[float] = before) -> bool:
            return await asyncio.to_thread(node.authenticated) == before

        await eventually(gone, within=10, what="the connection closed")
    raise AssertionError(f"never landed on worker {want + 1}")


async def two_devices(node: Workers) -> tuple[Reconnecting, Reconnecting, People]:
    """Officials A and B, one device each, online on different workers."""
    people = People(node.cluster)
    await people.bootstrap()
    [a] = await people.official("A", [0])
    [b] = await people.official("B", [0])
    for client in people.clients:
        await client.close()
    await eventually(lambda: sum(node.authenticated()) == 0, what="enrolment connections closed")
    rc_a = await on_worker(node, a, 0)
    rc_b = await on_worker(node, b, 1)
    return rc_a, rc_b, people


async def exchange(
    sender: Reconnecting, recipient: Reconnecting, count: int, tag: str
) -> set[UUID]:
    """``count`` messages from ``sender`` to ``recipient``'s official; their ids."""
    target = recipient.state.official_id
    assert target is not None
    ids = set()
    for i in range(count):
        accepted = await sender.call(
            lambda c, i=i: c.send_message(target, f"{tag}:{i}".encode(), f"{tag}-{i}"),  # type: ignore[arg-type]
            within=30,
        )
        ids.add(accepted.message_id)
    return ids


async def receive(rc: Reconnecting, want: set[UUID], within: float = 30) -> list[UUID]:
    got: list[UUID] = []

    async def collect() -> None:
        while not want <= set(got):
            got.append((await rc.received.get()).message_id)

    await asyncio.wait_for(collect(), within)
    return got


@pytest.mark.parametrize("workers", ["postgres", "redis"], indirect=True)
async def test_devices_on_two_workers_exchange_messages(workers: Workers) -> None:
    rc_a, rc_b, people = await two_devices(workers)
    try:
        to_b, to_a = await asyncio.gather(
            exchange(rc_a, rc_b, 20, "ab"), exchange(rc_b, rc_a, 20, "ba")
        )
        got_b, got_a = await asyncio.gather(receive(rc_b, to_b), receive(rc_a, to_a))
        assert sorted(got_b) == sorted(to_b), "B: missing or repeated messages"
        assert sorted(got_a) == sorted(to_a), "A: missing or repeated messages"
        # The sends crossed workers: each worker accepted its own device's.
        accepted = [
            samples(workers.metrics + i)["gchat_sends_accepted_total"] for i in range(WORKERS)
        ]
        assert all(n >= 20 for n in accepted), accepted
        leading = [
            samples(workers.metrics + i)["gchat_audit_sequencer_leading"] for i in range(WORKERS)
        ]
        assert sum(leading) == 1, f"one audit sequencer, not {leading}"
        healthy = [samples(workers.metrics + i)["gchat_broker_healthy"] for i in range(WORKERS)]
        assert healthy == [1.0, 1.0]
    finally:
        await rc_a.close()
        await rc_b.close()
        await people.close()


async def test_listen_connections_killed_while_sending_lose_nothing(
    workers: Workers, database_url: str
) -> None:
    rc_a, rc_b, people = await two_devices(workers)
    conn = await asyncpg.connect(database_url)
    listeners = (
        "SELECT pid FROM pg_stat_activity "
        "WHERE application_name = 'gchat-signals' AND datname = current_database()"
    )
    try:
        before = {r["pid"] for r in await conn.fetch(listeners)}
        assert len(before) == WORKERS
        sending = asyncio.create_task(exchange(rc_a, rc_b, 60, "ab"))
        killed = 0
        for _ in range(3):  # kill every listener three times while A sends
            await asyncio.sleep(0)
            pids = {r["pid"] for r in await conn.fetch(listeners)}
            for pid in pids:
                killed += bool(await conn.fetchval("SELECT pg_terminate_backend($1)", pid))

            async def relistened(pids: set[int] = pids) -> bool:
                now = {r["pid"] for r in await conn.fetch(listeners)}
                return len(now) == WORKERS and not now & pids

            await eventually(relistened, within=15, what="every worker LISTENs again")
        to_b = await sending
        assert killed >= WORKERS * 3
        got = await receive(rc_b, to_b)
        assert sorted(got) == sorted(to_b), "missing or repeated messages"
        # And signals flow again without polling: a new message arrives.
        more = await exchange(rc_a, rc_b, 3, "after")
        assert sorted(await receive(rc_b, more)) == sorted(more)
    finally:
        await conn.close()
        await rc_a.close()
        await rc_b.close()
        await people.close()


async def test_a_killed_worker_leaves_the_other_serving_and_is_restarted(
    workers: Workers,
) -> None:
    rc_a, rc_b, people = await two_devices(workers)
    try:
        first = await exchange(rc_a, rc_b, 5, "before")
        assert sorted(await receive(rc_b, first)) == sorted(first)
        pids = children(workers.parent)
        assert len(pids) == WORKERS
        # Which pid is worker 2 (B's)? The one given the second metrics port.
        victim_port = workers.metrics + 1
        by_pid = {metrics_port_of(pid): pid for pid in pids}
        os.kill(by_pid[victim_port], signal.SIGKILL)
        # A (on worker 1) keeps sending; B reconnects, to whichever worker.
        during = await exchange(rc_a, rc_b, 20, "during")
        got = await receive(rc_b, during)
        assert sorted(got) == sorted(during), "missing or repeated messages"
        assert workers.node.alive, "the parent went down with the worker"
        assert rc_a.close_codes == [], "worker 1's connection was disturbed"

        def restarted() -> bool:
            now = children(workers.parent)
            return len(now) == WORKERS and by_pid[victim_port] not in now

        await eventually(restarted, within=20, what="the parent restarts worker 2")
        await eventually(workers.all_up, within=30, what="worker 2's /metrics back")
        assert "worker 2 (pid" in workers.node.log_text()
        # The parent killed outright: its workers do not linger on the port.
        survivors = children(workers.parent)
        os.kill(workers.parent, signal.SIGKILL)
        await eventually(
            lambda: all(gone(p) for p in survivors),
            within=20,
            what="the workers stop with their parent",
        )
    finally:
        await rc_a.close()
        await rc_b.close()
        await people.close()


async def test_sigterm_stops_every_worker_gracefully(workers: Workers) -> None:
    rc_a, rc_b, people = await two_devices(workers)
    try:
        pids = children(workers.parent)
        assert len(pids) == WORKERS
        os.kill(workers.parent, signal.SIGTERM)  # the parent only, as systemd would
        assert await asyncio.to_thread(workers.node.wait, 40) == 0
        for pid in pids:
            assert gone(pid), f"worker {pid} outlived its parent"
        log = workers.node.log_text()
        for i in range(1, WORKERS + 1):
            assert f"stopped node=node0-w{i}" in log
        # Each device was told to go away (1001), not cut off.
        await eventually(lambda: 1001 in rc_a.close_codes and 1001 in rc_b.close_codes)
    finally:
        await rc_a.close()
        await rc_b.close()
        await people.close()


def _serve(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "gchat", "serve"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=90,
        check=False,
    )


def _env(tmp_path: Path, database_url: str, **extra: str) -> dict[str, str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith("GCHAT_")}
    return (
        base
        | {
            "GCHAT_DATABASE_URL": database_url,
            "GCHAT_DATA_DIR": str(tmp_path / "data"),
            "GCHAT_WORKERS": str(WORKERS),
            "GCHAT_DB_POOL_SIZE": "4",
            "PYTHONUNBUFFERED": "1",
        }
        | extra
    )


def test_a_worker_that_cannot_start_stops_the_others_with_one_sentence(
    tmp_path: Path, database_url: str
) -> None:
    metrics = metrics_base()
    with socket.socket() as taken:  # worker 2's metrics port, held by someone else
        taken.bind(("127.0.0.1", metrics + 1))
        taken.listen()
        result = _serve(
            _env(
                tmp_path,
                database_url,
                GCHAT_PORT=str(free_port()),
                GCHAT_METRICS_PORT=str(metrics),
            )
        )
    assert result.returncode == 1
    last = result.stderr.strip().splitlines()[-1]
    assert last == "gchat: worker 2 of 2 could not start (exit status 1); its error is above"
    assert "Traceback" not in result.stderr
    assert "stopped node=" in result.stderr + result.stdout  # worker 1 was stopped, not left


def test_a_port_in_use_is_one_sentence(tmp_path: Path, database_url: str) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = _serve(_env(tmp_path, database_url, GCHAT_PORT=str(port)))
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [
        f"gchat: cannot listen on 127.0.0.1 port {port}: Address already in use"
    ]
