"""The private APIs files_app relies on, each behind one adapter: a test here fails when a
Django, psycopg_pool or psycopg upgrade moves one, before anything degrades quietly; and
the one public replacement, :func:`files_app._databases.connect_kwargs`, against what it
replaces. The list: docs/design.md, "Private APIs files_app relies on".

psycopg's pipeline API is tested in tests/test_pipeline.py.
"""

from __future__ import annotations

import asyncio
import io
import logging
import tempfile
from collections.abc import Iterator, Mapping
from contextlib import closing, contextmanager
from typing import Any

import pytest
from django.contrib.auth.models import User
from django.core.exceptions import ImproperlyConfigured
from django.core.files.base import ContentFile
from django.db import connections

from files_app import _databases, asgi, csrf, maintenance
from files_app.models import StoredFile

# What Django's get_connection_params() adds for the driver, not for libpq.
DRIVER_EXTRAS = ("context", "cursor_factory", "prepare_threshold")


@contextmanager
def _alias(**changes: Any) -> Iterator[str]:
    """Add the alias "internals": the test database's settings with ``changes``."""
    settings_dict = dict(connections.settings["default"])
    settings_dict.update(changes)
    connections.settings["internals"] = connections.configure_settings(
        {"default": dict(connections.settings["default"]), "internals": settings_dict}
    )["internals"]
    try:
        yield "internals"
    finally:
        if hasattr(connections._connections, "internals"):  # type: ignore[attr-defined]
            connections["internals"].close()
            del connections["internals"]
        del connections.settings["internals"]


def _query(alias: str, sql: str) -> Any:
    """Return the value ``sql`` selects, on a connection made of connect_kwargs(alias)."""
    driver: Any = connections[alias].Database  # type: ignore[attr-defined]
    with closing(driver.connect(**_databases.connect_kwargs(alias))) as conn:
        cursor = conn.cursor()
        cursor.execute(sql)
        value = cursor.fetchone()[0]
        cursor.close()
        conn.rollback()
        return value


def _djangos(alias: str) -> dict[str, Any]:
    """Return Django's own connection keywords for ``alias``, less the driver's extras."""
    params = connections[alias].get_connection_params()
    return {key: value for key, value in params.items() if key not in DRIVER_EXTRAS}


@pytest.mark.django_db
def test_connect_kwargs_connect_to_the_test_database() -> None:
    with connections["default"].cursor() as cursor:
        cursor.execute("SELECT current_database(), current_user")
        expected = cursor.fetchone()
    assert _query("default", "SELECT current_database() || ' ' || current_user") == (
        " ".join(expected)
    )


@pytest.mark.django_db
def test_connect_kwargs_pass_options_through() -> None:
    options = {"application_name": "files_app-internals", "connect_timeout": 7}
    with _alias(OPTIONS=options) as alias:
        params = _databases.connect_kwargs(alias)
        assert params["application_name"] == "files_app-internals"
        assert params["connect_timeout"] == 7
        assert _query(alias, "SHOW application_name") == "files_app-internals"


@pytest.mark.django_db
def test_connect_kwargs_drop_djangos_own_options() -> None:
    options = {
        "isolation_level": 3,
        "server_side_binding": True,
        "assume_role": "nobody",
        "pool": {"min_size": 1},
        "application_name": "kept",
    }
    with _alias(OPTIONS=options) as alias:
        params = _databases.connect_kwargs(alias)
        assert not set(params) & {"isolation_level", "server_side_binding", "assume_role", "pool"}
        assert params["application_name"] == "kept"
        # libpq refuses a keyword it does not know: this connects only without them.
        assert _query(alias, "SELECT 1") == 1


@pytest.mark.parametrize(
    "changes",
    [
        {},
        {"OPTIONS": {"application_name": "a", "sslmode": "prefer", "isolation_level": 3}},
        {"OPTIONS": {"server_side_binding": True, "assume_role": "r", "connect_timeout": 3}},
        {"NAME": None, "OPTIONS": {"service": "files_app"}},
        {"NAME": "", "OPTIONS": {"service": "files_app"}},
        {"OPTIONS": {"dbname": "from_options", "client_encoding": "LATIN1"}},
        {"USER": "", "PASSWORD": "", "HOST": "", "PORT": ""},
        {"USER": "u", "PASSWORD": "p", "HOST": "h", "PORT": 6543},
    ],
)
def test_connect_kwargs_equal_djangos_for_the_keys_libpq_uses(changes: dict[str, Any]) -> None:
    with _alias(**changes) as alias:
        ours = _databases.connect_kwargs(alias)  # first: Django's pops OPTIONS["service"]
        assert ours == _djangos(alias)


def test_connect_kwargs_with_the_pool_option_equal_djangos(driver: str) -> None:
    if driver != "psycopg":
        pytest.skip("Django refuses OPTIONS['pool'] on psycopg2")
    with _alias(OPTIONS={"pool": {"min_size": 1}, "application_name": "a"}) as alias:
        assert _databases.connect_kwargs(alias) == _djangos(alias)


def test_connect_kwargs_refuse_no_name_and_no_service_as_django_does() -> None:
    with _alias(NAME="", OPTIONS={}) as alias:
        with pytest.raises(ImproperlyConfigured):
            _databases.connect_kwargs(alias)
        with pytest.raises(ImproperlyConfigured):
            connections[alias].get_connection_params()


