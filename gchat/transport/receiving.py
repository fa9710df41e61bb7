"""websockets' server connection with a cheaper queue of received messages.

websockets 17 passes every received frame from ``data_received`` to the
reading task through its ``Assembler``: a generic frame queue with a
concurrency flag, a try/finally, a flow-control check and a join per
message, and a future made and cancelled per wait, in two coroutine layers
under ``recv``: about 2 us per frame on this machine, paid twice per
message (the sender's ``send``, the recipient's ``ack``), against about
45 us of node CPU per frame in all.

``Messages`` is a drop-in for it on ``ReadingConnection`` (websockets calls
only ``put``, ``close``, ``get`` and ``get_iter``, and ``recv`` and
``async for`` keep their meaning and their errors): a message that came in
one frame, as every client's does, is queued as it is; a fragmented one is
joined when its last fragment arrives. A reader ``take``s what is already
queued without a coroutine layer (in the closed loop a read brings a
client's two pipelined frames) and awaits ``recv`` only for more. Flow control is the same as
websockets': reading pauses when more than ``max_queue`` messages wait and
resumes when a quarter of that is left (PROTOCOL.md §1.2: a connection
with 64 answers outstanding is read no further).
"""

import asyncio
import os
from collections import deque
from collections.abc import AsyncIterator, Callable
from typing import Any

from websockets.asyncio.server import ServerConnection
from websockets.exceptions import ConcurrencyError, TooManyFragments
from websockets.frames import Frame, Opcode
from websockets.protocol import Protocol, State
from websockets.speedups import apply_mask
from websockets.streams import StreamReader

#: As websockets' own limit (``WEBSOCKETS_MAX_FRAGMENTS``).
MAX_FRAGMENTS = int(os.environ.get("WEBSOCKETS_MAX_FRAGMENTS", "4096"))


