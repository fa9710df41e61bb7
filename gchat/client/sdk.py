"""The reference client SDK over the real protocol (websockets client).

``Client`` keeps one connection: a reader task routes replies to the
request that asked (by ``rid``) and everything the server pushes to an
inbox queue. Message payloads are sealed to each recipient device's
identity key (libsodium sealed box, X25519 from the Ed25519 key) after the
device's certificate verifies against the pinned directory key: a stand-in
until the Double Ratchet sessions of ``crypto`` are wired in. The server
cannot tell either way: it only ever sees opaque ciphertext.
"""

import asyncio
import itertools
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any
from uuid import UUID

from nacl.public import PrivateKey, PublicKey, SealedBox
from websockets.asyncio.client import ClientConnection, connect

from crypto.certificate import verify_certificate
from crypto.errors import CryptoError
from crypto.identity import IdentityKeyPair, auth_message, dh_public_from_identity
from crypto.prekeys import PrekeyPair, sign_prekey
from gchat.client.state import DeviceState
from protocol import frames as f
from protocol.codec import Codec, client_codec
from protocol.version import JSON_SUBPROTOCOL, MSGPACK_SUBPROTOCOL

PREKEY_BATCH = 50


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
    def __init__(self, state: DeviceState, *, json: bool = False) -> None:
        self.state = state
        self._subprotocol = JSON_SUBPROTOCOL if json else MSGPACK_SUBPROTOCOL
        self._codec: Codec[f.ServerFrame] = client_codec(self._subprotocol)
        self._ws: ClientConnection | None = None
        self._rids = itertools.count(1)
        self._pending: dict[int, asyncio.Future[Any]] = {}
        self.pushed: asyncio.Queue[f.ServerFrame] = asyncio.Queue()
        self._reader: asyncio.Task[None] | None = None
        self.challenge: f.Challenge | None = None
        self.identity = IdentityKeyPair.from_seed(state.identity_seed)

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
        pair = PrekeyPair.generate(self.state.next_prekey_id)
        self.state.next_prekey_id += 1
        self.state.signed_prekey = (pair.key_id, pair.private_key)
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
        return reply

    async def refill_prekeys(self, count: int = PREKEY_BATCH) -> int:
        reply: f.PrekeysStored = await self.request(
            f.UploadPrekeys, one_time_prekeys=self._new_prekeys(count)
        )
        return reply.available

    # --- messages ------------------------------------------------------------

    async def device_keys(self, official_id: UUID) -> dict[UUID, bytes]:
        """Verified identity keys of an official's active devices."""
        bundle: f.Bundle = await self.request(f.GetBundle, official_id=official_id)
        assert self.state.directory_key is not None
        keys = {}
        for device in bundle.devices:
            certificate = verify_certificate(device.certificate, self.state.directory_key)
            if certificate.device_id != device.device_id or certificate.official_id != official_id:
                raise CryptoError("certificate does not match the device it came with")
            keys[device.device_id] = certificate.identity_key
        return keys

    async def send_message(
        self, recipient: UUID, plaintext: bytes, client_message_id: str
    ) -> f.Accepted:
        """Encrypt for every device of the recipient and our own other devices."""
        assert self.state.official_id is not None
        targets: dict[UUID, bytes] = {}
        for attempt in range(3):
            envelopes = [
                f.Envelope(device_id=device, ciphertext=self._seal(key, plaintext))
                for device, key in targets.items()
            ]
            if envelopes:
                try:
                    return await self.request(  # type: ignore[no-any-return]
                        f.Send,
                        client_message_id=client_message_id,
                        recipient=recipient,
                        envelopes=envelopes,
                    )
                except ClientError as error:
                    if error.code != "device_mismatch" or attempt == 2:
                        raise
            targets = await self.device_keys(recipient)
            if recipient != self.state.official_id:
                targets |= await self.device_keys(self.state.official_id)
            targets.pop(self.state.device_id, None)  # type: ignore[arg-type]
            if not targets:
                raise ClientError(
                    f.Error(rid=None, code="no_devices", message="recipient has no devices")
                )
        raise AssertionError("unreachable")

    @staticmethod
    def _seal(identity_key: bytes, plaintext: bytes) -> bytes:
        return bytes(SealedBox(PublicKey(dh_public_from_identity(identity_key))).encrypt(plaintext))

    def _open(self, ciphertext: bytes) -> bytes:
        return bytes(SealedBox(PrivateKey(self.identity.dh_private())).decrypt(ciphertext))

    async def receive(self, wait: float | None = None) -> f.ServerFrame:
        """The next frame the server pushed (deliver, queue_empty, prekeys_low...)."""
        return await asyncio.wait_for(self.pushed.get(), wait)

    def open(self, frame: f.Deliver) -> Received:
        return Received(
            frame.message_id,
            frame.position,
            frame.sender_official,
            frame.sender_device,
            frame.sent_at,
            self._open(frame.ciphertext),
        )

    async def ack(self, positions: list[int]) -> None:
        await self.send_frame(f.Ack(positions=positions))

    async def messages(self, idle_timeout: float | None = None) -> AsyncIterator[Received]:
        """Yield each new message once (deduplicated by id), acking as it goes."""
        while True:
            try:
                frame = await self.receive(idle_timeout)
            except TimeoutError:
                return
            if isinstance(frame, f.Deliver):
                received = self.open(frame)
                await self.ack([frame.position])
                key = str(frame.message_id)
                if key not in self.state.seen_messages:
                    self.state.seen_messages.append(key)
                    yield received
            elif isinstance(frame, f.PrekeysLow):
                await self.refill_prekeys()
