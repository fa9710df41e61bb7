"""Tests of gchat.runtime.embedded_postgres: a real private cluster, started, reused and
recovered after a simulated crash; plus pure unit tests of binary lookup."""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import stat
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import asyncpg
import pytest

from gchat.runtime import embedded_postgres as ep
from gchat.runtime.embedded_postgres import (
    EmbeddedPostgres,
    EmbeddedPostgresUnavailable,
    find_binaries,
    socket_dir_fits,
)


def _require_binaries() -> None:
    """Skip the real-server tests where PostgreSQL is not installed, except
    in CI, where .ci/ensure-services installs it and a skip would hide a bug."""
    try:
        find_binaries()
    except EmbeddedPostgresUnavailable as exc:
        if os.environ.get("CI"):
            raise
        pytest.skip(str(exc))


def _kill_leftover_postmaster(pgdata: Path) -> None:
    """Teardown safety net: never leave a server running after a failed test."""
    try:
        pid = int((pgdata / "postmaster.pid").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return
    try:
        os.kill(pid, signal.SIGQUIT)  # immediate shutdown
    except ProcessLookupError:
        return
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.05)


@pytest.fixture
def pg_root() -> Iterator[Path]:
    """A folder for a cluster.  Not pytest's tmp_path: that lives under a
    0700 directory which the ``postgres`` user (used when we are root) cannot
    enter."""
    _require_binaries()
    base = Path(tempfile.mkdtemp(prefix="gchat-embpg-", dir="/tmp"))
    base.chmod(0o711)
    try:
        yield base / "pg"
    finally:
        _kill_leftover_postmaster(base / "pg" / "pgdata")
        shutil.rmtree(base, ignore_errors=True)


@pytest.mark.slow  # a real PostgreSQL cluster: initdb and start
async def test_start_stop_reuse_and_stale_pid(pg_root: Path) -> None:
    pg = EmbeddedPostgres(pg_root, fsync=False)
    dsn = await pg.start()
    assert dsn.startswith("postgresql://postgres@/gchat?host=")
    assert pg.socket_dir == pg_root / "socket"
    pgdata = pg_root / "pgdata"
    mode = pgdata.stat()
    assert stat.S_IMODE(mode.st_mode) == 0o700
    if os.geteuid() == 0:  # run as the postgres user, which owns the cluster
        import pwd

        assert mode.st_uid == pwd.getpwnam("postgres").pw_uid

    conn = await asyncpg.connect(dsn)
    try:
        assert await conn.fetchval("SHOW listen_addresses") == ""  # no TCP at all
        assert await conn.fetchval("SELECT current_database()") == "gchat"
        await conn.execute("CREATE TABLE notes (id int PRIMARY KEY, body text NOT NULL)")
        await conn.execute("INSERT INTO notes VALUES (1, 'kept across restarts')")
        assert await conn.fetchval("SELECT body FROM notes WHERE id = 1") == (
            "kept across restarts"
        )
    finally:
        await conn.close()
    await pg.stop()
    assert not pg.running
    assert not (pgdata / "postmaster.pid").exists()

    # Simulate a crash whose postmaster.pid names a PID since reused by an
    # unrelated live process of the same OS user: PostgreSQL alone refuses
    # to start then ("Is another postmaster running?").
    as_user = "postgres" if os.geteuid() == 0 else None
    squatter = await asyncio.create_subprocess_exec("sleep", "60", user=as_user)
    try:
        (pgdata / "postmaster.pid").write_text(
            f"{squatter.pid}\n{pgdata}\n0\n5432\n{pg_root / 'socket'}\n\n0 0\nready\n"
        )
        pg2 = EmbeddedPostgres(pg_root, fsync=False)  # a new server process would do this
        dsn2 = await pg2.start()
    finally:
        squatter.kill()
        await squatter.wait()
    conn = await asyncpg.connect(dsn2)
    try:
        assert await conn.fetchval("SELECT body FROM notes WHERE id = 1") == (
            "kept across restarts"
        )
    finally:
        await conn.close()
    await pg2.stop()
    assert not (pgdata / "postmaster.pid").exists()


