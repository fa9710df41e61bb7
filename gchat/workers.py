"""``gchat serve --workers N``: N node processes on one port.

Why: a node is one Python process and one event loop, so it uses one core.
The parent started here runs no node itself; it prepares what the workers
share and would otherwise race for, starts them, and watches them:

- the database: the embedded PostgreSQL is started (and migrated) here, once,
  and every worker gets its address (``GCHAT_DATABASE_URL``);
- the server keys and the node id are made here, once, if missing;
- the port: each worker binds it with ``SO_REUSEPORT`` and the kernel spreads
  new connections over them. The parent first checks that no other process
  holds the port (with ``SO_REUSEPORT`` alone, a second deployment started
  by the same user would silently share it); a port of 0 is chosen here and
  kept bound (never listening, so it takes no connections) until exit;
- the broker: Redis when configured, otherwise PostgreSQL LISTEN/NOTIFY
  (``broker = postgres``, gchat.runtime.postgres_broker);
- the audit sequencer needs nothing: every worker runs the loop, and the
  advisory lock lets exactly one of them (across all nodes) lead;
- names and metrics: worker ``i`` (1..N) is node ``<node id>-w<i>``; with
  ``metrics_port`` P set, it serves /metrics on ``P + i - 1``, one scrape
  target per worker. Without it, /metrics on the client port is answered by
  whichever worker the kernel picked (labelled with that worker's node).

Start: the parent waits until every worker says it serves (one line on a
pipe). If one cannot start, the others are stopped and ``gchat serve`` exits
1 with one sentence naming the worker (its own error is the line above).

A worker that dies later: the others go on serving (their connections are
untouched; the dead worker's clients reconnect and land on a live one), and
the parent starts it again after 1 s, doubling up to 30 s while it keeps
dying within a minute of starting. Nothing accepted is lost: what it
committed is in PostgreSQL, and the other workers notice that it fell silent
and re-read their devices' inboxes (the brokers' silent-node rule).

Stop: SIGTERM or SIGINT to the parent is forwarded as SIGTERM to every
worker, each stops gracefully (1001 to its clients, in-flight commits
finished); the parent waits for them, then stops the embedded PostgreSQL.
Workers die with the parent (``PR_SET_PDEATHSIG``) if it is killed outright.
"""

import asyncio
import contextlib
import ctypes
import logging
import os
import signal
import socket
import sys
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

from gchat import app
from gchat.config import Config
from gchat.runtime import logs, node_id
from gchat.runtime.embedded_postgres import EmbeddedPostgres
from gchat.runtime.server_keys import ServerKeys
from gchat.runtime.version import version

log = logging.getLogger("gchat.workers")

#: How long a stopping worker gets before it is killed.
STOP_TIMEOUT = 25.0  # under systemd's TimeoutStopSec=30s (deploy/systemd)
#: A worker that lived shorter than this before dying is restarted later each time.
_STABLE_AFTER = 60.0
_RESTART_MIN = 1.0
_RESTART_MAX = 30.0


class WorkerFailed(Exception):
    """A worker could not start: the message is the sentence for the operator."""


@dataclass
class Worker:
    index: int
    proc: asyncio.subprocess.Process | None = None
    started: float = 0.0
    delay: float = _RESTART_MIN
    restarts: int = field(default=0)


def die_with_parent() -> None:
    """In a worker, first thing: SIGTERM when the parent dies (Linux; elsewhere
    nothing). Done by the worker itself, not between fork and exec, because
    the parent has threads then (a fork of a threaded process may run no
    library code before exec)."""
    with contextlib.suppress(Exception):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def _check_port(host: str, port: int) -> socket.socket | None:
    """Refuse a port another process holds; choose and hold one for port 0."""
    family, kind, proto, _, address = socket.getaddrinfo(
        host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
    )[0]
    probe = socket.socket(family, kind, proto)
    try:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if port == 0:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        probe.bind(address)
    except OSError:
        probe.close()
        raise
    if port == 0:
        return probe  # bound, never listening: reserves the port, takes no connections
    probe.close()
    return None


