"""Start gunicorn (WSGI) and uvicorn (ASGI) on 127.0.0.1 against the test database.

The servers run the test settings with ``DATABASE_URL`` pointing at the running test
session's database, so they see the data the tests committed. Each one is a subprocess in
its own session: stopping it terminates the master and, if that does not work, kills the
process group it started.
"""

from __future__ import annotations

import http.client
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, Protocol
from urllib.parse import quote

ROOT = Path(__file__).resolve().parent.parent
# The servers the real-server tests run under.
SERVER_KINDS = ("gunicorn", "uvicorn")
# Servers measured (bench/RESULTS.md) and held to the range matrix and the real clients of
# tests/test_servers.py, not yet to minicloud's deployment tests: granian's WSGI interface.
CANDIDATE_KINDS = ("granian",)
START_TIMEOUT = 30.0


def wsgi_application() -> Any:
    """Return the WSGI application the real servers run (gunicorn factory)."""
    _use_attachment_urls()
    from tests.wsgi import application

    return application


def asgi_application() -> Any:
    """Return the ASGI application the real servers run (uvicorn --factory)."""
    _use_attachment_urls()
    from tests.asgi import application

    return application


def _use_attachment_urls() -> None:
    # Range cases K01 and K03 need the attachment view of tests/urls_attachment.py; set
    # before the application exists, so no request ever sees another URLconf.
    # FILES_APP_TEST_URLCONF: another one (tests/urls_wrapped.py, test_servers.py).
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "tests.settings")
    from django.conf import settings

    settings.ROOT_URLCONF = os.environ.get("FILES_APP_TEST_URLCONF", "tests.urls_attachment")


def database_url(settings_dict: Mapping[str, Any]) -> str:
    """Return a postgres:// URL for a Django database settings dict."""
    user = quote(str(settings_dict.get("USER") or ""), safe="")
    password = settings_dict.get("PASSWORD")
    auth = f"{user}:{quote(str(password), safe='')}" if password else user
    host = settings_dict.get("HOST") or "127.0.0.1"
    port = settings_dict.get("PORT") or 5432
    name = quote(str(settings_dict["NAME"]), safe="")
    return f"postgres://{auth}@{host}:{port}/{name}"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _minicloud_command(kind: str, port: int) -> list[str]:
    # The README's deployment commands; gunicorn reads ./gunicorn.conf.py (cwd is ROOT).
    if kind == "gunicorn":
        return [sys.executable, "-m", "gunicorn", "minicloud.wsgi", f"--bind=127.0.0.1:{port}"]
    if kind == "uvicorn":
        return [
            sys.executable,
            "-m",
            "uvicorn",
            "minicloud.asgi:application",
            "--host=127.0.0.1",
            f"--port={port}",
            "--log-level=warning",
        ]
    raise ValueError(f"Unknown server kind {kind!r}.")


def _command(kind: str, port: int) -> list[str]:
    if kind == "gunicorn":
        # gthread workers keep connections alive (sync workers close after every response).
        return [
            sys.executable,
            "-m",
            "gunicorn",
            "tests.servers:wsgi_application()",
            f"--bind=127.0.0.1:{port}",
            "--worker-class=gthread",
            "--workers=1",
            "--threads=4",
            "--keep-alive=30",
            "--timeout=60",
            "--graceful-timeout=5",
            "--log-level=warning",
        ]
    if kind == "uvicorn":
        return [
            sys.executable,
            "-m",
            "uvicorn",
            "tests.servers:asgi_application",
            "--factory",
            "--host=127.0.0.1",
            f"--port={port}",
            "--lifespan=off",
            "--timeout-keep-alive=30",
            "--timeout-graceful-shutdown=5",
            "--log-level=warning",
        ]
    if kind == "granian":
        # A candidate (CANDIDATE_KINDS): as gunicorn's gthread worker above, 4 threads.
        return [
            sys.executable,
            "-m",
            "granian",
            "--interface=wsgi",
            "--factory",
            "--host=127.0.0.1",
            f"--port={port}",
            "--workers=1",
            "--blocking-threads=4",
            "--no-ws",
            "--log-level=warning",
            "tests.servers:wsgi_application",
        ]
    raise ValueError(f"Unknown server kind {kind!r}.")


@dataclass
class Server:
    """A running server process and where it listens."""

    kind: str
    port: int
    process: subprocess.Popen[bytes]
    log: IO[bytes]
    env: Mapping[str, str] = field(default_factory=dict)  # the settings it was given

    host = "127.0.0.1"

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def connection(self, timeout: float = 30.0) -> http.client.HTTPConnection:
        """Return a new, unopened HTTP/1.1 connection to the server."""
        return http.client.HTTPConnection(self.host, self.port, timeout=timeout)

    def output(self) -> str:
        """Return what the server wrote to stdout and stderr so far."""
        self.log.flush()
        self.log.seek(0)
        return self.log.read().decode("utf-8", "replace")

    def rss(self, *, workers_only: bool = False) -> int:
        """Return the resident memory of the server's processes (``workers_only``: of its
        workers, or of the server itself if it has none), in bytes."""
        import psutil  # type: ignore[import-untyped]

        master = psutil.Process(self.process.pid)
        children = master.children(recursive=True)
        processes = (children or [master]) if workers_only else [master, *children]
        total = 0
        for process in processes:
            with suppress(psutil.NoSuchProcess):
                total += process.memory_info().rss
        return total

    def check_alive(self) -> None:
        code = self.process.poll()
        assert code is None, f"{self.kind} exited with {code}:\n{self.output()}"

    def stop(self) -> None:
        """Stop the server: SIGTERM, then SIGKILL to the process group it started."""
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(timeout=10)
        # The master is gone; make sure no worker of its group outlived it.
        with suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGKILL)


