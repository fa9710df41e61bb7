"""Every client frame has exactly one handler, checked when a node starts.

A frame nobody handles would reach its sender as ``internal_error`` the
first time it was sent; two handlers for one frame would let the wiring
order decide which runs. ``request_table`` refuses both.
"""

from typing import Any

import pytest

from gchat.attachments.handlers import AttachmentHandlers
from gchat.audit.handlers import AuditHandlers
from gchat.conversations.handlers import ConversationHandlers
from gchat.directory.handlers import DirectoryHandlers
from gchat.handling import HandlerError, client_frames, handles, request_table
from gchat.identity.handlers import IdentityHandlers
from gchat.identity.principal import Principal
from gchat.messaging.handlers import MessagingHandlers
from gchat.push.handlers import PushHandlers
from gchat.transport.connection import SESSION_FRAMES
from protocol import frames as f

# The handlers only keep their services until a frame arrives.
NOTHING: Any = None


def features() -> list[object]:
    return [
        IdentityHandlers(NOTHING),
        MessagingHandlers(NOTHING),
        ConversationHandlers(NOTHING),
        DirectoryHandlers(NOTHING, NOTHING, NOTHING),
        AuditHandlers(NOTHING),
        PushHandlers(NOTHING),
        AttachmentHandlers(NOTHING),
    ]


def test_the_node_answers_every_client_frame_exactly_once() -> None:
    table = request_table(features(), SESSION_FRAMES)
    assert table.keys() | SESSION_FRAMES == client_frames()
    assert not table.keys() & SESSION_FRAMES
    assert table[f.SendGroup].__self__.__class__ is ConversationHandlers  # type: ignore[attr-defined]


def test_a_client_frame_without_a_handler_stops_the_node() -> None:
    without_audit = [h for h in features() if not isinstance(h, AuditHandlers)]
    with pytest.raises(HandlerError, match="no handler for .*AuditExport"):
        request_table(without_audit, SESSION_FRAMES)


class SecondSend:
    @handles(f.Send)
    async def send(self, actor: Principal, frame: f.Send) -> None:
        raise AssertionError("never dispatched")


class AnswersAuth:
    @handles(f.Auth)
    async def auth(self, actor: Principal, frame: f.Auth) -> None:
        raise AssertionError("never dispatched")


class AnswersAServerFrame:
    @handles(f.Accepted)
    async def accepted(self, actor: Principal, frame: f.Accepted) -> None:
        raise AssertionError("never dispatched")


class SendTwice:
    @handles(f.Send)
    async def one(self, actor: Principal, frame: f.Send) -> None:
        raise AssertionError("never dispatched")

    @handles(f.Send)
    async def other(self, actor: Principal, frame: f.Send) -> None:
        raise AssertionError("never dispatched")


@pytest.mark.parametrize(
    ("extra", "complaint"),
    [
        (SecondSend(), "two handlers for Send"),
        (SendTwice(), "two handlers for Send"),
        (AnswersAuth(), "two handlers for Auth"),
        (AnswersAServerFrame(), "non-client frames .*Accepted"),
    ],
)
def test_a_frame_answered_twice_or_not_a_client_frame_stops_the_node(
    extra: object, complaint: str
) -> None:
    with pytest.raises(HandlerError, match=complaint):
        request_table([*features(), extra], SESSION_FRAMES)
