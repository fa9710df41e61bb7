"""The node's queue of received messages keeps websockets' meaning: order,
fragments joined, text decoded (or the connection failed), flow control."""

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
import uvloop
from websockets.asyncio.client import ClientConnection, connect
from websockets.asyncio.server import ServerConnection, serve
from websockets.exceptions import ConcurrencyError, ConnectionClosed, TooManyFragments
from websockets.frames import Frame, Opcode
from websockets.protocol import State
from websockets.server import ServerProtocol

from gchat.transport import receiving
from gchat.transport.receiving import (
    MAX_FRAGMENTS,
    Messages,
    ReadingConnection,
    between_frames,
    whole_frames,
)
from tests.support import eventually


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


class Recorded:
    """What a recording server's connections received, and how they closed."""

    def __init__(self) -> None:
        self.received: list[str | bytes] = []
        self.closed: list[ConnectionClosed] = []


@contextlib.asynccontextmanager
async def recording_server(
    echo: bool = False, **options: Any
) -> AsyncIterator[tuple[int, Recorded]]:
    """A server reading through ``ReadingConnection`` (websockets' ``options``)
    that records every message, echoing it back if asked; yields its port."""
    recorded = Recorded()

    async def handler(ws: ServerConnection) -> None:
        assert isinstance(ws.recv_messages, Messages)
        try:
            async for message in ws:
                recorded.received.append(message)
                if echo:
                    await ws.send(message)
        except ConnectionClosed as error:
            recorded.closed.append(error)

    async with serve(
        handler, "127.0.0.1", 0, create_connection=ReadingConnection, **options
    ) as server:
        yield server.sockets[0].getsockname()[1], recorded


async def over_a_socket() -> None:
    async with recording_server(echo=True, max_queue=2) as (port, recorded):
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
    closed = recorded.closed
    assert recorded.received == [*sent, b"fragmented"]
    assert len(closed) == 1 and closed[0].sent is not None and closed[0].sent.code == 1007


# --- whole frames parsed by the node, the rest by websockets ------------------


def masked(frame: Frame) -> bytes:
    """``frame`` as a client sends it (masked with a random key); with its
    reserved bits set as asked, which ``serialize`` refuses to write."""
    reserved = 0x40 * frame.rsv1 | 0x20 * frame.rsv2 | 0x10 * frame.rsv3
    plain = Frame(frame.opcode, frame.data, frame.fin).serialize(mask=True)
    return bytes([plain[0] | reserved]) + plain[1:]


def parsed_by_websockets(data: bytes) -> list[Frame]:
    """What websockets' own server parser makes of ``data``, after a handshake."""
    protocol = ServerProtocol(max_size=1 << 20)
    protocol.state = State.OPEN  # as after the handshake: parse frames at once
    protocol.parser = protocol.parse()
    next(protocol.parser)
    protocol.receive_data(data)
    return [e for e in protocol.events_received() if isinstance(e, Frame)]


@pytest.mark.parametrize("size", [0, 1, 125, 126, 127, 65535, 65536, 200_000])
@pytest.mark.parametrize("opcode", [Opcode.TEXT, Opcode.BINARY])
def test_whole_frames_are_read_as_websockets_reads_them(size: int, opcode: Opcode) -> None:
    payload = bytes(32 + i % 95 for i in range(size))  # printable ASCII: valid text too
    frames = [Frame(opcode, payload), Frame(Opcode.BINARY, b"next")]
    data = b"".join(masked(frame) for frame in frames)
    taken: list[bytes | str] = []
    assert whole_frames(data, 1 << 20, taken.append) == len(data)
    assert parsed_by_websockets(data) == frames
    assert taken == [payload.decode() if opcode is Opcode.TEXT else payload, b"next"]


@pytest.mark.parametrize(
    "other",
    [
        Frame(Opcode.PING, b"ping"),
        Frame(Opcode.PONG, b"pong"),
        Frame(Opcode.CLOSE, b"\x03\xe8"),
        Frame(Opcode.BINARY, b"first of two", fin=False),
        Frame(Opcode.CONT, b"a continuation"),
        Frame(Opcode.BINARY, b"reserved bit", rsv1=True),
        Frame(Opcode.BINARY, b"x" * 101),  # over the limit below
        Frame(Opcode.TEXT, "not UTF-8: é".encode("latin-1")),
    ],
    ids=["ping", "pong", "close", "fragment", "continuation", "rsv", "too-big", "not-utf-8"],
)
def test_any_other_frame_and_what_follows_are_left_to_websockets(other: Frame) -> None:
    head = masked(Frame(Opcode.TEXT, "whølé".encode()))
    data = head + masked(other) + masked(Frame(Opcode.BINARY, b"after"))
    taken: list[bytes | str] = []
    assert whole_frames(data, 100, taken.append) == len(head)
    assert taken == ["whølé"]


