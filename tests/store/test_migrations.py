"""The migration runner against a real database."""

import asyncio
import hashlib
from pathlib import Path

import asyncpg
import pytest

from gchat.app import App
from gchat.store import migrations
from tests.support import node_config


async def test_applies_once_and_records_every_file(empty_database_url: str) -> None:
    conn = await asyncpg.connect(empty_database_url)
    try:
        applied = await migrations.migrate(conn)
        assert applied == [m.name for m in migrations.discover()]
        assert await migrations.migrate(conn) == []
        assert await migrations.pending(conn) == 0
        assert await conn.fetchval("SELECT to_regclass('inbox') IS NOT NULL")
    finally:
        await conn.close()


async def test_nodes_starting_together_apply_each_file_once(empty_database_url: str) -> None:
    conns = [await asyncpg.connect(empty_database_url) for _ in range(4)]
    try:
        results = await asyncio.gather(*(migrations.migrate(c) for c in conns))
        assert sorted(len(r) for r in results) == [0, 0, 0, len(migrations.discover())]
    finally:
        for conn in conns:
            await conn.close()


async def test_an_edited_applied_file_stops_startup(
    empty_database_url: str, tmp_path: Path
) -> None:
    (tmp_path / "0001_first.sql").write_text("CREATE TABLE t (id int);")
    conn = await asyncpg.connect(empty_database_url)
    try:
        await migrations.migrate(conn, tmp_path)
        (tmp_path / "0001_first.sql").write_text("CREATE TABLE t (id bigint);")
        with pytest.raises(migrations.MigrationError, match="edited"):
            await migrations.migrate(conn, tmp_path)
    finally:
        await conn.close()


async def test_a_failing_file_applies_nothing_of_itself(
    empty_database_url: str, tmp_path: Path
) -> None:
    (tmp_path / "0001_ok.sql").write_text("CREATE TABLE a (id int);")
    (tmp_path / "0002_bad.sql").write_text("CREATE TABLE b (id int); SELECT broken syntax here;")
    conn = await asyncpg.connect(empty_database_url)
    try:
        with pytest.raises(asyncpg.PostgresSyntaxError):
            await migrations.migrate(conn, tmp_path)
        assert await conn.fetchval("SELECT to_regclass('a') IS NOT NULL")
        assert await conn.fetchval("SELECT to_regclass('b') IS NULL")
        assert await migrations.pending(conn, tmp_path) == 1
    finally:
        await conn.close()


def test_numbering_gaps_and_bad_names_are_refused(tmp_path: Path) -> None:
    (tmp_path / "0001_a.sql").write_text("")
    (tmp_path / "0003_c.sql").write_text("")
    with pytest.raises(migrations.MigrationError, match="0002"):
        migrations.discover(tmp_path)
    (tmp_path / "0003_c.sql").unlink()
    (tmp_path / "2_Bad-Name.sql").write_text("")
    with pytest.raises(migrations.MigrationError, match="badly named"):
        migrations.discover(tmp_path)


async def test_a_newer_versions_migration_keeps_an_old_node_ready(
    empty_database_url: str, tmp_path: Path
) -> None:
    """Rolling upgrade: the first new node migrates; the old ones must not turn unready."""
    old, new = tmp_path / "old", tmp_path / "new"
    old.mkdir()
    new.mkdir()
    for folder in (old, new):
        (folder / "0001_first.sql").write_text("CREATE TABLE a (id int);")
    (new / "0002_second.sql").write_text("ALTER TABLE a ADD COLUMN note text;")
    conn = await asyncpg.connect(empty_database_url)
    try:
        await migrations.migrate(conn, old)
        assert await migrations.pending(conn, new) == 1
        await migrations.migrate(conn, new)
        assert await migrations.pending(conn, new) == 0
        assert await migrations.pending(conn, old) == 0
        with pytest.raises(migrations.MigrationError, match="lacks"):
            await migrations.migrate(conn, old)  # an old node restarting stops, and says why
    finally:
        await conn.close()


