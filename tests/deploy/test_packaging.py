"""The shipped deployment files work: systemd unit, nginx example, alert rules.

- the unit passes ``systemd-analyze verify`` with no warning, and its
  hardening scores "OK" in ``systemd-analyze security`` (no systemd needs
  to run for either); a unit with a typo is shown to fail the same check;
- the nginx example passes ``nginx -t`` and, run for real in front of a
  node, carries a real client's enrolment over wss:// and hides /metrics;
- the alert rules pass ``promtool check rules``, fire on synthetic series
  that should page and stay quiet on healthy ones (``promtool test rules``),
  and every metric they use exists on a real node's /metrics.

The tools are installed by ``make test`` (.ci/ensure-tools).
"""

import asyncio
import re
import shutil
import socket
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus
from websockets.typing import Origin

from gchat.app import App
from gchat.directory.service import Directory
from protocol import frames as f
from protocol.codec import client_codec
from protocol.version import MSGPACK_SUBPROTOCOL
from tests.deploy.certs import make_pki
from tests.support import free_port, node_config

REPO = Path(__file__).resolve().parents[2]
UNIT = REPO / "deploy" / "systemd" / "gchat.service"
NGINX_SITE = REPO / "deploy" / "nginx" / "gchat.conf"
ALERTS = REPO / "deploy" / "prometheus" / "gchat-alerts.yml"
GCHAT_BIN = Path(sys.executable).parent / "gchat"


def tool(name: str) -> str:
    found = shutil.which(name) or shutil.which(name, path="/usr/sbin:/sbin")
    assert found, f"{name} is missing: run `bash .ci/ensure-tools` (make test does)"
    return found


def installed_unit(tmp_path: Path, text: str | None = None) -> Path:
    """The unit as an installer would place it: ExecStart at this virtualenv's gchat."""
    unit = tmp_path / "gchat.service"
    body = (text or UNIT.read_text()).replace("/opt/gchat/venv/bin/gchat", str(GCHAT_BIN))
    unit.write_text(body)
    return unit


