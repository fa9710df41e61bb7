"""Server configuration: defaults, then an optional TOML file, then environment.

One frozen dataclass, built once in ``gchat.app`` and passed down, so no
module reads the environment on its own.
"""

import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any, get_type_hints

from gchat.transport.client_address import parse_trusted
from protocol import limits


@dataclass(frozen=True)
class Config:
    host: str = "127.0.0.1"
    port: int = 8765
    data_dir: Path = Path("data")
    #: PostgreSQL DSN; empty means the embedded cluster under data_dir.
    database_url: str = ""
    #: Redis URL; empty means the in-process broker (single node).
    redis_url: str = ""
    #: Without Redis: ``auto`` (in-process for one process, PostgreSQL
    #: LISTEN/NOTIFY for ``workers`` > 1) or ``postgres`` (LISTEN/NOTIFY always,
    #: for several single-process nodes on one database without Redis).
    broker: str = "auto"
    #: ``gchat serve --workers N``: node processes sharing the port (SO_REUSEPORT).
    workers: int = 1
    #: Bind the port with SO_REUSEPORT (set for each worker by --workers).
    reuse_port: bool = False
    #: Prefix of every Redis key and channel (several deployments, or tests, may share a Redis).
    redis_prefix: str = "gchat:"
    #: Most Redis connections a node opens (pub/sub included); idle ones beyond
    #: one are closed after ``redis_idle_seconds`` unused.
    redis_max_connections: int = 32
    redis_idle_seconds: float = 30.0
    #: Names this deployment in the signed auth message (domain separation).
    server_id: str = "gchat"
    #: Names this process in logs and metrics.
    node_id: str = ""
    keys_dir: Path | None = None
    tls_cert: Path | None = None
    tls_key: Path | None = None
    token_ttl_seconds: int = 600
    enrolment_code_ttl_seconds: int = 7 * 24 * 3600
    retention_seconds: int = 30 * 24 * 3600
    max_devices_per_official: int = 5
    max_prekeys_per_device: int = 500
    prekey_low_threshold: int = 20
    max_unacked: int = 256
    commit_max_batch: int = 256
    #: Commit batches in flight at once, each on a kept connection of its own
    #: (gchat.messaging.committer): one is checked and written while another
    #: waits for its durable commit. One by default: with PostgreSQL beside
    #: the node, a second lane gained nothing on a quiet machine and split
    #: half-capacity loads into smaller, dearer batches (docs/PERFORMANCE.md);
    #: it pays where a commit's round trip is long (a remote database).
    commit_lanes: int = 1
    #: An ack's delete waits up to this long for other acks to share its
    #: transaction, less once 256 acked positions wait (gchat.messaging.delivery);
    #: nobody waits for it but a closing connection, which hurries it.
    ack_linger_seconds: float = 0.25
    auth_timeout_seconds: float = 30.0
    max_ciphertext_bytes: int = limits.MAX_CIPHERTEXT_BYTES
    max_recipient_devices: int = limits.MAX_RECIPIENT_DEVICES
    expiry_interval_seconds: float = 60.0
    #: How often a node re-checks the status of the devices connected to it
    #: (revocation signals are hints and can be lost).
    revocation_sweep_seconds: float = 30.0
    db_pool_size: int = 20
    #: Overrides of the rate-limit table, e.g. "messages=2000/500" (gchat.runtime.ratelimit).
    rate_limits: str = ""
    #: Most WebSocket connections one remote address may hold on a node (0: no
    #: cap); over it the upgrade gets HTTP 429 (gchat.transport.admission).
    max_connections_per_address: int = 50
    #: Addresses and networks exempt from that cap: loopback, and add your
    #: reverse proxies and load balancers (they carry many officials).
    connection_cap_exempt: str = "127.0.0.0/8,::1/128"
    #: Refused auth and enrolment attempts are audited as one event per
    #: address and this window (gchat.audit.failures), never one per attempt.
    failure_audit_seconds: float = 60.0
    #: At most one Web Push per device per this many seconds.
    push_coalesce_seconds: float = 30.0
    #: The VAPID ``sub`` claim: how a push service reaches the operator.
    push_subject: str = "mailto:admin@localhost"
    #: A CA file to trust for push services besides the system's (a private relay).
    push_ca_file: str = ""
    #: Record audit events (turn off only to measure auditing's cost).
    audit_enabled: bool = True
    #: The audit sequencer signs a tree head this often when the log grew.
    audit_sign_interval_seconds: float = 5.0
    #: The audit sequencer's passes: an event waits at most this long for one
    #: (an idle node's poll), and while events keep coming each pass carries
    #: about ``audit_pass_events`` of them, passes at most every 25 ms
    #: (gchat.audit.sequencer; 0: every 25 ms whatever it carries).
    audit_poll_seconds: float = 0.25
    audit_pass_events: int = 256
    #: ``gchat audit archive`` archives and drops the months of the audit log
    #: that ended more than this many days ago (0: keep the log forever).
    audit_retention_days: int = 0
    #: Officials see auditors' queries about them only after this delay.
    audit_transparency_delay_seconds: int = 7 * 24 * 3600
    #: Largest group conversation (members), at most the protocol limit.
    max_group_members: int = limits.MAX_GROUP_MEMBERS
    #: May a group (or direct conversation) join officials of different
    #: top-level agencies? (Until directory policy decides: see gchat.conversations.service.)
    allow_cross_agency_groups: bool = True
    #: The built web app to serve on the node's port (None: web/dist of the source tree).
    web_dir: Path | None = None
    #: Origins besides the node's own allowed to open a WebSocket (comma-separated).
    web_origins: str = ""
    #: ``text`` or ``json`` (one JSON object per line, for log shippers).
    log_format: str = "text"
    #: Serve /metrics on this separate address instead of the client port (0: client port).
    metrics_host: str = "127.0.0.1"
    metrics_port: int = 0
    #: SHA-256 (hex) of a bearer token /metrics on the client port then requires.
    metrics_token_sha256: str = ""
    #: Reverse proxies (addresses or CIDRs, comma-separated) whose X-Forwarded-For
    #: names the client for per-address limits and the audit log.
    trusted_proxies: str = ""
    #: Where attachment ciphertext is kept (None: <data_dir>/attachments). Nodes
    #: of one deployment share it (a shared filesystem; docs/OPERATIONS.md).
    attachments_dir: Path | None = None
    #: Largest attachment (ciphertext bytes); agency policy may set less. The
    #: default lets a 100 MiB file through (its ciphertext is 27 224 bytes more).
    max_attachment_bytes: int = 100 * 1024 * 1024 + 64 * 1024
    #: Attachment bytes one official may upload per UTC day; policy may set less.
    attachment_bytes_per_day: int = 2 * 1024 * 1024 * 1024
    #: How long an attachment capability is good for (seconds).
    attachment_capability_seconds: float = 600.0
    #: An upload unfinished this long (seconds) is collected.
    attachment_upload_ttl_seconds: int = 24 * 3600

    @property
    def key_directory(self) -> Path:
        return self.keys_dir or self.data_dir / "keys"

    @property
    def attachment_directory(self) -> Path:
        return self.attachments_dir or self.data_dir / "attachments"


