"""Group conversations: our view of each, and sender keys over pairwise sessions.

Why it works this way (docs/PROTOCOL.md §E7a): the server fans a group
message out, so it must not be able to change who reads it. Membership
comes from server-signed events (verified against the pinned directory
key), applied in sequence order; the last one applied is the device's view
of the conversation. Our sender key for a conversation is sent, as a
pairwise message whose Content carries ``sender_key``, to every member
official (and so to all their devices and our own other ones) before our
next group message: after a member joins it gets the chain at its current
iteration (no earlier messages), and after anyone leaves or is removed (or
a gap in the sequence) the key is rotated first and the new one goes only
to the members then.
"""

import hashlib
import time
from collections.abc import Callable
from uuid import UUID

import msgspec

from crypto.errors import CryptoError
from crypto.identity import verify_signature
from crypto.sender_keys import SenderKeyState
from gchat.client.errors import NoDevices
from gchat.client.rpc import ClientError, Rpc, retrying
from gchat.client.sessions import Content, PairwiseSessions, TrustError
from gchat.client.state import DeviceState
from protocol import frames as f
from protocol.errors import ErrorCode

#: Our sender key for a conversation rotates after this many messages...
SENDER_KEY_MAX_MESSAGES = 1000
#: ... or once it is this old (seconds), whichever comes first (§E7).
SENDER_KEY_MAX_AGE = 7 * 24 * 3600

_signed_event_decoder = msgspec.msgpack.Decoder(f.SignedMembershipEvent)
_event_decoder = msgspec.msgpack.Decoder(f.MembershipEvent)
_event_encoder = msgspec.msgpack.Encoder()


def _apply_change(members: list[f.GroupMember], event: f.MembershipEvent) -> list[f.GroupMember]:
    """The membership after ``event``'s change (its ``subjects``) to ``members``."""
    by_id = {m.official_id: m for m in members}
    for subject in event.subjects:
        if event.action in ("removed", "left"):
            by_id.pop(subject.official_id, None)
        elif event.action in ("added", "promoted", "demoted", "created"):
            by_id[subject.official_id] = subject
    return list(by_id.values())


