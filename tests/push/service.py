"""A local RFC 8030 push service for tests: checks VAPID, decrypts, records.

Real HTTPS (a self-signed ``localhost`` certificate the nodes are told to
trust with ``push_ca_file``), a real ES256 check of the VAPID JWT against
the node's key, and real aes128gcm decryption with the subscription's
private key: a push that arrives here is one a browser's push service
would have taken. ``/gone`` answers 410, ``/flaky`` 503 twice, ``/hang``
holds the request a minute.
"""

import asyncio
import os
import ssl
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path

import http_ece
import jwt
from aiohttp import web
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from .test_sender import tls_files


@dataclass
class PushService:
    port: int = 0
    ca_file: Path = Path()
    vapid: bytes = b""
    keys: dict[str, tuple[ec.EllipticCurvePrivateKey, bytes]] = field(default_factory=dict)
    received: list[tuple[str, bytes]] = field(default_factory=list)

    async def handle(self, request: web.Request) -> web.Response:
        if request.path == "/hang":
            await asyncio.sleep(60)
        token = request.headers["Authorization"].split("t=", 1)[1].split(",", 1)[0]
        public = ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), self.vapid)
        jwt.decode(token, public, algorithms=["ES256"], audience=f"https://localhost:{self.port}")
        private, auth = self.keys[request.path]
        body = http_ece.decrypt(
            await request.read(), private_key=private, auth_secret=auth, version="aes128gcm"
        )
        self.received.append((request.path, body))
        if request.path == "/flaky" and self.count("/flaky") <= 2:
            return web.Response(status=503)
        return web.Response(status=410 if request.path == "/gone" else 201)

    def subscription(self, path: str) -> dict[str, object]:
        private = ec.generate_private_key(ec.SECP256R1())
        auth = os.urandom(16)
        self.keys[path] = (private, auth)
        p256dh = private.public_key().public_bytes(Encoding.X962, PublicFormat.UncompressedPoint)
        return {"endpoint": f"https://localhost:{self.port}{path}", "p256dh": p256dh, "auth": auth}

    def count(self, path: str) -> int:
        return sum(p == path for p, _ in self.received)


@asynccontextmanager
async def push_service(tmp: Path) -> AsyncIterator[PushService]:
    """A ``PushService`` listening on a free loopback port until the block ends."""
    cert, key = tls_files(tmp)
    service = PushService(ca_file=cert)
    tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    tls.load_cert_chain(cert, key)
    web_app = web.Application()
    web_app.router.add_post("/{name}", service.handle)
    runner = web.AppRunner(web_app, shutdown_timeout=0.1)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=tls)
    await site.start()
    service.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    try:
        yield service
    finally:
        await runner.cleanup()