def test_an_unmasked_frame_or_one_cut_short_is_left_to_websockets() -> None:
    whole = masked(Frame(Opcode.BINARY, b"whole"))
    unmasked = Frame(Opcode.BINARY, b"bare").serialize(mask=False)
    long = masked(Frame(Opcode.BINARY, b"y" * 70_000))
    for rest in [unmasked, long[:5], long[:9], long[:13], long[:-1]]:
        taken: list[bytes | str] = []
        assert whole_frames(whole + rest, 1 << 20, taken.append) == len(whole)
        assert taken == [b"whole"]


async def test_the_parser_is_between_frames_only_when_it_waits_for_a_new_one() -> None:
    """What lets the node skip websockets' parser, on websockets' real parser."""
    opened: asyncio.Future[ReadingConnection] = asyncio.get_running_loop().create_future()

    async def handler(ws: ServerConnection) -> None:
        assert isinstance(ws, ReadingConnection)
        opened.set_result(ws)
        await ws.wait_closed()

    async with serve(handler, "127.0.0.1", 0, create_connection=ReadingConnection) as server:
        port = server.sockets[0].getsockname()[1]
        async with connect(f"ws://127.0.0.1:{port}") as client:
            ws = await opened
            assert between_frames(ws.protocol)  # right after the handshake
            frame = masked(Frame(Opcode.BINARY, b"z" * 300))  # a 2-byte length after the head
            ws.protocol.receive_data(frame[:1])  # part of the head, buffered
            assert not between_frames(ws.protocol)
            ws.protocol.receive_data(frame[1:2])  # the head taken: nothing buffered, mid-frame
            assert not ws.protocol.reader.buffer and not between_frames(ws.protocol)
            ws.protocol.receive_data(frame[2:-1])
            assert not between_frames(ws.protocol)
            ws.protocol.receive_data(frame[-1:])
            assert between_frames(ws.protocol)
            assert ws.protocol.events_received() == [Frame(Opcode.BINARY, b"z" * 300)]
            fragment = masked(Frame(Opcode.BINARY, b"one", fin=False))
            ws.protocol.receive_data(fragment)  # a message under way: continuations next
            assert not between_frames(ws.protocol)
            ws.protocol.receive_data(masked(Frame(Opcode.CONT, b"two")))
            assert between_frames(ws.protocol)
            await client.close()
            await ws.wait_closed()
            assert not between_frames(ws.protocol)


async def raw_client(port: int) -> tuple[ClientConnection, asyncio.BaseTransport]:
    """A websockets client whose socket the test writes frames to by hand."""
    client = await connect(f"ws://127.0.0.1:{port}", max_size=None)
    return client, client.transport


