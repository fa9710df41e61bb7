"""Enrolment: a one-time code plus a freshly generated identity key make a device.

Every signature is checked before the code is touched, so a malformed
request cannot burn an official's code; then one transaction consumes the
code, checks the device limit, stores the device with its directory-signed
certificate and its prekeys. Every wrong, used or expired code gets the
same answer.

Wrong codes are counted per remote address, and the limit is looked at
first: a throttled address is answered ``rate_limited`` before any
signature check, lookup or write, even when its code is right (so a
guesser who finds a code while throttled learns nothing). Successful
enrolments do not spend the address's tokens: they consumed a code an
admin issued, so they are not guessing, and an office enrolling its phones
behind one NAT must not lock itself out. Refusals reach the audit log
aggregated per address and window (``gchat.audit.failures``).
"""

import logging
import time
import uuid

import asyncpg

from crypto.certificate import issue_certificate
from crypto.errors import CryptoError
from crypto.identity import IdentityKeyPair, auth_message, verify_signature
from crypto.prekeys import check_x25519_public, verify_signed_prekey
from gchat.audit.failures import ENROLMENT_REFUSED, FailureAudit
from gchat.audit.log import AuditEvent, AuditLog
from gchat.directory import policy
from gchat.errors import ServiceError
from gchat.identity import codes
from gchat.identity.principal import Principal
from gchat.runtime.ratelimit import Limits, RateLimiter
from gchat.store import devices, directory, prekeys
from gchat.store.database import Database
from protocol.errors import ErrorCode
from protocol.frames import Enroll

log = logging.getLogger("gchat.identity.enrolment")


class Enrolment:
    def __init__(
        self,
        db: Database,
        directory_key: IdentityKeyPair,
        limiter: RateLimiter,
        server_id: str,
        max_devices: int,
        audit: AuditLog | None = None,
        failures: FailureAudit | None = None,
    ) -> None:
        self._db = db
        self._audit = audit if audit is not None else AuditLog(enabled=False)
        self._failures = failures if failures is not None else FailureAudit(db, self._audit)
        self._directory_key = directory_key
        self._limiter = limiter
        self._server_id = server_id
        self._max_devices = max_devices

    @property
    def directory_public_key(self) -> bytes:
        """The key clients pin to verify every device certificate."""
        return self._directory_key.public_key

    async def enroll(self, frame: Enroll, nonce: bytes, remote: str) -> tuple[Principal, bytes]:
        """Create the device; returns its principal and certificate bytes."""
        try:
            await self._limiter.check(Limits.ENROLMENT_ATTEMPTS, remote, cost=0)
        except ServiceError:
            self._failures.note(ENROLMENT_REFUSED, remote, "throttled")
            raise
        try:
            verify_signature(
                frame.identity_key, auth_message(self._server_id, nonce), frame.signature
            )
            spk = frame.signed_prekey
            verify_signed_prekey(frame.identity_key, spk.key_id, spk.public_key, spk.signature)
            for key in frame.one_time_prekeys:
                check_x25519_public(key.public_key)
        except CryptoError as error:
            self._failures.note(ENROLMENT_REFUSED, remote, "signature")
            await self._limiter.check(Limits.ENROLMENT_ATTEMPTS, remote)
            raise ServiceError(ErrorCode.SIGNATURE_INVALID, f"enrolment refused: {error}") from None
        device_id = uuid.uuid4()
        async with self._db.transaction() as conn:
            official_id = await directory.claim_code(conn, codes.code_hash(frame.code), device_id)
            if official_id is None:
                self._failures.note(ENROLMENT_REFUSED, remote, "code")
                # Only wrong codes spend a token (see the module docstring);
                # the one that empties the bucket is answered rate_limited.
                await self._limiter.check(Limits.ENROLMENT_ATTEMPTS, remote)
                raise ServiceError(
                    ErrorCode.ENROLMENT_CODE_INVALID, "enrolment code invalid, used or expired"
                )
            await devices.lock_official(conn, official_id)
            official = await directory.get_official(conn, official_id)
            if official is None or official.status != "active":
                raise ServiceError(ErrorCode.FORBIDDEN, "official is not active")
            limit = await policy.max_devices(conn, official.agency_id, self._max_devices)
            if await devices.count_active(conn, official_id) >= limit:
                raise ServiceError(ErrorCode.DEVICE_LIMIT, "official has too many devices")
            certificate = issue_certificate(
                self._directory_key,
                official_id,
                official.agency_id,
                device_id,
                frame.identity_key,
                int(time.time()),
            ).to_bytes()
            try:
                await devices.create(
                    conn,
                    device_id,
                    official_id,
                    frame.identity_key,
                    certificate,
                    frame.device_name,
                    frame.platform,
                )
            except asyncpg.UniqueViolationError:  # identity_key is unique
                raise ServiceError(
                    ErrorCode.SIGNATURE_INVALID, "identity key already enrolled"
                ) from None
            await prekeys.set_signed(
                conn,
                device_id,
                prekeys.SignedPrekeyRow(spk.key_id, spk.public_key, spk.signature),
            )
            await prekeys.add_one_time(
                conn,
                device_id,
                [prekeys.PrekeyRow(k.key_id, k.public_key) for k in frame.one_time_prekeys],
            )
            roles = await directory.roles_of(conn, official_id)
            await self._audit.record(
                conn,
                AuditEvent(
                    "device.enrolled",
                    actor_official=official_id,
                    actor_device=device_id,
                    subject_official=official_id,
                    subject_device=device_id,
                    agency_id=official.agency_id,
                    details={
                        "device_name": frame.device_name,
                        "platform": frame.platform,
                        "one_time_prekeys": len(frame.one_time_prekeys),
                        "remote": remote,
                    },
                ),
            )
        log.info("device enrolled device=%s official=%s", device_id, official_id)
        principal = Principal(device_id, official_id, official.agency_id, tuple(roles))
        return principal, certificate
