"""A person's mistake at the command line becomes one plain sentence.

Why: the people running ``gchat`` are ministry IT staff and auditors. A
mistyped URL, a server that is down or a lost key file must tell them what
went wrong and what to do, in one line on stderr with exit status 1, never a
Python traceback (``gchat --debug ...`` shows it for developers). Usage
mistakes are argparse's: exit status 2.

Commands raise ``UserError`` for mistakes they recognise themselves; the
entry point (``gchat.cli.main``) turns every other known exception into a
sentence with ``explain``.
"""

import errno
import os
import socket
import ssl
import sys
import tomllib
from collections.abc import Callable

from websockets.exceptions import (
    ConnectionClosed,
    InvalidHandshake,
    InvalidStatus,
    InvalidURI,
)


class UserError(Exception):
    """A mistake the person can fix; ``str()`` is the sentence shown to them."""


def _server(url: str | None) -> str:
    return f"the server at {url}" if url else "the server"


def explain(error: BaseException, url: str | None = None) -> str | None:
    """The sentence for ``error``, or None when it is not a known mistake (a bug).

    ``url`` is the server address the command used, when it knows it.
    """
    from gchat.client.errors import ClientSideError
    from gchat.client.rpc import ClientError  # the SDK is heavy; load only when needed
    from gchat.client.state import StateFileError

    if isinstance(error, UserError | StateFileError | ClientSideError):
        return str(error)
    if isinstance(error, ClientError):
        return f"the server refused: {error.frame.message} ({error.code})"
    if isinstance(error, InvalidURI):
        return (
            f"{error.uri!r} is not a WebSocket address: "
            "use ws://HOST:PORT, or wss://HOST:PORT for a server with TLS"
        )
    if isinstance(error, ssl.SSLCertVerificationError):
        return (
            f"{_server(url)} presented a certificate this machine does not trust "
            f"({error.verify_message}): give the CA certificate with --ca FILE"
        )
    if isinstance(error, ssl.SSLError):
        return (
            f"the TLS handshake with {_server(url)} failed ({error.reason}): "
            "use ws:// for a server without TLS, wss:// for one with TLS"
        )
    if isinstance(error, InvalidStatus):
        return (
            f"{_server(url)} answered HTTP {error.response.status_code} instead of "
            "opening a WebSocket: check the URL (host, port and path)"
        )
    if isinstance(error, InvalidHandshake | ConnectionResetError | ConnectionAbortedError):
        if url and url.startswith("wss://"):
            return (
                f"{_server(url)} dropped the connection during the TLS handshake: "
                "if it does not serve TLS, use " + "ws://" + url.removeprefix("wss://")
            )
        return (
            f"{_server(url)} dropped the connection while it was being opened: "
            "is it a G-Chat node, and does it want wss:// (TLS)?"
        )
    if isinstance(error, ConnectionRefusedError):
        return (
            f"cannot reach {_server(url)} (connection refused): "
            "is it running, and are the host and port right?"
        )
    if isinstance(error, socket.gaierror):
        return f"cannot find the host of {_server(url)}: check the URL ({error.strerror})"
    if isinstance(error, TimeoutError):
        return f"{_server(url)} did not answer in time: is the address right?"
    if isinstance(error, ConnectionClosed):
        return f"{_server(url)} closed the connection ({error}); try again"
    if isinstance(error, tomllib.TOMLDecodeError):
        return f"the configuration file is not valid TOML: {error}"
    if isinstance(error, PermissionError):
        if error.filename is None:
            return str(error)  # our own, with what to do
        return f"{error.filename}: permission denied"
    if isinstance(error, FileNotFoundError) and error.filename is not None:
        return f"{error.filename} does not exist"
    if isinstance(error, OSError) and error.errno == errno.EADDRINUSE:
        return (
            "the port is already in use by another process: stop it, or choose another with --port"
        )
    if isinstance(error, ConnectionError | OSError):
        where = f"{error.filename}: " if getattr(error, "filename", None) else ""
        return f"{where}{error.strerror or error}" if isinstance(error, OSError) else str(error)
    return None


def run(work: Callable[[], None], *, debug: bool, url: Callable[[], str | None]) -> None:
    """Run a command; a known mistake exits 1 with one line, ``| head`` exits quietly."""
    try:
        work()
    except BrokenPipeError:
        # The reader went away (``gchat ... | head``): nothing to say. Point
        # stdout at /dev/null so the interpreter's final flush cannot fail too.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        sys.exit(1)
    except KeyboardInterrupt:
        sys.exit(130)
    except (SystemExit, AssertionError):
        raise
    except BaseException as error:  # noqa: BLE001 - the one place that turns errors into words
        if debug:
            raise
        sentence = explain(error, url())
        if sentence is None:
            raise
        print(f"gchat: {sentence}", file=sys.stderr, flush=True)
        sys.exit(1)
