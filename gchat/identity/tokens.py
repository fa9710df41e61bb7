"""Short-lived access tokens: JWT signed with EdDSA, verified with one pinned algorithm.

A token lets a device skip the challenge signature when it reconnects to
any node. The algorithm list is fixed (never read from the token header),
the key is chosen by our own ``kid``, and ``aud``, ``iss``, ``exp``, ``jti``
are required. A token proves who the device was when it was issued; the
caller still checks that the device and its official are active, so
revocation takes effect at once.
"""

import hashlib
import time
import uuid
from dataclasses import dataclass
from uuid import UUID

import jwt
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from crypto.identity import IdentityKeyPair

ALGORITHMS = ["EdDSA"]
AUDIENCE = "gchat-ws"


class TokenError(Exception):
    """The token is not one we issued, or no longer valid."""


@dataclass(frozen=True)
class TokenClaims:
    device_id: UUID
    official_id: UUID
    token_id: str
    expires_at: int


class TokenIssuer:
    def __init__(self, key: IdentityKeyPair, issuer: str, ttl_seconds: int) -> None:
        self._private = Ed25519PrivateKey.from_private_bytes(key.seed)
        self._public = self._private.public_key()
        self.kid = hashlib.sha256(key.public_key).hexdigest()[:16]
        self._issuer = issuer
        self._ttl = ttl_seconds

    def issue(self, device_id: UUID, official_id: UUID) -> tuple[str, int]:
        """Return (token, expiry in ms since the epoch)."""
        now = int(time.time())
        expires = now + self._ttl
        token = jwt.encode(
            {
                "iss": self._issuer,
                "aud": AUDIENCE,
                "sub": str(official_id),
                "did": str(device_id),
                "iat": now,
                "nbf": now,
                "exp": expires,
                "jti": uuid.uuid4().hex,
            },
            self._private,
            algorithm="EdDSA",
            headers={"kid": self.kid, "typ": "at+jwt"},
        )
        return token, expires * 1000

    def verify(self, token: str) -> TokenClaims:
        try:
            if jwt.get_unverified_header(token).get("kid") != self.kid:
                raise TokenError("unknown key id")
            claims = jwt.decode(
                token,
                self._public,
                algorithms=ALGORITHMS,
                audience=AUDIENCE,
                issuer=self._issuer,
                leeway=5,
                options={"require": ["exp", "iat", "nbf", "iss", "aud", "sub", "jti", "did"]},
            )
            return TokenClaims(
                device_id=UUID(claims["did"]),
                official_id=UUID(claims["sub"]),
                token_id=str(claims["jti"]),
                expires_at=int(claims["exp"]),
            )
        except (jwt.PyJWTError, ValueError, TypeError, KeyError, AttributeError) as error:
            raise TokenError(str(error)) from None
