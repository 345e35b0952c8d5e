"""Run Debian's nginx with the shipped configuration (deploy/nginx/minicloud.conf) in front
of a test's app server.

Without ``nginx`` these tests say "skipped: no nginx"; in CI (``CI=true``), where .ci/run
installs Debian's package, they fail instead.
"""

from __future__ import annotations

import http.client
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from tests.processes import find_program, stop, wait_listening
from tests.servers import ROOT, free_port

SHIPPED = ROOT / "deploy" / "nginx" / "minicloud.conf"

MAIN = """\
daemon off;
master_process on;
worker_processes 1;
pid {prefix}/nginx.pid;
error_log {prefix}/error.log warn;
events {{ worker_connections 512; }}
http {{
    access_log off;
    default_type application/octet-stream;
{temp_paths}
    include {prefix}/minicloud.conf;
}}
"""


def configured(upstream_port: int, port: int, cache: Path) -> str:
    """Return the shipped configuration with the test's port, upstream and cache directory:
    the only lines a deployment changes besides TLS and the server name."""
    text = SHIPPED.read_text()
    for old, new in (
        ("listen 80;", f"listen 127.0.0.1:{port};"),
        ("server 127.0.0.1:8000;", f"server 127.0.0.1:{upstream_port};"),
        ("/var/cache/nginx/minicloud", str(cache)),
    ):
        assert text.count(old) == 1, f"{SHIPPED} no longer has {old!r} once"
        text = text.replace(old, new)
    return text


@dataclass
class Nginx:
    """A running nginx: where it listens (``request()`` of tests.servers takes it)."""

    port: int
    error_log: Path
    host = "127.0.0.1"
    kind = "nginx"

    def connection(self, timeout: float = 30.0) -> http.client.HTTPConnection:
        return http.client.HTTPConnection(self.host, self.port, timeout=timeout)


@contextmanager
def running_nginx(upstream_port: int) -> Iterator[Nginx]:
    """Run nginx with deploy/nginx/minicloud.conf in front of 127.0.0.1:``upstream_port``."""
    executable = find_program("nginx")
    with tempfile.TemporaryDirectory(prefix="files-app-nginx-") as tmp:
        prefix = Path(tmp)
        prefix.chmod(0o755)
        port = free_port()
        cache = prefix / "cache"
        temps = []
        for kind in ("cache", "client_body", "proxy", "fastcgi", "uwsgi", "scgi"):
            (prefix / kind).mkdir()
            (prefix / kind).chmod(0o777)  # nginx's workers run as another user under root
            if kind != "cache":
                temps.append(f"    {kind}_temp_path {prefix / kind};")
        (prefix / "minicloud.conf").write_text(configured(upstream_port, port, cache))
        (prefix / "nginx.conf").write_text(MAIN.format(prefix=prefix, temp_paths="\n".join(temps)))
        command = [executable, "-p", str(prefix), "-c", str(prefix / "nginx.conf")]
        check = subprocess.run([*command, "-t"], capture_output=True, text=True)
        assert check.returncode == 0, check.stderr
        process = subprocess.Popen(
            command,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        try:
            wait_listening(process, port, (prefix / "error.log").read_text)
            yield Nginx(port, prefix / "error.log")
        finally:
            stop(process)