@pytest.mark.slow  # a real PostgreSQL cluster: initdb and start
async def test_adopts_running_postmaster(pg_root: Path) -> None:
    """A server killed without stopping its cluster: the next start reuses
    the postmaster that is still running instead of failing."""
    first = EmbeddedPostgres(pg_root, fsync=False)
    await first.start()
    pid = (pg_root / "pgdata" / "postmaster.pid").read_text().split()[0]

    assert not first.adopted
    second = EmbeddedPostgres(pg_root, fsync=False)
    dsn = await second.start()
    assert second.adopted
    assert (pg_root / "pgdata" / "postmaster.pid").read_text().split()[0] == pid
    conn = await asyncpg.connect(dsn)
    try:
        assert await conn.fetchval("SELECT 1") == 1
    finally:
        await conn.close()
    await second.stop()
    assert not (pg_root / "pgdata" / "postmaster.pid").exists()
    await first.stop()  # already stopped by `second`: must not raise


@pytest.mark.slow  # a real PostgreSQL cluster: initdb and start
async def test_long_path_uses_short_socket_dir(pg_root: Path) -> None:
    root = pg_root / ("x" * 60) / ("y" * 60)
    assert not socket_dir_fits(root / "socket")
    pg = EmbeddedPostgres(root, fsync=False)
    await pg.start()
    sock = pg.socket_dir
    assert sock is not None and sock.name.startswith("gchat-pg-")
    assert socket_dir_fits(sock)
    conn = await asyncpg.connect(pg.dsn())
    try:
        assert await conn.fetchval("SELECT 1") == 1
    finally:
        await conn.close()
    await pg.stop()
    assert not sock.exists()  # the temporary socket directory is cleaned up


async def test_missing_binaries_raise_unavailable_with_hint(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    empty = tmp_path / "bin"
    empty.mkdir()
    monkeypatch.setattr(ep, "_candidate_bin_dirs", lambda: [empty])
    with pytest.raises(EmbeddedPostgresUnavailable) as info:
        await EmbeddedPostgres(tmp_path / "pg").start()
    message = str(info.value)
    assert "apt-get install postgresql" in message
    assert "GCHAT_DATABASE_URL" in message
    assert not (tmp_path / "pg" / "pgdata").exists()


def _fake_bin_dir(path: Path, version: str) -> Path:
    path.mkdir(parents=True)
    for prog in ("initdb", "pg_ctl", "postgres"):
        script = path / prog
        script.write_text(f"#!/bin/sh\necho '{prog} (PostgreSQL) {version}'\n")
        script.chmod(0o755)
    return path


def test_find_binaries_prefers_newest_and_matches_cluster_version(tmp_path: Path) -> None:
    old = _fake_bin_dir(tmp_path / "14", "14.9")
    new = _fake_bin_dir(tmp_path / "16", "16.2 (Debian 16.2-1)")
    incomplete = tmp_path / "17"
    incomplete.mkdir()
    assert find_binaries(dirs=[old, new, incomplete]).bin_dir == new
    assert find_binaries(dirs=[old, new]).version == (16, 2)
    assert find_binaries(14, dirs=[old, new]).bin_dir == old
    with pytest.raises(EmbeddedPostgresUnavailable, match="postgresql-15"):
        find_binaries(15, dirs=[old, new])


def test_socket_dir_fits() -> None:
    assert socket_dir_fits(Path("/tmp/gchat-pg-abc"))
    assert not socket_dir_fits(Path("/" + "a" * 100))
    # the limit is 107 bytes for "<dir>/.s.PGSQL.5432"
    assert socket_dir_fits(Path("/" + "a" * (107 - 15)))
    assert not socket_dir_fits(Path("/" + "a" * (107 - 14)))
