"""Request handlers: an authenticated request frame, one service call, one reply.

This is the protocol's API surface (Synapse's REST layer, without HTTP):
each entry maps a request frame type to a coroutine that calls a service as
the authenticated principal and returns the reply frame. The connection
looks handlers up by frame type, so adding an operation touches a table and
its service, never the transport. Feature areas keep their own table in
their own module (directory administration, audit, groups) and
``gchat.app`` passes them in as ``extra``. Session-level frames (auth,
enroll, ack) stay in ``gchat.transport.connection``.
"""

from collections.abc import Awaitable, Callable, Coroutine, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from gchat.identity.prekeys import KeyDirectory
from gchat.identity.principal import Principal
from gchat.messaging.service import Messaging
from gchat.store.prekeys import BundleRow
from protocol import frames as f

Handler = Callable[[Principal, Any], Awaitable[Any]]


@dataclass(frozen=True)
class Later:
    """A reply that comes when ``reply`` finishes (a send waiting for its commit).

    The connection goes on reading frames meanwhile, so one device can have
    many sends in flight while their order is kept by the queue they joined.
    """

    reply: Coroutine[Any, Any, Any]


def _bundle(row: BundleRow) -> f.DeviceBundle:
    spk, otk = row.signed_prekey, row.one_time_prekey
    return f.DeviceBundle(
        device_id=row.device_id,
        certificate=row.certificate,
        signed_prekey=f.SignedPrekey(
            key_id=spk.key_id, public_key=spk.public_key, signature=spk.signature
        ),
        one_time_prekey=f.Prekey(key_id=otk.key_id, public_key=otk.public_key) if otk else None,
    )


class RequestHandlers:
    def __init__(
        self,
        keys: KeyDirectory,
        messaging: Messaging,
        extra: Iterable[Mapping[type, Handler]] = (),
    ) -> None:
        self._keys = keys
        self._messaging = messaging
        self.table: dict[type, Handler] = {
            f.UploadPrekeys: self.upload_prekeys,
            f.GetBundle: self.get_bundle,
            f.Send: self.send,
        }
        for table in extra:
            clash = self.table.keys() & table.keys()
            if clash:
                raise ValueError(f"two handlers for {sorted(t.__name__ for t in clash)}")
            self.table.update(table)

    async def upload_prekeys(self, actor: Principal, frame: f.UploadPrekeys) -> f.PrekeysStored:
        available = await self._keys.upload(actor, frame)
        return f.PrekeysStored(rid=frame.rid, available=available)

    async def get_bundle(self, actor: Principal, frame: f.GetBundle) -> f.Bundle:
        bundles = await self._keys.bundles(actor, frame.official_id, frame.device_ids)
        return f.Bundle(
            rid=frame.rid, official_id=frame.official_id, devices=[_bundle(b) for b in bundles]
        )

    async def send(self, actor: Principal, frame: f.Send) -> "Later":
        """Queued in arrival order now; answered when its batch commits."""
        committed = await self._messaging.send(actor, frame)

        async def accepted() -> f.Accepted:
            stored = await committed
            return f.Accepted(
                rid=frame.rid, message_id=stored.message_id, server_time=f.wire_time(stored.sent_at)
            )

        return Later(accepted())