@pytest.mark.parametrize("loop", ["asyncio", "uvloop"])
def test_frames_written_by_hand_reach_the_node_as_sent(
    loop: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Whole frames, frames cut anywhere, control frames between them, and
    the frames websockets fails the connection for, over a real socket."""
    reads: list[tuple[int, int]] = []  # (bytes read, bytes the node parsed)

    def counted(data: bytes, max_size: int | None, put: Callable[[bytes | str], None]) -> int:
        taken = whole_frames(data, max_size, put)
        reads.append((len(data), taken))
        return taken

    monkeypatch.setattr(receiving, "whole_frames", counted)
    run = uvloop.run if loop == "uvloop" else asyncio.run
    run(by_hand())
    assert reads[0][0] == reads[0][1] > 5000  # the first write: all parsed here
    # The ping's read (34 bytes, and the client's own ping perhaps): "før" here
    # (10), the ping (13), "after" (11) and what follows by websockets.
    assert any(taken == 10 and size >= 34 for size, taken in reads)
    assert (1025, 16) in reads  # 10 bytes here, the 1,001 over max_size not


async def by_hand() -> None:
    async with recording_server(max_size=1000) as (port, recorded):
        received = recorded.received
        client, transport = await raw_client(port)
        frames = [Frame(Opcode.BINARY, bytes([i]) * (i * 7)) for i in range(1, 40)]
        wire = b"".join(masked(frame) for frame in frames)
        transport.write(wire)  # many in one write
        await eventually(lambda: len(received) == len(frames))
        for at in range(len(wire)):  # then the same a byte at a time
            transport.write(wire[at : at + 1])
            if at % 50 == 0:
                await asyncio.sleep(0)
        await eventually(lambda: len(received) == 2 * len(frames))
        # A ping between two messages in one write: the node reads the first,
        # websockets the ping (it answers) and the second.
        between = [
            Frame(Opcode.TEXT, "før".encode()),
            Frame(Opcode.PING, b"between"),
            Frame(Opcode.TEXT, b"after"),
        ]
        transport.write(b"".join(masked(frame) for frame in between))
        pong = await client.ping(b"checked")  # answered after the one above
        await asyncio.wait_for(pong, 5)
        expected = [frame.data for frame in frames] * 2 + ["før", "after"]
        await eventually(lambda: received == expected)
        # Over max_size: websockets closes with 1009, as without the node's reading.
        last = [Frame(Opcode.BINARY, b"a" * 10), Frame(Opcode.BINARY, b"b" * 1001)]
        transport.write(b"".join(masked(frame) for frame in last))
        await asyncio.wait_for(client.wait_closed(), 5)
        assert client.close_code == 1009
    assert recorded.received == [*expected, b"a" * 10]
    assert len(recorded.closed) == 1


@pytest.mark.parametrize(
    ("bad", "code"),
    [
        (Frame(Opcode.BINARY, b"reserved", rsv2=True), 1002),
        (Frame(Opcode.CONT, b"nothing to continue"), 1002),
    ],
)
async def test_a_frame_websockets_refuses_fails_the_connection_alike(bad: Frame, code: int) -> None:
    async def handler(ws: ServerConnection) -> None:
        with contextlib.suppress(ConnectionClosed):
            async for _ in ws:
                pass

    async with serve(handler, "127.0.0.1", 0, create_connection=ReadingConnection) as server:
        port = server.sockets[0].getsockname()[1]
        client, transport = await raw_client(port)
        transport.write(masked(Frame(Opcode.BINARY, b"fine")) + masked(bad))
        await asyncio.wait_for(client.wait_closed(), 5)
        assert client.close_code == code
    unmasked = Frame(Opcode.BINARY, b"bare").serialize(mask=False)
    async with serve(handler, "127.0.0.1", 0, create_connection=ReadingConnection) as server:
        port = server.sockets[0].getsockname()[1]
        client, transport = await raw_client(port)
        transport.write(unmasked)
        await asyncio.wait_for(client.wait_closed(), 5)
        assert client.close_code == 1002


async def test_wait_returns_once_a_whole_message_or_the_end_is_there() -> None:
    messages = Flow().messages()
    waiter = asyncio.create_task(messages.wait())
    await asyncio.sleep(0)
    messages.put(binary(b"fir", fin=False))  # a fragment alone wakes no one
    await asyncio.sleep(0)
    assert not waiter.done()
    with pytest.raises(ConcurrencyError):
        await messages.wait()
    messages.put(Frame(Opcode.CONT, b"st"))
    await asyncio.wait_for(waiter, 1)
    await messages.wait()  # something is queued: at once
    assert messages.take() == b"first"
    ender = asyncio.create_task(messages.wait())
    await asyncio.sleep(0)
    messages.close()
    await asyncio.wait_for(ender, 1)
    await messages.wait()  # ended: at once, and take has nothing
    assert messages.take() is None


async def test_whole_messages_and_frames_queue_together_in_order() -> None:
    messages = Flow().messages(high=None)
    messages.put_message(b"one")
    messages.put(binary(b"tw", fin=False))
    messages.put(Frame(Opcode.CONT, b"o"))
    messages.put_message("three")
    messages.put_message(b"four")
    messages.put_message("five")
    assert messages.take() == b"one"
    assert messages.take() == b"two"
    assert await messages.get() == "three"
    assert await messages.get(decode=True) == "four"
    assert await messages.get(decode=False) == b"five"


def test_the_parser_is_asked_again_only_once_it_was_fed(monkeypatch: pytest.MonkeyPatch) -> None:
    """Reads the node parsed whole leave websockets' parser where it was, so it
    is not walked again; a read it was fed part of, or a close, ends that."""
    asked: list[bool] = []

    def counted(protocol: Any) -> bool:
        asked.append(between_frames(protocol))
        return asked[-1]

    monkeypatch.setattr(receiving, "between_frames", counted)
    uvloop.run(parsed_in_turn(asked))


async def parsed_in_turn(asked: list[bool]) -> None:
    async with recording_server() as (port, recorded):
        client, transport = await raw_client(port)
        asked.clear()  # the handshake's reads
        received = recorded.received
        one = masked(Frame(Opcode.BINARY, b"one"))
        for count in range(1, 4):  # whole frames, each its own read
            transport.write(one)
            await eventually(lambda count=count: len(received) == count)  # type: ignore[misc]
        assert asked == [True]  # asked once: the parser was fed nothing since
        two = masked(Frame(Opcode.BINARY, b"two"))
        transport.write(two[:3])  # cut short: websockets' parser is fed it
        await asyncio.sleep(0.05)
        transport.write(two[3:])
        await eventually(lambda: received[-1] == b"two")
        transport.write(one)
        await eventually(lambda: len(received) == 5)
        # Fed, it is asked at each read again: mid-frame, then between frames.
        assert asked == [True, False, True]
        transport.write(one)
        await eventually(lambda: len(received) == 6)
        assert len(asked) == 3
        await client.close()
