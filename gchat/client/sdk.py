"""The reference client SDK: one enrolled device over one connection.

``Client`` is what the CLI, the load generator and the tests hold. It
composes the parts, each in its own module: the connection (``rpc``),
pairwise end-to-end sessions and the trust rules behind them
(``sessions``), group conversations with sender keys (``groups``); staying
online across node failures is ``reconnecting``. What stays here is what
belongs to the device as a whole: enrolment, authentication, keeping its
prekeys stocked, and handling what the server pushes, written once for
``messages()`` and for ``Reconnecting``.

The server sees opaque ciphertext and nothing else. A message that fails
any check is acked and reported in ``events``, never a reason to stop
(docs/PROTOCOL.md §E6a).

Acks are coalesced (docs/PROTOCOL.md §4.9): a delivery is acked once it is
stored, together with every other delivery handled since the last ack, in
one frame sent when no pushed frame waits to be handled (or ``ACK_BATCH``
wait). A backlog of N envelopes then costs the node a few ack frames
instead of N, and the client never waits for a frame while holding acks,
so the server's window (most envelopes pushed and not acked) cannot stay
shut.
"""

import asyncio
import contextlib
import ssl
import time
from collections.abc import AsyncIterator
from typing import Any
from uuid import UUID

import msgspec
from websockets.asyncio.client import ClientConnection
from websockets.exceptions import ConnectionClosed

from crypto.certificate import verify_certificate
from crypto.errors import CryptoError
from crypto.identity import IdentityKeyPair, auth_message
from gchat.client.events import ClientEvent, Received, undecryptable
from gchat.client.groups import Groups
from gchat.client.rpc import ClientError, Rpc
from gchat.client.sessions import PairwiseSessions, TrustError
from gchat.client.state import DeviceState, StateFile
from protocol import frames as f
from protocol.errors import ErrorCode

PREKEY_BATCH = 50
SIGNED_PREKEY_MAX_AGE = 7 * 24 * 3600
#: Most positions in one ``ack`` (the protocol allows 1000): a quarter of the
#: server's default window, so acks flow back while a burst is handled and
#: the window refills before it runs dry.
ACK_BATCH = 64


