"""Forward-only schema migrations: numbered SQL files applied in order.

Every node runs this at start-up; an advisory lock makes the nodes take turns,
so exactly one applies a pending file and the others find it recorded. Each
applied file's SHA-256 is recorded, and a later mismatch stops start-up: an
applied migration was edited, which the rules forbid (add a new file instead).

The one exception is a reviewed edit that changes no SQL (a comment, say):
``migrations/superseded.txt`` lists the checksum a file had before such an
edit and the checksum it has after it. A database that recorded the old one
is accepted as having applied the file while the file is exactly the edited
text; any further edit is refused as before. The record is left as it was,
so a node of the previous version still starts on that database during a
rolling upgrade.
"""

import hashlib
import re
from dataclasses import dataclass
from pathlib import Path

import asyncpg

MIGRATIONS_DIR = Path(__file__).resolve().parents[2] / "migrations"
_LOCK_KEY = 0x6763686174  # "gchat": the advisory lock every node agrees on
_NAME = re.compile(r"^(\d{4})_[a-z0-9_]+\.sql$")
#: ``<file name> <old sha256 hex> <new sha256 hex>`` per line; ``#`` starts a comment.
SUPERSEDED_FILE = "superseded.txt"
_SHA256_HEX = re.compile(r"[0-9a-f]{64}")


class MigrationError(Exception):
    """The schema cannot be brought up to date safely."""


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    sql: str
    #: (before, after) checksums of reviewed edits of this file that changed no SQL.
    superseded: frozenset[tuple[bytes, bytes]] = frozenset()

    @property
    def checksum(self) -> bytes:
        return hashlib.sha256(self.sql.encode()).digest()

    def matches(self, recorded: bytes) -> bool:
        """Whether a database that recorded ``recorded`` applied this file."""
        checksum = self.checksum
        return recorded == checksum or (recorded, checksum) in self.superseded


def _superseded(directory: Path, names: set[str]) -> dict[str, frozenset[tuple[bytes, bytes]]]:
    path = directory / SUPERSEDED_FILE
    if not path.exists():
        return {}
    found: dict[str, set[tuple[bytes, bytes]]] = {}
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        fields = line.split("#", 1)[0].split()
        if not fields:
            continue
        name, *sums = fields
        if name not in names or len(sums) != 2 or not all(map(_SHA256_HEX.fullmatch, sums)):
            raise MigrationError(
                f"{SUPERSEDED_FILE} line {number}: "
                "expected '<migration file> <old sha256 hex> <new sha256 hex>'"
            )
        found.setdefault(name, set()).add((bytes.fromhex(sums[0]), bytes.fromhex(sums[1])))
    return {name: frozenset(sums) for name, sums in found.items()}


def discover(directory: Path = MIGRATIONS_DIR) -> list[Migration]:
    """Read the migration files, checking the numbering has no gaps."""
    paths = sorted(directory.glob("*.sql"))
    superseded = _superseded(directory, {path.name for path in paths})
    found = []
    for path in paths:
        match = _NAME.match(path.name)
        if not match:
            raise MigrationError(f"badly named migration file {path.name}")
        found.append(
            Migration(
                int(match.group(1)),
                path.name,
                path.read_text(),
                superseded.get(path.name, frozenset()),
            )
        )
    for expected, migration in enumerate(found, start=1):
        if migration.version != expected:
            raise MigrationError(f"migration {expected:04d} missing before {migration.name}")
    return found


async def migrate(
    conn: asyncpg.Connection, directory: Path = MIGRATIONS_DIR, *, before: int | None = None
) -> list[str]:
    """Apply pending migrations; returns the names applied by this call.

    ``before``: only those numbered below it, for the tests and load tests
    that fill an older schema and then migrate the rest of the way.
    """
    known = discover(directory)
    migrations = [m for m in known if before is None or m.version < before]
    applied_now = []
    await conn.execute("SELECT pg_advisory_lock($1)", _LOCK_KEY)
    try:
        await conn.execute(
            """CREATE TABLE IF NOT EXISTS schema_migrations (
                   version     integer PRIMARY KEY,
                   name        text NOT NULL,
                   checksum    bytea NOT NULL,
                   applied_at  timestamptz NOT NULL DEFAULT now())"""
        )
        rows = await conn.fetch("SELECT version, name, checksum FROM schema_migrations")
        recorded = {row["version"]: row for row in rows}
        for migration in migrations:
            row = recorded.get(migration.version)
            if row is not None:
                if not migration.matches(bytes(row["checksum"])):
                    raise MigrationError(f"{migration.name} was edited after it was applied")
                continue
            async with conn.transaction():
                await conn.execute(migration.sql)
                await conn.execute(
                    "INSERT INTO schema_migrations (version, name, checksum) VALUES ($1, $2, $3)",
                    migration.version,
                    migration.name,
                    migration.checksum,
                )
            applied_now.append(migration.name)
        if applied_now:
            # New tables and indexes have no statistics until autovacuum (off
            # on some deployments, behind after a bulk load) gets to them:
            # plans made without them fell off a cliff.
            await conn.execute("ANALYZE")
        unknown = set(recorded) - {m.version for m in known}
        if unknown:
            raise MigrationError(f"database has migrations this code lacks: {sorted(unknown)}")
    finally:
        await conn.execute("SELECT pg_advisory_unlock($1)", _LOCK_KEY)
    return applied_now


async def applied(conn: asyncpg.Connection) -> list[str]:
    """Names of the migrations recorded in this database, in order (none: not G-Chat's)."""
    if not await conn.fetchval("SELECT to_regclass('schema_migrations') IS NOT NULL"):
        return []
    rows = await conn.fetch("SELECT name FROM schema_migrations ORDER BY version")
    return [row["name"] for row in rows]


async def pending(conn: asyncpg.Connection, directory: Path = MIGRATIONS_DIR) -> int:
    """How many of this code's migrations the database lacks (for /readyz).

    Migrations a newer version applied (during a rolling upgrade) do not
    count: a node of the old version stays ready while they are additive.
    """
    exists = await conn.fetchval("SELECT to_regclass('schema_migrations') IS NOT NULL")
    recorded = (
        {row["version"] for row in await conn.fetch("SELECT version FROM schema_migrations")}
        if exists
        else set()
    )
    return sum(1 for m in discover(directory) if m.version not in recorded)
