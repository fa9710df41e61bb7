"""A device's local state: private keys, sessions, peers; encrypted at rest.

``DeviceState`` is the data; ``StateFile`` keeps it in one file, sealed with
XChaCha20-Poly1305 under a key from a passphrase (Argon2id) or from a key
file (32 random bytes, 0600), and written atomically and privately (a fresh
``mkstemp`` file in the same folder, 0600 before any byte, fsync of file and
folder, then rename) so a crash never leaves half a state and no other user
can read it. Private keys and ratchet sessions exist nowhere else.

Trust lives here too (docs/PROTOCOL.md §E6a): which official and identity
key each peer device is bound to (only ever from a verified certificate),
which identity keys of each official the user verified, and which prekey
messages were already accepted (so a replay is refused).
"""

import base64
import hashlib
import json
import os
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from uuid import UUID

from crypto import keystore
from crypto.errors import CryptoError
from crypto.session import Session

#: Sessions kept per peer device (newest first): a peer that re-initiated,
#: or both sides initiating at once, leaves an older session still in use.
MAX_SESSIONS_PER_DEVICE = 5
#: An archived session (not the one we send on) unused this long is deleted.
ARCHIVED_SESSION_TTL = 30 * 24 * 3600
#: Message ids remembered for deduplication of redelivered envelopes.
MAX_SEEN = 5000


class BindingConflict(CryptoError):
    """A certificate or a frame would move a device to another official or key."""


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


_BYTES = ("identity_seed", "directory_key", "certificate")
_UUIDS = ("device_id", "official_id", "agency_id")


def prekey_message_digest(
    identity_key: bytes, ephemeral_key: bytes, signed_prekey_id: int, one_time_prekey_id: int | None
) -> str:
    """What the replay cache remembers of an accepted prekey message (hex SHA-256)."""
    otk = b"\x00" if one_time_prekey_id is None else b"\x01" + one_time_prekey_id.to_bytes(4, "big")
    raw = identity_key + ephemeral_key + signed_prekey_id.to_bytes(4, "big") + otk
    return hashlib.sha256(raw).hexdigest()


