"""The layering contracts (pyproject.toml, ``[tool.importlinter]``) hold, and bite.

``lint-imports`` checks them in ``make lint`` and ``make test``. This test
runs it on the tree, then plants one violation per contract in a copy of
the tree and shows that ``lint-imports`` fails and names the contract, so a
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


@pytest.mark.parametrize(
    ("module", "violation", "contract"),
    [
        ("gchat/store/database.py", "import gchat.errors", "The store imports only the store"),
        ("gchat/store/messages.py", "import protocol.frames", "The store imports only the store"),
        ("gchat/runtime/batcher.py", "import gchat.messaging.service",
         "runtime/ imports no feature"),
        ("gchat/messaging/service.py", "import websockets",
         "Only transport/, app.py and client/ import websockets"),
        ("protocol/codec.py", "import asyncio", "protocol/ and crypto/ import nothing"),
        ("crypto/ratchet.py", "import gchat.errors", "protocol/ and crypto/ import nothing"),
        ("crypto/ratchet.py", "import socket", "protocol/ and crypto/ import nothing"),
        ("crypto/identity.py", "import protocol.frames", "crypto/ does not import protocol/"),
        ("gchat/app.py", "import gchat.client.sdk", "Only client/ imports gchat.client"),
    ],
)
def test_a_planted_violation_breaks_its_contract(
    tree: Path, module: str, violation: str, contract: str
) -> None:
    path = tree / module
    original = path.read_text()
    path.write_text(f"{original}\n{violation}  # planted\n")
    try:
        result = lint_imports(tree)
    finally:
        path.write_text(original)
    assert result.returncode != 0, result.stdout
    broken = [line for line in result.stdout.splitlines() if " BROKEN" in line]
    assert any(line.startswith(contract) for line in broken), result.stdout
