"""Setting up a run: a fresh database, server subprocesses, /proc readings.

Nothing here measures anything by itself; the scenarios (``scenarios``) use
it to start a G-Chat node (``python -m gchat serve`` against a database made
for this run and dropped afterwards) and the raw relay, and to read a
process's RSS and CPU time from ``/proc``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import resource
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any
from urllib.parse import urlsplit, urlunsplit

import asyncpg

REPO = Path(os.path.abspath(__file__)).parents[1]  # not resolve(): allow a symlinked copy
DEFAULT_ADMIN_DSN = "postgresql://postgres@127.0.0.1:5432/postgres"
DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/0"
CLK_TCK = os.sysconf("SC_CLK_TCK")


def admin_dsn() -> str:
    """A PostgreSQL role that may CREATE/DROP DATABASE (same knob as the tests)."""
    return (
        os.environ.get("GCHAT_LOADTEST_DATABASE_URL")
        or os.environ.get("GCHAT_TEST_DATABASE_URL")
        or DEFAULT_ADMIN_DSN
    )


def raise_nofile() -> int:
    """Raise this process's open-file soft limit to the hard limit; return it."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def with_database(dsn: str, name: str) -> str:
    return urlunsplit(urlsplit(dsn)._replace(path="/" + name))


class TempDatabase:
    """A database created for one run (``gchat_lt_<pid>_<hex>``), dropped after."""

    def __init__(self, admin: str | None = None) -> None:
        self.admin = admin or admin_dsn()
        self.name = f"gchat_lt_{os.getpid()}_{secrets.token_hex(4)}"
        self.url = with_database(self.admin, self.name)

    async def create(self) -> str:
        conn = await asyncpg.connect(self.admin, timeout=10)
        try:
            await conn.execute(f'CREATE DATABASE "{self.name}"')
        finally:
            await conn.close()
        return self.url

    async def drop(self) -> None:
        conn = await asyncpg.connect(self.admin, timeout=10)
        try:
            await conn.execute(f'DROP DATABASE IF EXISTS "{self.name}" WITH (FORCE)')
        finally:
            await conn.close()


# --- /proc readings ----------------------------------------------------------


