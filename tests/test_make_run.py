"""The README's first command works: ``make run`` on the embedded default,
then the CLI enrols two officials' devices, sends while the recipient is
offline, and the recipient receives it exactly once. Real processes only."""

import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import pytest

from tests.support import free_port

pytestmark = pytest.mark.slow  # make run: embedded PostgreSQL and CLI processes

REPO = Path(__file__).resolve().parents[1]
GCHAT = [sys.executable, "-m", "gchat"]


def cli(*args: str, env: dict[str, str]) -> dict:
    out = subprocess.run(
        [*GCHAT, *args], env=env, cwd=REPO, capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout.strip().splitlines()[-1])


def wait_healthy(port: int, proc: subprocess.Popen, timeout: float = 90) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, "server exited early"
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=2) as r:  # noqa: S310
                if r.status == 200:
                    return
        except OSError:
            time.sleep(0.05)
    raise AssertionError("server never became ready")


@pytest.fixture
def data_dir() -> "Path":
    # The embedded cluster runs as the postgres user when we are root, so its
    # folder must be reachable by that user (pytest's tmp_path is 0700 root).
    base = Path(tempfile.mkdtemp(prefix="gchat-run-", dir="/tmp"))
    base.chmod(0o755)
    yield base / "data"
    subprocess.run(["rm", "-rf", str(base)], check=False)


def test_make_run_then_cli_enrol_send_listen(data_dir: Path) -> None:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("GCHAT_")}
    env |= {"GCHAT_DATA_DIR": str(data_dir), "GCHAT_PORT": str(port)}
    server = subprocess.Popen(
        ["make", "-s", "run"], cwd=REPO, env=env, start_new_session=True,
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    try:
        wait_healthy(port, server)
        url = f"ws://127.0.0.1:{port}"
        states = data_dir.parent
        boot = cli("admin", "bootstrap", "--agency-code", "MOI", "--agency-name",
                   "Ministry of Interior", "--name", "Somchai", "--json", env=env)
        cli("client", "enroll", "--url", url, "--code", boot["code"],
            "--state", str(states / "admin.json"), env=env)
        assert (states / "admin.json").stat().st_mode & 0o777 == 0o600
        bob = cli("admin", "official", "add", "--state", str(states / "admin.json"),
                  "--name-en", "Bob", "--json", env=env)
        code = cli("admin", "code", "issue", bob["id"], "--state", str(states / "admin.json"),
                   "--json", env=env)["code"]
        cli("client", "enroll", "--url", url, "--code", code,
            "--state", str(states / "bob.json"), env=env)
        sent = cli("client", "send", "--state", str(states / "admin.json"),
                   "--to", bob["id"], "--message", "สวัสดี hello", env=env)
        got = cli("client", "listen", "--state", str(states / "bob.json"),
                  "--count", "1", "--idle", "10", env=env)
        assert got["text"] == "สวัสดี hello"
        assert got["message_id"] == sent["message_id"]
        again = subprocess.run(
            [*GCHAT, "client", "listen", "--state", str(states / "bob.json"), "--idle", "1"],
            env=env, cwd=REPO, capture_output=True, text=True, timeout=60,
        )
        assert again.returncode == 0 and again.stdout.strip() == ""  # exactly once
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        output, _ = server.communicate(timeout=60)
    assert "stopped node" in output, output
    assert not (data_dir / "postgres" / "pgdata" / "postmaster.pid").exists()
