"""The reference client SDK over the real protocol (websockets client).

``Client`` keeps one connection: a reader task routes replies to the request
that asked (by ``rid``) and everything the server pushes to a queue.
Messages are end-to-end encrypted per recipient device with X3DH + Double
Ratchet sessions (``crypto.session``). A session is only started with a
device whose directory certificate verifies against the pinned directory
key, and a session a peer starts with us is only kept if the certificate
inside its first message verifies and names the identity key it used.
The server sees opaque ciphertext and nothing else.

Trust rules (docs/PROTOCOL.md §E6a): a device is bound to an official only
by a verified certificate, and never moved; who sent a message is what the
binding says, never the ``deliver`` frame's labels (a frame that disagrees
is refused); a prekey message is accepted once; a verified peer whose
devices change cannot be sent to until the user accepts the change; and a
message that fails any check is acked and reported, never a reason to stop.
"""

import asyncio
import hashlib
import itertools
import ssl
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any
from uuid import UUID

import msgspec
from websockets.asyncio.client import ClientConnection, connect

from crypto.certificate import verify_certificate
from crypto.errors import CryptoError
from crypto.identity import IdentityKeyPair, auth_message, verify_signature
from crypto.prekeys import PrekeyPair, sign_prekey
from crypto.safety_number import format_safety_number, safety_number
from crypto.sender_keys import SenderKeyState
from crypto.session import TYPE_PREKEY, PrekeyMessage, Session, message_type
from crypto.x3dh import PrekeyBundle
from gchat.client.state import DeviceState, StateFile, prekey_message_digest
from protocol import frames as f
from protocol.codec import Codec, client_codec
from protocol.version import JSON_SUBPROTOCOL, MSGPACK_SUBPROTOCOL

PREKEY_BATCH = 50
SIGNED_PREKEY_MAX_AGE = 7 * 24 * 3600
OLD_SIGNED_PREKEYS_KEPT = 2
#: Our sender key for a conversation rotates after this many messages...
SENDER_KEY_MAX_MESSAGES = 1000
#: ... or once it is this old (seconds), whichever comes first (§E7).
SENDER_KEY_MAX_AGE = 7 * 24 * 3600


class Content(msgspec.Struct, forbid_unknown_fields=True, omit_defaults=True):
    """What is inside every pairwise ciphertext (MessagePack; see docs/PROTOCOL.md, Part II).

    The sender's certificate rides along so that a recipient can check who
    started a session without asking the server. A sender-key distribution
    for a group travels the same way, with ``sender_key`` and
    ``conversation_id`` set (absent from ordinary messages, which are
    unchanged on the wire). The copies of a message to another official that
    go to our own other devices name that official in ``recipient``, so they
    show it in the conversation it belongs to (PROTOCOL.md §E6a).
    """

    body: bytes
    certificate: bytes
    sender_key: bytes | None = None  # a crypto.sender_keys distribution message
    conversation_id: UUID | None = None
    recipient: UUID | None = None


_content_encoder = msgspec.msgpack.Encoder()
_content_decoder = msgspec.msgpack.Decoder(Content)
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


class ClientError(Exception):
    """The server answered a request with an error frame."""

    def __init__(self, frame: f.Error) -> None:
        super().__init__(f"{frame.code}: {frame.message}")
        self.code = frame.code
        self.frame = frame


class TrustError(CryptoError):
    """A message refused by the trust rules: labels that disagree with the
    binding, a replayed prekey message, a sender key from a non-member,
    undecodable content."""


class DeviceChangeBlocked(Exception):
    """A verified official's devices changed; sending waits for the user."""

    def __init__(self, official_id: UUID, new_keys: set[bytes]) -> None:
        super().__init__(
            f"the devices of official {official_id} changed since you verified them;"
            f" compare safety numbers again (gchat client safety-number --with {official_id})"
            " and run 'gchat client verify' or 'gchat client accept-devices'"
        )
        self.official_id = official_id
        self.new_keys = new_keys


@dataclass(frozen=True)
class ClientEvent:
    """Something the user must be told about (``listen`` prints these).

    ``kind`` is one of: ``undecryptable`` (a delivery refused; ``detail``
    says why), ``new_device`` (a peer official has a device we had not seen),
    ``no_one_time_prekey`` (a session was set up without one: weaker
    protection of its first messages).
    """

    kind: str
    detail: str
    message_id: UUID | None = None
    official_id: UUID | None = None
    device_id: UUID | None = None


@dataclass(frozen=True)
class Received:
    """A delivered, decrypted message."""

    message_id: UUID
    position: int
    sender_official: UUID
    sender_device: UUID
    sent_at: int
    plaintext: bytes
    #: Set for a group message (its conversation).
    conversation_id: UUID | None = None
    #: Set for a copy of our own message sent from another of our devices:
    #: the official it was sent to (its conversation).
    recipient: UUID | None = None

    @property
    def kind(self) -> str:
        """ "group" or "pairwise"."""
        return "group" if self.conversation_id is not None else "pairwise"


