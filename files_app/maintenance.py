"""Inventory and maintenance of large objects: the unlink trigger and the queue a big delete
leaves, the sweeper's queries, counts and disk usage. (Reading and writing objects is
files_app.largeobjects's, through the storage.)

Internal to files_app, not part of its public API (docs/reference.md, "Public API").
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Iterator
from typing import Any, TypeVar

from django.apps import apps
from django.db import connections, models, router, transaction
from django.db.models.deletion import Collector

from files_app import largeobjects
from files_app.references import reference_columns

_M = TypeVar("_M", bound=models.Model)

#: The queue of objects a big delete left (files_app.models.PendingUnlink's table; the
#: unlink trigger writes it by name too).
PENDING_UNLINK_TABLE = "files_app_pendingunlink"

# Unlinks per transaction: each holds a lock until commit (see IMMEDIATE_UNLINKS).
UNLINK_BATCH = 500


def drain_unlinks_after_commit(using: str) -> None:
    """Drain the queue once the current transaction commits (at once in autocommit)."""
    transaction.on_commit(lambda: drain_unlinks(using), using=using)


@functools.cache
def raw_delete_supported() -> bool:
    """Return whether Django's deletion collector fast-deletes through the private
    ``QuerySet._raw_delete(using)``, which :class:`LargeObjectQuerySet` overrides.

    No public API serves. A cascade (a user deleted with their files) and a fast delete
    reach the rows by ``Collector.delete()`` calling ``_raw_delete`` on a queryset of the
    model's base manager: not ``QuerySet.delete()``, not ``Model.delete()``. The public
    hook, a ``pre_delete`` or ``post_delete`` receiver, makes ``Collector.can_fast_delete``
    False for the model, and the collector then loads every row to be deleted, whole, to
    send the signals (django/db/models/deletion.py): 0.5 KB a row measured for a small
    model (40 MB for 80,000 rows, 10^6 rows ~0.5 GB) where the fast delete stays at ~20 KB.
    ``connection.execute_wrapper()`` would have to recognise DELETE statements in SQL, and
    only where it is installed. PostgreSQL has no trigger at commit (a deferred trigger
    still runs inside the transaction, under the lock limit the queue exists for). Without
    the override a cascade of more than ``IMMEDIATE_UNLINKS`` rows leaves its objects
    queued until ``files_sweep``. tests/test_internals.py fails when this is False.
    """
    raw_delete = getattr(models.QuerySet, "_raw_delete", None)
    if not callable(raw_delete):
        return False
    if list(inspect.signature(raw_delete).parameters) != ["self", "using"]:
        return False
    try:
        source = inspect.getsource(Collector.delete)
    except (OSError, TypeError):  # no source to read
        return False
    return "._raw_delete(using=self.using)" in source


class LargeObjectQuerySet(models.QuerySet[_M]):
    """A QuerySet whose deletes free the large objects they queued, after commit.

    A statement that deletes more than ``IMMEDIATE_UNLINKS`` rows with large objects
    leaves the rest in a queue (the lock table could not hold them all); use this as the
    model's manager and ``Meta.base_manager_name`` so that cascades drain it too.
    ``files_sweep`` drains what other routes (raw SQL, a collector with signals) leave.
    """

    def delete(self) -> tuple[int, dict[str, int]]:
        deleted = super().delete()
        self._drain_after_commit(self.db)
        return deleted

    delete.alters_data = True  # type: ignore[attr-defined]
    delete.queryset_only = True  # type: ignore[attr-defined]

    def _raw_delete(self, using: str | None) -> int:
        # What the deletion collector uses for cascades and fast deletes: the one private
        # API here (see raw_delete_supported).
        deleted = super()._raw_delete(using)
        self._drain_after_commit(using or self.db)
        return deleted

    _raw_delete.alters_data = True  # type: ignore[attr-defined]

    def _drain_after_commit(self, using: str) -> None:
        """What deletes queue is freed after commit: subclasses with more queues add theirs."""
        drain_unlinks_after_commit(using)


def drain_unlinks(using: str, *, batch: int = UNLINK_BATCH) -> int:
    """Unlink the queued large objects that nothing references any more; return how many.

    Runs in transactions of ``batch`` unlinks. An object that a row references again (an
    upload that shared it meanwhile) is only taken off the queue.
    """
    connection = connections[using]
    qn = connection.ops.quote_name
    where, params = _not_referenced(using, "q.oid::oid")
    freed = 0
    table = qn(PENDING_UNLINK_TABLE)
    while True:
        with transaction.atomic(using=using), connection.cursor() as cursor:
            # SKIP LOCKED: two processes draining at once take different batches.
            cursor.execute(
                f"DELETE FROM {table} WHERE id IN (SELECT id FROM {table} ORDER BY id "
                f"LIMIT %s FOR UPDATE SKIP LOCKED) RETURNING oid",
                [batch],
            )
            oids = sorted({int(row[0]) for row in cursor.fetchall()})
            if not oids:
                return freed
            cursor.execute(
                "SELECT count(lo_unlink(m.oid)) FROM unnest(%s::int8[]) AS q(oid) "
                "JOIN pg_catalog.pg_largeobject_metadata m ON m.oid = q.oid::oid "
                f"WHERE TRUE{where}",
                [oids, *params],
            )
            freed += int(cursor.fetchone()[0])


def count(using: str, *, owned: bool = False) -> int:
    """Return how many large objects exist (only files_app's own with ``owned``)."""
    sql = "SELECT count(*) FROM pg_catalog.pg_largeobject_metadata m"
    if owned:
        sql += f" {TAGGED}"
    with largeobjects.cursor(using) as cursor:
        cursor.execute(sql, [f"{largeobjects.OWNER_TAG} %"] if owned else [])
        return int(cursor.fetchone()[0])


# Unlinks one transaction does itself; the rest wait in files_app_pendingunlink until
# after commit. Each lo_unlink holds a lock until the end of its transaction, and the lock
# table has room for max_locks_per_transaction (64) x max_connections locks in all: a
# statement deleting 100,000 rows must not take 100,000 of them.
IMMEDIATE_UNLINKS = 500

UNLINK_FUNCTION = f"""
CREATE OR REPLACE FUNCTION files_app_unlink_lo() RETURNS trigger
LANGUAGE plpgsql
-- Index lookups whatever the statistics say (a plan made while a table looked empty would
-- scan it whole for every deleted row).
SET enable_seqscan = off
AS $$
DECLARE
    old_oid oid := (to_jsonb(OLD) ->> TG_ARGV[0])::oid;
    new_oid oid;
    still_used boolean;
    unlinked int4;
BEGIN
    IF TG_OP = 'UPDATE' THEN
        new_oid := (to_jsonb(NEW) ->> TG_ARGV[0])::oid;
    END IF;
    IF old_oid IS NULL OR old_oid IS NOT DISTINCT FROM new_oid THEN
        RETURN NULL;
    END IF;
    -- An AFTER trigger sees the whole statement's changes: another row, of this table or
    -- of any other reference column, may still use it (a shared, deduplicated object).
    still_used := {largeobjects.REFERENCED_FUNCTION}(old_oid);
    -- Tolerant, unlike the lo extension's lo_manage: the object may already be gone.
    IF still_used OR NOT EXISTS (
        SELECT 1 FROM pg_catalog.pg_largeobject_metadata WHERE oid = old_oid
    ) THEN
        RETURN NULL;
    END IF;
    unlinked := coalesce(nullif(current_setting('files_app.unlinks', true), ''), '0')::int4;
    IF unlinked < {IMMEDIATE_UNLINKS} THEN
        PERFORM set_config('files_app.unlinks', (unlinked + 1)::text, true);
        PERFORM pg_catalog.lo_unlink(old_oid);
    ELSE
        INSERT INTO {PENDING_UNLINK_TABLE} (oid) VALUES (old_oid::int8);
    END IF;
    RETURN NULL;
END
$$
"""


def install_unlink_trigger(table: str, column: str, using: str) -> None:
    """Make deleting or updating a row of ``table`` unlink the object in ``column``."""
    connection = connections[using]
    qn = connection.ops.quote_name
    trigger = qn(f"files_app_unlink_{column}"[:63])
    with largeobjects.cursor(using) as cursor:
        cursor.execute(UNLINK_FUNCTION)
        cursor.execute(f"DROP TRIGGER IF EXISTS {trigger} ON {qn(table)}")
        cursor.execute(
            f"CREATE TRIGGER {trigger} AFTER DELETE OR UPDATE OF {qn(column)} ON {qn(table)} "
            f"FOR EACH ROW EXECUTE FUNCTION files_app_unlink_lo(%s)",
            [column],
        )


def install_reference_function(using: str) -> None:
    """(Re)create ``files_app_lo_referenced(oid)``: whether a reference column holds an object.

    The columns are every :class:`~files_app.fields.LargeObjectField` whose table exists on
    ``using`` (:func:`~files_app.references.reference_columns`), and the resumable uploads
    in progress. ``migrate`` runs this after every app's migrations, so a new column counts
    from then on. The unlink trigger, ``Storage.delete()`` and the sweeper all ask it: an
    object shared by several rows (dedupe, a name assigned to a second row) goes with the
    last of them, whatever route removes the others.
    """
    # The registry, not an import: this module sits below the models (docs/design.md).
    Upload = apps.get_model("files_app", "Upload")
    connection = connections[using]
    qn = connection.ops.quote_name
    tables = set(connection.introspection.table_names())
    oid_columns, _ = reference_columns(using)
    tests = [
        f"EXISTS (SELECT 1 FROM {qn(table)} r WHERE r.{qn(column)} = target)"
        for table, column in sorted(set(oid_columns))
        if table in tables
    ]
    if Upload._meta.db_table in tables and router.allow_migrate_model(using, Upload):
        table = qn(Upload._meta.db_table)
        tests.append(f"EXISTS (SELECT 1 FROM {table} r WHERE r.oid = target::int8)")
    body = "\n    OR ".join(tests) or "false"
    with largeobjects.cursor(using) as cursor:
        # Index probes whatever the statistics say (see UNLINK_FUNCTION).
        cursor.execute(
            f"CREATE OR REPLACE FUNCTION {largeobjects.REFERENCED_FUNCTION}(target oid) "
            "RETURNS boolean LANGUAGE sql SET enable_seqscan = off "
            f"AS $$ SELECT {body} $$"
        )


def ensure_reference_function(using: str) -> None:
    """Install ``files_app_lo_referenced`` on ``using`` unless it is there already."""
    if largeobjects.referenced_function(using) is None:
        install_reference_function(using)


# A storage name is "[dir/]<oid>-<key>/<basename>", "[dir/]<oid>/<basename>" or "<oid>"
# (storage.name_parts); this is the same rule in SQL.
NAME_OID_PATTERN = r"^(?:.*/)?([0-9]{1,10})(?:-[0-9a-z]{1,10})?(?:/[^/]+)?$"


# Objects per query of the sweeper: each query looks at the next WINDOW objects of the
# database (by OID), so its cost stays the same however many there are.
WINDOW = 10_000

# files_app's tag on an object, read from the catalog by a join (obj_description() per
# object costs ten times more). Comments on large objects have pg_largeobject as class.
TAGGED = (
    "JOIN pg_catalog.pg_description d ON d.objoid = m.oid "
    "AND d.classoid = 'pg_catalog.pg_largeobject'::regclass AND d.objsubid = 0 "
    "AND d.description LIKE %s"
)


def _not_referenced(using: str, oid: str) -> tuple[str, list[str]]:
    """Return the SQL conditions (each after " AND ") that nothing references the large
    object ``oid`` (an SQL expression of type oid) — no reference column
    (``files_app_lo_referenced``) and no ``FileField`` on a ``LargeObjectStorage`` of
    ``using`` — and their parameters."""
    ensure_reference_function(using)
    qn = connections[using].ops.quote_name
    _, name_columns = reference_columns(using)
    where = f" AND NOT {largeobjects.REFERENCED_FUNCTION}({oid})"
    for table, column in name_columns:
        where += (
            f" AND NOT EXISTS (SELECT 1 FROM {qn(table)} r WHERE r.{qn(column)} <> '' AND "
            f"substring(r.{qn(column)} FROM %s)::int8 = {oid}::int8)"
        )
    return where, [NAME_OID_PATTERN] * len(name_columns)


def unreferenced(
    using: str, *, grace: float, window: int | None = None, unadopted_only: bool = False
) -> Iterator[list[int]]:
    """Yield files_app's large objects older than ``grace`` seconds that nothing references.

    What references them is every column :func:`reference_columns` finds. With
    ``unadopted_only``, only the objects of uploads that no save adopted
    (``largeobjects.UNADOPTED``): what files_app knows is garbage. Without it, also objects that
    ``Storage.save()`` handed out and that no column of this database names — which other
    apps may still keep by name (thumbnail caches): the caller must have said so.

    Yields the OIDs in ascending order, one list per query, each query looking at the next
    ``window`` objects of the database (``WINDOW`` by default), in autocommit: no
    transaction is held between them, so the caller may free what it was given before
    asking for more.
    """
    window = window or WINDOW
    where, unused_params = _not_referenced(using, "m.oid")
    tag = (
        f"{largeobjects.OWNER_TAG} % {largeobjects.UNADOPTED}"
        if unadopted_only
        else f"{largeobjects.OWNER_TAG} %"
    )
    params: list[Any] = [tag, grace, *unused_params]
    # The window is materialized: its objects are found by the OID index alone, then
    # filtered with one index probe per reference column (tests: tests/test_sweep.py;
    # figures: bench/catalogue.py).
    sql = (
        "WITH w AS MATERIALIZED (SELECT oid FROM pg_catalog.pg_largeobject_metadata "
        "WHERE oid > %s::oid ORDER BY oid LIMIT %s) "
        "SELECT (SELECT max(oid) FROM w), array("
        f"SELECT m.oid FROM w m {TAGGED} "
        # The database's clock on both sides (see largeobjects.create()).
        "WHERE substring(d.description FROM 'created=([0-9.]+)')::float8 "
        f"<= extract(epoch FROM statement_timestamp())::float8 - %s{where} "
        "ORDER BY m.oid)"
    )
    after = 0
    while True:
        with largeobjects.cursor(using) as cursor:
            cursor.execute(sql, [after, window, *params])
            last, found = cursor.fetchone()
        if last is None:
            return
        if found:
            yield [int(oid) for oid in found]
        after = int(last)


def describe(oids: list[int], using: str) -> list[tuple[int, int, float | None]]:
    """Return each existing object of ``oids``: its OID, size and creation time (Unix time,
    None if files_app did not tag it), in OID order."""
    with largeobjects.cursor(using) as cursor:
        cursor.execute(
            f"SELECT m.oid, {largeobjects.size_sql('m.oid')}, substring(obj_description(m.oid, "
            "'pg_largeobject') FROM 'created=([0-9.]+)')::float8 "
            "FROM unnest(%s::oid[]) AS q(oid) "
            "JOIN pg_catalog.pg_largeobject_metadata m ON m.oid = q.oid ORDER BY m.oid",
            [oids],
        )
        return [(int(oid), int(size), created) for oid, size, created in cursor.fetchall()]


def disk_usage(using: str) -> int:
    """Return the bytes that ``pg_largeobject`` (with its index) takes on disk."""
    # Any role may ask for a relation's size, though pg_largeobject itself is unreadable
    # to ordinary roles. It holds every large object of the database, whoever made it.
    with largeobjects.cursor(using) as cursor:
        cursor.execute("SELECT pg_total_relation_size('pg_catalog.pg_largeobject')")
        return int(cursor.fetchone()[0])
