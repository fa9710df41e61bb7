"""Request handler of pairwise sends: queued now, answered once committed."""

from gchat.handling import Later, handles
from gchat.identity.principal import Principal
from gchat.messaging.service import Messaging
from protocol import frames as f


class MessagingHandlers:
    def __init__(self, messaging: Messaging) -> None:
        self._messaging = messaging

    @handles(f.Send)
    async def send(self, actor: Principal, frame: f.Send) -> Later:
        """Queued in arrival order now; answered when its batch commits."""
        committed = await self._messaging.send(actor, frame)

        async def accepted() -> f.Accepted:
            stored = await committed
            return f.Accepted(
                rid=frame.rid, message_id=stored.message_id, server_time=f.wire_time(stored.sent_at)
            )

        return Later(accepted())
