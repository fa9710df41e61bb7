"""Protocol versions and their WebSocket subprotocol names.

The subprotocol names both the protocol version and the codec, so the
handshake alone settles how every later frame is read: ``gchat.v1+json``
uses text frames with JSON, ``gchat.v1+msgpack`` binary frames with
MessagePack. A client offers the names it supports in preference order; the
server picks its first supported one, or refuses the handshake (HTTP 400).
"""

from collections.abc import Sequence
from typing import Final

PROTOCOL_VERSION: Final = 1
JSON_SUBPROTOCOL: Final = "gchat.v1+json"
MSGPACK_SUBPROTOCOL: Final = "gchat.v1+msgpack"
SUBPROTOCOLS: Final = (MSGPACK_SUBPROTOCOL, JSON_SUBPROTOCOL)


def negotiate(offered: Sequence[str]) -> str | None:
    """Return the first subprotocol the client offered that we speak.

    The client's order wins: it knows which codec it handles best.
    """
    for name in offered:
        if name in SUBPROTOCOLS:
            return name
    return None
