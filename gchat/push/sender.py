"""One Web Push message (RFC 8030): payload encrypted per RFC 8291, VAPID per RFC 8292.

The payload is the same fixed text for every push, so the push service
(and anyone who breaks its TLS) learns that a device got something and
when, never from whom, in which conversation or what. The encryption is
``http_ece`` (aes128gcm, a fresh ephemeral key per message); the VAPID
JWT is ES256 signed with PyJWT; the request is aiohttp, so nothing blocks
the event loop. The caller decides what the status means (404/410: the
subscription is gone; 429/5xx: retry later).

aiohttp and the TLS context are loaded on the first push, not when a node
starts: importing aiohttp builds its own default TLS contexts and loading
the system's CAs takes another 0.1-0.2 s of CPU, which every node start (and
every host-side ``gchat`` command, which imports the composition root) paid
although most nodes, and every test node, never send a push.  The first
push loads them in a thread, so it does not stall the event loop either.
"""

import asyncio
import base64
import json
import ssl
import time
from urllib.parse import urlsplit

import http_ece
import jwt
from cryptography.hazmat.primitives.asymmetric import ec

from gchat.push.service import vapid_public_key
from gchat.store.push import Subscription

#: What every push says: only that messages wait.
PAYLOAD = json.dumps({"type": "new_messages"}, separators=(",", ":")).encode()
_JWT_LIFETIME = 12 * 3600  # RFC 8292 section 2: at most 24 hours


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


class WebPushSender:
    def __init__(
        self,
        vapid_key: ec.EllipticCurvePrivateKey,
        subject: str,
        ttl_seconds: int = 24 * 3600,
        timeout_seconds: float = 10.0,
        ca_file: str = "",
    ) -> None:
        """``ca_file``: a CA to trust for push services besides the system's."""
        self._key = vapid_key
        self._public = _b64url(vapid_public_key(vapid_key))
        self._subject = subject
        self._ttl = ttl_seconds
        self._timeout_seconds = timeout_seconds
        self._ca_file = ca_file
        self._ssl: ssl.SSLContext | None = None

    def _load(self) -> ssl.SSLContext:
        """aiohttp and the TLS context: run once, in a thread (see the module
        docstring), so the first push does not stall every connection's loop."""
        import aiohttp  # noqa: F401  (imported here, off the event loop)

        tls = ssl.create_default_context()
        if self._ca_file:
            tls.load_verify_locations(self._ca_file)
        return tls

    def _authorization(self, endpoint: str) -> str:
        parts = urlsplit(endpoint)
        claims = {
            "aud": f"{parts.scheme}://{parts.netloc}",
            "exp": int(time.time()) + _JWT_LIFETIME,
            "sub": self._subject,
        }
        token = jwt.encode(claims, self._key, algorithm="ES256")
        return f"vapid t={token}, k={self._public}"

    async def send(self, subscription: Subscription) -> int:
        """POST one push; returns the push service's HTTP status."""
        if self._ssl is None:
            self._ssl = await asyncio.to_thread(self._load)
        import aiohttp  # loaded by _load

        body = http_ece.encrypt(
            PAYLOAD,
            private_key=ec.generate_private_key(ec.SECP256R1()),
            dh=subscription.p256dh,
            auth_secret=subscription.auth,
            version="aes128gcm",
        )
        headers = {
            "Authorization": self._authorization(subscription.endpoint),
            "Content-Encoding": "aes128gcm",
            "Content-Type": "application/octet-stream",
            "TTL": str(self._ttl),
            "Urgency": "high",
        }
        connector = aiohttp.TCPConnector(ssl=self._ssl)
        timeout = aiohttp.ClientTimeout(total=self._timeout_seconds)
        async with (
            aiohttp.ClientSession(connector=connector, timeout=timeout) as session,
            session.post(subscription.endpoint, data=body, headers=headers) as response,
        ):
            return response.status
