"""Freeing large objects after their rows are gone: the queue a big delete leaves."""

from __future__ import annotations

from typing import TypeVar

from django.db import connections, models, transaction

from files_app.lo import NAME_OID_PATTERN
from files_app.references import reference_columns

__all__ = ["BATCH", "LargeObjectQuerySet", "drain", "drain_after_commit"]

_M = TypeVar("_M", bound=models.Model)

# Unlinks per transaction: each holds a lock until commit (see lo.IMMEDIATE_UNLINKS).
BATCH = 500


def drain_after_commit(using: str) -> None:
    """Drain the queue once the current transaction commits (at once in autocommit)."""
    transaction.on_commit(lambda: drain(using), using=using)


class LargeObjectQuerySet(models.QuerySet[_M]):
    """A QuerySet whose deletes free the large objects they queued, after commit.

    A statement that deletes more than ``lo.IMMEDIATE_UNLINKS`` rows with large objects
    leaves the rest in a queue (the lock table could not hold them all); use this as the
    model's manager and ``Meta.base_manager_name`` so that cascades drain it too.
    ``files_sweep`` drains what other routes (raw SQL, a collector with signals) leave.
    """

    def delete(self) -> tuple[int, dict[str, int]]:
        deleted = super().delete()
        drain_after_commit(self.db)
        return deleted

    delete.alters_data = True  # type: ignore[attr-defined]
    delete.queryset_only = True  # type: ignore[attr-defined]

    def _raw_delete(self, using: str | None) -> int:
        # What the deletion collector uses for cascades and fast deletes.
        deleted = super()._raw_delete(using)
        drain_after_commit(using or self.db)
        return deleted

    _raw_delete.alters_data = True  # type: ignore[attr-defined]


def drain(using: str, *, batch: int = BATCH) -> int:
    """Unlink the queued large objects that nothing references any more; return how many.

    Runs in transactions of ``batch`` unlinks. An object that a row references again (an
    upload that shared it meanwhile) is only taken off the queue.
    """
    from files_app.models import PendingUnlink

    connection = connections[using]
    qn = connection.ops.quote_name
    oid_columns, name_columns = reference_columns(using)
    unused = [
        f"NOT EXISTS (SELECT 1 FROM {qn(table)} r WHERE r.{qn(column)} = q.oid::oid)"
        for table, column in oid_columns
    ]
    params: list[str] = []
    for table, column in name_columns:
        unused.append(
            f"NOT EXISTS (SELECT 1 FROM {qn(table)} r WHERE r.{qn(column)} <> '' AND "
            f"substring(r.{qn(column)} FROM %s)::int8 = q.oid)"
        )
        params.append(NAME_OID_PATTERN)
    where = " AND ".join(unused) or "TRUE"
    freed = 0
    table = qn(PendingUnlink._meta.db_table)
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
                f"WHERE {where}",
                [oids, *params],
            )
            freed += int(cursor.fetchone()[0])
