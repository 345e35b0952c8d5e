"""Which database a download reads from, and getting past one that stopped or restarted.

**Hot standby** (``FILES_APP_DOWNLOAD_DATABASE``). Downloads read rows and large objects
from the standby while it answers and its replay lag is within
``FILES_APP_STANDBY_MAX_LAG``; otherwise from the primary. Each process reads the lag
(:data:`LAG_SQL`) on a connection of its own, at most once every :func:`reading_ttl`
seconds, and counts a reading as growing older meanwhile, so the rows a download was
decided on (public, owner, deleted) are never older than the bound. A standby that cannot
be reached — by that connection or by a download's statement — is left alone for
``FILES_APP_STANDBY_RETRY`` seconds (a circuit breaker): one warning when downloads leave
it, one line of info when they come back.

**Restarts.** Django's pool (psycopg 3) checks a connection on checkout when
``CONN_HEALTH_CHECKS`` is on, but after a failed check it waits 1, 2, 4 s before trying the
next idle connection, and after a restart every idle connection is dead: 5 s later, a 503.
:func:`check_all_on_failure` makes one failed check check every idle connection at once
(``pool.check()``). :func:`run` also runs a download's lookup once more when its
connection turned out dead (with ``CONN_HEALTH_CHECKS`` off, or psycopg2's persistent
connections); files_app.largeobjects_async does the same for its async pool.

Internal to files_app, not part of its public API (docs/reference.md, "Public API").
"""

from __future__ import annotations

import asyncio
import functools
import inspect
import logging
import select
import threading
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

from django.core.exceptions import ImproperlyConfigured
from django.core.signals import setting_changed
from django.db import InterfaceError, OperationalError, connections
from django.db.backends.signals import connection_created
from django.dispatch import receiver

from files_app.conf import app_settings

logger = logging.getLogger("files_app")
T = TypeVar("T")

#: Seconds the standby's own connection may take to connect: a standby that does not
#: answer costs a download no more than this (the primary then serves it).
CONNECT_TIMEOUT = 2

# How far replay is behind what the primary wrote, in seconds. Not simply
# now() - pg_last_xact_replay_timestamp(): that grows while the primary is idle, though the
# standby is up to date. A standby that replayed all the WAL it received from a live WAL
# receiver is not behind; one that has more to replay is behind by no more than the time
# since the last transaction it replayed committed (an upper bound: safe). Without a WAL
# receiver (streaming stopped, or recovery from an archive), nothing says what the primary
# did since: count from the last replayed commit too. Not in recovery: a primary (0).
# PostgreSQL documentation, "Recovery Information Functions" and pg_stat_wal_receiver.
LAG_SQL = """SELECT CASE
    WHEN NOT pg_is_in_recovery() THEN 0
    WHEN pg_last_wal_replay_lsn() >= pg_last_wal_receive_lsn()
        AND EXISTS (SELECT 1 FROM pg_stat_wal_receiver) THEN 0
    ELSE coalesce(
        extract(epoch FROM clock_timestamp() - pg_last_xact_replay_timestamp()),
        'Infinity')
END::float8"""


def reading_ttl() -> float:
    """Return how long, in seconds, a lag reading is used before the next one is taken."""
    bound = app_settings.STANDBY_MAX_LAG
    return 1.0 if bound is None else min(1.0, bound / 2)


