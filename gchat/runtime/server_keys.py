"""The server's long-term signing keys, kept in files readable only by it.

Three Ed25519 keys with separate jobs, so one leaking does not forge the
others' statements: the directory key signs device certificates (and,
under its own label, group membership events), the token
key signs access tokens, the audit key signs audit tree heads. None of them
can decrypt anything: message keys live only on devices.
"""

import os
from dataclasses import dataclass
from pathlib import Path

from crypto.identity import IdentityKeyPair

_NAMES = ("directory", "token", "audit")


def _load_or_create(path: Path) -> IdentityKeyPair:
    if path.exists():
        mode = path.stat().st_mode & 0o777
        if mode & 0o077:
            raise PermissionError(f"{path} is readable by others (mode {mode:o}); chmod 600 it")
        seed = bytes.fromhex(path.read_text().strip())
        return IdentityKeyPair.from_seed(seed)
    key = IdentityKeyPair.generate()
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as file:
        file.write(key.seed.hex() + "\n")
    return key


@dataclass(frozen=True)
class ServerKeys:
    directory: IdentityKeyPair
    token: IdentityKeyPair
    audit: IdentityKeyPair

    @classmethod
    def load_or_create(cls, directory: Path) -> "ServerKeys":
        """Load the keys from ``directory``, generating missing ones (0600)."""
        directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        os.chmod(directory, 0o700)
        keys = {name: _load_or_create(directory / f"{name}.key") for name in _NAMES}
        return cls(**keys)
