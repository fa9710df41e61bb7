"""Short-lived capabilities: proof that this node let this device move this blob.

A device asks once (``upload_begin``, ``upload_resume``, ``download_begin``),
the node checks who may do it against the database and answers with a
capability; every chunk then carries it, and the node checks it with one
HMAC and no query. A capability names its kind (upload or download), the
attachment, the device, the attachment's size and an expiry, so it is
useless to another device, for another blob, or after it expires.

Layout (50 bytes): ``0x01 || kind (1) || u64be expires_ms || u64be size ||
HMAC-SHA256(key, "gchat attachment capability v1" || kind || attachment id
(16) || device id (16) || u64be expires_ms || u64be size)``. The key is
derived from the token key, which every node of a deployment shares, so a
capability issued by one node is good on another.
"""

import hashlib
import hmac
import struct
import time
from collections.abc import Callable
from enum import IntEnum
from uuid import UUID

from gchat.errors import ServiceError
from protocol import limits
from protocol.errors import ErrorCode

_VERSION = 1
_LABEL = b"gchat attachment capability v1"
_HEAD = struct.Struct(">BBQQ")
assert _HEAD.size + 32 == limits.CAPABILITY_BYTES


class Kind(IntEnum):
    UPLOAD = 1
    DOWNLOAD = 2


def derive_key(token_key_seed: bytes) -> bytes:
    """The capability key, separate from (and not revealing) the token signing key."""
    return hmac.digest(token_key_seed, _LABEL, hashlib.sha256)


class Capabilities:
    def __init__(self, key: bytes, lifetime: float, clock: Callable[[], float] = time.time) -> None:
        self._key = key
        self._lifetime = lifetime
        self._clock = clock

    def _mac(self, kind: int, attachment: UUID, device: UUID, expires: int, size: int) -> bytes:
        message = (
            _LABEL
            + bytes([kind])
            + attachment.bytes
            + device.bytes
            + struct.pack(">QQ", expires, size)
        )
        return hmac.digest(self._key, message, hashlib.sha256)

    def issue(self, kind: Kind, attachment: UUID, device: UUID, size: int) -> tuple[bytes, int]:
        """A capability and its expiry (ms since the epoch)."""
        expires = int((self._clock() + self._lifetime) * 1000)
        head = _HEAD.pack(_VERSION, kind, expires, size)
        return head + self._mac(kind, attachment, device, expires, size), expires

    def check(self, capability: bytes, kind: Kind, attachment: UUID, device: UUID) -> int:
        """The attachment's size, if ``capability`` is good now for this; else ServiceError."""
        version, got_kind, expires, size = _HEAD.unpack_from(capability)
        mac = self._mac(kind, attachment, device, expires, size)
        if not (
            version == _VERSION
            and got_kind == kind
            and hmac.compare_digest(mac, capability[_HEAD.size :])
        ):
            raise ServiceError(
                ErrorCode.CAPABILITY_INVALID, "capability not valid for this attachment and device"
            )
        if self._clock() * 1000 >= expires:
            raise ServiceError(
                ErrorCode.CAPABILITY_EXPIRED, "capability expired; ask for a new one"
            )
        return int(size)
