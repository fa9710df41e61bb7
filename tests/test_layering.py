"""The layering contracts (pyproject.toml, ``[tool.importlinter]``) hold, and bite.

``lint-imports`` checks them in ``make lint`` and ``make test``. This test
runs it on the tree, then plants violations of every contract in a copy of
the tree (all at once: one run) and shows that ``lint-imports`` fails and
reports each planted import under the contract it breaks, so a
contract that silently stopped matching anything (a renamed package, an
external module missing from the graph) is caught here.
"""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
LINT_IMPORTS = Path(sys.executable).with_name("lint-imports")


def lint_imports(root: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(LINT_IMPORTS), "--no-cache"],
        cwd=root,
        env={**os.environ, "PYTHONPATH": str(root)},
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.fixture(scope="module")
def tree(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of the packages and the contracts, to plant violations in."""
    root = tmp_path_factory.mktemp("layering")
    for package in ("gchat", "protocol", "crypto"):
        shutil.copytree(REPO / package, root / package,
                        ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(REPO / "pyproject.toml", root / "pyproject.toml")
    return root


def test_the_tree_keeps_every_contract() -> None:
    result = lint_imports(REPO)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 broken" in result.stdout


#: (module, planted import, contract it breaks, the import as lint-imports reports it).
PLANTED = [
    ("gchat/store/database.py", "import gchat.errors", "The store imports only the store",
     "gchat.store.database -> gchat.errors"),
    ("gchat/store/messages.py", "import protocol.frames", "The store imports only the store",
     "gchat.store.messages -> protocol.frames"),
    ("gchat/runtime/batcher.py", "import gchat.messaging.service",
     "runtime/ imports no feature", "gchat.runtime.batcher -> gchat.messaging.service"),
    ("gchat/messaging/service.py", "import websockets",
     "Only transport/, app.py and client/ import websockets",
     "gchat.messaging.service -> websockets"),
    ("protocol/codec.py", "import asyncio", "protocol/ and crypto/ import nothing",
     "protocol.codec -> asyncio"),
    ("crypto/ratchet.py", "import gchat.errors", "protocol/ and crypto/ import nothing",
     "crypto.ratchet -> gchat.errors"),
    ("crypto/ratchet.py", "import socket", "protocol/ and crypto/ import nothing",
     "crypto.ratchet -> socket"),
    ("crypto/identity.py", "import protocol.frames", "crypto/ does not import protocol/",
     "crypto.identity -> protocol.frames"),
    ("gchat/app.py", "import gchat.client.sdk", "Only client/ imports gchat.client",
     "gchat.app -> gchat.client.sdk"),
]


def broken_sections(report: str) -> dict[str, str]:
    """The "Broken contracts" part of a report: each contract's name -> its text."""
    lines = report.split("Broken contracts", 1)[1].splitlines()
    sections: dict[str, str] = {}
    name = None
    for line, underline in zip(lines, [*lines[1:], ""], strict=True):
        if underline and set(underline) == {"-"} and len(underline) == len(line):
            name = line
            sections[name] = ""
        elif name is not None:
            sections[name] += line + "\n"
    return sections


def test_planted_violations_break_their_contracts(tree: Path) -> None:
    """Every violation planted at once, one ``lint-imports`` run: each planted import
    is reported, at the line where it was planted, under the contract it breaks
    (a contract broken by one violation cannot hide another: each is looked up)."""
    lines: dict[str, int] = {}
    for module, violation, _, _ in PLANTED:
        path = tree / module
        text = path.read_text()
        path.write_text(f"{text}\n{violation}  # planted\n")
        lines[violation + module] = text.count("\n") + 2
    result = lint_imports(tree)
    assert result.returncode != 0, result.stdout
    sections = broken_sections(result.stdout)
    for module, violation, contract, reported in PLANTED:
        found = [text for name, text in sections.items() if name.startswith(contract)]
        assert len(found) == 1, (contract, list(sections))
        where = f"{reported} (l.{lines[violation + module]})"
        assert where in found[0], (where, found[0])
