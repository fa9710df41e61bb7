"""The ordinary mistakes of the people running ``gchat``, made with the real command
against a real node: one plain line on stderr, exit status 1, no traceback,
and nothing left behind (no stray key file, no orphaned PostgreSQL)."""

import shutil
import socket
import ssl
import subprocess
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.cli.conftest import GCHAT, Node, clean_env, one_line_error
from tests.support import free_port
from tests.test_make_run import REPO


def test_server_down(node: Node) -> None:
    state = node.home / "down.state"
    out = node.run("client", "enroll", "--url", f"ws://127.0.0.1:{free_port()}",
                   "--code", "ABCD-EFGH", "--state", str(state))
    one_line_error(out, "cannot reach", "connection refused", "is it running")
    assert not state.exists() and not Path(str(state) + ".key").exists()


@pytest.mark.parametrize("url", ["http://127.0.0.1:{port}", "127.0.0.1:{port}"])
def test_url_without_websocket_scheme(node: Node, url: str) -> None:
    state = node.home / "scheme.state"
    out = node.run("client", "enroll", "--url", url.format(port=node.port),
                   "--code", "ABCD-EFGH", "--state", str(state))
    one_line_error(out, "not a WebSocket address", "ws://")
    assert not Path(str(state) + ".key").exists()


def test_wss_to_a_plain_server(node: Node) -> None:
    out = node.run("client", "enroll", "--url", f"wss://127.0.0.1:{node.port}",
                   "--code", "ABCD-EFGH", "--state", str(node.home / "wss.state"))
    one_line_error(out, "TLS", "ws://")


@pytest.fixture
def tls_server(tmp_path: Path) -> Iterator[int]:
    """A TLS listener with a self-signed certificate nobody trusts."""
    key, cert = tmp_path / "k.pem", tmp_path / "c.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt",
                    "ec_paramgen_curve:prime256v1", "-nodes", "-subj", "/CN=localhost",
                    "-days", "1", "-keyout", str(key), "-out", str(cert)],
                   check=True, capture_output=True)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    listener = socket.create_server(("127.0.0.1", 0))
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except OSError:
                return
            try:
                with context.wrap_socket(conn, server_side=True):
                    pass
            except (OSError, ssl.SSLError):
                pass

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield listener.getsockname()[1]
    stop.set()
    listener.close()


def test_untrusted_certificate(node: Node, tls_server: int) -> None:
    out = node.run("client", "enroll", "--url", f"wss://localhost:{tls_server}",
                   "--code", "ABCD-EFGH", "--state", str(node.home / "cert.state"))
    one_line_error(out, "certificate", "not trust")


def test_missing_state_file_leaves_no_key(node: Node) -> None:
    state = node.home / "nobody.state"
    out = node.run("client", "send", "--state", str(state), "--to",
                   "00000000-0000-0000-0000-000000000001", "--message", "hi")
    one_line_error(out, str(state), "does not exist", "enroll")
    assert not Path(str(state) + ".key").exists()


@pytest.fixture
def copied_state(node: Node, tmp_path: Path) -> Path:
    state = tmp_path / "copy.state"
    shutil.copy2(node.admin, state)
    shutil.copy2(str(node.admin) + ".key", str(state) + ".key")
    return state


def test_wrong_key(node: Node, copied_state: Path, tmp_path: Path) -> None:
    other = tmp_path / "other.key"
    other.write_bytes(b"\x01" * 32)
    other.chmod(0o600)
    out = node.run("admin", "agency", "list", "--state", str(copied_state),
                   "--key-file", str(other))
    one_line_error(out, "cannot open the state file", "key")


def test_missing_key_file_is_named_not_regenerated(node: Node, copied_state: Path) -> None:
    key = Path(str(copied_state) + ".key")
    key.unlink()
    out = node.run("admin", "agency", "list", "--state", str(copied_state))
    one_line_error(out, str(key), "missing")
    assert not key.exists()