@dataclass(repr=False)
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
    #: Peer device -> seconds at which each session (same order) was last used.
    session_times: dict[UUID, list[int]] = field(default_factory=dict)
    #: Peer device -> its official (only ever from its verified certificate).
    peers: dict[UUID, UUID] = field(default_factory=dict)
    #: Peer device -> the identity key its verified certificate names.
    peer_keys: dict[UUID, bytes] = field(default_factory=dict)
    #: Official -> the identity keys of theirs the user verified (or accepted).
    verified: dict[UUID, list[bytes]] = field(default_factory=dict)
    #: Signed prekey id -> digests of the prekey messages accepted under it.
    accepted_prekey_messages: dict[int, list[str]] = field(default_factory=dict)
    #: Conversation -> when our current sender key was made (unix seconds).
    sender_key_created: dict[UUID, int] = field(default_factory=dict)
    seen_messages: list[str] = field(default_factory=list)
    # --- groups (sender keys; see gchat.client.groups) ---
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

    def __repr__(self) -> str:
        """No secrets: only who this device is."""
        return f"DeviceState(device_id={self.device_id}, official_id={self.official_id})"

    def devices_of(self, official_id: UUID) -> set[UUID]:
        return {device for device, official in self.peers.items() if official == official_id}

    def keys_of(self, official_id: UUID) -> set[bytes]:
        """The certified identity keys of the devices of ``official_id`` we are bound to."""
        return {self.peer_keys[d] for d in self.devices_of(official_id) if d in self.peer_keys}

    def bind(self, device_id: UUID, official_id: UUID, identity_key: bytes) -> bool:
        """Bind a device to the official and key its *verified* certificate names.

        Only callers holding a verified certificate may call this. A device
        stays bound to what it was first bound to: a different official or
        key raises BindingConflict. True if the device is new to us.
        """
        bound = self.peers.get(device_id)
        if bound is not None:
            if bound != official_id or self.peer_keys.get(device_id) != identity_key:
                raise BindingConflict(f"device {device_id} is bound to another official or key")
            return False
        self.peers[device_id] = official_id
        self.peer_keys[device_id] = identity_key
        return True

    def forget_device(self, device_id: UUID) -> None:
        self.sessions.pop(device_id, None)
        self.session_times.pop(device_id, None)
        self.peers.pop(device_id, None)
        self.peer_keys.pop(device_id, None)

    def _put(self, device_id: UUID, index: int, session: bytes) -> None:
        sessions = self.sessions.setdefault(device_id, [])
        times = self.session_times.setdefault(device_id, [])
        times[:] = (times + [int(time.time())] * len(sessions))[: len(sessions)]  # older files
        sessions.insert(index, session)
        times.insert(index, int(time.time()))
        del sessions[MAX_SESSIONS_PER_DEVICE:], times[MAX_SESSIONS_PER_DEVICE:]

    def remember_session(self, device_id: UUID, session: bytes) -> None:
        """Put ``session`` first for a *bound* device: the one we send on."""
        if device_id not in self.peers:
            raise BindingConflict("a session for a device with no verified binding")
        self._put(device_id, 0, session)

    def add_inbound_session(self, device_id: UUID, session: bytes, working: bool) -> None:
        """A session the peer just started: first, unless ``working`` (ours has
        received from the peer), then second until the peer sends on it again."""
        if device_id not in self.peers:
            raise BindingConflict("a session for a device with no verified binding")
        self._put(device_id, 1 if working and self.sessions.get(device_id) else 0, session)

    def used_session(self, device_id: UUID, index: int, session: bytes) -> None:
        """Session ``index`` decrypted a message: store it advanced, and first."""
        self.sessions[device_id].pop(index)
        times = self.session_times.get(device_id, [])
        if index < len(times):
            times.pop(index)
        self.remember_session(device_id, session)

    def expire_sessions(self, now: float, ttl: float = ARCHIVED_SESSION_TTL) -> int:
        """Delete archived sessions (never the first) unused for ``ttl``; how many."""
        dropped = 0
        for device, sessions in self.sessions.items():
            times = self.session_times.setdefault(device, [])
            times[:] = (times + [int(now)] * len(sessions))[: len(sessions)]
            keep = [0] + [i for i in range(1, len(sessions)) if now - times[i] < ttl]
            dropped += len(sessions) - len(keep)
            sessions[:] = [sessions[i] for i in keep if i < len(sessions)]
            times[:] = [times[i] for i in keep if i < len(times)]
        return dropped

    def prekey_message_seen(self, signed_prekey_id: int, digest: str) -> bool:
        return digest in self.accepted_prekey_messages.get(signed_prekey_id, [])

    def remember_prekey_message(self, signed_prekey_id: int, digest: str) -> None:
        self.accepted_prekey_messages.setdefault(signed_prekey_id, []).append(digest)

    def blocked_keys(self, official_id: UUID) -> set[bytes]:
        """Keys of a *verified* official that the user has not verified or accepted."""
        verified = self.verified.get(official_id)
        if verified is None:
            return set()
        return self.keys_of(official_id) - set(verified)

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
            "session_times": {str(d): t for d, t in self.session_times.items()},
            "peer_keys": {str(d): b64(k) for d, k in self.peer_keys.items()},
            "verified": {str(o): [b64(k) for k in ks] for o, ks in self.verified.items()},
            "accepted_prekey_messages": {
                str(k): v for k, v in self.accepted_prekey_messages.items()
            },
            "sender_key_created": {str(c): t for c, t in self.sender_key_created.items()},
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
        data["session_times"] = {UUID(d): list(t) for d, t in data.get("session_times", {}).items()}
        data["peer_keys"] = {UUID(d): unb64(k) for d, k in data.get("peer_keys", {}).items()}
        for device in data["peers"]:
            if device not in data["peer_keys"] and data["sessions"].get(device):
                # Files from before bindings kept keys: the session's identity
                # key is the one its certificate was checked against.
                first = Session.from_bytes(data["sessions"][device][0])
                data["peer_keys"][device] = first.remote_identity_key
        data["verified"] = {
            UUID(o): [unb64(k) for k in ks] for o, ks in data.get("verified", {}).items()
        }
        data["accepted_prekey_messages"] = {
            int(k): list(v) for k, v in data.get("accepted_prekey_messages", {}).items()
        }
        data["sender_key_created"] = {
            UUID(c): int(t) for c, t in data.get("sender_key_created", {}).items()
        }
        # Group state (absent from files written before groups existed).
        data["sender_keys"] = {UUID(c): unb64(k) for c, k in data.get("sender_keys", {}).items()}
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


