"""Backup and restore of one deployment: the database and the node's keys together.

Why both: the database alone is not enough. Every device certificate is
signed by ``directory.key``; without it every device must be enrolled
again. ``audit.key`` signs the audit log's tree heads, and auditors keep
its public half; a new key breaks their chain of signed heads. So a backup
is one archive holding

- ``manifest.json``: format, G-Chat version, time, the node that took it,
  migrations;
- ``database.dump``: ``pg_dump --format=custom`` of the whole database,
  one consistent snapshot (pg_dump reads in one repeatable-read
  transaction, so a backup taken while nodes run is still consistent);
- ``keys/*.key``: the server keys (``gchat.runtime.server_keys.KEY_NAMES``,
  the VAPID key included: a new one orphans every push subscription);

The archive is written with mode 0600 (it holds the keys) and, with a
passphrase, sealed as a whole with the same Argon2id + XChaCha20-Poly1305
keystore the devices use (``crypto.keystore``). An unsealed archive is
streamed to and from its file; a sealed one is held in memory while it is
sealed and opened, so with a passphrase the database's size is bounded by
RAM (for larger databases back up unsealed to an encrypted volume).

Restore refuses to write over a database that already holds G-Chat data
or over different keys unless forced, and is meant to run with the node
stopped (``docs/OPERATIONS.md``, "Backup and restore").
"""

import contextlib
import io
import json
import os
import shutil
import subprocess
import tarfile
import tempfile
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, BinaryIO

from crypto import keystore
from gchat.runtime import node_id
from gchat.runtime.server_keys import KEY_NAMES
from gchat.runtime.version import version

FORMAT = "gchat-backup/1"
_DUMP = "database.dump"
_MANIFEST = "manifest.json"


class BackupError(Exception):
    """A backup or restore that cannot go on; the message says what to do."""


@dataclass(frozen=True)
class Manifest:
    format: str
    version: str
    created_at: str
    node_id: str
    migrations: list[str] = field(default_factory=list)
    keys: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class Tools:
    """The PostgreSQL client programs, matching the server's major version."""

    pg_dump: str = "pg_dump"
    pg_restore: str = "pg_restore"


def _run(argv: list[str], what: str) -> None:
    try:
        result = subprocess.run(argv, capture_output=True, text=True, check=False)
    except FileNotFoundError as error:
        raise BackupError(
            f"{argv[0]} is not installed; install the PostgreSQL client "
            "(Debian: apt-get install postgresql-client)"
        ) from error
    if result.returncode != 0:
        detail = result.stderr.strip().splitlines()
        raise BackupError(f"{what} failed: {detail[-1] if detail else result.returncode}")


