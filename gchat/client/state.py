"""A device's local state: private keys, sessions, peers; encrypted at rest.

``DeviceState`` is the data; ``StateFile`` keeps it in one file, sealed with
XChaCha20-Poly1305 under a key from a passphrase (Argon2id) or from a key
file (32 random bytes, 0600), and written atomically (temp file + rename)
so a crash never leaves half a state. Private keys and ratchet sessions
exist nowhere else.
"""

import base64
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from uuid import UUID

from crypto import keystore

#: Sessions kept per peer device (newest first): a peer that re-initiated,
#: or both sides initiating at once, leaves an older session still in use.
MAX_SESSIONS_PER_DEVICE = 5
#: Message ids remembered for deduplication of redelivered envelopes.
MAX_SEEN = 5000

def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


_BYTES = ("identity_seed", "directory_key", "certificate")
_UUIDS = ("device_id", "official_id", "agency_id")


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
    #: The deployment this device enrolled with; challenges naming another are refused.
    server_id: str | None = None
    token_expires_at: int = 0
    #: Current signed prekey: (key id, private key, created at, unix seconds).
    signed_prekey: tuple[int, bytes, int] | None = None
    #: Earlier signed prekeys kept for late prekey messages: key id -> private.
    old_signed_prekeys: dict[int, bytes] = field(default_factory=dict)
    one_time_prekeys: dict[int, bytes] = field(default_factory=dict)
    next_prekey_id: int = 1
    #: Peer device -> serialised sessions, newest first.
    sessions: dict[UUID, list[bytes]] = field(default_factory=dict)
    #: Peer device -> its official (from its verified certificate).
    peers: dict[UUID, UUID] = field(default_factory=dict)
    seen_messages: list[str] = field(default_factory=list)
    # --- groups (sender keys; see gchat.client.sdk's group section) ---
    #: Conversation -> our own sender key (SenderKeyState bytes).
    sender_keys: dict[UUID, bytes] = field(default_factory=dict)
    #: Conversation -> sender device -> that device's sender key (receiving copy).
    group_keys: dict[UUID, dict[UUID, bytes]] = field(default_factory=dict)
    #: Conversation -> the last verified membership event applied (MessagePack).
    conversations: dict[UUID, bytes] = field(default_factory=dict)
    #: Conversation -> officials whose devices were sent our current sender key.
    key_holders: dict[UUID, list[UUID]] = field(default_factory=dict)
    #: Conversations whose sender key must rotate before our next send.
    rotate_keys: list[UUID] = field(default_factory=list)
    #: Conversation -> membership sequence numbers we never saw (gaps).
    missed_events: dict[UUID, list[int]] = field(default_factory=dict)

    def devices_of(self, official_id: UUID) -> set[UUID]:
        return {device for device, official in self.peers.items() if official == official_id}

    def forget_device(self, device_id: UUID) -> None:
        self.sessions.pop(device_id, None)
        self.peers.pop(device_id, None)

    def remember_session(self, device_id: UUID, session: bytes, official_id: UUID) -> None:
        """Put ``session`` first for ``device_id`` (replacing an older copy of itself)."""
        self.peers[device_id] = official_id
        self.sessions[device_id] = [session, *self.sessions.get(device_id, [])][
            :MAX_SESSIONS_PER_DEVICE
        ]

    def seen(self, message_id: UUID) -> bool:
        return str(message_id) in self.seen_messages

    def mark_seen(self, message_id: UUID) -> None:
        self.seen_messages.append(str(message_id))
        del self.seen_messages[:-MAX_SEEN]

    # --- serialisation (inside the sealed file) -----------------------------

    def to_json(self) -> bytes:
        b64 = _b64
        data: dict[str, Any] = {
            "url": self.url,
            "token": self.token,
            "server_id": self.server_id,
            "token_expires_at": self.token_expires_at,
            "next_prekey_id": self.next_prekey_id,
            "seen_messages": self.seen_messages,
            "signed_prekey": (
                [self.signed_prekey[0], b64(self.signed_prekey[1]), self.signed_prekey[2]]
                if self.signed_prekey
                else None
            ),
            "old_signed_prekeys": {str(k): b64(v) for k, v in self.old_signed_prekeys.items()},
            "one_time_prekeys": {str(k): b64(v) for k, v in self.one_time_prekeys.items()},
            "sessions": {str(d): [b64(s) for s in ss] for d, ss in self.sessions.items()},
            "peers": {str(d): str(o) for d, o in self.peers.items()},
            "sender_keys": {str(c): b64(k) for c, k in self.sender_keys.items()},
            "group_keys": {
                str(c): {str(d): b64(k) for d, k in keys.items()}
                for c, keys in self.group_keys.items()
            },
            "conversations": {str(c): b64(e) for c, e in self.conversations.items()},
            "key_holders": {str(c): [str(o) for o in os] for c, os in self.key_holders.items()},
            "rotate_keys": [str(c) for c in self.rotate_keys],
            "missed_events": {str(c): seqs for c, seqs in self.missed_events.items()},
        }
        for key in _BYTES:
            value = getattr(self, key)
            data[key] = b64(value) if value is not None else None
        for key in _UUIDS:
            value = getattr(self, key)
            data[key] = str(value) if value is not None else None
        return json.dumps(data).encode()

    @classmethod
    def from_json(cls, raw: bytes) -> "DeviceState":
        data = json.loads(raw)
        unb64 = base64.b64decode
        for key in _BYTES:
            data[key] = unb64(data[key]) if data[key] is not None else None
        for key in _UUIDS:
            data[key] = UUID(data[key]) if data[key] is not None else None
        if data["signed_prekey"] is not None:
            key_id, private, created = data["signed_prekey"]
            data["signed_prekey"] = (key_id, unb64(private), created)
        data["old_signed_prekeys"] = {
            int(k): unb64(v) for k, v in data["old_signed_prekeys"].items()
        }
        data["one_time_prekeys"] = {int(k): unb64(v) for k, v in data["one_time_prekeys"].items()}
        data["sessions"] = {UUID(d): [unb64(s) for s in ss] for d, ss in data["sessions"].items()}
        data["peers"] = {UUID(d): UUID(o) for d, o in data["peers"].items()}
        # Group state (absent from files written before groups existed).
        data["sender_keys"] = {
            UUID(c): unb64(k) for c, k in data.get("sender_keys", {}).items()
        }
        data["group_keys"] = {
            UUID(c): {UUID(d): unb64(k) for d, k in keys.items()}
            for c, keys in data.get("group_keys", {}).items()
        }
        data["conversations"] = {
            UUID(c): unb64(e) for c, e in data.get("conversations", {}).items()
        }
        data["key_holders"] = {
            UUID(c): [UUID(o) for o in os] for c, os in data.get("key_holders", {}).items()
        }
        data["rotate_keys"] = [UUID(c) for c in data.get("rotate_keys", [])]
        data["missed_events"] = {
            UUID(c): list(seqs) for c, seqs in data.get("missed_events", {}).items()
        }
        return cls(**data)


