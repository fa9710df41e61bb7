"""``gchat``: run a node, migrate, administer, and the reference client.

    gchat [--debug] [--config FILE] COMMAND ...
    gchat serve [--host H] [--port P] [--data-dir D] [--workers N]
    gchat migrate
    gchat admin bootstrap --agency-code C --agency-name N --name ADMIN
                          [--new-data-dir] [--force] [--json]
    gchat admin agency|official|role|device|code|policy ...  (see gchat.client.admin_cli)
    gchat admin search|import|export ...     (import/export: gchat.client.admin_import)
    gchat client enroll --url ws://H:P --code CODE [--state FILE] [--name DEVICE]
    gchat client send [--state FILE] --to OFFICIAL_ID --message TEXT [--id CLIENT_ID]
    gchat client listen [--state FILE] [--count N] [--idle SECONDS]
    gchat audit ...                          (see gchat.client.audit_cli)

Server-side commands read the same configuration as ``serve`` (environment
``GCHAT_*``, ``--config``). The device commands (``client ...`` and the
admin requests made over the protocol) live in ``gchat.client``; without
``--state`` a device's state is ``$XDG_CONFIG_HOME/gchat/device.state``.
A person's mistake ends in one line and exit status 1
(``gchat.client.cli_errors``); ``--debug`` shows the traceback instead.
"""

import argparse
import asyncio
import json
import os
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import asyncpg

from gchat import config
from gchat.audit.log import AuditLog
from gchat.directory.service import Directory
from gchat.runtime.embedded_postgres import EmbeddedPostgres
from gchat.runtime.version import version
from gchat.store import directory as store


def _config(args: argparse.Namespace) -> config.Config:
    from gchat.client.cli_errors import UserError

    try:
        return config.load(
            toml_path=args.config,
            overrides={
                "host": getattr(args, "host", None),
                "port": getattr(args, "port", None),
                "data_dir": getattr(args, "data_dir", None),
                "workers": getattr(args, "workers", None),
            },
        )
    except ValueError as error:
        raise UserError(f"bad configuration: {error}") from None
    except OSError as error:
        raise UserError(
            f"cannot read the configuration file {error.filename}: {error.strerror}"
        ) from None


def _database_name(cfg: config.Config) -> str:
    """Where a host-side command's data is, for the person running it (no password)."""
    if not cfg.database_url:
        return f"the embedded PostgreSQL under {cfg.data_dir.resolve() / 'postgres'}"
    parts = urlsplit(cfg.database_url)
    host = parts.hostname or "localhost"
    return f"PostgreSQL database {parts.path.lstrip('/') or '(default)'} on {host}"


async def _with_database(cfg: config.Config, work: Callable[[Any], Awaitable[None]]) -> None:
    """Open the configured database (embedded or not) for a host-side command.

    An embedded cluster that a running node already started is left running.
    """
    from gchat import app  # the composition root: only host-side commands pay its imports
    from gchat.client.cli_errors import UserError

    pgdata = EmbeddedPostgres(cfg.data_dir / "postgres").pgdata
    embedded_running = not cfg.database_url and (pgdata / "postmaster.pid").exists()
    try:
        db, embedded = await app.open_database(cfg)
    except (OSError, asyncpg.PostgresError) as error:
        raise UserError(f"cannot open {_database_name(cfg)}: {error}") from None
    try:
        await work(db)
    finally:
        await db.close()
        if embedded is not None and not embedded_running:
            await embedded.stop()


def cmd_serve(args: argparse.Namespace) -> None:
    from gchat import app, workers
    from gchat.client.cli_errors import UserError

    cfg = _config(args)
    if cfg.workers > 1:
        try:
            workers.main(cfg, args.config)
        except workers.WorkerFailed as error:
            raise UserError(str(error)) from None
        return
    ready_fd = args.ready_fd
    if ready_fd is not None:
        workers.die_with_parent()

    def ready() -> None:  # tells the parent of --workers that this worker serves
        os.write(ready_fd, b"ready\n")
        os.close(ready_fd)

    app.main(cfg, ready if ready_fd is not None else None)


def cmd_migrate(args: argparse.Namespace) -> None:
    async def work(db: Any) -> None:
        print("schema up to date")

    asyncio.run(_with_database(_config(args), work))


