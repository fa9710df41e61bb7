"""The reference client SDK over the real protocol (websockets client).

``Client`` keeps one connection: a reader task routes replies to the request
that asked (by ``rid``) and everything the server pushes to a queue.
Messages are end-to-end encrypted per recipient device with X3DH + Double
Ratchet sessions (``crypto.session``). A session is only started with a
device whose directory certificate verifies against the pinned directory
key, and a session a peer starts with us is only kept if the certificate
inside its first message verifies and names the identity key it used.
The server sees opaque ciphertext and nothing else.
"""

import asyncio
import itertools
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any
from uuid import UUID

import msgspec
from websockets.asyncio.client import ClientConnection, connect

from crypto.certificate import verify_certificate
from crypto.errors import CryptoError
from crypto.identity import IdentityKeyPair, auth_message
from crypto.prekeys import PrekeyPair, sign_prekey
from crypto.session import TYPE_PREKEY, PrekeyMessage, Session, message_type
from crypto.x3dh import PrekeyBundle
from gchat.client.state import DeviceState, StateFile
from protocol import frames as f
from protocol.codec import Codec, client_codec
from protocol.version import JSON_SUBPROTOCOL, MSGPACK_SUBPROTOCOL

PREKEY_BATCH = 50
SIGNED_PREKEY_MAX_AGE = 7 * 24 * 3600
OLD_SIGNED_PREKEYS_KEPT = 2


class Content(msgspec.Struct, forbid_unknown_fields=True):
    """What is inside every pairwise ciphertext (MessagePack; see E2E.md).

    The sender's certificate rides along so that a recipient can check who
    started a session without asking the server.
    """

    body: bytes
    certificate: bytes


_content_encoder = msgspec.msgpack.Encoder()
_content_decoder = msgspec.msgpack.Decoder(Content)


class ClientError(Exception):
    """The server answered a request with an error frame."""

    def __init__(self, frame: f.Error) -> None:
        super().__init__(f"{frame.code}: {frame.message}")
        self.code = frame.code
        self.frame = frame


@dataclass(frozen=True)
class Received:
    """A delivered, decrypted message."""

    message_id: UUID
    position: int
    sender_official: UUID
    sender_device: UUID
    sent_at: int
    plaintext: bytes


