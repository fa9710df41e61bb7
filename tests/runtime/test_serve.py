"""``gchat serve`` as an operator runs it: banner, node id, TLS state, JSON logs.

Real processes: the banner is read from stdout, the logs from stderr, the
node is stopped with SIGTERM and started again on the same data folder.
"""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import urlsplit

from gchat.runtime.version import version
from tests.support import free_port

REPO = Path(__file__).resolve().parents[2]


def serve(env: dict[str, str]) -> tuple[list[str], list[str], str]:
    """Run a node until its banner is complete, SIGTERM it.

    Returns (banner lines, log lines, standard output). With JSON logs the
    banner is one log record (standard error); otherwise standard output.
    """
    json_logs = env.get("GCHAT_LOG_FORMAT") == "json"
    proc = subprocess.Popen(
        [sys.executable, "-m", "gchat", "serve"],
        cwd=REPO,
        env=os.environ | env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    seen: list[str] = []
    try:
        stream = proc.stderr if json_logs else proc.stdout
        assert stream is not None
        banner: list[str] = []
        deadline = time.monotonic() + 60
        while not banner or not banner[-1].lstrip().startswith("stop"):
            assert time.monotonic() < deadline, "no banner"
            line = stream.readline()
            assert line, f"serve exited early: {proc.wait()} {seen}"
            seen.append(line.rstrip("\n"))
            if not json_logs:
                banner.append(line.rstrip("\n"))
            elif (msg := json.loads(line)["msg"]).startswith("G-Chat "):
                banner = msg.splitlines()
        proc.send_signal(signal.SIGTERM)
        stdout, stderr = proc.communicate(timeout=30)
        assert proc.returncode == 0, stderr
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    logs = (seen + stderr.splitlines()) if json_logs else stderr.splitlines()
    return banner, logs, stdout if json_logs else "\n".join(seen) + stdout


def test_banner_node_id_tls_warning_and_json_logs(database_url: str, tmp_path: Path) -> None:
    port = free_port()
    env = {
        "GCHAT_DATABASE_URL": database_url,
        "GCHAT_DATA_DIR": str(tmp_path / "data"),
        "GCHAT_HOST": "0.0.0.0",  # noqa: S104 - the warning is what is tested
        "GCHAT_PORT": str(port),
        "GCHAT_LOG_FORMAT": "json",
    }
    banner, logs, stdout = serve(env)
    node_id = (tmp_path / "data" / "node-id").read_text().strip()
    assert banner[0] == f"G-Chat {version()} node {node_id}"
    text = "\n".join(banner)
    assert f"listening  ws://0.0.0.0:{port} (TLS off)" in text
    assert f"data       {tmp_path / 'data'}" in text
    assert f"keys       {tmp_path / 'data' / 'keys'}" in text
    assert "kill -TERM" in banner[-1]
    dsn = urlsplit(database_url)
    assert f"database   PostgreSQL database {dsn.path[1:]} on {dsn.hostname}:{dsn.port}" in text
    assert "postgres@" not in text  # no user (nor password) in the banner

    assert stdout == ""  # everything, the banner too, is a JSON log record
    records = [json.loads(line) for line in logs]  # every line is one JSON object
    assert all(r["node"] == node_id for r in records)
    warnings = [r for r in records if r["level"] == "warning" and "tls off" in r["msg"]]
    assert warnings and "0.0.0.0" in warnings[0]["msg"]
    assert any(r["msg"].startswith("stopped node=") for r in records)

    banner, logs, _ = serve(env | {"GCHAT_HOST": "127.0.0.1", "GCHAT_LOG_FORMAT": "text"})
    assert banner[0] == f"G-Chat {version()} node {node_id}", "the node id changed on restart"
    assert not any("WARNING" in line for line in logs)
    assert any("tls off: plain WebSocket on a loopback address" in line for line in logs)


def test_version() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "gchat", "--version"], cwd=REPO, capture_output=True, text=True
    )
    assert result.returncode == 0
    assert result.stdout == f"gchat {version()}\n"
