"""One WebSocket connection to a node: requests matched to replies, pushes queued.

Why a module of its own: everything above it (enrolment, pairwise
sessions, groups, reconnection) speaks in requests and pushed frames, and
none of it should know how a reply finds the request that asked. A reader
task routes each frame with a ``rid`` we are waiting for to that request and
queues everything else (``deliver``, ``queue_empty``, ``prekeys_low``...)
in ``pushed``. A lost connection is one error, ``ConnectionError``.
"""

import asyncio
import itertools
import ssl
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from protocol import frames as f
from protocol.codec import Codec, client_codec
from protocol.errors import ErrorCode
from protocol.version import JSON_SUBPROTOCOL, MSGPACK_SUBPROTOCOL

_T = TypeVar("_T")


class ClientError(Exception):
    """The server answered a request with an error frame.

    ``code`` is the frame's code: compare it with ``protocol.errors.ErrorCode``
    members (a newer server may send a code this client does not know).
    Failures of the client itself are ``gchat.client.errors.ClientSideError``.
    """

    def __init__(self, frame: f.Error) -> None:
        super().__init__(f"{frame.code}: {frame.message}")
        self.code = frame.code
        self.frame = frame


async def retrying(
    code: ErrorCode,
    attempt: Callable[[], Awaitable[_T]],
    repair: Callable[[ClientError], Awaitable[None]],
    tries: int = 4,
) -> _T:
    """``attempt()``; when the server answers ``code``, ``repair`` and try again.

    For requests the server refuses until the client catches up (new
    devices, a newer membership): up to ``tries`` attempts in all, the last
    refusal is raised. Any other error is raised at once.
    """
    for _ in range(tries - 1):
        try:
            return await attempt()
        except ClientError as error:
            if error.code != code:
                raise
            await repair(error)
    return await attempt()


async def _checked(reply: "asyncio.Future[Any]") -> Any:
    frame = await reply
    if isinstance(frame, f.Error):
        raise ClientError(frame)
    return frame


class Rpc:
    """A connection: ``request`` awaits its reply, ``pushed`` holds the rest."""

    def __init__(
        self,
        *,
        json: bool = False,
        tls: ssl.SSLContext | None = None,
        options: dict[str, Any] | None = None,
    ) -> None:
        #: Trust for wss:// (``gchat.client.tls``); None: the system's CAs.
        self._tls = tls
        #: Further ``websockets`` connect arguments (a load test's local address).
        self._options = {"open_timeout": 10, **(options or {})}
        self._subprotocol = JSON_SUBPROTOCOL if json else MSGPACK_SUBPROTOCOL
        self._codec: Codec[f.ServerFrame] = client_codec(self._subprotocol)
        self._ws: ClientConnection | None = None
        self._rids = itertools.count(1)
        self._pending: dict[int, asyncio.Future[Any]] = {}
        self.pushed: asyncio.Queue[f.ServerFrame] = asyncio.Queue()
        #: The task reading frames; it ends when the connection does.
        self.reader: asyncio.Task[None] | None = None
        self.challenge: f.Challenge | None = None

    async def connect(self, url: str) -> f.Challenge:
        """Open the connection; the node's first frame is its challenge."""
        # websockets refuses an ``ssl`` argument for a ws:// URL.
        tls: dict[str, Any] = {"ssl": self._tls} if self._tls and url.startswith("wss:") else {}
        self._ws = await connect(
            url,
            subprotocols=[self._subprotocol],  # type: ignore[list-item]
            compression=None,
            max_size=None,
            **tls,
            **self._options,
        )
        first = self._codec.decode(await self._ws.recv())
        if not isinstance(first, f.Challenge):
            raise ConnectionError(f"expected a challenge, got {type(first).__name__}")
        self.challenge = first
        self.reader = asyncio.create_task(self._read())
        return first

    async def close(self) -> None:
        if self._ws is not None:
            await self._ws.close()
        if self.reader is not None:
            await asyncio.gather(self.reader, return_exceptions=True)

    @property
    def ws(self) -> ClientConnection:
        assert self._ws is not None, "not connected"
        return self._ws

    def encode(self, frame: Any) -> bytes | str:
        """A frame as this connection's subprotocol puts it on the wire."""
        return self._codec.encode(frame)

    async def _read(self) -> None:
        try:
            async for message in self.ws:
                frame = self._codec.decode(message)
                rid = getattr(frame, "rid", None)
                if rid is not None and rid in self._pending:
                    self._pending.pop(rid).set_result(frame)
                else:
                    await self.pushed.put(frame)
        finally:
            for future in self._pending.values():
                if not future.done():
                    future.set_exception(ConnectionError("connection closed"))
            self._pending.clear()

    async def send_frame(self, frame: Any) -> None:
        await self.ws.send(self._codec.encode(frame))

    async def request(self, make: Any, **fields: Any) -> Any:
        """Send a request frame built as ``make(rid=..., **fields)``; await its reply."""
        return await (await self.submit(make, **fields))

    async def submit(self, make: Any, **fields: Any) -> "asyncio.Future[Any]":
        """Send a request now and return its reply to await later.

        For pipelining (attachment chunks): several requests in flight, sent
        in the order of the calls; the server answers them in that order.
        The future raises ClientError for an error reply, ConnectionError if
        the connection goes first.
        """
        rid = next(self._rids)
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._pending[rid] = future
        try:
            await self.send_frame(make(rid=rid, **fields))
        except BaseException as error:
            self._pending.pop(rid, None)
            future.cancel()
            if isinstance(error, ConnectionClosed):  # one error for "the connection went"
                raise ConnectionError(f"connection closed: {error}") from error
            raise
        return asyncio.ensure_future(_checked(future))

    async def receive(self, wait: float | None = None) -> f.ServerFrame:
        """The next frame the server pushed (deliver, queue_empty, prekeys_low...)."""
        return await asyncio.wait_for(self.pushed.get(), wait)

    async def ack(self, positions: list[int]) -> None:
        await self.send_frame(f.Ack(positions=positions))