async def test_migrating_leaves_statistics_and_churn_autovacuum_settings(
    empty_database_url: str,
) -> None:
    """Plans made on a freshly migrated database have statistics to go by, and
    the churn tables carry their own autovacuum thresholds (docs/OPERATIONS.md)."""
    conn = await asyncpg.connect(empty_database_url)
    try:
        await migrations.migrate(conn)
        # ANALYZE ran on the tables the hot paths and the directory read.
        hot = ["inbox", "messages", "officials", "official_terms", "devices", "agencies"]
        analysed = await conn.fetch(
            """SELECT relname FROM pg_stat_user_tables
               WHERE relname = ANY($1::text[]) AND last_analyze IS NOT NULL""", hot)
        assert sorted(r["relname"] for r in analysed) == sorted(hot)
        options = {
            r["relname"]: set(r["reloptions"] or [])
            for r in await conn.fetch(
                "SELECT relname, reloptions FROM pg_class WHERE relname IN ('inbox', 'messages')")
        }
        assert "autovacuum_vacuum_scale_factor=0.01" in options["inbox"]
        assert "autovacuum_analyze_scale_factor=0.02" in options["messages"]
    finally:
        await conn.close()


def _sha256_hex(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


async def test_a_superseded_checksum_is_accepted_and_nothing_else(
    empty_database_url: str, tmp_path: Path
) -> None:
    """A database migrated with a file's old text still starts after a reviewed
    comment-only edit listed in superseded.txt; any other edit is still refused."""
    old_text = "-- the old comment\nCREATE TABLE t (id int);\n"
    new_text = "-- the corrected comment\nCREATE TABLE t (id int);\n"
    second = "CREATE TABLE u (id int);\n"
    (tmp_path / "0001_first.sql").write_text(old_text)
    (tmp_path / "0002_second.sql").write_text(second)
    conn = await asyncpg.connect(empty_database_url)
    try:
        assert await migrations.migrate(conn, tmp_path) == ["0001_first.sql", "0002_second.sql"]
        (tmp_path / "0001_first.sql").write_text(new_text)
        with pytest.raises(migrations.MigrationError, match="0001_first.sql was edited"):
            await migrations.migrate(conn, tmp_path)  # not listed yet

        (tmp_path / migrations.SUPERSEDED_FILE).write_text(
            "# a comment-only edit\n"
            f"0001_first.sql {_sha256_hex(old_text)} {_sha256_hex(new_text)}\n"
        )
        assert await migrations.migrate(conn, tmp_path) == []
        recorded = await conn.fetchval("SELECT checksum FROM schema_migrations WHERE version = 1")
        assert bytes(recorded).hex() == _sha256_hex(old_text)  # left as the old node wrote it

        # The alias holds for that exact new text only, and for that file only.
        (tmp_path / "0001_first.sql").write_text("-- edited again\nCREATE TABLE t (id bigint);\n")
        with pytest.raises(migrations.MigrationError, match="0001_first.sql was edited"):
            await migrations.migrate(conn, tmp_path)
        (tmp_path / "0001_first.sql").write_text(new_text)
        edited_second = "CREATE TABLE u (id bigint);\n"
        (tmp_path / "0002_second.sql").write_text(edited_second)
        (tmp_path / migrations.SUPERSEDED_FILE).write_text(
            f"0001_first.sql {_sha256_hex(old_text)} {_sha256_hex(new_text)}\n"
            f"0001_first.sql {_sha256_hex(second)} {_sha256_hex(edited_second)}\n"
        )
        with pytest.raises(migrations.MigrationError, match="0002_second.sql was edited"):
            await migrations.migrate(conn, tmp_path)
    finally:
        await conn.close()


@pytest.mark.parametrize(
    "line",
    [
        "0009_missing.sql " + "0" * 64 + " " + "1" * 64,  # no such file
        "0001_first.sql 1234 " + "1" * 64,  # not a SHA-256
        "0001_first.sql " + "0" * 64,  # only one checksum
    ],
)
def test_a_malformed_superseded_list_is_refused(tmp_path: Path, line: str) -> None:
    (tmp_path / "0001_first.sql").write_text("CREATE TABLE t (id int);")
    (tmp_path / migrations.SUPERSEDED_FILE).write_text(line + "\n")
    with pytest.raises(migrations.MigrationError, match="superseded.txt line 1"):
        migrations.discover(tmp_path)


async def test_a_database_migrated_before_the_0003_comment_edit_still_starts(
    database_url: str, tmp_path: Path
) -> None:
    """Deployments that applied 0003_audit.sql before its first comment was
    corrected recorded the old checksum; their nodes must still start."""
    (audit,) = [m for m in migrations.discover() if m.name == "0003_audit.sql"]
    ((old, new),) = audit.superseded
    assert new == audit.checksum and old != new
    conn = await asyncpg.connect(database_url)
    try:
        await conn.execute("UPDATE schema_migrations SET checksum = $1 WHERE version = 3", old)
    finally:
        await conn.close()
    app = App(node_config(database_url, tmp_path))
    await app.start()  # migrates, accepting the old checksum
    try:
        assert app.port > 0
    finally:
        await app.stop()
