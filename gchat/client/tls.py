"""Which servers a client trusts over wss://: the system's CAs, or one CA file.

A ministry's node usually has a certificate from the government's own CA,
which the machines of the officials do not trust by default; ``--ca FILE``
(PEM) makes the client trust that CA, and only it. Host names are always
checked and TLS 1.2 is the minimum (the node itself speaks only 1.3, a
reverse proxy may offer 1.2).
"""

import ipaddress
import ssl
from pathlib import Path
from urllib.parse import urlsplit


def client_context(ca_file: Path | None) -> ssl.SSLContext | None:
    """A verifying context trusting only ``ca_file``; None keeps the system's CAs."""
    if ca_file is None:
        return None
    context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=str(ca_file))
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    return context


def plaintext_warning(url: str) -> str | None:
    """A warning for ``ws://`` to a host beyond this machine (tokens readable on the way)."""
    parts = urlsplit(url)
    if parts.scheme != "ws" or parts.hostname in (None, "localhost"):
        return None
    try:
        if ipaddress.ip_address(parts.hostname).is_loopback:
            return None
    except ValueError:
        pass
    return (
        f"warning: {url} is not encrypted (ws://); anyone on the network can read the "
        "connection. Use wss:// (see docs/OPERATIONS.md, TLS)"
    )
