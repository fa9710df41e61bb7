"""The dependency rules of DESIGN.md section 2, checked on the source tree.

Imports are read with ``ast`` (nothing is imported or executed), including
relative imports, ``from pkg import submodule``, imports under
``TYPE_CHECKING`` (a type-only dependency is still a dependency) and
``importlib.import_module("...")`` / ``__import__("...")`` with a literal name.

Rules:
1. protocol/ and crypto/ (sans-I/O) import nothing from gchat, and none of
   asyncio, websockets, asyncpg, redis, socket (nor uvloop, selectors).
2. crypto/ does not import protocol/.
3. gchat/store/ imports no service, transport or broker module.
4. gchat/broker imports no gchat.store.
5. Only gchat/client/ imports gchat.client (the server never holds the
   client SDK or its private keys).  LAZY_CLIENT_IMPORT_ALLOWED can name
   modules (say gchat.cli) allowed to import it inside functions only; it is
   empty, so the rule is strict.
6. Only gchat/transport/, gchat/app.py and gchat/client/ import websockets.
"""

from __future__ import annotations

import ast
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SCANNED_ROOTS = ("protocol", "crypto", "gchat")

IO_MODULES = ("asyncio", "websockets", "asyncpg", "redis", "socket", "uvloop", "selectors")
SERVICE_AND_TRANSPORT_MODULES = (
    "gchat.transport",
    "gchat.runtime",
    "gchat.identity",
    "gchat.messaging",
    "gchat.conversations",
    "gchat.directory",
    "gchat.audit",
    "gchat.app",
    "gchat.client",
)
WEBSOCKETS_ALLOWED = ("gchat.transport", "gchat.app", "gchat.client")


#: Modules outside gchat/client/ that may import gchat.client *inside a
#: function only*, so the server process never loads the client SDK unless a
#: client command runs.  Empty: the rule is strict (lead's decision to relax).
LAZY_CLIENT_IMPORT_ALLOWED: tuple[str, ...] = ("gchat.cli",)


@dataclass(frozen=True)
class Import:
    module: str  # absolute dotted name
    line: int
    lazy: bool = False  # inside a function body, so not run at import time


def _within(name: str, package: str) -> bool:
    """``name`` is ``package`` or one of its submodules."""
    return name == package or name.startswith(package + ".")


def module_name(rel_path: str) -> tuple[str, bool]:
    """Dotted module name of a repo-relative ``.py`` path, and whether it is
    a package ``__init__``."""
    parts = list(Path(rel_path).with_suffix("").parts)
    is_package = parts[-1] == "__init__"
    if is_package:
        parts.pop()
    return ".".join(parts), is_package


def _resolve_relative(module: str, is_package: bool, level: int, target: str | None) -> str:
    package = module.split(".") if is_package else module.split(".")[:-1]
    if level > 1:
        package = package[: len(package) - (level - 1)]
    return ".".join([*package, *([target] if target else [])])