def test_psycopg_pool_still_has_the_check_files_app_wraps(driver: str) -> None:
    if driver != "psycopg":
        pytest.skip("psycopg_pool runs on psycopg 3, which this run keeps out")
    # If a psycopg_pool upgrade stops keeping check= as _check, or calling it on checkout,
    # this fails (a restart would cost each idle connection a backoff step again).
    assert _databases.pool_check_supported()


@pytest.mark.django_db
def test_psycopg_pool_calls_the_wrapped_check_with_the_connection_on_checkout(
    driver: str,
) -> None:
    if driver != "psycopg":
        pytest.skip("psycopg_pool runs on psycopg 3, which this run keeps out")
    from psycopg_pool import ConnectionPool

    checked: list[Any] = []
    pool = ConnectionPool(
        kwargs=_databases.connect_kwargs("default"),
        min_size=1,
        open=False,
        check=checked.append,
        name="files_app-internals",
    )
    assert pool._check == checked.append
    assert _databases.check_all_on_failure(pool)
    assert pool._check != checked.append
    pool.open(wait=True)
    try:
        with pool.connection() as conn:
            assert checked == [conn]
    finally:
        pool.close()


def test_djangos_collector_still_fast_deletes_through_raw_delete() -> None:
    # If Django stops calling QuerySet._raw_delete(using=...) on fast deletes, this fails
    # (a big cascade would leave its large objects queued until files_sweep).
    assert maintenance.raw_delete_supported()


@pytest.mark.django_db(transaction=True)
def test_a_cascade_drains_the_queue_through_raw_delete(monkeypatch: pytest.MonkeyPatch) -> None:
    raw_delete = maintenance.LargeObjectQuerySet._raw_delete
    fast_deleted: list[type[Any]] = []

    def spy(queryset: Any, using: str | None) -> int:
        fast_deleted.append(queryset.model)
        return raw_delete(queryset, using)

    drained: list[str] = []
    monkeypatch.setattr(maintenance.LargeObjectQuerySet, "_raw_delete", spy)
    monkeypatch.setattr(maintenance, "drain_unlinks_after_commit", drained.append)
    owner = User.objects.create_user("owner")
    StoredFile.objects.create(file=ContentFile(b"x", name="x"), name="x", owner=owner)
    owner.delete()  # the owner's files go by Collector.delete(): fast, no row loaded
    assert fast_deleted == [StoredFile]
    assert drained == ["default"]
    assert not StoredFile.objects.filter(owner_id=owner.pk).exists()


def test_djangos_asgi_handler_still_has_what_streaming_overrides() -> None:
    # If Django changes ASGIHandler.handle/read_body/listen_for_disconnect, this fails
    # (large ASGI uploads would be spooled to a temporary file first again).
    assert asgi.supported()


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize(
    ("supported", "body_class", "warnings"),
    [(True, io.BufferedReader, 0), (False, tempfile.SpooledTemporaryFile, 1)],
)
def test_without_them_asgi_bodies_are_read_as_django_reads_them(
    supported: bool,
    body_class: type[Any],
    warnings: int,
    monkeypatch: pytest.MonkeyPatch,
    settings: Any,
    caplog: pytest.LogCaptureFixture,
) -> None:
    settings.FILE_UPLOAD_MAX_MEMORY_SIZE = 10  # so this body is one to stream
    monkeypatch.setattr(asgi, "supported", lambda: supported)
    bodies: list[Any] = []
    create_request = asgi.StreamingASGIHandler.create_request

    def spy(handler: Any, scope: Any, body_file: Any) -> Any:
        bodies.append(body_file)
        return create_request(handler, scope, body_file)

    monkeypatch.setattr(asgi.StreamingASGIHandler, "create_request", spy)
    with caplog.at_level(logging.WARNING, logger="files_app"):
        handler = asgi.StreamingASGIHandler()
    assert len(caplog.records) == warnings  # one per handler: one per process
    asyncio.run(handler(_post_scope(100), _one_message(b"x" * 100), _ignore))
    [body] = bodies
    assert isinstance(body, body_class)  # ours, or Django's temporary file


def _post_scope(length: int) -> dict[str, Any]:
    return {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": "/internals/",
        "raw_path": b"/internals/",
        "query_string": b"",
        "root_path": "",
        "headers": [(b"host", b"testserver"), (b"content-length", str(length).encode())],
        "client": ("127.0.0.1", 40000),
        "server": ("testserver", 80),
    }


def _one_message(body: bytes) -> Any:
    sent = False

    async def receive() -> dict[str, Any]:
        nonlocal sent
        if sent:
            await asyncio.Event().wait()  # a real server waits for the disconnect
        sent = True
        return {"type": "http.request", "body": body, "more_body": False}

    return receive


async def _ignore(message: Mapping[str, Any]) -> None:
    pass


def test_djangos_csrf_middleware_still_has_what_the_early_check_uses() -> None:
    # If Django renames CsrfViewMiddleware's _check_token, _accept or _get_secret, this
    # fails (a forged streamed upload would be refused only after its whole body).
    assert csrf.supported()
