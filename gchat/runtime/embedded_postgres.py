"""Embedded PostgreSQL: a private cluster under the project's data folder.

Why this exists (docs/OPERATIONS.md): ``gchat serve`` with no database
configured must work on a machine that merely has the PostgreSQL server
binaries installed.  Using the system cluster would need credentials and
root to configure it, so instead we create our *own* cluster with the
system's ``initdb`` and run it with ``pg_ctl``.  PostgreSQL stays the
truth (docs/ARCHITECTURE.md); only who runs it changes.

Layout under ``root`` (for example ``./data/postgres``)::

    root/
      pgdata/         the cluster (0700); created by initdb
      socket/         the Unix socket directory (0700)
      postgres.log    the server log (pg_ctl -l)
      .lock           serialises concurrent start() calls on this folder

Security model: the cluster listens **only** on a Unix socket
(``listen_addresses = ''``) in a 0700 directory, so the file system is the
access control and ``trust`` authentication inside it is safe: only the
owning OS account (and root) can reach the socket.  No TCP port is opened.

Running as root: ``initdb``, ``pg_ctl`` and ``postgres`` refuse to run as
root (a deliberate PostgreSQL safety rule).  When this process is root we
run them as the ``postgres`` system user (created by Debian's
``postgresql`` package) and chown the cluster folder (0700), the socket
directory and the log file to it.  Every directory above ``root`` must then
be traversable by that user; :meth:`EmbeddedPostgres.start` checks this and
says which directory is in the way.

Unix socket paths are limited to 107 bytes.  When ``root/socket`` would be
too long, the socket goes into a short private directory made with
``mkdtemp`` under ``/tmp`` and removed again by :meth:`EmbeddedPostgres.stop`.

Crash recovery: after a crash the cluster may hold a stale
``postmaster.pid`` whose PID was since reused by an unrelated process (common
in containers), which makes PostgreSQL refuse to start.  ``start`` detects
that case and removes the stale lock files; if the recorded postmaster is in
fact still alive and serving this cluster, ``start`` adopts it instead of
starting a second one.

The blocking work (subprocesses, file system) runs in a worker thread via
:func:`asyncio.to_thread` so the event loop is never blocked.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import glob
import os
import pwd
import re
import shutil
import stat
import subprocess
import tempfile
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from urllib.parse import quote

import asyncpg

__all__ = [
    "INSTALL_HINT",
    "EmbeddedPostgres",
    "EmbeddedPostgresError",
    "EmbeddedPostgresUnavailable",
    "PostgresBinaries",
    "clean_env",
    "find_binaries",
    "pid_alive",
    "socket_dir_fits",
]

INSTALL_HINT = (
    "Install the PostgreSQL server: on Debian/Ubuntu `apt-get install postgresql` "
    "(as root), on Fedora/RHEL `dnf install postgresql-server`, on macOS "
    "`brew install postgresql`; or point G-Chat at an existing server with "
    "GCHAT_DATABASE_URL=postgresql://user@host:5432/dbname."
)

#: Linux ``sun_path`` is 108 bytes including the terminating NUL.
SOCKET_PATH_MAX = 107

#: Where distributions put versioned server binaries that are not on PATH.
_VERSIONED_BIN_GLOBS = (
    "/usr/lib/postgresql/*/bin",  # Debian, Ubuntu
    "/usr/pgsql-*/bin",  # PGDG RPMs
    "/usr/local/pgsql/bin",  # source builds
    "/opt/homebrew/opt/postgresql*/bin",  # Homebrew (Apple silicon)
    "/usr/local/opt/postgresql*/bin",  # Homebrew (Intel)
)

_REQUIRED_PROGRAMS = ("initdb", "pg_ctl", "postgres")
_RUNTIME_CONF = "gchat_runtime.conf"
_INCLUDE_LINE = f"include_if_exists = '{_RUNTIME_CONF}'"
_TMP_SOCKET_PREFIX = "gchat-pg-"
_VERSION_RE = re.compile(r"\(PostgreSQL\)\s+(\d+)(?:\.(\d+))?")


class EmbeddedPostgresError(RuntimeError):
    """The embedded cluster could not be created, started or stopped."""


class EmbeddedPostgresUnavailable(EmbeddedPostgresError):
    """The embedded cluster cannot run here at all (binaries or OS user missing).

    The message always says how to fix it, including the alternative of
    configuring an external server with ``GCHAT_DATABASE_URL``.
    """


@dataclass(frozen=True)
class PostgresBinaries:
    """One PostgreSQL installation's server programs (all from one directory).

    ``initdb``, ``pg_ctl`` and ``postgres`` must come from the same version:
    a cluster can only be run by the major version that created it.
    """

    bin_dir: Path
    version: tuple[int, int]

    @property
    def major(self) -> int:
        return self.version[0]

    def program(self, name: str) -> str:
        return str(self.bin_dir / name)


def _is_executable(path: Path) -> bool:
    return path.is_file() and os.access(path, os.X_OK)


def _candidate_bin_dirs() -> list[Path]:
    """Directories that may hold initdb/pg_ctl/postgres: PATH first, then the
    distributions' versioned locations.  Symlinks are resolved so that
    ``/usr/local/bin/pg_ctl -> /usr/lib/postgresql/15/bin/pg_ctl`` counts once
    and points at the directory where its sibling programs really live."""
    dirs: list[Path] = []
    for entry in os.environ.get("PATH", os.defpath).split(os.pathsep):
        if entry and _is_executable(Path(entry) / "pg_ctl"):
            dirs.append((Path(entry) / "pg_ctl").resolve().parent)
    for pattern in _VERSIONED_BIN_GLOBS:
        dirs.extend(Path(p).resolve() for p in sorted(glob.glob(pattern)))
    unique: list[Path] = []
    for d in dirs:
        if d not in unique:
            unique.append(d)
    return unique


def _query_version(pg_ctl: Path) -> tuple[int, int] | None:
    try:
        out = subprocess.run(
            [str(pg_ctl), "--version"],
            capture_output=True,
            text=True,
            timeout=15,
            check=False,
            stdin=subprocess.DEVNULL,
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    m = _VERSION_RE.search(out)
    if m is None:
        return None
    return int(m.group(1)), int(m.group(2) or 0)


def find_binaries(
    required_major: int | None = None, dirs: Iterable[Path] | None = None
) -> PostgresBinaries:
    """Find a complete set of server programs, newest version first.

    ``required_major`` is the version recorded in an existing cluster's
    ``PG_VERSION``: only that major version can run it.  Raises
    :class:`EmbeddedPostgresUnavailable` with an install hint when nothing
    suitable is installed.
    """
    found: list[PostgresBinaries] = []
    for d in _candidate_bin_dirs() if dirs is None else dirs:
        if not all(_is_executable(d / prog) for prog in _REQUIRED_PROGRAMS):
            continue
        version = _query_version(d / "pg_ctl")
        if version is not None:
            found.append(PostgresBinaries(bin_dir=d, version=version))
    if not found:
        raise EmbeddedPostgresUnavailable(
            "Cannot start the embedded PostgreSQL: the server programs "
            "(initdb, pg_ctl, postgres) were not found on PATH or under "
            "/usr/lib/postgresql/*/bin. " + INSTALL_HINT
        )
    if required_major is not None:
        matching = [b for b in found if b.major == required_major]
        if not matching:
            have = ", ".join(sorted({str(b.major) for b in found}))
            raise EmbeddedPostgresUnavailable(
                f"The embedded PostgreSQL cluster was created by PostgreSQL "
                f"{required_major}, but only version(s) {have} are installed and a "
                f"cluster can only be run by the major version that created it. "
                f"Install PostgreSQL {required_major} (Debian/Ubuntu: `apt-get install "
                f"postgresql-{required_major}`), or dump/upgrade the cluster, or set "
                f"GCHAT_DATABASE_URL to use another server."
            )
        found = matching
    # max() keeps the first of equal versions, so PATH wins a tie.
    return max(found, key=lambda b: b.version)


def socket_dir_fits(directory: Path, port: int = 5432) -> bool:
    """Whether ``<directory>/.s.PGSQL.<port>`` fits in a Unix socket address."""
    return len(os.fsencode(str(directory))) + len(f"/.s.PGSQL.{port}") <= SOCKET_PATH_MAX


def _conf_quote(value: str) -> str:
    """Quote a string for postgresql.conf (single quotes, doubled inside)."""
    return "'" + value.replace("'", "''") + "'"


def _ident_quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def clean_env() -> dict[str, str]:
    """The environment for PostgreSQL programs, without the ``PG*`` variables
    that would silently redirect them (PGDATA, PGPORT, PGHOST, PGOPTIONS...)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
    env.setdefault("PATH", os.defpath)
    return env