@dataclass
class _Standby:
    """What this process knows of one standby (shared by its threads and tasks)."""

    alias: str
    lock: threading.Lock = field(default_factory=threading.Lock)
    down_until: float | None = None  # the breaker is open until then (monotonic)
    lag: float = 0.0
    read_at: float | None = None  # when the lag was read (monotonic)
    lagging: bool = False
    probing: bool = False
    conn: Any = None  # the connection the lag is read on

    def verdict(self) -> bool | None:
        """Return whether to read from the standby, or None if it must be probed first
        (this caller then owns the probe)."""
        now = time.monotonic()
        bound = app_settings.STANDBY_MAX_LAG
        with self.lock:
            if self.down_until is not None and now < self.down_until:
                return False
            if self.down_until is None and bound is None:
                return True  # no bound on lag, and nothing failed
            if self.probing:
                # Another thread reads the lag on the connection now: use its last reading.
                if self.down_until is not None or self.read_at is None or bound is None:
                    return False
                return self.lag + (now - self.read_at) <= bound  # the reading ages
            if (
                self.read_at is None
                or bound is None  # the breaker's retry is due
                or now - self.read_at >= reading_ttl()
                or not _quiet(self.conn, self.alias)
            ):
                self.probing = True
                return None
            # The reading ages: the standby may have fallen behind since it was taken.
            return self.lag + (now - self.read_at) <= bound

    def probe(self) -> bool:
        """Read the lag on the standby's connection; return whether to read from it."""
        try:
            lag = self._read_lag()
        except (_driver(self.alias).Error, OSError) as exc:
            self.failed(exc, probed=True)
            return False
        except BaseException:
            with self.lock:
                self.probing = False
            raise
        bound = app_settings.STANDBY_MAX_LAG
        lagging = bound is not None and lag > bound
        with self.lock:
            self.probing = False
            back = self.down_until is not None
            self.down_until, self.lag, self.read_at = None, lag, time.monotonic()
            lag_changed, self.lagging = self.lagging != lagging, lagging
        if back:
            logger.info("The standby %r answers again: downloads read from it.", self.alias)
        if lag_changed and lagging:
            logger.warning(
                "The standby %r replays %.1f s behind (FILES_APP_STANDBY_MAX_LAG is %s): "
                "downloads read from the primary until it catches up.",
                self.alias,
                lag,
                bound,
            )
        elif lag_changed:
            logger.info("The standby %r caught up: downloads read from it.", self.alias)
        return not lagging

    def failed(self, exc: BaseException, *, probed: bool = False) -> None:
        """Open the breaker: leave the standby alone for FILES_APP_STANDBY_RETRY seconds
        (``probed``: this caller's probe failed)."""
        retry = app_settings.STANDBY_RETRY
        with self.lock:
            if probed:
                self.probing = False
            opened = self.down_until is None
            self.down_until = time.monotonic() + retry
            self.read_at = None
        if opened:
            message = str(exc).strip().splitlines()
            logger.warning(
                "The standby %r cannot be reached (%s): downloads read from the primary, "
                "and try the standby again in %s s.",
                self.alias,
                message[0] if message else type(exc).__name__,
                retry,
            )

    def _read_lag(self) -> float:
        # Only the prober uses the connection. One that died (the standby restarted, or
        # stopped) is replaced at once: whether the standby answers is the new one's to say.
        if self.conn is not None:
            try:
                return _lag(self.conn)
            except (_driver(self.alias).Error, OSError):
                self._drop_connection()
        self.conn = _connect(self.alias)
        try:
            return _lag(self.conn)
        except BaseException:
            self._drop_connection()
            raise

    def _drop_connection(self) -> None:
        conn, self.conn = self.conn, None
        if conn is not None:
            _close_quietly(conn, self.alias)


def _lag(conn: Any) -> float:
    cursor = conn.cursor()
    try:
        cursor.execute(LAG_SQL)
        row = cursor.fetchone()
    finally:
        cursor.close()
    return float(row[0])


#: Keys of a PostgreSQL alias's ``OPTIONS`` that Django's backend reads itself and never
#: hands to libpq (Django documentation, "PostgreSQL notes").
DJANGO_OPTIONS = frozenset({"assume_role", "isolation_level", "pool", "server_side_binding"})


def connect_kwargs(alias: str) -> dict[str, Any]:
    """Return the libpq keywords that connect to the database ``alias`` as Django does.

    Built from the documented ``connections[alias].settings_dict`` the way Django's
    PostgreSQL backend builds its own (``NAME`` is ``dbname``, ``None`` meaning the
    ``postgres`` database; ``USER``, ``PASSWORD``, ``HOST``, ``PORT``; ``OPTIONS`` but for
    :data:`DJANGO_OPTIONS`; UTF8), without the driver's extras Django adds (its cursor
    class and adapters): what a connection outside Django's connections and pool needs.
    tests/test_internals.py compares the two.
    """
    settings_dict = connections[alias].settings_dict
    options = {
        key: value
        for key, value in (settings_dict.get("OPTIONS") or {}).items()
        if key not in DJANGO_OPTIONS
    }
    name = settings_dict.get("NAME")
    if name == "" and not options.get("service"):
        raise ImproperlyConfigured(
            f"The database {alias!r} has neither a NAME nor an OPTIONS['service'] value."
        )
    if name:
        params = {"dbname": name, **options}
    elif name is None:
        options.pop("service", None)  # None is the "postgres" database, whatever the service
        params = {"dbname": "postgres", **options}
    else:
        params = options  # the service names the database
    params["client_encoding"] = "UTF8"
    for key, keyword in (("USER", "user"), ("PASSWORD", "password"), ("HOST", "host")):
        if settings_dict.get(key):
            params[keyword] = settings_dict[key]
    if settings_dict.get("PORT"):
        params["port"] = settings_dict["PORT"]
    return params


