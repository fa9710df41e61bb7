"""One Connection per socket: what the node does with a WebSocket's frames.

It feeds decoded frames through the sans-I/O session (``protocol.session``)
and dispatches them to the services, turning ServiceError and ProtocolError
into ``error`` frames so that one bad frame never costs the connection, let
alone the node. After authentication it subscribes to the device's signals
and runs its DeliveryStream.
"""

import asyncio
import itertools
import logging
import secrets
from collections.abc import Awaitable, Callable, Coroutine, Mapping, Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import Any

from websockets.asyncio.server import ServerConnection
from websockets.exceptions import ConnectionClosed
from websockets.protocol import State

from gchat.errors import ServiceError
from gchat.handling import Handler, Later
from gchat.identity.auth import Authenticator
from gchat.identity.enrolment import Enrolment
from gchat.identity.prekeys import Prekeys
from gchat.identity.principal import Principal
from gchat.messaging.delivery import DeliveryStream, Inbox
from gchat.runtime.broker import Broker, Signal, SignalKind
from gchat.runtime.metrics import NodeMetrics
from gchat.runtime.quietlog import QuietLog, is_outage
from gchat.runtime.ratelimit import Limit, Limits
from gchat.store import devices
from gchat.store.database import Database
from gchat.transport.admission import ConnectionCap, FrameBucket
from gchat.transport.client_address import Network, client_address
from gchat.transport.framing import server_frame
from gchat.transport.receiving import ReadingConnection
from protocol import frames as f
from protocol.codec import Codec, server_codec
from protocol.errors import CloseCode, ErrorCode, ProtocolError
from protocol.session import Event, ServerSession

log = logging.getLogger("gchat.transport.connection")

_connection_ids = itertools.count(1)
#: Requests answered later (sends awaiting their commit) one connection may
#: have waiting before the server stops reading its frames.
_MAX_IN_FLIGHT = 64
#: Bytes of frames framed before they are written to the socket together.
_WRITE_BYTES = 256 * 1024
#: The frames a connection answers itself; every other client frame goes to
#: a feature's handler.
SESSION_FRAMES: frozenset[type] = frozenset({f.Auth, f.AuthToken, f.Enroll, f.Ack})
#: Frames of an authenticated device that the frame-rate bucket does not count
#: (a frame's own class is looked up: ``isinstance`` went through msgspec's
#: metaclass for each, 0.3 us a frame).
_UNCOUNTED: frozenset[type] = frozenset({f.Ack, f.UploadChunk, f.DownloadChunk})


class Writes:
    """The node's connections that framed frames this turn, written by one
    callback at its end (``Connection.write_now``).

    One callback for every connection instead of a ``call_soon`` each: a
    handle made, queued and run, about half a microsecond, twice per message
    at capacity (a send's answer, its envelope), where this is a list append.
    A commit's hand-over writes its envelopes at once (``flush``) instead:
    the callback runs only after the loop's next pass over every readable
    socket, a wait each envelope would add to its latency.
    """

    __slots__ = ("_waiting",)

    def __init__(self) -> None:
        self._waiting: list[Connection] = []

    def add(self, connection: "Connection", loop: asyncio.AbstractEventLoop) -> None:
        """Write ``connection``'s framed frames at the end of this turn (once: the caller
        asks only while it has none waiting)."""
        if not self._waiting:
            loop.call_soon(self.flush)
        self._waiting.append(connection)

    def flush(self) -> None:
        """Write what every connection framed so far (the callback finds the rest)."""
        waiting, self._waiting = self._waiting, []
        for connection in waiting:
            try:
                connection.write_framed()
            except Exception:  # that socket's own trouble; its reader meets it too
                log.warning("write failed connection=%s", connection._id, exc_info=True)