def test_state_readable_by_others(node: Node, copied_state: Path) -> None:
    copied_state.chmod(0o644)
    out = node.run("admin", "agency", "list", "--state", str(copied_state))
    one_line_error(out, "readable by other users", "chmod 600")


def test_bootstrap_twice_and_with_a_taken_code(node: Node) -> None:
    out = node.run("admin", "bootstrap", "--agency-code", node.agency_code,
                   "--agency-name", "again", "--name", "Admin")
    one_line_error(out, "MOI", "exists already")
    out = node.run("admin", "bootstrap", "--agency-code", "MOF",
                   "--agency-name", "Finance", "--name", "Admin")
    one_line_error(out, "bootstrapped already", "--force")


def test_bootstrap_in_a_folder_with_no_node(tmp_path: Path) -> None:
    env = clean_env() | {"GCHAT_DATA_DIR": str(tmp_path / "elsewhere")}
    out = subprocess.run([*GCHAT, "admin", "bootstrap", "--agency-code", "MOF",
                          "--agency-name", "Finance", "--name", "Admin"],
                         env=env, cwd=tmp_path, capture_output=True, text=True, timeout=60)
    one_line_error(out, "no node has run", str(tmp_path / "elsewhere"), "--data-dir")
    assert not (tmp_path / "elsewhere").exists()


@pytest.mark.parametrize("text", ['port = "eighty"', "port = ", "colour = 1"])
def test_bad_toml(node: Node, tmp_path: Path, text: str) -> None:
    config = tmp_path / "gchat.toml"
    config.write_text(text + "\n")
    out = node.run("--config", str(config), "migrate")
    one_line_error(out, "configuration")


def test_port_in_use_leaves_no_postgres_running(node: Node) -> None:
    # Embedded PostgreSQL (no GCHAT_DATABASE_URL), on the port the node holds.
    base = Path(tempfile.mkdtemp(prefix="gchat-port-", dir="/tmp"))
    base.chmod(0o755)  # the embedded cluster may run as the postgres user
    env = clean_env() | {"GCHAT_DATA_DIR": str(base / "data"), "GCHAT_PORT": str(node.port)}
    try:
        out = subprocess.run([*GCHAT, "serve"], env=env, cwd=REPO, capture_output=True,
                             text=True, timeout=180)
        assert "Traceback" not in out.stderr + out.stdout
        assert out.returncode == 1
        assert "gchat: the port is already in use" in out.stderr, out.stderr
        assert not (base / "data" / "postgres" / "pgdata" / "postmaster.pid").exists()
    finally:
        subprocess.run(["rm", "-rf", str(base)], check=False)


def test_reader_going_away_is_quiet(node: Node) -> None:
    with subprocess.Popen([*GCHAT, "audit", "kinds"], cwd=REPO, env=node.env,
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) as reader:
        assert reader.stdout is not None and reader.stderr is not None
        reader.stdout.close()  # like `| head` exiting before the output is written
        err = reader.stderr.read()
        reader.wait(timeout=60)
    assert "Traceback" not in err and "BrokenPipe" not in err, err
    assert err == ""


def test_audit_times_and_agency_codes(node: Node) -> None:
    out = node.run("audit", "query", "--state", str(node.admin), "--since", "last tuesday")
    one_line_error(out, "'last tuesday' is not a time", "2026-11-01", "24h")
    out = node.run("audit", "query", "--state", str(node.admin), "--agency", "MOI-DOPA")
    one_line_error(out, "no agency with the code MOI-DOPA")
    out = node.run("audit", "query", "--state", str(node.admin), "--kind", "login")
    one_line_error(out, "unknown event kind 'login'")
    out = node.run("audit", "query", "--state", str(node.admin), "--official", "somchai")
    one_line_error(out, "'somchai' is not an official id")


def test_admin_refusal_is_one_line(node: Node) -> None:
    out = node.run("admin", "official", "show", "00000000-0000-0000-0000-000000000001",
                   "--state", str(node.admin))
    one_line_error(out, "the server refused")
