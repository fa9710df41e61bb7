"""Request handlers for conversations and groups (passed to RequestHandlers as ``extra``).

Every membership request is answered with ``conversation``: the latest
server-signed membership event, which carries the whole membership. A group
send is answered with ``accepted`` once committed, like a pairwise send.
"""

from collections.abc import Awaitable, Callable
from typing import Any

from gchat.conversations.service import Conversations
from gchat.identity.principal import Principal
from gchat.transport.handlers import Handler
from protocol import frames as f


def table(conversations: Conversations) -> dict[type, Handler]:
    """The handler table of the conversation requests, bound to ``conversations``."""

    def replying(
        call: Callable[[Principal, Any], Awaitable[f.ConversationState]],
    ) -> Handler:
        async def handle(actor: Principal, frame: Any) -> f.ConversationState:
            state = await call(actor, frame)
            return f.ConversationState(
                rid=frame.rid,
                conversation_id=state.conversation_id,
                seq=state.seq,
                event=state.event,
            )

        return handle

    c = conversations

    async def send_group(actor: Principal, frame: f.SendGroup) -> f.Accepted:
        stored = await c.send(actor, frame)
        return f.Accepted(
            rid=frame.rid, message_id=stored.message_id, server_time=f.wire_time(stored.sent_at)
        )

    return {
        f.OpenDirect: replying(lambda a, fr: c.open_direct(a, fr.official_id)),
        f.CreateGroup: replying(
            lambda a, fr: c.create_group(a, fr.title, fr.members, fr.announcement_only)
        ),
        f.AddMembers: replying(lambda a, fr: c.add_members(a, fr.conversation_id, fr.officials)),
        f.RemoveMembers: replying(
            lambda a, fr: c.remove_members(a, fr.conversation_id, fr.officials)
        ),
        f.LeaveGroup: replying(lambda a, fr: c.leave(a, fr.conversation_id)),
        f.SetGroupAdmin: replying(
            lambda a, fr: c.set_admin(a, fr.conversation_id, fr.official_id, fr.admin)
        ),
        f.RenameGroup: replying(lambda a, fr: c.rename(a, fr.conversation_id, fr.title)),
        f.SetAnnouncementOnly: replying(
            lambda a, fr: c.set_announcement_only(a, fr.conversation_id, fr.announcement_only)
        ),
        f.GetConversation: replying(lambda a, fr: c.state(a, fr.conversation_id)),
        f.SendGroup: send_group,
    }
