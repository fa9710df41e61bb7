"""The backup drill: back up, wipe everything, restore, and find it all again.

A real node with real enrolled devices; ``gchat backup`` and ``gchat
restore`` run as the operator runs them (subprocesses); the wipe drops the
database and deletes the data folder with the keys. After the restore the
same devices log in with the keys they had, every official and device is
there, the message that was waiting is delivered and decrypts, and the
audit log verifies against the audit key from before the wipe.
"""

import io
import json
import os
import stat
import subprocess
import sys
import tarfile
from pathlib import Path

from gchat.app import App
from gchat.audit.verify import verify_export
from gchat.client.sdk import Client
from tests.audit.conftest import registered_auditor
from tests.support import (
    World,
    create_database,
    drop_databases,
    eventually,
    node_config,
    run_sync,
)

REPO = Path(__file__).resolve().parents[2]
PASSPHRASE = "correct horse battery staple"


def gchat(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "gchat", *args],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=120,
    )


async def rows(app: App, query: str) -> set[tuple[object, ...]]:
    assert app.db is not None
    return {tuple(r) for r in await app.db.pool.fetch(query)}


OFFICIALS = "SELECT id, agency_id, name_en FROM officials"
DEVICES = "SELECT id, official_id, identity_key, certificate FROM devices"


async def wait_for_signed_head(app: App) -> int:
    """Every event sequenced and covered by a signed tree head; returns its size."""
    assert app.db is not None
    pool = app.db.pool

    async def signed_up_to_date() -> int:
        events = await pool.fetchval("SELECT count(*) FROM audit_events")
        signed = await pool.fetchval("SELECT coalesce(max(tree_size), 0) FROM audit_tree_heads")
        return int(signed) if events and signed == events else 0

    return int(
        await eventually(
            signed_up_to_date, within=20, step=0.1, what="the audit log signed up to date"
        )
    )


async def test_backup_wipe_restore_finds_everything(
    database_url: str, pg_admin_dsn: str, tmp_path: Path
) -> None:
    data = tmp_path / "data"
    config = node_config(database_url, data, audit_sign_interval_seconds=0.2)
    env = {k: v for k, v in os.environ.items() if not k.startswith("GCHAT_")}
    env |= {"GCHAT_DATABASE_URL": database_url, "GCHAT_DATA_DIR": str(data),
            "GCHAT_NODE_ID": "test-node", "BACKUP_PASSPHRASE": PASSPHRASE}

    # A deployment in use: officials, devices, one message waiting for bob.
    app = App(config)
    await app.start()
    world = World(app)
    try:
        await world.start()
        alice = await world.official_with_device("alice")
        bob = await world.official_with_device("bob")
        assert bob.state.official_id is not None
        await alice.send_message(bob.state.official_id, "ขอเอกสารภายในวันนี้".encode(), "m1")
        await bob.close()
        officials, devices = await rows(app, OFFICIALS), await rows(app, DEVICES)
        signed_size = await wait_for_signed_head(app)
    finally:
        await world.close()
        await app.stop()
    keys_before = {p.name: p.read_bytes() for p in (data / "keys").iterdir()}

    backup_file = tmp_path / "site.gcbackup"
    made = gchat("backup", "--output", str(backup_file), "--passphrase-env", "BACKUP_PASSPHRASE",
                 env=env)
    assert made.returncode == 0, made.stderr
    assert stat.S_IMODE(backup_file.stat().st_mode) == 0o600
    sealed = backup_file.read_bytes()
    for seed in keys_before.values():  # sealed: no key in the clear
        assert seed.strip() not in sealed
    again = gchat("backup", "--output", str(backup_file), env=env)
    assert again.returncode == 1 and "exists" in again.stderr  # never overwritten
    assert backup_file.read_bytes() == sealed

    # The disaster: the database and the data folder with the keys are gone.
    name = database_url.rsplit("/", 1)[1]
    run_sync(drop_databases(pg_admin_dsn, [name], name))
    run_sync(create_database(pg_admin_dsn, name))
    for path in sorted(data.rglob("*"), reverse=True):
        path.unlink() if not path.is_dir() else path.rmdir()
    data.rmdir()

    wrong = gchat("restore", "--input", str(backup_file), "--passphrase-env", "WRONG",
                  env=env | {"WRONG": "not the passphrase"})
    assert wrong.returncode == 1
    assert wrong.stderr.strip() == f"error: wrong passphrase for {backup_file}"
    assert "Traceback" not in wrong.stderr
    restored = gchat("restore", "--input", str(backup_file), "--passphrase-env",
                     "BACKUP_PASSPHRASE", env=env)
    assert restored.returncode == 0, restored.stderr
    assert {p.name: p.read_bytes() for p in (data / "keys").iterdir()} == keys_before
    assert all(stat.S_IMODE(p.stat().st_mode) == 0o600 for p in (data / "keys").iterdir())
    twice = gchat("restore", "--input", str(backup_file), "--passphrase-env",
                  "BACKUP_PASSPHRASE", env=env)
    assert twice.returncode == 1 and "already holds G-Chat data" in twice.stderr
    for key in (data / "keys").iterdir():  # lost keys, database intact
        key.unlink()
    keys_only = gchat("restore", "--input", str(backup_file), "--keys-only", "--passphrase-env",
                      "BACKUP_PASSPHRASE", env=env)
    assert keys_only.returncode == 0, keys_only.stderr
    assert {p.name: p.read_bytes() for p in (data / "keys").iterdir()} == keys_before

    app = App(config)
    await app.start()
    try:
        assert await rows(app, OFFICIALS) == officials
        assert await rows(app, DEVICES) == devices
        # Bob's device, with the keys it had, logs in and gets the waiting message.
        bob_again = Client(bob.state)
        bob_again.state.url = f"ws://127.0.0.1:{app.port}"
        await bob_again.connect()
        try:
            await bob_again.authenticate()
            got = [m async for m in bob_again.messages(idle_timeout=2)]
        finally:
            await bob_again.close()
        assert [m.plaintext.decode() for m in got] == ["ขอเอกสารภายในวันนี้"]
        assert got[0].sender_official == alice.state.official_id

        # The audit log verifies against the audit key from before the wipe.
        assert app.db is not None and app.audit_service is not None
        auditor = await registered_auditor(app.db.pool)
        lines: list[str] = []
        cursor = None
        while True:
            page, cursor, size = await app.audit_service.export(auditor, 0, None, None, cursor)
            lines.extend(page)
            if cursor is None:
                break
        audit_public = app_audit_public_key(data)
        report = verify_export(lines, audit_public)
        assert report.ok, report.failures
        assert report.tree_size is not None and report.tree_size >= signed_size
        assert report.entries == report.tree_size
    finally:
        await app.stop()


