"""Attachment capabilities (gchat/attachments/capability.py), with a fake clock."""

from uuid import uuid4

import pytest

from gchat.attachments.capability import Capabilities, Kind, derive_key
from gchat.errors import ServiceError


class Clock:
    now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


def test_bound_to_kind_attachment_device_and_time() -> None:
    clock = Clock()
    caps = Capabilities(derive_key(b"k" * 32), 60, clock)
    blob, device = uuid4(), uuid4()
    capability, expires = caps.issue(Kind.DOWNLOAD, blob, device, 1234)
    assert len(capability) == 50 and expires == (clock.now + 60) * 1000
    assert caps.check(capability, Kind.DOWNLOAD, blob, device) == 1234
    for kind, b, d in (
        (Kind.UPLOAD, blob, device),
        (Kind.DOWNLOAD, uuid4(), device),
        (Kind.DOWNLOAD, blob, uuid4()),
    ):
        with pytest.raises(ServiceError) as refused:
            caps.check(capability, kind, b, d)
        assert refused.value.code == "capability_invalid"
    # Another deployment's key, or a changed size or expiry, does not verify.
    other = Capabilities(derive_key(b"j" * 32), 60, clock)
    with pytest.raises(ServiceError):
        other.check(capability, Kind.DOWNLOAD, blob, device)
    longer = bytearray(capability)
    longer[2] ^= 0x01  # the expiry's top byte: a capability "good for years"
    with pytest.raises(ServiceError) as refused:
        caps.check(bytes(longer), Kind.DOWNLOAD, blob, device)
    assert refused.value.code == "capability_invalid"
    clock.now += 59.999
    assert caps.check(capability, Kind.DOWNLOAD, blob, device) == 1234
    clock.now += 0.001
    with pytest.raises(ServiceError) as refused:
        caps.check(capability, Kind.DOWNLOAD, blob, device)
    assert refused.value.code == "capability_expired"


def test_the_key_is_not_the_token_key() -> None:
    seed = b"s" * 32
    assert derive_key(seed) != seed and len(derive_key(seed)) == 32