def _wait_until_listening(server: Server) -> None:
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        server.check_alive()
        try:
            with socket.create_connection((server.host, server.port), timeout=1):
                return
        except OSError:
            time.sleep(0.05)
    raise TimeoutError(
        f"{server.kind} did not listen on port {server.port} within {START_TIMEOUT:.0f} s:\n"
        f"{server.output()}"
    )


MINICLOUD_ENV = {
    "DJANGO_SETTINGS_MODULE": "minicloud.settings",
    "DJANGO_SECRET_KEY": "minicloud-reliability-tests-" + "k" * 40,
    "MINICLOUD_ALLOWED_HOSTS": "127.0.0.1,localhost",
    "MINICLOUD_WORKERS": "1",
}


@contextmanager
def running_server(
    kind: str,
    settings_dict: Mapping[str, Any] | str,
    *,
    project: str = "tests",
    env: Mapping[str, str] | None = None,
    port: int | None = None,
) -> Iterator[Server]:
    """Run a ``kind`` server on a free port against the database of ``settings_dict``.

    ``project="minicloud"`` runs the minicloud project as the README deploys it, instead
    of the test settings; ``settings_dict`` may also be a database URL.
    """
    environment = dict(os.environ)
    url = settings_dict if isinstance(settings_dict, str) else database_url(settings_dict)
    environment.update(
        DATABASE_URL=url,
        DJANGO_SETTINGS_MODULE="tests.settings",
        PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), environment.get("PYTHONPATH")])),
        PYTHONUNBUFFERED="1",
    )
    if project == "minicloud":
        environment.update(MINICLOUD_ENV)
    environment.update(env or {})
    if "FILES_APP_DRIVER" in os.environ:
        environment["FILES_APP_DRIVER"] = os.environ["FILES_APP_DRIVER"]
    port = port or free_port()
    command = _minicloud_command(kind, port) if project == "minicloud" else _command(kind, port)
    with tempfile.TemporaryFile() as log:
        process = subprocess.Popen(
            command,
            cwd=ROOT,
            env=environment,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group, so workers can be reaped
        )
        server = Server(kind=kind, port=port, process=process, log=log, env=dict(env or {}))
        try:
            _wait_until_listening(server)
            yield server
        finally:
            server.stop()


@dataclass(frozen=True)
class Reply:
    """A response read in full: status, header pairs as sent, body bytes."""

    status: int
    headers: list[tuple[str, str]]
    body: bytes

    def header(self, name: str) -> str | None:
        """Return the first value of the header ``name`` (any case), or None."""
        return next((v for k, v in self.headers if k.lower() == name.lower()), None)


class Reachable(Protocol):
    """What request() needs of a server: a way to connect (an app server, or nginx)."""

    def connection(self, timeout: float = 30.0) -> http.client.HTTPConnection: ...


def request(
    server: Reachable,
    method: str,
    path: str,
    headers: Mapping[str, str] | None = None,
    *,
    connection: http.client.HTTPConnection | None = None,
) -> Reply:
    """Send one request and read the whole response (on ``connection`` if given)."""
    own = connection is None
    conn = server.connection() if connection is None else connection
    try:
        # skip_accept_encoding: send only the headers the case asks for.
        conn.putrequest(method, path, skip_accept_encoding=True)
        for name, value in (headers or {}).items():
            conn.putheader(name, value.encode("latin-1"))
        conn.endheaders()
        response = conn.getresponse()
        with response:
            body = response.read()
            return Reply(response.status, response.getheaders(), body)
    finally:
        if own:
            conn.close()


def raw_exchange(server: Server, method: str, path: str, headers: Mapping[str, str]) -> bytes:
    """Send one request with ``Connection: close`` and return every byte the server sent.

    http.client reads no body after a HEAD or a 304, so only the raw bytes show a body the
    server should not have sent.
    """
    lines = [f"{method} {path} HTTP/1.1", f"Host: {server.host}:{server.port}"]
    lines += [f"{name}: {value}" for name, value in headers.items()]
    lines.append("Connection: close")
    data = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
    received = bytearray()
    with socket.create_connection((server.host, server.port), timeout=30) as sock:
        sock.sendall(data)
        while chunk := sock.recv(65536):
            received += chunk
    return bytes(received)


def split_raw(raw: bytes) -> tuple[int, bytes]:
    """Return the status and the bytes after the header block of a raw response."""
    head, separator, rest = raw.partition(b"\r\n\r\n")
    assert separator, f"no end of headers in {raw[:200]!r}"
    status_line = head.split(b"\r\n", 1)[0]
    return int(status_line.split()[1]), rest
