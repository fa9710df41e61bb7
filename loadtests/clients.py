"""Simulated devices: enrolment through the reference SDK, a lean hot path.

Enrolment uses ``gchat.client.sdk.Client``, with one connect option:
each simulated device connects from its own loopback address (127.x.y.z), as
real devices come from their own addresses, because the server limits
enrolment attempts per remote address (10 per hour).

The hot loop does not go through the SDK (its per-message futures, queue
and per-send sealing would cost the generator more CPU than the server
spends): ``GChatConn`` speaks the same protocol with ``protocol.codec`` over
a websockets connection, and the relay's pairs over a ``loadtests.wire.Wire``
(no task per frame), both authenticated by ``authenticate``. Ciphertext is
still real: libsodium sealed boxes to the recipient's identity key, taken
from its directory-signed certificate after
``crypto.certificate.verify_certificate``.
"""

from __future__ import annotations

import asyncio
import os
import time
from dataclasses import dataclass
from typing import Any, Protocol
from uuid import UUID

import msgspec
from nacl.public import PrivateKey, PublicKey, SealedBox
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from crypto.certificate import verify_certificate
from crypto.identity import IdentityKeyPair, auth_message, dh_public_from_identity
from gchat.client.sdk import Client
from gchat.client.state import DeviceState
from protocol import frames as f
from protocol import limits
from protocol.codec import Codec, client_codec
from protocol.errors import ErrorCode
from protocol.version import MSGPACK_SUBPROTOCOL

#: Plaintext size of a simulated message; the sealed box adds 48 bytes.
PLAINTEXT_BYTES = 300


def local_ip(index: int) -> str:
    """A loopback source address of its own for simulated device ``index``."""
    n = index + 1
    return f"127.{10 + (n >> 16) % 200}.{(n >> 8) & 255}.{n & 255 or 1}"


@dataclass(frozen=True)
class Dev:
    """An enrolled simulated device: what the generator needs to use it."""

    index: int
    seed: bytes
    device_id: UUID
    official_id: UUID
    certificate: bytes
    directory_key: bytes
    token: str
    token_expires_at: int  # ms

    @property
    def ip(self) -> str:
        return local_ip(self.index)

    def identity_key(self) -> bytes:
        """This device's identity key as a peer sees it: from its verified certificate."""
        cert = verify_certificate(self.certificate, self.directory_key)
        if cert.device_id != self.device_id or cert.official_id != self.official_id:
            raise ValueError("certificate does not match the device")
        return cert.identity_key


def local_client(state: DeviceState, address: str) -> Client:
    """The reference client, connecting from ``address`` (a loopback address of its own)."""
    return Client(state, connect_options={"local_addr": (address, 0), "open_timeout": 30})


async def enroll_device(url: str, index: int, code: str) -> Dev:
    """Enrol one simulated device with the reference client; return its record."""
    state = DeviceState(url=url, identity_seed=IdentityKeyPair.generate().seed)
    client = local_client(state, local_ip(index))
    await client.connect()
    try:
        reply = await client.enroll(code, f"load-{index}", "loadtest")
    finally:
        await client.close()
    return Dev(
        index=index,
        seed=state.identity_seed,
        device_id=reply.device_id,
        official_id=reply.official_id,
        certificate=reply.certificate,
        directory_key=reply.directory_key,
        token=reply.token,
        token_expires_at=reply.token_expires_at,
    )


def seal_pool(identity_key: bytes, count: int, size: int = PLAINTEXT_BYTES) -> list[bytes]:
    """``count`` distinct sealed-box ciphertexts of ``size``-byte plaintexts."""
    box = SealedBox(PublicKey(dh_public_from_identity(identity_key)))
    return [bytes(box.encrypt(os.urandom(size))) for _ in range(count)]


def opener(dev: Dev) -> SealedBox[Any]:
    return SealedBox(PrivateKey(IdentityKeyPair.from_seed(dev.seed).dh_private()))


# --- G-Chat, lean ------------------------------------------------------------------


async def open_socket(url: str, ip: str) -> ClientConnection:
    """A MessagePack WebSocket from the local address ``ip``, opened the one way
    every simulated device opens it (G-Chat, raw relay, file transfers), so
    the servers compared in one run see the same clients."""
    return await connect(
        url,
        subprotocols=[MSGPACK_SUBPROTOCOL],  # type: ignore[list-item]
        compression=None,
        max_size=limits.MAX_FRAME_BYTES,
        open_timeout=60,
        ping_interval=None,
        close_timeout=2,
        local_addr=(ip, 0),
    )


class AuthFailed(Exception):
    pass


class Socket(Protocol):
    """What the set-up needs of a connection: websockets' asyncio one, or a ``Wire``."""

    async def send(self, message: bytes | str, /) -> None: ...

    async def recv(self) -> bytes | str: ...


