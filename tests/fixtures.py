"""The shared fixtures, loaded for every test by ``pytest_plugins`` in tests/conftest.py.

Real PostgreSQL and Redis, isolated per test:

- ``database_url``: a database of its own for this test, already migrated. It
  is a clone (``CREATE DATABASE ... TEMPLATE``) of one template that this
  process migrated once, so a test pays ~50 ms instead of create + migrate;
  it is dropped in the background after the test, so nobody waits for that.
- ``empty_database_url``: a database with nothing in it (migration tests).
- ``redis_prefix``: a key/channel prefix of its own on the shared Redis.
- ``node``/``world``/``world_with``: a real node (App over real sockets) and
  officials enrolled through the reference client.

Every database this process makes is named ``gchat_t_<pid>_...``: unique per
xdist worker, and swept at the end of the run if a teardown was skipped. The
services come from ``bash .ci/ensure-services`` (``make test``) or from:

- ``GCHAT_TEST_DATABASE_URL``: an admin DSN allowed to CREATE/DROP DATABASE
  (default ``postgresql://postgres@127.0.0.1:5432/postgres``);
- ``GCHAT_TEST_REDIS_URL`` (default ``redis://127.0.0.1:6379/0``).

Database work runs on a private event loop in a helper thread, so the
fixtures work the same from sync tests, async tests and fixtures of any loop
scope, and never touch the test's loop.
"""

from __future__ import annotations

import asyncio
import os
import queue
import secrets
import sys
import threading
from collections.abc import AsyncIterator, Callable, Coroutine, Iterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from pathlib import Path
from typing import Any, TypeVar

import asyncpg
import pytest

from gchat.app import App
from tests.session_postgres import SessionPostgres
from tests.support import (
    DEFAULT_ADMIN_DSN,
    TEST_DB_PREFIX,
    World,
    admin_connect,
    drop_databases,
    dsn_with_database,
    free_port,
    node_config,
    quote_ident,
    run_sync,
)

T = TypeVar("T")

DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/0"

class TestDatabases:
    """Creates and drops this process's test databases.

    One thread runs an event loop holding two admin connections: one creates
    (the test waits for it), one drops from a queue (nobody waits for it,
    except the end of the session). DROP DATABASE costs ~250 ms here, more
    than a clone, so taking it off the test's path is most of the win.
    """

    __test__ = False  # not a test class, whatever its name

    def __init__(self, dsn: str) -> None:
        self.dsn = dsn
        self.template: str | None = None
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self._loop.run_forever, name="test-databases", daemon=True
        )
        self._thread.start()
        self._creator: Any = None
        self._drops: queue.SimpleQueue[str | None] = queue.SimpleQueue()
        self._dropper = self._submit(self._drop_forever())

    def _submit(self, coro: Coroutine[Any, Any, T]) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self._loop)

    def _call(self, coro: Coroutine[Any, Any, T]) -> T:
        result: T = self._submit(coro).result()
        return result

    async def _create(self, name: str, template: str | None) -> None:
        if self._creator is None or self._creator.is_closed():
            self._creator = await admin_connect(self.dsn)
        sql = f"CREATE DATABASE {quote_ident(name)}"
        if template is not None:
            sql += f" TEMPLATE {quote_ident(template)}"
        await self._creator.execute(sql)

    async def _migrate_template(self) -> str:
        from gchat.store import migrations  # the app's own runner, as a node would

        name = f"{TEST_DB_PREFIX}template"
        await self._create(name, None)
        conn = await asyncpg.connect(dsn_with_database(self.dsn, name), timeout=10)
        try:
            await migrations.migrate(conn)
        finally:
            await conn.close()
        return name

    async def _drop_forever(self) -> None:
        conn = None
        while True:
            name = await asyncio.to_thread(self._drops.get)
            if name is None:
                break
            try:
                if conn is None or conn.is_closed():
                    conn = await admin_connect(self.dsn)
                await conn.execute(f"DROP DATABASE IF EXISTS {quote_ident(name)} WITH (FORCE)")
            except Exception as exc:  # the end-of-run sweep tries again
                print(f"\nfixtures: could not drop {name}: {exc!r}", file=sys.stderr)
        if conn is not None:
            await conn.close()

    def create(self, migrated: bool) -> str:
        """A new database's DSN: a clone of the migrated template, or empty."""
        if migrated and self.template is None:
            self.template = self._call(self._migrate_template())
        name = f"{TEST_DB_PREFIX}{secrets.token_hex(6)}"
        self._call(self._create(name, self.template if migrated else None))
        return dsn_with_database(self.dsn, name)

    def drop_later(self, dsn: str) -> None:
        self._drops.put(dsn.rsplit("/", 1)[1].split("?", 1)[0])

    def close(self) -> None:
        """Finish the queued drops, drop the template, stop the thread."""
        if self.template is not None:
            self._drops.put(self.template)
        self._drops.put(None)
        try:
            self._dropper.result(timeout=120)
            if self._creator is not None:
                self._call(self._creator.close())
        finally:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(timeout=10)


_databases: TestDatabases | None = None


_session_postgres: SessionPostgres | None = None


