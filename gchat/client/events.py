"""What the client must tell its user, and what it hands over as a message.

Kept apart so that pairwise sessions, groups and the ``Client`` that
composes them report in one shape without importing each other.
"""

from collections.abc import Callable
from dataclasses import dataclass
from uuid import UUID


@dataclass(frozen=True)
class ClientEvent:
    """Something the user must be told about (``listen`` prints these).

    ``kind`` is one of: ``undecryptable`` (a delivery refused; ``detail``
    says why), ``new_device`` (a peer official has a device we had not seen),
    ``no_one_time_prekey`` (a session was set up without one: weaker
    protection of its first messages).
    """

    kind: str
    detail: str
    message_id: UUID | None = None
    official_id: UUID | None = None
    device_id: UUID | None = None


#: Where a part of the client reports a ``ClientEvent`` (the owner's list).
Report = Callable[[ClientEvent], None]


def undecryptable(events: list[ClientEvent]) -> list[UUID]:
    """Ids of the deliveries refused so far (the events say why)."""
    return [e.message_id for e in events if e.kind == "undecryptable" and e.message_id]


@dataclass(frozen=True)
class Received:
    """A delivered, decrypted message."""

    message_id: UUID
    position: int
    sender_official: UUID
    sender_device: UUID
    sent_at: int
    plaintext: bytes
    #: Set for a group message (its conversation).
    conversation_id: UUID | None = None
    #: Set for a copy of our own message sent from another of our devices:
    #: the official it was sent to (its conversation).
    recipient: UUID | None = None

    @property
    def kind(self) -> str:
        """ "group" or "pairwise"."""
        return "group" if self.conversation_id is not None else "pairwise"
