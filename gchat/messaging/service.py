"""Pairwise sends: check who may send to whom and to which devices, then commit.

The device list must be exactly the recipient's active devices plus the
sender's own other active devices; otherwise the sender is told which are
missing and which are stale, and nothing is stored. A send is answered only
after it is committed (durable then acknowledged).

The checks that need the database run per batch, inside the commit
transaction (``check_batch``, the committer's prepare hook): a few
statements for a whole batch of sends, and no window between the check and
the write for a device to be enrolled or revoked in.
"""

import asyncio
from collections.abc import Mapping
from datetime import UTC, datetime
from types import MappingProxyType
from uuid import UUID

from asyncpg.pgproto.pgproto import UUID as PgUUID

from gchat.directory.policy import send_refusal
from gchat.errors import ServiceError
from gchat.identity.principal import Principal
from gchat.messaging.committer import Checked, SendCommitter
from gchat.runtime.ratelimit import Limits, RateLimiter
from gchat.store import conversations, messages, policies
from gchat.store.database import Executor
from gchat.store.messages import NewMessage, StoredMessage
from protocol.errors import ErrorCode
from protocol.frames import Send


class Messaging:
    def __init__(
        self,
        committer: SendCommitter,
        limiter: RateLimiter,
        max_ciphertext: int,
        max_recipient_devices: int,
    ) -> None:
        self._committer = committer
        self._limiter = limiter
        self._max_ciphertext = max_ciphertext
        self._max_devices = max_recipient_devices
        self._ids = messages.MessageIds()

    async def send(self, sender: Principal, frame: Send) -> "asyncio.Future[StoredMessage]":
        """Check what needs no database and queue the send; await the result for the answer.

        Queued in the order sends arrive, so one device's sends commit (and
        reach each recipient) in the order it sent them.
        """
        await self._limiter.check(Limits.MESSAGES, str(sender.device_id))
        if len(frame.envelopes) > self._max_devices:
            raise ServiceError(ErrorCode.INVALID_FIELD, "too many recipient devices")
        # The frame's ids as asyncpg's UUID type, as the database's ids are:
        # hashed and compared in C from here on (the check looks each up in
        # sets and maps of ids read from the database), and written to
        # PostgreSQL without a ``.bytes`` call.
        envelopes: list[tuple[UUID, bytes | None]] = []
        for envelope in frame.envelopes:
            if len(envelope.ciphertext) > self._max_ciphertext:
                raise ServiceError(ErrorCode.INVALID_FIELD, "ciphertext too large")
            envelopes.append((PgUUID(envelope.device_id.bytes), envelope.ciphertext))
        if len(envelopes) > 1 and len({device for device, _ in envelopes}) != len(envelopes):
            raise ServiceError(ErrorCode.INVALID_FIELD, "a device appears twice")
        return self._committer.submit(
            NewMessage(
                self._ids.new(),
                sender.device_id,
                sender.official_id,
                PgUUID(frame.recipient.bytes),
                frame.client_message_id,
                datetime.now(UTC),
                envelopes,
            )
        )


def _exactly_theirs(
    message: NewMessage, recipient: frozenset[UUID], sender: frozenset[UUID]
) -> bool:
    """Does a send name exactly the recipient's active devices and the sender's
    other ones, where each official has one (a 1:1 send, the common case)?

    False says nothing (the sets are then compared as they are). With one
    device each and the sending device active (checked before), the sender's
    is the sending device: the send must name the recipient's, and not it.
    """
    envelopes = message.envelopes
    if len(envelopes) != 1 or len(recipient) != 1 or len(sender) != 1:
        return False
    device = envelopes[0][0]
    return device in recipient and device not in sender


def _post_refusal(standing: conversations.Standing | None, seq: int | None) -> ServiceError | None:
    """Why a group post may not go now (None: it may)."""
    if standing is None:
        return ServiceError(ErrorCode.NOT_FOUND, "no such conversation")
    if not standing.member:
        return ServiceError(ErrorCode.NOT_A_MEMBER, "not a member of that conversation")
    if standing.announcement_only and not standing.admin:
        return ServiceError(ErrorCode.ANNOUNCEMENT_ONLY, "only group admins may post in this group")
    if seq != standing.seq:
        return ServiceError(
            ErrorCode.STALE_MEMBERSHIP,
            f"membership is at seq {standing.seq}; rekey for it and retry",
        )
    return None


