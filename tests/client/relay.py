"""A hostile relay: what a malicious server operator can do to the frames it serves.

It sits between a client and a real node, forwards every frame, records
what the node pushes, and lets a test rewrite, hold back or inject frames
on the way down, as a server that lies would. Everything it sends is a
well-formed frame; only what the frames claim is false.
"""

import asyncio
import contextlib
from collections.abc import Callable

from websockets.asyncio.client import connect
from websockets.asyncio.server import Server, ServerConnection, serve

from protocol import frames as f
from protocol.codec import client_codec
from protocol.version import MSGPACK_SUBPROTOCOL

Rewrite = Callable[[f.ServerFrame], list[f.ServerFrame]]


class HostileRelay:
    def __init__(self, upstream: str) -> None:
        self.upstream = upstream
        self.codec = client_codec(MSGPACK_SUBPROTOCOL)
        #: Applied to every frame the node pushes; returns what to pass on.
        self.rewrite: Rewrite = lambda frame: [frame]
        #: Every frame the node sent down, before any rewrite.
        self.seen: list[f.ServerFrame] = []
        self._server: Server | None = None
        self._downstream: list[ServerConnection] = []
        self._tasks: set[asyncio.Task[None]] = set()

    @property
    def url(self) -> str:
        assert self._server is not None
        port = next(iter(self._server.sockets)).getsockname()[1]
        return f"ws://127.0.0.1:{port}"

    async def start(self) -> None:
        self._server = await serve(
            self._serve, "127.0.0.1", 0, subprotocols=[MSGPACK_SUBPROTOCOL],  # type: ignore[list-item]
            compression=None, max_size=None,
        )

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    def delivers(self) -> list[f.Deliver]:
        return [frame for frame in self.seen if isinstance(frame, f.Deliver)]

    async def inject(self, frame: f.ServerFrame) -> None:
        """Push a frame to every client connected through the relay."""
        for ws in list(self._downstream):
            with contextlib.suppress(Exception):
                await ws.send(self.codec.encode(frame))

    async def _serve(self, ws: ServerConnection) -> None:
        async with connect(
            self.upstream, subprotocols=[MSGPACK_SUBPROTOCOL],  # type: ignore[list-item]
            compression=None, max_size=None,
        ) as up:
            self._downstream.append(ws)

            async def down() -> None:
                async for message in up:
                    frame = self.codec.decode(message)
                    self.seen.append(frame)
                    for out in self.rewrite(frame):
                        await ws.send(self.codec.encode(out))

            async def upward() -> None:
                async for message in ws:
                    await up.send(message)

            tasks = [asyncio.create_task(down()), asyncio.create_task(upward())]
            try:
                await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
            finally:
                self._downstream.remove(ws)
                for task in tasks:
                    task.cancel()
                await asyncio.gather(*tasks, return_exceptions=True)
