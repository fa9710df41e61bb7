"""One way to answer a request frame: a ``@handles(Frame)`` method of a feature.

Each feature keeps its request handlers in its own ``handlers`` module, as
methods of one class built with the feature's services (in ``gchat.app``).
A handler takes the authenticated principal and the frame, calls one
service, and builds the reply frame: services return domain values, and
only handlers know the wire. A reply that must wait (a send awaiting its
commit) is returned as ``Later`` so that the connection reads on.

``request_table`` gathers every feature's handlers into the table the
connection dispatches on, and refuses to start a node on which a frame has
two handlers or a client frame has none (which would otherwise reach the
client as ``internal_error`` the first time someone sent it).
"""

import asyncio
import typing
from collections.abc import Awaitable, Callable, Collection, Iterable
from dataclasses import dataclass
from typing import Any, TypeVar

from gchat.identity.principal import Principal
from protocol import frames as f

Handler = Callable[[Principal, Any], Awaitable[Any]]

_Method = TypeVar("_Method", bound=Callable[..., Awaitable[Any]])
_MARK = "_gchat_handles"


def handles(frame_type: type) -> Callable[[_Method], _Method]:
    """Mark a feature's method as the handler of ``frame_type`` requests."""

    def mark(method: _Method) -> _Method:
        setattr(method, _MARK, frame_type)
        return method

    return mark


@dataclass(slots=True)
class Later:
    """A reply that comes when ``done`` resolves: ``reply`` of its result (a
    send's ``accepted`` once its batch commits), or the error it failed with.

    The connection goes on reading frames meanwhile, so one device can have
    many sends in flight while their order is kept by the queue they joined.
    The connection writes the reply from ``done``'s callback, with no task
    per send: at low load a send's task and websockets' asynchronous send
    context were a tenth of what the node spent outside the commit. Not
    frozen: a frozen dataclass's ``__init__`` cost 0.5 us against 0.2 per
    send; nothing changes one once made.
    """

    done: "asyncio.Future[Any]"
    reply: Callable[[Any], object]


class HandlerError(Exception):
    """The handlers wired into a node do not answer every client frame exactly once."""


def client_frames() -> frozenset[type]:
    """Every frame type a client may send (``protocol.frames.ClientFrame``)."""
    return frozenset(typing.get_args(f.ClientFrame))


def handlers_of(feature: object) -> dict[type, Handler]:
    """The ``@handles`` methods of ``feature``, bound, by frame type."""
    table: dict[type, Handler] = {}
    for name in dir(type(feature)):
        frame_type = getattr(getattr(type(feature), name), _MARK, None)
        if frame_type is None:
            continue
        if frame_type in table:
            raise HandlerError(f"two handlers for {frame_type.__name__} in {type(feature)}")
        table[frame_type] = getattr(feature, name)
    return table


def request_table(
    features: Iterable[object], session_frames: Collection[type]
) -> dict[type, Handler]:
    """The dispatch table of ``features``; raises HandlerError unless it is complete.

    ``session_frames`` are the frames the connection answers itself
    (authentication, enrolment, acks); every other client frame needs
    exactly one feature handler, and no handler may answer a frame that is
    not a client frame.
    """
    table: dict[type, Handler] = {}
    for feature in features:
        for frame_type, handler in handlers_of(feature).items():
            if frame_type in table or frame_type in session_frames:
                raise HandlerError(f"two handlers for {frame_type.__name__}")
            table[frame_type] = handler
    expected = client_frames() - set(session_frames)
    missing = expected - table.keys()
    if missing:
        raise HandlerError(f"no handler for {sorted(t.__name__ for t in missing)}")
    stray = table.keys() - expected
    if stray:
        raise HandlerError(f"handlers for non-client frames {sorted(t.__name__ for t in stray)}")
    return table
