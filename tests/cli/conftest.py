"""A real node for the CLI tests: ``gchat serve`` as a process on its own database,
bootstrapped, with the superadmin's device enrolled through the CLI.

One node per test module (starting one costs seconds); every test runs the
real ``gchat`` command as a subprocess, the way an operator would.
"""

import contextlib
import json
import os
import signal
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.fixtures import TestDatabases
from tests.support import free_port
from tests.test_make_run import REPO, wait_healthy

GCHAT = [sys.executable, "-m", "gchat"]


@dataclass
class Node:
    env: dict[str, str]
    url: str
    port: int
    home: Path  # a folder for the test's files
    admin: Path  # the superadmin's device state
    agency_code: str

    def run(self, *args: str, env: dict[str, str] | None = None,
            check: bool = False, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
        out = subprocess.run(
            [*GCHAT, *args], env=env or self.env, cwd=self.home, capture_output=True,
            text=True, timeout=120, input=stdin,
        )
        if check:
            assert out.returncode == 0, out.stderr
        return out

    def json(self, *args: str) -> dict:
        out = self.run(*args, check=True)
        return json.loads(out.stdout.strip().splitlines()[-1])


def clean_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("GCHAT_")}
    env["XDG_CONFIG_HOME"] = tempfile.mkdtemp(prefix="gchat-xdg-")
    return env


@contextlib.contextmanager
def running_node(database_url: str) -> Iterator[tuple[dict[str, str], int, Path]]:
    """A node on this database (migrated or not): (its environment, port, a folder for files)."""
    home = Path(tempfile.mkdtemp(prefix="gchat-cli-"))
    port = free_port()
    env = clean_env() | {
        "GCHAT_DATABASE_URL": database_url,
        "GCHAT_DATA_DIR": str(home / "data"),
        "GCHAT_PORT": str(port),
        "GCHAT_AUDIT_SIGN_INTERVAL_SECONDS": "0.5",
    }
    server = subprocess.Popen(
        [*GCHAT, "serve"], cwd=REPO, env=env, start_new_session=True,
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    try:
        wait_healthy(port, server)
        yield env, port, home
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.communicate(timeout=60)
        subprocess.run(["rm", "-rf", str(home)], check=False)


@pytest.fixture(scope="module")
def node(test_databases: TestDatabases) -> Iterator[Node]:
    """A bootstrapped node with the superadmin's device (``node.admin``), on a
    clone of the migrated template (the first-start migration is tested in
    tests/test_make_run.py and tests/store/test_migrations.py)."""
    database_url = test_databases.create(migrated=True)
    try:
        with running_node(database_url) as (env, port, home):
            node = Node(env, f"ws://127.0.0.1:{port}", port, home, home / "admin.state", "MOI")
            boot = node.json("admin", "bootstrap", "--agency-code", "MOI", "--agency-name",
                             "Ministry of Interior", "--name", "สมชาย ใจดี", "--json")
            node.run("client", "enroll", "--url", node.url, "--code", boot["code"],
                     "--state", str(node.admin), check=True)
            yield node
    finally:
        test_databases.drop_later(database_url)


def one_line_error(out: subprocess.CompletedProcess[str], *words: str) -> str:
    """The command failed with exit 1 and one plain line naming ``words``."""
    assert "Traceback" not in out.stderr, out.stderr
    assert out.returncode == 1, (out.returncode, out.stdout, out.stderr)
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1, out.stderr
    line = lines[0]
    assert line.startswith("gchat: "), line
    for word in words:
        assert word.lower() in line.lower(), (word, line)
    return line
