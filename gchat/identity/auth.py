"""Authentication of devices: challenge signatures and access tokens.

Both paths end in the same check against the database (device active,
official active), so a revoked device or a suspended official is refused
even with an unexpired token. Failures are answered with one code per path,
so an attacker learns nothing about which device ids exist.

Failures are counted per remote address, and the limit is looked at before
any work: a throttled address is answered ``rate_limited`` without a
database lookup, a signature check or a write (a flood from one address
costs a dictionary update per frame). Only failures spend the address's
tokens, so an office behind one NAT is never throttled by its own valid
logins. Refusals reach the audit log aggregated per address and window
(``gchat.audit.failures``), not as one row each.
"""

import logging
from uuid import UUID

from crypto.errors import CryptoError
from crypto.identity import auth_message, verify_signature
from gchat.audit.failures import AUTH_FAILED, FailureAudit
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
        failures: FailureAudit | None = None,
    ) -> None:
        self._db = db
        self._audit = audit if audit is not None else AuditLog(enabled=False)
        self._failures = failures if failures is not None else FailureAudit(db, self._audit)
        self._tokens = tokens
        self._limiter = limiter
        self.server_id = server_id

    async def by_signature(
        self, device_id: UUID, nonce: bytes, signature: bytes, remote: str
    ) -> Principal:
        """Authenticate a device that signed this connection's challenge."""
        await self._may_try(remote, "signature", device_id)
        device = await devices.get(self._db.pool, device_id)
        try:
            if device is None or not device.usable:
                raise CryptoError("unknown or inactive device")
            verify_signature(device.identity_key, auth_message(self.server_id, nonce), signature)
        except CryptoError:
            await self._failed(remote, "signature", device_id)
            raise ServiceError(ErrorCode.AUTH_FAILED, "authentication failed") from None
        return await self._principal(device, "signature", remote)

    async def by_token(self, token: str, remote: str) -> Principal:
        """Authenticate a device presenting an access token we issued."""
        await self._may_try(remote, "token", None)
        try:
            claims = self._tokens.verify(token)
        except TokenError:
            await self._failed(remote, "token", None)
            raise ServiceError(ErrorCode.TOKEN_INVALID, "token invalid or expired") from None
        device = await devices.get(self._db.pool, claims.device_id)
        if device is None or not device.usable or device.official_id != claims.official_id:
            await self._failed(remote, "token_inactive_device", claims.device_id)
            raise ServiceError(ErrorCode.TOKEN_INVALID, "token invalid or expired")
        return await self._principal(device, "token", remote)

    def issue_token(self, principal: Principal) -> tuple[str, int]:
        return self._tokens.issue(principal.device_id, principal.official_id)

    async def _principal(
        self, device: devices.DeviceStanding, method: str, remote: str
    ) -> Principal:
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

    async def _may_try(self, remote: str, method: str, device_id: UUID | None) -> None:
        """Refuse at once, before any work, while the address is throttled."""
        try:
            await self._limiter.check(Limits.AUTH_FAILURES, remote, cost=0)
        except ServiceError:
            self._failures.note(AUTH_FAILED, remote, f"{method}_throttled", device_id)
            raise

    async def _failed(self, remote: str, why: str, device_id: UUID | None) -> None:
        """Count a failure (in memory, aggregated) and spend one of the address's tokens.

        Past the limit the failure itself is answered ``rate_limited``,
        telling a guesser to slow down.
        """
        self._failures.note(AUTH_FAILED, remote, why, device_id)
        await self._limiter.check(Limits.AUTH_FAILURES, remote)