class Messages:
    """The messages one connection received and has not read yet, in order."""

    __slots__ = (
        "_queue", "_fragments", "_waiter", "_high", "_low", "_pause", "_resume", "_paused",
        "_loop", "closed", "parser_idle",
    )  # fmt: skip

    def __init__(
        self,
        high: int | None,
        low: int | None,
        pause: Callable[[], Any],
        resume: Callable[[], Any],
    ) -> None:
        #: Whole messages as read (``put_message``) and frames (``put``).
        self._queue: deque[Frame | bytes | str] = deque()
        #: The frames of a fragmented message so far (None: none under way).
        self._fragments: list[Frame] | None = None
        self._waiter: asyncio.Future[None] | None = None
        if high is not None and low is None:
            low = high // 4
        elif high is None and low is not None:
            high = low * 4
        self._high = high
        self._low = low
        self._pause = pause
        self._resume = resume
        self._paused = False
        #: Looked up once: ``get_running_loop`` is a ``getpid`` system call each time.
        self._loop = asyncio.get_running_loop()
        self.closed = False
        #: Kept here for ``ReadingConnection``: websockets' parser was between
        #: frames when last asked and has been fed nothing since, so it still
        #: is while the connection is open. Walking its generators to ask
        #: (``between_frames``) cost about a microsecond a read, twice per
        #: message, several at low load (its code cold). Here, not on the
        #: connection: a new attribute there could turn its instance dict
        #: from shared-key (0.3 KiB) into its own (1.6 KiB) on every connection.
        self.parser_idle = False

    def put(self, frame: Frame) -> None:
        """A data frame arrived (websockets' ``process_event``, in ``data_received``)."""
        if self.closed:
            raise EOFError("stream of frames ended")
        fragments = self._fragments
        if fragments is None:
            if not frame.fin:
                self._fragments = [frame]
                return
        else:
            fragments.append(frame)
            too_many = len(fragments) > MAX_FRAGMENTS
            if not frame.fin and not too_many:
                return
            # Complete, or marked unfinished: the reader fails the connection.
            self._fragments = None
            frame = Frame(fragments[0].opcode, b"".join(f.data for f in fragments), not too_many)
        self._queued(frame)

    def put_message(self, message: bytes | str) -> None:
        """A whole message, text decoded, read from one final frame (``whole_frames``):
        queued as it is, with no ``Frame`` made for it."""
        if self.closed:
            raise EOFError("stream of frames ended")
        self._queued(message)

    def _queued(self, item: Frame | bytes | str) -> None:
        self._queue.append(item)
        if self._high is not None and len(self._queue) > self._high and not self._paused:
            self._paused = True
            self._pause()
        self._wake()

    def close(self) -> None:
        """No more frames (the connection is lost); messages queued can still be read."""
        self.closed = True
        self._wake()

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None:
            self._waiter = None
            if not waiter.done():
                waiter.set_result(None)

    def take(self) -> str | bytes | None:
        """The next message if one is waiting whole and readable, without
        waiting; None otherwise (then ``recv`` waits for it, or raises what
        websockets raises: the end, a message in too many fragments, text
        that is not UTF-8). A reader that takes what is queued before it
        awaits pays no coroutine layer or future for those messages."""
        queue = self._queue
        if not queue:
            return None
        frame = queue[0]
        if not isinstance(frame, Frame):  # a whole message, as read
            self._pop()
            return frame
        if not frame.fin:
            return None
        data = frame.data
        if frame.opcode is Opcode.TEXT:
            try:
                message: str | bytes = bytes(data).decode()
            except UnicodeDecodeError:
                return None
        else:
            message = data if type(data) is bytes else bytes(data)
        self._pop()
        return message

    def arrival(self) -> "asyncio.Future[None] | None":
        """None if a message is queued or the stream has ended, else a future
        done when one is or it has: then ``take`` it, or ``recv`` what ``take``
        leaves (the end, a message websockets refuses, with its errors). A
        reader awaiting it rather than ``recv`` pays no coroutine layer of
        websockets' per message, nor one of its own (``wait``)."""
        if self._queue or self.closed:
            return None
        waiter = self._waiter
        if waiter is not None and not waiter.done():  # a done one: its reader was cancelled
            raise ConcurrencyError("wait() or get() is already running")
        waiter = self._waiter = self._loop.create_future()
        return waiter

    async def wait(self) -> None:
        """Until a message is queued or the stream has ended (``arrival``)."""
        arrival = self.arrival()
        if arrival is not None:
            await arrival

    async def get(self, decode: bool | None = None) -> str | bytes:
        """The next message, as websockets' ``Assembler.get``: text as str unless
        ``decode`` says otherwise; EOFError once closed and empty, UnicodeDecodeError
        for text that is not UTF-8, TooManyFragments for a message in too many."""
        queue = self._queue
        while not queue:
            if self.closed:
                raise EOFError("stream of frames ended")
            await self.wait()
        frame = self._pop()
        if not isinstance(frame, Frame):  # a whole message, as read
            if decode is None or decode is isinstance(frame, str):
                return frame
            return frame.decode() if isinstance(frame, bytes) else frame.encode()
        if not frame.fin:
            raise TooManyFragments(MAX_FRAGMENTS)
        data = frame.data
        if decode is None:
            decode = frame.opcode is Opcode.TEXT
        if decode:
            return bytes(data).decode()
        return data if type(data) is bytes else bytes(data)

    def _pop(self) -> Frame | bytes | str:
        """The oldest queued message; reading resumes once few enough wait."""
        frame = self._queue.popleft()
        if self._paused and self._low is not None and len(self._queue) <= self._low:
            self._paused = False
            self._resume()
        return frame

    async def get_iter(self, decode: bool | None = None) -> AsyncIterator[str | bytes]:
        """The next message in one piece (``recv_streaming``; G-Chat does not stream)."""
        yield await self.get(decode)


