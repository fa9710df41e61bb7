"""Per-address limits behind a reverse proxy, attacked as an attacker would.

Behind a proxy every connection comes from the proxy's address; unless the
node reads the client's address from a proxy it trusts, one attacker's
failed logins throttle every official. And a client talking to the node
directly must not choose its own address with a forged header.
"""

import ipaddress
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from websockets.asyncio.client import connect

from gchat.app import App
from gchat.config import load
from gchat.transport.client_address import client_address, parse_trusted
from protocol import frames as f
from protocol.codec import client_codec
from protocol.version import MSGPACK_SUBPROTOCOL
from tests.support import node_config

PROXY = parse_trusted("10.0.0.5, 10.1.0.0/24")


def test_the_rightmost_untrusted_hop_is_the_client() -> None:
    assert client_address("10.0.0.5", ["203.0.113.7"], PROXY) == "203.0.113.7"
    # The client wrote the left part itself; our proxy appended the real address.
    assert client_address("10.0.0.5", ["1.1.1.1, 203.0.113.7"], PROXY) == "203.0.113.7"
    assert client_address("10.0.0.5", ["1.1.1.1", "203.0.113.7, 10.1.0.9"], PROXY) == (
        "203.0.113.7"
    )
    assert client_address("10.0.0.5", ["garbage, 10.1.0.9"], PROXY) == "10.1.0.9"
    assert client_address("10.0.0.5", [], PROXY) == "10.0.0.5"
    assert client_address("10.0.0.5", ["2001:db8::1"], PROXY) == "2001:db8::1"


def test_a_direct_client_cannot_choose_its_address() -> None:
    assert client_address("198.51.100.4", ["10.0.0.5"], PROXY) == "198.51.100.4"
    assert client_address("198.51.100.4", ["203.0.113.7"], ()) == "198.51.100.4"


def test_a_bad_entry_is_a_configuration_error() -> None:
    assert parse_trusted("") == ()
    assert parse_trusted("::1") == (ipaddress.ip_network("::1"),)
    with pytest.raises(ValueError, match="'10.0.0.300' is not an address"):
        load(environ={"GCHAT_TRUSTED_PROXIES": "10.0.0.5,10.0.0.300"})


async def _failures(url: str, forwarded_for: str, attempts: int) -> list[str]:
    """Forged tokens on one connection, as from ``forwarded_for``; the error codes."""
    codec = client_codec(MSGPACK_SUBPROTOCOL)
    codes = []
    async with connect(
        url, subprotocols=[MSGPACK_SUBPROTOCOL],  # type: ignore[list-item]
        additional_headers={"X-Forwarded-For": forwarded_for},
    ) as ws:
        assert isinstance(codec.decode(await ws.recv()), f.Challenge)
        for rid in range(1, attempts + 1):
            await ws.send(codec.encode(f.AuthToken(rid=rid, token="forged")))
            reply = codec.decode(await ws.recv())
            assert isinstance(reply, f.Error)
            codes.append(reply.code)
    return codes


@pytest.fixture
async def behind_proxy(database_url: str, tmp_path: Path) -> AsyncIterator[App]:
    # The test connects from 127.0.0.1, which plays the proxy here.
    app = App(node_config(database_url, tmp_path, trusted_proxies="127.0.0.1"))
    await app.start()
    try:
        yield app
    finally:
        await app.stop()


async def test_one_attacker_behind_the_proxy_does_not_throttle_others(behind_proxy: App) -> None:
    url = f"ws://127.0.0.1:{behind_proxy.port}"
    attacker = await _failures(url, "203.0.113.7", 25)
    assert attacker[:20] == ["token_invalid"] * 20 and attacker[-1] == "rate_limited"
    # Another official behind the same proxy is judged on their own address.
    assert await _failures(url, "203.0.113.8", 1) == ["token_invalid"]
    # The attacker forging a fresh address left of the real one gains nothing.
    assert await _failures(url, "198.51.100.1, 203.0.113.7", 1) == ["rate_limited"]


async def test_without_trusted_proxies_the_header_is_ignored(
    database_url: str, tmp_path: Path
) -> None:
    app = App(node_config(database_url, tmp_path))
    await app.start()
    try:
        url = f"ws://127.0.0.1:{app.port}"
        assert (await _failures(url, "203.0.113.7", 21))[-1] == "rate_limited"
        # A forged header does not buy a fresh bucket.
        assert await _failures(url, "203.0.113.99", 1) == ["rate_limited"]
    finally:
        await app.stop()