@dataclass(frozen=True)
class Services:
    """What a connection needs, wired once by gchat.app."""

    db: Database
    inbox: Inbox
    broker: Broker
    auth: Authenticator
    enrolment: Enrolment
    keys: Prekeys
    #: The feature handlers by frame type (``gchat.handling.request_table``).
    requests: Mapping[type, Handler]
    server_id: str
    node_id: str
    max_unacked: int
    auth_timeout: float
    metrics: NodeMetrics = field(default_factory=NodeMetrics)
    #: Failed requests and deliveries, one line per class and interval (an
    #: outage refuses every request the same way).
    quiet: QuietLog = field(default_factory=lambda: QuietLog(log))
    #: Reverse proxies whose X-Forwarded-For names the client (gchat.transport.client_address).
    trusted_proxies: tuple[Network, ...] = ()
    #: Open connections per address (HTTP 429 / close 1013 over the cap).
    cap: ConnectionCap = field(default_factory=lambda: ConnectionCap(0))
    #: Frames per second one connection may send (checked before decoding).
    frame_limit: Limit = Limits.FRAMES.value
    #: Frames refused in a row (over ``frame_limit``) before the close with 4429.
    max_refused_frames: int = 100
    #: What connections framed this turn, written at its end.
    writes: Writes = field(default_factory=Writes)


