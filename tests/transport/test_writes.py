"""Frames a connection writes from callbacks leave in one write per turn, in order."""

import asyncio
from functools import partial
from typing import Any
from uuid import uuid4

import msgspec
from websockets.protocol import State
from websockets.server import ServerProtocol

from gchat.handling import Later
from gchat.transport.connection import Connection, Services
from protocol import frames as f
from protocol.version import MSGPACK_SUBPROTOCOL


class Transport:
    """Records what the connection writes."""

    def __init__(self) -> None:
        self.writes: list[list[bytes]] = []
        self.closing = False

    def writelines(self, data: list[bytes]) -> None:
        self.writes.append(list(data))

    def is_closing(self) -> bool:
        return self.closing


class Socket:
    """The parts of websockets' ServerConnection that ``write_now`` uses."""

    def __init__(self) -> None:
        self.protocol = ServerProtocol()
        self.protocol.state = State.OPEN
        self.transport = Transport()
        self.paused = False
        self.loop = asyncio.get_running_loop()
        self.subprotocol = MSGPACK_SUBPROTOCOL
        self.remote_address = ("127.0.0.1", 1)
        self.request = None


def node_services() -> Services:
    nothing: Any = None
    return Services(
        db=nothing, inbox=nothing, broker=nothing, auth=nothing, enrolment=nothing,
        keys=nothing, requests={}, server_id="s", node_id="n", max_unacked=10, auth_timeout=5,
    )  # fmt: skip


def connection(ws: Socket, services: Services | None = None) -> Connection:
    return Connection(ws, services or node_services())  # type: ignore[arg-type]


def frames_in(write: list[bytes]) -> list[object]:
    """The G-Chat frames in one write (unmasked server frames, each under 126 bytes)."""
    data = b"".join(write)
    found: list[object] = []
    while data:
        assert data[0] == 0x82 and data[1] < 126  # binary, final, one-byte length
        found.append(msgspec.msgpack.decode(data[2 : 2 + data[1]], type=f.ServerFrame))
        data = data[2 + data[1] :]
    return found


def accepted(rid: int) -> f.Accepted:
    return f.Accepted(rid=rid, message_id=uuid4(), server_time=1)


async def test_frames_written_in_one_turn_leave_in_one_write_in_order() -> None:
    ws = Socket()
    conn = connection(ws)
    answers = [accepted(1), accepted(2), accepted(3)]
    assert conn.write_now(answers[:1])
    assert conn.write_now(answers[1:])
    assert ws.transport.writes == []  # at the end of the turn, together
    await asyncio.sleep(0)
    assert len(ws.transport.writes) == 1
    assert frames_in(ws.transport.writes[0]) == answers
    later = accepted(4)
    assert conn.write_now([later])  # the next turn writes again
    await asyncio.sleep(0)
    assert [frames_in(w) for w in ws.transport.writes] == [answers, [later]]


async def test_nothing_is_framed_for_a_socket_that_must_drain_or_is_closing() -> None:
    ws = Socket()
    conn = connection(ws)
    ws.paused = True
    assert not conn.write_now([accepted(1)])
    ws.paused = False
    ws.protocol.state = State.CLOSING
    assert not conn.write_now([accepted(1)])
    await asyncio.sleep(0)
    assert ws.transport.writes == [] and ws.protocol.data_to_send() == []


async def test_frames_of_a_socket_closed_before_the_write_are_dropped() -> None:
    ws = Socket()
    conn = connection(ws)
    assert conn.write_now([accepted(1)])
    ws.transport.closing = True
    await asyncio.sleep(0)
    assert ws.transport.writes == []