class Supervisor:
    """Starts, watches and stops the workers of one ``gchat serve --workers N``."""

    def __init__(self, config: Config, config_file: Path | None) -> None:
        self.config = config
        self._config_file = config_file
        self._workers = [Worker(i) for i in range(1, config.workers + 1)]
        self._stopping = asyncio.Event()
        self._embedded: EmbeddedPostgres | None = None

    def _worker_env(self, worker: Worker, dsn: str, port: int) -> dict[str, str]:
        config = self.config
        env = dict(os.environ) | {
            "GCHAT_DATABASE_URL": dsn,
            "GCHAT_HOST": config.host,
            "GCHAT_PORT": str(port),
            "GCHAT_DATA_DIR": str(config.data_dir),
            "GCHAT_NODE_ID": f"{config.node_id}-w{worker.index}",
            "GCHAT_WORKERS": "1",
            "GCHAT_REUSE_PORT": "1",
        }
        if not config.redis_url:
            env["GCHAT_BROKER"] = "postgres"
        if config.metrics_port:
            env["GCHAT_METRICS_PORT"] = str(config.metrics_port + worker.index - 1)
        return env

    async def _spawn(self, worker: Worker, env: dict[str, str]) -> bool:
        """Start one worker; True once it serves, False if it exited first."""
        read_end, write_end = os.pipe()
        argv = [sys.executable, "-m", "gchat"]
        if self._config_file is not None:
            argv += ["--config", str(self._config_file)]
        argv += ["serve", "--ready-fd", str(write_end)]
        try:
            worker.proc = await asyncio.create_subprocess_exec(
                *argv, env=env, pass_fds=(write_end,)
            )
        finally:
            os.close(write_end)
        worker.started = time.monotonic()
        try:
            said = await asyncio.to_thread(os.read, read_end, 16)
        finally:
            os.close(read_end)
        return said.startswith(b"ready")

    async def run(self) -> None:
        config = self.config
        try:
            listener = _check_port(config.host, config.port)
        except OSError as error:
            raise WorkerFailed(
                f"cannot listen on {config.host} port {config.port}: {error.strerror or error}"
            ) from None
        try:
            await self._run(listener)
        finally:
            if listener is not None:
                listener.close()

    async def _run(self, listener: socket.socket | None) -> None:
        config = self.config
        port = listener.getsockname()[1] if listener is not None else config.port
        # What the workers share, made once here: schema, keys, the database.
        db, self._embedded = await app.open_database(config)
        await db.close()
        try:
            ServerKeys.load_or_create(config.key_directory)
            embedded = self._embedded
            dsn = config.database_url or (embedded.dsn() if embedded else "")
            envs = {w.index: self._worker_env(w, dsn, port) for w in self._workers}
            started = await asyncio.gather(*(self._spawn(w, envs[w.index]) for w in self._workers))
            failed = [w for w, ok in zip(self._workers, started, strict=True) if not ok]
            if failed:
                first = failed[0]
                assert first.proc is not None
                status = await first.proc.wait()
                await self._stop_all()
                raise WorkerFailed(
                    f"worker {first.index} of {len(self._workers)} could not start "
                    f"(exit status {status}); its error is above"
                )
            if config.log_format == "json":  # one record, so every output line stays JSON
                log.info("%s", self._banner(port))
            else:
                print(self._banner(port), flush=True)
            loop = asyncio.get_running_loop()
            for signum in (signal.SIGTERM, signal.SIGINT):
                loop.add_signal_handler(signum, self._stopping.set)
            watchers = [asyncio.create_task(self._watch(w, envs[w.index])) for w in self._workers]
            await self._stopping.wait()
            for task in watchers:
                task.cancel()
            await asyncio.gather(*watchers, return_exceptions=True)
            await self._stop_all()
        finally:
            if self._embedded is not None:
                await self._embedded.stop()

    async def _watch(self, worker: Worker, env: dict[str, str]) -> None:
        """Restart this worker whenever it dies, later each time it dies young."""
        while True:
            assert worker.proc is not None
            status = await worker.proc.wait()
            if self._stopping.is_set():
                return
            lived = time.monotonic() - worker.started
            if lived >= _STABLE_AFTER:
                worker.delay = _RESTART_MIN
            log.warning(
                "worker %d (pid %d) exited with status %d after %.0f s: the others go on; "
                "restarting it in %.0f s",
                worker.index,
                worker.proc.pid,
                status,
                lived,
                worker.delay,
            )
            await asyncio.sleep(worker.delay)
            worker.delay = min(_RESTART_MAX, worker.delay * 2)
            worker.restarts += 1
            if await self._spawn(worker, env):
                log.info("worker %d is back (pid %d)", worker.index, worker.proc.pid)

    async def _stop_all(self) -> None:
        """SIGTERM to every running worker; SIGKILL to any still running after the timeout."""
        running = [w.proc for w in self._workers if w.proc and w.proc.returncode is None]
        for proc in running:
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(signal.SIGTERM)
        try:
            await asyncio.wait_for(asyncio.gather(*(p.wait() for p in running)), STOP_TIMEOUT)
        except TimeoutError:
            for proc in running:
                if proc.returncode is None:
                    log.error(
                        "worker pid %d did not stop in %.0f s: killed", proc.pid, STOP_TIMEOUT
                    )
                    with contextlib.suppress(ProcessLookupError):
                        proc.kill()
            await asyncio.gather(*(p.wait() for p in running))

    def _banner(self, port: int) -> str:
        config = self.config
        scheme = "wss" if config.tls_cert else "ws"
        host = f"[{config.host}]" if ":" in config.host else config.host
        n = len(self._workers)
        if config.metrics_port:
            metrics = (
                f"http://{config.metrics_host}:{config.metrics_port}"
                f"..{config.metrics_port + n - 1}/metrics (one port per worker)"
            )
        else:
            metrics = "/metrics on the client port, answered by any one worker"
            log.warning(
                "metrics_port is not set: /metrics on the client port shows one worker at a "
                "time; set metrics_port to scrape each worker (docs/OPERATIONS.md)"
            )
        broker = "Redis" if config.redis_url else "PostgreSQL LISTEN/NOTIFY"
        return "\n".join(
            [
                f"G-Chat {version()} node {config.node_id}: {n} workers",
                f"  listening  {scheme}://{host}:{port} (SO_REUSEPORT)",
                f"  workers    {', '.join(f'{config.node_id}-w{w.index}' for w in self._workers)}",
                f"  signals    {broker}",
                f"  metrics    {metrics}",
                f"  stop       Ctrl-C, or kill -TERM {os.getpid()}",
            ]
        )


def main(config: Config, config_file: Path | None) -> None:
    """Run ``config.workers`` workers until SIGTERM or SIGINT."""
    config = replace(config, node_id=node_id.load_or_create(config.data_dir, config.node_id))
    logs.configure(config.log_format, config.node_id)
    config.data_dir.mkdir(parents=True, exist_ok=True)
    asyncio.run(Supervisor(config, config_file).run())
