"""The client's commands: enrol, send, listen, and admin requests over the protocol.

They run as an enrolled device whose keys and sessions live in the
``--state`` file, sealed under ``--key-file`` (default: the state path plus
``.key``, created 0600) or under a passphrase read from the environment
variable named by ``--passphrase-env``.
"""

import argparse
import asyncio
import json
import os
import sys
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from crypto.identity import IdentityKeyPair
from gchat.client.sdk import Client
from gchat.client.state import DeviceState, StateFile
from gchat.client.tls import client_context
from protocol.frames import CreateOfficial, IssueCode


def _store(args: argparse.Namespace) -> StateFile:
    if args.passphrase_env:
        passphrase = os.environ.get(args.passphrase_env)
        if not passphrase:
            sys.exit(f"environment variable {args.passphrase_env} is empty")
        return StateFile(args.state, passphrase=passphrase)
    key_file = args.key_file or args.state.with_name(args.state.name + ".key")
    return StateFile.with_key_file(args.state, key_file)


def _as_device(args: argparse.Namespace, work: Callable[[Client], Awaitable[Any]]) -> None:
    """Connect and authenticate as the stored device, run ``work``, save the state."""
    store = _store(args)

    async def run() -> None:
        client = Client(store.load(), store=store, tls=client_context(args.ca))
        async with client:
            await client.authenticate()
            try:
                await work(client)
            finally:
                client.save()

    asyncio.run(run())


def _print(data: dict[str, Any]) -> None:
    print(json.dumps(data, ensure_ascii=False), flush=True)


def cmd_enroll(args: argparse.Namespace) -> None:
    store = _store(args)
    if store.exists():
        sys.exit(f"{args.state} exists: refusing to overwrite a device's keys")
    state = DeviceState(url=args.url, identity_seed=IdentityKeyPair.generate().seed)

    async def run() -> None:
        async with Client(state, store=store, tls=client_context(args.ca)) as client:
            reply = await client.enroll(args.code, args.name)
        store.save(state)
        _print({"device_id": str(reply.device_id), "official_id": str(reply.official_id)})

    asyncio.run(run())


def cmd_send(args: argparse.Namespace) -> None:
    async def work(client: Client) -> None:
        reply = await client.send_message(
            args.to, args.message.encode(), args.id or uuid.uuid4().hex
        )
        _print({"message_id": str(reply.message_id), "server_time": reply.server_time})

    _as_device(args, work)


def cmd_listen(args: argparse.Namespace) -> None:
    async def work(client: Client) -> None:
        count = 0
        async for message in client.messages(idle_timeout=args.idle):
            _print({
                "message_id": str(message.message_id),
                "from_official": str(message.sender_official),
                "from_device": str(message.sender_device),
                "sent_at": message.sent_at,
                "text": message.plaintext.decode(errors="replace"),
            })
            count += 1
            if args.count and count >= args.count:
                break
        for message_id in client.undecryptable:
            print(f"warning: message {message_id} could not be decrypted", file=sys.stderr)

    _as_device(args, work)


def cmd_add_official(args: argparse.Namespace) -> None:
    async def work(client: Client) -> None:
        reply = await client.request(CreateOfficial, name=args.name, agency_id=args.agency)
        _print({"official_id": str(reply.official_id), "agency_id": str(reply.agency_id)})

    _as_device(args, work)


def cmd_issue_code(args: argparse.Namespace) -> None:
    async def work(client: Client) -> None:
        reply = await client.request(IssueCode, official_id=args.official)
        _print({"official_id": str(reply.official_id), "code": reply.code,
                "expires_at": reply.expires_at})

    _as_device(args, work)


def _device_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--state", type=Path, required=True, help="the device's state file")
    parser.add_argument("--key-file", type=Path, help="key sealing the state (default STATE.key)")
    parser.add_argument("--passphrase-env", help="seal the state with the passphrase in $VAR")
    parser.add_argument("--ca", type=Path, help="trust only this CA (PEM) for wss:// URLs")


def register(commands: Any, admin: Any) -> None:
    """Add the client commands, and the admin commands that run as a device."""
    add = admin.add_parser("add-official", help="add an official (as an admin device)")
    _device_args(add)
    add.add_argument("--name", required=True)
    add.add_argument("--agency", type=uuid.UUID)
    add.set_defaults(func=cmd_add_official)
    issue = admin.add_parser("issue-code", help="issue an enrolment code (as an admin device)")
    _device_args(issue)
    issue.add_argument("--official", type=uuid.UUID, required=True)
    issue.set_defaults(func=cmd_issue_code)

    client = commands.add_parser("client", help="the reference client").add_subparsers(
        dest="client_command", required=True
    )
    enroll = client.add_parser("enroll", help="enrol this device with a code")
    _device_args(enroll)
    enroll.add_argument("--url", required=True)
    enroll.add_argument("--code", required=True)
    enroll.add_argument("--name", default="cli")
    enroll.set_defaults(func=cmd_enroll)
    send = client.add_parser("send", help="send a message to an official")
    _device_args(send)
    send.add_argument("--to", type=uuid.UUID, required=True)
    send.add_argument("--message", required=True)
    send.add_argument("--id", help="client message id (for an idempotent retry)")
    send.set_defaults(func=cmd_send)
    listen = client.add_parser("listen", help="print messages as JSON lines, acking each")
    _device_args(listen)
    listen.add_argument("--count", type=int, default=0, help="stop after N messages")
    listen.add_argument("--idle", type=float, default=None, help="stop after N idle seconds")
    listen.set_defaults(func=cmd_listen)
