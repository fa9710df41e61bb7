"""Bytes inside the JSON that local state (sessions, sender keys) is saved as.

Local state is not a wire format, but it is read back from disk, so a
malformed value must fail as InvalidState, never as a stray ValueError.
"""

from __future__ import annotations

import base64
from typing import Any

from crypto.errors import InvalidState

__all__ = ["b64", "unb64"]


def b64(data: bytes) -> str:
    """Standard padded base64 of ``data``."""
    return base64.b64encode(data).decode("ascii")


def unb64(value: Any) -> bytes:
    """Inverse of :func:`b64`; InvalidState for anything but a base64 string."""
    if not isinstance(value, str):
        raise InvalidState("expected base64 string")
    try:
        return base64.b64decode(value.encode("ascii"), validate=True)
    except ValueError as exc:  # binascii.Error and non-ASCII text
        raise InvalidState("malformed base64") from exc
