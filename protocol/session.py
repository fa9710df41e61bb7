"""The server side of a connection's life, as a transition table.

Everything that decides what a client may send when lives here (h11's rule 1);
the server's connection adapter asks ``check`` before dispatching a frame and
reports what happened with ``handle``. No I/O, no clocks: the adapter enforces
the auth deadline and closes the socket.

    UNAUTHENTICATED --AUTHENTICATED--> AUTHENTICATED
    UNAUTHENTICATED / AUTHENTICATED --CLOSE--> CLOSING --CLOSED--> CLOSED
"""

from enum import Enum

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


class ServerSession:
    """Tracks one connection's state and says which frames it may send."""

    def __init__(self) -> None:
        self.state = State.UNAUTHENTICATED

    def check(self, frame: ClientFrame) -> None:
        """Raise NotAllowedNow if ``frame`` is not allowed now."""
        opens = isinstance(frame, AUTH_FRAMES)
        if self.state is State.UNAUTHENTICATED:
            if not opens:
                raise NotAuthenticated(f"{type(frame).__name__} before authentication")
        elif self.state is State.AUTHENTICATED:
            if opens:
                raise AlreadyAuthenticated("connection is already authenticated")
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
        return self.state is State.AUTHENTICATED
