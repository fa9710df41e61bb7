"""The node's queue of received messages keeps websockets' meaning: order,
fragments joined, text decoded (or the connection failed), flow control."""

import asyncio

import pytest
import uvloop
from websockets.asyncio.client import connect
from websockets.asyncio.server import ServerConnection, serve
from websockets.exceptions import ConnectionClosed, TooManyFragments
from websockets.frames import Frame, Opcode

from gchat.transport.receiving import MAX_FRAGMENTS, Messages, ReadingConnection


class Flow:
    """Counts the pauses and resumes a queue asks of its transport."""

    def __init__(self) -> None:
        self.paused = 0
        self.resumed = 0

    def messages(self, high: int | None = 4) -> Messages:
        return Messages(high, None, self.pause, self.resume)

    def pause(self) -> None:
        self.paused += 1

    def resume(self) -> None:
        self.resumed += 1


def binary(data: bytes, fin: bool = True) -> Frame:
    return Frame(Opcode.BINARY, data, fin)


async def test_messages_come_out_in_order_whole_and_typed() -> None:
    messages = Flow().messages()
    messages.put(binary(b"one"))
    messages.put(Frame(Opcode.TEXT, "twö".encode()))
    messages.put(binary(b"th", fin=False))
    messages.put(Frame(Opcode.CONT, b"re", fin=False))
    messages.put(Frame(Opcode.CONT, b"e"))
    messages.put(Frame(Opcode.TEXT, b"raw"))
    assert await messages.get() == b"one"
    assert await messages.get() == "twö"
    assert await messages.get() == b"three"
    assert await messages.get(decode=False) == b"raw"


async def test_a_waiting_reader_is_woken_by_a_message_and_by_the_end() -> None:
    messages = Flow().messages()
    reader = asyncio.create_task(messages.get())
    await asyncio.sleep(0)
    messages.put(binary(b"x"))
    assert await reader == b"x"
    reader = asyncio.create_task(messages.get())
    await asyncio.sleep(0)
    messages.close()
    with pytest.raises(EOFError):
        await reader


async def test_what_came_before_the_end_is_still_read() -> None:
    messages = Flow().messages()
    messages.put(binary(b"last"))
    messages.close()
    assert await messages.get() == b"last"
    with pytest.raises(EOFError):
        await messages.get()
    with pytest.raises(EOFError):
        messages.put(binary(b"late"))


async def test_reading_pauses_above_the_high_mark_and_resumes_at_a_quarter() -> None:
    flow = Flow()
    messages = flow.messages(high=8)
    for i in range(9):
        messages.put(binary(bytes([i])))
    assert (flow.paused, flow.resumed) == (1, 0)
    messages.put(binary(b"more"))  # already paused: not asked again
    for _ in range(7):
        await messages.get()
    assert flow.resumed == 0  # 3 left, over a quarter of 8
    await messages.get()
    assert (flow.paused, flow.resumed) == (1, 1)


async def test_a_message_in_too_many_fragments_fails_the_read() -> None:
    messages = Flow().messages(high=None)
    messages.put(binary(b"", fin=False))
    for _ in range(MAX_FRAGMENTS):
        messages.put(Frame(Opcode.CONT, b"", fin=False))
    with pytest.raises(TooManyFragments):
        await messages.get()


async def test_a_message_in_the_most_fragments_allowed_is_read() -> None:
    messages = Flow().messages(high=None)
    messages.put(binary(b"a", fin=False))
    for _ in range(MAX_FRAGMENTS - 2):
        messages.put(Frame(Opcode.CONT, b"a", fin=False))
    messages.put(Frame(Opcode.CONT, b"a"))
    assert await messages.get() == b"a" * MAX_FRAGMENTS


async def test_a_reading_connection_over_a_socket() -> None:
    """recv and ``async for`` on the server keep their meaning and errors."""
    await over_a_socket()


def test_a_reading_connection_under_uvloop() -> None:
    """As a node runs it (uvloop's transports are not asyncio's classes)."""
    uvloop.run(over_a_socket())


async def over_a_socket() -> None:
    received: list[str | bytes] = []
    closed: list[ConnectionClosed] = []

    async def handler(ws: ServerConnection) -> None:
        assert isinstance(ws.recv_messages, Messages)
        try:
            async for message in ws:
                received.append(message)
                await ws.send(message)
        except ConnectionClosed as error:
            closed.append(error)

    async with serve(
        handler, "127.0.0.1", 0, create_connection=ReadingConnection, max_queue=2
    ) as server:
        port = server.sockets[0].getsockname()[1]
        async with connect(f"ws://127.0.0.1:{port}") as client:
            sent: list[str | bytes] = [b"a", "b", b"c" * 100_000]
            sent += [bytes([i]) for i in range(50)]
            for message in sent:
                await client.send(message)  # pipelined past max_queue: reading pauses
            await client.send([b"frag", b"ment", b"ed"])  # one message in three frames

            async def echoes() -> list[str | bytes]:
                return [await client.recv() for _ in range(len(sent) + 1)]

            echoed = await asyncio.wait_for(echoes(), 10)  # a pause never resumed: stuck
            assert echoed == [*sent, b"fragmented"]
            async with client.send_context():
                client.protocol.send_text(b"\xff not utf-8")
            await asyncio.wait_for(client.wait_closed(), 5)
            assert client.close_code == 1007
    assert received == [*sent, b"fragmented"]
    assert len(closed) == 1 and closed[0].sent is not None and closed[0].sent.code == 1007