def pid_alive(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # exists, owned by someone else
    return True


def _is_postmaster_of(pid: int, pgdata: Path) -> bool:
    """Whether live process ``pid`` is the postmaster serving ``pgdata``.

    The postmaster chdirs into its data directory, so ``/proc/<pid>/cwd`` is
    definitive; when that is unreadable fall back to its command line, which
    pg_ctl gives as ``postgres -D <pgdata>``.  Without /proc (not Linux) we
    cannot tell and assume it is ours, as pg_ctl itself would.
    """
    proc = Path("/proc") / str(pid)
    if not Path("/proc/self").exists():
        return True
    try:
        return Path(os.readlink(proc / "cwd")).resolve() == pgdata.resolve()
    except FileNotFoundError:
        return False
    except OSError:
        pass
    try:
        cmdline = (proc / "cmdline").read_bytes().split(b"\0")
    except OSError:
        return False
    return bool(cmdline) and b"postgres" in cmdline[0] and os.fsencode(str(pgdata)) in cmdline


@dataclass(frozen=True)
class _PidFile:
    pid: int
    socket_dir: Path | None
    port: int | None


def _read_pid_file(pgdata: Path) -> _PidFile | None:
    """Parse ``postmaster.pid``: line 1 PID, 4 port, 5 first socket directory."""
    try:
        lines = (pgdata / "postmaster.pid").read_text().splitlines()
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise EmbeddedPostgresError(f"cannot read {pgdata / 'postmaster.pid'}: {exc}") from exc
    try:
        pid = int(lines[0].strip())
    except (IndexError, ValueError):
        pid = 0
    port: int | None = None
    if len(lines) > 3 and lines[3].strip().isdigit():
        port = int(lines[3].strip())
    socket_dir = Path(lines[4].strip()) if len(lines) > 4 and lines[4].strip() else None
    return _PidFile(pid=pid, socket_dir=socket_dir, port=port)


def _groups_of(account: pwd.struct_passwd) -> set[int]:
    return set(os.getgrouplist(account.pw_name, account.pw_gid))


def _first_untraversable(path: Path, account: pwd.struct_passwd) -> Path | None:
    """The first directory from ``/`` down to ``path`` that ``account`` cannot
    enter (no x permission for it), or None.  ACLs are ignored."""
    groups = _groups_of(account)
    for d in [*reversed(path.parents), path]:
        st = d.stat()
        if account.pw_uid == st.st_uid:
            ok = bool(st.st_mode & stat.S_IXUSR)
        elif st.st_gid in groups:
            ok = bool(st.st_mode & stat.S_IXGRP)
        else:
            ok = bool(st.st_mode & stat.S_IXOTH)
        if not ok:
            return d
    return None


def _tail(path: Path, lines: int = 25) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return "(no server log)"
    return "\n".join(text.splitlines()[-lines:]) or "(server log is empty)"


class EmbeddedPostgres:
    """A private PostgreSQL cluster under ``root``, started and stopped by the server.

    Usage::

        pg = EmbeddedPostgres(Path("data/postgres"))
        dsn = await pg.start()      # creates the cluster on first use
        ...                         # asyncpg.create_pool(dsn)
        await pg.stop()

    or ``async with EmbeddedPostgres(...) as dsn: ...``.

    ``start`` reuses an existing cluster (and an already running postmaster
    of it), and creates ``database`` if it is missing.
    """

    def __init__(
        self,
        root: str | os.PathLike[str],
        *,
        database: str = "gchat",
        user: str = "postgres",
        port: int = 5432,
        bin_dir: str | os.PathLike[str] | None = None,
        system_user: str = "postgres",
        timeout: float = 60.0,
        fsync: bool = True,
    ) -> None:
        """
        :param root: folder that holds the cluster, socket directory and log.
        :param database: database created on start and named in the DSN.
        :param user: the cluster's superuser (initdb ``--username``).
        :param port: only names the socket file (``.s.PGSQL.<port>``); no TCP.
        :param bin_dir: use the programs from this directory instead of searching.
        :param system_user: OS account that runs PostgreSQL when we are root.
        :param timeout: seconds to wait for the server to start or stop.
        :param fsync: False trades crash safety for speed; for tests only.
        """
        self.root = Path(root).absolute()
        self.database = database
        self.user = user
        self.port = port
        self.bin_dir = Path(bin_dir).absolute() if bin_dir is not None else None
        self.system_user = system_user
        self.timeout = timeout
        self.fsync = fsync
        self._binaries: PostgresBinaries | None = None
        self._socket_dir: Path | None = None
        self._tmp_socket_dir: Path | None = None
        self._running = False
        self._adopted = False

    # -- public API -------------------------------------------------------

    @property
    def pgdata(self) -> Path:
        return self.root / "pgdata"

    @property
    def log_path(self) -> Path:
        return self.root / "postgres.log"

    @property
    def socket_dir(self) -> Path | None:
        """Where the server's socket is, once started."""
        return self._socket_dir

    @property
    def programs_dir(self) -> Path | None:
        """The programs' folder of the running cluster (its pg_dump matches it)."""
        return self._binaries.bin_dir if self._binaries is not None else None

    @property
    def running(self) -> bool:
        return self._running

    @property
    def adopted(self) -> bool:
        """True when :meth:`start` found this cluster's postmaster already
        running (started by another process, e.g. a live node while a CLI
        command runs, or left over by a crashed one) and reused it.  A caller
        that only borrows the cluster should then not :meth:`stop` it."""
        return self._adopted

    def dsn(self, database: str | None = None) -> str:
        """asyncpg DSN for ``database`` (default: the configured one).

        The port is spelled out because asyncpg would otherwise take it from
        ``PGPORT`` and look for the wrong socket file.
        """
        if self._socket_dir is None:
            raise EmbeddedPostgresError("the embedded PostgreSQL is not started")
        host = quote(str(self._socket_dir), safe="/")
        db = quote(database or self.database, safe="")
        return f"postgresql://{quote(self.user, safe='')}@/{db}?host={host}&port={self.port}"

    async def start(self) -> str:
        """Create (first time) and start the cluster; return the asyncpg DSN."""
        if not self._running:
            await asyncio.to_thread(self._start_sync)
            self._running = True
        try:
            await self._ensure_database()
        except BaseException:
            await self.stop()
            raise
        return self.dsn()

    async def stop(self) -> None:
        """Stop the server (fast shutdown: sessions are cut, data is safe)."""
        if self._running:
            await asyncio.to_thread(self._stop_sync)
            self._running = False

    async def __aenter__(self) -> str:
        return await self.start()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()

    # -- internals: blocking, run in a worker thread ----------------------

    def _account(self) -> pwd.struct_passwd | None:
        """The OS account to run PostgreSQL as: None means "as ourselves"."""
        if os.geteuid() != 0:
            return None
        try:
            return pwd.getpwnam(self.system_user)
        except KeyError:
            raise EmbeddedPostgresUnavailable(
                f"Running as root, but PostgreSQL refuses to run as root and there is "
                f"no '{self.system_user}' system user to run it as. Installing the "
                f"server package creates it. " + INSTALL_HINT
            ) from None

    def _run(
        self,
        args: Sequence[str],
        account: pwd.struct_passwd | None,
        *,
        check: bool = True,
        timeout: float | None = None,
    ) -> subprocess.CompletedProcess[str]:
        """Run a PostgreSQL program, as ``account`` when we are root."""
        env = clean_env()
        if account is not None:
            env.update(HOME=account.pw_dir, USER=account.pw_name, LOGNAME=account.pw_name)
        proc = subprocess.run(
            list(args),
            capture_output=True,
            text=True,
            env=env,
            cwd=str(self.root),  # the service account may not be able to enter our cwd
            stdin=subprocess.DEVNULL,
            timeout=timeout if timeout is not None else self.timeout + 30,
            check=False,
            user=account.pw_uid if account is not None else None,
            group=account.pw_gid if account is not None else None,
            extra_groups=[] if account is not None else None,
        )
        if check and proc.returncode != 0:
            raise EmbeddedPostgresError(
                f"{Path(args[0]).name} failed (exit {proc.returncode}): "
                f"{(proc.stderr or proc.stdout).strip()}"
            )
        return proc

    def _give_to(self, path: Path, account: pwd.struct_passwd | None, mode: int) -> None:
        if account is not None:
            os.chown(path, account.pw_uid, account.pw_gid)
        os.chmod(path, mode)

    @contextlib.contextmanager
    def _folder_lock(self) -> Iterator[None]:
        """Serialise start/stop of this folder across processes (two servers
        started at once must not both run initdb or both start a postmaster)."""
        fd = os.open(self.root / ".lock", os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)

    def _find_binaries(self) -> PostgresBinaries:
        """Binaries able to run this cluster (the version in PG_VERSION, if any)."""
        required: int | None = None
        version_file = self.pgdata / "PG_VERSION"
        if version_file.exists():
            required = int(version_file.read_text().strip().split(".")[0])
        if self.bin_dir is not None:
            return find_binaries(required, [self.bin_dir])
        return find_binaries(required)

    def _start_sync(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        self._find_binaries()  # fail early, with the install hint, before anything else
        account = self._account()
        if account is not None:
            blocked = _first_untraversable(self.root, account)
            if blocked is not None:
                raise EmbeddedPostgresError(
                    f"The '{account.pw_name}' user that runs the embedded PostgreSQL "
                    f"cannot enter {blocked} (PostgreSQL refuses to run as root). "
                    f"Allow it (`chmod o+x {blocked}`), use a data folder elsewhere, "
                    f"or set GCHAT_DATABASE_URL."
                )
        with self._folder_lock():
            # Again under the lock: another process may have just created the cluster.
            binaries = self._binaries = self._find_binaries()
            if not (self.pgdata / "PG_VERSION").exists():
                self._init_cluster(binaries, account)
            self._ensure_include_line()
            self._adopted = self._adopt_running_postmaster()
            if self._adopted:
                return
            self._prepare_socket_dir(account)
            self._write_runtime_conf(account)
            if not self.log_path.exists():
                self.log_path.touch(mode=0o600)
            self._give_to(self.log_path, account, 0o600)
            proc = self._run(
                [
                    binaries.program("pg_ctl"),
                    "start",
                    "-D",
                    str(self.pgdata),
                    "-l",
                    str(self.log_path),
                    "-w",
                    "-t",
                    str(int(self.timeout)),
                    "-s",
                ],
                account,
                check=False,
            )
            if proc.returncode != 0:
                self._cleanup_tmp_socket_dir()
                raise EmbeddedPostgresError(
                    f"the embedded PostgreSQL in {self.pgdata} did not start "
                    f"(pg_ctl exit {proc.returncode}: {(proc.stderr or proc.stdout).strip()}). "
                    f"Last lines of {self.log_path}:\n{_tail(self.log_path)}"
                )

    def _init_cluster(self, binaries: PostgresBinaries, account: pwd.struct_passwd | None) -> None:
        """initdb into a scratch folder and rename it into place, so that an
        interrupted first start never leaves a half-made cluster behind."""
        scratch = self.root / "pgdata.initdb-tmp"
        if scratch.exists():
            shutil.rmtree(scratch)
        if self.pgdata.exists():
            if any(self.pgdata.iterdir()):
                raise EmbeddedPostgresError(
                    f"{self.pgdata} exists but is not a PostgreSQL cluster (no PG_VERSION); "
                    f"move it away so that a new cluster can be created there."
                )
            self.pgdata.rmdir()
        scratch.mkdir(mode=0o700)
        self._give_to(scratch, account, 0o700)
        args = [
            binaries.program("initdb"),
            "-D",
            str(scratch),
            f"--username={self.user}",
            "--auth=trust",  # safe: the only way in is a 0700 socket directory
            "--encoding=UTF8",
            "--locale=C",
        ]
        if not self.fsync:
            args.append("--no-sync")
        try:
            self._run(args, account, timeout=300)
        except BaseException:
            shutil.rmtree(scratch, ignore_errors=True)
            raise
        scratch.rename(self.pgdata)

    def _ensure_include_line(self) -> None:
        conf = self.pgdata / "postgresql.conf"
        text = conf.read_text()
        if _INCLUDE_LINE not in text.splitlines():
            with conf.open("a") as f:
                f.write("\n# Added by G-Chat: per-start settings (socket only).\n")
                f.write(_INCLUDE_LINE + "\n")

    def _adopt_running_postmaster(self) -> bool:
        """Use a postmaster that already serves this cluster (say, left over by
        a server that was killed), or clear its lock files if it is dead."""
        info = _read_pid_file(self.pgdata)
        if info is None:
            return False
        if (
            pid_alive(info.pid)
            and _is_postmaster_of(info.pid, self.pgdata)
            and info.socket_dir is not None
        ):
            if info.port is not None:
                self.port = info.port
            self._socket_dir = info.socket_dir
            if info.socket_dir != self.root / "socket" and self._owns_socket_dir(info.socket_dir):
                self._tmp_socket_dir = info.socket_dir  # ours to remove on stop
            return True
        # Stale: PostgreSQL would refuse to start if the recorded PID now
        # belongs to an unrelated live process, so remove the lock files.
        (self.pgdata / "postmaster.pid").unlink(missing_ok=True)
        if info.socket_dir is not None and self._owns_socket_dir(info.socket_dir):
            port = info.port or self.port
            for name in (f".s.PGSQL.{port}", f".s.PGSQL.{port}.lock"):
                (info.socket_dir / name).unlink(missing_ok=True)
            if info.socket_dir != self.root / "socket":
                shutil.rmtree(info.socket_dir, ignore_errors=True)  # leaked /tmp dir
        return False

    def _owns_socket_dir(self, directory: Path) -> bool:
        return directory == self.root / "socket" or (
            directory.parent == Path(self._tmp_base())
            and directory.name.startswith(_TMP_SOCKET_PREFIX)
        )

    @staticmethod
    def _tmp_base() -> str:
        return "/tmp" if os.path.isdir("/tmp") else tempfile.gettempdir()  # noqa: S108

    def _prepare_socket_dir(self, account: pwd.struct_passwd | None) -> None:
        preferred = self.root / "socket"
        if socket_dir_fits(preferred, self.port):
            preferred.mkdir(mode=0o700, exist_ok=True)
            directory = preferred
        else:
            # Too long for a Unix socket address: use a short private one.
            directory = Path(tempfile.mkdtemp(prefix=_TMP_SOCKET_PREFIX, dir=self._tmp_base()))
            if not socket_dir_fits(directory, self.port):
                shutil.rmtree(directory, ignore_errors=True)
                raise EmbeddedPostgresError(
                    f"cannot find a short enough Unix socket directory (tried {directory})"
                )
            self._tmp_socket_dir = directory
        self._give_to(directory, account, 0o700)
        self._socket_dir = directory

    def _write_runtime_conf(self, account: pwd.struct_passwd | None) -> None:
        assert self._socket_dir is not None
        settings = {
            "listen_addresses": _conf_quote(""),
            "unix_socket_directories": _conf_quote(str(self._socket_dir)),
            "unix_socket_permissions": "0700",
            "port": str(self.port),
            "fsync": "on" if self.fsync else "off",
        }
        if not self.fsync:
            settings["synchronous_commit"] = "off"
            settings["full_page_writes"] = "off"
        path = self.pgdata / _RUNTIME_CONF
        path.write_text(
            "# Written by G-Chat on every start; edits are overwritten.\n"
            + "".join(f"{k} = {v}\n" for k, v in settings.items())
        )
        self._give_to(path, account, 0o600)

    def _cleanup_tmp_socket_dir(self) -> None:
        if self._tmp_socket_dir is not None:
            shutil.rmtree(self._tmp_socket_dir, ignore_errors=True)
            self._tmp_socket_dir = None

    def _stop_sync(self) -> None:
        account = self._account()
        binaries = self._binaries
        assert binaries is not None
        pg_ctl = binaries.program("pg_ctl")
        base = ["-D", str(self.pgdata), "-w", "-t", str(int(self.timeout)), "-s"]
        proc = self._run([pg_ctl, "stop", "-m", "fast", *base], account, check=False)
        if proc.returncode != 0:
            status = self._run([pg_ctl, "status", "-D", str(self.pgdata)], account, check=False)
            if status.returncode == 0:  # still running: do not leave it behind
                proc = self._run([pg_ctl, "stop", "-m", "immediate", *base], account, check=False)
                if proc.returncode != 0:
                    raise EmbeddedPostgresError(
                        f"could not stop the embedded PostgreSQL in {self.pgdata}: "
                        f"{(proc.stderr or proc.stdout).strip()}"
                    )
        self._cleanup_tmp_socket_dir()
        self._socket_dir = None

    # -- internals: async -------------------------------------------------

    async def _ensure_database(self) -> None:
        """Create the application database if it does not exist yet."""
        conn = await asyncpg.connect(self.dsn("postgres"), timeout=self.timeout)
        try:
            exists = await conn.fetchval(
                "SELECT 1 FROM pg_database WHERE datname = $1", self.database
            )
            if not exists:
                with contextlib.suppress(asyncpg.DuplicateDatabaseError):
                    await conn.execute(f"CREATE DATABASE {_ident_quote(self.database)}")
        finally:
            await conn.close()
