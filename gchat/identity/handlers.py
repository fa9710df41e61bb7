"""Request handlers of device keys: upload prekeys, fetch another official's bundles."""

from gchat.handling import handles
from gchat.identity.prekeys import Prekeys
from gchat.identity.principal import Principal
from gchat.store.prekeys import BundleRow
from protocol import frames as f


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


class IdentityHandlers:
    def __init__(self, keys: Prekeys) -> None:
        self._keys = keys

    @handles(f.UploadPrekeys)
    async def upload_prekeys(self, actor: Principal, frame: f.UploadPrekeys) -> f.PrekeysStored:
        available = await self._keys.upload(actor, frame)
        return f.PrekeysStored(rid=frame.rid, available=available)

    @handles(f.GetBundle)
    async def get_bundle(self, actor: Principal, frame: f.GetBundle) -> f.Bundle:
        bundles = await self._keys.bundles(actor, frame.official_id, frame.device_ids)
        return f.Bundle(
            rid=frame.rid, official_id=frame.official_id, devices=[_bundle(b) for b in bundles]
        )