def rss_kib(pid: int) -> int:
    """Resident set size of ``pid`` in KiB (VmRSS in /proc/PID/status)."""
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for pid {pid}")


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds used so far by ``pid`` (its threads included)."""
    with open(f"/proc/{pid}/stat") as stat:
        text = stat.read()
    fields = text[text.rindex(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def family(pid: int) -> list[int]:
    """``pid`` and its descendants (``gchat serve --workers N``: the parent and
    its workers), from /proc/PID/task/*/children."""
    out, todo = [], [pid]
    while todo:
        current = todo.pop()
        out.append(current)
        try:
            for task in os.listdir(f"/proc/{current}/task"):
                with open(f"/proc/{current}/task/{task}/children") as kids:
                    todo.extend(int(k) for k in kids.read().split())
        except OSError:
            continue
    return out


def postgres_cpu_seconds() -> float:
    """CPU seconds of every process named ``postgres`` on this host.

    Backends come and go, so only differences over an interval in which the
    set of backends is stable (a load phase with a fixed pool) mean much.
    """
    total = 0.0
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/comm") as comm:
                if comm.read().strip() != "postgres":
                    continue
            total += cpu_seconds(int(entry))
        except (OSError, ValueError):
            continue
    return total


def cpu_seconds_of(pids: list[int]) -> dict[int, float]:
    """CPU seconds of each of ``pids`` still running (exited ones are left out)."""
    out: dict[int, float] = {}
    for pid in pids:
        try:
            out[pid] = cpu_seconds(pid)
        except (OSError, ValueError):
            continue
    return out


#: ``application_name`` of the load test's own connections, so that the CPU
#: of the node's PostgreSQL backends can be told from the probe's.
PROBE_APP = "gchat-loadtest-probe"


async def backend_pids(conn: asyncpg.Connection) -> list[int]:
    """PIDs of the PostgreSQL backends serving this database, except the
    load test's own (the node's pool, its sequencer, its listeners)."""
    rows = await conn.fetch(
        "SELECT pid FROM pg_stat_activity WHERE datname = current_database() "
        "AND backend_type = 'client backend' AND application_name <> $1", PROBE_APP)
    return [int(r["pid"]) for r in rows]


def host_cpu_seconds() -> tuple[float, float]:
    """(busy, total) CPU seconds of the whole host from /proc/stat."""
    with open("/proc/stat") as stat:
        values = [int(v) for v in stat.readline().split()[1:]]
    idle = values[3] + values[4]
    total = sum(values[:8])
    return (total - idle) / CLK_TCK, total / CLK_TCK


def host_softirq_seconds() -> float:
    """Softirq CPU seconds of the host (loopback TCP is processed there)."""
    with open("/proc/stat") as stat:
        return int(stat.readline().split()[7]) / CLK_TCK


@dataclass
class CpuMeter:
    """CPU used over an interval by the server(s), PostgreSQL and the host."""

    server_pids: list[int]
    start: dict[str, float] = field(default_factory=dict)

    def _now(self) -> dict[str, float]:
        busy, total = host_cpu_seconds()
        return {
            "wall": time.monotonic(),
            "softirq": host_softirq_seconds(),
            "server": sum(cpu_seconds(p) for pid in self.server_pids for p in family(pid)),
            "postgres": postgres_cpu_seconds(),
            "host_busy": busy,
            "host_total": total,
        }

    def begin(self) -> None:
        self.start = self._now()

    def end(self) -> dict[str, float]:
        now = self._now()
        wall = now["wall"] - self.start["wall"]
        d = {k: now[k] - self.start[k] for k in now}
        # Backends that exit during the interval take their CPU time with them.
        d["postgres"] = max(0.0, d["postgres"])
        return {
            "wall_s": round(wall, 3),
            "server_cpu_s": round(d["server"], 3),
            "server_cores": round(d["server"] / wall, 3) if wall else 0.0,
            "postgres_cpu_s": round(d["postgres"], 3),
            "postgres_cores": round(d["postgres"] / wall, 3) if wall else 0.0,
            "host_busy_cores": round(d["host_busy"] / wall, 3) if wall else 0.0,
            "host_softirq_cores": round(d["softirq"] / wall, 3) if wall else 0.0,
        }


# --- server subprocesses -------------------------------------------------------


def _preexec_raise_nofile() -> None:  # runs in the child between fork and exec
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


@dataclass
class ServerProcess:
    """A server subprocess (G-Chat node or raw relay) and its log file."""

    name: str
    proc: subprocess.Popen[bytes]
    port: int
    log_path: Path
    _log: IO[bytes]

    @property
    def pid(self) -> int:
        return self.proc.pid

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}"

    def rss_kib(self) -> int:
        return rss_kib(self.pid)

    def stop(self, timeout: float = 20) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self._log.close()


def _spawn(name: str, argv: list[str], env: dict[str, str], log_dir: Path) -> tuple[
    subprocess.Popen[bytes], Path, IO[bytes]
]:
    log_dir.mkdir(parents=True, exist_ok=True)
    log_path = log_dir / f"{name}.log"
    log = open(log_path, "ab")  # noqa: SIM115 - closed by ServerProcess.stop
    proc = subprocess.Popen(
        argv,
        cwd=REPO,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        preexec_fn=_preexec_raise_nofile,  # noqa: PLW1509 - only setrlimit
    )
    return proc, log_path, log


def _wait_http(
    port: int, path: str, proc: subprocess.Popen[bytes], log: Path, timeout: float
) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited early (status {proc.returncode}); see {log}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=2) as r:
                if r.status == 200:
                    return
        except OSError:
            time.sleep(0.2)
    raise RuntimeError(f"server not ready after {timeout}s; see {log}")


def node_env(database_url: str, data_dir: Path, port: int, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("GCHAT_")}
    env |= {
        "GCHAT_DATABASE_URL": database_url,
        "GCHAT_DATA_DIR": str(data_dir),
        "GCHAT_PORT": str(port),
        "GCHAT_HOST": "127.0.0.1",
        # Measure the server, not its per-device throttles (50 sends/s by default).
        "GCHAT_RATE_LIMITS": "messages=1000000/1000000,bundle_fetches=1000000/1000000,"
        "bundle_fetches_per_target=1000000/1000000,frames=1000000/1000000,"
        "searches=1000000/1000000",
        # Every simulated device connects from loopback (exempt by default).
        "PYTHONUNBUFFERED": "1",
    }
    env |= extra
    return env


def start_node(
    name: str, database_url: str, data_dir: Path, log_dir: Path, **extra_env: str
) -> ServerProcess:
    """``python -m gchat serve`` on a free port; returns once /readyz says ready."""
    port = free_port()
    env = node_env(database_url, data_dir, port, **extra_env)
    proc, log_path, log = _spawn(name, [sys.executable, "-m", "gchat", "serve"], env, log_dir)
    _wait_http(port, "/readyz", proc, log_path, 90)
    return ServerProcess(name, proc, port, log_path, log)


def start_raw_relay(log_dir: Path, module: str = "loadtests.raw_relay",
                    name: str = "raw-relay") -> ServerProcess:
    """A bare reference server (``module``, which prints "listening" once it
    accepts connections) on a free port."""
    port = free_port()
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    argv = [sys.executable, "-m", module, "--port", str(port)]
    earlier = log_dir / f"{name}.log"  # a restart appends to the same log
    start = earlier.stat().st_size if earlier.exists() else 0
    proc, log_path, log = _spawn(name, argv, env, log_dir)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{name} exited early; see {log_path}")
        if b"listening" in log_path.read_bytes()[start:]:
            return ServerProcess(name, proc, port, log_path, log)
        time.sleep(0.1)
    raise RuntimeError(f"{name} did not start; see {log_path}")


def bootstrap_admin(database_url: str, data_dir: Path) -> dict[str, Any]:
    """``python -m gchat admin bootstrap``: the first superadmin and its code."""
    env = node_env(database_url, data_dir, 0)
    out = subprocess.run(
        [sys.executable, "-m", "gchat", "admin", "bootstrap", "--agency-code", "LOAD",
         "--agency-name", "Load test agency", "--name", "Load admin", "--json"],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=120, check=False,
    )
    if out.returncode != 0:
        raise RuntimeError(f"admin bootstrap failed: {out.stderr}")
    result: dict[str, Any] = json.loads(out.stdout.strip().splitlines()[-1])
    return result


def redis_available(url: str) -> bool:
    parts = urlsplit(url)
    with contextlib.suppress(OSError), socket.create_connection(
        (parts.hostname or "127.0.0.1", parts.port or 6379), timeout=1
    ) as s:
        s.sendall(b"PING\r\n")
        return s.recv(16).startswith(b"+PONG")
    return False


def redis_broker_available() -> bool:
    return (REPO / "gchat" / "runtime" / "redis_broker.py").exists()


class Workspace:
    """A temporary folder for node data (keys) and server logs."""

    def __init__(self) -> None:
        self.root = Path(tempfile.mkdtemp(prefix="gchat-loadtest-"))

    def path(self, name: str) -> Path:
        p = self.root / name
        p.mkdir(parents=True, exist_ok=True)
        return p

    def cleanup(self, keep_logs_in: Path | None = None) -> None:
        if keep_logs_in is not None:
            keep_logs_in.mkdir(parents=True, exist_ok=True)
            for log in (self.root / "logs").glob("*.log"):
                shutil.copy(log, keep_logs_in / log.name)
        shutil.rmtree(self.root, ignore_errors=True)


async def sleep_until(deadline: float) -> None:
    delay = deadline - time.monotonic()
    if delay > 0:
        await asyncio.sleep(delay)
