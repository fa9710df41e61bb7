"""The officials' web app on the node's own port, and the WebSocket Origin check.

Why here: the app must come from the node itself (no CDN, no third-party
origin), so the same listener that speaks the protocol serves the built
files of ``web/dist``. They are read once at start-up into memory (a few
hundred KiB), gzip-compressed once, and answered with strict headers: a
Content-Security-Policy that allows only this origin (no inline script),
``nosniff``, ``no-referrer``, no framing. Hashed asset names are cached for
a year (``immutable``); ``index.html``, the service worker and the manifest
are ``no-cache`` so a deploy is picked up on the next visit.

Browsers send ``Origin`` with every WebSocket upgrade and let any page open
a socket to any host, so a page on another site could talk to the node with
the official's session (cross-site WebSocket hijacking). An upgrade whose
``Origin`` is neither this node's own (the ``Host`` it was asked for) nor in
the configured allow-list is refused with 403. Clients that are not
browsers (the CLI) send no ``Origin`` and are not affected.
"""

import gzip
import http
import mimetypes
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

#: The built app beside the package (``make run`` and the tests build it there).
DEFAULT_ROOT = Path(__file__).resolve().parents[2] / "web" / "dist"

CONTENT_SECURITY_POLICY = "; ".join(
    [
        "default-src 'self'",
        # libsodium runs as WebAssembly; no inline or eval'd script.
        "script-src 'self' 'wasm-unsafe-eval'",
        "style-src 'self'",
        "img-src 'self' blob:",  # decrypted photos and thumbnails are shown from blob: URLs
        "connect-src 'self'",
        "worker-src 'self'",
        "manifest-src 'self'",
        "object-src 'none'",
        "base-uri 'none'",
        "form-action 'self'",
        "frame-ancestors 'none'",
    ]
)

SECURITY_HEADERS: tuple[tuple[str, str], ...] = (
    ("Content-Security-Policy", CONTENT_SECURITY_POLICY),
    ("Referrer-Policy", "no-referrer"),
    ("X-Content-Type-Options", "nosniff"),
    ("X-Frame-Options", "DENY"),
    ("Cross-Origin-Opener-Policy", "same-origin"),
    ("Cross-Origin-Resource-Policy", "same-origin"),
    (
        "Permissions-Policy",
        "camera=(self), microphone=(), geolocation=(), payment=(), usb=(), interest-cohort=()",
    ),
)

IMMUTABLE = "public, max-age=31536000, immutable"
NO_CACHE = "no-cache"

#: Served under these names although they are not hashed.
_ENTRY_POINTS = {"index.html", "sw.js", "manifest.webmanifest"}
_TYPES = {
    ".js": "text/javascript; charset=utf-8",
    ".mjs": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".html": "text/html; charset=utf-8",
    ".json": "application/json",
    ".webmanifest": "application/manifest+json",
    ".svg": "image/svg+xml",
    ".png": "image/png",
    ".wasm": "application/wasm",
    ".txt": "text/plain; charset=utf-8",
}
_COMPRESSIBLE = (".js", ".mjs", ".css", ".html", ".json", ".webmanifest", ".svg", ".txt")


@dataclass(frozen=True)
class StaticFile:
    body: bytes
    gzipped: bytes | None
    content_type: str
    cache_control: str


def load_files(root: Path) -> dict[str, StaticFile]:
    """Every file under ``root`` by URL path; ``/`` is ``index.html``. Empty if absent."""
    files: dict[str, StaticFile] = {}
    if not root.is_dir():
        return files
    for path in sorted(root.rglob("*")):
        if not path.is_file() or path.name.startswith("."):
            continue
        relative = path.relative_to(root).as_posix()
        suffix = path.suffix.lower()
        body = path.read_bytes()
        kind = _TYPES.get(suffix) or mimetypes.guess_type(path.name)[0]
        files["/" + relative] = StaticFile(
            body=body,
            gzipped=gzip.compress(body, 9, mtime=0) if suffix in _COMPRESSIBLE else None,
            content_type=kind or "application/octet-stream",
            cache_control=NO_CACHE if relative in _ENTRY_POINTS else IMMUTABLE,
        )
    if "/index.html" in files:
        files["/"] = files["/index.html"]
    return files


@dataclass(frozen=True)
class Answer:
    """An HTTP answer, turned into the server library's response by gchat.http."""

    status: http.HTTPStatus
    headers: list[tuple[str, str]]
    body: bytes


#: All values of one request header, by name (case-insensitive).
HeaderValues = Callable[[str], list[str]]


def origin_allowed(origin: str | None, host: str | None, allowed: Iterable[str]) -> bool:
    """No Origin (not a browser), this node's own host, or an allow-listed origin."""
    if origin is None:
        return True
    origin = origin.strip().lower()
    if origin in {a.strip().lower().rstrip("/") for a in allowed if a.strip()}:
        return True
    parts = urlsplit(origin)
    if parts.scheme not in ("http", "https") or not host:
        return False  # "null" (sandboxed frames, file://) is never ours
    return parts.netloc == host.strip().lower()


class WebApp:
    """Answers the app's files and vets WebSocket upgrades (see module docstring)."""

    def __init__(self, files: dict[str, StaticFile], allowed_origins: Iterable[str] = ()) -> None:
        self._files = files
        self._allowed = tuple(allowed_origins)

    @classmethod
    def from_directory(cls, root: Path, allowed_origins: Iterable[str] = ()) -> "WebApp":
        return cls(load_files(root), allowed_origins)

    def answer(self, path: str, header: HeaderValues) -> Answer | None:
        """The answer to a request, or None to let the node handle it."""
        if any("websocket" in v.lower() for v in header("Upgrade")):
            origins = header("Origin")
            origin = origins[0] if len(origins) == 1 else ("" if origins else None)
            hosts = header("Host")
            if origin_allowed(origin, hosts[0] if hosts else None, self._allowed):
                return None
            return Answer(
                http.HTTPStatus.FORBIDDEN,
                [("Content-Type", "text/plain; charset=utf-8"), ("Cache-Control", "no-store")],
                b"origin not allowed\n",
            )
        found = self._files.get(path.split("?", 1)[0])
        if found is None:
            return None
        headers = [
            ("Content-Type", found.content_type),
            ("Cache-Control", found.cache_control),
            ("Vary", "Accept-Encoding"),
            *SECURITY_HEADERS,
        ]
        body = found.body
        if found.gzipped is not None and any("gzip" in v for v in header("Accept-Encoding")):
            body = found.gzipped
            headers.append(("Content-Encoding", "gzip"))
        return Answer(http.HTTPStatus.OK, headers, body)
