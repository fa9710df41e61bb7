"""Plain helpers for tests (no fixtures: those live in ``tests/fixtures.py``).

Import what you need from here: ``eventually`` instead of a fixed sleep,
``free_port`` for a server a test starts itself, ``World``/``node_config``
for a real node, ``run_sync`` to run a coroutine from synchronous code.
"""

from __future__ import annotations

import asyncio
import inspect
import os
import random
import socket
import threading
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlsplit, urlunsplit
from uuid import UUID

import asyncpg

from crypto.identity import IdentityKeyPair
from gchat.app import App
from gchat.client.rpc import ClientError
from gchat.client.sdk import Client
from gchat.client.state import DeviceState
from gchat.config import Config
from gchat.directory.service import Directory
from protocol.frames import CreateOfficial, Deliver, IssueCode

T = TypeVar("T")


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

    thread = threading.Thread(target=target, name="tests-run-sync")
    thread.start()
    thread.join()
    if error:
        raise error[0]
    return result[0]


async def eventually(
    check: Callable[[], object | Awaitable[object]],
    within: float = 5.0,
    step: float = 0.02,
    what: str = "",
) -> Any:
    """Poll ``check`` until it returns a truthy value (returned) or time runs out.

    Use it instead of ``asyncio.sleep(guess)``: the test goes on as soon as the
    thing happened, and a slow machine gets ``within`` seconds, not a guess.
    ``check`` may be sync or async; an ``AssertionError`` it raises counts as
    "not yet", so ``lambda: assert ...``-style checks work too, and the last
    one is re-raised with the timeout message.
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    last: AssertionError | None = None
    while True:
        try:
            value = check()
            if inspect.isawaitable(value):
                value = await value
            if value:
                return value
        except AssertionError as error:
            last = error
        if loop.time() > deadline:
            raise AssertionError(f"not within {within}s: {what or check}") from last
        await asyncio.sleep(step)


async def stays(
    check: Callable[[], object | Awaitable[object]], during: float = 0.3, step: float = 0.02
) -> None:
    """Assert ``check`` stays truthy for ``during`` seconds (nothing extra arrives).

    The one place a test must wait a fixed time: proving something does *not*
    happen. Name it, so the intent shows and the duration is in one place.
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + during
    while loop.time() < deadline:
        value = check()
        if inspect.isawaitable(value):
            value = await value
        assert value, f"stopped holding within {during}s: {check}"
        await asyncio.sleep(step)


class FakeClock:
    """A clock for code that takes one (``clock=``): time moves when the test says."""

    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def unread(client: Client, kind: type[T]) -> list[T]:
    """Frames of type ``kind`` the server pushed to ``client`` that nobody read yet.

    Leaves the client's push queue as it was: asyncio.Queue has no peek, so
    the frames are taken out and put back in order in one synchronous step
    (no other task runs in between).
    """
    queue = client.pushed
    queued = [queue.get_nowait() for _ in range(queue.qsize())]
    for frame in queued:
        queue.put_nowait(frame)
    return [frame for frame in queued if isinstance(frame, kind)]


async def drain(client: Client, count: int, wait: float = 5.0) -> list[Deliver]:
    """Collect ``count`` deliveries (acking each), skipping other pushes."""
    got: list[Deliver] = []
    while len(got) < count:
        frame = await client.receive(wait)
        if isinstance(frame, Deliver):
            got.append(frame)
            await client.ack([frame.position])
    return got


async def expect_error(code: str, call: Awaitable[object]) -> ClientError:
    """Await ``call`` and check that the server refused it with ``code``."""
    try:
        await call
    except ClientError as error:
        assert error.code == code, error
        return error
    raise AssertionError(f"not refused; expected {code}")


# -- ports -----------------------------------------------------------------

#: Ports handed out below the kernel's ephemeral range (32768+ on Linux), so a
#: port a test picked is not taken meanwhile as the source port of some
#: outgoing connection. Each xdist worker gets its own residue class, so two
#: workers of one run never pick the same port.
_PORT_LOW, _PORT_HIGH, _PORT_CLASSES = 20000, 32000, 16
_handed_out: set[int] = set()


def _worker_index() -> int:
    name = os.environ.get("PYTEST_XDIST_WORKER", "gw0")
    digits = name.removeprefix("gw")
    return int(digits) if digits.isdigit() else 0


def free_port() -> int:
    """A TCP port on 127.0.0.1 that is free now and not handed out before.

    Picked at random from this worker's share of 20000-32000 and checked by
    binding it; falls back to the kernel's choice (port 0) if none is found.
    """
    residue = _worker_index() % _PORT_CLASSES
    for _ in range(200):
        port = random.randrange(_PORT_LOW + residue, _PORT_HIGH, _PORT_CLASSES)
        if port in _handed_out:
            continue
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
        _handed_out.add(port)
        return port
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        chosen: int = s.getsockname()[1]
        return chosen


