"""An auditor's whole round, as separate processes against a real node:
the admin makes an auditor with the CLI, the auditor fetches a signed tree
head and an export over the protocol, and verifies it offline; an export
with one byte changed fails verification and names the entry."""

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support import free_port
from tests.test_make_run import REPO, wait_healthy

pytestmark = pytest.mark.slow  # a real node process and CLI processes

GCHAT = [sys.executable, "-m", "gchat"]


def run(*args: str, env: dict[str, str], check: bool = True) -> subprocess.CompletedProcess[str]:
    out = subprocess.run(
        [*GCHAT, *args], env=env, cwd=REPO, capture_output=True, text=True, timeout=90
    )
    if check:
        assert out.returncode == 0, out.stderr
    return out


def last_json(out: subprocess.CompletedProcess[str]) -> dict:
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_auditor_exports_and_verifies_offline(database_url: str, tmp_path: Path) -> None:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("GCHAT_")}
    env |= {
        "GCHAT_DATABASE_URL": database_url,
        "GCHAT_DATA_DIR": str(tmp_path / "data"),
        "GCHAT_PORT": str(port),
        "GCHAT_AUDIT_SIGN_INTERVAL_SECONDS": "0.5",
    }
    node = subprocess.Popen(
        [*GCHAT, "serve"], cwd=REPO, env=env, start_new_session=True,
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    try:
        wait_healthy(port, node)
        url = f"ws://127.0.0.1:{port}"
        admin, auditor = str(tmp_path / "admin.state"), str(tmp_path / "auditor.state")
        boot = last_json(run("admin", "bootstrap", "--agency-code", "OAG", "--agency-name",
                             "Office of the Auditor General", "--name", "Admin", "--json",
                             env=env))
        run("client", "enroll", "--url", url, "--code", boot["code"], "--state", admin, env=env)
        official = last_json(run("admin", "official", "add", "--state", admin, "--name-en",
                                 "Auditor", "--json", env=env))["id"]
        run("admin", "role", "grant", official, "auditor", "--state", admin, env=env)
        code = last_json(run("admin", "code", "issue", official, "--state", admin,
                             "--json", env=env))["code"]
        run("client", "enroll", "--url", url, "--code", code, "--state", auditor, env=env)
        run("client", "send", "--state", admin, "--to", official, "--message", "hello", env=env)

        head = run("audit", "tree-head", "--state", auditor, env=env)
        assert "tree_size" in head.stdout
        export = tmp_path / "export.jsonl"
        run("audit", "export", "--state", auditor, "--out", str(export), env=env)
        # The documented path: the key goes into a file that --key reads.
        key = tmp_path / "audit.pub"
        key.write_text(run("audit", "public-key", "--keys-dir", str(tmp_path / "data" / "keys"),
                           env=env).stdout)

        good = run("audit", "verify", "--export", str(export), "--key", str(key), env=env)
        assert good.returncode == 0, good.stdout

        lines = export.read_text().splitlines()
        entries = [i for i, line in enumerate(lines) if json.loads(line)["type"] == "entry"]
        assert len(entries) >= 5  # bootstrap, enrolments, admin actions, the send...
        target = json.loads(lines[entries[2]])
        text = target["entry"]
        target["entry"] = text[:-2] + ("0" if text[-2] != "0" else "1") + text[-1]
        lines[entries[2]] = json.dumps(target)
        tampered = tmp_path / "tampered.jsonl"
        tampered.write_text("\n".join(lines) + "\n")
        bad = run("audit", "verify", "--export", str(tampered), "--key", str(key), env=env,
                  check=False)
        assert bad.returncode == 1
        assert bad.stdout.startswith(f"FAILED: entry {target['index']}"), bad.stdout
        assert "hello" not in export.read_text()  # metadata, never content
    finally:
        os.killpg(node.pid, signal.SIGTERM)
        node.communicate(timeout=60)