async def authenticate(socket: Socket, codec: Codec[f.ServerFrame], dev: Dev,
                       use_token: bool = True) -> None:
    """Answer the server's challenge as ``dev``: with its token while that is
    fresh (and ``use_token``), else with a signature by its identity key."""
    challenge = codec.decode(await socket.recv())
    if not isinstance(challenge, f.Challenge):
        raise AuthFailed(f"expected a challenge, got {type(challenge).__name__}")
    fresh = dev.token_expires_at > (time.time() + 30) * 1000
    if use_token and fresh:
        frame: Any = f.AuthToken(rid=1, token=dev.token)
    else:
        identity = IdentityKeyPair.from_seed(dev.seed)
        signature = identity.sign(auth_message(challenge.server_id, challenge.nonce))
        frame = f.Auth(rid=1, device_id=dev.device_id, signature=signature)
    await socket.send(codec.encode(frame))
    while True:
        reply = codec.decode(await socket.recv())
        if isinstance(reply, f.Authenticated):
            return
        if isinstance(reply, f.Error):
            if reply.code == ErrorCode.TOKEN_INVALID and use_token:
                raise AuthFailed("token_invalid")
            raise AuthFailed(f"{reply.code}: {reply.message}")


class GChatConn:
    """One device's authenticated connection, frames in and out, nothing else."""

    def __init__(self, dev: Dev, ws: ClientConnection, codec: Codec[f.ServerFrame]) -> None:
        self.dev = dev
        self.ws = ws
        self.codec = codec
        self.encode = codec.encode
        self.decode = codec.decode

    @classmethod
    async def open(cls, url: str, dev: Dev, use_token: bool = True) -> GChatConn:
        ws = await open_socket(url, dev.ip)
        codec = client_codec(MSGPACK_SUBPROTOCOL)
        try:
            await authenticate(ws, codec, dev, use_token)
        except BaseException:
            await ws.close()
            raise
        return cls(dev, ws, codec)

    async def close(self) -> None:
        await self.ws.close()


class Acks:
    """A device's handled positions, acknowledged many to an ``ack`` frame.

    As a messaging client does (docs/PROTOCOL.md §4.9): a position is added
    once its ``deliver`` is handled, and the frame goes when ``limit`` wait,
    or when the receive loop would wait for the next frame: the first added
    position starts a flush task, which runs once the receiving task
    suspends, i.e. once the frames already read are handled (reading a
    buffered frame never suspends). So no handled position waits for another
    frame, and the server's window (most envelopes pushed and not acked) can
    never stay shut. ``limit`` 1 acks each envelope in its own frame.
    """

    def __init__(self, conn: GChatConn, limit: int) -> None:
        self._conn = conn
        self._limit = max(1, min(limit, limits.MAX_ACK_POSITIONS))
        self._positions: list[int] = []
        self._flusher: asyncio.Task[None] | None = None
        #: ``ack`` frames sent.
        self.frames = 0

    async def add(self, position: int) -> None:
        self._positions.append(position)
        if len(self._positions) >= self._limit:
            await self.flush()
        elif self._flusher is None:
            self._flusher = asyncio.create_task(self._flush_when_idle())

    async def _flush_when_idle(self) -> None:
        try:
            while self._positions:  # added while a send waited: theirs too
                await self.flush()
        except ConnectionClosed:
            pass  # the receive loop sees it; unacked envelopes come again
        finally:
            self._flusher = None

    async def flush(self) -> None:
        if not self._positions:
            return
        positions, self._positions = self._positions, []
        self.frames += 1
        await self._conn.ws.send(self._conn.encode(f.Ack(positions=positions)))


# --- raw relay ------------------------------------------------------------------------


class RawMsg(msgspec.Struct, omit_defaults=True):
    t: str
    to: str = ""
    sender: str = msgspec.field(default="", name="from")
    rid: int = 0
    body: bytes = b""


raw_encode = msgspec.msgpack.Encoder().encode
raw_decode = msgspec.msgpack.Decoder(RawMsg).decode


async def hello(socket: Socket, name: str) -> None:
    """Introduce a connection to the raw relay as ``name``."""
    await socket.send(msgspec.msgpack.encode({"t": "hello", "id": name}))
    reply = raw_decode(await socket.recv())  # type: ignore[arg-type]
    if reply.t != "ok":
        raise ConnectionError(f"raw relay said {reply.t}")


class RawConn:
    """One simulated device on the raw relay (``hello`` instead of auth)."""

    def __init__(self, name: str, ws: ClientConnection) -> None:
        self.name = name
        self.ws = ws

    @classmethod
    async def open(cls, url: str, name: str, ip: str) -> RawConn:
        ws = await open_socket(url, ip)
        try:
            await hello(ws, name)
        except BaseException:
            await ws.close()
            raise
        return cls(name, ws)

    async def close(self) -> None:
        await self.ws.close()
