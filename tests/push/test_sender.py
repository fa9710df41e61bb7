"""The sender against a real local HTTPS push service that checks VAPID and decrypts."""

import datetime
import os
import ssl
import uuid
from pathlib import Path

import http_ece
import jwt
from aiohttp import web
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from cryptography.x509.oid import NameOID

from gchat.push.sender import WebPushSender
from gchat.store.push import Subscription


def tls_files(tmp: Path) -> tuple[Path, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=1))
        .not_valid_after(now + datetime.timedelta(hours=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost")]), critical=False)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = tmp / "cert.pem", tmp / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path


async def test_push_is_vapid_signed_and_decrypts_to_new_messages_only(tmp_path: Path) -> None:
    cert, key = tls_files(tmp_path)
    device_key = ec.generate_private_key(ec.SECP256R1())
    auth = os.urandom(16)
    vapid = ec.generate_private_key(ec.SECP256R1())
    received: list[dict[str, object]] = []

    async def push_service(request: web.Request) -> web.Response:
        scheme, _, params = request.headers["Authorization"].partition(" ")
        fields = dict(p.strip().split("=", 1) for p in params.split(","))
        claims = jwt.decode(
            fields["t"],
            vapid.public_key(),
            algorithms=["ES256"],
            audience=f"https://localhost:{port}",
        )
        plaintext = http_ece.decrypt(
            await request.read(), private_key=device_key, auth_secret=auth, version="aes128gcm"
        )
        received.append(
            {
                "scheme": scheme,
                "claims": claims,
                "plaintext": plaintext,
                "ttl": request.headers["TTL"],
                "urgency": request.headers["Urgency"],
                "encoding": request.headers["Content-Encoding"],
            }
        )
        return web.Response(status=201 if request.path == "/ok" else 410)

    server_tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_tls.load_cert_chain(cert, key)
    app = web.Application()
    app.router.add_post("/{name}", push_service)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=server_tls)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    try:
        sender = WebPushSender(vapid, "mailto:ops@example.go.th", ca_file=str(cert))
        p256dh = device_key.public_key().public_bytes(Encoding.X962, PublicFormat.UncompressedPoint)
        ok = Subscription(uuid.uuid4(), f"https://localhost:{port}/ok", p256dh, auth)
        gone = Subscription(uuid.uuid4(), f"https://localhost:{port}/gone", p256dh, auth)
        assert await sender.send(ok) == 201
        assert await sender.send(gone) == 410
    finally:
        await runner.cleanup()
    assert len(received) == 2
    first = received[0]
    assert first["scheme"] == "vapid"
    assert first["plaintext"] == b'{"type":"new_messages"}'  # nothing else: no sender, no content
    assert first["encoding"] == "aes128gcm"
    assert first["urgency"] == "high" and int(str(first["ttl"])) > 0
    assert first["claims"]["sub"] == "mailto:ops@example.go.th"  # type: ignore[index]
