"""A WebSocket client connection whose messages are handled inline, for the relay's hot loop.

websockets' asyncio connection costs the generator a task wake-up, futures
and a write per frame: ``async for`` wakes the reading task once per
message, and ``await ws.send`` writes each frame on its own. At a fixed
rate, where frames come one at a time, that was about 0.24 ms of generator
CPU per relayed message, enough to starve the node being measured on a
2-core machine. Here websockets' sans-I/O ``ClientProtocol`` runs under a
plain ``asyncio.Protocol``: the event loop calls ``data_received``, every
message read is handed to a callback in that same call, and what the
callbacks write goes out in one ``transport.write`` when they are done. No
task, no future, no wake-up per frame.

The handshake, masking, ping replies and the closing handshake stay
websockets'. Writes are not flow-controlled: a load phase writes a bounded
amount, and an open-loop generator must not wait for a slow server (the
lateness shows as latency, measured from the intended send time).
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable
from typing import cast

from websockets.client import ClientProtocol
from websockets.exceptions import ConnectionClosedError
from websockets.frames import Frame, Opcode
from websockets.protocol import State
from websockets.typing import Subprotocol
from websockets.uri import parse_uri

from protocol import limits
from protocol.version import MSGPACK_SUBPROTOCOL

#: Seconds to wait for the server to close the TCP connection after the closing handshake.
CLOSE_TIMEOUT = 2.0
#: Seconds a connection and its handshake may take (as ``open_socket``'s).
OPEN_TIMEOUT = 60.0

Handler = Callable[[bytes], None]


class Wire(asyncio.Protocol):
    """One MessagePack WebSocket connection. Until ``handle`` is called,
    received messages queue for ``recv`` (the set-up's request/reply);
    after it, each goes to the handler as soon as it is read."""

    def __init__(self, url: str) -> None:
        self._ws = ClientProtocol(
            parse_uri(url),
            subprotocols=[Subprotocol(MSGPACK_SUBPROTOCOL)],
            max_size=limits.MAX_FRAME_BYTES,
        )
        self._transport: asyncio.Transport | None = None
        loop = asyncio.get_running_loop()
        self._opened: asyncio.Future[None] = loop.create_future()
        self._closed: asyncio.Future[None] = loop.create_future()
        self._inbox: deque[bytes] = deque()
        self._waiter: asyncio.Future[None] | None = None
        self._handler: Handler = self._queue
        #: Set while messages are being handled: writes wait for the end of the read.
        self._reading = False
        self._fragments: list[bytes] = []

    @classmethod
    async def open(cls, url: str, ip: str) -> Wire:
        """Connect from the local address ``ip`` and complete the WebSocket handshake."""
        wire = cls(url)
        uri = wire._ws.uri
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(OPEN_TIMEOUT):
                await loop.create_connection(lambda: wire, uri.host, uri.port,
                                             local_addr=(ip, 0))
                await wire._opened
        except BaseException:
            wire.abort()
            raise
        if wire._ws.subprotocol != MSGPACK_SUBPROTOCOL:
            wire.abort()
            raise ConnectionError(f"the server chose subprotocol {wire._ws.subprotocol!r}")
        return wire

    # --- the application's side -----------------------------------------------------

    def handle(self, handler: Handler) -> None:
        """From now on, give every message to ``handler`` (queued ones first)."""
        while self._inbox:
            handler(self._inbox.popleft())
        self._handler = handler

    async def recv(self) -> bytes:
        """The next queued message (before ``handle``)."""
        while not self._inbox:
            if self._closed.done():
                raise self._ws.close_exc if self._ws.state is State.CLOSED else ConnectionError()
            self._waiter = asyncio.get_running_loop().create_future()
            await self._waiter
        return self._inbox.popleft()

    def write(self, message: bytes) -> None:
        """Send a binary message; while messages are being handled, it goes
        out with everything else they wrote, in one write."""
        self._ws.send_binary(message)
        if not self._reading:
            self._flush()

    async def send(self, message: bytes | str) -> None:
        """``write``, spelled as websockets' connections spell it (the set-up code is shared)."""
        if isinstance(message, str):
            raise TypeError("a MessagePack connection sends bytes")
        self.write(message)

    async def close(self) -> None:
        """The closing handshake, then wait for the server to close the TCP connection."""
        if self._ws.state is State.OPEN and self._transport is not None:
            self._ws.send_close(1000)
            self._flush()
        try:
            async with asyncio.timeout(CLOSE_TIMEOUT):
                await asyncio.shield(self._closed)
        except TimeoutError:
            self.abort()

    def abort(self) -> None:
        if self._transport is not None:
            self._transport.abort()

    # --- asyncio.Protocol -----------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass
        self._ws.send_request(self._ws.connect())
        self._flush()

    def data_received(self, data: bytes) -> None:
        ws = self._ws
        ws.receive_data(data)
        self._reading = True
        try:
            for event in ws.events_received():
                if type(event) is Frame:
                    if event.opcode is Opcode.BINARY or event.opcode is Opcode.CONT:
                        self._message(event)
                elif not self._opened.done():  # the handshake's response
                    if ws.handshake_exc is None:
                        self._opened.set_result(None)
                    else:
                        self._opened.set_exception(ws.handshake_exc)
        finally:
            self._reading = False
            self._flush()

    def eof_received(self) -> None:
        self._ws.receive_eof()
        self._flush()

    def connection_lost(self, exc: Exception | None) -> None:
        self._ws.receive_eof()  # idempotent; the state becomes CLOSED, as close_exc needs
        self._transport = None
        if not self._opened.done():
            self._opened.set_exception(exc or ConnectionClosedError(None, None))
        if not self._closed.done():
            self._closed.set_result(None)
        self._wake()

    # --- internals ------------------------------------------------------------------------

    def _message(self, frame: Frame) -> None:
        if frame.fin and not self._fragments:
            self._handler(bytes(frame.data))
            return
        self._fragments.append(bytes(frame.data))
        if frame.fin:
            message, self._fragments = b"".join(self._fragments), []
            self._handler(message)

    def _queue(self, message: bytes) -> None:
        self._inbox.append(message)
        self._wake()

    def _wake(self) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)

    def _flush(self) -> None:
        writes = self._ws.data_to_send()
        if not writes or self._transport is None:
            return
        eof = writes[-1] == b""
        if eof:
            writes.pop()
        if writes:
            self._transport.write(b"".join(writes))
        if eof and self._transport.can_write_eof():
            self._transport.write_eof()