def _connect(alias: str) -> Any:
    """Return a new connection to ``alias`` outside Django's connections and pool: a busy
    pool must not look like a standby that is down."""
    params = connect_kwargs(alias)
    params.pop("cursor_factory", None)  # a Django cursor class in OPTIONS
    if _driver(alias).__name__ == "psycopg":
        # As Django's: no prepared statements unless OPTIONS asks (connection poolers).
        params.setdefault("prepare_threshold", None)
    timeout = params.get("connect_timeout")
    params["connect_timeout"] = min(int(timeout or CONNECT_TIMEOUT), CONNECT_TIMEOUT)
    conn = _driver(alias).connect(**params)
    conn.autocommit = True
    return conn


def _quiet(conn: Any, alias: str) -> bool:
    """Return whether the server said nothing on ``conn`` since its last answer: a server
    shutting down tells its idle connections (and a crash resets them), so a reading on a
    connection that has something to read is stale whatever its age."""
    if conn is None:
        return False
    try:
        readable, _, _ = select.select([conn.fileno()], [], [], 0)
    except (_driver(alias).Error, OSError, ValueError):
        return False
    return not readable


def _driver(alias: str) -> Any:
    """Return the DB-API module of ``alias`` (psycopg or psycopg2)."""
    return connections[alias].Database  # type: ignore[attr-defined]


def _close_quietly(conn: Any, alias: str) -> None:
    try:
        conn.close()
    except _driver(alias).Error:
        pass  # it was dead already


_standbys: dict[str, _Standby] = {}
_standbys_lock = threading.Lock()


def _standby(alias: str) -> _Standby:
    with _standbys_lock:
        return _standbys.setdefault(alias, _Standby(alias))


def forget() -> None:
    """Forget what this process knows of standbys and close their lag connections."""
    with _standbys_lock:
        known = list(_standbys.values())
        _standbys.clear()
    for state in known:
        if state.conn is not None:
            _close_quietly(state.conn, state.alias)


@receiver(setting_changed)
def _forget_standbys(*, setting: str, **kwargs: Any) -> None:
    # Tests change settings; a server never does.
    if setting.startswith("FILES_APP_") or setting == "DATABASES":
        forget()


def _standby_of(primary: str) -> str | None:
    standby = app_settings.DOWNLOAD_DATABASE
    return standby if standby and standby != primary else None


def choose(primary: str) -> str:
    """Return the alias downloads from ``primary`` read from now: its standby or itself."""
    standby = _standby_of(primary)
    if standby is None:
        return primary
    state = _standby(standby)
    use = state.verdict()
    if use is None:
        use = state.probe()
    return standby if use else primary


async def achoose(primary: str) -> str:
    """:func:`choose` on the event loop (a probe runs in a worker thread)."""
    standby = _standby_of(primary)
    if standby is None:
        return primary
    state = _standby(standby)
    use = state.verdict()
    if use is None:
        use = await asyncio.to_thread(state.probe)
    return standby if use else primary


def failed(alias: str, exc: BaseException) -> None:
    """Note that a download's statement on the standby ``alias`` failed with ``exc``: if
    the connection failed (not the statement), leave the standby alone for a while."""
    if _connection_failed(exc):
        _standby(alias).failed(exc)


def sqlstate(exc: BaseException) -> str | None:
    """Return the SQLSTATE of a database error (Django's wrapper or the driver's own,
    psycopg or psycopg2), or None when it has none (the connection or the pool failed)."""
    cause = exc.__cause__ or exc
    return getattr(cause, "sqlstate", None) or getattr(cause, "pgcode", None)


#: The SQLSTATE of a statement that waited ``lock_timeout`` for a lock (lock_not_available).
LOCK_NOT_AVAILABLE = "55P03"


