"""The device state on disk and in memory: private, atomic, no secret in a repr."""

import os
import uuid
from pathlib import Path

import pytest

from crypto.identity import IdentityKeyPair
from gchat.client.state import BindingConflict, DeviceState, StateFile, StateFileError


def state() -> DeviceState:
    return DeviceState(url="ws://x", identity_seed=IdentityKeyPair.generate().seed)


def test_save_never_follows_a_planted_symlink_nor_reuses_a_stale_temp_file(
    tmp_path: Path,
) -> None:
    store = StateFile.with_key_file(tmp_path / "dev.state", tmp_path / "dev.key")
    victim = tmp_path / "victim"
    victim.write_text("untouched")
    # What an attacker with access to the folder plants at the old fixed name.
    (tmp_path / "dev.state.tmp").symlink_to(victim)
    stale = tmp_path / ".dev.state.stale.tmp"
    stale.write_bytes(b"old secrets")
    stale.chmod(0o644)
    s = state()
    store.save(s)
    assert victim.read_text() == "untouched"
    assert (tmp_path / "dev.state").stat().st_mode & 0o777 == 0o600
    assert store.load().identity_seed == s.identity_seed
    leftovers = {p.name for p in tmp_path.iterdir()}
    assert leftovers == {"dev.state", "dev.key", "victim", "dev.state.tmp", stale.name}


def test_load_refuses_a_symlinked_or_readable_state(tmp_path: Path) -> None:
    store = StateFile.with_key_file(tmp_path / "real.state", tmp_path / "k")
    store.save(state())
    link = StateFile.with_key_file(tmp_path / "link.state", tmp_path / "k")
    (tmp_path / "link.state").symlink_to(tmp_path / "real.state")
    with pytest.raises(OSError):
        link.load()
    os.chmod(tmp_path / "real.state", 0o644)
    with pytest.raises(StateFileError):
        store.load()


def test_no_secret_in_the_repr_of_a_state() -> None:
    s = state()
    s.one_time_prekeys[1] = b"\x11" * 32
    shown = repr(s)
    assert s.identity_seed.hex() not in shown and str(s.identity_seed) not in shown
    assert "11111111" not in shown and "one_time" not in shown


def test_a_device_binding_never_moves() -> None:
    s = state()
    device, official, key = uuid.uuid4(), uuid.uuid4(), b"k" * 32
    assert s.bind(device, official, key) is True
    assert s.bind(device, official, key) is False
    with pytest.raises(BindingConflict):
        s.bind(device, uuid.uuid4(), key)
    with pytest.raises(BindingConflict):
        s.bind(device, official, b"z" * 32)
    with pytest.raises(BindingConflict):
        s.remember_session(uuid.uuid4(), b"session of an unbound device")
    assert s.peers[device] == official


def test_archived_sessions_expire_the_current_one_stays() -> None:
    s = state()
    device = uuid.uuid4()
    s.bind(device, uuid.uuid4(), b"k" * 32)
    for i in range(3):
        s.remember_session(device, f"session {i}".encode())
    now = max(s.session_times[device])
    assert s.expire_sessions(now + 10, ttl=3600) == 0
    assert s.expire_sessions(now + 7200, ttl=3600) == 2
    assert s.sessions[device] == [b"session 2"]
    restored = DeviceState.from_json(s.to_json())
    assert restored.sessions == s.sessions and restored.peer_keys == s.peer_keys
