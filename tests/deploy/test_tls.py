"""TLS on the node: clients trust a ministry CA with --ca, and nothing else.

A real node terminates TLS 1.3 with a certificate from a throwaway CA; the
real CLI (subprocess) enrols over wss:// with --ca, and is refused without
it or with another CA's file; a TLS 1.2-only client is refused by the node.
"""

import asyncio
import ssl
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from gchat.app import App
from gchat.directory.service import Directory
from tests.deploy.certs import Pki, make_pki
from tests.support import node_config

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
async def tls_node(database_url: str, tmp_path: Path) -> AsyncIterator[tuple[App, Pki]]:
    pki = make_pki(tmp_path / "pki")
    app = App(node_config(database_url, tmp_path / "data", tls_cert=pki.cert, tls_key=pki.key))
    await app.start()
    try:
        yield app, pki
    finally:
        await app.stop()


async def enroll(url: str, code: str, state: Path, *ca: str) -> subprocess.CompletedProcess[str]:
    argv = [sys.executable, "-m", "gchat", "client", "enroll", "--url", url, "--code", code,
            "--state", str(state), *ca]
    return await asyncio.to_thread(
        subprocess.run, argv, cwd=REPO, capture_output=True, text=True, timeout=60
    )


async def test_client_trusts_the_ministry_ca_only_with_ca(
    tls_node: tuple[App, Pki], tmp_path: Path
) -> None:
    app, pki = tls_node
    assert app.url.startswith("wss://")
    assert "TLS 1.3" in app.banner()
    assert app.db is not None
    _, _, code = await Directory(app.db, 3600, app.audit).bootstrap("MIN", "Ministry", "Admin")
    url = f"wss://localhost:{app.port}"

    refused = await enroll(url, code, tmp_path / "a.json")
    assert refused.returncode != 0
    assert "CERTIFICATE_VERIFY_FAILED" in refused.stderr or "certificate" in refused.stderr
    assert not (tmp_path / "a.json").exists()

    other = make_pki(tmp_path / "other", "Someone Else's CA")
    refused = await enroll(url, code, tmp_path / "b.json", "--ca", str(other.ca))
    assert refused.returncode != 0
    assert not (tmp_path / "b.json").exists()

    accepted = await enroll(url, code, tmp_path / "c.json", "--ca", str(pki.ca))
    assert accepted.returncode == 0, accepted.stderr
    assert '"device_id"' in accepted.stdout


async def test_node_speaks_only_tls_13(tls_node: tuple[App, Pki]) -> None:
    app, pki = tls_node
    old = ssl.create_default_context(cafile=str(pki.ca))
    old.maximum_version = ssl.TLSVersion.TLSv1_2
    with pytest.raises((ssl.SSLError, ConnectionError)):  # alert or reset: no TLS 1.2
        await asyncio.open_connection("localhost", app.port, ssl=old)
    modern = ssl.create_default_context(cafile=str(pki.ca))
    _, writer = await asyncio.open_connection("localhost", app.port, ssl=modern)
    assert writer.get_extra_info("ssl_object").version() == "TLSv1.3"
    writer.close()
    await writer.wait_closed()


def test_plain_websocket_beyond_this_machine_is_warned_about() -> None:
    from gchat.client.tls import plaintext_warning

    warning = plaintext_warning("ws://chat.example.go.th:8765")
    assert warning is not None and "not encrypted" in warning and "\n" not in warning
    assert plaintext_warning("ws://10.0.0.5:8765") is not None
    for quiet in ("wss://chat.example.go.th", "ws://127.0.0.1:8765", "ws://localhost:8765",
                  "ws://[::1]:8765"):
        assert plaintext_warning(quiet) is None, quiet
