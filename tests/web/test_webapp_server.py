"""The node serves the app with strict headers and refuses cross-site WebSockets.

Written as an attacker's page would try it: a WebSocket upgrade carrying
another site's Origin (what a browser sends when evil.example's script opens
a socket to the node) must be refused before any protocol frame flows.
"""

from __future__ import annotations

import asyncio
import re
import urllib.request

import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus

from tests.web.harness import Loop, Node


def get(url: str, **headers: str) -> tuple[int, dict[str, str], bytes]:
    request = urllib.request.Request(url, headers=headers)  # noqa: S310
    with urllib.request.urlopen(request, timeout=10) as r:  # noqa: S310
        return r.status, {k.lower(): v for k, v in r.headers.items()}, r.read()


def test_index_and_assets_have_strict_headers(node: Node) -> None:
    status, headers, body = get(node.http + "/")
    assert status == 200
    assert headers["content-type"] == "text/html; charset=utf-8"
    assert headers["cache-control"] == "no-cache"
    csp = headers["content-security-policy"]
    for directive in ("default-src 'self'", "connect-src 'self'", "frame-ancestors 'none'",
                      "object-src 'none'"):
        assert directive in csp
    assert "unsafe-inline" not in csp and "'unsafe-eval'" not in csp
    assert headers["referrer-policy"] == "no-referrer"
    assert headers["x-content-type-options"] == "nosniff"
    assert "camera=(self)" in headers["permissions-policy"]
    html = body.decode()
    assert "<script>" not in html  # no inline script: every script is a file of this origin
    assets = re.findall(r'(?:src|href)="(/assets/[^"]+)"', html)
    assert any(a.endswith(".js") for a in assets) and any(a.endswith(".css") for a in assets)
    for asset in assets:
        status, headers, _ = get(node.http + asset, **{"Accept-Encoding": "gzip"})
        assert status == 200
        assert headers["cache-control"] == "public, max-age=31536000, immutable"
        assert headers["content-encoding"] == "gzip"
        kind = "text/javascript" if asset.endswith(".js") else "text/css"
        assert headers["content-type"].startswith(kind)
        assert headers["x-content-type-options"] == "nosniff"


def test_service_worker_and_manifest_are_not_cached_for_long(node: Node) -> None:
    _, headers, _ = get(node.http + "/sw.js")
    assert headers["cache-control"] == "no-cache"
    assert headers["content-type"].startswith("text/javascript")
    _, headers, body = get(node.http + "/manifest.webmanifest")
    assert headers["content-type"] == "application/manifest+json"
    assert b"\\u0e08" in body or "จีแชต".encode() in body


def test_unknown_paths_and_health_are_unchanged(node: Node) -> None:
    with pytest.raises(urllib.error.HTTPError) as refused:
        get(node.http + "/no-such-file.js")
    assert refused.value.code == 426
    refused.value.close()
    assert get(node.http + "/healthz")[2] == b"ok\n"


async def _open(url: str, origin: str | None) -> str:
    headers = {} if origin is None else {"Origin": origin}
    async with connect(url, subprotocols=["gchat.v1+json"], additional_headers=headers,
                       open_timeout=10) as ws:
        return str(await asyncio.wait_for(ws.recv(), 10))


def test_cross_site_origin_cannot_open_a_websocket(node: Node, loop: Loop) -> None:
    for hostile in ("https://evil.example", "null", f"http://127.0.0.1:{node.port}.evil.example"):
        with pytest.raises(InvalidStatus) as refused:
            loop.run(_open(node.ws, hostile))
        assert refused.value.response.status_code == 403
    # The node's own origin (the app) and non-browser clients (no Origin) get the challenge.
    assert '"challenge"' in loop.run(_open(node.ws, node.http))
    assert '"challenge"' in loop.run(_open(node.ws, None))


def test_origin_rule() -> None:
    from gchat.transport.webapp import origin_allowed

    host = "chat.moi.go.th"
    assert origin_allowed(None, host, [])  # not a browser
    assert origin_allowed("https://chat.moi.go.th", host, [])
    assert origin_allowed("HTTPS://CHAT.MOI.GO.TH", host, [])
    assert not origin_allowed("https://chat.moi.go.th.evil.example", host, [])
    assert not origin_allowed("https://evil.example", host, [])
    assert not origin_allowed("null", host, [])
    assert not origin_allowed("", host, [])
    assert not origin_allowed("https://chat.moi.go.th", None, [])
    # A public name in front of the node (load balancer) is allowed by configuration only.
    assert origin_allowed("https://gchat.go.th", host, ["https://gchat.go.th/"])
    assert not origin_allowed("https://gchat.go.th:8443", host, ["https://gchat.go.th"])
