"""Devices' Web Push registrations: checked, stored, removed.

A subscription is what the browser's ``PushManager.subscribe`` returned:
an https endpoint of the browser's push service, the device's P-256 key
and a 16-byte secret. The key is checked to be a point on the curve here,
so that a bad registration is refused at once with ``invalid_field``
instead of failing every push later.
"""

from urllib.parse import urlsplit

from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from gchat.errors import ServiceError
from gchat.identity.principal import Principal
from gchat.store import push as store
from gchat.store.database import Database
from protocol.errors import ErrorCode


def check_endpoint(endpoint: str) -> None:
    """Refuse anything but a plain https URL naming a host by DNS name."""
    try:
        parts = urlsplit(endpoint)
        port = parts.port
    except ValueError as error:
        raise ServiceError(ErrorCode.INVALID_FIELD, "endpoint is not a URL") from error
    host = parts.hostname or ""
    if parts.scheme != "https" or not host or parts.username or parts.password:
        raise ServiceError(ErrorCode.INVALID_FIELD, "endpoint must be an https URL")
    if port is not None and not 0 < port < 65536:
        raise ServiceError(ErrorCode.INVALID_FIELD, "endpoint port out of range")


def check_p256dh(p256dh: bytes) -> None:
    try:
        ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), p256dh)
    except ValueError as error:
        raise ServiceError(ErrorCode.INVALID_FIELD, "p256dh is not a P-256 public key") from error


def vapid_public_key(key: ec.EllipticCurvePrivateKey) -> bytes:
    """The uncompressed point browsers take as ``applicationServerKey``."""
    return key.public_key().public_bytes(Encoding.X962, PublicFormat.UncompressedPoint)


class PushRegistrations:
    def __init__(self, db: Database, vapid_key: ec.EllipticCurvePrivateKey) -> None:
        self._db = db
        self.vapid_public_key = vapid_public_key(vapid_key)

    async def register(self, actor: Principal, endpoint: str, p256dh: bytes, auth: bytes) -> None:
        check_endpoint(endpoint)
        check_p256dh(p256dh)
        await store.register(self._db.pool, actor.device_id, endpoint, p256dh, auth)

    async def unregister(self, actor: Principal) -> bool:
        return await store.unregister(self._db.pool, actor.device_id)

    async def registered(self, actor: Principal) -> bool:
        return await store.registered(self._db.pool, actor.device_id)