#: What websockets' parser runs while it waits, between two frames, for the
#: next (``Protocol.parse`` in ``StreamReader.at_eof``).
_PARSE = Protocol.parse.__code__
_AT_EOF = StreamReader.at_eof.__code__


def between_frames(protocol: Protocol) -> bool:
    """Is websockets' parser open and waiting for a frame's first byte, with
    nothing buffered? Then the bytes received next start a frame, and the
    parser need not see them: it would be in the same place after them."""
    if protocol.state is not State.OPEN or protocol.current_size is not None:
        return False
    parent: Any = None
    waiting: Any = protocol.parser  # a generator, waiting in the innermost of a chain
    while (inner := waiting.gi_yieldfrom) is not None:
        parent, waiting = waiting, inner
    return waiting.gi_code is _AT_EOF and parent is not None and parent.gi_code is _PARSE


def whole_frames(data: bytes, max_size: int | None, put: Callable[[bytes | str], None]) -> int:
    """``put`` the message of each frame at the start of ``data`` that is a
    whole, final, masked binary frame or text frame in UTF-8 of at most
    ``max_size`` bytes, without reserved bits, unmasked as websockets' parser
    would, text decoded as its reader would; returns the bytes they took.
    The first frame of any other kind (a ping, a close, a fragment, an
    error, text that is not UTF-8, one not all received) ends it: the
    parser reads that one and what follows.
    """
    end = len(data)
    at = 0
    while end - at >= 6:  # the shortest masked frame: 2 bytes of header, 4 of mask
        head, size = data[at], data[at + 1]
        # FIN set, no reserved bit, opcode 1 (text) or 2 (binary); masked.
        if (head != 0x82 and head != 0x81) or size < 0x80:
            break
        size &= 0x7F
        start = at + 6
        if size == 126:
            size = int.from_bytes(data[at + 2 : at + 4], "big")
            start = at + 8
        elif size == 127:
            size = int.from_bytes(data[at + 2 : at + 10], "big")
            start = at + 14
        stop = start + size
        if stop > end or (max_size is not None and size > max_size):
            break
        payload = apply_mask(data[start:stop], data[start - 4 : start])
        try:
            message = payload if head == 0x82 else payload.decode()
        except UnicodeDecodeError:  # websockets' reader fails the connection (1007)
            break
        put(message)
        at = stop
    return at


class ReadingConnection(ServerConnection):
    """websockets' ``ServerConnection`` whose received messages wait in ``Messages``.

    Its data frames are parsed here when they come whole (every client of
    G-Chat's sends one message per frame, and a read usually brings whole
    frames): websockets' parser is a chain of generators per frame (read
    the header, the length, the mask, the payload; check; queue an event;
    dispatch it), about 4 us a frame against 1 here, twice per message.
    Anything else (control frames, fragments, a frame cut by the read,
    one over the size limit, a protocol error) and everything after it in
    that read go to websockets as before, as do all reads until its parser
    is back between frames; so it alone answers pings, closes and fails the
    connection, with its own errors.
    """

    recv_messages: Messages  # type: ignore[assignment]  # the Assembler's interface, and take

    def data_received(self, data: bytes) -> None:
        protocol = self.protocol
        messages = self.recv_messages
        if not self.debug and (
            (messages.parser_idle and protocol.state is State.OPEN) or between_frames(protocol)
        ):
            messages.parser_idle = True
            limit = protocol.max_message_size
            if protocol.max_fragment_size is not None:
                fragment = protocol.max_fragment_size
                limit = fragment if limit is None else min(limit, fragment)
            taken = whole_frames(data, limit, messages.put_message)
            if taken == len(data):
                return
            data = data[taken:]
        messages.parser_idle = False  # the parser is fed: ask it again next time
        super().data_received(data)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        self.recv_messages = Messages(
            self.max_queue_high,
            self.max_queue_low,
            # uvloop's transports are not asyncio.Transport subclasses.
            pause=self.transport.pause_reading,
            resume=self.transport.resume_reading,
        )
