"""Pairwise sends: check who may send to whom and to which devices, then commit.

The device list must be exactly the recipient's active devices plus the
sender's own other active devices; otherwise the sender is told which are
missing and which are stale, and nothing is stored. A send is answered only
after it is committed (durable then acknowledged).
"""

import uuid
from datetime import UTC, datetime

from gchat import policy
from gchat.committer import GroupCommitter
from gchat.errors import ServiceError
from gchat.principal import Principal
from gchat.ratelimit import Limits, RateLimiter
from gchat.store import devices, messages
from gchat.store.database import Database
from gchat.store.messages import NewMessage, StoredMessage
from protocol.errors import ErrorCode
from protocol.frames import Send


class Messaging:
    def __init__(
        self,
        db: Database,
        committer: GroupCommitter,
        limiter: RateLimiter,
        max_ciphertext: int,
        max_recipient_devices: int,
    ) -> None:
        self._db = db
        self._committer = committer
        self._limiter = limiter
        self._max_ciphertext = max_ciphertext
        self._max_devices = max_recipient_devices

    async def send(self, sender: Principal, frame: Send) -> StoredMessage:
        await self._limiter.check(Limits.MESSAGES, str(sender.device_id))
        if len(frame.envelopes) > self._max_devices:
            raise ServiceError(ErrorCode.INVALID_FIELD, "too many recipient devices")
        if any(len(e.ciphertext) > self._max_ciphertext for e in frame.envelopes):
            raise ServiceError(ErrorCode.INVALID_FIELD, "ciphertext too large")
        # Both active, and directory policy lets them talk (gchat.policy): one query.
        await policy.check_send(self._db.pool, sender.official_id, frame.recipient)
        active = await devices.active_ids(
            self._db.pool, [frame.recipient, sender.official_id]
        )
        expected = (active[frame.recipient] | active[sender.official_id]) - {sender.device_id}
        given = [e.device_id for e in frame.envelopes]
        if len(set(given)) != len(given):
            raise ServiceError(ErrorCode.INVALID_FIELD, "a device appears twice")
        if set(given) != expected:
            earlier = await messages.find_sent(
                self._db.pool, sender.device_id, frame.client_message_id
            )
            if earlier is not None:  # a retry after the device list changed
                return earlier
            raise ServiceError(
                ErrorCode.DEVICE_MISMATCH,
                "device list does not match the active devices",
                missing=sorted(expected - set(given)),
                stale=sorted(set(given) - expected),
            )
        return await self._committer.submit(
            NewMessage(
                message_id=uuid.uuid4(),
                sender_device=sender.device_id,
                sender_official=sender.official_id,
                recipient_official=frame.recipient,
                client_message_id=frame.client_message_id,
                sent_at=datetime.now(UTC),
                envelopes=[(e.device_id, e.ciphertext) for e in frame.envelopes],
            )
        )