def default_state_path() -> Path:
    """Where a device's state lives unless ``--state`` says: the user's config
    folder (XDG), not the working directory, which is often shared or a checkout."""
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "gchat" / "device.state"


class StateFileError(Exception):
    """The state file or its key cannot be used; the message says what to do."""


class StateFile:
    """Where a DeviceState lives: one sealed file, opened by passphrase or key file.

    A key file is created only together with a new state (at its first save):
    a state whose key file is missing is an error naming the file, because a
    new key could never open it (a silently regenerated key hides a lost one),
    and a command run against a missing state leaves no stray key behind.
    """

    def __init__(
        self,
        path: Path,
        *,
        passphrase: str | None = None,
        key: bytes | None = None,
        key_file: Path | None = None,
    ):
        if sum(x is not None for x in (passphrase, key, key_file)) != 1:
            raise ValueError("give exactly one of passphrase, key and key_file")
        self.path = path
        self._passphrase = passphrase
        self._key = key
        self._key_file = key_file

    @classmethod
    def with_key_file(cls, path: Path, key_file: Path) -> "StateFile":
        """Seal with a random 32-byte key in ``key_file`` (0600; created with the state)."""
        return cls(path, key_file=key_file)

    def _read_key(self, creating: bool) -> bytes:
        if self._key is not None:
            return self._key
        assert self._key_file is not None
        key_file = self._key_file
        if not key_file.exists():
            if not creating:
                raise StateFileError(
                    f"the key file {key_file} of {self.path} is missing: restore it from "
                    "your backup (a new key cannot open the state)"
                )
            key_file.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            fd = os.open(key_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "wb") as file:
                file.write(keystore.generate_key())
        _private(key_file)
        self._key = key_file.read_bytes()
        return self._key

    def exists(self) -> bool:
        return self.path.exists()

    def load(self) -> DeviceState:
        try:
            fd = os.open(self.path, os.O_RDONLY | os.O_NOFOLLOW)
        except FileNotFoundError:
            raise StateFileError(
                f"the state file {self.path} does not exist: enrol this device first "
                "(gchat client enroll --url URL --code CODE --state FILE)"
            ) from None
        with os.fdopen(fd, "rb") as file:
            _private(self.path, os.fstat(file.fileno()).st_mode)
            blob = file.read()
        try:
            if self._passphrase is None:
                raw = keystore.open_with_key(blob, self._read_key(creating=False))
            else:
                raw = keystore.open_with_passphrase(blob, self._passphrase)
        except CryptoError as error:
            raise StateFileError(
                f"cannot open the state file {self.path}: {error} (is it the right key "
                "file or passphrase?)"
            ) from None
        return DeviceState.from_json(raw)

    def save(self, state: DeviceState) -> None:
        raw = state.to_json()
        if self._passphrase is None:
            blob = keystore.seal_with_key(raw, self._read_key(creating=not self.path.exists()))
        else:
            blob = keystore.seal_with_passphrase(raw, self._passphrase)
        self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        # mkstemp: a new name, O_EXCL (never follows a planted symlink), 0600
        # from the start; a stale temp file from a crash is never reused.
        folder = self.path.parent
        fd, temp = tempfile.mkstemp(prefix=f".{self.path.name}.", suffix=".tmp", dir=folder)
        try:
            with os.fdopen(fd, "wb") as file:
                file.write(blob)
                file.flush()
                os.fsync(file.fileno())
            os.replace(temp, self.path)
        except BaseException:
            Path(temp).unlink(missing_ok=True)
            raise
        dir_fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)


def _private(path: Path, mode: int | None = None) -> None:
    """Refuse a secret file that others may read (its keys may already be copied)."""
    if (path.stat().st_mode if mode is None else mode) & 0o077:
        raise StateFileError(f"{path} is readable by other users: run chmod 600 {path}")