_ENV_PREFIX = "GCHAT_"


def _coerce(name: str, value: Any) -> Any:
    """Turn a TOML or environment value into the field's type."""
    kind = get_type_hints(Config)[name]
    if kind == Path | None:
        return Path(value) if value not in ("", None) else None
    if kind is Path:
        return Path(value)
    if kind is bool:
        if isinstance(value, bool):
            return value
        text = str(value).strip().lower()
        if text in ("1", "true", "yes", "on"):
            return True
        if text in ("0", "false", "no", "off", ""):
            return False
        raise ValueError(f"{name} must be a boolean, not {value!r}")
    if kind in (int, float):
        return kind(value)
    return str(value)


def load(
    environ: Mapping[str, str] | None = None,
    toml_path: Path | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> Config:
    """Defaults < TOML file (``GCHAT_CONFIG`` or ``toml_path``) < env < overrides."""
    environ = os.environ if environ is None else environ
    names = {f.name for f in fields(Config)}
    values: dict[str, Any] = {}
    path = toml_path or (Path(environ["GCHAT_CONFIG"]) if environ.get("GCHAT_CONFIG") else None)
    if path is not None:
        with path.open("rb") as file:
            for key, value in tomllib.load(file).items():
                if key not in names:
                    raise ValueError(f"unknown configuration key {key!r} in {path}")
                values[key] = _coerce(key, value)
    for name in names:
        env = environ.get(_ENV_PREFIX + name.upper())
        if env is not None:
            values[name] = _coerce(name, env)
    for key, value in (overrides or {}).items():
        if value is not None:
            values[key] = _coerce(key, value)
    config = replace(Config(), **values)
    if config.max_ciphertext_bytes > limits.MAX_CIPHERTEXT_BYTES:
        raise ValueError("max_ciphertext_bytes cannot exceed the protocol limit")
    if config.max_recipient_devices > limits.MAX_RECIPIENT_DEVICES:
        raise ValueError("max_recipient_devices cannot exceed the protocol limit")
    parse_trusted(config.trusted_proxies)  # a typo stops start-up, naming the entry
    if config.log_format not in ("text", "json"):
        raise ValueError("log_format must be text or json")
    if config.broker not in ("auto", "postgres"):
        raise ValueError("broker must be auto or postgres")
    if config.workers < 1:
        raise ValueError("workers must be at least 1")
    if config.commit_lanes < 1:
        raise ValueError("commit_lanes must be at least 1")
    if config.audit_poll_seconds <= 0 or config.audit_pass_events < 0:
        raise ValueError("audit_poll_seconds must be positive, audit_pass_events at least 0")
    if config.ack_linger_seconds < 0:
        raise ValueError("ack_linger_seconds must be at least 0")
    if config.max_group_members > limits.MAX_GROUP_MEMBERS:
        raise ValueError("max_group_members cannot exceed the protocol limit")
    return config
