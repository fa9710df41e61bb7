"""One device kept online across node failures: reconnect, re-authenticate, resume.

Why apart from ``Client``: a ``Client`` is one connection and ends with it;
surviving a node's failure means a new connection (to the next node), a new
authentication and the server's redelivery of what was not acked, which is
a loop around clients rather than a feature of one.
"""

import asyncio
import contextlib
import random
import ssl
from collections.abc import Awaitable, Callable
from typing import TypeVar
from uuid import UUID

from websockets.exceptions import ConnectionClosed, WebSocketException

from gchat.client.events import ClientEvent, Received, undecryptable
from gchat.client.rpc import ClientError
from gchat.client.sdk import Client
from gchat.client.state import DeviceState, StateFile
from protocol import frames as f
from protocol.errors import ErrorCode

_T = TypeVar("_T")

#: Close codes after which reconnecting is wrong: the device was revoked
#: (4403), or another connection of the same device took over (4409).
FINAL_CLOSE_CODES = frozenset({4403, 4409})


#: Errors of ``auth``/``auth_token`` that say "not now" rather than "never".
RETRYABLE_CODES = frozenset({ErrorCode.INTERNAL_ERROR, ErrorCode.RATE_LIMITED})


class Reconnecting:
    """One device kept online across node failures: reconnect, re-authenticate, resume.

    Connects to ``urls`` in turn, starting with the first (its home node).
    When the connection drops (the node stopped with 1001, was killed, or is
    unreachable) it waits a jittered exponential backoff ("full jitter":
    uniform(0, min(cap, base * 2**attempt)), so a node's clients do not all
    come back in the same instant) and connects to the next URL, presenting
    its token (``Client.authenticate`` falls back to a signature). The
    server then pushes every envelope not yet acknowledged, in order; one
    already seen (same message id) is acked and dropped, so ``received``
    yields each message once. 4403 and 4409 stop it for good
    (``final_close_code``), as does a refused authentication (``error``).

    ``call`` runs a request on whatever connection is current and runs it
    again on the next one if the connection drops before the answer: only
    for idempotent requests, such as ``send_message`` with a fixed client
    message id (the server answers a retry with the original message id).
    """

    def __init__(
        self,
        state: DeviceState,
        urls: list[str],
        *,
        json: bool = False,
        store: StateFile | None = None,
        tls: ssl.SSLContext | None = None,
        backoff_base: float = 0.05,
        backoff_cap: float = 2.0,
    ) -> None:
        if not urls:
            raise ValueError("at least one URL")
        self.state = state
        self.urls = list(urls)
        self._json = json
        self._store = store
        self._tls = tls
        self._backoff_base = backoff_base
        self._backoff_cap = backoff_cap
        self.client: Client | None = None
        self.received: asyncio.Queue[Received] = asyncio.Queue()
        self.close_codes: list[int | None] = []  # one per connection that ended
        self.connected_to: list[str] = []  # one per successful connection
        self.redelivered: list[UUID] = []  # already-seen messages pushed again
        #: What the user must be told, across every connection.
        self.events: list[ClientEvent] = []
        self.final_close_code: int | None = None
        self.error: BaseException | None = None
        self._online = asyncio.Event()
        self._changed = asyncio.Event()
        self._closing = False
        self._task: asyncio.Task[None] | None = None

    @property
    def undecryptable(self) -> list[UUID]:
        """Ids of the deliveries refused so far (see ``events`` for why)."""
        return undecryptable(self.events)

    async def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="reconnecting-client")

    async def close(self) -> None:
        self._closing = True
        client = self.client
        if client is not None:
            await client.close()
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    @property
    def done(self) -> bool:
        return self._task is not None and self._task.done()

    async def online(self, within: float = 30.0) -> Client:
        """The current connection, waiting up to ``within`` seconds for one."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + within
        while True:
            if self.client is not None:
                return self.client
            if self.done:
                raise ConnectionError(f"gave up: close code {self.final_close_code} {self.error}")
            self._changed.clear()
            remaining = deadline - loop.time()
            if remaining <= 0:
                raise TimeoutError("not connected")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait(), min(remaining, 0.5))

    async def call(self, request: Callable[[Client], Awaitable[_T]], within: float = 30.0) -> _T:
        """``request(client)`` on the current connection, retried on the next if it drops."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + within
        while True:
            client = await self.online(max(0.0, deadline - loop.time()))
            try:
                return await request(client)
            except (ConnectionError, ConnectionClosed):
                while self.client is client and loop.time() < deadline:
                    self._changed.clear()
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self._changed.wait(), 0.5)
                if loop.time() >= deadline:
                    raise

    def _backoff(self, attempt: int) -> float:
        return random.uniform(0, min(self._backoff_cap, self._backoff_base * 2**attempt))  # noqa: S311

    async def _run(self) -> None:
        attempt = 0
        index = 0
        try:
            while not self._closing:
                url = self.urls[index % len(self.urls)]
                self.state.url = url
                client = Client(
                    self.state,
                    json=self._json,
                    store=self._store,
                    tls=self._tls,
                    events=self.events,
                    redelivered=self.redelivered,
                )
                try:
                    await client.connect()
                    await client.authenticate()
                except ClientError as error:
                    await client.close()
                    if error.code not in RETRYABLE_CODES:
                        self.error = error  # refused (revoked, suspended): not a network problem
                        return
                    # The node could not answer (its database is down) or asks us
                    # to slow down: the same as a network problem, back off.
                    await asyncio.sleep(max(self._backoff(attempt), error.frame.retry_after or 0))
                    attempt += 1
                    continue
                except (OSError, ConnectionError, WebSocketException, TimeoutError):
                    await client.close()
                    index += 1
                    await asyncio.sleep(self._backoff(attempt))
                    attempt += 1
                    continue
                attempt = 0
                self.connected_to.append(url)
                self.client = client
                self._changed.set()
                try:
                    await self._pump(client)
                finally:
                    self.client = None
                    self._changed.set()
                code = client.ws.close_code
                self.close_codes.append(code)
                if code in FINAL_CLOSE_CODES:
                    self.final_close_code = code
                    return
                index += 1
                await asyncio.sleep(self._backoff(attempt))
                attempt += 1
        finally:
            self._changed.set()

    async def _pump(self, client: Client) -> None:
        """Handle pushed frames until the connection is gone."""
        reader = client.rpc.reader
        assert reader is not None
        while True:
            getter = asyncio.ensure_future(client.pushed.get())
            await asyncio.wait({getter, reader}, return_when=asyncio.FIRST_COMPLETED)
            if not getter.done():
                getter.cancel()
                if client.pushed.empty():
                    break  # closed, and every frame it had read is handled
                continue
            try:
                await self.handle(client, getter.result())
            except (ConnectionError, ConnectionClosed):
                await asyncio.wait({reader})
                break
        if not reader.cancelled():
            reader.exception()  # a dropped connection is expected here, not an error

    async def handle(self, client: Client, frame: f.ServerFrame) -> None:
        """One pushed frame (``Client.handle``); a message goes to ``received``."""
        received = await client.handle(frame)
        if received is not None:
            await self.received.put(received)
