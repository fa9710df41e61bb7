"""``gchat``: run a node, migrate, administer, and the reference client.

    gchat serve [--host H] [--port P] [--data-dir D] [--config FILE]
    gchat migrate
    gchat admin bootstrap --agency-code C --agency-name N --name ADMIN
    gchat admin add-official --state FILE --name NAME [--agency ID]
    gchat admin issue-code --state FILE --official ID
    gchat admin agency|official|role|device|code|policy ...  (see gchat.client.admin_cli)
    gchat admin search|import|export ...
    gchat client enroll --url ws://H:P --code CODE --state FILE [--name DEVICE]
    gchat client send --state FILE --to OFFICIAL_ID --message TEXT [--id CLIENT_ID]
    gchat client listen --state FILE [--count N] [--idle SECONDS]

Server-side commands read the same configuration as ``serve`` (environment
``GCHAT_*``, ``--config``). The device commands (``client ...`` and the
admin requests made over the protocol) live in ``gchat.client.cli``.
"""

import argparse
import asyncio
import json
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from gchat import app, config
from gchat.audit.log import AuditLog
from gchat.directory.service import Directory
from gchat.runtime.embedded_postgres import EmbeddedPostgres
from gchat.runtime.version import version


def _config(args: argparse.Namespace) -> config.Config:
    return config.load(
        toml_path=args.config,
        overrides={
            "host": getattr(args, "host", None),
            "port": getattr(args, "port", None),
            "data_dir": getattr(args, "data_dir", None),
        },
    )


async def _with_database(
    cfg: config.Config, work: Callable[[Any], Awaitable[None]]
) -> None:
    """Open the configured database (embedded or not) for a host-side command.

    An embedded cluster that a running node already started is left running.
    """
    pgdata = EmbeddedPostgres(cfg.data_dir / "postgres").pgdata
    embedded_running = not cfg.database_url and (pgdata / "postmaster.pid").exists()
    db, embedded = await app.open_database(cfg)
    try:
        await work(db)
    finally:
        await db.close()
        if embedded is not None and not embedded_running:
            await embedded.stop()


def cmd_serve(args: argparse.Namespace) -> None:
    app.main(_config(args))


def cmd_migrate(args: argparse.Namespace) -> None:
    async def work(db: Any) -> None:
        print("schema up to date")

    asyncio.run(_with_database(_config(args), work))


def cmd_bootstrap(args: argparse.Namespace) -> None:
    cfg = _config(args)

    async def work(db: Any) -> None:
        directory = Directory(
            db, cfg.enrolment_code_ttl_seconds, AuditLog(enabled=cfg.audit_enabled)
        )
        agency, official, code = await directory.bootstrap(
            args.agency_code, args.agency_name, args.name
        )
        print(json.dumps({"agency_id": str(agency), "official_id": str(official), "code": code}))

    asyncio.run(_with_database(cfg, work))


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(prog="gchat", description="G-Chat secure messaging server")
    top.add_argument("--config", type=Path, help="TOML configuration file")
    top.add_argument("--version", action="version", version=f"gchat {version()}")
    commands = top.add_subparsers(dest="command", required=True)

    serve = commands.add_parser("serve", help="run a node")
    serve.add_argument("--host")
    serve.add_argument("--port", type=int)
    serve.add_argument("--data-dir", type=Path)
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
    boot.set_defaults(func=cmd_bootstrap)
    # The client commands live with the client; only they load its code.
    from gchat.client import cli as client_cli

    client_cli.register(commands, admin)
    from gchat.client import audit_cli

    audit_cli.register(commands)
    from gchat.client import admin_cli  # directory administration (as an admin device)

    admin_cli.register(admin)
    return top


def main(argv: list[str] | None = None) -> None:
    args = parser().parse_args(argv)
    try:
        args.func(args)
    except Exception as error:
        if type(error).__name__ != "ClientError":
            raise
        sys.exit(f"error: {error}")


if __name__ == "__main__":
    main()