class Client:
    def __init__(
        self, state: DeviceState, *, json: bool = False, store: StateFile | None = None
    ) -> None:
        self.state = state
        self.store = store
        self._subprotocol = JSON_SUBPROTOCOL if json else MSGPACK_SUBPROTOCOL
        self._codec: Codec[f.ServerFrame] = client_codec(self._subprotocol)
        self._ws: ClientConnection | None = None
        self._rids = itertools.count(1)
        self._pending: dict[int, asyncio.Future[Any]] = {}
        self.pushed: asyncio.Queue[f.ServerFrame] = asyncio.Queue()
        self._reader: asyncio.Task[None] | None = None
        self.challenge: f.Challenge | None = None
        self.identity = IdentityKeyPair.from_seed(state.identity_seed)
        self.undecryptable: list[UUID] = []

    # --- connection -----------------------------------------------------------

    async def connect(self) -> None:
        self._ws = await connect(
            self.state.url,
            subprotocols=[self._subprotocol],  # type: ignore[list-item]
            compression=None,
            max_size=None,
            open_timeout=10,
        )
        first = self._codec.decode(await self._ws.recv())
        if not isinstance(first, f.Challenge):
            raise ConnectionError(f"expected a challenge, got {type(first).__name__}")
        self.challenge = first
        self._reader = asyncio.create_task(self._read())

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
        await self.send_frame(make(rid=rid, **fields))
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
        self.state.signed_prekey = (pair.key_id, pair.private_key, int(time.time()))
        return f.SignedPrekey(
            key_id=pair.key_id,
            public_key=pair.public_key,
            signature=sign_prekey(self.identity, pair),
        )

    def _sign_challenge(self) -> bytes:
        assert self.challenge is not None
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

    async def establish(self, official_id: UUID, device_ids: list[UUID] | None = None) -> set[UUID]:
        """Start sessions with an official's devices (all, or ``device_ids``)."""
        started = set()
        for device_id, device in (await self.device_keys(official_id, device_ids)).items():
            identity_key = self._verified(device.certificate, official_id, device_id)
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
            self.state.remember_session(device_id, session.to_bytes(), official_id)
            started.add(device_id)
        return started

    def _encrypt_for(self, device_id: UUID, content: bytes) -> bytes:
        session = Session.from_bytes(self.state.sessions[device_id][0])
        ciphertext = session.encrypt(content)
        self.state.sessions[device_id][0] = session.to_bytes()
        return ciphertext

    async def send_message(
        self, recipient: UUID, plaintext: bytes, client_message_id: str
    ) -> f.Accepted:
        """Encrypt for every device of the recipient and our own other devices.

        Devices come from our sessions; the server's ``device_mismatch``
        names the ones we lack (we fetch their bundles) and the ones that are
        gone (we drop their sessions), and we retry with the same client
        message id, so a retry of an accepted send is never stored twice.
        """
        own, me = self.state.official_id, self.state.device_id
        assert own is not None and me is not None and self.state.certificate is not None
        content = _content_encoder.encode(
            Content(body=plaintext, certificate=self.state.certificate)
        )
        if not self.state.devices_of(recipient):
            await self.establish(recipient)
        for attempt in range(4):
            targets = (self.state.devices_of(recipient) | self.state.devices_of(own)) - {me}
            if not targets:
                raise ClientError(
                    f.Error(rid=None, code="no_devices", message="recipient has no devices")
                )
            envelopes = [
                f.Envelope(device_id=device, ciphertext=self._encrypt_for(device, content))
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

    def _decrypt(self, sender_official: UUID, sender_device: UUID, ciphertext: bytes) -> bytes:
        """Decrypt with a session of that device, or accept the session it starts."""
        stored = self.state.sessions.get(sender_device, [])
        for index, raw in enumerate(stored):
            session = Session.from_bytes(raw)
            try:
                plaintext = session.decrypt(ciphertext)
            except CryptoError:
                continue  # a failed decrypt changed nothing; try an older session
            del stored[index]
            self.state.remember_session(sender_device, session.to_bytes(), sender_official)
            return _content_decoder.decode(plaintext).body
        if message_type(ciphertext) != TYPE_PREKEY:
            raise CryptoError("no session with that device can decrypt this")
        header = PrekeyMessage.from_bytes(ciphertext).header
        signed = self._signed_prekey(header.signed_prekey_id)
        one_time = None
        if header.one_time_prekey_id is not None:
            private = self.state.one_time_prekeys.get(header.one_time_prekey_id)
            if private is None:
                raise CryptoError("one-time prekey already used or unknown")
            one_time = PrekeyPair(header.one_time_prekey_id, private)
        session, plaintext = Session.accept(self.identity, signed, one_time, ciphertext)
        content = _content_decoder.decode(plaintext)
        certified = self._verified(content.certificate, sender_official, sender_device)
        if certified != session.remote_identity_key:
            raise CryptoError("session started with an uncertified identity key")
        if header.one_time_prekey_id is not None:
            del self.state.one_time_prekeys[header.one_time_prekey_id]
        self.state.remember_session(sender_device, session.to_bytes(), sender_official)
        return content.body

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

    def open(self, frame: f.Deliver) -> Received:
        """Decrypt a delivery (raises CryptoError if it cannot be read)."""
        return Received(
            frame.message_id,
            frame.position,
            frame.sender_official,
            frame.sender_device,
            frame.sent_at,
            self._decrypt(frame.sender_official, frame.sender_device, frame.ciphertext),
        )

    async def ack(self, positions: list[int]) -> None:
        await self.send_frame(f.Ack(positions=positions))

    async def messages(self, idle_timeout: float | None = None) -> AsyncIterator[Received]:
        """Yield each new message once, in order; refill prekeys when told.

        Per delivery: decrypt, save the advanced state, then ack, so a crash
        can lose neither the message nor the ratchet step. A redelivered
        message (same id) is acked and skipped; one that cannot be decrypted
        is acked and reported in ``undecryptable`` (it never will be).
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
                try:
                    received: Received | None = self.open(frame)
                except CryptoError:
                    received = None
                    self.undecryptable.append(frame.message_id)
                self.state.mark_seen(frame.message_id)
                self.save()
                await self.ack([frame.position])
                if received is not None:
                    yield received
            elif isinstance(frame, f.PrekeysLow):
                await self.refill_prekeys()
