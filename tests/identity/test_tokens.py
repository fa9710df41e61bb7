"""Access tokens: EdDSA JWTs with a pinned algorithm, audience, issuer and kid."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
import uuid
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from crypto.identity import IdentityKeyPair
from gchat.identity.tokens import ALGORITHMS, AUDIENCE, TokenClaims, TokenError, TokenIssuer

ISSUER = "gchat-test"
DEVICE = uuid.UUID("00000000-0000-4000-8000-00000000000d")
OFFICIAL = uuid.UUID("00000000-0000-4000-8000-00000000000f")


@pytest.fixture(scope="module")
def key() -> IdentityKeyPair:
    return IdentityKeyPair.from_seed(bytes(range(32)))


@pytest.fixture
def issuer(key: IdentityKeyPair) -> TokenIssuer:
    return TokenIssuer(key, ISSUER, ttl_seconds=600)


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def unb64url(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def claims(**changes: Any) -> dict[str, Any]:
    now = int(time.time())
    value: dict[str, Any] = {
        "iss": ISSUER,
        "aud": AUDIENCE,
        "sub": str(OFFICIAL),
        "did": str(DEVICE),
        "iat": now,
        "nbf": now,
        "exp": now + 600,
        "jti": uuid.uuid4().hex,
    }
    value.update(changes)
    return {k: v for k, v in value.items() if v is not None}


def signed(key: IdentityKeyPair, payload: dict[str, Any], kid: str | None) -> str:
    """A token signed with ``key`` the way TokenIssuer does, with ``kid``."""
    private = Ed25519PrivateKey.from_private_bytes(key.seed)
    headers = {"typ": "at+jwt"} | ({"kid": kid} if kid is not None else {})
    return jwt.encode(payload, private, algorithm="EdDSA", headers=headers)


def hand_made(header: dict[str, Any], payload: dict[str, Any], signature: bytes) -> str:
    head = b64url(json.dumps(header).encode())
    body = b64url(json.dumps(payload).encode())
    return f"{head}.{body}.{b64url(signature)}"


def hs256(header: dict[str, Any], payload: dict[str, Any], secret: bytes) -> str:
    head = b64url(json.dumps(header).encode())
    body = b64url(json.dumps(payload).encode())
    mac = hmac.new(secret, f"{head}.{body}".encode(), hashlib.sha256).digest()
    return f"{head}.{body}.{b64url(mac)}"


# --- the good path ---------------------------------------------------------------


def test_issued_token_verifies(issuer: TokenIssuer) -> None:
    before = int(time.time())
    token, expires_ms = issuer.issue(DEVICE, OFFICIAL)
    result = issuer.verify(token)
    assert isinstance(result, TokenClaims)
    assert result.device_id == DEVICE
    assert result.official_id == OFFICIAL
    assert len(result.token_id) == 32
    assert expires_ms == result.expires_at * 1000  # the frame says ms, the claim s
    assert before + 600 <= result.expires_at <= int(time.time()) + 600


def test_token_shape(issuer: TokenIssuer, key: IdentityKeyPair) -> None:
    token, _ = issuer.issue(DEVICE, OFFICIAL)
    header = jwt.get_unverified_header(token)
    assert header["alg"] == "EdDSA"
    assert header["typ"] == "at+jwt"
    assert header["kid"] == issuer.kid == hashlib.sha256(key.public_key).hexdigest()[:16]
    payload = json.loads(unb64url(token.split(".")[1]))
    assert set(payload) == {"iss", "aud", "sub", "did", "iat", "nbf", "exp", "jti"}
    assert payload["aud"] == AUDIENCE and payload["iss"] == ISSUER
    assert ALGORITHMS == ["EdDSA"]


def test_each_token_has_its_own_id(issuer: TokenIssuer) -> None:
    ids = {issuer.verify(issuer.issue(DEVICE, OFFICIAL)[0]).token_id for _ in range(20)}
    assert len(ids) == 20


def test_another_issuer_instance_with_the_same_key_verifies(key: IdentityKeyPair) -> None:
    """Any node with the token key accepts tokens issued by any other node."""
    token, _ = TokenIssuer(key, ISSUER, 600).issue(DEVICE, OFFICIAL)
    assert TokenIssuer(key, ISSUER, 60).verify(token).device_id == DEVICE


def test_hand_signed_token_with_all_claims_verifies(
    issuer: TokenIssuer, key: IdentityKeyPair
) -> None:
    """Sanity check for the forgeries below: the helpers make valid tokens."""
    assert issuer.verify(signed(key, claims(), issuer.kid)).official_id == OFFICIAL


# --- refusals ------------------------------------------------------------------------


def test_expired_token_is_refused(key: IdentityKeyPair) -> None:
    expired = TokenIssuer(key, ISSUER, ttl_seconds=-60)
    token, _ = expired.issue(DEVICE, OFFICIAL)
    with pytest.raises(TokenError):
        expired.verify(token)


def test_token_not_yet_valid_is_refused(issuer: TokenIssuer, key: IdentityKeyPair) -> None:
    now = int(time.time())
    with pytest.raises(TokenError):
        issuer.verify(signed(key, claims(nbf=now + 120, iat=now + 120), issuer.kid))


def test_token_signed_by_another_key_is_refused(issuer: TokenIssuer) -> None:
    other = IdentityKeyPair.generate()
    forged, _ = TokenIssuer(other, ISSUER, 600).issue(DEVICE, OFFICIAL)
    with pytest.raises(TokenError):
        issuer.verify(forged)
    # even when it claims our kid
    with pytest.raises(TokenError):
        issuer.verify(signed(other, claims(), issuer.kid))


def test_alg_none_is_refused(issuer: TokenIssuer) -> None:
    header = {"alg": "none", "typ": "at+jwt", "kid": issuer.kid}
    for signature in (b"", b"x"):
        with pytest.raises(TokenError):
            issuer.verify(hand_made(header, claims(), signature))
    unsigned = jwt.encode(claims(), "", algorithm="none", headers={"kid": issuer.kid})
    with pytest.raises(TokenError):
        issuer.verify(unsigned)


def test_hs256_keyed_with_the_public_key_is_refused(
    issuer: TokenIssuer, key: IdentityKeyPair
) -> None:
    """The classic algorithm-confusion forgery: MAC with what the verifier holds."""
    public = Ed25519PrivateKey.from_private_bytes(key.seed).public_key()
    secrets = [
        key.public_key,
        public.public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        ),
        public.public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        ),
        public.public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH),
    ]
    header = {"alg": "HS256", "typ": "at+jwt", "kid": issuer.kid}
    for secret in secrets:
        with pytest.raises(TokenError):
            issuer.verify(hs256(header, claims(), secret))


def test_other_asymmetric_algorithms_are_refused(issuer: TokenIssuer, key: IdentityKeyPair) -> None:
    token = signed(key, claims(), issuer.kid)
    head, body, sig = token.split(".")
    header = json.loads(unb64url(head))
    for alg in ("ES256", "RS256", "Ed25519", "eddsa"):
        relabelled = b64url(json.dumps(header | {"alg": alg}).encode())
        with pytest.raises(TokenError):
            issuer.verify(f"{relabelled}.{body}.{sig}")


@pytest.mark.parametrize("change", [{"aud": "gchat-http"}, {"aud": ["other"]}, {"iss": "evil"}])
def test_wrong_audience_or_issuer_is_refused(
    issuer: TokenIssuer, key: IdentityKeyPair, change: dict[str, Any]
) -> None:
    with pytest.raises(TokenError):
        issuer.verify(signed(key, claims(**change), issuer.kid))


def test_token_from_a_differently_named_issuer_is_refused(key: IdentityKeyPair) -> None:
    token, _ = TokenIssuer(key, "other-deployment", 600).issue(DEVICE, OFFICIAL)
    with pytest.raises(TokenError):
        TokenIssuer(key, ISSUER, 600).verify(token)


@pytest.mark.parametrize("claim", ["did", "sub", "exp", "iat", "nbf", "iss", "aud", "jti"])
def test_missing_claim_is_refused(issuer: TokenIssuer, key: IdentityKeyPair, claim: str) -> None:
    payload = claims()
    del payload[claim]
    with pytest.raises(TokenError):
        issuer.verify(signed(key, payload, issuer.kid))


@pytest.mark.parametrize("change", [{"did": "not-a-uuid"}, {"sub": "nope"}, {"exp": "soon"}])
def test_malformed_claim_is_refused(
    issuer: TokenIssuer, key: IdentityKeyPair, change: dict[str, Any]
) -> None:
    with pytest.raises(TokenError):
        issuer.verify(signed(key, claims(**change), issuer.kid))


def test_tampered_payload_is_refused(issuer: TokenIssuer) -> None:
    token, _ = issuer.issue(DEVICE, OFFICIAL)
    head, body, sig = token.split(".")
    payload = json.loads(unb64url(body))
    for change in ({"did": str(uuid.uuid4())}, {"sub": str(uuid.uuid4())}, {"exp": 2**40}):
        forged_body = b64url(json.dumps(payload | change).encode())
        with pytest.raises(TokenError):
            issuer.verify(f"{head}.{forged_body}.{sig}")


def test_tampered_signature_is_refused(issuer: TokenIssuer) -> None:
    token, _ = issuer.issue(DEVICE, OFFICIAL)
    head, body, sig = token.split(".")
    raw = bytearray(unb64url(sig))
    raw[0] ^= 1
    with pytest.raises(TokenError):
        issuer.verify(f"{head}.{body}.{b64url(bytes(raw))}")


@pytest.mark.parametrize("kid", ["0123456789abcdef", "", None])
def test_kid_mismatch_is_refused(
    issuer: TokenIssuer, key: IdentityKeyPair, kid: str | None
) -> None:
    """Signed with the right key, but naming another (or no) key id."""
    with pytest.raises(TokenError):
        issuer.verify(signed(key, claims(), kid))


@pytest.mark.parametrize("token", ["", "abc", "a.b", "a.b.c", "...", "e30.e30.", "x" * 3000])
def test_garbage_is_refused(issuer: TokenIssuer, token: str) -> None:
    with pytest.raises(TokenError):
        issuer.verify(token)


def test_non_string_device_claim_is_a_token_error(
    issuer: TokenIssuer, key: IdentityKeyPair
) -> None:
    with pytest.raises(TokenError):
        issuer.verify(signed(key, claims(did=12345), issuer.kid))