class StateFile:
    """Where a DeviceState lives: one sealed file, opened by passphrase or key file."""

    def __init__(self, path: Path, *, passphrase: str | None = None, key: bytes | None = None):
        if (passphrase is None) == (key is None):
            raise ValueError("give exactly one of passphrase and key")
        self.path = path
        self._passphrase = passphrase
        self._key = key

    @classmethod
    def with_key_file(cls, path: Path, key_file: Path) -> "StateFile":
        """Use (creating if absent, 0600) a random 32-byte key in ``key_file``."""
        if not key_file.exists():
            fd = os.open(key_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "wb") as file:
                file.write(keystore.generate_key())
        if key_file.stat().st_mode & 0o077:
            raise PermissionError(f"{key_file} is readable by others; chmod 600 it")
        return cls(path, key=key_file.read_bytes())

    def exists(self) -> bool:
        return self.path.exists()

    def load(self) -> DeviceState:
        if self.path.stat().st_mode & 0o077:
            raise PermissionError(f"{self.path} is readable by others; chmod 600 it")
        blob = self.path.read_bytes()
        if self._key is not None:
            return DeviceState.from_json(keystore.open_with_key(blob, self._key))
        assert self._passphrase is not None
        return DeviceState.from_json(keystore.open_with_passphrase(blob, self._passphrase))

    def save(self, state: DeviceState) -> None:
        raw = state.to_json()
        if self._key is not None:
            blob = keystore.seal_with_key(raw, self._key)
        else:
            assert self._passphrase is not None
            blob = keystore.seal_with_passphrase(raw, self._passphrase)
        temp = self.path.with_name(self.path.name + ".tmp")
        fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as file:
            file.write(blob)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temp, self.path)