def app_audit_public_key(data: Path) -> bytes:
    from gchat.runtime.server_keys import ServerKeys

    return ServerKeys.load_or_create(data / "keys").audit.public_key


async def test_restore_mistakes_are_one_line(database_url: str, tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("GCHAT_")}
    env |= {"GCHAT_DATABASE_URL": database_url, "GCHAT_DATA_DIR": str(tmp_path / "data")}
    missing = gchat("restore", "--input", str(tmp_path / "nope.gcbackup"), env=env)
    assert (missing.returncode, missing.stderr.strip()) == (
        1, f"error: {tmp_path / 'nope.gcbackup'} does not exist"
    )
    junk = tmp_path / "junk.gcbackup"
    junk.write_bytes(b"not a backup at all" * 100)
    bad = gchat("restore", "--input", str(junk), env=env)
    assert (bad.returncode, bad.stderr.strip()) == (1, f"error: {junk} is not a G-Chat backup")
    future = tmp_path / "future.gcbackup"
    manifest = json.dumps({"format": "gchat-backup/1", "version": "9.0.0", "created_at": "",
                           "node_id": "", "migrations": ["0001_init.sql", "9999_future.sql"],
                           "keys": []}).encode()
    with tarfile.open(future, "w") as archive:
        info = tarfile.TarInfo("manifest.json")
        info.size = len(manifest)
        archive.addfile(info, io.BytesIO(manifest))
    newer = gchat("restore", "--input", str(future), env=env)
    assert (newer.returncode, newer.stderr.strip()) == (
        1, "error: the backup comes from a newer G-Chat (9.0.0, migration 9999_future.sql); "
        "install that version first"
    )
    empty = gchat("backup", "--output", str(tmp_path / "b.gcbackup"), env=env)
    assert empty.returncode == 1 and "Traceback" not in empty.stderr
    assert not (tmp_path / "b.gcbackup").exists()


async def test_an_unsealed_backup_streams_and_restores_with_force(
    database_url: str, tmp_path: Path
) -> None:
    import asyncpg

    from gchat.runtime.server_keys import ServerKeys
    from gchat.store import migrations

    conn = await asyncpg.connect(database_url)
    try:
        await migrations.migrate(conn)
        await conn.execute("INSERT INTO agencies (id, code, name_en) VALUES "
                           "(gen_random_uuid(), 'MIN', 'Ministry')")
    finally:
        await conn.close()
    data = tmp_path / "data"
    ServerKeys.load_or_create(data / "keys")
    env = {k: v for k, v in os.environ.items() if not k.startswith("GCHAT_")}
    env |= {"GCHAT_DATABASE_URL": database_url, "GCHAT_DATA_DIR": str(data)}
    out = tmp_path / "plain.gcbackup"
    made = gchat("backup", "--output", str(out), env=env)
    assert made.returncode == 0, made.stderr
    assert "NOT encrypted" in made.stdout
    assert stat.S_IMODE(out.stat().st_mode) == 0o600
    with tarfile.open(out) as archive:
        assert sorted(archive.getnames()) == [
            "database.dump", "keys/audit.key", "keys/directory.key", "keys/token.key",
            "keys/vapid.key",
            "manifest.json",
        ]
    refused = gchat("restore", "--input", str(out), env=env)
    assert refused.returncode == 1 and "already holds G-Chat data" in refused.stderr
    forced = gchat("restore", "--input", str(out), "--force", env=env)
    assert forced.returncode == 0, forced.stderr
    conn = await asyncpg.connect(database_url)
    try:
        assert await conn.fetchval("SELECT code FROM agencies") == "MIN"
    finally:
        await conn.close()