def _add_bytes(archive: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    info.mode = 0o600
    info.mtime = int(datetime.now(UTC).timestamp())
    archive.addfile(info, io.BytesIO(data))


def _write_private(path: Path, data: bytes, replace: bool = False) -> None:
    """Write ``data`` readable only by us; never over an existing file unless ``replace``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if replace:
        tmp = path.with_name(f".{path.name}.tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as file:
            file.write(data)
        os.replace(tmp, path)
        return
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError as error:
        raise BackupError(f"{path} exists; choose another file or move it away") from error
    with os.fdopen(fd, "wb") as file:
        file.write(data)


def create(
    dsn: str,
    key_dir: Path,
    data_dir: Path,
    output: Path,
    migrations: list[str],
    passphrase: str | None = None,
    tools: Tools = Tools(),
) -> Manifest:
    """Dump the database and copy the keys into ``output`` (0600, never overwritten)."""
    missing = [name for name in KEY_NAMES if not (key_dir / f"{name}.key").exists()]
    if missing:
        raise BackupError(
            f"{key_dir} has no {', '.join(n + '.key' for n in missing)}: "
            "point --data-dir (or keys_dir) at the node's folder"
        )
    kept_id = data_dir / node_id.FILE_NAME
    manifest = Manifest(
        format=FORMAT,
        version=version(),
        created_at=datetime.now(UTC).isoformat(timespec="seconds"),
        node_id=kept_id.read_text(encoding="utf-8").strip() if kept_id.exists() else "",
        migrations=migrations,
        keys=list(KEY_NAMES),
    )
    if output.exists():
        raise BackupError(f"{output} exists; choose another file or move it away")
    with tempfile.TemporaryDirectory(prefix="gchat-backup-") as scratch:
        dump = Path(scratch) / _DUMP
        _run(
            [
                tools.pg_dump,
                "--format=custom",
                "--no-owner",
                "--no-privileges",
                f"--file={dump}",
                f"--dbname={dsn}",
            ],
            "pg_dump",
        )
        if passphrase is None:  # streamed to the file: no size limit but the disk's
            with _create_private(output) as file:
                _write_archive(file, manifest, dump, key_dir)
            return manifest
        buffer = io.BytesIO()
        _write_archive(buffer, manifest, dump, key_dir)
    _write_private(output, keystore.seal_with_passphrase(buffer.getvalue(), passphrase))
    return manifest


def _write_archive(file: BinaryIO, manifest: Manifest, dump: Path, key_dir: Path) -> None:
    with tarfile.open(fileobj=file, mode="w") as archive:
        _add_bytes(archive, _MANIFEST, json.dumps(asdict(manifest), indent=2).encode())
        archive.add(dump, _DUMP)
        for name in manifest.keys:
            _add_bytes(archive, f"keys/{name}.key", (key_dir / f"{name}.key").read_bytes())


@contextlib.contextmanager
def _create_private(path: Path) -> Iterator[BinaryIO]:
    """A new file, mode 0600, removed again if writing it fails."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError as error:
        raise BackupError(f"{path} exists; choose another file or move it away") from error
    try:
        with os.fdopen(fd, "wb") as file:
            yield file
    except BaseException:
        path.unlink(missing_ok=True)
        raise


def _open(path: Path, passphrase: str | None) -> tarfile.TarFile:
    """The archive: read from the file as needed, or (sealed) opened in memory."""
    try:
        with path.open("rb") as file:
            sealed = file.read(len(keystore.MAGIC)) == keystore.MAGIC
    except FileNotFoundError as error:
        raise BackupError(f"{path} does not exist") from error
    try:
        if not sealed:
            return tarfile.open(path, mode="r")
        if passphrase is None:
            raise BackupError(f"{path} is encrypted: give its passphrase (--passphrase-env)")
        try:
            data = keystore.open_with_passphrase(path.read_bytes(), passphrase)
        except keystore.WrongPassphrase as error:
            raise BackupError(f"wrong passphrase for {path}") from error
        return tarfile.open(fileobj=io.BytesIO(data), mode="r")
    except tarfile.TarError as error:
        raise BackupError(f"{path} is not a G-Chat backup") from error


def _member_file(archive: tarfile.TarFile, name: str) -> IO[bytes]:
    try:
        file = archive.extractfile(name)
    except KeyError:
        file = None
    if file is None:
        raise BackupError(f"the backup has no {name}: it is damaged or not a G-Chat backup")
    return file


def _member(archive: tarfile.TarFile, name: str) -> bytes:
    return _member_file(archive, name).read()


def _manifest(archive: tarfile.TarFile) -> Manifest:
    try:
        manifest = Manifest(**json.loads(_member(archive, _MANIFEST)))
    except (TypeError, ValueError) as error:
        raise BackupError("the backup's manifest is damaged") from error
    if manifest.format != FORMAT:
        raise BackupError(f"unknown backup format {manifest.format!r} (this G-Chat reads {FORMAT})")
    return manifest


def restore(
    path: Path,
    dsn: str,
    key_dir: Path,
    database_in_use: bool,
    passphrase: str | None = None,
    force: bool = False,
    tools: Tools = Tools(),
    keys_only: bool = False,
    known_migrations: Iterable[str] | None = None,
) -> Manifest:
    """Put the backup's keys and database back (run it with the node stopped).

    ``database_in_use`` says the target database already holds G-Chat
    tables; that, or keys in ``key_dir`` that differ from the backup's, is
    refused unless ``force`` (then the database's objects are dropped and
    recreated from the dump, and the keys are replaced). ``keys_only`` puts
    back the keys alone, for a host whose database survived. A backup with
    migrations outside ``known_migrations`` (a newer version's) is refused.
    """
    with _open(path, passphrase) as archive:
        manifest = _manifest(archive)
        if known_migrations is not None:
            known = set(known_migrations)
            newer = [name for name in manifest.migrations if name not in known]
            if newer:
                raise BackupError(
                    f"the backup comes from a newer G-Chat ({manifest.version}, migration "
                    f"{newer[-1]}); install that version first"
                )
        keys = {name: _member(archive, f"keys/{name}.key") for name in manifest.keys}
        if database_in_use and not force and not keys_only:
            raise BackupError(
                "the database already holds G-Chat data; restore into an empty database, "
                "pass --keys-only to put back only the keys, or --force to replace it all"
            )
        differing = [
            name
            for name, data in keys.items()
            if (key_dir / f"{name}.key").exists() and (key_dir / f"{name}.key").read_bytes() != data
        ]
        if differing and not force:
            raise BackupError(
                f"{key_dir} holds other keys ({', '.join(differing)}); "
                "move them away, or pass --force to replace them"
            )
        if not keys_only:
            _restore_database(archive, dsn, database_in_use, tools)
        key_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        os.chmod(key_dir, 0o700)
        for name, data in keys.items():
            target = key_dir / f"{name}.key"
            if not target.exists() or target.read_bytes() != data:
                _write_private(target, data, replace=True)
    return manifest


def _restore_database(
    archive: tarfile.TarFile, dsn: str, database_in_use: bool, tools: Tools
) -> None:
    """pg_restore in one transaction: all of the dump, or nothing on failure."""
    with tempfile.TemporaryDirectory(prefix="gchat-restore-") as scratch:
        dump = Path(scratch) / _DUMP
        with dump.open("wb") as file:
            shutil.copyfileobj(_member_file(archive, _DUMP), file, 1 << 20)
        argv = [
            tools.pg_restore,
            "--no-owner",
            "--no-privileges",
            "--single-transaction",
            "--exit-on-error",
            f"--dbname={dsn}",
        ]
        if database_in_use:
            argv += ["--clean", "--if-exists"]
        _run([*argv, str(dump)], "pg_restore")


def find_tools(bin_dir: Path | None = None) -> Tools:
    """pg_dump and pg_restore from ``bin_dir`` (the embedded cluster's), else from PATH."""
    if bin_dir is not None and (bin_dir / "pg_dump").exists():
        return Tools(str(bin_dir / "pg_dump"), str(bin_dir / "pg_restore"))
    return Tools(shutil.which("pg_dump") or "pg_dump", shutil.which("pg_restore") or "pg_restore")