async def check_batch(
    conn: Executor,
    sends: list[NewMessage],
    known: Mapping[UUID, policies.SendStanding] = MappingProxyType({}),
) -> Checked:
    """The committer's prepare hook: who may send what, for a whole batch at once.

    Every client send (pairwise or group) needs its sending device still
    active: a device revoked while its connection stays open (its close
    signal lost in a Redis outage) sends nothing more. A pairwise send also
    needs directory policy to allow it and exactly the active devices; a
    group post needs its sender a member (an admin in announcement mode) at
    the membership seq it encrypted for, checked under the conversation's
    lock, so no change between queueing and commit lets it through to
    nobody. This is the only place those rules are decided.

    Per send: None (store it), an earlier StoredMessage (a retry of a send
    already stored, answered the same way even if devices changed since), or
    a ServiceError (refused; nothing stored); the agencies of the officials
    it read, for the batch's audit events; and the standings it decided on,
    which a pairwise batch's store checks again instead of running in the
    check's transaction (``messages.store_batch``). Standings in ``known``
    (read earlier) are not read again: only such a store may rely on them.
    """
    verdicts: list[object] = [None] * len(sends)
    checked = [i for i, m in enumerate(sends) if m.kind in ("pairwise", "group")]
    if not checked:
        return Checked(verdicts)
    # The parties known, and the officials to read (each once, in one pass).
    parties: dict[UUID, policies.SendStanding] = {}
    unknown: set[UUID] = set()
    for i in checked:
        for official in (sends[i].sender_official, sends[i].recipient_official):
            if official is not None and official not in parties:
                standing = known.get(official)
                if standing is None:
                    unknown.add(official)
                else:
                    parties[official] = standing
    if unknown:  # (at low load a lone send's two are usually known)
        parties |= await policies.send_standings(conn, sorted(unknown))
    posts = [
        (m.conversation_id, m.sender_official)
        for m in (sends[i] for i in checked)
        if m.kind == "group" and m.conversation_id is not None
    ]
    # No coroutine for a batch without group posts (every pairwise batch).
    posting = await conversations.lock_for_posting(conn, posts) if posts else {}
    for i in checked:
        message = sends[i]
        sender = parties.get(message.sender_official)
        if (
            sender is None
            or sender.status != "active"
            or message.sender_device not in sender.active_devices
        ):
            verdicts[i] = ServiceError(ErrorCode.FORBIDDEN, "this device may no longer send")
            continue
        if message.kind == "group":
            assert message.conversation_id is not None
            refusal = _post_refusal(
                posting[(message.conversation_id, message.sender_official)],
                message.conversation_seq,
            )
            if refusal is not None:  # a retry of a post accepted before the change: same answer
                earlier = await messages.find_sent(
                    conn, message.sender_device, message.client_message_id
                )
                verdicts[i] = earlier or refusal
            continue
        recipient = message.recipient_official
        if recipient is None:
            continue
        refusal = send_refusal(parties, message.sender_official, recipient)
        if refusal is not None:
            verdicts[i] = refusal
            continue
        if _exactly_theirs(message, parties[recipient].active_devices, sender.active_devices):
            continue
        expected = (parties[recipient].active_devices | sender.active_devices) - {
            message.sender_device}
        given = {device for device, _ in message.envelopes}
        if given != expected:
            earlier = await messages.find_sent(
                conn, message.sender_device, message.client_message_id
            )
            verdicts[i] = earlier or ServiceError(
                ErrorCode.DEVICE_MISMATCH,
                "device list does not match the active devices",
                missing=sorted(expected - given),
                stale=sorted(given - expected),
            )
    return Checked(verdicts, {o: p.agency_id for o, p in parties.items()}, parties)
