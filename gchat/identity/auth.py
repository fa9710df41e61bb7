"""Authentication of devices: challenge signatures and access tokens.

Both paths end in the same check against the database (device active,
official active), so a revoked device or a suspended official is refused
even with an unexpired token. Failures are counted per remote address, after
the credentials are checked (so bad attempts never lock out a valid login
from the same address), and answered with one code per path, so an
attacker learns nothing about which device ids exist.
"""

import logging
from uuid import UUID

from crypto.errors import CryptoError
from crypto.identity import auth_message, verify_signature
from gchat.audit.log import AuditEvent, AuditLog
from gchat.errors import ServiceError
from gchat.identity.principal import Principal
from gchat.identity.tokens import TokenError, TokenIssuer
from gchat.runtime.ratelimit import Limits, RateLimiter
from gchat.store import devices, directory
from gchat.store.database import Database
from protocol.errors import ErrorCode

log = logging.getLogger("gchat.identity.auth")


class Authenticator:
    def __init__(
        self,
        db: Database,
        tokens: TokenIssuer,
        limiter: RateLimiter,
        server_id: str,
        audit: AuditLog | None = None,
    ) -> None:
        self._db = db
        self._audit = audit if audit is not None else AuditLog(enabled=False)
        self._tokens = tokens
        self._limiter = limiter
        self.server_id = server_id

    async def by_signature(
        self, device_id: UUID, nonce: bytes, signature: bytes, remote: str
    ) -> Principal:
        """Authenticate a device that signed this connection's challenge."""
        device = await devices.get(self._db.pool, device_id)
        try:
            if device is None or not device.usable:
                raise CryptoError("unknown or inactive device")
            verify_signature(
                device.identity_key, auth_message(self.server_id, nonce), signature
            )
        except CryptoError:
            await self._failed(remote, "signature", device_id)
            raise ServiceError(ErrorCode.AUTH_FAILED, "authentication failed") from None
        return await self._principal(device, "signature", remote)

    async def by_token(self, token: str, remote: str) -> Principal:
        """Authenticate a device presenting an access token we issued."""
        try:
            claims = self._tokens.verify(token)
        except TokenError as error:
            await self._failed(remote, f"token ({error})", None)
            raise ServiceError(ErrorCode.TOKEN_INVALID, "token invalid or expired") from None
        device = await devices.get(self._db.pool, claims.device_id)
        if device is None or not device.usable or device.official_id != claims.official_id:
            await self._failed(remote, "token for inactive device", claims.device_id)
            raise ServiceError(ErrorCode.TOKEN_INVALID, "token invalid or expired")
        return await self._principal(device, "token", remote)

    def issue_token(self, principal: Principal) -> tuple[str, int]:
        return self._tokens.issue(principal.device_id, principal.official_id)

    async def _principal(self, device: devices.Device, method: str, remote: str) -> Principal:
        """The principal of a device just checked usable; records the success."""
        roles = await directory.roles_of(self._db.pool, device.official_id)
        async with self._db.transaction() as conn:
            await devices.touch(conn, device.id)
            await self._audit.record(
                conn,
                AuditEvent(
                    "auth.succeeded",
                    actor_official=device.official_id,
                    actor_device=device.id,
                    agency_id=device.agency_id,
                    details={"method": method, "remote": remote},
                ),
            )
        return Principal(device.id, device.official_id, device.agency_id, tuple(roles))

    async def _failed(self, remote: str, why: str, device_id: UUID | None) -> None:
        log.warning("auth failed remote=%s device=%s reason=%s", remote, device_id, why)
        # No transaction to join: the failure changes nothing else.
        await self._audit.record(
            self._db.pool,
            AuditEvent(
                "auth.failed",
                subject_device=device_id,
                details={"reason": why.split(" (")[0], "remote": remote},
            ),
        )
        # Credentials are checked before the limit, so a flood of bad attempts
        # from one address (an office's NAT, a load balancer) never locks out
        # a valid signature or token from it; past the limit, failures are
        # answered rate_limited, telling a guesser to slow down.
        await self._limiter.check(Limits.AUTH_FAILURES, remote)
