"""Which servers a client trusts over wss://: the system's CAs, or one CA file.

A ministry's node usually has a certificate from the government's own CA,
which the machines of the officials do not trust by default; ``--ca FILE``
(PEM) makes the client trust that CA, and only it. Host names are always
checked and TLS 1.2 is the minimum (the node itself speaks only 1.3, a
reverse proxy may offer 1.2).
"""

import ssl
from pathlib import Path


def client_context(ca_file: Path | None) -> ssl.SSLContext | None:
    """A verifying context trusting only ``ca_file``; None keeps the system's CAs."""
    if ca_file is None:
        return None
    context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=str(ca_file))
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    return context
