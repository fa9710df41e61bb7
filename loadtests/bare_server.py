"""What the load tests' reference servers share: the node's WebSocket
settings on one port, a stop on SIGTERM or SIGINT, uvloop when present.

A reference server (``raw_relay``, ``bare_files``) differs from the node only
in its handler, so the ratio node / reference is the node's own work.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
from collections.abc import Awaitable, Callable

from websockets.asyncio.server import ServerConnection, serve

from gchat.app import WEBSOCKET_SETTINGS

Handler = Callable[[ServerConnection], Awaitable[None]]


async def serve_until_stopped(handler: Handler, subprotocol: str, what: str,
                              host: str, port: int) -> None:
    """Serve ``handler`` until a signal; print the bound address for the harness."""
    async with serve(
        handler,
        host,
        port,
        subprotocols=[subprotocol],  # type: ignore[list-item]
        **WEBSOCKET_SETTINGS,
    ) as server:
        bound = server.sockets[0].getsockname()
        print(f"{what} listening on {bound[0]}:{bound[1]}", flush=True)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            with contextlib.suppress(NotImplementedError):
                loop.add_signal_handler(signum, stop.set)
        await stop.wait()


def main(prog: str, handler: Handler, subprotocol: str, what: str,
         argv: list[str] | None = None) -> None:
    """``python -m loadtests.<prog> [--host H] [--port P]``."""
    parser = argparse.ArgumentParser(prog=f"python -m loadtests.{prog}")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    args = parser.parse_args(argv)
    running = serve_until_stopped(handler, subprotocol, what, args.host, args.port)
    try:
        import uvloop
    except ImportError:  # pragma: no cover
        asyncio.run(running)
    else:
        uvloop.run(running)