def dsn_with_database(dsn: str, database: str) -> str:
    """``dsn`` with its database name replaced (user, host, query kept)."""
    parts = urlsplit(dsn)
    return urlunsplit(parts._replace(path="/" + database))


# -- databases -------------------------------------------------------------

DEFAULT_ADMIN_DSN = "postgresql://postgres@127.0.0.1:5432/postgres"

#: The pid makes names unique per process (each xdist worker is one), and lets
#: the end-of-run sweep drop this process's leftovers and nobody else's.
TEST_DB_PREFIX = f"gchat_t_{os.getpid()}_"

_CONNECT_TIMEOUT = 10.0


def quote_ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


async def admin_connect(dsn: str) -> Any:
    try:
        return await asyncpg.connect(dsn, timeout=_CONNECT_TIMEOUT)
    except (TimeoutError, OSError, asyncpg.PostgresError) as exc:
        raise RuntimeError(
            f"cannot connect to the test PostgreSQL at {dsn!r}: {exc!r}. "
            "Run `bash .ci/ensure-services` (or `make test`), or set "
            "GCHAT_TEST_DATABASE_URL to an admin DSN that may CREATE DATABASE."
        ) from exc


async def create_database(dsn: str, name: str) -> None:
    """Create an empty database ``name`` (for a test that manages its own)."""
    conn = await admin_connect(dsn)
    try:
        await conn.execute(f"CREATE DATABASE {quote_ident(name)}")
    finally:
        await conn.close()


async def drop_databases(dsn: str, names: list[str] | None, prefix: str) -> list[str]:
    """Drop ``names``, or when None every database whose name starts with ``prefix``."""
    conn = await admin_connect(dsn)
    try:
        if names is None:
            rows = await conn.fetch(
                "SELECT datname FROM pg_database WHERE starts_with(datname, $1)", prefix
            )
            names = [r["datname"] for r in rows]
        for name in names:
            await conn.execute(f"DROP DATABASE IF EXISTS {quote_ident(name)} WITH (FORCE)")
        return names
    finally:
        await conn.close()



# -- a real node and the people on it ---------------------------------------


def node_config(database_url: str, data_dir: Path, **overrides: object) -> Config:
    """A node's configuration for tests: an OS-chosen port, a small pool.

    No officials' web app (``web_dir`` names a folder that does not exist):
    loading it gzips every asset at level 9, ~0.2 s of CPU per node start,
    and only the node processes of tests/web serve it to a browser.
    """
    settings: dict[str, object] = {"web_dir": data_dir / "no-web-app", **overrides}
    return Config(
        host="127.0.0.1",
        port=0,
        data_dir=data_dir,
        database_url=database_url,
        node_id="test-node",
        db_pool_size=5,
        **settings,  # type: ignore[arg-type]
    )


def url_of(app: App) -> str:
    return f"ws://127.0.0.1:{app.port}"


@dataclass
class World:
    """Officials and devices of one test, made through the real protocol."""

    app: App
    admin: Client | None = None
    clients: list[Client] = field(default_factory=list)

    @property
    def url(self) -> str:
        return url_of(self.app)

    async def start(self) -> None:
        assert self.app.db is not None
        directory = Directory(self.app.db, 3600, self.app.audit)
        _, _, code = await directory.bootstrap("MIN", "Ministry", "Admin")
        self.admin = await self.enroll(code, "admin-phone")

    async def enroll(self, code: str, name: str = "phone") -> Client:
        client = Client(DeviceState(url=self.url, identity_seed=IdentityKeyPair.generate().seed))
        await client.connect()
        await client.enroll(code, name)
        self.clients.append(client)
        return client

    async def new_code(self, official_id: UUID) -> str:
        assert self.admin is not None
        reply = await self.admin.request(IssueCode, official_id=official_id)
        return str(reply.code)

    async def new_official(self, name: str) -> UUID:
        assert self.admin is not None
        reply = await self.admin.request(CreateOfficial, name=name)
        return UUID(str(reply.official_id))

    async def official_with_device(self, name: str) -> Client:
        official = await self.new_official(name)
        return await self.enroll(await self.new_code(official), f"{name}-phone")

    async def reconnect(self, client: Client) -> Client:
        """The same device on a fresh connection (token auth)."""
        fresh = Client(client.state)
        await fresh.connect()
        await fresh.authenticate()
        self.clients.append(fresh)
        return fresh

    async def close(self) -> None:
        await asyncio.gather(*(c.close() for c in self.clients), return_exceptions=True)
