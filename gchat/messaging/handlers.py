"""Request handler of pairwise sends: queued now, answered once committed."""

from functools import partial

from gchat.handling import Later, handles
from gchat.identity.principal import Principal
from gchat.messaging.service import Messaging
from gchat.store.messages import StoredMessage
from protocol import frames as f


class MessagingHandlers:
    def __init__(self, messaging: Messaging) -> None:
        self._messaging = messaging

    @handles(f.Send)
    async def send(self, actor: Principal, frame: f.Send) -> Later:
        """Queued in arrival order now; answered when its batch commits."""
        committed = await self._messaging.send(actor, frame)
        return Later(committed, partial(accepted, frame.rid))


def accepted(rid: int, stored: StoredMessage) -> f.Accepted:
    """The answer to a send (pairwise or group) once it is stored."""
    return f.Accepted(
        rid=rid, message_id=stored.message_id, server_time=f.wire_time(stored.sent_at)
    )
