"""Shared test fixtures: real PostgreSQL and Redis, isolated per test.

Every test that needs PostgreSQL gets its own freshly created database
(``database_url``) and every test that needs Redis gets its own key/channel
prefix (``redis_prefix``), so tests never see each other's data and the run
leaves nothing behind.  The services themselves are provided by
``bash .ci/ensure-services`` (run by ``make test``) or by the environment:

- ``GCHAT_TEST_DATABASE_URL``: an admin DSN allowed to CREATE/DROP DATABASE
  (default ``postgresql://postgres@127.0.0.1:5432/postgres``);
- ``GCHAT_TEST_REDIS_URL`` (default ``redis://127.0.0.1:6379/0``).

Database setup/teardown is synchronous (run on a private event loop in a
helper thread), so ``database_url`` works the same from sync tests, async
tests and fixtures of any loop scope, and never touches the test's loop.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import socket
import sys
import threading
from collections.abc import Coroutine, Iterator
from typing import Any, TypeVar
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import pytest

T = TypeVar("T")

DEFAULT_ADMIN_DSN = "postgresql://postgres@127.0.0.1:5432/postgres"
DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/0"

#: Databases made by this run are named ``gchat_t_<pid>_<hex>``; the pid lets
#: the session-end sweep drop this run's leftovers without touching a
#: concurrent run's (say, another pytest or an xdist worker).
TEST_DB_PREFIX = f"gchat_t_{os.getpid()}_"

_CONNECT_TIMEOUT = 10.0
_created_any_database = False


def run_sync(coro: Coroutine[Any, Any, T]) -> T:
    """Run ``coro`` to completion on a fresh event loop in a helper thread.

    A thread (rather than ``asyncio.run`` here) keeps the caller's event-loop
    state untouched, so this is safe inside pytest-asyncio tests too.
    """
    result: list[T] = []
    error: list[BaseException] = []

    def target() -> None:
        try:
            result.append(asyncio.run(coro))
        except BaseException as exc:  # re-raised in the caller's thread
            error.append(exc)

    thread = threading.Thread(target=target, name="conftest-run-sync")
    thread.start()
    thread.join()
    if error:
        raise error[0]
    return result[0]


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago (bind to port 0)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def dsn_with_database(dsn: str, database: str) -> str:
    """``dsn`` with its database name replaced (user, host, query kept)."""
    parts = urlsplit(dsn)
    return urlunsplit(parts._replace(path="/" + database))


def _quote_ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


async def _admin_connect(admin_dsn: str) -> Any:
    try:
        return await asyncpg.connect(admin_dsn, timeout=_CONNECT_TIMEOUT)
    except (TimeoutError, OSError, asyncpg.PostgresError) as exc:
        raise RuntimeError(
            f"cannot connect to the test PostgreSQL at {admin_dsn!r}: {exc!r}. "
            "Run `bash .ci/ensure-services` (or `make test`), or set "
            "GCHAT_TEST_DATABASE_URL to an admin DSN that may CREATE DATABASE."
        ) from exc


async def _create_database(admin_dsn: str, name: str) -> None:
    conn = await _admin_connect(admin_dsn)
    try:
        await conn.execute(f"CREATE DATABASE {_quote_ident(name)}")
    finally:
        await conn.close()


async def _drop_databases(admin_dsn: str, names: list[str] | None, prefix: str) -> list[str]:
    """Drop ``names``, or when None every database starting with ``prefix``."""
    conn = await _admin_connect(admin_dsn)
    try:
        if names is None:
            rows = await conn.fetch(
                "SELECT datname FROM pg_database WHERE starts_with(datname, $1)", prefix
            )
            names = [r["datname"] for r in rows]
        for name in names:
            await conn.execute(f"DROP DATABASE IF EXISTS {_quote_ident(name)} WITH (FORCE)")
        return names
    finally:
        await conn.close()


@pytest.fixture(scope="session")
def pg_admin_dsn() -> str:
    """DSN of a PostgreSQL role allowed to create and drop databases."""
    return os.environ.get("GCHAT_TEST_DATABASE_URL") or DEFAULT_ADMIN_DSN


@pytest.fixture
def database_url(pg_admin_dsn: str) -> Iterator[str]:
    """DSN of a brand-new empty database for this test only; dropped afterwards."""
    global _created_any_database
    name = f"{TEST_DB_PREFIX}{secrets.token_hex(6)}"
    _created_any_database = True
    run_sync(_create_database(pg_admin_dsn, name))
    try:
        yield dsn_with_database(pg_admin_dsn, name)
    finally:
        run_sync(_drop_databases(pg_admin_dsn, [name], TEST_DB_PREFIX))


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """Safety net: drop any ``gchat_t_<pid>_*`` database this run left behind
    (a teardown that failed or was interrupted)."""
    if not _created_any_database:
        return
    admin_dsn = os.environ.get("GCHAT_TEST_DATABASE_URL") or DEFAULT_ADMIN_DSN
    try:
        dropped = run_sync(_drop_databases(admin_dsn, None, TEST_DB_PREFIX))
    except Exception as exc:  # the run's result matters more than the sweep
        print(f"\nconftest: could not sweep test databases: {exc}", file=sys.stderr)
        return
    if dropped:
        print(f"\nconftest: dropped leftover test databases: {dropped}", file=sys.stderr)


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
    """A free TCP port on 127.0.0.1 (see :func:`free_port`)."""
    return free_port()
