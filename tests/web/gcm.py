"""A local stand-in for the two Google endpoints Chromium's PushManager.subscribe uses.

Chromium subscribes through its GCM client: a device *checkin* (protobuf
``AndroidCheckinResponse``) and a *registration* (form POST answered with
``token=...``), both on Google hosts that a test machine cannot reach. The
``--gcm-checkin-url`` and ``--gcm-registration-url`` switches point them
here. Everything else is the browser's own: it generates the subscription's
P-256 key and auth secret, builds the endpoint from the token, checks the
notification permission and binds the subscription to the
``applicationServerKey`` (sent to us as ``sender``). The message channel
that delivers pushes (MCS) is not stood in for: tests deliver a push to the
service worker with the DevTools protocol instead.
"""

from __future__ import annotations

import secrets
import struct
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        byte, n = n & 0x7F, n >> 7
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def checkin_response() -> bytes:
    """``AndroidCheckinResponse``: stats_ok=1, time_msec, android_id, security_token."""
    return (
        b"\x08" + _varint(1)
        + b"\x18" + _varint(1_700_000_000_000)
        + b"\x39" + struct.pack("<Q", secrets.randbits(63))
        + b"\x41" + struct.pack("<Q", secrets.randbits(63))
    )


class Gcm:
    def __init__(self) -> None:
        #: Registrations asked for: the form fields of each, and the ``token`` given.
        #: A push subscription's has ``X-subtype`` ``wp:<origin>...`` and the VAPID
        #: key as ``sender``; its endpoint ends with the token.
        self.registrations: list[dict[str, str]] = []


@contextmanager
def gcm_stand_in() -> Iterator[tuple[str, Gcm]]:
    """(base URL, what it recorded) for as long as the block runs."""
    gcm = Gcm()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802 - http.server's name
            body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
            if self.path == "/checkin":
                self._reply(checkin_response(), "application/x-protobuf")
                return
            fields = {k: v[0] for k, v in parse_qs(body.decode()).items()}
            fields["token"] = f"stand-in-{secrets.token_urlsafe(12)}"
            gcm.registrations.append(fields)
            self._reply(f"token={fields['token']}".encode(), "text/plain")

        def _reply(self, data: bytes, content_type: str) -> None:
            self.send_response(200)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, format: str, *args: object) -> None:  # noqa: A002
            return

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", gcm
    finally:
        server.shutdown()
        server.server_close()
