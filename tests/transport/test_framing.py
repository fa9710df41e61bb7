"""The node's own frames are byte for byte what websockets would send."""

import pytest
from websockets.frames import Frame, Opcode
from websockets.protocol import Protocol, Side, State

from gchat.transport.framing import server_frame


@pytest.mark.parametrize("size", [0, 1, 125, 126, 127, 65535, 65536, 300_000])
@pytest.mark.parametrize("text", [False, True])
def test_server_frames_match_websockets(size: int, text: bool) -> None:
    payload = bytes(i % 251 for i in range(size))
    opcode = Opcode.TEXT if text else Opcode.BINARY
    expected = Frame(opcode, payload).serialize(mask=False, extensions=[])
    assert server_frame(payload, text=text) == expected


def test_a_client_parses_them_back() -> None:
    """What a client's websockets makes of them: the messages, in order."""
    client = Protocol(Side.CLIENT, state=State.OPEN, max_size=None)
    messages: list[bytes | str] = [b"x" * 10, b"y" * 200, "z\u00e9" * 40_000]
    for message in messages:
        if isinstance(message, str):
            client.receive_data(server_frame(message.encode(), text=True))
        else:
            client.receive_data(server_frame(message))
    got = [e for e in client.events_received() if isinstance(e, Frame)]
    assert [(e.opcode, e.fin) for e in got] == [
        (Opcode.BINARY, True),
        (Opcode.BINARY, True),
        (Opcode.TEXT, True),
    ]
    assert [e.data for e in got] == [b"x" * 10, b"y" * 200, ("z\u00e9" * 40_000).encode()]
