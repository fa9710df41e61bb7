"""The client's commands: enrol, send, listen, groups, safety numbers, admin requests.

They run as an enrolled device whose keys and sessions live in the
``--state`` file, sealed under ``--key-file`` (default: the state path plus
``.key``, created 0600) or under a passphrase read from the environment
variable named by ``--passphrase-env``.

A person's mistake, or a refusal the person must act on (a verified
peer's devices changed, the device was revoked), ends the command with one
plain sentence on stderr and a non-zero status, never a traceback.
``listen`` exits 3 when the device was revoked (close code 4403) and 4 when
another connection of the same device took over (4409).
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

import segno

from crypto.errors import CryptoError
from crypto.identity import IdentityKeyPair
from gchat.client import files
from gchat.client.cli_errors import UserError
from gchat.client.events import Received
from gchat.client.reconnecting import Reconnecting
from gchat.client.rpc import ClientError
from gchat.client.sdk import Client
from gchat.client.sessions import DeviceChangeBlocked
from gchat.client.state import DeviceState, StateFile, default_state_path
from gchat.client.tls import client_context, plaintext_warning


def _store(args: argparse.Namespace) -> StateFile:
    if args.state is None:
        args.state = default_state_path()
    if args.passphrase_env:
        passphrase = os.environ.get(args.passphrase_env)
        if not passphrase:
            sys.exit(f"environment variable {args.passphrase_env} is empty")
        return StateFile(args.state, passphrase=passphrase)
    key_file = args.key_file or args.state.with_name(args.state.name + ".key")
    return StateFile.with_key_file(args.state, key_file)


def _run(main: Awaitable[None]) -> None:
    """Run a command; what the person must act on ends it with one sentence."""
    try:
        asyncio.run(main)  # type: ignore[arg-type]
    except DeviceChangeBlocked as error:
        raise UserError(f"refused: {error}") from None
    except CryptoError as error:
        raise UserError(f"refused: the server's answer did not verify ({error})") from None
    # Connection, TLS and file errors: gchat.client.cli_errors words them at the entry point.


def _as_device(
    args: argparse.Namespace,
    work: Callable[[Client], Awaitable[Any]],
    deliveries: bool = True,
) -> None:
    """Connect and authenticate as the stored device, run ``work``, save the state.

    ``deliveries`` False: a request-only connection (admin and audit tools),
    which the device's own use elsewhere does not displace mid-import.
    """
    store = _store(args)

    async def run() -> None:
        client = Client(store.load(), store=store, tls=client_context(args.ca))
        async with client:
            await client.authenticate(deliveries=deliveries)
            try:
                await work(client)
            finally:
                client.save()

    _run(run())


def _print(data: dict[str, Any]) -> None:
    print(json.dumps(data, ensure_ascii=False), flush=True)


def cmd_enroll(args: argparse.Namespace) -> None:
    store = _store(args)
    if store.exists():
        sys.exit(f"{args.state} exists: refusing to overwrite a device's keys")
    state = DeviceState(url=args.url, identity_seed=IdentityKeyPair.generate().seed)
    if warning := plaintext_warning(args.url):
        print(warning, file=sys.stderr)

    async def run() -> None:
        async with Client(state, store=store, tls=client_context(args.ca)) as client:
            reply = await client.enroll(args.code, args.name)
        store.save(state)
        _print({"device_id": str(reply.device_id), "official_id": str(reply.official_id)})

    _run(run())


def _body(
    args: argparse.Namespace,
    client: Client,
    recipient: uuid.UUID | None = None,
    conversation_id: uuid.UUID | None = None,
) -> Awaitable[bytes]:
    """The message body: the text, or (``--file``) the file uploaded and its reference."""

    async def make() -> bytes:
        if args.file is None:
            if args.message is None:
                raise UserError("give --message, --file or both")
            return str(args.message).encode()
        if not args.file.is_file():
            raise UserError(f"{args.file} is not a readable file")
        spool = await asyncio.to_thread(files.Spool, args.file)
        try:
            await files.upload(
                client.rpc, spool, recipient=recipient, conversation_id=conversation_id
            )
        except files.TransferError as error:
            raise UserError(str(error)) from None
        finally:
            spool.discard()
        return files.encode_body(spool.reference(), args.message or "")

    return make()


def cmd_send(args: argparse.Namespace) -> None:
    async def work(client: Client) -> None:
        body = await _body(args, client, recipient=args.to)
        reply = await client.send_message(args.to, body, args.id or uuid.uuid4().hex)
        _print({"message_id": str(reply.message_id), "server_time": reply.server_time})

    _as_device(args, work)


def _message_line(message: Received) -> dict[str, Any]:
    line: dict[str, Any] = {
        "kind": message.kind,
        "conversation_id": str(message.conversation_id) if message.conversation_id else None,
        "message_id": str(message.message_id),
        "from_official": str(message.sender_official),
        "from_device": str(message.sender_device),
        "sent_at": message.sent_at,
    }
    try:
        text, reference = files.decode_body(message.plaintext)
    except ValueError as error:
        text, reference = f"(a file reference that could not be read: {error})", None
    line["text"] = text
    if reference is not None:
        line["file"] = {
            "name": reference.name,
            "size": reference.size,
            "media_type": reference.media_type,
        }
    if message.recipient is not None:
        # Sent by this official from another device: the chat it belongs to (PROTOCOL.md §E6a).
        line["to_official"] = str(message.recipient)
    return line


async def _save_file(
    rc: Reconnecting, message: Received, line: dict[str, Any], folder: Path
) -> None:
    """Fetch, check and save a message's file; the line says where, or why not."""
    _, reference = files.decode_body(message.plaintext)
    assert reference is not None

    async def fetch(client: Client) -> Path:
        return await files.download(client.rpc, reference, folder)

    try:
        line["file"]["saved_to"] = str(await rc.call(fetch))
    except (files.TransferError, CryptoError) as error:
        line["file"]["refused"] = f"the file was not saved: {error}"