def test_systemd_unit_verifies_without_warnings(tmp_path: Path) -> None:
    unit = installed_unit(tmp_path)
    result = subprocess.run([tool("systemd-analyze"), "verify", str(unit)],
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert result.stderr == "" and result.stdout == ""


def test_systemd_verify_catches_a_mistake(tmp_path: Path) -> None:
    unit = installed_unit(tmp_path, UNIT.read_text().replace("ProtectSystem=", "ProtectSystm="))
    result = subprocess.run([tool("systemd-analyze"), "verify", str(unit)],
                            capture_output=True, text=True)
    assert "Unknown key 'ProtectSystm'" in result.stderr


def test_systemd_unit_is_hardened(tmp_path: Path) -> None:
    unit = installed_unit(tmp_path)
    result = subprocess.run(
        [tool("systemd-analyze"), "security", "--offline=true", "--no-pager", str(unit)],
        capture_output=True, text=True,
    )
    found = re.search(r"Overall exposure level for gchat.service: ([0-9.]+) (\w+)", result.stdout)
    assert found, result.stdout + result.stderr
    assert float(found.group(1)) <= 2.0 and found.group(2) == "OK", found.group(0)
    text = UNIT.read_text()
    for setting in ("NoNewPrivileges=yes", "ProtectSystem=strict", "CapabilityBoundingSet=\n",
                    "User=gchat", "UMask=0077", "StateDirectoryMode=0700"):
        assert setting in text, setting


def _nginx_config(tmp_path: Path, upstream_port: int, listen_port: int) -> Path:
    pki = make_pki(tmp_path / "pki")
    site = (
        NGINX_SITE.read_text()
        .replace("listen 443 ssl;", f"listen 127.0.0.1:{listen_port} ssl;")
        .replace("server 127.0.0.1:8765;", f"server 127.0.0.1:{upstream_port};")
        .replace("/etc/gchat/tls/fullchain.pem", str(pki.cert))
        .replace("/etc/gchat/tls/privkey.pem", str(pki.key))
    )
    (tmp_path / "site.conf").write_text(site)
    for folder in ("body", "proxy"):
        (tmp_path / folder).mkdir()
    main = tmp_path / "nginx.conf"
    main.write_text(
        f"""
user root;
worker_processes 1;
pid {tmp_path}/nginx.pid;
error_log {tmp_path}/error.log;
events {{ }}
http {{
    access_log {tmp_path}/access.log;
    client_body_temp_path {tmp_path}/body;
    proxy_temp_path {tmp_path}/proxy;
    include {tmp_path}/site.conf;
}}
"""
    )
    return main


def test_nginx_example_passes_nginx_t(tmp_path: Path) -> None:
    main = _nginx_config(tmp_path, 8765, free_port())
    result = subprocess.run(
        [tool("nginx"), "-t", "-q", "-p", str(tmp_path), "-e", str(tmp_path / "error.log"),
         "-c", str(main)],
        capture_output=True, text=True,
    )
    assert result.returncode == 0, result.stderr + (tmp_path / "error.log").read_text()


def _start_nginx(main: Path) -> subprocess.Popen[bytes]:
    prefix = main.parent
    return subprocess.Popen(
        [tool("nginx"), "-p", str(prefix), "-e", str(prefix / "error.log"),
         "-c", str(main), "-g", "daemon off;"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )


def _wait_for_port(port: int, proc: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        assert proc.poll() is None, "nginx exited"
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return
        except OSError:
            time.sleep(0.1)
    raise AssertionError("nginx did not listen")


def _https(url: str, ca: Path) -> int:
    context = ssl.create_default_context(cafile=str(ca))
    try:
        with urllib.request.urlopen(url, context=context, timeout=5) as response:  # noqa: S310
            return int(response.status)
    except urllib.error.HTTPError as error:
        return error.code


async def test_nginx_example_carries_a_client_to_the_node(
    database_url: str, tmp_path: Path
) -> None:
    app = App(node_config(database_url, tmp_path / "data"))
    await app.start()
    # The node is stopped whatever happens to nginx (a node left running leaks its
    # pool's connections into the tests that follow).
    try:
        listen = free_port()
        assert app.port is not None
        main = _nginx_config(tmp_path / "nginx", app.port, listen)
        nginx = _start_nginx(main)
        try:
            await asyncio.to_thread(_wait_for_port, listen, nginx)
            assert app.db is not None
            _, _, code = await Directory(app.db, 3600, app.audit).bootstrap("MIN", "Ministry", "A")
            ca = tmp_path / "nginx" / "pki" / "ca.pem"
            enrolled = await asyncio.to_thread(
                subprocess.run,
                [sys.executable, "-m", "gchat", "client", "enroll", "--url",
                 f"wss://localhost:{listen}", "--code", code, "--state", str(tmp_path / "a.json"),
                 "--ca", str(ca)],
                cwd=REPO, capture_output=True, text=True, timeout=60,
            )
            assert enrolled.returncode == 0, enrolled.stderr
            base = f"https://localhost:{listen}"
            assert await asyncio.to_thread(_https, f"{base}/healthz", ca) == 200
            assert await asyncio.to_thread(_https, f"{base}/metrics", ca) == 404
            # A browser on the node's own origin gets through (nginx passes Host with
            # its port); a page on another site is refused at the upgrade.
            tls = ssl.create_default_context(cafile=str(ca))
            url = f"wss://localhost:{listen}"
            async with connect(url, ssl=tls, origin=Origin(base),  # type: ignore[arg-type]
                               subprotocols=[MSGPACK_SUBPROTOCOL]) as ws:  # type: ignore[list-item]
                assert isinstance(client_codec(MSGPACK_SUBPROTOCOL).decode(await ws.recv()),
                                  f.Challenge)
            with pytest.raises(InvalidStatus) as refused:
                async with connect(url, ssl=tls, origin=Origin("https://evil.example"),
                                   subprotocols=[MSGPACK_SUBPROTOCOL]):  # type: ignore[list-item]
                    pass
            assert refused.value.response.status_code == 403
        finally:
            nginx.terminate()
            try:
                nginx.wait(timeout=15)
            except subprocess.TimeoutExpired:
                nginx.kill()
                nginx.wait()
    finally:
        await app.stop()


def test_alert_rules_use_only_metrics_a_node_exposes() -> None:
    from gchat.runtime.metrics import NodeMetrics

    exposed = {
        line.split(" ")[2]
        for line in NodeMetrics().render().decode().splitlines()
        if line.startswith("# TYPE ")
    }
    series = set(exposed)
    for name in exposed:  # histograms' and counters' series
        series |= {f"{name}_bucket", f"{name}_sum", f"{name}_count", f"{name}_total"}
    exprs = [line.split("expr:", 1)[1] for line in ALERTS.read_text().splitlines()
             if "expr:" in line]
    assert len(exprs) >= 8
    used = {m for e in exprs for m in re.findall(r"\b(?:gchat|process)_[a-z_]+", e)}
    assert used and used <= series, used - series
    assert {"gchat_event_loop_lag_seconds", "gchat_audit_sequencer_lag_seconds"} <= used


_RULE_TESTS = """
rule_files: [{rules}]
evaluation_interval: 1m
tests:
  - interval: 1m
    input_series:
      - series: 'gchat_event_loop_lag_seconds{{job="gchat",instance="slow"}}'
        values: '0.9x10'
      - series: 'gchat_event_loop_lag_seconds{{job="gchat",instance="fine"}}'
        values: '0.01x10'
      - series: 'gchat_audit_sequencer_lag_seconds{{job="gchat",instance="slow"}}'
        values: '0 30 90 150 210 270 330 390 450 510 570'
      - series: 'gchat_audit_sequencer_leading{{job="gchat",instance="slow"}}'
        values: '0x10'
      - series: 'gchat_audit_sequencer_leading{{job="gchat",instance="fine"}}'
        values: '1 1 1 0 0 0 0 0 0 0 0'
      - series: 'gchat_commit_failures_total{{job="gchat",instance="fine"}}'
        values: '0x10'
      - series: 'gchat_broker_healthy{{job="gchat",instance="redis-lost"}}'
        values: '1 0 0 0 0 0 0 0 0 0 0'
      - series: 'gchat_redis_up{{job="gchat",instance="redis-lost"}}'
        values: '1 0 0 0 0 0 0 0 0 0 0'
      - series: 'gchat_broker_healthy{{job="gchat",instance="pg-worker"}}'
        values: '1x10'
      - series: 'gchat_redis_up{{job="gchat",instance="pg-worker"}}'
        values: '0x10'
    alert_rule_test:
      - eval_time: 5m
        alertname: GChatEventLoopLag
        exp_alerts:
          - exp_labels: {{severity: page, job: gchat, instance: slow}}
            exp_annotations:
              summary: "slow: event loop 0.9s late (blocked or saturated)"
      - eval_time: 1m
        alertname: GChatEventLoopLag
        exp_alerts: []
      - eval_time: 9m
        alertname: GChatAuditSequencerBehind
        exp_alerts:
          - exp_labels: {{severity: page, job: gchat, instance: slow}}
            exp_annotations:
              summary: "audit events wait 510s for a leaf: the audit log is not being sealed"
      - eval_time: 2m
        alertname: GChatNoAuditSequencer
        exp_alerts: []
      - eval_time: 6m
        alertname: GChatNoAuditSequencer
        exp_alerts:
          - exp_labels: {{severity: page}}
            exp_annotations:
              summary: "no node holds the audit sequencer lock"
      - eval_time: 10m
        alertname: GChatCommitFailures
        exp_alerts: []
      - eval_time: 5m
        alertname: GChatBrokerDegraded
        exp_alerts:
          - exp_labels: {{severity: page, job: gchat, instance: redis-lost}}
            exp_annotations:
              summary: "redis-lost: signals between nodes down, polling PostgreSQL"
"""


def test_alert_rules_check_and_fire_as_meant(tmp_path: Path) -> None:
    promtool = tool("promtool")
    checked = subprocess.run([promtool, "check", "rules", str(ALERTS)],
                             capture_output=True, text=True)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    tests = tmp_path / "alerts_test.yml"
    tests.write_text(_RULE_TESTS.format(rules=ALERTS))
    ran = subprocess.run([promtool, "test", "rules", str(tests)], capture_output=True, text=True)
    assert ran.returncode == 0, ran.stdout + ran.stderr
