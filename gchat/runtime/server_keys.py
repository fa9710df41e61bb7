"""The server's long-term signing keys, kept in files readable only by it.

Three Ed25519 keys with separate jobs, so one leaking does not forge the
others' statements: the directory key signs device certificates (and,
under its own label, group membership events), the token
key signs access tokens, the audit key signs audit tree heads. None of them
can decrypt anything: message keys live only on devices.

A fourth key, ECDSA P-256, is the node's VAPID key (RFC 8292): it signs the
JWT a push service checks before accepting a Web Push message, so only this
deployment can push to the subscriptions its devices registered. Every
node of a cluster must share it (copy the key directory), because a
browser's subscription is bound to one VAPID public key.
"""

import os
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric import ec

from crypto.identity import IdentityKeyPair

_SIGNING = ("directory", "token", "audit")
#: Every key file in the key directory (what a backup must carry).
KEY_NAMES = (*_SIGNING, "vapid")


def _read_private(path: Path) -> bytes | None:
    """The hex secret in ``path``, or None if there is none yet; refuses 0644 files."""
    if not path.exists():
        return None
    mode = path.stat().st_mode & 0o777
    if mode & 0o077:
        raise PermissionError(f"{path} is readable by others (mode {mode:o}); chmod 600 it")
    return bytes.fromhex(path.read_text().strip())


def _write_private(path: Path, secret: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as file:
        file.write(secret.hex() + "\n")


def _load_or_create(path: Path) -> IdentityKeyPair:
    seed = _read_private(path)
    if seed is not None:
        return IdentityKeyPair.from_seed(seed)
    key = IdentityKeyPair.generate()
    _write_private(path, key.seed)
    return key


def _load_or_create_vapid(path: Path) -> ec.EllipticCurvePrivateKey:
    scalar = _read_private(path)
    if scalar is not None:
        return ec.derive_private_key(int.from_bytes(scalar, "big"), ec.SECP256R1())
    key = ec.generate_private_key(ec.SECP256R1())
    _write_private(path, key.private_numbers().private_value.to_bytes(32, "big"))
    return key


@dataclass(frozen=True)
class ServerKeys:
    directory: IdentityKeyPair
    token: IdentityKeyPair
    audit: IdentityKeyPair
    vapid: ec.EllipticCurvePrivateKey

    @classmethod
    def load_or_create(cls, directory: Path) -> "ServerKeys":
        """Load the keys from ``directory``, generating missing ones (0600)."""
        directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        os.chmod(directory, 0o700)
        keys = {name: _load_or_create(directory / f"{name}.key") for name in _SIGNING}
        return cls(**keys, vapid=_load_or_create_vapid(directory / "vapid.key"))