async def test_connections_framing_in_one_turn_are_written_each_in_its_own_write() -> None:
    services = node_services()
    sockets = [Socket() for _ in range(3)]
    conns = [connection(ws, services) for ws in sockets]
    first = [accepted(i) for i in range(4)]
    for conn, answer in zip(conns, first, strict=False):
        assert conn.write_now([answer])
    assert conns[0].write_now([first[3]])

    def refuse(data: list[bytes]) -> None:
        raise RuntimeError("socket gone")

    sockets[1].transport.writelines = refuse  # type: ignore[method-assign]
    await asyncio.sleep(0)
    # One socket's failure is its own: the others are written.
    assert [frames_in(w) for w in sockets[0].transport.writes] == [[first[0], first[3]]]
    assert [frames_in(w) for w in sockets[2].transport.writes] == [[first[2]]]
    # ... and each writes again in a later turn.
    del sockets[1].transport.writelines
    then = [accepted(10 + i) for i in range(3)]
    for conn, answer in zip(conns, then, strict=True):
        assert conn.write_now([answer])
    await asyncio.sleep(0)
    assert [frames_in(ws.transport.writes[-1]) for ws in sockets] == [[a] for a in then]


async def test_a_flush_writes_what_was_framed_at_once_and_the_callback_the_rest() -> None:
    """A commit's hand-over writes its envelopes at once (``Writes.flush``): not
    a loop pass later. What is framed after it in the same turn still leaves at
    the end of the turn, once."""
    services = node_services()
    sockets = [Socket() for _ in range(2)]
    conns = [connection(ws, services) for ws in sockets]
    first = [accepted(1), accepted(2)]
    assert conns[0].write_now(first[:1])
    assert conns[1].write_now(first[1:])
    services.writes.flush()
    assert [[frames_in(w) for w in ws.transport.writes] for ws in sockets] == [
        [first[:1]], [first[1:]]
    ]
    later = accepted(3)
    assert conns[0].write_now([later])  # framed again in the same turn
    await asyncio.sleep(0)
    assert [frames_in(w) for w in sockets[0].transport.writes] == [first[:1], [later]]
    assert [frames_in(w) for w in sockets[1].transport.writes] == [first[1:]]


async def test_a_last_write_leaves_at_once_with_what_was_framed_before_it() -> None:
    ws = Socket()
    conn = connection(ws)
    first, last = accepted(1), accepted(2)
    assert conn.write_now([first])
    assert conn.write_now([last], last=True)
    assert [frames_in(w) for w in ws.transport.writes] == [[first, last]]  # now, in order
    await asyncio.sleep(0)
    assert len(ws.transport.writes) == 1  # the end of the turn finds nothing more


_MESSAGE = uuid4()


def answer(rid: int) -> f.Accepted:
    return f.Accepted(rid=rid, message_id=_MESSAGE, server_time=1)


def send_waiting_for_its_commit(conn: Connection, rid: int) -> "asyncio.Future[int]":
    """A send of ``conn`` waiting for its commit, answered as the connection
    answers one (a ``Later``) once the future is given the answer's rid."""
    done: asyncio.Future[int] = asyncio.get_running_loop().create_future()
    send = f.Send(
        rid=rid, recipient=uuid4(), client_message_id=f"m{rid}",
        envelopes=[f.Envelope(device_id=uuid4(), ciphertext=b"x")],
    )  # fmt: skip
    conn._in_flight += 1
    done.add_done_callback(partial(conn._later_done, send, Later(done, answer)))
    return done


async def test_a_lone_answer_leaves_in_its_callback_answers_committed_together_in_one_write() -> (
    None
):
    ws = Socket()
    conn = connection(ws)
    send_waiting_for_its_commit(conn, 1).set_result(1)
    await asyncio.sleep(0)  # the answer's callback has run, and no loop pass after it
    assert [frames_in(w) for w in ws.transport.writes] == [[answer(1)]]
    # Two pipelined sends answered by one commit: one write once both are framed.
    for rid in (2, 3):
        send_waiting_for_its_commit(conn, rid).set_result(rid)
    await asyncio.sleep(0)
    assert [frames_in(w) for w in ws.transport.writes] == [[answer(1)], [answer(2), answer(3)]]
    await asyncio.sleep(0)
    assert len(ws.transport.writes) == 2 and conn._in_flight == 0
