"""A device's local state: its private keys and identity, in a 0600 file.

Written atomically (temp file + rename) so a crash never leaves half a key
file. Private keys never leave this file except into the device's memory.
"""

import base64
import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from uuid import UUID


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def _unb64(text: str) -> bytes:
    return base64.b64decode(text)


@dataclass
class DeviceState:
    url: str
    identity_seed: bytes
    device_id: UUID | None = None
    official_id: UUID | None = None
    agency_id: UUID | None = None
    directory_key: bytes | None = None
    certificate: bytes | None = None
    token: str | None = None
    token_expires_at: int = 0
    signed_prekey: tuple[int, bytes] | None = None  # (key id, private key)
    one_time_prekeys: dict[int, bytes] = field(default_factory=dict)  # key id -> private
    next_prekey_id: int = 1
    seen_messages: list[str] = field(default_factory=list)  # recent ids, for dedupe

    def save(self, path: Path) -> None:
        data = asdict(self)
        for key in ("identity_seed", "directory_key", "certificate"):
            data[key] = _b64(data[key]) if data[key] is not None else None
        for key in ("device_id", "official_id", "agency_id"):
            data[key] = str(data[key]) if data[key] is not None else None
        if self.signed_prekey is not None:
            data["signed_prekey"] = [self.signed_prekey[0], _b64(self.signed_prekey[1])]
        data["one_time_prekeys"] = {str(k): _b64(v) for k, v in self.one_time_prekeys.items()}
        data["seen_messages"] = self.seen_messages[-1000:]
        temp = path.with_name(path.name + ".tmp")
        fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as file:
            json.dump(data, file, indent=1)
        os.replace(temp, path)

    @classmethod
    def load(cls, path: Path) -> "DeviceState":
        if path.stat().st_mode & 0o077:
            raise PermissionError(f"{path} is readable by others; chmod 600 it")
        data = json.loads(path.read_text())
        for key in ("identity_seed", "directory_key", "certificate"):
            data[key] = _unb64(data[key]) if data[key] is not None else None
        for key in ("device_id", "official_id", "agency_id"):
            data[key] = UUID(data[key]) if data[key] is not None else None
        if data["signed_prekey"] is not None:
            data["signed_prekey"] = (data["signed_prekey"][0], _unb64(data["signed_prekey"][1]))
        data["one_time_prekeys"] = {int(k): _unb64(v) for k, v in data["one_time_prekeys"].items()}
        return cls(**data)
