"""The raw-relay reference: the ceiling G-Chat is measured against.

A trivial websockets server with G-Chat's transport settings (no
compression, the same ``max_size``, ``max_queue`` and ``write_limit``) that
stores nothing, checks nothing and authenticates nobody. A client says
``hello`` with its id once; after that every frame it sends names a peer
(``to``) and is forwarded to that peer byte for byte. The recipient answers
with an ``ack`` naming the sender, which travels back the same way. Per
relayed message the server reads two frames and writes two, like G-Chat
(``send`` + ``ack`` in, ``accepted`` + ``deliver`` out), but without the
database, the directory checks, the delivery stream or re-encoding.

Frames are MessagePack maps (the G-Chat subprotocol's encoding):

    {"t": "hello", "id": str}                         -> {"t": "ok"}
    {"t": "msg", "to": str, "from": str, "rid": int, "body": bytes}  forwarded
    {"t": "ack", "to": str, "rid": int}               forwarded

Run it on its own with ``python -m loadtests.raw_relay --port 0``; it prints
``raw relay listening on HOST:PORT`` once it accepts connections.
"""

from __future__ import annotations

import contextlib

import msgspec
from websockets.asyncio.server import ServerConnection
from websockets.exceptions import ConnectionClosed

from loadtests import bare_server
from protocol.version import MSGPACK_SUBPROTOCOL

SUBPROTOCOL = MSGPACK_SUBPROTOCOL


class Header(msgspec.Struct):
    """The only part of a frame the relay looks at (other keys are skipped)."""

    t: str
    to: str = ""
    id: str = ""


_decode_header = msgspec.msgpack.Decoder(Header).decode
_OK = msgspec.msgpack.encode({"t": "ok"})


class Relay:
    def __init__(self) -> None:
        self.peers: dict[str, ServerConnection] = {}
        self.relayed = 0

    async def handle(self, ws: ServerConnection) -> None:
        me = ""
        try:
            async for data in ws:
                if isinstance(data, str):
                    continue
                header = _decode_header(data)
                if header.t == "hello":
                    me = header.id
                    self.peers[me] = ws
                    await ws.send(_OK)
                    continue
                peer = self.peers.get(header.to)
                if peer is not None:
                    self.relayed += 1
                    with contextlib.suppress(ConnectionClosed):
                        await peer.send(data)
        except ConnectionClosed:
            pass
        finally:
            if me and self.peers.get(me) is ws:
                del self.peers[me]


def main(argv: list[str] | None = None) -> None:
    bare_server.main("raw_relay", Relay().handle, SUBPROTOCOL, "raw relay", argv)


if __name__ == "__main__":
    main()