class Groups:
    """The group conversations this device is in, and the sender keys for them."""

    def __init__(
        self,
        state: DeviceState,
        rpc: Rpc,
        sessions: PairwiseSessions,
        save: Callable[[], None],
    ) -> None:
        self.state = state
        self._rpc = rpc
        self._sessions = sessions
        self._save = save
        #: Verified membership events received, in the order they came.
        self.events: list[f.MembershipEvent] = []

    def _verified_event(self, signed: bytes) -> tuple[f.MembershipEvent, bytes]:
        """Check a SignedMembershipEvent against the directory key; event and its bytes."""
        assert self.state.directory_key is not None, "device is not enrolled"
        try:
            outer = _signed_event_decoder.decode(signed)
            verify_signature(
                self.state.directory_key,
                f.MEMBERSHIP_SIGNATURE_LABEL + outer.event,
                outer.signature,
            )
            return _event_decoder.decode(outer.event), outer.event
        except msgspec.DecodeError as error:
            raise CryptoError(f"malformed membership event: {error}") from error

    def view(self, conversation_id: UUID) -> f.MembershipEvent | None:
        """Our view of a conversation: the last membership event applied."""
        raw = self.state.conversations.get(conversation_id)
        return _event_decoder.decode(raw) if raw is not None else None

    def apply_event(self, signed: bytes, frame: f.Deliver | None = None) -> f.MembershipEvent:
        """Verify an event (or a snapshot) and move our view forward with it.

        Our view (``view()``) is the latest event applied, with the
        membership we hold (applied change by change, checked against each
        event's digest, or taken whole from a snapshot). A change that cannot
        be applied (a gap, or a digest that does not match) leaves the view
        where it was, and the next ``send_group`` resyncs from a snapshot
        (the server answers ``stale_membership``); it also forces a rotation,
        as does any member's departure.
        """
        event, _ = self._verified_event(signed)
        cid = event.conversation_id
        if frame is not None and frame.conversation_id != cid:
            raise CryptoError("membership event for another conversation")
        view = self.view(cid)
        known = view.seq if view is not None else 0
        if event.seq <= known:
            return event  # already applied (a snapshot got there first)
        s = self.state
        gap = list(range(known + 1, event.seq)) if view is not None else []
        if frame is not None and gap:
            missed = s.missed_events.setdefault(cid, [])
            missed.extend(q for q in gap if q not in missed)
        members: list[f.GroupMember] | None = None
        if event.members is not None:
            members = list(event.members)
        elif view is not None and not gap:
            members = _apply_change(view.members or [], event)
        if members is not None and f.members_digest(members) != event.members_digest:
            members = None  # not the membership the server signed: resync
        me = s.official_id
        if (
            event.action in ("removed", "left") and any(m.official_id == me for m in event.subjects)
        ) or (members is not None and all(m.official_id != me for m in members)):
            # We are out: nothing of this conversation may be read or sent any more.
            for keys in (s.sender_keys, s.group_keys, s.key_holders):
                keys.pop(cid, None)
            if cid in s.rotate_keys:
                s.rotate_keys.remove(cid)
            view_members = members if members is not None else []
            s.conversations[cid] = _event_encoder.encode(
                msgspec.structs.replace(event, members=view_members)
            )
            return event
        if members is None:  # a change we could not follow: someone may have left
            if cid in s.sender_keys and cid not in s.rotate_keys:
                s.rotate_keys.append(cid)
            return event
        ids = {m.official_id for m in members}
        if view is not None:
            departed = {m.official_id for m in view.members or []} - ids
            if departed and cid in s.sender_keys and cid not in s.rotate_keys:
                s.rotate_keys.append(cid)
            senders = s.group_keys.get(cid, {})
            for device in [d for d in senders if s.peers.get(d) in departed]:
                del senders[device]
        holders = s.key_holders.get(cid)
        if holders is not None:
            s.key_holders[cid] = [o for o in holders if o in ids]
        s.conversations[cid] = _event_encoder.encode(
            msgspec.structs.replace(event, members=members)
        )
        return event

    def _apply_reply(self, reply: f.ConversationState) -> f.MembershipEvent:
        event = self.apply_event(reply.event)
        if event.conversation_id != reply.conversation_id:
            raise CryptoError("conversation reply for another conversation")
        self._save()
        return self.view(event.conversation_id) or event

    async def refresh(self, conversation_id: UUID) -> f.MembershipEvent:
        """Fetch the conversation's latest signed event and apply it."""
        return self._apply_reply(
            await self._rpc.request(f.GetConversation, conversation_id=conversation_id)
        )

    async def open_direct(self, official_id: UUID) -> f.MembershipEvent:
        return self._apply_reply(await self._rpc.request(f.OpenDirect, official_id=official_id))

    async def create(
        self, title: str, members: list[UUID], announcement_only: bool = False
    ) -> f.MembershipEvent:
        """A new group with us as its admin; returns its first event (with its id)."""
        return self._apply_reply(
            await self._rpc.request(
                f.CreateGroup, title=title, members=members, announcement_only=announcement_only
            )
        )

    async def add_members(self, conversation_id: UUID, officials: list[UUID]) -> f.MembershipEvent:
        return self._apply_reply(
            await self._rpc.request(
                f.AddMembers, conversation_id=conversation_id, officials=officials
            )
        )

    async def remove_members(
        self, conversation_id: UUID, officials: list[UUID]
    ) -> f.MembershipEvent:
        return self._apply_reply(
            await self._rpc.request(
                f.RemoveMembers, conversation_id=conversation_id, officials=officials
            )
        )

    async def leave(self, conversation_id: UUID) -> f.MembershipEvent:
        return self._apply_reply(
            await self._rpc.request(f.LeaveGroup, conversation_id=conversation_id)
        )

    async def set_admin(
        self, conversation_id: UUID, official_id: UUID, admin: bool
    ) -> f.MembershipEvent:
        return self._apply_reply(
            await self._rpc.request(
                f.SetGroupAdmin,
                conversation_id=conversation_id,
                official_id=official_id,
                admin=admin,
            )
        )

    async def rename(self, conversation_id: UUID, title: str) -> f.MembershipEvent:
        return self._apply_reply(
            await self._rpc.request(f.RenameGroup, conversation_id=conversation_id, title=title)
        )

    async def set_announcement_only(
        self, conversation_id: UUID, announcement_only: bool
    ) -> f.MembershipEvent:
        return self._apply_reply(
            await self._rpc.request(
                f.SetAnnouncementOnly,
                conversation_id=conversation_id,
                announcement_only=announcement_only,
            )
        )

    async def _distribute_sender_key(self, conversation_id: UUID) -> None:
        """Rotate if due, then send our sender key to every member who lacks it."""
        s = self.state
        current = s.sender_keys.get(conversation_id)
        created = s.sender_key_created.get(conversation_id, 0)
        if (
            current is not None
            and (
                SenderKeyState.from_bytes(current).iteration >= SENDER_KEY_MAX_MESSAGES
                or time.time() - created >= SENDER_KEY_MAX_AGE
            )
            and conversation_id not in s.rotate_keys
        ):
            s.rotate_keys.append(conversation_id)  # periodic rotation (§E7)
        if current is None or conversation_id in s.rotate_keys:
            key = (
                SenderKeyState.from_bytes(current).rotate()
                if current is not None
                else SenderKeyState.generate()
            )
            s.sender_keys[conversation_id] = key.to_bytes()
            s.sender_key_created[conversation_id] = int(time.time())
            s.key_holders[conversation_id] = []
            if conversation_id in s.rotate_keys:
                s.rotate_keys.remove(conversation_id)
            self._save()
        view = self.view(conversation_id)
        assert view is not None
        key = SenderKeyState.from_bytes(s.sender_keys[conversation_id])
        distribution = key.distribution_message()
        holders = s.key_holders.setdefault(conversation_id, [])
        for member in view.members or []:
            official = member.official_id
            if official in holders:
                continue
            digest = hashlib.sha256(
                f"{conversation_id}|{key.key_id}|{official}".encode()
            ).hexdigest()[:40]
            try:
                await self._sessions.send(
                    official, b"", f"sk-{digest}", sender_key=(conversation_id, distribution)
                )
            except NoDevices:
                # Our own official with no other device, or a member with none
                # enrolled: nobody to give the key to (yet).
                pass
            holders.append(official)
            self._save()

    async def send(
        self, conversation_id: UUID, plaintext: bytes, client_message_id: str
    ) -> f.Accepted:
        """Encrypt once with our sender key; the server fans it out to member devices.

        On ``stale_membership`` we fetch the signed state, rekey as it
        requires, and retry with the same client message id.
        """
        if self.view(conversation_id) is None:
            await self.refresh(conversation_id)

        async def attempt() -> f.Accepted:
            await self._distribute_sender_key(conversation_id)
            view = self.view(conversation_id)
            assert view is not None
            key = SenderKeyState.from_bytes(self.state.sender_keys[conversation_id])
            ciphertext = key.encrypt(plaintext)
            self.state.sender_keys[conversation_id] = key.to_bytes()  # never reuse a key
            self._save()
            accepted: f.Accepted = await self._rpc.request(
                f.SendGroup,
                client_message_id=client_message_id,
                conversation_id=conversation_id,
                seq=view.seq,
                ciphertext=ciphertext,
            )
            return accepted

        async def catch_up(error: ClientError) -> None:
            await self.refresh(conversation_id)

        return await retrying(ErrorCode.STALE_MEMBERSHIP, attempt, catch_up)

    def receive_event(self, frame: f.Deliver) -> None:
        """A delivered membership event: verified, applied, kept in ``events``."""
        self.events.append(self.apply_event(frame.ciphertext, frame))

    def open(self, frame: f.Deliver) -> tuple[UUID, bytes]:
        """A delivered group message: the sending official (from the binding) and plaintext."""
        if frame.conversation_id is None:
            raise TrustError("group message without a conversation")
        official = self._sessions.bound_official(frame)
        if official is None:
            raise TrustError("group message from a device with no verified binding")
        return official, self.decrypt(frame.conversation_id, frame.sender_device, frame.ciphertext)

    def decrypt(self, conversation_id: UUID, sender_device: UUID, ciphertext: bytes) -> bytes:
        """Decrypt a group message with that device's sender key (CryptoError if we lack it)."""
        stored = self.state.group_keys.get(conversation_id, {}).get(sender_device)
        if stored is None:
            raise CryptoError("no sender key of that device for this conversation")
        key = SenderKeyState.from_bytes(stored)
        plaintext = key.decrypt(ciphertext)
        self.state.group_keys[conversation_id][sender_device] = key.to_bytes()
        return plaintext

    async def accept_sender_key(self, content: Content, official: UUID, device: UUID) -> None:
        """Store a sender-key distribution, only moving forward, only from a member.

        ``official`` comes from the binding. When our view does not show
        the sender as a member (we have none yet, or it is behind), we fetch
        the signed state first. A distribution for the same key id must be
        ahead of what we hold (skipped keys are kept); an older key id is
        refused (crypto.sender_keys ``accept_distribution``).
        """
        cid = content.conversation_id
        assert content.sender_key is not None
        if cid is None:
            raise TrustError("sender key without a conversation")
        me = self.state.official_id
        view = self.view(cid)

        def members(event: f.MembershipEvent | None) -> set[UUID]:
            return {m.official_id for m in (event.members or [])} if event else set()

        if official not in members(view) or me not in members(view):
            try:
                view = await self.refresh(cid)
            except ClientError as error:
                raise TrustError(f"sender key for a conversation we cannot see: {error}") from None
        if official not in members(view) or me not in members(view):
            raise TrustError("sender key from an official who is not a member (or we are not)")
        keys = self.state.group_keys.setdefault(cid, {})
        incoming = SenderKeyState.from_distribution(content.sender_key)
        for other, raw in keys.items():
            if other != device and (
                SenderKeyState.from_bytes(raw).signing_public_key == incoming.signing_public_key
            ):
                raise TrustError("sender key already held by another device")
        existing = keys.get(device)
        if existing is not None:
            incoming = SenderKeyState.from_bytes(existing).accept_distribution(content.sender_key)
        keys[device] = incoming.to_bytes()
