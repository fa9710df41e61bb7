"""Garbage in: every public parser fails with a CryptoError, nothing else."""

from __future__ import annotations

import hypothesis.strategies as st
import pytest
from crypto_testkit import Device, pair
from hypothesis import given, settings

from crypto.certificate import verify_certificate
from crypto.errors import CryptoError, DecryptionFailed, InvalidMessage
from crypto.identity import IdentityKeyPair, verify_signature
from crypto.keystore import open_with_key, open_with_passphrase
from crypto.prekeys import verify_signed_prekey
from crypto.ratchet import RatchetHeader
from crypto.sender_keys import SenderKeyState
from crypto.session import Session
from crypto.x3dh import X3DHHeader

A, B = pair()
DIRECTORY = IdentityKeyPair.generate()
GROUP = SenderKeyState.from_distribution(SenderKeyState.generate().distribution_message())
QUICK = settings(max_examples=150, deadline=None)


@QUICK
@given(st.binary(max_size=300))
def test_session_decrypt_garbage(data: bytes) -> None:
    before = B.to_bytes()
    with pytest.raises(CryptoError):
        B.decrypt(data)
    assert B.to_bytes() == before


@QUICK
@given(st.binary(max_size=300), st.binary(min_size=32, max_size=32))
def test_parsers_garbage(data: bytes, key: bytes) -> None:
    for call in (
        lambda: verify_certificate(data, DIRECTORY.public_key),
        lambda: GROUP.decrypt(data),
        lambda: SenderKeyState.from_distribution(data),
        lambda: Session.from_bytes(data),
        lambda: open_with_key(data, key),
        lambda: open_with_passphrase(data, "pw"),
        lambda: verify_signature(data[:32], data, data[:64]),
        lambda: verify_signed_prekey(key, 1, data[:32], data[:64]),
        lambda: X3DHHeader.parse(data),
        lambda: RatchetHeader.from_bytes(data),
    ):
        try:
            call()
        except CryptoError:
            pass


@QUICK
@given(st.integers(0, 2**32 - 1), st.integers(0, 2**32 - 1))
def test_forged_header_with_peer_initial_key(pn: int, n: int) -> None:
    """A message claiming the responder's signed prekey as ratchet key."""
    bob = Device()
    alice = Session.initiate(IdentityKeyPair.generate(), bob.bundle())
    forged = b"\x02" + RatchetHeader(bob.signed_prekey.public_key, pn, n).to_bytes() + bytes(60)
    before = alice.to_bytes()
    with pytest.raises((DecryptionFailed, InvalidMessage)):  # InvalidMessage: n >= 2**32-1
        alice.decrypt(forged)
    assert alice.to_bytes() == before


def test_crypto_imports_only_pynacl_and_stdlib() -> None:
    """crypto/ is sans-I/O: no gchat, protocol, sockets, files or asyncio."""
    import ast
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[2] / "crypto"
    forbidden = {"socket", "asyncio", "os", "subprocess", "io", "pathlib", "shutil"}
    for path in root.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names: list[str] = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            for name in names:
                top = name.split(".")[0]
                if top == "mutmut" and "mutants" in path.parts:
                    continue  # make mutate's copy of crypto/ calls its trampoline
                assert top in {"nacl", "crypto", "__future__"} or (
                    top in sys.stdlib_module_names and top not in forbidden
                ), f"{path.name} imports {name}"