def _decode_content(plaintext: bytes) -> Content:
    try:
        return _content_decoder.decode(plaintext)
    except msgspec.MsgspecError as error:
        raise TrustError(f"undecodable content: {error}") from error


class Client:
    def __init__(
        self,
        state: DeviceState,
        *,
        json: bool = False,
        store: StateFile | None = None,
        tls: ssl.SSLContext | None = None,
        events: list[ClientEvent] | None = None,
    ) -> None:
        self.state = state
        self.store = store
        #: Trust for wss:// (``gchat.client.tls``); None: the system's CAs.
        self._tls = tls
        self._subprotocol = JSON_SUBPROTOCOL if json else MSGPACK_SUBPROTOCOL
        self._codec: Codec[f.ServerFrame] = client_codec(self._subprotocol)
        self._ws: ClientConnection | None = None
        self._rids = itertools.count(1)
        self._pending: dict[int, asyncio.Future[Any]] = {}
        self.pushed: asyncio.Queue[f.ServerFrame] = asyncio.Queue()
        self._reader: asyncio.Task[None] | None = None
        self.challenge: f.Challenge | None = None
        self.identity = IdentityKeyPair.from_seed(state.identity_seed)
        #: What the user must be told (shared with a Reconnecting owner).
        self.events: list[ClientEvent] = events if events is not None else []
        #: Verified membership events received (see the group section).
        self.membership_events: list[f.MembershipEvent] = []

    @property
    def undecryptable(self) -> list[UUID]:
        """Ids of the deliveries refused so far (see ``events`` for why)."""
        return [e.message_id for e in self.events if e.kind == "undecryptable" and e.message_id]

    def _event(
        self,
        kind: str,
        detail: str,
        message_id: UUID | None = None,
        official_id: UUID | None = None,
        device_id: UUID | None = None,
    ) -> None:
        self.events.append(ClientEvent(kind, detail, message_id, official_id, device_id))

    # --- connection -----------------------------------------------------------

    async def connect(self) -> None:
        self._ws = await connect(
            self.state.url,
            subprotocols=[self._subprotocol],  # type: ignore[list-item]
            compression=None,
            max_size=None,
            open_timeout=10,
            **self._tls_options(),
        )
        first = self._codec.decode(await self._ws.recv())
        if not isinstance(first, f.Challenge):
            raise ConnectionError(f"expected a challenge, got {type(first).__name__}")
        self.challenge = first
        self._reader = asyncio.create_task(self._read())

    def _tls_options(self) -> dict[str, Any]:
        """websockets refuses an ``ssl`` argument for a ws:// URL."""
        return {"ssl": self._tls} if self._tls and self.state.url.startswith("wss:") else {}

    async def close(self) -> None:
        if self._ws is not None:
            await self._ws.close()
        if self._reader is not None:
            await asyncio.gather(self._reader, return_exceptions=True)

    async def __aenter__(self) -> "Client":
        await self.connect()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    @property
    def ws(self) -> ClientConnection:
        assert self._ws is not None, "not connected"
        return self._ws

    async def _read(self) -> None:
        try:
            async for message in self.ws:
                frame = self._codec.decode(message)
                rid = getattr(frame, "rid", None)
                if rid is not None and rid in self._pending:
                    self._pending.pop(rid).set_result(frame)
                else:
                    await self.pushed.put(frame)
        finally:
            for future in self._pending.values():
                if not future.done():
                    future.set_exception(ConnectionError("connection closed"))
            self._pending.clear()

    async def send_frame(self, frame: Any) -> None:
        await self.ws.send(self._codec.encode(frame))

    async def request(self, make: Any, **fields: Any) -> Any:
        """Send a request frame built as ``make(rid=..., **fields)``; await its reply."""
        rid = next(self._rids)
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._pending[rid] = future
        try:
            await self.send_frame(make(rid=rid, **fields))
        except BaseException as error:
            self._pending.pop(rid, None)
            future.cancel()
            if isinstance(error, ConnectionClosed):  # one error for "the connection went"
                raise ConnectionError(f"connection closed: {error}") from error
            raise
        reply = await future
        if isinstance(reply, f.Error):
            raise ClientError(reply)
        return reply

    # --- enrolment and authentication -------------------------------------------

    def _new_prekeys(self, count: int) -> list[f.Prekey]:
        keys = []
        for _ in range(count):
            pair = PrekeyPair.generate(self.state.next_prekey_id)
            self.state.next_prekey_id += 1
            self.state.one_time_prekeys[pair.key_id] = pair.private_key
            keys.append(f.Prekey(key_id=pair.key_id, public_key=pair.public_key))
        return keys

    def _new_signed_prekey(self) -> f.SignedPrekey:
        """A fresh signed prekey; the previous one stays for late prekey messages."""
        pair = PrekeyPair.generate(self.state.next_prekey_id)
        self.state.next_prekey_id += 1
        if self.state.signed_prekey is not None:
            old_id, old_private, _ = self.state.signed_prekey
            self.state.old_signed_prekeys[old_id] = old_private
            for key_id in sorted(self.state.old_signed_prekeys)[:-OLD_SIGNED_PREKEYS_KEPT]:
                del self.state.old_signed_prekeys[key_id]
                # No prekey message under it can be accepted any more.
                self.state.accepted_prekey_messages.pop(key_id, None)
        self.state.signed_prekey = (pair.key_id, pair.private_key, int(time.time()))
        return f.SignedPrekey(
            key_id=pair.key_id,
            public_key=pair.public_key,
            signature=sign_prekey(self.identity, pair),
        )

    def _sign_challenge(self) -> bytes:
        """Sign the challenge, but only for the deployment we enrolled with.

        Otherwise a rogue endpoint could relay another deployment's
        challenge and have us sign ourselves in there.
        """
        assert self.challenge is not None
        pinned = self.state.server_id
        if pinned is not None and pinned != self.challenge.server_id:
            raise CryptoError(f"server id {self.challenge.server_id!r} is not {pinned!r}")
        return self.identity.sign(auth_message(self.challenge.server_id, self.challenge.nonce))

    async def enroll(self, code: str, device_name: str, platform: str = "cli") -> f.Enrolled:
        reply: f.Enrolled = await self.request(
            f.Enroll,
            code=code,
            identity_key=self.identity.public_key,
            signature=self._sign_challenge(),
            signed_prekey=self._new_signed_prekey(),
            one_time_prekeys=self._new_prekeys(PREKEY_BATCH),
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
        assert self.challenge is not None
        s.server_id = self.challenge.server_id
        s.token, s.token_expires_at = reply.token, reply.token_expires_at
        return reply

    async def authenticate(self, use_token: bool = True) -> f.Authenticated:
        reply: f.Authenticated
        if use_token and self.state.token:
            try:
                reply = await self.request(f.AuthToken, token=self.state.token)
            except ClientError as error:
                if error.code != "token_invalid":
                    raise
                return await self.authenticate(use_token=False)
        else:
            assert self.state.device_id is not None, "device is not enrolled"
            reply = await self.request(
                f.Auth, device_id=self.state.device_id, signature=self._sign_challenge()
            )
        self.state.token, self.state.token_expires_at = reply.token, reply.token_expires_at
        await self.rotate_signed_prekey_if_due()
        return reply

    def save(self) -> None:
        """Persist the state (keys, sessions) if this client has a store."""
        if self.store is not None:
            self.store.save(self.state)

    async def refill_prekeys(self, count: int = PREKEY_BATCH) -> int:
        reply: f.PrekeysStored = await self.request(
            f.UploadPrekeys, one_time_prekeys=self._new_prekeys(count)
        )
        self.save()
        return reply.available

    async def rotate_signed_prekey_if_due(self, max_age: int = SIGNED_PREKEY_MAX_AGE) -> bool:
        """Replace the signed prekey once it is older than ``max_age`` seconds."""
        current = self.state.signed_prekey
        if current is not None and time.time() - current[2] < max_age:
            return False
        signed = self._new_signed_prekey()
        await self.request(f.UploadPrekeys, one_time_prekeys=[], signed_prekey=signed)
        self.save()
        return True

    # --- messages ------------------------------------------------------------

    def _verified(self, certificate: bytes, official_id: UUID, device_id: UUID) -> bytes:
        """The identity key ``certificate`` certifies for that official's device."""
        assert self.state.directory_key is not None, "device is not enrolled"
        cert = verify_certificate(certificate, self.state.directory_key)
        if cert.device_id != device_id or cert.official_id != official_id:
            raise CryptoError("certificate names another device or official")
        return cert.identity_key

    async def device_keys(
        self, official_id: UUID, device_ids: list[UUID] | None = None
    ) -> dict[UUID, f.DeviceBundle]:
        """Bundles of an official's active devices, each certificate verified."""
        bundle: f.Bundle = await self.request(
            f.GetBundle, official_id=official_id, device_ids=device_ids
        )
        for device in bundle.devices:
            self._verified(device.certificate, official_id, device.device_id)
        return {device.device_id: device for device in bundle.devices}

    def _bind(self, official_id: UUID, device_id: UUID, identity_key: bytes) -> None:
        """Bind a device from its verified certificate; report a new device of a known peer."""
        known = bool(self.state.devices_of(official_id)) or official_id in self.state.verified
        if self.state.bind(device_id, official_id, identity_key) and known:
            self._event(
                "new_device",
                f"official {official_id} has a new device {device_id}",
                official_id=official_id,
                device_id=device_id,
            )

    async def establish(self, official_id: UUID, device_ids: list[UUID] | None = None) -> set[UUID]:
        """Start sessions with an official's devices (all, or ``device_ids``)."""
        started = set()
        for device_id, device in (await self.device_keys(official_id, device_ids)).items():
            if device_id == self.state.device_id:
                continue
            identity_key = self._verified(device.certificate, official_id, device_id)
            self._bind(official_id, device_id, identity_key)
            spk, otk = device.signed_prekey, device.one_time_prekey
            session = Session.initiate(
                self.identity,
                PrekeyBundle(
                    identity_key=identity_key,
                    signed_prekey_id=spk.key_id,
                    signed_prekey=spk.public_key,
                    signed_prekey_signature=spk.signature,
                    one_time_prekey_id=otk.key_id if otk else None,
                    one_time_prekey=otk.public_key if otk else None,
                ),
            )
            self.state.remember_session(device_id, session.to_bytes())
            if otk is None:
                self._event(
                    "no_one_time_prekey",
                    f"session with device {device_id} set up without a one-time prekey",
                    official_id=official_id,
                    device_id=device_id,
                )
            started.add(device_id)
        return started

    async def sync_devices(self, official_id: UUID) -> dict[UUID, bytes]:
        """The official's active devices and certified keys, as the directory lists them.

        New devices are bound (and get a session, so the one-time prekey
        the fetch spent is not wasted); bound devices no longer listed
        (revoked) are forgotten. Our own device is left out.
        """
        bundles = await self.device_keys(official_id)
        listed = set(bundles) - {self.state.device_id}
        for gone in self.state.devices_of(official_id) - listed:
            self.state.forget_device(gone)
        new = sorted(listed - self.state.devices_of(official_id))
        if new:
            await self.establish(official_id, new)
        self.save()
        return {d: self.state.peer_keys[d] for d in listed if d in self.state.peer_keys}

    async def safety_number(self, official_id: UUID) -> str:
        """The 60-digit safety number with ``official_id`` over all active devices of both.

        Both sides compute it from the directory's current device lists, so
        a device the server shows to one side only makes the numbers differ.
        """
        own = self.state.official_id
        assert own is not None, "device is not enrolled"
        theirs = await self.sync_devices(official_id)
        mine = {self.identity.public_key}
        if official_id != own:
            mine |= set((await self.sync_devices(own)).values())
        if not theirs:
            raise ClientError(f.Error(rid=None, code="no_devices", message="no active devices"))
        return safety_number(own, sorted(mine), official_id, sorted(theirs.values()))

    async def verify(self, official_id: UUID) -> str:
        """Mark the official's current devices verified (after comparing numbers)."""
        number = await self.safety_number(official_id)
        self.state.verified[official_id] = sorted(self.state.keys_of(official_id))
        self.save()
        return format_safety_number(number)

    def accept_devices(self, official_id: UUID) -> set[bytes]:
        """Accept a verified official's changed devices; returns the keys newly accepted."""
        if official_id not in self.state.verified:
            raise ValueError(f"official {official_id} is not verified; use verify instead")
        new = self.state.blocked_keys(official_id)
        self.state.verified[official_id] = sorted(self.state.keys_of(official_id))
        self.save()
        return new

    def _encrypt_for(self, device_id: UUID, content: bytes) -> bytes:
        session = Session.from_bytes(self.state.sessions[device_id][0])
        ciphertext = session.encrypt(content)
        self.state.sessions[device_id][0] = session.to_bytes()
        return ciphertext

    async def send_message(
        self,
        recipient: UUID,
        plaintext: bytes,
        client_message_id: str,
        *,
        sender_key: tuple[UUID, bytes] | None = None,
    ) -> f.Accepted:
        """Encrypt for every device of the recipient and our own other devices.

        Devices come from our sessions; the server's ``device_mismatch``
        names the ones we lack (we fetch their bundles) and the ones that are
        gone (we drop their sessions), and we retry with the same client
        message id, so a retry of an accepted send is never stored twice.
        """
        own, me = self.state.official_id, self.state.device_id
        assert own is not None and me is not None and self.state.certificate is not None
        message = Content(
            body=plaintext,
            certificate=self.state.certificate,
            conversation_id=sender_key[0] if sender_key else None,
            sender_key=sender_key[1] if sender_key else None,
        )
        content = _content_encoder.encode(message)
        # Our own other devices learn whom it went to (not needed for notes to self).
        own_copy = (
            content
            if recipient == own
            else _content_encoder.encode(msgspec.structs.replace(message, recipient=recipient))
        )
        if not self.state.devices_of(recipient):
            await self.establish(recipient)
        for attempt in range(4):
            blocked = self.state.blocked_keys(recipient)
            if blocked:
                self.save()
                raise DeviceChangeBlocked(recipient, blocked)
            targets = (self.state.devices_of(recipient) | self.state.devices_of(own)) - {me}
            if not targets:
                raise ClientError(
                    f.Error(rid=None, code="no_devices", message="recipient has no devices")
                )
            mine = self.state.devices_of(own)
            envelopes = [
                f.Envelope(
                    device_id=device,
                    ciphertext=self._encrypt_for(device, own_copy if device in mine else content),
                )
                for device in sorted(targets)
            ]
            try:
                accepted: f.Accepted = await self.request(
                    f.Send,
                    client_message_id=client_message_id,
                    recipient=recipient,
                    envelopes=envelopes,
                )
                self.save()
                return accepted
            except ClientError as error:
                if error.code != "device_mismatch" or attempt == 3:
                    raise
                for device in error.frame.stale:
                    self.state.forget_device(device)
                missing = set(error.frame.missing)
                if missing:
                    missing -= await self.establish(recipient, sorted(missing))
                if missing and own != recipient:
                    await self.establish(own, sorted(missing))
        raise AssertionError("unreachable")

    def _bound_official(self, frame: f.Deliver) -> UUID | None:
        """The official the sending device is bound to; TrustError if the frame disagrees."""
        bound = self.state.peers.get(frame.sender_device)
        if bound is not None and bound != frame.sender_official:
            raise TrustError(
                f"deliver names official {frame.sender_official} but device"
                f" {frame.sender_device} is certified for official {bound}"
            )
        return bound

    def _decrypt(self, frame: f.Deliver) -> tuple[Content, UUID]:
        """Decrypt with a session of that device, or accept the session it starts.

        Returns the content and the sending official *from the binding*.
        """
        device, ciphertext = frame.sender_device, frame.ciphertext
        bound = self._bound_official(frame)
        stored = self.state.sessions.get(device, [])
        for index, raw in enumerate(stored):
            session = Session.from_bytes(raw)
            if bound is None or session.remote_identity_key != self.state.peer_keys.get(device):
                continue  # not a session with the certified key: never use it
            try:
                plaintext = session.decrypt(ciphertext)
            except CryptoError:
                continue  # a failed decrypt changed nothing; try an older session
            # The message key is spent whatever the content is: keep the step.
            self.state.used_session(device, index, session.to_bytes())
            return _decode_content(plaintext), bound
        if message_type(ciphertext) != TYPE_PREKEY:
            raise CryptoError("no session with that device can decrypt this")
        header = PrekeyMessage.from_bytes(ciphertext).header
        digest = prekey_message_digest(
            header.identity_key,
            header.ephemeral_key,
            header.signed_prekey_id,
            header.one_time_prekey_id,
        )
        if self.state.prekey_message_seen(header.signed_prekey_id, digest):
            raise TrustError("replayed prekey message (this session was set up already)")
        signed = self._signed_prekey(header.signed_prekey_id)
        one_time = None
        if header.one_time_prekey_id is not None:
            private = self.state.one_time_prekeys.get(header.one_time_prekey_id)
            if private is None:
                raise CryptoError("one-time prekey already used or unknown")
            one_time = PrekeyPair(header.one_time_prekey_id, private)
        session, plaintext = Session.accept(self.identity, signed, one_time, ciphertext)
        content = _decode_content(plaintext)
        certified = self._verified(content.certificate, frame.sender_official, device)
        if certified != session.remote_identity_key:
            raise CryptoError("session started with an uncertified identity key")
        self._bind(frame.sender_official, device, certified)  # BindingConflict if moved
        if header.one_time_prekey_id is not None:
            del self.state.one_time_prekeys[header.one_time_prekey_id]
        else:
            self._event(
                "no_one_time_prekey",
                f"device {device} set up a session without a one-time prekey",
                frame.message_id,
                frame.sender_official,
                device,
            )
        self.state.remember_prekey_message(header.signed_prekey_id, digest)
        working = False
        if stored:
            working = Session.from_bytes(stored[0]).has_received
        self.state.add_inbound_session(device, session.to_bytes(), working)
        return content, frame.sender_official

    def _signed_prekey(self, key_id: int) -> PrekeyPair:
        current = self.state.signed_prekey
        if current is not None and current[0] == key_id:
            return PrekeyPair(key_id, current[1])
        if key_id in self.state.old_signed_prekeys:
            return PrekeyPair(key_id, self.state.old_signed_prekeys[key_id])
        raise CryptoError("unknown signed prekey")

    async def receive(self, wait: float | None = None) -> f.ServerFrame:
        """The next frame the server pushed (deliver, queue_empty, prekeys_low...)."""
        return await asyncio.wait_for(self.pushed.get(), wait)

    async def open(self, frame: f.Deliver) -> Received | None:
        """Decrypt a delivery (raises CryptoError if it cannot be read or is refused).

        None for what carries no message for the user: a membership event or
        a sender-key distribution (both are applied to the state here).
        """
        if frame.kind == "membership":
            self.membership_events.append(self._apply_event(frame.ciphertext, frame))
            return None
        if frame.kind == "group":
            if frame.conversation_id is None:
                raise TrustError("group message without a conversation")
            official = self._bound_official(frame)
            if official is None:
                raise TrustError("group message from a device with no verified binding")
            plaintext = self.decrypt_group(
                frame.conversation_id, frame.sender_device, frame.ciphertext
            )
            recipient = None
        else:
            content, official = self._decrypt(frame)
            if content.recipient is not None and official != self.state.official_id:
                raise TrustError("only our own devices name the recipient of a message")
            if content.sender_key is not None:
                await self._accept_sender_key(content, official, frame.sender_device)
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

    async def ack(self, positions: list[int]) -> None:
        await self.send_frame(f.Ack(positions=positions))

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
            self._event(
                "undecryptable",
                f"{type(error).__name__}: {error}",
                frame.message_id,
                frame.sender_official,
                frame.sender_device,
            )
        self.state.mark_seen(frame.message_id)
        self.state.expire_sessions(time.time())
        self.save()
        return received

    async def messages(self, idle_timeout: float | None = None) -> AsyncIterator[Received]:
        """Yield each new message once, in order; refill prekeys when told.

        Per delivery: decrypt, save the advanced state, then ack, so a crash
        can lose neither the message nor the ratchet step. A redelivered
        message (same id) is acked and skipped; one that cannot be decrypted
        or is refused is acked and reported in ``events`` (it never will be).
        """
        while True:
            try:
                frame = await self.receive(idle_timeout)
            except TimeoutError:
                return
            if isinstance(frame, f.Deliver):
                if self.state.seen(frame.message_id):
                    await self.ack([frame.position])
                    continue
                received = await self.process(frame)
                await self.ack([frame.position])
                if received is not None:
                    yield received
            elif isinstance(frame, f.PrekeysLow):
                await self.refill_prekeys()

    # --- groups: sender keys over pairwise sessions -----------------------------
    # (Group conversations issue; see docs/PROTOCOL.md §E7a.)
    #
    # Membership comes from server-signed events (verified against the pinned
    # directory key), applied in sequence order; the last one applied is the
    # device's view of the conversation. Our sender key for a conversation is
    # sent, as a pairwise message whose Content carries ``sender_key``, to every
    # member official (and so to all their devices and our own other ones)
    # before our next group message: after a member joins it gets the chain at
    # its current iteration (no earlier messages), and after anyone leaves or
    # is removed (or a gap in the sequence) the key is rotated first and the
    # new one goes only to the members then.

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

    def conversation(self, conversation_id: UUID) -> f.MembershipEvent | None:
        """Our view of a conversation: the last membership event applied."""
        raw = self.state.conversations.get(conversation_id)
        return _event_decoder.decode(raw) if raw is not None else None

    def _apply_event(self, signed: bytes, frame: f.Deliver | None = None) -> f.MembershipEvent:
        """Verify an event (or a snapshot) and move our view forward with it.

        Our view (``conversation()``) is the latest event applied, with the
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
        view = self.conversation(cid)
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
        event = self._apply_event(reply.event)
        if event.conversation_id != reply.conversation_id:
            raise CryptoError("conversation reply for another conversation")
        self.save()
        return self.conversation(event.conversation_id) or event

    async def refresh_conversation(self, conversation_id: UUID) -> f.MembershipEvent:
        """Fetch the conversation's latest signed event and apply it."""
        return self._apply_reply(
            await self.request(f.GetConversation, conversation_id=conversation_id)
        )

    async def open_direct(self, official_id: UUID) -> f.MembershipEvent:
        return self._apply_reply(await self.request(f.OpenDirect, official_id=official_id))

    async def create_group(
        self, title: str, members: list[UUID], announcement_only: bool = False
    ) -> f.MembershipEvent:
        """A new group with us as its admin; returns its first event (with its id)."""
        return self._apply_reply(
            await self.request(
                f.CreateGroup, title=title, members=members, announcement_only=announcement_only
            )
        )

    async def add_members(self, conversation_id: UUID, officials: list[UUID]) -> f.MembershipEvent:
        return self._apply_reply(
            await self.request(f.AddMembers, conversation_id=conversation_id, officials=officials)
        )

    async def remove_members(
        self, conversation_id: UUID, officials: list[UUID]
    ) -> f.MembershipEvent:
        return self._apply_reply(
            await self.request(
                f.RemoveMembers, conversation_id=conversation_id, officials=officials
            )
        )

    async def leave_group(self, conversation_id: UUID) -> f.MembershipEvent:
        return self._apply_reply(await self.request(f.LeaveGroup, conversation_id=conversation_id))

    async def set_group_admin(
        self, conversation_id: UUID, official_id: UUID, admin: bool
    ) -> f.MembershipEvent:
        return self._apply_reply(
            await self.request(
                f.SetGroupAdmin,
                conversation_id=conversation_id,
                official_id=official_id,
                admin=admin,
            )
        )

    async def rename_group(self, conversation_id: UUID, title: str) -> f.MembershipEvent:
        return self._apply_reply(
            await self.request(f.RenameGroup, conversation_id=conversation_id, title=title)
        )

    async def set_announcement_only(
        self, conversation_id: UUID, announcement_only: bool
    ) -> f.MembershipEvent:
        return self._apply_reply(
            await self.request(
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
            self.save()
        view = self.conversation(conversation_id)
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
                await self.send_message(
                    official, b"", f"sk-{digest}", sender_key=(conversation_id, distribution)
                )
            except ClientError as error:
                # Our own official with no other device, or a member with none
                # enrolled: nobody to give the key to (yet).
                if error.code != "no_devices":
                    raise
            holders.append(official)
            self.save()

    async def send_group(
        self, conversation_id: UUID, plaintext: bytes, client_message_id: str
    ) -> f.Accepted:
        """Encrypt once with our sender key; the server fans it out to member devices.

        On ``stale_membership`` we fetch the signed state, rekey as it
        requires, and retry with the same client message id.
        """
        if self.conversation(conversation_id) is None:
            await self.refresh_conversation(conversation_id)
        for attempt in range(4):
            await self._distribute_sender_key(conversation_id)
            view = self.conversation(conversation_id)
            assert view is not None
            key = SenderKeyState.from_bytes(self.state.sender_keys[conversation_id])
            ciphertext = key.encrypt(plaintext)
            self.state.sender_keys[conversation_id] = key.to_bytes()  # never reuse a key
            self.save()
            try:
                accepted: f.Accepted = await self.request(
                    f.SendGroup,
                    client_message_id=client_message_id,
                    conversation_id=conversation_id,
                    seq=view.seq,
                    ciphertext=ciphertext,
                )
                return accepted
            except ClientError as error:
                if error.code != "stale_membership" or attempt == 3:
                    raise
                await self.refresh_conversation(conversation_id)
        raise AssertionError("unreachable")

    def decrypt_group(self, conversation_id: UUID, sender_device: UUID, ciphertext: bytes) -> bytes:
        """Decrypt a group message with that device's sender key (CryptoError if we lack it)."""
        stored = self.state.group_keys.get(conversation_id, {}).get(sender_device)
        if stored is None:
            raise CryptoError("no sender key of that device for this conversation")
        key = SenderKeyState.from_bytes(stored)
        plaintext = key.decrypt(ciphertext)
        self.state.group_keys[conversation_id][sender_device] = key.to_bytes()
        return plaintext

    async def _accept_sender_key(self, content: Content, official: UUID, device: UUID) -> None:
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
        view = self.conversation(cid)

        def members(event: f.MembershipEvent | None) -> set[UUID]:
            return {m.official_id for m in (event.members or [])} if event else set()

        if official not in members(view) or me not in members(view):
            try:
                view = await self.refresh_conversation(cid)
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


# --- failover: stay connected across node failures ---------------------------
# (Cluster issue; kept apart from the client above so both can evolve alone.)

import contextlib  # noqa: E402
import random  # noqa: E402
from collections.abc import Awaitable, Callable  # noqa: E402
from typing import TypeVar  # noqa: E402

from websockets.exceptions import ConnectionClosed, WebSocketException  # noqa: E402

_T = TypeVar("_T")

#: Close codes after which reconnecting is wrong: the device was revoked
#: (4403), or another connection of the same device took over (4409).
FINAL_CLOSE_CODES = frozenset({4403, 4409})


#: Errors of ``auth``/``auth_token`` that say "not now" rather than "never".
RETRYABLE_CODES = frozenset({"internal_error", "rate_limited"})


class Reconnecting:
    """One device kept online across node failures: reconnect, re-authenticate, resume.

    Connects to ``urls`` in turn, starting with the first (its home node).
    When the connection drops (the node stopped with 1001, was killed, or is
    unreachable) it waits a jittered exponential backoff ("full jitter":
    uniform(0, min(cap, base * 2**attempt)), so a node's clients do not all
    come back in the same instant) and connects to the next URL, presenting
    its token (``Client.authenticate`` falls back to a signature). The
    server then pushes every envelope not yet acknowledged, in order; one
    already seen (same message id) is acked and dropped, so ``received``
    yields each message once. 4403 and 4409 stop it for good
    (``final_close_code``), as does a refused authentication (``error``).

    ``call`` runs a request on whatever connection is current and runs it
    again on the next one if the connection drops before the answer: only
    for idempotent requests, such as ``send_message`` with a fixed client
    message id (the server answers a retry with the original message id).
    """

    def __init__(
        self,
        state: DeviceState,
        urls: list[str],
        *,
        json: bool = False,
        store: StateFile | None = None,
        tls: ssl.SSLContext | None = None,
        backoff_base: float = 0.05,
        backoff_cap: float = 2.0,
    ) -> None:
        if not urls:
            raise ValueError("at least one URL")
        self.state = state
        self.urls = list(urls)
        self._json = json
        self._store = store
        self._tls = tls
        self._backoff_base = backoff_base
        self._backoff_cap = backoff_cap
        self.client: Client | None = None
        self.received: asyncio.Queue[Received] = asyncio.Queue()
        self.close_codes: list[int | None] = []  # one per connection that ended
        self.connected_to: list[str] = []  # one per successful connection
        self.redelivered: list[UUID] = []  # already-seen messages pushed again
        #: What the user must be told, across every connection.
        self.events: list[ClientEvent] = []
        self.final_close_code: int | None = None
        self.error: BaseException | None = None
        self._online = asyncio.Event()
        self._changed = asyncio.Event()
        self._closing = False
        self._task: asyncio.Task[None] | None = None

    @property
    def undecryptable(self) -> list[UUID]:
        """Ids of the deliveries refused so far (see ``events`` for why)."""
        return [e.message_id for e in self.events if e.kind == "undecryptable" and e.message_id]

    async def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="reconnecting-client")

    async def close(self) -> None:
        self._closing = True
        client = self.client
        if client is not None:
            await client.close()
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    @property
    def done(self) -> bool:
        return self._task is not None and self._task.done()

    async def online(self, within: float = 30.0) -> Client:
        """The current connection, waiting up to ``within`` seconds for one."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + within
        while True:
            if self.client is not None:
                return self.client
            if self.done:
                raise ConnectionError(f"gave up: close code {self.final_close_code} {self.error}")
            self._changed.clear()
            remaining = deadline - loop.time()
            if remaining <= 0:
                raise TimeoutError("not connected")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait(), min(remaining, 0.5))

    async def call(self, request: Callable[[Client], Awaitable[_T]], within: float = 30.0) -> _T:
        """``request(client)`` on the current connection, retried on the next if it drops."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + within
        while True:
            client = await self.online(max(0.0, deadline - loop.time()))
            try:
                return await request(client)
            except (ConnectionError, ConnectionClosed):
                while self.client is client and loop.time() < deadline:
                    self._changed.clear()
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self._changed.wait(), 0.5)
                if loop.time() >= deadline:
                    raise

    def _backoff(self, attempt: int) -> float:
        return random.uniform(0, min(self._backoff_cap, self._backoff_base * 2**attempt))  # noqa: S311

    async def _run(self) -> None:
        attempt = 0
        index = 0
        try:
            while not self._closing:
                url = self.urls[index % len(self.urls)]
                self.state.url = url
                client = Client(
                    self.state,
                    json=self._json,
                    store=self._store,
                    tls=self._tls,
                    events=self.events,
                )
                try:
                    await client.connect()
                    await client.authenticate()
                except ClientError as error:
                    await client.close()
                    if error.code not in RETRYABLE_CODES:
                        self.error = error  # refused (revoked, suspended): not a network problem
                        return
                    # The node could not answer (its database is down) or asks us
                    # to slow down: the same as a network problem, back off.
                    await asyncio.sleep(max(self._backoff(attempt), error.frame.retry_after or 0))
                    attempt += 1
                    continue
                except (OSError, ConnectionError, WebSocketException, TimeoutError):
                    await client.close()
                    index += 1
                    await asyncio.sleep(self._backoff(attempt))
                    attempt += 1
                    continue
                attempt = 0
                self.connected_to.append(url)
                self.client = client
                self._changed.set()
                try:
                    await self._pump(client)
                finally:
                    self.client = None
                    self._changed.set()
                code = client.ws.close_code
                self.close_codes.append(code)
                if code in FINAL_CLOSE_CODES:
                    self.final_close_code = code
                    return
                index += 1
                await asyncio.sleep(self._backoff(attempt))
                attempt += 1
        finally:
            self._changed.set()

    async def _pump(self, client: Client) -> None:
        """Handle pushed frames until the connection is gone."""
        reader = client._reader
        assert reader is not None
        while True:
            getter = asyncio.ensure_future(client.pushed.get())
            await asyncio.wait({getter, reader}, return_when=asyncio.FIRST_COMPLETED)
            if not getter.done():
                getter.cancel()
                if client.pushed.empty():
                    break  # closed, and every frame it had read is handled
                continue
            try:
                await self._handle(client, getter.result())
            except (ConnectionError, ConnectionClosed):
                await asyncio.wait({reader})
                break
        if not reader.cancelled():
            reader.exception()  # a dropped connection is expected here, not an error

    async def _handle(self, client: Client, frame: f.ServerFrame) -> None:
        if isinstance(frame, f.Deliver):
            if self.state.seen(frame.message_id):
                self.redelivered.append(frame.message_id)
                await client.ack([frame.position])
                return
            received = await client.process(frame)
            await client.ack([frame.position])
            if received is not None:
                await self.received.put(received)
        elif isinstance(frame, f.PrekeysLow):
            await client.refill_prekeys()
