"""Request handlers of conversations and groups.

Every membership request is answered with ``conversation``: the latest
server-signed membership event, which carries the whole membership. A group
send is queued now and answered with ``accepted`` once committed, like a
pairwise send (the connection reads on meanwhile).
"""

from functools import partial

from gchat.conversations.service import Conversations
from gchat.handling import Later, handles
from gchat.identity.principal import Principal
from gchat.messaging.handlers import accepted
from gchat.store.conversations import Conversation
from protocol import frames as f


def _state(rid: int, conversation: Conversation) -> f.ConversationState:
    assert conversation.last_event is not None  # every conversation has its created event
    return f.ConversationState(
        rid=rid,
        conversation_id=conversation.id,
        seq=conversation.seq,
        event=conversation.last_event,
    )


class ConversationHandlers:
    def __init__(self, conversations: Conversations) -> None:
        self._c = conversations

    @handles(f.OpenDirect)
    async def open_direct(self, actor: Principal, frame: f.OpenDirect) -> f.ConversationState:
        return _state(frame.rid, await self._c.open_direct(actor, frame.official_id))

    @handles(f.CreateGroup)
    async def create_group(self, actor: Principal, frame: f.CreateGroup) -> f.ConversationState:
        created = await self._c.create_group(
            actor, frame.title, frame.members, frame.announcement_only
        )
        return _state(frame.rid, created)

    @handles(f.AddMembers)
    async def add_members(self, actor: Principal, frame: f.AddMembers) -> f.ConversationState:
        changed = await self._c.add_members(actor, frame.conversation_id, frame.officials)
        return _state(frame.rid, changed)

    @handles(f.RemoveMembers)
    async def remove_members(self, actor: Principal, frame: f.RemoveMembers) -> f.ConversationState:
        changed = await self._c.remove_members(actor, frame.conversation_id, frame.officials)
        return _state(frame.rid, changed)

    @handles(f.LeaveGroup)
    async def leave(self, actor: Principal, frame: f.LeaveGroup) -> f.ConversationState:
        return _state(frame.rid, await self._c.leave(actor, frame.conversation_id))

    @handles(f.SetGroupAdmin)
    async def set_admin(self, actor: Principal, frame: f.SetGroupAdmin) -> f.ConversationState:
        changed = await self._c.set_admin(
            actor, frame.conversation_id, frame.official_id, frame.admin
        )
        return _state(frame.rid, changed)

    @handles(f.RenameGroup)
    async def rename(self, actor: Principal, frame: f.RenameGroup) -> f.ConversationState:
        return _state(frame.rid, await self._c.rename(actor, frame.conversation_id, frame.title))

    @handles(f.SetAnnouncementOnly)
    async def set_announcement_only(
        self, actor: Principal, frame: f.SetAnnouncementOnly
    ) -> f.ConversationState:
        changed = await self._c.set_announcement_only(
            actor, frame.conversation_id, frame.announcement_only
        )
        return _state(frame.rid, changed)

    @handles(f.GetConversation)
    async def get(self, actor: Principal, frame: f.GetConversation) -> f.ConversationState:
        return _state(frame.rid, await self._c.state(actor, frame.conversation_id))

    @handles(f.SendGroup)
    async def send(self, actor: Principal, frame: f.SendGroup) -> Later:
        """Queued in arrival order now; answered when its batch commits."""
        committed = await self._c.send(actor, frame)
        return Later(committed, partial(accepted, frame.rid))