class Connection:
    def __init__(self, ws: ReadingConnection, services: Services) -> None:
        self._ws = ws
        self._services = services
        self._codec: Codec[f.ClientFrame] = server_codec(ws.subprotocol or "")
        self._encode = self._codec.encode_payload
        self._text = not self._codec.binary
        self._session = ServerSession()
        self._nonce = secrets.token_bytes(32)
        self._id = f"{services.node_id}:{next(_connection_ids)}"
        self._remote = client_address(
            str(ws.remote_address[0]) if ws.remote_address else "?",
            ws.request.headers.get_all("X-Forwarded-For") if ws.request else (),
            services.trusted_proxies,
        )
        self._principal: Principal | None = None
        self._stream: DeliveryStream | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
        self._replies: set[asyncio.Task[None]] = set()
        #: Sends waiting for the socket (``write_now`` writes only when none does).
        self._draining = 0
        #: Frames ``write_now`` framed this turn wait in ``services.writes``.
        self._framed = False
        #: Requests answered later now waiting (``_MAX_IN_FLIGHT`` at most);
        #: ``_room`` is done when one is, if reading waits for that. A count,
        #: not a semaphore: its acquire was a coroutine per send. A future
        #: made only when needed, not an Event per connection: an Event and
        #: its deque were 0.5 KiB of every idle connection's 27.4.
        self._in_flight = 0
        self._room: asyncio.Future[None] | None = None
        self._frames = FrameBucket(services.frame_limit, services.max_refused_frames)
        self._flooded = False
        self._handlers: dict[type, Callable[[Any], Awaitable[None]]] = {
            f.Auth: self._on_auth,
            f.AuthToken: self._on_auth_token,
            f.Enroll: self._on_enroll,
            f.Ack: self._on_ack,
        }
        assert self._handlers.keys() == SESSION_FRAMES

    # --- life cycle ---------------------------------------------------------

    async def run(self) -> None:
        deadline = asyncio.get_running_loop().call_later(
            self._services.auth_timeout, self._auth_deadline_passed
        )
        self._services.metrics.connections.inc()
        admitted = self._services.cap.opened(self._remote)
        try:
            if not admitted:  # passed the HTTP check together with others: over the cap
                await self._ws.close(CloseCode.TRY_AGAIN_LATER, "too many connections")
                return
            await self.send(f.Challenge(server_id=self._services.server_id, nonce=self._nonce))
            # Handle the connection's messages in order until it closes, here
            # rather than in a coroutine of its own: the task passes through
            # each coroutine it is in whenever a message wakes it, twice per
            # chat message. The messages already received are taken without
            # waiting (``ReadingConnection``), and waited for on the queue's
            # own future; what ``take`` leaves after a wait (the end, a
            # message websockets refuses) goes through ``recv``, which raises
            # ConnectionClosed or fails the connection as ``async for`` would.
            ws = self._ws
            messages = ws.recv_messages
            take = messages.take
            while True:
                waiting = take()
                if waiting is None:
                    arrival = messages.arrival()
                    if arrival is not None:
                        await arrival
                    waiting = take()
                    if waiting is None:
                        waiting = await ws.recv()
                await self._receive(waiting)
        except ConnectionClosed:
            pass
        finally:
            deadline.cancel()
            self._services.cap.closed(self._remote)
            self._session.handle(Event.CLOSED)
            self._services.metrics.connections.dec()
            await self._teardown()

    def _auth_deadline_passed(self) -> None:
        if not self._session.authenticated:
            self._close_soon(CloseCode.AUTH_TIMEOUT, "authentication timeout")

    def _close_soon(self, code: CloseCode, reason: str) -> None:
        self._session.handle(Event.CLOSE)
        self._spawn(self._ws.close(code, reason))

    def _spawn(self, work: Coroutine[Any, Any, Any]) -> None:
        """Run ``work`` alongside; it is forgotten when done, cancelled at teardown."""
        task = asyncio.create_task(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _teardown(self) -> None:
        if self._principal is not None:
            self._services.metrics.authenticated.dec()
            self._services.broker.unsubscribe(self._principal.device_id, self._on_signal)
        tasks = [*self._tasks, *self._replies]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if self._stream is not None:
            await self._stream.flush_acks()

    async def send(self, frame: object) -> None:
        await self.send_many([frame])

    def _frame(self, frame: object) -> int:
        """Frame ``frame`` as a WebSocket message for the next write, as
        ``protocol.send_*`` would (``framing``: at a tenth of its cost); returns
        its size. Only while the connection is open: ``write_now`` checks,
        ``send_context`` does for ``send_many``."""
        payload = self._encode(frame)  # bytes: JSON as the UTF-8 a text message carries
        self._ws.protocol.writes.append(server_frame(payload, self._text))
        return len(payload)

    def write_now(self, frames: Sequence[object], last: bool = False) -> bool:
        """Frame ``frames`` now and write them at the end of this turn, if the
        socket takes them without waiting; False (nothing framed) when a send
        waits for the socket to drain or the connection is not open: then
        ``send_many`` them. ``last``: nothing more is coming for this socket
        this turn (a send's answer with no other request waiting), so they are
        written at once, with whatever was framed before them.

        For a send's answer and the envelopes handed over by its commit,
        written from callbacks rather than tasks. Waiting sends go first, so
        frames leave in the order they were sent. A commit answers each of a
        connection's sends in a callback of its own (a client pipelining two
        sends has both answered by one batch): one write for all of them
        instead of one system call each, on loopback a quarter of the node's
        CPU at capacity.
        """
        ws = self._ws
        if (
            self._draining
            or ws.paused
            or ws.protocol.state is not State.OPEN
            or ws.transport.is_closing()
        ):
            return False
        # ``_frame``'s work inline: a call less per frame, two per message.
        writes, encode, text = ws.protocol.writes, self._encode, self._text
        for frame in frames:
            writes.append(server_frame(encode(frame), text))
        if last:
            # The turn's end is a loop pass away (a handle, an empty poll),
            # once per send at low load, where nothing would join the write.
            # Frames framed before these leave with them; the end of the
            # turn then finds none (``write_framed``).
            self.write_framed()
        elif not self._framed:
            self._framed = True
            self._services.writes.add(self, ws.loop)
        self._services.metrics.frames_out.inc(len(frames))
        return True

    def write_framed(self) -> None:
        """Write what ``write_now`` framed (unless a send context or a ``last``
        write already did)."""
        self._framed = False
        ws = self._ws
        # Data frames only: websockets writes whatever it frames itself
        # (a close, a pong) at once, together with these.
        data = ws.protocol.data_to_send()
        if data and not ws.transport.is_closing():
            ws.transport.writelines(data)

    async def send_many(self, frames: Sequence[object]) -> None:
        """Send ``frames`` in order, as WebSocket messages written to the socket
        together (up to ``_WRITE_BYTES`` at a time).

        A delivery turn pushes up to a window of envelopes; written one
        message at a time, each paid websockets' send context, a flow-control
        check and a system call: a quarter of a node's CPU in a drain. Here
        their bytes are written with one ``writelines``, then flow control
        waits once, inside the same ``send_context`` that ``ws.send`` uses
        (so a closed connection raises ``ConnectionClosed`` alike).
        """
        ws = self._ws
        self._draining += 1
        try:
            start = 0
            while start < len(frames):
                size = 0
                async with ws.send_context():
                    for frame in frames[start:]:
                        size += self._frame(frame)
                        start += 1
                        if size >= _WRITE_BYTES:
                            break
                    # Data frames only (no close, so no end-of-stream marker):
                    # one write for all, then the context waits for the buffer.
                    ws.transport.writelines(ws.protocol.data_to_send())
        finally:
            self._draining -= 1
        self._services.metrics.frames_out.inc(len(frames))

    # --- frames -------------------------------------------------------------

    async def _receive(self, message: bytes | str) -> None:
        """Decode, admit, dispatch and answer one frame.

        One coroutine per frame besides the handler's (the admission, the
        dispatch and the answer were a coroutine each: at capacity a few
        microseconds of the node's ~90 per message); the slow paths
        (refusals, waiting for room, a reply to write) have their own.
        """
        self._services.metrics.frames_in.inc()
        if self._flooded:
            return  # closing: the rest of the flood is read and dropped
        try:
            frame = self._codec.decode(message)
        except ProtocolError as error:
            if self._frames.take():
                await self._error(error.rid, error.code, error.detail)
            else:
                await self._refuse_frame(error.rid)
            return
        # Acks of an authenticated device are not counted: they only answer
        # what the server pushed (a client acks each envelope as it syncs a
        # backlog), need no reply and cost a set lookup when bogus. Nor are
        # attachment chunks: a 100 MiB file is 800 of them, at most
        # ``_MAX_IN_FLIGHT`` wait to be stored or read before reading
        # pauses, and a bogus one costs one HMAC.
        if (
            not (type(frame) in _UNCOUNTED and self._session.authenticated)
            and not self._frames.take()
        ):
            await self._refuse_frame(getattr(frame, "rid", None))
            return
        # Run the frame's handler; its reply is None, a frame or a Later.
        try:
            self._session.check(frame)
            session_handler = self._handlers.get(type(frame))
            if session_handler is not None:
                await session_handler(frame)
                reply = None
            else:
                assert self._principal is not None  # the session checked authentication
                reply = await self._services.requests[type(frame)](self._principal, frame)
        except ConnectionClosed:
            raise
        except Exception as error:
            await self.send(self._refusal(frame, error))
            return
        if isinstance(reply, Later):
            # Written when its future is done, while the connection reads
            # on; at most ``_MAX_IN_FLIGHT`` wait at once, after which
            # reading pauses (backpressure on a client that pipelines).
            if self._in_flight >= _MAX_IN_FLIGHT:
                await self._wait_for_room()
            self._in_flight += 1
            reply.done.add_done_callback(partial(self._later_done, frame, reply))
        elif reply is None:
            self._answered(frame, reply)
        else:
            await self._reply(frame, reply)

    async def _refuse_frame(self, rid: int | None) -> None:
        """Refuse a frame the connection's bucket had no room for (or close).

        Decoding first is cheap (msgspec, at most 256 KiB) and bounded: a
        client that keeps sending while refused is closed after
        ``max_refused_frames``. It lets the refusal carry the request's rid.
        """
        if self._frames.exhausted:
            self._flooded = True
            log.warning("frame flood closed connection=%s remote=%s", self._id, self._remote)
            self._close_soon(CloseCode.TOO_MANY_FRAMES, "too many frames")
            return
        self._services.metrics.errors.labels(code=ErrorCode.RATE_LIMITED.value).inc()
        await self.send(
            f.Error(
                rid=rid,
                code=ErrorCode.RATE_LIMITED.value,
                message="too many frames",
                retry_after=self._frames.retry_after,
            )
        )

    async def _wait_for_room(self) -> None:
        """Wait until fewer than ``_MAX_IN_FLIGHT`` requests wait for their answer."""
        while self._in_flight >= _MAX_IN_FLIGHT:
            self._room = asyncio.get_running_loop().create_future()
            await self._room

    async def _reply(self, frame: f.ClientFrame, reply: object) -> None:
        """Send ``reply`` to ``frame`` (or the refusal of a reply that cannot be written)."""
        try:
            await self.send(reply)
        except ConnectionClosed:
            raise
        except Exception as error:  # a reply that cannot be written (a bug)
            await self.send(self._refusal(frame, error))
            return
        self._answered(frame, reply)

    def _later_done(self, frame: f.ClientFrame, later: Later, done: "asyncio.Future[Any]") -> None:
        """Write the reply to ``frame`` now that ``later`` is done (a callback).

        Written here when the socket takes it at once (``write_now``), else
        by a task that waits for the socket, holding the request's in-flight
        place until then; dropped if the connection is closing.
        """
        waiting = False  # the reply went to a task, which releases the place
        try:
            if done.cancelled():
                return
            reply: object
            error = done.exception()
            if error is None:
                try:
                    reply = later.reply(done.result())
                except Exception as failed:
                    error = failed
            if error is not None:
                reply = self._refusal(frame, error)
            # The last answer this connection waits for is written at once;
            # with more waiting (a client pipelining sends, answered by one
            # commit) the end of the turn writes them together.
            if self.write_now([reply], last=self._in_flight == 1):
                if error is None:
                    self._answered(frame, reply)
            elif self._ws.protocol.state is State.OPEN:
                task = asyncio.create_task(self._send_later(frame, reply, answered=error is None))
                self._replies.add(task)
                task.add_done_callback(self._replies.discard)
                waiting = True
            # else: the connection is closing and nobody reads the answer.
        finally:
            if not waiting:
                self._release()

    async def _send_later(self, frame: f.ClientFrame, reply: object, answered: bool) -> None:
        try:
            await self.send(reply)
            if answered:
                self._answered(frame, reply)
        except ConnectionClosed:
            pass
        finally:
            self._release()

    def _release(self) -> None:
        """A request answered later is done: its in-flight place is free."""
        self._in_flight -= 1
        if self._room is not None and not self._room.done():
            self._room.set_result(None)

    def _answered(self, frame: f.ClientFrame, reply: object) -> None:
        """Count a request answered as asked."""
        if reply is not None and type(frame) is f.Send:
            self._services.metrics.sends_accepted.inc()
        self._services.quiet.recovered("request")

    def _refusal(self, frame: f.ClientFrame, error: BaseException) -> f.Error:
        """The ``error`` frame that answers ``frame`` refused with ``error``, counted."""
        rid = getattr(frame, "rid", None)
        is_send = type(frame) is f.Send
        metrics = self._services.metrics
        if isinstance(error, (ProtocolError, ServiceError)):
            if is_send:
                metrics.sends_refused.labels(code=error.code.value).inc()
            metrics.errors.labels(code=error.code.value).inc()
            if isinstance(error, ProtocolError):
                return f.Error(rid=rid, code=error.code.value, message=error.detail)
            return f.Error(
                rid=rid,
                code=error.code.value,
                message=error.message,
                missing=error.missing,
                stale=error.stale,
                retry_after=error.retry_after,
            )
        # An outage fails every request alike: one class. A bug is told
        # apart by frame type, so each gets its own traceback once.
        self._services.quiet.failure(
            "request" if is_outage(error) else f"request {type(frame).__name__}", error
        )
        if is_send:
            metrics.sends_refused.labels(code=ErrorCode.INTERNAL_ERROR.value).inc()
        metrics.errors.labels(code=ErrorCode.INTERNAL_ERROR.value).inc()
        return f.Error(rid=rid, code=ErrorCode.INTERNAL_ERROR.value, message="internal error")

    async def _error(self, rid: int | None, code: ErrorCode, message: str) -> None:
        self._services.metrics.errors.labels(code=code.value).inc()
        await self.send(f.Error(rid=rid, code=code.value, message=message))

    async def _on_auth(self, frame: f.Auth) -> None:
        principal = await self._services.auth.by_signature(
            frame.device_id, self._nonce, frame.signature, self._remote
        )
        await self._authenticated(frame.rid, principal, frame.deliveries)

    async def _on_auth_token(self, frame: f.AuthToken) -> None:
        principal = await self._services.auth.by_token(frame.token, self._remote)
        await self._authenticated(frame.rid, principal, frame.deliveries)

    async def _on_enroll(self, frame: f.Enroll) -> None:
        principal, certificate = await self._services.enrolment.enroll(
            frame, self._nonce, self._remote
        )
        token, expires = self._services.auth.issue_token(principal)
        await self.send(
            f.Enrolled(
                rid=frame.rid,
                device_id=principal.device_id,
                official_id=principal.official_id,
                agency_id=principal.agency_id,
                roles=principal.role_names,
                certificate=certificate,
                directory_key=self._services.enrolment.directory_public_key,
                token=token,
                token_expires_at=expires,
            )
        )
        await self._start_session(principal)

    async def _authenticated(self, rid: int, principal: Principal, deliveries: bool) -> None:
        token, expires = self._services.auth.issue_token(principal)
        await self.send(
            f.Authenticated(
                rid=rid,
                device_id=principal.device_id,
                official_id=principal.official_id,
                agency_id=principal.agency_id,
                roles=principal.role_names,
                token=token,
                token_expires_at=expires,
            )
        )
        await self._start_session(principal, deliveries)

    async def _start_session(self, principal: Principal, deliveries: bool = True) -> None:
        """Take over the device's signals (displacing any older connection).

        A request-only session (``deliveries`` false: the admin CLI during a
        long import) listens only for revocation: it neither displaces the
        device's connection nor is displaced by it, and gets no deliveries.
        """
        self._session.handle(Event.AUTHENTICATED)
        self._principal = principal
        self._services.metrics.authenticated.inc()
        if deliveries:
            await self._services.broker.publish(
                [principal.device_id], Signal(SignalKind.CONNECTED, self._id)
            )
        self._services.broker.subscribe(
            principal.device_id, self._on_signal if deliveries else self._on_revocation
        )
        # A revocation published between the auth check and the subscription
        # above reached no listener of ours: look at the status once more.
        device = await devices.get(self._services.db.pool, principal.device_id)
        if device is None or not device.usable:
            self._close_soon(CloseCode.REVOKED, "device revoked")
            return
        if not deliveries:
            log.info(
                "authenticated requests connection=%s device=%s", self._id, principal.device_id
            )
            return
        self._stream = DeliveryStream(
            self._services.inbox,
            principal.device_id,
            principal.official_id,
            self.send_many,
            self._services.max_unacked,
            self._services.metrics,
            write_now=self.write_now,
        )
        self._spawn(self._deliver(self._stream))
        low = await self._services.keys.stock_is_low(principal.device_id)
        if low is not None:
            await self.send(f.PrekeysLow(available=low))
        log.info("authenticated connection=%s device=%s", self._id, principal.device_id)

    async def _deliver(self, stream: DeliveryStream) -> None:
        try:
            await stream.run()
        except ConnectionClosed:
            pass
        except Exception as error:
            self._services.quiet.failure("delivery", error)
            self._close_soon(CloseCode.INTERNAL_ERROR, "delivery failed")

    def _on_signal(self, signal: Signal) -> None:
        if signal.kind is SignalKind.WAKE and self._stream is not None:
            self._stream.wake()
        elif signal.kind is SignalKind.CONNECTED and signal.value != self._id:
            self._close_soon(CloseCode.DISPLACED, "device connected elsewhere")
        elif signal.kind is SignalKind.REVOKED:
            self._close_soon(CloseCode.REVOKED, "device revoked")
        elif signal.kind is SignalKind.PREKEYS_LOW and isinstance(signal.value, int):
            self._spawn(self.send(f.PrekeysLow(available=signal.value)))

    def _on_revocation(self, signal: Signal) -> None:
        if signal.kind is SignalKind.REVOKED:
            self._close_soon(CloseCode.REVOKED, "device revoked")

    async def _on_ack(self, frame: f.Ack) -> None:
        if self._stream is not None:  # None only while a revoked device is being closed
            await self._stream.ack(frame.positions)


def handler(services: Services) -> Callable[[ServerConnection], Awaitable[None]]:
    """The websockets connection handler for these services.

    It returns the connection's ``run`` for websockets to await, rather than
    awaiting it in a coroutine of its own: one layer less for the reading
    task to pass through at each message (``Connection.run``).
    """

    def handle(ws: ServerConnection) -> Awaitable[None]:
        assert isinstance(ws, ReadingConnection)  # serve(create_connection=...), app.py
        return Connection(ws, services).run()

    return handle
