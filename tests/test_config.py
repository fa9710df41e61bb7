"""Configuration: defaults < TOML file < environment < explicit overrides."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from gchat.config import Config, load
from protocol import limits


def write(tmp_path: Path, text: str, name: str = "gchat.toml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def test_defaults() -> None:
    config = load(environ={})
    assert config == Config()
    assert config.host == "127.0.0.1"
    assert config.port == 8765
    assert config.data_dir == Path("data")
    assert config.database_url == "" and config.redis_url == ""
    assert config.server_id == "gchat"
    assert config.keys_dir is None and config.tls_cert is None and config.tls_key is None
    assert config.key_directory == Path("data") / "keys"
    assert config.token_ttl_seconds == 600
    assert config.enrolment_code_ttl_seconds == 7 * 24 * 3600
    assert config.retention_seconds == 30 * 24 * 3600
    assert config.max_devices_per_official == 5
    assert config.max_prekeys_per_device == 500
    assert config.prekey_low_threshold == 20
    assert config.max_unacked == 256
    assert config.auth_timeout_seconds == 30.0
    assert config.max_ciphertext_bytes == limits.MAX_CIPHERTEXT_BYTES
    assert config.max_recipient_devices == limits.MAX_RECIPIENT_DEVICES


def test_config_is_frozen() -> None:
    with pytest.raises(dataclasses.FrozenInstanceError):
        Config().port = 1  # type: ignore[misc]


def test_toml_file(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """
        host = "0.0.0.0"
        port = 9000
        server_id = "gchat.go.th"
        data_dir = "/var/lib/gchat"
        max_unacked = 16
        auth_timeout_seconds = 5
        commit_max_batch = 64
        """,
    )
    config = load(environ={}, toml_path=path)
    assert config.host == "0.0.0.0"
    assert config.port == 9000
    assert config.server_id == "gchat.go.th"
    assert config.data_dir == Path("/var/lib/gchat")
    assert config.key_directory == Path("/var/lib/gchat/keys")
    assert config.max_unacked == 16
    assert config.auth_timeout_seconds == 5.0
    assert isinstance(config.auth_timeout_seconds, float)
    assert config.commit_max_batch == 64
    assert config.token_ttl_seconds == 600  # untouched keys keep their defaults


def test_toml_path_from_gchat_config(tmp_path: Path) -> None:
    path = write(tmp_path, "port = 9100\n")
    assert load(environ={"GCHAT_CONFIG": str(path)}).port == 9100
    assert load(environ={"GCHAT_CONFIG": ""}).port == 8765


def test_explicit_toml_path_wins_over_gchat_config(tmp_path: Path) -> None:
    env_file = write(tmp_path, "port = 1111\n", "env.toml")
    given = write(tmp_path, "port = 2222\n", "given.toml")
    assert load(environ={"GCHAT_CONFIG": str(env_file)}, toml_path=given).port == 2222


def test_environment_overrides_toml(tmp_path: Path) -> None:
    path = write(tmp_path, 'port = 9000\nhost = "10.0.0.1"\nmax_unacked = 8\n')
    config = load(
        environ={"GCHAT_PORT": "9001", "GCHAT_MAX_UNACKED": "32", "GCHAT_NODE_ID": "n1"},
        toml_path=path,
    )
    assert config.port == 9001
    assert config.max_unacked == 32
    assert config.node_id == "n1"
    assert config.host == "10.0.0.1"  # not in the environment: TOML stays


def test_environment_values_are_coerced() -> None:
    config = load(
        environ={
            "GCHAT_PORT": "7000",
            "GCHAT_AUTH_TIMEOUT_SECONDS": "2.5",
            "GCHAT_DATABASE_URL": "postgresql://db/gchat",
        }
    )
    assert config.port == 7000 and isinstance(config.port, int)
    assert config.auth_timeout_seconds == 2.5
    assert config.database_url == "postgresql://db/gchat"


def test_unrelated_environment_is_ignored() -> None:
    assert load(environ={"GCHAT_NOT_A_SETTING": "1", "PORT": "1", "gchat_port": "1"}) == Config()


def test_explicit_overrides_win(tmp_path: Path) -> None:
    path = write(tmp_path, "port = 9000\n")
    config = load(
        environ={"GCHAT_PORT": "9001"},
        toml_path=path,
        overrides={"port": 9002, "host": None},
    )
    assert config.port == 9002
    assert config.host == "127.0.0.1"  # a None override means "not given"


def test_overrides_are_coerced() -> None:
    config = load(environ={}, overrides={"port": "9003", "data_dir": "/srv/gchat"})
    assert config.port == 9003
    assert config.data_dir == Path("/srv/gchat")


def test_unknown_toml_key_is_refused(tmp_path: Path) -> None:
    path = write(tmp_path, "port = 9000\nmax_unakced = 3\n")
    with pytest.raises(ValueError, match="max_unakced"):
        load(environ={}, toml_path=path)


def test_bad_number_is_refused() -> None:
    with pytest.raises(ValueError):
        load(environ={"GCHAT_PORT": "eighty"})


def test_missing_toml_file_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(OSError):
        load(environ={}, toml_path=tmp_path / "absent.toml")


@pytest.mark.parametrize(
    ("name", "too_big"),
    [
        ("max_ciphertext_bytes", limits.MAX_CIPHERTEXT_BYTES + 1),
        ("max_recipient_devices", limits.MAX_RECIPIENT_DEVICES + 1),
    ],
)
def test_limits_above_the_protocol_maxima_are_refused(
    tmp_path: Path, name: str, too_big: int
) -> None:
    with pytest.raises(ValueError):
        load(environ={}, toml_path=write(tmp_path, f"{name} = {too_big}\n"))
    with pytest.raises(ValueError):
        load(environ={f"GCHAT_{name.upper()}": str(too_big)})
    with pytest.raises(ValueError):
        load(environ={}, overrides={name: too_big})


def test_limits_below_the_protocol_maxima_are_accepted() -> None:
    config = load(environ={}, overrides={"max_ciphertext_bytes": 4096, "max_recipient_devices": 50})
    assert config.max_ciphertext_bytes == 4096
    assert config.max_recipient_devices == 50


def test_path_fields_become_paths(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        'data_dir = "d"\nkeys_dir = "/etc/gchat/keys"\n'
        'tls_cert = "/etc/gchat/cert.pem"\ntls_key = "/etc/gchat/key.pem"\n',
    )
    config = load(environ={}, toml_path=path)
    for value in (config.data_dir, config.keys_dir, config.tls_cert, config.tls_key):
        assert isinstance(value, Path)
    assert config.keys_dir == Path("/etc/gchat/keys")
    assert config.key_directory == Path("/etc/gchat/keys")
    from_env = load(environ={"GCHAT_DATA_DIR": "/tmp/x", "GCHAT_TLS_CERT": "c.pem"})
    assert from_env.data_dir == Path("/tmp/x")
    assert from_env.tls_cert == Path("c.pem")


def test_empty_optional_path_means_none() -> None:
    config = load(environ={"GCHAT_KEYS_DIR": "", "GCHAT_TLS_CERT": ""})
    assert config.keys_dir is None
    assert config.tls_cert is None


def test_commit_lanes_below_one_are_refused() -> None:
    assert load(environ={"GCHAT_COMMIT_LANES": "3"}).commit_lanes == 3
    with pytest.raises(ValueError, match="commit_lanes"):
        load(environ={"GCHAT_COMMIT_LANES": "0"})



def test_the_ack_linger_setting_is_read_and_bounded() -> None:
    assert load(environ={"GCHAT_ACK_LINGER_SECONDS": "0.3"}).ack_linger_seconds == 0.3
    with pytest.raises(ValueError, match="ack_linger_seconds"):
        load(environ={"GCHAT_ACK_LINGER_SECONDS": "-0.1"})


def test_the_audit_pass_settings_are_read_and_bounded() -> None:
    config = load(environ={"GCHAT_AUDIT_POLL_SECONDS": "0.5", "GCHAT_AUDIT_PASS_EVENTS": "0"})
    assert (config.audit_poll_seconds, config.audit_pass_events) == (0.5, 0)
    with pytest.raises(ValueError, match="audit_poll_seconds"):
        load(environ={"GCHAT_AUDIT_POLL_SECONDS": "0"})
    with pytest.raises(ValueError, match="audit_pass_events"):
        load(environ={"GCHAT_AUDIT_PASS_EVENTS": "-1"})
