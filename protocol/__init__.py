"""G-Chat wire protocol, sans-I/O.

Frame types (``frames``), the JSON and MessagePack codecs chosen by WebSocket
subprotocol (``codec``, ``version``), one table of limits (``limits``), stable
error and close codes (``errors``) and the connection state machine
(``session``). This package does no I/O and imports neither asyncio nor
anything from ``gchat``: the server and the clients are thin adapters around it.
"""
