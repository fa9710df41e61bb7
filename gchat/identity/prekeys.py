"""Prekeys: devices upload them, senders claim bundles of them.

A one-time prekey is handed out at most once (the store claims it by
deleting it in the same statement). A device's stock is capped, and when a
claim leaves it below the threshold the device is told to refill.
"""

from collections.abc import Awaitable, Callable
from uuid import UUID

from crypto.errors import CryptoError
from crypto.prekeys import check_x25519_public, verify_signed_prekey
from gchat.audit.log import AuditEvent, AuditLog
from gchat.directory import policy
from gchat.errors import ServiceError
from gchat.identity.principal import Principal
from gchat.runtime.ratelimit import Limits, RateLimiter
from gchat.store import devices, prekeys
from gchat.store.database import Database
from protocol.errors import ErrorCode
from protocol.frames import UploadPrekeys

LowStockNotifier = Callable[[UUID, int], Awaitable[None]]


class Prekeys:
    """One device's prekey stock and other officials' bundles (not the agency directory)."""

    def __init__(
        self,
        db: Database,
        limiter: RateLimiter,
        max_per_device: int,
        low_threshold: int,
        notify_low: LowStockNotifier,
        audit: AuditLog | None = None,
    ) -> None:
        self._db = db
        self._audit = audit if audit is not None else AuditLog(enabled=False)
        self._limiter = limiter
        self._max = max_per_device
        self._low = low_threshold
        self._notify_low = notify_low

    async def upload(self, principal: Principal, frame: UploadPrekeys) -> int:
        """Store the device's new keys; returns its one-time stock afterwards."""
        device = await devices.get(self._db.pool, principal.device_id)
        if device is None:
            raise ServiceError(ErrorCode.FORBIDDEN, "device not found")
        try:
            for key in frame.one_time_prekeys:
                check_x25519_public(key.public_key)
            if frame.signed_prekey is not None:
                spk = frame.signed_prekey
                verify_signed_prekey(device.identity_key, spk.key_id, spk.public_key, spk.signature)
        except CryptoError as error:
            raise ServiceError(ErrorCode.SIGNATURE_INVALID, f"prekey refused: {error}") from None
        async with self._db.transaction() as conn:
            have = await prekeys.count_one_time(conn, principal.device_id)
            if have + len(frame.one_time_prekeys) > self._max:
                raise ServiceError(
                    ErrorCode.PREKEY_LIMIT, f"at most {self._max} one-time prekeys per device"
                )
            if frame.signed_prekey is not None:
                spk = frame.signed_prekey
                await prekeys.set_signed(
                    conn,
                    principal.device_id,
                    prekeys.SignedPrekeyRow(spk.key_id, spk.public_key, spk.signature),
                )
            await prekeys.add_one_time(
                conn,
                principal.device_id,
                [prekeys.PrekeyRow(k.key_id, k.public_key) for k in frame.one_time_prekeys],
            )
            return await prekeys.count_one_time(conn, principal.device_id)

    async def bundles(
        self, principal: Principal, official_id: UUID, device_ids: list[UUID] | None = None
    ) -> list[prekeys.BundleRow]:
        """Claim one bundle per active device of ``official_id`` (or of ``device_ids``).

        Only for someone the requester may message (directory policy): a
        bundle reveals devices and spends one-time prekeys, so those the
        policy hides cannot be probed or drained through it.
        """
        await self._limiter.check(Limits.BUNDLE_FETCHES, str(principal.device_id))
        await self._limiter.check(
            Limits.BUNDLE_FETCHES_PER_TARGET, f"{principal.official_id}:{official_id}"
        )
        async with self._db.pinned_transaction() as conn:  # the send check's statement
            await policy.check_send(conn, principal.official_id, official_id)
        async with self._db.transaction() as conn:
            bundles = await prekeys.claim_bundles(conn, official_id, device_ids)
            await self._audit.record(
                conn,
                AuditEvent(
                    "keys.bundle_fetched",
                    actor_official=principal.official_id,
                    actor_device=principal.device_id,
                    subject_official=official_id,
                    details={
                        "bundle_devices": [b.device_id for b in bundles],
                        "one_time_prekeys_claimed": sum(
                            b.one_time_prekey is not None for b in bundles
                        ),
                    },
                ),
            )
        for bundle in bundles:
            if bundle.one_time_prekey is not None:
                left = await prekeys.count_one_time(self._db.pool, bundle.device_id)
                if left < self._low:
                    await self._notify_low(bundle.device_id, left)
        return bundles

    async def stock_is_low(self, device_id: UUID) -> int | None:
        """The device's stock if below the threshold (checked on connect)."""
        left = await prekeys.count_one_time(self._db.pool, device_id)
        return left if left < self._low else None