def imports_of(source: str, rel_path: str) -> list[Import]:
    """Every module ``source`` (the file at ``rel_path``) imports, absolute.

    ``from a import b`` yields both ``a`` and ``a.b`` because ``b`` may be a
    submodule (``from gchat import client``).
    """
    module, is_package = module_name(rel_path)
    tree = ast.parse(source, filename=rel_path)
    in_function: set[int] = set()
    for fn in ast.walk(tree):
        if isinstance(fn, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda):
            in_function.update(id(n) for n in ast.walk(fn) if n is not fn)
    found: list[Import] = []
    for node in ast.walk(tree):
        lazy = id(node) in in_function
        if isinstance(node, ast.Import):
            found.extend(Import(alias.name, node.lineno, lazy) for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = _resolve_relative(module, is_package, node.level, node.module)
            else:
                base = node.module or ""
            found.append(Import(base, node.lineno, lazy))
            found.extend(
                Import(f"{base}.{alias.name}" if base else alias.name, node.lineno, lazy)
                for alias in node.names
                if alias.name != "*"
            )
        elif (
            isinstance(node, ast.Call)
            and node.args
            and isinstance(node.args[0], ast.Constant)
            and isinstance(node.args[0].value, str)
            and (
                (isinstance(node.func, ast.Name) and node.func.id == "__import__")
                or (isinstance(node.func, ast.Attribute) and node.func.attr == "import_module")
            )
        ):
            found.append(Import(node.args[0].value, node.lineno, lazy))
    return found


def check_source(
    source: str,
    rel_path: str,
    lazy_client_import_allowed: Iterable[str] = LAZY_CLIENT_IMPORT_ALLOWED,
) -> list[str]:
    """The layering violations in one file, as readable messages."""
    module, _ = module_name(rel_path)
    lazy_client_ok = module in set(lazy_client_import_allowed)
    problems: list[str] = []

    reported: set[tuple[int, str]] = set()

    def forbid(imp: Import, targets: Iterable[str], why: str) -> None:
        for target in targets:
            # One message per statement and rule: `from a import b, c` is
            # reported as `a`, not again as `a.b` and `a.c`.
            if _within(imp.module, target) and (imp.line, why) not in reported:
                reported.add((imp.line, why))
                problems.append(f"{rel_path}:{imp.line}: imports {imp.module} ({why})")
                return

    for imp in imports_of(source, rel_path):
        if _within(module, "protocol") or _within(module, "crypto"):
            forbid(imp, ["gchat"], "protocol/ and crypto/ must not import gchat")
            forbid(imp, IO_MODULES, "protocol/ and crypto/ are sans-I/O")
        if _within(module, "crypto"):
            forbid(imp, ["protocol"], "crypto/ must not import protocol/")
        if _within(module, "gchat.store"):
            forbid(
                imp,
                SERVICE_AND_TRANSPORT_MODULES,
                "gchat/store/ imports no service, transport or broker",
            )
        if _within(module, "gchat.runtime.broker") or _within(module, "gchat.runtime.redis_broker"):
            forbid(imp, ["gchat.store"], "the broker imports no store")
        if (
            _within(module, "gchat")
            and not _within(module, "gchat.client")
            and not (lazy_client_ok and imp.lazy)
        ):
            forbid(imp, ["gchat.client"], "only gchat/client/ may import the client SDK")
        if not any(_within(module, allowed) for allowed in WEBSOCKETS_ALLOWED):
            forbid(
                imp,
                ["websockets"],
                "only transport/, app.py and client/ touch websockets",
            )
    return problems


def _source_files() -> list[Path]:
    files: list[Path] = []
    for root in SCANNED_ROOTS:
        files.extend(
            p for p in sorted((REPO / root).rglob("*.py")) if "__pycache__" not in p.parts
        )
    return files


def test_source_tree_follows_layering_rules() -> None:
    files = _source_files()
    assert any(p.relative_to(REPO).as_posix() == "gchat/__init__.py" for p in files)
    problems: list[str] = []
    for path in files:
        rel = path.relative_to(REPO).as_posix()
        problems.extend(check_source(path.read_text(encoding="utf-8"), rel))
    assert not problems, "layering violations (DESIGN.md section 2):\n" + "\n".join(problems)


# -- the checker itself, on synthetic sources ----------------------------


@pytest.mark.parametrize(
    ("rel_path", "source"),
    [
        ("protocol/frames.py", "import asyncio"),
        ("protocol/frames.py", "from socket import socket"),
        ("protocol/codec.py", "import redis.asyncio as r"),
        ("protocol/codec.py", "from gchat.config import Config"),
        ("crypto/x3dh.py", "import asyncpg"),
        ("crypto/x3dh.py", "from protocol.frames import Frame"),
        ("crypto/x3dh.py", "from ..protocol import frames"),
        ("crypto/__init__.py", "import importlib\nimportlib.import_module('gchat.app')"),
        ("gchat/store/users.py", "from gchat.identity.auth import verify"),
        ("gchat/store/users.py", "from ..messaging import delivery"),
        ("gchat/store/users.py", "from ..runtime.broker import Broker"),
        ("gchat/store/__init__.py", "from gchat.transport import connection"),
        (
            "gchat/store/users.py",
            "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    import gchat.audit.log",
        ),
        ("gchat/runtime/broker.py", "from gchat.store.inbox import Inbox"),
        ("gchat/runtime/broker.py", "from ..store import inbox"),
        ("gchat/runtime/redis_broker.py", "from ..store import inbox"),
        ("gchat/messaging/service.py", "from gchat import client"),
        ("gchat/app.py", "import gchat.client.sdk"),
        ("gchat/cli.py", "from .client.cli import main"),
        ("gchat/identity/auth.py", "import websockets"),
        ("gchat/messaging/delivery.py", "from websockets.asyncio.server import ServerConnection"),
        ("gchat/store/users.py", "def f():\n    import websockets\n"),
    ],
)
def test_checker_flags_violation(rel_path: str, source: str) -> None:
    assert check_source(source, rel_path), f"not flagged: {rel_path}: {source!r}"


@pytest.mark.parametrize(
    ("rel_path", "source"),
    [
        ("protocol/frames.py", "import msgspec\nfrom protocol.errors import ProtocolError"),
        ("protocol/frames.py", "from . import errors\nimport asyncio_helpers_not_asyncio"),
        ("crypto/x3dh.py", "import nacl.bindings\nfrom .kdf import hkdf"),
        ("gchat/store/users.py", "import asyncpg\nfrom protocol.frames import Frame"),
        ("gchat/store/users.py", "from . import inbox\nfrom gchat.store.base import Executor"),
        ("gchat/store/users.py", "from gchat.authority import x  # not gchat.identity.auth"),
        (
            "gchat/messaging/service.py",
            "from gchat.store import messages\nfrom gchat.runtime.broker import B",
        ),
        ("gchat/runtime/broker.py", "import redis.asyncio"),
        (
            "gchat/transport/connection.py",
            "import websockets\nfrom gchat.identity.auth import Auth",
        ),
        ("gchat/app.py", "from websockets.asyncio.server import serve"),
        ("gchat/transport/http.py", "import websockets.datastructures"),
        ("gchat/client/sdk.py", "import websockets\nfrom gchat.client.keys import Keystore"),
        ("gchat/client/cli.py", "from . import sdk\nfrom ..client import keys"),
    ],
)
def test_checker_allows(rel_path: str, source: str) -> None:
    assert check_source(source, rel_path) == []


def test_relative_imports_resolve() -> None:
    got = {i.module for i in imports_of("from ..store import inbox", "gchat/broker/redis.py")}
    assert got == {"gchat.store", "gchat.store.inbox"}
    got = {i.module for i in imports_of("from . import client", "gchat/__init__.py")}
    assert got == {"gchat", "gchat.client"}
    got = {i.module for i in imports_of("from .kdf import hkdf", "crypto/x3dh.py")}
    assert got == {"crypto.kdf", "crypto.kdf.hkdf"}


def test_violation_message_names_file_line_and_module() -> None:
    (message,) = check_source("import json\nimport socket\n", "protocol/frames.py")
    assert message.startswith("protocol/frames.py:2: imports socket")
    (message,) = check_source("from gchat.client.sdk import A, B\n", "gchat/cli.py")
    assert message.startswith("gchat/cli.py:1: imports gchat.client.sdk ")


def test_lazy_client_import_exception_is_function_scoped() -> None:
    lazy = "def main():\n    from gchat.client.sdk import Client\n"
    eager = "from gchat.client.sdk import Client\n"
    assert check_source(lazy, "gchat/cli.py", lazy_client_import_allowed=()) != []
    assert check_source(lazy, "gchat/cli.py", lazy_client_import_allowed=["gchat.cli"]) == []
    assert check_source(eager, "gchat/cli.py", lazy_client_import_allowed=["gchat.cli"]) != []
    assert check_source(lazy, "gchat/app.py", lazy_client_import_allowed=["gchat.cli"]) != []
