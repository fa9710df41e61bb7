"""Conversations: direct and group membership, policy, signed events, group sends.

Membership is metadata the server holds and checks. Every change runs in one
transaction that locks the conversation row, applies the change, bumps the
conversation's sequence number, signs a ``MembershipEvent`` (the change and
the whole membership after it) with the directory key under the label
``gchat.membership.v1``, queues that event once for every member device (and
the removed members' devices) through their inboxes, and records one audit
event. Devices are woken only after the commit.

A group send (``send_group``) carries one sender-key ciphertext. The server
checks the sender is a member, may post (announcement mode) and encrypted for
the current membership (``seq``), then hands the message to the group
committer, which stores the body once and expands it to every member device
except the sender's inside the batch's single fan-out statement.

Who may act on a group: its group admins; an agency admin (or superadmin)
over the group's agency, for anything; an agency admin over a member's
agency, to remove that member (offboarding). Members may leave.

Who may meet whom is one narrow call, ``ConversationPolicy.may_converse``:
directory policy (``gchat.directory.policy.DirectoryPolicy``), and with it
``AgencyTreePolicy``, the config flag ``allow_cross_agency_groups``: when
false, every member must belong to the same top-level agency (ministry) tree.
"""

import asyncio
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from uuid import UUID

import msgspec

from crypto.identity import IdentityKeyPair
from gchat.audit.log import AuditEvent, AuditLog
from gchat.directory import authz
from gchat.directory.policy import ConversationPolicy, Party
from gchat.errors import ServiceError
from gchat.identity.principal import Principal
from gchat.messaging.committer import SendCommitter
from gchat.runtime.broker import Broker, Signal, SignalKind
from gchat.runtime.ratelimit import Limits, RateLimiter
from gchat.store import conversations as store
from gchat.store import messages
from gchat.store.conversations import Conversation, Member
from gchat.store.database import Database, Executor
from gchat.store.messages import NewMessage, StoredMessage
from protocol import frames as f
from protocol.errors import ErrorCode

_event_encoder = msgspec.msgpack.Encoder()


class AgencyTreePolicy:
    """``allow_cross_agency_groups``: everything, or only within one ministry tree."""

    def __init__(self, db: Database, allow_cross_agency: bool) -> None:
        self._db = db
        self._allow = allow_cross_agency

    async def may_converse(self, a: Party, b: Party) -> bool:
        if self._allow or a.agency_id == b.agency_id:
            return True
        roots = await store.top_agencies(self._db.pool, [a.agency_id, b.agency_id])
        return roots.get(a.agency_id) == roots.get(b.agency_id) is not None


@dataclass(frozen=True)
class Change:
    """One membership change, ready to become a signed event."""

    action: f.MembershipAction
    subjects: list[UUID]
    audit_kind: str
    #: Officials no longer members whose devices must still get the event.
    departed: list[UUID]
    #: The departed as they were (the event names them with agency and role).
    before: dict[UUID, Member] = field(default_factory=dict)