def wait_for_locks(using: str, seconds: float) -> None:
    """Make the statements of the current transaction on ``using`` give up waiting for a
    lock after ``seconds``, failing with :data:`LOCK_NOT_AVAILABLE` (PostgreSQL's
    ``lock_timeout``, set for this transaction only: PgBouncer's transaction pooling keeps
    it)."""
    with connections[using].cursor() as cursor:
        cursor.execute(
            "SELECT set_config('lock_timeout', %s, true)", [f"{max(int(seconds * 1000), 1)}ms"]
        )


def _connection_failed(exc: BaseException) -> bool:
    code = sqlstate(exc)
    # No SQLSTATE: the connection or the pool failed. Class 08 is "connection exception",
    # 57P0x a server shutting down or restarting (PostgreSQL, "Error Codes").
    return code is None or code.startswith(("08", "57P"))


def run(primary: str, read: Callable[[str], T], *, standby: bool = True) -> T:
    """Return ``read(alias)`` on the alias :func:`choose` picks (``primary`` without
    ``standby``); if the standby fails, on ``primary``, once more if its connection turned
    out dead. ``read`` must be read-only and send nothing before it returns (a download's
    lookup and first read)."""
    using = choose(primary) if standby else primary
    if using != primary:
        try:
            return read(using)
        except (OperationalError, InterfaceError) as exc:
            failed(using, exc)
    wrapper = connections[primary]
    wrapper.ensure_connection()  # a database that is down fails here, without a retry
    try:
        return read(primary)
    except (OperationalError, InterfaceError):
        conn = wrapper.connection
        if wrapper.in_atomic_block or (conn is not None and not conn.closed):
            raise  # the statement failed, not the connection: running it again won't help
    # A persistent or pooled connection that died while idle (a restart): the others of
    # the pool died with it.
    wrapper.close()
    pool = getattr(wrapper, "pool", None)
    if pool is not None:
        pool.check()
    return read(primary)


async def arun(primary: str, read: Callable[[str], Awaitable[T]], *, standby: bool = True) -> T:
    """:func:`run` for ``read`` on files_app.largeobjects_async's async pool (which runs a
    statement again on a dead connection itself)."""
    using = await achoose(primary) if standby else primary
    if using != primary:
        try:
            return await read(using)
        except (OperationalError, InterfaceError) as exc:
            failed(using, exc)
    return await read(primary)


@functools.cache
def pool_check_supported() -> bool:
    """Return whether psycopg_pool keeps a pool's ``check`` callback as ``_check`` and calls
    it with the connection on checkout (psycopg_pool 3.2 to 3.3): what
    :func:`check_all_on_failure` wraps."""
    try:
        from psycopg_pool import ConnectionPool
    except ImportError:
        return False
    if "check" not in inspect.signature(ConnectionPool.__init__).parameters:
        return False
    try:
        init = inspect.getsource(ConnectionPool.__init__)
        on_checkout = inspect.getsource(ConnectionPool._check_connection)
    except (AttributeError, OSError, TypeError):  # moved, or no source to read
        return False
    return "self._check = check" in init and "self._check(conn)" in on_checkout


def check_all_on_failure(pool: Any) -> bool:
    """Make ``pool`` (a psycopg_pool ``ConnectionPool`` that checks connections on
    checkout) check all its idle connections when one fails its check; return whether it
    does.

    psycopg_pool offers no option for this: the pool keeps its public ``check`` argument
    as the private ``_check`` and calls it on checkout; this wraps it. Where
    :func:`pool_check_supported` is False nothing changes but the wait after a restart
    (tests/test_internals.py and tests/test_standby.py fail loudly).
    """
    if not pool_check_supported():
        return False
    check = getattr(pool, "_check", None)
    if check is None or not callable(check):
        return False
    if getattr(check, "files_app_checks_all", False):
        return True

    import psycopg

    def check_all_on_failure(conn: Any) -> None:
        try:
            check(conn)
        except psycopg.Error:
            # After a restart every idle connection is dead; check them now, not one
            # per backoff step of the caller's checkout.
            pool.check()
            raise

    check_all_on_failure.files_app_checks_all = True  # type: ignore[attr-defined]
    pool._check = check_all_on_failure
    return True


@receiver(connection_created, dispatch_uid="files_app.check_all_on_failure")
def _on_connection_created(*, connection: Any, **kwargs: Any) -> None:
    # Every checkout from Django's pool: the pool exists by then.
    pool = getattr(connection, "pool", None)
    if pool is not None:
        check_all_on_failure(pool)