#: listen's exit status and sentence per final close code.
_FINAL = {
    4403: (3, "this device was revoked; enrol it again with a new code"),
    4409: (4, "another connection of this device took over; this one stopped"),
}


def cmd_listen(args: argparse.Namespace) -> None:
    """Print messages and events as JSON lines; reconnect until told to stop.

    A dropped connection (a node restarting with 1001, a network failure) is
    retried with backoff; 4403 and 4409 end it with one sentence.
    """
    store = _store(args)

    async def run() -> int:
        state = store.load()
        rc = Reconnecting(state, [state.url], store=store, tls=client_context(args.ca))
        await rc.start()
        loop = asyncio.get_running_loop()
        idle_since = loop.time()
        count = shown = 0
        try:
            while True:
                for event in rc.events[shown:]:
                    _print(
                        {
                            "event": event.kind,
                            "detail": event.detail,
                            "message_id": str(event.message_id) if event.message_id else None,
                            "official_id": str(event.official_id) if event.official_id else None,
                            "device_id": str(event.device_id) if event.device_id else None,
                        }
                    )
                shown = len(rc.events)
                try:
                    message = await asyncio.wait_for(rc.received.get(), 0.2)
                except TimeoutError:
                    if rc.done:
                        break
                    if args.idle is not None and loop.time() - idle_since >= args.idle:
                        return 0
                    continue
                idle_since = loop.time()
                line = _message_line(message)
                if "file" in line and args.save_dir is not None:
                    await _save_file(rc, message, line, args.save_dir)
                _print(line)
                count += 1
                if args.count and count >= args.count:
                    return 0
        finally:
            await rc.close()
            store.save(state)
        if rc.final_close_code in _FINAL:
            status, sentence = _FINAL[rc.final_close_code]
            print(sentence, file=sys.stderr)
            return status
        print(f"the server refused this device: {rc.error}", file=sys.stderr)
        return 5

    status = asyncio.run(run())
    if status:
        sys.exit(status)


def _print_safety_number(official: uuid.UUID, shown: str, qr: bool) -> None:
    print(f"Safety number with official {official}:")
    print(shown, flush=True)
    if qr:
        # Scanned by the other side's camera: the digits alone, nothing else.
        segno.make(shown.replace(" ", ""), error="m").terminal(compact=True)


def cmd_safety_number(args: argparse.Namespace) -> None:
    async def work(client: Client) -> None:
        from crypto.safety_number import format_safety_number

        number = format_safety_number(await client.safety_number(args.peer))
        _print_safety_number(args.peer, number, args.qr)

    _as_device(args, work)


def cmd_verify(args: argparse.Namespace) -> None:
    async def work(client: Client) -> None:
        shown = await client.verify(args.peer)
        print(f"Verified official {args.peer} with safety number {shown}.")

    _as_device(args, work)


def cmd_accept_devices(args: argparse.Namespace) -> None:
    async def work(client: Client) -> None:
        await client.sessions.sync_devices(args.peer)
        try:
            new = client.accept_devices(args.peer)
        except ValueError as error:
            sys.exit(str(error))
        print(f"Accepted {len(new)} new device(s) of official {args.peer}.")

    _as_device(args, work)


def _event_line(event: Any) -> dict[str, Any]:
    return {
        "conversation_id": str(event.conversation_id),
        "title": event.title,
        "kind": event.kind,
        "seq": event.seq,
        "members": [str(m.official_id) for m in event.members or []],
    }


