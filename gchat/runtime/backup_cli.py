"""``gchat backup`` and ``gchat restore``: the host-side commands of ``gchat.runtime.backup``.

They read the same configuration as ``serve`` (``GCHAT_*``, ``--config``,
``--data-dir``), so they find the same database (embedded or not) and the
same keys folder. The embedded cluster is started for the command when the
node is not running and stopped again afterwards; restore refuses to run
while a node uses the embedded cluster.
"""

import argparse
import asyncio
import os
import sys
from collections.abc import Callable
from pathlib import Path

import asyncpg

from gchat.config import Config
from gchat.runtime import backup
from gchat.runtime.embedded_postgres import EmbeddedPostgres
from gchat.store import migrations

ConfigFrom = Callable[[argparse.Namespace], Config]


def _passphrase(args: argparse.Namespace) -> str | None:
    if not args.passphrase_env:
        return None
    value = os.environ.get(args.passphrase_env)
    if not value:
        raise backup.BackupError(f"environment variable {args.passphrase_env} is empty")
    return value


async def _with_dsn(
    cfg: Config, work: Callable[[str, backup.Tools], backup.Manifest], *, idle_cluster: bool = False
) -> backup.Manifest:
    """Run ``work(dsn, tools)`` in a thread against the configured database.

    ``idle_cluster``: refuse when a node already runs the embedded cluster.
    """
    if cfg.database_url:
        return await asyncio.to_thread(work, cfg.database_url, backup.find_tools())
    embedded = EmbeddedPostgres(cfg.data_dir / "postgres")
    dsn = await embedded.start()
    try:
        if idle_cluster and embedded.adopted:
            raise backup.BackupError(
                f"a node is running on {cfg.data_dir}: stop it before restoring"
            )
        return await asyncio.to_thread(work, dsn, backup.find_tools(embedded.programs_dir))
    finally:
        if not embedded.adopted:
            await embedded.stop()


async def _applied(dsn: str) -> list[str]:
    conn = await asyncpg.connect(dsn, timeout=10)
    try:
        return await migrations.applied(conn)
    finally:
        await conn.close()


def cmd_backup(args: argparse.Namespace, config_from: ConfigFrom) -> None:
    cfg = config_from(args)
    passphrase = _passphrase(args)

    def work(dsn: str, tools: backup.Tools) -> backup.Manifest:
        applied = asyncio.run(_applied(dsn))
        if not applied:
            raise backup.BackupError("the database holds no G-Chat data: nothing to back up")
        return backup.create(
            dsn, cfg.key_directory, cfg.data_dir, args.output, applied, passphrase, tools
        )

    manifest = asyncio.run(_with_dsn(cfg, work))
    sealed = "encrypted" if passphrase else "NOT encrypted: keep it on an encrypted volume"
    print(
        f"backup written to {args.output} (mode 0600, {sealed}); "
        f"schema {manifest.migrations[-1]}, keys {', '.join(manifest.keys)}"
    )


def cmd_restore(args: argparse.Namespace, config_from: ConfigFrom) -> None:
    cfg = config_from(args)
    passphrase = _passphrase(args)
    if not args.input.exists():  # before starting an embedded cluster for nothing
        raise backup.BackupError(f"{args.input} does not exist")

    def work(dsn: str, tools: backup.Tools) -> backup.Manifest:
        in_use = bool(asyncio.run(_applied(dsn)))
        return backup.restore(
            args.input,
            dsn,
            cfg.key_directory,
            in_use,
            passphrase,
            args.force,
            tools,
            args.keys_only,
            (m.name for m in migrations.discover()),
        )

    manifest = asyncio.run(_with_dsn(cfg, work, idle_cluster=True))
    what = "the keys of" if args.keys_only else ""
    print(
        f"restored {what}{' ' if what else ''}{args.input} (G-Chat {manifest.version}, "
        f"taken {manifest.created_at}) into {cfg.data_dir}; start the node next"
    )


def register(
    commands: "argparse._SubParsersAction[argparse.ArgumentParser]", config_from: ConfigFrom
) -> None:
    """Add ``backup`` and ``restore`` to the server's command line."""

    def run(command: Callable[[argparse.Namespace, ConfigFrom], None]) -> Callable[..., None]:
        def call(args: argparse.Namespace) -> None:
            try:
                command(args, config_from)
            except backup.BackupError as error:
                sys.exit(f"error: {error}")

        return call

    make = commands.add_parser(
        "backup", help="write the database and the node's keys to one file (0600)"
    )
    make.add_argument("--output", "-o", type=Path, required=True, help="the file to create")
    make.add_argument("--passphrase-env", help="encrypt to the passphrase in $VAR")
    make.add_argument("--data-dir", type=Path)
    make.set_defaults(func=run(cmd_backup))

    back = commands.add_parser(
        "restore", help="put a backup's database and keys back (the node stopped)"
    )
    back.add_argument("--input", "-i", type=Path, required=True, help="the backup file")
    back.add_argument("--passphrase-env", help="the backup's passphrase is in $VAR")
    back.add_argument(
        "--force",
        action="store_true",
        help="replace a database that holds data and keys that differ",
    )
    back.add_argument(
        "--keys-only", action="store_true", help="put back only the keys (the database survived)"
    )
    back.add_argument("--data-dir", type=Path)
    back.set_defaults(func=run(cmd_restore))