class Client:
    """One device: enrol or authenticate, send and receive, pairwise and in groups."""

    def __init__(
        self,
        state: DeviceState,
        *,
        json: bool = False,
        store: StateFile | None = None,
        tls: ssl.SSLContext | None = None,
        events: list[ClientEvent] | None = None,
        redelivered: list[UUID] | None = None,
        connect_options: dict[str, Any] | None = None,
    ) -> None:
        self.state = state
        self.store = store
        self.identity = IdentityKeyPair.from_seed(state.identity_seed)
        #: What the user must be told (shared with a Reconnecting owner).
        self.events: list[ClientEvent] = events if events is not None else []
        #: Already-seen messages the server pushed again (acked, dropped).
        self.redelivered: list[UUID] = redelivered if redelivered is not None else []
        self.rpc = Rpc(json=json, tls=tls, options=connect_options)
        self.sessions = PairwiseSessions(
            state, self.identity, self.rpc, self.events.append, self.save
        )
        self.groups = Groups(state, self.rpc, self.sessions, self.save)
        #: Positions handled (stored) and not yet acked.
        self._handled: list[int] = []

    @property
    def undecryptable(self) -> list[UUID]:
        """Ids of the deliveries refused so far (see ``events`` for why)."""
        return undecryptable(self.events)

    def save(self) -> None:
        """Persist the state (keys, sessions) if this client has a store."""
        if self.store is not None:
            self.store.save(self.state)

    # --- connection -----------------------------------------------------------

    async def connect(self) -> None:
        await self.rpc.connect(self.state.url)

    async def close(self) -> None:
        """Ack what was handled (stored: acking it is safe), then close."""
        with contextlib.suppress(ConnectionError, ConnectionClosed):
            await self.flush_acks()
        await self.rpc.close()

    async def __aenter__(self) -> "Client":
        await self.connect()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    @property
    def ws(self) -> ClientConnection:
        return self.rpc.ws

    @property
    def challenge(self) -> f.Challenge | None:
        return self.rpc.challenge

    @property
    def pushed(self) -> "asyncio.Queue[f.ServerFrame]":
        return self.rpc.pushed

    async def request(self, make: Any, **fields: Any) -> Any:
        """Send a request frame built as ``make(rid=..., **fields)``; await its reply."""
        return await self.rpc.request(make, **fields)

    async def receive(self, wait: float | None = None) -> f.ServerFrame:
        """The next frame the server pushed (deliver, queue_empty, prekeys_low...)."""
        return await self.rpc.receive(wait)

    async def ack(self, positions: list[int]) -> None:
        await self.rpc.ack(positions)

    async def flush_acks(self) -> None:
        """Ack every position handled since the last ack, in one frame."""
        if self._handled:
            positions, self._handled = self._handled, []
            await self.rpc.ack(positions)

    # --- enrolment and authentication -------------------------------------------

    def sign_challenge(self) -> bytes:
        """Sign the challenge, but only for the deployment we enrolled with.

        Otherwise a rogue endpoint could relay another deployment's
        challenge and have us sign ourselves in there.
        """
        challenge = self.rpc.challenge
        assert challenge is not None
        pinned = self.state.server_id
        if pinned is not None and pinned != challenge.server_id:
            raise CryptoError(f"server id {challenge.server_id!r} is not {pinned!r}")
        return self.identity.sign(auth_message(challenge.server_id, challenge.nonce))

    async def enroll(self, code: str, device_name: str, platform: str = "cli") -> f.Enrolled:
        reply: f.Enrolled = await self.request(
            f.Enroll,
            code=code,
            identity_key=self.identity.public_key,
            signature=self.sign_challenge(),
            signed_prekey=self.sessions.new_signed_prekey(),
            one_time_prekeys=self.sessions.new_prekeys(PREKEY_BATCH),
            device_name=device_name,
            platform=platform,
        )
        certificate = verify_certificate(reply.certificate, reply.directory_key)
        if certificate.identity_key != self.identity.public_key:
            raise CryptoError("server certified a different identity key")
        s = self.state
        s.device_id, s.official_id = reply.device_id, reply.official_id
        s.agency_id = reply.agency_id
        s.directory_key, s.certificate = reply.directory_key, reply.certificate
        assert self.rpc.challenge is not None
        s.server_id = self.rpc.challenge.server_id
        s.token, s.token_expires_at = reply.token, reply.token_expires_at
        return reply

    async def authenticate(
        self, use_token: bool = True, deliveries: bool = True
    ) -> f.Authenticated:
        """Authenticate this connection; ``deliveries`` False makes it request-only
        (no deliveries; it neither displaces the device's connection nor is displaced)."""
        reply: f.Authenticated
        if use_token and self.state.token:
            try:
                reply = await self.request(
                    f.AuthToken, token=self.state.token, deliveries=deliveries
                )
            except ClientError as error:
                if error.code != ErrorCode.TOKEN_INVALID:
                    raise
                return await self.authenticate(use_token=False, deliveries=deliveries)
        else:
            assert self.state.device_id is not None, "device is not enrolled"
            reply = await self.request(
                f.Auth,
                device_id=self.state.device_id,
                signature=self.sign_challenge(),
                deliveries=deliveries,
            )
        self.state.token, self.state.token_expires_at = reply.token, reply.token_expires_at
        await self.rotate_signed_prekey_if_due()
        return reply

    async def refill_prekeys(self, count: int = PREKEY_BATCH) -> int:
        reply: f.PrekeysStored = await self.request(
            f.UploadPrekeys, one_time_prekeys=self.sessions.new_prekeys(count)
        )
        self.save()
        return reply.available

    async def rotate_signed_prekey_if_due(self, max_age: int = SIGNED_PREKEY_MAX_AGE) -> bool:
        """Replace the signed prekey once it is older than ``max_age`` seconds."""
        current = self.state.signed_prekey
        if current is not None and time.time() - current[2] < max_age:
            return False
        signed = self.sessions.new_signed_prekey()
        await self.request(f.UploadPrekeys, one_time_prekeys=[], signed_prekey=signed)
        self.save()
        return True

    # --- pairwise (gchat.client.sessions) ------------------------------------------

    async def send_message(
        self, recipient: UUID, plaintext: bytes, client_message_id: str
    ) -> f.Accepted:
        """Encrypt for every device of ``recipient`` and our own other devices; send."""
        return await self.sessions.send(recipient, plaintext, client_message_id)

    async def safety_number(self, official_id: UUID) -> str:
        return await self.sessions.safety_number(official_id)

    async def verify(self, official_id: UUID) -> str:
        return await self.sessions.verify(official_id)

    def accept_devices(self, official_id: UUID) -> set[bytes]:
        return self.sessions.accept_devices(official_id)

    # --- groups (gchat.client.groups) ----------------------------------------------

    async def send_group(
        self, conversation_id: UUID, plaintext: bytes, client_message_id: str
    ) -> f.Accepted:
        """Encrypt once with our sender key; the server fans it out to member devices."""
        return await self.groups.send(conversation_id, plaintext, client_message_id)

    def conversation(self, conversation_id: UUID) -> f.MembershipEvent | None:
        """Our view of a conversation: the last membership event applied."""
        return self.groups.view(conversation_id)

    async def open_direct(self, official_id: UUID) -> f.MembershipEvent:
        return await self.groups.open_direct(official_id)

    async def create_group(
        self, title: str, members: list[UUID], announcement_only: bool = False
    ) -> f.MembershipEvent:
        """A new group with us as its admin; returns its first event (with its id)."""
        return await self.groups.create(title, members, announcement_only)

    async def add_members(self, conversation_id: UUID, officials: list[UUID]) -> f.MembershipEvent:
        return await self.groups.add_members(conversation_id, officials)

    async def remove_members(
        self, conversation_id: UUID, officials: list[UUID]
    ) -> f.MembershipEvent:
        return await self.groups.remove_members(conversation_id, officials)

    async def leave_group(self, conversation_id: UUID) -> f.MembershipEvent:
        return await self.groups.leave(conversation_id)

    async def set_group_admin(
        self, conversation_id: UUID, official_id: UUID, admin: bool
    ) -> f.MembershipEvent:
        return await self.groups.set_admin(conversation_id, official_id, admin)

    async def rename_group(self, conversation_id: UUID, title: str) -> f.MembershipEvent:
        return await self.groups.rename(conversation_id, title)

    async def set_announcement_only(
        self, conversation_id: UUID, announcement_only: bool
    ) -> f.MembershipEvent:
        return await self.groups.set_announcement_only(conversation_id, announcement_only)

    # --- what the server pushes --------------------------------------------------

    async def open(self, frame: f.Deliver) -> Received | None:
        """Decrypt a delivery (raises CryptoError if it cannot be read or is refused).

        None for what carries no message for the user: a membership event or
        a sender-key distribution (both are applied to the state here).
        """
        if frame.kind == "membership":
            self.groups.receive_event(frame)
            return None
        recipient = None
        if frame.kind == "group":
            official, plaintext = self.groups.open(frame)
        else:
            content, official = self.sessions.decrypt(frame)
            if content.recipient is not None and official != self.state.official_id:
                raise TrustError("only our own devices name the recipient of a message")
            if content.sender_key is not None:
                await self.groups.accept_sender_key(content, official, frame.sender_device)
                return None
            plaintext, recipient = content.body, content.recipient
        return Received(
            frame.message_id,
            frame.position,
            official,
            frame.sender_device,
            frame.sent_at,
            plaintext,
            frame.conversation_id if frame.kind == "group" else None,
            recipient,
        )

    async def process(self, frame: f.Deliver) -> Received | None:
        """Open a delivery and record it as seen; a refusal becomes an event.

        Whatever fails (a wrong binding, a replay, undecodable content, a
        bad signature) is recorded as ``undecryptable`` with the reason; the
        caller acks either way, so one bad message never stops the loop.
        """
        try:
            received = await self.open(frame)
        except (CryptoError, msgspec.MsgspecError, ValueError) as error:
            received = None
            self.events.append(
                ClientEvent(
                    "undecryptable",
                    f"{type(error).__name__}: {error}",
                    frame.message_id,
                    frame.sender_official,
                    frame.sender_device,
                )
            )
        self.state.mark_seen(frame.message_id)
        self.state.expire_sessions(time.time())
        self.save()
        return received

    async def handle(self, frame: f.ServerFrame) -> Received | None:
        """One pushed frame: the message it brings, if any; refill prekeys when told.

        Per delivery: decrypt, save the advanced state, then ack, so a crash
        can lose neither the message nor the ratchet step. A redelivered
        message (same id) is acked and skipped; one that cannot be decrypted
        or is refused is acked and reported in ``events`` (it never will be).
        The ack goes with the others of the burst: when no pushed frame is
        left to handle, or ``ACK_BATCH`` positions wait.
        """
        received = None
        if isinstance(frame, f.Deliver):
            if self.state.seen(frame.message_id):
                self.redelivered.append(frame.message_id)
            else:
                received = await self.process(frame)  # stored before it is acked
            self._handled.append(frame.position)
        elif isinstance(frame, f.PrekeysLow):
            await self.refill_prekeys()
        if len(self._handled) >= ACK_BATCH or self.pushed.empty():
            await self.flush_acks()
        return received

    async def messages(self, idle_timeout: float | None = None) -> AsyncIterator[Received]:
        """Yield each new message once, in order, until ``idle_timeout`` passes quietly."""
        while True:
            try:
                frame = await self.receive(idle_timeout)
            except TimeoutError:
                return
            received = await self.handle(frame)
            if received is not None:
                yield received
