"""The server side of a connection's life, as a transition table.

Everything that decides what a client may send when lives here (h11's rule 1);
the server's connection adapter asks ``check`` before dispatching a frame and
reports what happened with ``handle``. No I/O, no clocks: the adapter enforces
the auth deadline and closes the socket.

    UNAUTHENTICATED --AUTHENTICATED--> AUTHENTICATED
    UNAUTHENTICATED / AUTHENTICATED --CLOSE--> CLOSING --CLOSED--> CLOSED
"""

from enum import Enum
from typing import Final

from protocol.errors import AlreadyAuthenticated, NotAllowedNow, NotAuthenticated
from protocol.frames import Auth, AuthToken, ClientFrame, Enroll


class State(Enum):
    UNAUTHENTICATED = "unauthenticated"
    AUTHENTICATED = "authenticated"
    CLOSING = "closing"
    CLOSED = "closed"


class Event(Enum):
    AUTHENTICATED = "authenticated"
    CLOSE = "close"
    CLOSED = "closed"


TRANSITIONS: dict[tuple[State, Event], State] = {
    (State.UNAUTHENTICATED, Event.AUTHENTICATED): State.AUTHENTICATED,
    (State.UNAUTHENTICATED, Event.CLOSE): State.CLOSING,
    (State.AUTHENTICATED, Event.CLOSE): State.CLOSING,
    (State.UNAUTHENTICATED, Event.CLOSED): State.CLOSED,
    (State.AUTHENTICATED, Event.CLOSED): State.CLOSED,
    (State.CLOSING, Event.CLOSE): State.CLOSING,
    (State.CLOSING, Event.CLOSED): State.CLOSED,
    (State.CLOSED, Event.CLOSE): State.CLOSED,
    (State.CLOSED, Event.CLOSED): State.CLOSED,
}

#: Frames that open a session; every other frame needs an authenticated one.
AUTH_FRAMES: tuple[type[ClientFrame], ...] = (Auth, AuthToken, Enroll)

# What ``check`` compares each frame with, looked up once: the frame's own
# class in a set (the decoder makes exactly these classes, never a
# subclass), where ``isinstance`` went through msgspec's metaclass for each
# of the three, and the state without Python 3.11's enum member look-up
# (about 0.1 us each). ``check`` ran 0.65 us a frame, twice per message.
_OPENING: frozenset[type] = frozenset(AUTH_FRAMES)
_UNAUTHENTICATED: Final = State.UNAUTHENTICATED
_AUTHENTICATED: Final = State.AUTHENTICATED


class ServerSession:
    """Tracks one connection's state and says which frames it may send."""

    def __init__(self) -> None:
        self.state = State.UNAUTHENTICATED

    def check(self, frame: ClientFrame) -> None:
        """Raise NotAllowedNow if ``frame`` is not allowed now."""
        opens = type(frame) in _OPENING
        state = self.state
        if state is _AUTHENTICATED:
            if opens:
                raise AlreadyAuthenticated("connection is already authenticated")
        elif state is _UNAUTHENTICATED:
            if not opens:
                raise NotAuthenticated(f"{type(frame).__name__} before authentication")
        else:
            raise NotAllowedNow(f"connection is {self.state.value}")

    def handle(self, event: Event) -> State:
        """Apply ``event``; an event with no entry in the table is a bug."""
        try:
            self.state = TRANSITIONS[(self.state, event)]
        except KeyError:
            raise NotAllowedNow(f"{event.value} in state {self.state.value}") from None
        return self.state

    @property
    def authenticated(self) -> bool:
        return self.state is _AUTHENTICATED