def pytest_configure(config: pytest.Config) -> None:
    """Start the run's own PostgreSQL (tests/session_postgres.py) unless
    ``GCHAT_TEST_DATABASE_URL`` names one. Only the process that runs the
    session does this (xdist workers have ``workerinput``); it exports the DSN,
    so the workers and every process a test starts use the same cluster."""
    global _session_postgres
    if hasattr(config, "workerinput") or os.environ.get("GCHAT_TEST_DATABASE_URL"):
        return
    try:
        cluster = SessionPostgres()
        os.environ["GCHAT_TEST_DATABASE_URL"] = cluster.start()
    except Exception as exc:  # e.g. no server programs here: use the system server
        print(f"\nfixtures: no test cluster ({exc}); using {DEFAULT_ADMIN_DSN}", file=sys.stderr)
        return
    _session_postgres = cluster


def pytest_unconfigure(config: pytest.Config) -> None:
    global _session_postgres
    if _session_postgres is not None:
        _session_postgres.stop()
        _session_postgres = None
        del os.environ["GCHAT_TEST_DATABASE_URL"]


@pytest.fixture(scope="session")
def pg_admin_dsn() -> str:
    """DSN of a PostgreSQL role allowed to create and drop databases."""
    return os.environ.get("GCHAT_TEST_DATABASE_URL") or DEFAULT_ADMIN_DSN


@pytest.fixture(scope="session")
def test_databases(pg_admin_dsn: str) -> Iterator[TestDatabases]:
    global _databases
    _databases = TestDatabases(pg_admin_dsn)
    try:
        yield _databases
    finally:
        _databases.close()


@pytest.fixture
def database_url(test_databases: TestDatabases) -> Iterator[str]:
    """DSN of a database for this test only, with every migration applied."""
    dsn = test_databases.create(migrated=True)
    try:
        yield dsn
    finally:
        test_databases.drop_later(dsn)


@pytest.fixture
def empty_database_url(test_databases: TestDatabases) -> Iterator[str]:
    """DSN of a brand-new empty database for this test only (no migrations)."""
    dsn = test_databases.create(migrated=False)
    try:
        yield dsn
    finally:
        test_databases.drop_later(dsn)


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """Safety net: drop any ``gchat_t_<pid>_*`` database this process left
    behind (a teardown that failed or was interrupted)."""
    if _databases is None:
        return
    try:
        dropped = run_sync(drop_databases(_databases.dsn, None, TEST_DB_PREFIX))
    except Exception as exc:  # the run's result matters more than the sweep
        print(f"\nfixtures: could not sweep test databases: {exc}", file=sys.stderr)
        return
    if dropped:
        print(f"\nfixtures: dropped leftover test databases: {dropped}", file=sys.stderr)


@pytest.fixture(scope="session")
def redis_url() -> str:
    """URL of the Redis used by tests (shared; isolate with ``redis_prefix``)."""
    return os.environ.get("GCHAT_TEST_REDIS_URL") or DEFAULT_REDIS_URL


@pytest.fixture
def redis_prefix(redis_url: str) -> Iterator[str]:
    """A key/channel prefix unique to this test, e.g. ``gchat-t-1a2b3c4d5e6f:``.

    Keys starting with it are deleted at teardown (channels need no cleanup).
    """
    prefix = f"gchat-t-{secrets.token_hex(6)}:"
    yield prefix
    import redis  # imported lazily: tests without Redis need not load it

    client = redis.Redis.from_url(redis_url, socket_connect_timeout=5, socket_timeout=10)
    try:
        keys = list(client.scan_iter(match=prefix + "*", count=1000))
        for i in range(0, len(keys), 500):
            client.delete(*keys[i : i + 500])
    except redis.ConnectionError:
        pass  # unreachable (maybe on purpose): nothing to clean that we can reach
    finally:
        client.close()


@pytest.fixture
def unused_port() -> int:
    """A free TCP port on 127.0.0.1 (see :func:`tests.support.free_port`)."""
    return free_port()


# -- a real node ------------------------------------------------------------


@pytest.fixture
async def node(database_url: str, tmp_path: Path) -> AsyncIterator[App]:
    """A started node on its own database, listening on an OS-chosen port."""
    app = App(node_config(database_url, tmp_path))
    await app.start()
    try:
        yield app
    finally:
        await app.stop()


@pytest.fixture
async def world(node: App) -> AsyncIterator[World]:
    """A node with a bootstrapped superadmin enrolled (``world.admin``)."""
    w = World(node)
    await w.start()
    try:
        yield w
    finally:
        await w.close()


WorldFactory = Callable[..., AbstractAsyncContextManager[World]]


@pytest.fixture
def world_with(database_url: str, tmp_path: Path) -> WorldFactory:
    """``async with world_with(max_group_members=3) as w``: a node with these settings."""

    @asynccontextmanager
    async def make(**overrides: object) -> AsyncIterator[World]:
        app = App(node_config(database_url, tmp_path, **overrides))
        await app.start()
        w = World(app)
        try:
            await w.start()
            yield w
        finally:
            await w.close()
            await app.stop()

    return make