def _group_errors(work: Callable[[Client], Awaitable[None]]) -> Callable[[Client], Awaitable[None]]:
    async def guarded(client: Client) -> None:
        try:
            await work(client)
        except ClientError as error:
            sys.exit(f"refused by the server: {error.frame.message} ({error.code})")

    return guarded


def cmd_group(args: argparse.Namespace) -> None:
    async def work(client: Client) -> None:
        action = args.group_command
        if action == "create":
            event = await client.create_group(args.title, args.member)
            _print(_event_line(event))
        elif action == "add":
            _print(_event_line(await client.add_members(args.conversation, args.member)))
        elif action == "remove":
            _print(_event_line(await client.remove_members(args.conversation, args.member)))
        elif action == "send":
            body = await _body(args, client, conversation_id=args.conversation)
            reply = await client.send_group(args.conversation, body, args.id or uuid.uuid4().hex)
            _print({"message_id": str(reply.message_id), "server_time": reply.server_time})
        else:  # list: the members of one group, as the signed state says
            _print(_event_line(await client.groups.refresh(args.conversation)))

    _as_device(args, _group_errors(work))


def cmd_conversations(args: argparse.Namespace) -> None:
    """The conversations this device knows (its verified views), one JSON line each."""
    store = _store(args)
    client = Client(store.load(), store=store)
    for cid in sorted(client.state.conversations, key=str):
        view = client.conversation(cid)
        if view is not None:
            _print(_event_line(view))


def _device_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--state",
        type=Path,
        help="the device's state file (default: $XDG_CONFIG_HOME/gchat/"
        "device.state, or ~/.config/gchat/device.state)",
    )
    parser.add_argument("--key-file", type=Path, help="key sealing the state (default STATE.key)")
    parser.add_argument("--passphrase-env", help="seal the state with the passphrase in $VAR")
    parser.add_argument("--ca", type=Path, help="trust only this CA (PEM) for wss:// URLs")


def register(commands: Any, admin: Any) -> None:
    """Add the client commands, and the admin commands that run as a device."""
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
    send.add_argument("--message", help="the text (with --file: its caption)")
    send.add_argument("--file", type=Path, help="send this file, end-to-end encrypted")
    send.add_argument("--id", help="client message id (for an idempotent retry)")
    send.set_defaults(func=cmd_send)
    listen = client.add_parser("listen", help="print messages as JSON lines, acking each")
    _device_args(listen)
    listen.add_argument("--count", type=int, default=0, help="stop after N messages")
    listen.add_argument("--idle", type=float, default=None, help="stop after N idle seconds")
    listen.add_argument(
        "--save-dir", type=Path, help="download, check and save received files here"
    )
    listen.set_defaults(func=cmd_listen)
    for name, func, text in (
        (
            "safety-number",
            cmd_safety_number,
            "print the safety number with an official (and a QR code) to compare",
        ),
        ("verify", cmd_verify, "mark an official's current devices verified"),
        (
            "accept-devices",
            cmd_accept_devices,
            "accept a verified official's changed devices (after checking with them)",
        ),
    ):
        peer = client.add_parser(name, help=text)
        _device_args(peer)
        peer.add_argument("--with", dest="peer", type=uuid.UUID, required=True, metavar="OFFICIAL")
        if name == "safety-number":
            peer.add_argument(
                "--no-qr", dest="qr", action="store_false", help="print the digits only"
            )
        peer.set_defaults(func=func)
    conversations = client.add_parser("conversations", help="list the conversations known here")
    _device_args(conversations)
    conversations.set_defaults(func=cmd_conversations)
    group = client.add_parser("group", help="group conversations").add_subparsers(
        dest="group_command", required=True
    )
    create = group.add_parser("create", help="create a group with you as admin")
    create.add_argument("--title", required=True)
    create.add_argument(
        "--member",
        type=uuid.UUID,
        action="append",
        default=[],
        metavar="OFFICIAL",
        help="a member (repeat)",
    )
    for name, text in (("add", "add members"), ("remove", "remove members")):
        change = group.add_parser(name, help=text)
        change.add_argument("--conversation", type=uuid.UUID, required=True)
        change.add_argument(
            "--member",
            type=uuid.UUID,
            action="append",
            required=True,
            metavar="OFFICIAL",
            help="an official (repeat)",
        )
    send_group = group.add_parser("send", help="send a message to a group")
    send_group.add_argument("--conversation", type=uuid.UUID, required=True)
    send_group.add_argument("--message", help="the text (with --file: its caption)")
    send_group.add_argument("--file", type=Path, help="send this file, end-to-end encrypted")
    send_group.add_argument("--id", help="client message id (for an idempotent retry)")
    listing = group.add_parser("list", help="a group's members (its signed state)")
    listing.add_argument("--conversation", type=uuid.UUID, required=True)
    for sub in group.choices.values():
        _device_args(sub)
        sub.set_defaults(func=cmd_group)
