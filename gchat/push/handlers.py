"""Request handlers of push registration: config, register, unregister."""

from gchat.handling import handles
from gchat.identity.principal import Principal
from gchat.push.service import PushRegistrations
from protocol import frames as f


class PushHandlers:
    def __init__(self, registrations: PushRegistrations) -> None:
        self._registrations = registrations

    @handles(f.GetPushConfig)
    async def get_push_config(self, actor: Principal, frame: f.GetPushConfig) -> f.PushConfig:
        return f.PushConfig(
            rid=frame.rid,
            vapid_public_key=self._registrations.vapid_public_key,
            registered=await self._registrations.registered(actor),
        )

    @handles(f.RegisterPush)
    async def register_push(self, actor: Principal, frame: f.RegisterPush) -> f.PushRegistered:
        await self._registrations.register(actor, frame.endpoint, frame.p256dh, frame.auth)
        return f.PushRegistered(rid=frame.rid)

    @handles(f.UnregisterPush)
    async def unregister_push(
        self, actor: Principal, frame: f.UnregisterPush
    ) -> f.PushUnregistered:
        removed = await self._registrations.unregister(actor)
        return f.PushUnregistered(rid=frame.rid, removed=removed)
