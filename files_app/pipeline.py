"""psycopg 3's pipeline mode, as files_app uses it: the one place that touches psycopg's
private API.

Each statement sent in pipeline mode is followed by a Sync, so that in autocommit it is its
own transaction, as without pipelining: a slow client does not hold one transaction, and
its snapshot, open for a whole download or upload. psycopg has no public call that sends a
Sync without waiting for the results (``Pipeline.sync()`` waits), so this uses
``Pipeline._enqueue_sync()`` and ``Pipeline._communicate_gen()``. Where they are missing
:func:`supported` is False, :func:`connection_for` returns None, and files_app sends one
statement at a time through Django's cursors instead; tests/test_pipeline.py fails loudly
when a psycopg upgrade takes them away.

Internal to files_app, not part of its public API (docs/reference.md, "Public API").
"""

from __future__ import annotations

from typing import Any

PRIVATE_API = ("_enqueue_sync", "_communicate_gen")


def supported() -> bool:
    """Return whether psycopg 3 is in use and has what pipelining needs here."""
    from django.db.backends.postgresql.psycopg_any import (  # type: ignore[import-untyped]
        is_psycopg3,
    )

    if not is_psycopg3:
        return False
    import psycopg

    return all(callable(getattr(psycopg.Pipeline, name, None)) for name in PRIVATE_API)


def connection_for(connection: Any) -> Any:
    """Return the psycopg connection under a Django connection, or None without pipelining."""
    if not supported():
        return None
    connection.ensure_connection()
    return connection.connection


def end_statement(conn: Any, pipeline: Any) -> None:
    """Queue a Sync behind the statement just sent, and send both without waiting."""
    pipeline._enqueue_sync()
    conn.wait(pipeline._communicate_gen())