class Conversations:
    def __init__(
        self,
        db: Database,
        signing_key: IdentityKeyPair,
        broker: Broker,
        audit: AuditLog,
        policy: ConversationPolicy,
        committer: SendCommitter,
        limiter: RateLimiter,
        *,
        max_members: int,
        max_ciphertext: int,
        retention: timedelta,
    ) -> None:
        self._db = db
        self._key = signing_key
        self._broker = broker
        self._audit = audit
        self._policy = policy
        self._committer = committer
        self._limiter = limiter
        self._max_members = max_members
        self._max_ciphertext = max_ciphertext
        self._retention = retention

    # --- reading -------------------------------------------------------------

    async def state(self, actor: Principal, conversation_id: UUID) -> Conversation:
        conversation = await store.get(self._db.pool, conversation_id)
        if conversation is None:
            raise ServiceError(ErrorCode.NOT_FOUND, "no such conversation")
        member = await store.member(self._db.pool, conversation_id, actor.official_id)
        if member is None and not await self._administers(actor, conversation.agency_id):
            raise ServiceError(ErrorCode.NOT_A_MEMBER, "not a member of that conversation")
        return conversation

    # --- creating ------------------------------------------------------------

    async def open_direct(self, actor: Principal, other: UUID) -> Conversation:
        if other == actor.official_id:
            raise ServiceError(ErrorCode.INVALID_FIELD, "a direct conversation needs two officials")
        existing = await store.find_direct(self._db.pool, actor.official_id, other)
        if existing is not None:
            return existing
        parties = await self._active_parties([actor.official_id, other])
        await self._check_policy([], parties)
        conversation_id = uuid.uuid4()
        async with self._db.transaction() as conn:
            created = await store.create(
                conn,
                conversation_id,
                "direct",
                actor.agency_id,
                actor.official_id,
                "",
                False,
                direct_pair=(actor.official_id, other),
            )
            if not created:  # the other official opened it at the same moment
                conversation = await store.find_direct(conn, actor.official_id, other)
                assert conversation is not None
                return conversation
            locked = await store.lock(conn, conversation_id)
            assert locked is not None
            await store.add_members(conn, conversation_id, [actor.official_id, other], set(), 1)
            conversation, woken = await self._commit_change(
                conn,
                actor,
                locked,
                Change("created", [actor.official_id, other], "conversation.direct_created", []),
            )
        await self._wake(woken)
        return conversation

    async def create_group(
        self, actor: Principal, title: str, members: list[UUID], announcement_only: bool
    ) -> Conversation:
        wanted = [actor.official_id, *dict.fromkeys(m for m in members if m != actor.official_id)]
        if len(wanted) > self._max_members:
            raise ServiceError(
                ErrorCode.GROUP_FULL, f"a group has at most {self._max_members} members"
            )
        parties = await self._active_parties(wanted)
        await self._check_policy([], parties)
        conversation_id = uuid.uuid4()
        async with self._db.transaction() as conn:
            await store.create(
                conn,
                conversation_id,
                "group",
                actor.agency_id,
                actor.official_id,
                title,
                announcement_only,
            )
            conversation = await store.lock(conn, conversation_id)
            assert conversation is not None
            await store.add_members(conn, conversation_id, wanted, {actor.official_id}, 1)
            conversation, woken = await self._commit_change(
                conn,
                actor,
                conversation,
                Change("created", wanted, "conversation.group_created", []),
            )
        await self._wake(woken)
        return conversation

    # --- changing membership ---------------------------------------------------

    async def add_members(
        self, actor: Principal, conversation_id: UUID, officials: list[UUID]
    ) -> Conversation:
        async with self._db.transaction() as conn:
            conversation, members = await self._locked_group(conn, conversation_id)
            await self._authorize_admin(actor, conversation, members)
            present = {m.official_id for m in members}
            new = [o for o in dict.fromkeys(officials) if o not in present]
            if not new:
                return conversation
            if len(present) + len(new) > self._max_members:
                raise ServiceError(
                    ErrorCode.GROUP_FULL,
                    f"the group would have {len(present) + len(new)} members; "
                    f"the limit is {self._max_members}",
                )
            parties = await self._active_parties(new, conn)
            await self._check_policy([Party(m.official_id, m.agency_id) for m in members], parties)
            await store.add_members(conn, conversation_id, new, set(), conversation.seq + 1)
            conversation, woken = await self._commit_change(
                conn, actor, conversation, Change("added", new, "conversation.members_added", [])
            )
        await self._wake(woken)
        return conversation

    async def remove_members(
        self, actor: Principal, conversation_id: UUID, officials: list[UUID]
    ) -> Conversation:
        async with self._db.transaction() as conn:
            conversation, members = await self._locked_group(conn, conversation_id)
            by_id = {m.official_id: m for m in members}
            gone = [o for o in dict.fromkeys(officials) if o in by_id]
            if gone != [actor.official_id]:  # removing only oneself is leaving
                await self._authorize_removal(actor, conversation, members, gone, by_id)
            if not gone:
                return conversation
            action: f.MembershipAction = "left" if gone == [actor.official_id] else "removed"
            await store.remove_members(conn, conversation_id, gone)
            conversation, woken = await self._commit_change(
                conn,
                actor,
                conversation,
                Change(action, gone, f"conversation.members_{action}", gone, by_id),
            )
            conversation, more = await self._keep_an_admin(conn, actor, conversation)
        await self._wake(woken + more)
        return conversation

    async def leave(self, actor: Principal, conversation_id: UUID) -> Conversation:
        if await store.member(self._db.pool, conversation_id, actor.official_id) is None:
            if await store.get(self._db.pool, conversation_id) is None:
                raise ServiceError(ErrorCode.NOT_FOUND, "no such conversation")
            raise ServiceError(ErrorCode.NOT_A_MEMBER, "not a member of that conversation")
        return await self.remove_members(actor, conversation_id, [actor.official_id])

    async def set_admin(
        self, actor: Principal, conversation_id: UUID, official_id: UUID, admin: bool
    ) -> Conversation:
        async with self._db.transaction() as conn:
            conversation, members = await self._locked_group(conn, conversation_id)
            await self._authorize_admin(actor, conversation, members)
            target = next((m for m in members if m.official_id == official_id), None)
            if target is None:
                raise ServiceError(ErrorCode.NOT_FOUND, "that official is not a member")
            if target.admin == admin:
                return conversation
            if not admin and sum(m.admin for m in members) == 1:
                raise ServiceError(ErrorCode.FORBIDDEN, "a group keeps at least one admin")
            await store.set_admin(conn, conversation_id, official_id, admin)
            action: f.MembershipAction = "promoted" if admin else "demoted"
            conversation, woken = await self._commit_change(
                conn,
                actor,
                conversation,
                Change(action, [official_id], f"conversation.admin_{action}", []),
            )
        await self._wake(woken)
        return conversation

    async def rename(self, actor: Principal, conversation_id: UUID, title: str) -> Conversation:
        return await self._set(actor, conversation_id, title=title)

    async def set_announcement_only(
        self, actor: Principal, conversation_id: UUID, announcement_only: bool
    ) -> Conversation:
        return await self._set(actor, conversation_id, announcement_only=announcement_only)

    async def _set(
        self,
        actor: Principal,
        conversation_id: UUID,
        title: str | None = None,
        announcement_only: bool | None = None,
    ) -> Conversation:
        async with self._db.transaction() as conn:
            conversation, members = await self._locked_group(conn, conversation_id)
            await self._authorize_admin(actor, conversation, members)
            if title is not None and title != conversation.title:
                change = Change("renamed", [], "conversation.renamed", [])
                conversation = _replace(conversation, title=title)
            elif (
                announcement_only is not None
                and announcement_only != conversation.announcement_only
            ):
                change = Change("announcement", [], "conversation.announcement_set", [])
                conversation = _replace(conversation, announcement_only=announcement_only)
            else:
                return conversation
            conversation, woken = await self._commit_change(conn, actor, conversation, change)
        await self._wake(woken)
        return conversation

    # --- sending -----------------------------------------------------------------

    async def send(self, sender: Principal, frame: f.SendGroup) -> "asyncio.Future[StoredMessage]":
        """Check what needs no database and queue the post; await the result for the answer.

        Queued in arrival order, like a pairwise send, so the connection
        reads on while it waits for its commit.
        """
        await self._limiter.check(Limits.MESSAGES, str(sender.device_id))
        if len(frame.ciphertext) > self._max_ciphertext:
            raise ServiceError(ErrorCode.INVALID_FIELD, "ciphertext too large")
        # Membership, announcement mode and seq are decided in the commit
        # batch, under the conversation's lock (gchat.messaging.service.check_batch).
        return self._committer.submit(
            NewMessage(
                message_id=uuid.uuid4(),
                sender_device=sender.device_id,
                sender_official=sender.official_id,
                recipient_official=None,
                client_message_id=frame.client_message_id,
                sent_at=datetime.now(UTC),
                envelopes=[],
                kind="group",
                conversation_id=frame.conversation_id,
                body=frame.ciphertext,
                conversation_seq=frame.seq,
            )
        )

    # --- the parts -------------------------------------------------------------

    async def _locked_group(
        self, conn: Executor, conversation_id: UUID
    ) -> tuple[Conversation, list[Member]]:
        conversation = await store.lock(conn, conversation_id)
        if conversation is None:
            raise ServiceError(ErrorCode.NOT_FOUND, "no such conversation")
        if conversation.kind != "group":
            raise ServiceError(ErrorCode.INVALID_FIELD, "not a group conversation")
        return conversation, await store.members(conn, conversation_id)

    async def _administers(self, actor: Principal, agency_id: UUID) -> bool:
        """An agency admin (or superadmin) over ``agency_id``, as the database says now."""
        return await (await authz.current(self._db.pool, actor)).administers(agency_id)

    async def _authorize_admin(
        self, actor: Principal, conversation: Conversation, members: list[Member]
    ) -> None:
        me = next((m for m in members if m.official_id == actor.official_id), None)
        if me is not None and me.admin:
            return
        if await self._administers(actor, conversation.agency_id):
            return  # an agency admin over the group's agency
        if me is None:
            raise ServiceError(ErrorCode.NOT_A_MEMBER, "not a member of that conversation")
        raise ServiceError(ErrorCode.FORBIDDEN, "only group admins may do that")

    async def _authorize_removal(
        self,
        actor: Principal,
        conversation: Conversation,
        members: list[Member],
        gone: list[UUID],
        by_id: dict[UUID, Member],
    ) -> None:
        try:
            await self._authorize_admin(actor, conversation, members)
        except ServiceError:
            # Offboarding: an agency admin may remove officials of their agencies.
            agencies = {by_id[o].agency_id for o in gone}
            if not gone or not all([await self._administers(actor, a) for a in agencies]):
                raise

    async def _active_parties(
        self, official_ids: list[UUID], db: Executor | None = None
    ) -> list[Party]:
        found = await store.officials(db or self._db.pool, official_ids)
        missing = [o for o in official_ids if found.get(o, (None, ""))[1] != "active"]
        if missing:
            raise ServiceError(
                ErrorCode.NOT_FOUND, f"no such active official: {', '.join(map(str, missing))}"
            )
        return [Party(o, found[o][0]) for o in official_ids]

    async def _check_policy(self, members: Iterable[Party], joining: list[Party]) -> None:
        """Every joining official with every member and every other joining one.

        Asked once per pair of distinct agencies (policy decides by agency).
        """
        per_agency = {p.agency_id: p for p in members}
        new_agencies = {p.agency_id: p for p in joining}
        everyone = {**per_agency, **new_agencies}
        for agency, party in new_agencies.items():
            for other_agency, other in everyone.items():
                if other_agency == agency:
                    continue
                if not await self._policy.may_converse(party, other):
                    raise ServiceError(
                        ErrorCode.POLICY_REFUSED,
                        f"policy does not allow official {party.official_id} "
                        f"in a conversation with officials of agency {other_agency}",
                    )

    async def _keep_an_admin(
        self, conn: Executor, actor: Principal, conversation: Conversation
    ) -> tuple[Conversation, list[UUID]]:
        """After a removal: if members remain and none is an admin, promote the eldest."""
        members = await store.members(conn, conversation.id)
        if not members or any(m.admin for m in members):
            return conversation, []
        eldest = members[0].official_id
        await store.set_admin(conn, conversation.id, eldest, True)
        return await self._commit_change(
            conn,
            actor,
            conversation,
            Change("promoted", [eldest], "conversation.admin_promoted", []),
        )

    async def _commit_change(
        self, conn: Executor, actor: Principal, conversation: Conversation, change: Change
    ) -> tuple[Conversation, list[UUID]]:
        """Sign the event, store it, queue it to every member device; audit it.

        Returns the conversation as it now is and the devices to wake after commit.
        """
        now = datetime.now(UTC)
        seq = conversation.seq + 1
        members = [
            f.GroupMember(official_id=m.official_id, agency_id=m.agency_id, admin=m.admin)
            for m in await store.members(conn, conversation.id)
        ]
        after = {m.official_id: m for m in members}
        subjects = [
            after.get(o)
            or f.GroupMember(
                official_id=o, agency_id=change.before[o].agency_id, admin=change.before[o].admin
            )
            for o in change.subjects
        ]
        event = f.MembershipEvent(
            conversation_id=conversation.id,
            seq=seq,
            action=change.action,
            actor_official=actor.official_id,
            actor_device=actor.device_id,
            subjects=subjects,
            kind="group" if conversation.kind == "group" else "direct",
            title=conversation.title,
            announcement_only=conversation.announcement_only,
            member_count=len(members),
            members_digest=f.members_digest(members),
            at=f.wire_time(now),
        )
        # The snapshot (kept, and returned to requests) names every member; the
        # event queued to every device carries only the change (and its digest),
        # so a change to a 1000-member group does not push the whole list to
        # 2000 devices. "created" carries the list either way.
        snapshot = self._sign(msgspec.structs.replace(event, members=members))
        signed = snapshot if change.action == "created" else self._sign(event)
        await store.update(
            conn,
            conversation.id,
            seq,
            snapshot,
            conversation.title,
            conversation.announcement_only,
        )
        departed = await store.active_devices(conn, change.departed) if change.departed else []
        message = NewMessage(
            message_id=uuid.uuid4(),
            sender_device=actor.device_id,
            sender_official=actor.official_id,
            recipient_official=None,
            # '#' and '/' are outside the client id alphabet: no clash with a client's id.
            client_message_id=f"#membership/{conversation.id}/{seq}",
            sent_at=now,
            envelopes=[(device, None) for device in departed],
            kind="membership",
            conversation_id=conversation.id,
            body=signed,
        )
        await messages.store_batch(conn, [message], now + self._retention)
        await self._audit.record(
            conn,
            AuditEvent(
                kind=change.audit_kind,
                actor_official=actor.official_id,
                actor_device=actor.device_id,
                agency_id=conversation.agency_id,
                details={
                    "conversation_id": str(conversation.id),
                    "conversation_kind": conversation.kind,
                    "seq": seq,
                    "action": change.action,
                    "subject_officials": [str(s) for s in change.subjects],
                    "member_count": len(members),
                },
            ),
        )
        updated = _replace(conversation, seq=seq, last_event=snapshot)
        return updated, [*departed, *message.fanned_out]

    def _sign(self, event: f.MembershipEvent) -> bytes:
        raw = _event_encoder.encode(event)
        return _event_encoder.encode(
            f.SignedMembershipEvent(
                event=raw, signature=self._key.sign(f.MEMBERSHIP_SIGNATURE_LABEL + raw)
            )
        )

    async def _wake(self, devices: list[UUID]) -> None:
        if devices:
            await self._broker.publish(sorted(set(devices)), Signal(SignalKind.WAKE))


def _replace(conversation: Conversation, **changes: object) -> Conversation:
    return replace(conversation, **changes)  # type: ignore[arg-type]
