"""The test run's own PostgreSQL cluster: real PostgreSQL, tuned for throw-away data.

Why: every test gets a database cloned from a migrated template and dropped
afterwards (``tests/fixtures.py``). On a durable cluster each of those costs
disk work that tests do not need: PostgreSQL 15 checkpoints on every
``DROP DATABASE``, every commit waits for an fsync, and on ext4 creating a
clone's ~300 files slows down badly once many were just deleted (the kernel
skips recently freed inodes; measured 30 ms -> 300+ ms per clone). So unless
``GCHAT_TEST_DATABASE_URL`` names a server, ``make test`` starts one cluster
for the whole run:

- made with the installed ``initdb`` (the same programs the embedded
  PostgreSQL of ``gchat serve`` finds: :func:`find_binaries`), in memory
  (``/dev/shm``) when there is room, else in the temporary folder;
- ``fsync``, ``full_page_writes`` and ``synchronous_commit`` off: a crash
  loses the cluster, which is thrown away at the end of the run anyway;
- listening on 127.0.0.1 at a free port with ``trust`` for ``postgres``, so
  its DSN has the same shape as the system one
  (``postgresql://postgres@127.0.0.1:<port>/postgres``);
- started once by the pytest process that runs the session (the xdist
  controller), which exports its DSN as ``GCHAT_TEST_DATABASE_URL`` to the
  workers and every process a test starts, and stopped by it at the end.

Everything else stays as it was: the same PostgreSQL version, SQL, locks,
LISTEN/NOTIFY and ``pg_terminate_backend`` as the system server. A run that
was killed leaves its folder behind; the next run removes it (its pytest is
gone) after stopping its server.

When root, PostgreSQL refuses to run as root, so the programs run as the
``postgres`` system user (as in :mod:`gchat.runtime.embedded_postgres`).
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
from pathlib import Path

from gchat.runtime.embedded_postgres import clean_env, find_binaries, pid_alive

__all__ = ["SessionPostgres"]

_PREFIX = "gchat-test-pg-"
#: Use /dev/shm only with this much room: a run's databases take ~1 GiB at peak
#: (the million-leaf and scale tests), the rest is headroom.
_SHM_NEEDED = 4 << 30
_SETTINGS = {
    "listen_addresses": "127.0.0.1",
    "unix_socket_directories": "",  # TCP only: no socket file to clean up
    "fsync": "off",
    "full_page_writes": "off",
    "synchronous_commit": "off",
    "max_connections": "200",  # the system server's 100 plus room for -n workers
}


def _base_dir() -> Path:
    shm = Path("/dev/shm")
    with contextlib.suppress(OSError):
        if shutil.disk_usage(shm).free >= _SHM_NEEDED and os.access(shm, os.W_OK):
            return shm
    return Path(tempfile.gettempdir())


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


class SessionPostgres:
    """One throw-away PostgreSQL cluster (see the module docstring)."""

    def __init__(self) -> None:
        self.binaries = find_binaries()
        self.account = pwd.getpwnam("postgres") if os.geteuid() == 0 else None
        self.root: Path | None = None
        self.dsn: str | None = None

    def _run(self, *args: str, timeout: float = 120) -> None:
        account = self.account
        proc = subprocess.run(
            list(args),
            capture_output=True,
            text=True,
            env=clean_env(),
            cwd="/",
            stdin=subprocess.DEVNULL,
            timeout=timeout,
            check=False,
            user=account.pw_uid if account else None,
            group=account.pw_gid if account else None,
            extra_groups=[] if account else None,
        )
        if proc.returncode != 0:
            raise RuntimeError(
                f"{Path(args[0]).name} failed (exit {proc.returncode}): "
                f"{(proc.stderr or proc.stdout).strip()}"
            )

    def _stop_server(self, root: Path) -> None:
        if (root / "pgdata" / "postmaster.pid").exists():
            with contextlib.suppress(RuntimeError, subprocess.TimeoutExpired):
                self._run(
                    self.binaries.program("pg_ctl"),
                    *("stop", "-D", str(root / "pgdata"), "-m", "immediate", "-w", "-s"),
                    timeout=60,
                )

    def sweep(self) -> None:
        """Remove clusters left by runs that were killed (their pytest is gone)."""
        for base in {_base_dir(), Path(tempfile.gettempdir())}:
            for root in base.glob(_PREFIX + "*"):
                try:
                    owner = int((root / "owner").read_text())
                except (OSError, ValueError):
                    owner = 0
                if owner and pid_alive(owner):
                    continue
                self._stop_server(root)
                shutil.rmtree(root, ignore_errors=True)

    def start(self) -> str:
        """Create and start the cluster; return its admin DSN."""
        self.sweep()
        root = self.root = Path(tempfile.mkdtemp(prefix=_PREFIX, dir=_base_dir()))
        (root / "owner").write_text(str(os.getpid()))
        if self.account is not None:
            os.chown(root, self.account.pw_uid, self.account.pw_gid)
        pgdata = root / "pgdata"
        self._run(
            self.binaries.program("initdb"),
            *("-D", str(pgdata), "--username=postgres", "--auth=trust"),
            *("--encoding=UTF8", "--locale=C", "--no-sync"),
        )
        with (pgdata / "postgresql.conf").open("a") as conf:
            conf.write("\n# The test run's settings (tests/session_postgres.py)\n")
            conf.writelines(f"{k} = '{v}'\n" for k, v in _SETTINGS.items())
        for attempt in range(5):
            port = _free_port()
            try:
                self._run(
                    self.binaries.program("pg_ctl"),
                    *("start", "-D", str(pgdata), "-l", str(root / "postgres.log")),
                    *("-w", "-t", "60", "-s", "-o", f"-p {port}"),
                )
                break
            except RuntimeError:
                if attempt == 4:  # the port was taken meanwhile, five times over?
                    raise
        self.dsn = f"postgresql://postgres@127.0.0.1:{port}/postgres"
        return self.dsn

    def stop(self) -> None:
        """Stop the server at once (nothing in it is kept) and remove its folder."""
        if self.root is not None:
            self._stop_server(self.root)
            shutil.rmtree(self.root, ignore_errors=True)
            self.root = None
