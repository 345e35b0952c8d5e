"""Run Debian's PgBouncer in transaction mode in front of a test's PostgreSQL server.

Without ``pgbouncer`` these tests say "skipped: no pgbouncer"; in CI (``CI=true``), where
.ci/run installs Debian's package, they fail instead. As root it runs the way the embedded
PostgreSQL does (``minicloud.pgserver.unprivileged``): PgBouncer refuses root too.
"""

from __future__ import annotations

import os
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

from minicloud.pgserver import unprivileged
from tests.processes import find_program, stop, wait_listening
from tests.servers import free_port

CONFIG = """\
[databases]
* = host=127.0.0.1 port={pg_port} user={user}

[pgbouncer]
listen_addr = 127.0.0.1
listen_port = {port}
unix_socket_dir =
auth_type = any
pool_mode = transaction
default_pool_size = {pool_size}
max_client_conn = 500
server_reset_query =
ignore_startup_parameters = extra_float_digits,options
admin_users = {user}
"""


@dataclass
class PgBouncer:
    """A running PgBouncer: where it listens, and its log."""

    port: int
    log: Path
    user: str

    def url(self, database_url: str) -> str:
        """Return ``database_url`` with its host and port replaced by PgBouncer's."""
        parts = urlsplit(database_url)
        userinfo = parts.netloc.rpartition("@")[0]
        netloc = f"{userinfo}@127.0.0.1:{self.port}" if userinfo else f"127.0.0.1:{self.port}"
        return urlunsplit(parts._replace(netloc=netloc))

    def show(self, what: str) -> list[tuple[str, ...]]:
        """Return the rows of PgBouncer's ``SHOW <what>`` (its admin console)."""
        import psycopg

        with psycopg.connect(
            host="127.0.0.1", port=self.port, dbname="pgbouncer", user=self.user, autocommit=True
        ) as conn:
            cursor = conn.execute(f"SHOW {what}")
            return [tuple(str(value) for value in row) for row in cursor.fetchall()]


@contextmanager
def running_pgbouncer(database_url: str, *, pool_size: int = 4) -> Iterator[PgBouncer]:
    """Run PgBouncer (transaction mode, ``pool_size`` server connections per database) in
    front of the server of ``database_url``."""
    executable = find_program("pgbouncer")
    parts = urlsplit(database_url)
    with tempfile.TemporaryDirectory(prefix="files-app-pgbouncer-") as tmp:
        os.chmod(tmp, 0o755)  # "nobody" reads the configuration where namespaces are off
        port = free_port()
        config = Path(tmp) / "pgbouncer.ini"
        config.write_text(
            CONFIG.format(
                pg_port=parts.port or 5432,
                user=parts.username or "postgres",
                port=port,
                pool_size=pool_size,
            )
        )
        config.chmod(0o644)
        log = Path(tmp) / "pgbouncer.log"
        with open(log, "wb") as out:
            process = subprocess.Popen(
                [executable, str(config)],
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                preexec_fn=unprivileged(),
                start_new_session=True,
            )
        bouncer = PgBouncer(port, log, parts.username or "postgres")
        try:
            wait_listening(process, port, log.read_text)
            yield bouncer
        finally:
            stop(process)
