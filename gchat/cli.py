"""``gchat``: run a node, migrate, administer, and the reference client.

    gchat serve [--host H] [--port P] [--data-dir D] [--config FILE]
    gchat migrate
    gchat admin bootstrap --agency-code C --agency-name N --name ADMIN
    gchat admin add-official --state FILE --name NAME [--agency ID]
    gchat admin issue-code --state FILE --official ID
    gchat client enroll --url ws://H:P --code CODE --state FILE [--name DEVICE]
    gchat client send --state FILE --to OFFICIAL_ID --message TEXT [--id CLIENT_ID]
    gchat client listen --state FILE [--count N] [--idle SECONDS]

Server-side commands read the same configuration as ``serve`` (environment
``GCHAT_*``, ``--config``). Client commands keep the device's private keys
in the ``--state`` file (created 0600).
"""

import argparse
import asyncio
import json
import sys
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from crypto.identity import IdentityKeyPair
from gchat import app, config
from gchat.client.sdk import Client, ClientError
from gchat.client.state import DeviceState
from gchat.directory import Directory
from gchat.embedded_postgres import EmbeddedPostgres
from protocol.frames import CreateOfficial, IssueCode


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
        directory = Directory(db, cfg.enrolment_code_ttl_seconds)
        agency, official, code = await directory.bootstrap(
            args.agency_code, args.agency_name, args.name
        )
        print(json.dumps({"agency_id": str(agency), "official_id": str(official), "code": code}))

    asyncio.run(_with_database(cfg, work))


async def _client(state_path: Path, work: Callable[[Client], Awaitable[Any]]) -> Any:
    state = DeviceState.load(state_path)
    async with Client(state) as client:
        await client.authenticate()
        try:
            return await work(client)
        finally:
            state.save(state_path)


def cmd_add_official(args: argparse.Namespace) -> None:
    async def work(client: Client) -> None:
        reply = await client.request(CreateOfficial, name=args.name, agency_id=args.agency)
        print(json.dumps({"official_id": str(reply.official_id),
                          "agency_id": str(reply.agency_id)}))

    asyncio.run(_client(args.state, work))


def cmd_issue_code(args: argparse.Namespace) -> None:
    async def work(client: Client) -> None:
        reply = await client.request(IssueCode, official_id=args.official)
        print(json.dumps({"official_id": str(reply.official_id), "code": reply.code,
                          "expires_at": reply.expires_at}))

    asyncio.run(_client(args.state, work))


def cmd_enroll(args: argparse.Namespace) -> None:
    if args.state.exists():
        sys.exit(f"{args.state} exists: refusing to overwrite a device's keys")
    state = DeviceState(url=args.url, identity_seed=IdentityKeyPair.generate().seed)

    async def run() -> None:
        async with Client(state) as client:
            reply = await client.enroll(args.code, args.name)
        state.save(args.state)
        print(json.dumps({"device_id": str(reply.device_id),
                          "official_id": str(reply.official_id)}))

    asyncio.run(run())


def cmd_send(args: argparse.Namespace) -> None:
    async def work(client: Client) -> None:
        reply = await client.send_message(
            args.to, args.message.encode(), args.id or uuid.uuid4().hex
        )
        print(json.dumps({"message_id": str(reply.message_id), "server_time": reply.server_time}))

    asyncio.run(_client(args.state, work))


def cmd_listen(args: argparse.Namespace) -> None:
    async def work(client: Client) -> None:
        count = 0
        async for message in client.messages(idle_timeout=args.idle):
            print(json.dumps({
                "message_id": str(message.message_id),
                "from_official": str(message.sender_official),
                "from_device": str(message.sender_device),
                "sent_at": message.sent_at,
                "text": message.plaintext.decode(errors="replace"),
            }), flush=True)
            count += 1
            if args.count and count >= args.count:
                break

    asyncio.run(_client(args.state, work))


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(prog="gchat", description="G-Chat secure messaging server")
    top.add_argument("--config", type=Path, help="TOML configuration file")
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
    add = admin.add_parser("add-official", help="add an official (as an admin device)")
    add.add_argument("--state", type=Path, required=True)
    add.add_argument("--name", required=True)
    add.add_argument("--agency", type=uuid.UUID)
    add.set_defaults(func=cmd_add_official)
    issue = admin.add_parser("issue-code", help="issue an enrolment code (as an admin device)")
    issue.add_argument("--state", type=Path, required=True)
    issue.add_argument("--official", type=uuid.UUID, required=True)
    issue.set_defaults(func=cmd_issue_code)

    client = commands.add_parser("client", help="the reference client").add_subparsers(
        dest="client_command", required=True
    )
    enroll = client.add_parser("enroll", help="enrol this device with a code")
    enroll.add_argument("--url", required=True)
    enroll.add_argument("--code", required=True)
    enroll.add_argument("--state", type=Path, required=True)
    enroll.add_argument("--name", default="cli")
    enroll.set_defaults(func=cmd_enroll)
    send = client.add_parser("send", help="send a message to an official")
    send.add_argument("--state", type=Path, required=True)
    send.add_argument("--to", type=uuid.UUID, required=True)
    send.add_argument("--message", required=True)
    send.add_argument("--id", help="client message id (for an idempotent retry)")
    send.set_defaults(func=cmd_send)
    listen = client.add_parser("listen", help="print messages as JSON lines, acking each")
    listen.add_argument("--state", type=Path, required=True)
    listen.add_argument("--count", type=int, default=0, help="stop after N messages")
    listen.add_argument("--idle", type=float, default=None, help="stop after N idle seconds")
    listen.set_defaults(func=cmd_listen)
    return top


def main(argv: list[str] | None = None) -> None:
    args = parser().parse_args(argv)
    try:
        args.func(args)
    except ClientError as error:
        sys.exit(f"error: {error}")


if __name__ == "__main__":
    main()