def cmd_bootstrap(args: argparse.Namespace) -> None:
    """Create the first agency and superadmin, once, in the node's own database.

    Why so careful: run from another folder it would start a second embedded
    database whose code the running node rejects, and run twice it would make
    a second top-level agency with its own all-powerful superadmin.
    """
    from gchat.client.cli_errors import UserError

    cfg = _config(args)
    pgdata = EmbeddedPostgres(cfg.data_dir / "postgres").pgdata
    if not cfg.database_url and not pgdata.exists() and not args.new_data_dir:
        raise UserError(
            f"no node has run with the data folder {cfg.data_dir.resolve()}: run this where "
            "the node runs, or give its --data-dir (or GCHAT_DATA_DIR / "
            "GCHAT_DATABASE_URL); --new-data-dir creates a new one"
        )

    async def work(db: Any) -> None:
        if await store.code_taken(db.pool, args.agency_code):
            raise UserError(
                f"an agency with the code {args.agency_code} exists already: "
                "choose another --agency-code"
            )
        existing = await store.list_agencies(db.pool, None)
        if existing and not args.force:
            raise UserError(
                f"{_database_name(cfg)} is bootstrapped already ({len(existing)} agencies): "
                "its superadmin adds agencies and officials with gchat admin; "
                "--force creates another top-level agency and superadmin"
            )
        directory = Directory(
            db, cfg.enrolment_code_ttl_seconds, AuditLog(enabled=cfg.audit_enabled)
        )
        agency, official, code = await directory.bootstrap(
            args.agency_code, args.agency_name, args.name
        )
        print(
            f"bootstrap: used {_database_name(cfg)} (data folder {cfg.data_dir.resolve()})",
            file=sys.stderr,
        )
        if args.json:
            print(
                json.dumps({"agency_id": str(agency), "official_id": str(official), "code": code})
            )
            return
        print(f"created agency {args.agency_code} and its superadmin {args.name}")
        print(f"enrolment code for {args.name}: {code}")
        print(
            "enrol the superadmin's device with: gchat client enroll --url ws://HOST:PORT "
            f"--code {code} --state admin.state"
        )

    asyncio.run(_with_database(cfg, work))


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(prog="gchat", description="G-Chat secure messaging server")
    top.add_argument("--config", type=Path, help="TOML configuration file")
    top.add_argument("--version", action="version", version=f"gchat {version()}")
    top.add_argument("--debug", action="store_true", help="show tracebacks of errors")
    commands = top.add_subparsers(dest="command", required=True)

    serve = commands.add_parser("serve", help="run a node")
    serve.add_argument("--host")
    serve.add_argument("--port", type=int)
    serve.add_argument("--data-dir", type=Path)
    serve.add_argument(
        "--workers", type=int, help="node processes sharing the port (default 1; GCHAT_WORKERS)"
    )
    serve.add_argument("--ready-fd", type=int, help=argparse.SUPPRESS)  # set by --workers
    serve.set_defaults(func=cmd_serve)

    migrate = commands.add_parser("migrate", help="apply pending database migrations")
    migrate.add_argument("--data-dir", type=Path)
    migrate.set_defaults(func=cmd_migrate)

    admin = commands.add_parser("admin", help="administration").add_subparsers(
        dest="admin_command", required=True
    )
    boot = admin.add_parser("bootstrap", help="create the first agency and superadmin (host)")
    boot.add_argument("--agency-code", required=True)
    boot.add_argument("--agency-name", required=True)
    boot.add_argument("--name", required=True, help="the superadmin's name")
    boot.add_argument("--data-dir", type=Path)
    boot.add_argument(
        "--new-data-dir", action="store_true", help="allow a data folder no node has used yet"
    )
    boot.add_argument(
        "--force",
        action="store_true",
        help="bootstrap again: another top-level agency and superadmin",
    )
    boot.add_argument("--json", action="store_true", help="print JSON")
    boot.set_defaults(func=cmd_bootstrap)
    from gchat.runtime import backup_cli

    backup_cli.register(commands, _config)
    # The client commands live with the client; only they load its code.
    from gchat.client import cli as client_cli

    client_cli.register(commands, admin)
    from gchat.client import audit_cli

    audit_cli.register(commands)
    from gchat.client import admin_cli  # directory administration (as an admin device)

    admin_cli.register(admin)
    return top


def main(argv: list[str] | None = None) -> None:
    """Parse and run; a person's mistake ends in one line (``--debug``: a traceback)."""
    args = parser().parse_args(argv)
    from gchat.client import cli_errors

    cli_errors.run(
        lambda: args.func(args), debug=args.debug, url=lambda: getattr(args, "url", None)
    )


if __name__ == "__main__":
    main()
